import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "neutron-sg-info-reply.json"


@pytest.fixture
def neutron_reply():
    """The real Neutron reply from ../shared/data (skips when the shared folder is absent)."""
    if not SHARED.exists():
        pytest.skip(f"{SHARED} not present")
    return json.loads(SHARED.read_text())


@pytest.fixture
def demo_model():
    return json.loads((ROOT / "examples" / "demo-model.json").read_text())
