"""The compiled hot path and its pure-Python twin give identical results."""

import os
import socket

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
    names = set(fast.__all__)
    assert names <= set(dir(_fast_py))
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


v4 = st.builds(lambda a, b: f"198.51.{a}.{b}", st.integers(0, 3), st.integers(0, 255))
v6 = st.builds(lambda a: f"2001:db8::{a:x}", st.integers(0, 2000))
junk = st.one_of(st.just("198.51.100.0/24"), st.just("10.0.0.300"), st.just(""), st.just(None),
                 st.just(17), st.just("1.2.3.4\x00x"), st.just("２.1.1.1"), st.just([]),
                 st.text(max_size=6))
items = st.lists(st.one_of(v4, v6, v4.map(lambda s: [s, None]), v6.map(lambda s: (s, "m")), junk),
                 max_size=60)


@needs_c
@given(items, st.sampled_from([4, 6]))
def test_pack_twins(seq, family):
    assert _fast_c.pack_addrs(seq, family) == _fast_py.pack_addrs(seq, family)


dotted = st.one_of(st.from_regex(r"[0-9.]{1,17}", fullmatch=True),
                   st.builds(lambda *o: ".".join(o), *[st.from_regex(r"0?[0-9]{1,3}", fullmatch=True)] * 4),
                   st.sampled_from(["0.0.0.0", "255.255.255.255", "01.2.3.4", "1.2.3.04", "256.1.1.1",
                                    "1.2.3", "1.2.3.4.", ".1.2.3", "1..2.3", "1.2.3.4 ", " 1.2.3.4",
                                    "1.2.3.1000", "0x1.2.3.4", "00.0.0.0", "1.2.3.\u0664",
                                    "1.2.3.4\x00", "1.2.3.255", "1.2.3.0255", "9.99.199.255"]))


@given(st.lists(dotted, max_size=30))
def test_pack_v4_accepts_what_inet_pton_accepts(seq):
    """The compiled dotted-quad fast path takes exactly what inet_pton takes, with its value."""
    def ok(x):
        try:
            return socket.inet_pton(socket.AF_INET, x)
        except (OSError, ValueError, UnicodeEncodeError):
            return None
    want = sorted({ok(x) for x in seq} - {None})
    for mod in (_fast_py, _fast_c) if _fast_c is not None else (_fast_py,):
        packed, rejects = mod.pack_addrs(seq, 4)
        assert packed == b"".join(want)
        assert rejects == [(i, x) for i, x in enumerate(seq) if ok(x) is None]


@needs_c
@given(st.integers(0, 3000),
       st.lists(st.tuples(st.integers(0, 2999), st.integers(0, (1 << 32) - 1)), max_size=300))
def test_pack_v4_nearly_sorted_twins(n, changes):
    """A sorted reply with some members changed in place (the compiled sort keeps the sorted
    run and merges the few others in; past a share of them it sorts everything): the same
    records as the twin's."""
    seq = [socket.inet_ntop(socket.AF_INET, (i * 40503).to_bytes(4, "big")) for i in range(n)]
    for pos, value in changes:
        if pos < n:
            seq[pos] = socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big"))
    got = _fast_c.pack_addrs(seq, 4)
    assert got == _fast_py.pack_addrs(seq, 4)
    assert got[0] == b"".join(sorted({socket.inet_pton(socket.AF_INET, x) for x in seq}))


@needs_c
@given(st.lists(v4, max_size=80), st.lists(v4, max_size=80))
def test_diff_packed_twins_and_meaning(a, b):
    pa, _ = _fast_c.pack_addrs(a, 4)
    pb, _ = _fast_c.pack_addrs(b, 4)
    got = _fast_c.diff_packed(pa, pb, 4)
    assert got == _fast_py.diff_packed(pa, pb, 4)
    added = set(_fast_c.unpack_addrs(got[0], 4))
    removed = set(_fast_c.unpack_addrs(got[1], 4))
    assert added == set(a) - set(b) and removed == set(b) - set(a)


@needs_c
@given(st.lists(v6, max_size=50))
def test_unpack_twins_canonical(seq):
    packed, rejects = _fast_c.pack_addrs(seq, 6)
    assert not rejects
    assert _fast_c.unpack_addrs(packed, 6) == _fast_py.unpack_addrs(packed, 6)
    canon = {socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, x)) for x in seq}
    assert _fast_c.unpack_addrs(packed, 6) == sorted(canon, key=lambda x: socket.inet_pton(
        socket.AF_INET6, x))


def test_pack_sorts_numerically_and_rejects_with_index():
    packed, rejects = fast.pack_addrs(["198.51.100.10", "198.51.100.9", ["198.51.100.9", None],
                                       "198.51.100.0/24", "bogus", "2001:db8::1"], 4)
    assert fast.unpack_addrs(packed, 4) == ["198.51.100.9", "198.51.100.10"]
    assert rejects == [(3, "198.51.100.0/24"), (4, "bogus"), (5, "2001:db8::1")]


dict_lists = st.lists(st.dictionaries(st.sampled_from(["direction", "protocol", "stateful", "x"]),
                                      st.one_of(st.none(), st.booleans(), st.integers(0, 3),
                                                st.sampled_from(["tcp", "1", ""])), max_size=4),
                      max_size=5)


@needs_c
@given(a=dict_lists, b=dict_lists)
def test_dicts_key_twins(a, b):
    """Both twins give the same key, and two lists get equal keys exactly when they are equal
    item by item with values of the same types (True and 1 apart)."""
    assert _fast_c.dicts_key(a) == _fast_py.dicts_key(a)
    typed = [[(k, v, type(v)) for k, v in d.items()] for d in a]
    typed_b = [[(k, v, type(v)) for k, v in d.items()] for d in b]
    assert (_fast_py.dicts_key(a) == _fast_py.dicts_key(b)) == (typed == typed_b)


@given(a=dict_lists, b=dict_lists)
def test_dicts_match_is_the_key_compared(a, b):
    """``dicts_match(b, dicts_key(a))`` says exactly ``dicts_key(b) == dicts_key(a)``, in
    both twins (True and 1 apart, another key order or length apart)."""
    key = _fast_py.dicts_key(a)
    want = _fast_py.dicts_key(b) == key
    for impl in [_fast_py] + ([_fast_c] if _fast_c is not None else []):
        assert impl.dicts_match(b, key) is want
        assert impl.dicts_match(a, key) is True


def test_dicts_match_refuses_what_has_no_key():
    key = _fast_py.dicts_key([{"a": 1}])
    nan = float("nan")
    for impl in [_fast_py] + ([_fast_c] if _fast_c is not None else []):
        assert impl.dicts_match(({"a": 1},), key) is False        # not a list
        assert impl.dicts_match([["a", 1]], key) is False         # not dicts
        assert impl.dicts_match([{"a": 1}], None) is False        # no key
        assert impl.dicts_match([{"a": 1}, {}], key) is False     # longer
        assert impl.dicts_match([], key) is False
        assert impl.dicts_match([{"a": 1.0}], key) is False       # equal value, other type
        same = [{"a": nan}]
        assert impl.dicts_match(same, impl.dicts_key(same)) is True   # as tuples compare


def test_dicts_match_survives_a_comparison_that_changes_the_list():
    """A value whose ``==`` grows the list (or a dict) being compared gives an answer or an
    exception, never a read past the key."""
    class Grows:
        def __init__(self, seq, in_dict):
            self.seq, self.in_dict = seq, in_dict

        def __eq__(self, other):
            if self.in_dict:
                self.seq[0]["extra"] = 1
            else:
                self.seq.extend({"k": i, "l": i} for i in range(50))
            return True

        __hash__ = object.__hash__

    for impl in [_fast_py] + ([_fast_c] if _fast_c is not None else []):
        for in_dict in (False, True):
            key = impl.dicts_key([{"a": 1, "b": 2}])
            seq = [{"a": None, "b": 2}]
            seq[0]["a"] = Grows(seq, in_dict)
            key = key[:3] + (Grows,) + key[4:]   # the types agree, the values compare
            try:
                assert impl.dicts_match(seq, key) is False
            except RuntimeError:
                assert in_dict   # the dict changed size during iteration
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.sampled_from(["", "a", "1"]),
              st.sampled_from([0.0, 1.0, 1.5])),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(["a", "b", "1"]), inner, max_size=3)),
    max_leaves=8)


def _typed(v):
    """``v`` with every value paired with its type: equal exactly when json_key must be."""
    if type(v) is dict:
        return ("d", tuple((k, _typed(x)) for k, x in v.items()))
    if type(v) is list:
        return ("l", tuple(_typed(x) for x in v))
    return (v, type(v))


@needs_c
@given(a=json_values, b=json_values)
def test_json_key_twins(a, b):
    """Both twins give the same key, and two JSON values get equal keys exactly when they are
    equal with the same types throughout (True and 1, 1 and 1.0, [] and {} apart)."""
    assert _fast_c.json_key(a) == _fast_py.json_key(a)
    assert (_fast_py.json_key(a) == _fast_py.json_key(b)) == (_typed(a) == _typed(b))


def test_json_key_only_for_json_values():
    deep = []
    for _ in range(8):
        deep = [deep]        # 9 lists, one in the other
    for impl in [_fast_py] + ([_fast_c] if _fast_c is not None else []):
        assert impl.json_key({1: "a"}) is None            # a key that is not a str
        assert impl.json_key({"a": ("x",)}) is None       # a tuple is no JSON value
        assert impl.json_key(deep) is None                # deeper than 8
        assert impl.json_key(deep[0]) is not None         # 8 levels
        assert impl.json_key({"a": True}) != impl.json_key({"a": 1})
        assert impl.json_key({"a": [1], "b": 2}) != impl.json_key({"a": [1, 2]})
        hash(impl.json_key({"a": [{"b": None}]}))


def test_dicts_key_only_for_lists_of_dicts():
    for impl in [_fast_py] + ([_fast_c] if _fast_c is not None else []):
        assert impl.dicts_key(({"a": 1},)) is None
        assert impl.dicts_key([{"a": 1}, ["a", 1]]) is None
        assert impl.dicts_key([{"a": True}]) != impl.dicts_key([{"a": 1}])
        assert impl.dicts_key([{"a": 1}, {}]) != impl.dicts_key([{}, {"a": 1}])
