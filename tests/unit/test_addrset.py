"""Address sets kept packed (fwsg.members.AddrSet): they behave as the set of canonical texts
they stand for under every mutation, their packed diff equals the diff of the texts, both twins
of the packed helpers agree, and the desired state, the plan and the kernel mirror keep a cold
start's members as shared packed records, never as texts."""

import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fwsg import _fast_py, fast
from fwsg.backends.nft.desired import Desired
from fwsg.fingerprint import clone, fingerprint
from fwsg.members import AddrSet, Members, new_elements
from fwsg.model import Model
from fwsg.plan import diff
from fwsg.ruleset import Ruleset, SetDef

try:
    from fwsg import _fast as _fast_c
except ImportError:  # pragma: no cover - only in a pure build
    _fast_c = None

needs_c = pytest.mark.skipif(_fast_c is None, reason="fwsg._fast not built")


def _canon(fam, text):
    af = socket.AF_INET if fam == 4 else socket.AF_INET6
    return socket.inet_ntop(af, socket.inet_pton(af, text))

v4 = st.builds(lambda a, b: f"198.51.{a}.{b}", st.integers(0, 3), st.integers(0, 255))
v6 = st.builds(lambda a: _canon(6, f"2001:db8::{a:x}"), st.integers(0, 3000))
pfx4 = st.builds(lambda a: f"203.0.113.{a * 16}/28", st.integers(0, 15))
members4 = st.sets(st.one_of(v4, v4, pfx4), max_size=120)
ops4 = st.lists(st.tuples(st.sampled_from(["add", "discard", "update", "difference_update"]),
                          st.lists(st.one_of(v4, pfx4), max_size=70)), max_size=30)



@given(start=members4, ops=ops4)
@settings(max_examples=150)
def test_addrset_behaves_as_the_set_of_its_texts(start, ops):
    s, ref = AddrSet.of(4, sorted(start)), set(start)
    for kind, items in ops:
        if kind == "add":
            for m in items:
                s.add(m)
                ref.add(m)
        elif kind == "discard":
            for m in items:
                s.discard(m)
                ref.discard(m)
        elif kind == "update":
            s.update(items)
            ref.update(items)
        else:
            s.difference_update(items)
            ref.difference_update(items)
        assert len(s) == len(ref)
        for m in items:
            assert (m in s) == (m in ref)
    assert set(s) == ref and s == ref and ref == s
    assert s.members() == Members.of(4, ref)  # the packed form round-trips
    assert AddrSet.of(4, s.members()) == s == s.copy()


def test_addrset_overlays_fold_into_the_records():
    s = AddrSet.of(6, [f"2001:db8::{i:x}" for i in range(0, 20000, 2)])
    base = s._base
    for i in range(1, 6001, 2):  # more than the overlay bound: folded into the records
        s.add(f"2001:db8::{i:x}")
    assert s._base is not base and len(s._plus) < 1024
    assert len(s) == 13000 and "2001:db8::fa1" in s and f"2001:db8::{6001:x}" not in s
    assert list(s) == sorted(s, key=lambda t: socket.inet_pton(socket.AF_INET6, t))


@given(a=st.sets(st.one_of(v6, v6, st.just("2001:db8:1::/64")), max_size=80),
       b=st.sets(st.one_of(v6, st.just("2001:db8:1::/64")), max_size=80),
       churn=st.lists(v6, max_size=20))
def test_packed_diff_equals_the_text_diff(a, b, churn):
    want, have = AddrSet.of(6, a), AddrSet.of(6, b)
    for m in churn:  # overlays on either side change nothing in the result
        have.add(m)
        have.discard(m)
    have.update([m for m in churn if m in b])
    added, removed = want.diff(have)
    assert isinstance(added, Members) and isinstance(removed, Members)
    assert set(added) == a - b and set(removed) == b - a
    assert fast.diff_keys(a, b) == (sorted(added), sorted(removed))


@given(a=st.lists(v4, max_size=60), b=st.lists(v4, max_size=60), probe=st.lists(v4, max_size=10))
def test_merge_and_contains_twins_and_meaning(a, b, probe):
    pa, _ = fast.pack_addrs(a, 4)
    pb, _ = fast.pack_addrs(b, 4)
    merged = _fast_py.merge_packed(pa, pb, 4)
    assert fast.unpack_addrs(merged, 4) == fast.unpack_addrs(fast.pack_addrs(a + b, 4)[0], 4)
    for m in probe + a[:5]:
        rec = socket.inet_pton(socket.AF_INET, m)
        assert _fast_py.packed_contains(pa, rec, 4) == (m in set(a))
        if _fast_c is not None:
            assert _fast_c.packed_contains(pa, rec, 4) == (m in set(a))
    if _fast_c is not None:
        assert _fast_c.merge_packed(pa, pb, 4) == merged
        assert _fast_c.diff_packed(pa, pb, 4) == _fast_py.diff_packed(pa, pb, 4)


odd4 = st.sampled_from(["198.51.001.1", "198.51.100.0/24", "2001:db8::1", "", "\udc80", None, 7,
                        "198.51.1.1 ", "198.51.1.256"])


few4 = st.builds(lambda b: f"198.51.100.{b}", st.integers(0, 12))  # the same few, again and again


@given(start=st.sets(st.one_of(v4, few4), max_size=40),
       ops=st.lists(st.tuples(st.booleans(), st.one_of(few4, few4, v4, odd4)), max_size=60))
def test_addr_change_and_addr_in_twins_and_meaning(start, ops):
    """One member added or removed in the packed form (records plus two overlays): -1 for what
    is no host address of the family (nothing changes), else whether the set changed; both
    twins alike, and the set they keep is the set of texts."""
    packed, _ = fast.pack_addrs(sorted(start), 4)
    impls = [_fast_py] + ([_fast_c] if _fast_c is not None else [])
    states = [(set(), set()) for _ in impls]
    ref = set(start)
    for adding, item in ops:
        host = type(item) is str and _is_v4_host(item)
        want = -1 if not host else int((item in ref) != adding)
        for impl, (plus, minus) in zip(impls, states):
            assert impl.addr_change(item, 4, packed, plus, minus, adding) == want
        if host:
            (ref.add if adding else ref.discard)(item)
        for impl, (plus, minus) in zip(impls, states):
            assert impl.addr_in(item, 4, packed, plus, minus) == (-1 if not host else
                                                                   int(item in ref))
            assert not plus & minus and not plus & set(_records(packed))
            assert minus <= set(_records(packed))
    for plus, minus in states:
        assert (set(_records(packed)) - minus) | plus == {socket.inet_pton(socket.AF_INET, m)
                                                         for m in ref}


def _is_v4_host(m):
    try:
        socket.inet_pton(socket.AF_INET, m)
    except (OSError, ValueError, UnicodeEncodeError):
        return False
    return True


def _records(packed):
    return [packed[i:i + 4] for i in range(0, len(packed), 4)]


@needs_c
def test_no_copy_of_the_records_when_one_side_is_empty():
    packed, _ = fast.pack_addrs([f"198.51.100.{i}" for i in range(50)], 4)
    for impl in (_fast_c, _fast_py):
        added, removed = impl.diff_packed(packed, b"", 4)
        assert added is packed and removed == b""
        assert impl.merge_packed(packed, b"", 4) is packed
        assert impl.merge_packed(b"", packed, 4) is packed


def test_element_containers_by_type():
    assert isinstance(new_elements(SetDef("inet", "a", "ipv4_addr")), AddrSet)
    assert isinstance(new_elements(SetDef("inet", "b", "ipv6_addr")), AddrSet)
    assert type(new_elements(SetDef("inet", "c", "ipv4_addr", interval=True))) is set
    assert type(new_elements(SetDef("inet", "d", "ifname . ether_addr"))) is set
    assert new_elements(SetDef("inet", "e", "mark", "verdict")) == {}


def _doc(n4, n6):
    return {"ports": [{"id": "p1", "device": "tap1", "mac": "fa:16:3e:00:00:01",
                       "fixed_ips": ["192.0.2.10"], "security_groups": ["web"]}],
            "security_groups": {"web": [{"direction": "ingress", "ethertype": "IPv4",
                                         "remote_group_id": "big"},
                                        {"direction": "ingress", "ethertype": "IPv6",
                                         "remote_group_id": "big"}]},
            "sg_member_ips": {"big": {"IPv4": [f"198.18.{i // 256}.{i % 256}"
                                               for i in range(n4)],
                                      "IPv6": [f"2001:db8::{i:x}" for i in range(n6)]}}}


def test_cold_start_keeps_one_packed_copy_shared_by_model_desired_and_mirror():
    model = Model.from_wire(_doc(3000, 2000))
    d = Desired().load(model)
    records = model.members_of("big", 6).packed
    key = ("inet", d.names.member_set("big", 6))
    assert d.members[("big", 6)]._base is records     # desired members: the model's bytes
    assert d.rs.elements[key]._base is records         # desired set elements: the same
    plan = diff(d.rs, None)
    ops = [op for op in plan.ops if getattr(op, "set", None) is not None
           and op.set.key == key and hasattr(op, "elements")]
    assert len(ops) == 1 and ops[0].elements.packed is records
    mirror = Ruleset(tables=frozenset())
    plan.update(mirror)
    assert mirror.elements[key]._base is records       # the mirror: the same bytes again
    assert mirror.elements == d.rs.elements
    assert model.members_of("big", 6)._text is None   # no text rendered on the way
    assert not diff(d.rs, mirror)
    assert fingerprint(clone(mirror)) == fingerprint(d.rs)


def test_incremental_changes_match_the_text_form_after_a_packed_cold_start():
    model = Model.from_wire(_doc(500, 500))
    d = Desired().load(model)
    mirror = Ruleset(tables=frozenset())
    diff(d.rs, None).update(mirror)
    d.clear_pending()
    d.add_members("big", 6, ["2001:db8::ffff", "2001:db8::1"])   # one new, one present
    d.remove_members("big", 4, ["198.18.0.7", "198.18.9.9"])     # one present, one not
    plan = diff(d.rs, mirror, d.pending)
    assert "add element inet fwsg" in str(plan) and "2001:db8::ffff" in str(plan)
    assert "2001:db8::1 " not in str(plan) and "198.18.0.7" in str(plan)
    assert plan.summary["elements_added"] == 1 and plan.summary["elements_removed"] == 1
    plan.update(mirror)
    d.clear_pending()
    text = {k: set(v) for k, v in d.rs.elements.items() if not isinstance(v, dict)}
    assert {k: set(v) for k, v in mirror.elements.items() if not isinstance(v, dict)} == text
    assert not diff(d.rs, mirror)
    assert "2001:db8::ffff" in d.members_of("big", 6) and "198.18.0.7" not in d.members_of("big", 4)
    assert _canon(6, "2001:DB8::FFFF") in d.members_of("big", 6)


def test_plan_text_size_is_measured_without_keeping_the_text():
    d = Desired().load(Model.from_wire(_doc(3000, 0)))
    plan = diff(d.rs, None)
    size = plan.text_size()
    assert plan._lines is None   # nothing kept
    assert size == len(str(plan)) and plan.size == size


def test_a_burst_of_element_changes_returns_the_freed_heap(monkeypatch):
    from fwsg import heap
    from fwsg.firewall import Firewall

    calls = []
    monkeypatch.setattr(heap, "release", lambda: calls.append(1) or True)
    fw = Firewall(backend="fake")
    fw.apply(Model.from_wire(_doc(100, 100)))
    assert calls == []                       # a small transaction: nothing to give back
    fw.apply(Model.from_wire(_doc(15000, 10000)))
    assert calls == [1]
    fw.add_security_group_members("big", ["2001:db8::abcd"])
    assert calls == [1]


def test_release_asks_the_c_library():
    from fwsg import heap

    assert heap.release() in (True, False)
    assert heap.release() == bool(heap._trim)


def test_release_finds_the_c_library_without_searching(monkeypatch):
    import ctypes.util

    from fwsg import heap

    monkeypatch.setattr(heap, "_trim", None)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: pytest.fail("searched"))
    assert heap.release() is True      # glibc: malloc_trim among the loaded symbols
