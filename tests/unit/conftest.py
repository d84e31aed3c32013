import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture
def neutron_reply():
    """A real reply of Neutron's server code (``security_group_info_for_devices``), committed
    under tests/fixtures."""
    return json.loads((FIXTURES / "neutron-sg-info-reply.json").read_text())


@pytest.fixture
def demo_model():
    """The example model the demo applies (shipped inside the package, fwsg/data)."""
    return json.loads((ROOT / "fwsg" / "data" / "demo-model.json").read_text())
