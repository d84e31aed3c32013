import json
import pathlib

import pytest

from fwsg import _fast_py, fast

try:
    from fwsg import _fast as _fast_c
except ImportError:  # pragma: no cover - only in a pure build
    _fast_c = None

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


@pytest.fixture(params=["compiled", "pure"])
def hot_path(request, monkeypatch):
    """Runs the test once with each twin of the hot path in this one session (the modules
    look ``fwsg.fast``'s names up at call time, so swapping them switches every caller):
    ``compiled`` (``fwsg._fast``) and ``pure`` (``fwsg._fast_py``). Gives the module in use.
    The compiled case is skipped where the extension is not built."""
    impl = _fast_py
    if request.param == "compiled":
        if _fast_c is None:
            pytest.skip("fwsg._fast not built")
        impl = _fast_c
    for name in fast.__all__:
        monkeypatch.setattr(fast, name, getattr(impl, name))
    return impl
