"""The compiled hot path and its pure-Python twin give identical results."""

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fwsg import _fast_py, fast

try:
    from fwsg import _fast as _fast_c
except ImportError:  # pragma: no cover - only in a pure build
    _fast_c = None

needs_c = pytest.mark.skipif(_fast_c is None, reason="fwsg._fast not built")


def test_compiled_module_really_loaded_when_required():
    """In the compiled test run (FWSG_REQUIRE_EXTENSIONS=1) the selector must give the C one;
    with FWSG_NO_EXTENSIONS=1 the twin."""
    if os.environ.get("FWSG_NO_EXTENSIONS"):
        assert fast.COMPILED is False
    elif os.environ.get("FWSG_REQUIRE_EXTENSIONS"):
        assert fast.COMPILED is True
        assert fast.diff_keys is _fast_c.diff_keys
    else:
        pytest.skip("neither FWSG_NO_EXTENSIONS nor FWSG_REQUIRE_EXTENSIONS set")


def test_same_names_in_both():
    names = {n for n in dir(_fast_py) if not n.startswith("_") and n not in (
        "ctypes", "KernelError")}
    if _fast_c is not None:
        assert names <= set(dir(_fast_c)), names - set(dir(_fast_c))


keys = st.sets(st.from_regex(r"[0-9a-f:.\"]{1,12}", fullmatch=True), max_size=40)


@needs_c
@given(a=keys, b=keys)
def test_diff_keys_twins(a, b):
    assert _fast_c.diff_keys(a, b) == _fast_py.diff_keys(a, b)
    added, removed = _fast_py.diff_keys(a, b)
    assert set(added) == a - b and set(removed) == b - a


maps = st.dictionaries(st.from_regex(r"0x[0-9a-f]{8}", fullmatch=True),
                       st.sampled_from(["jump a", "jump b", "drop"]), max_size=30)


@needs_c
@given(a=maps, b=maps)
def test_diff_map_twins(a, b):
    assert _fast_c.diff_map(a, b) == _fast_py.diff_map(a, b)


@needs_c
@given(st.lists(st.one_of(st.text(max_size=8),
                          st.tuples(st.text(max_size=8), st.text(max_size=8))), max_size=20))
def test_render_twins(items):
    assert _fast_c.render_elements(items) == _fast_py.render_elements(items)
