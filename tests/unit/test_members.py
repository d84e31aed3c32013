"""Member lists parsed packed: equal lists compare as memory, a changed list loads as its
difference only, errors still name the item, and the caches never confuse two inputs."""

import copy

import pytest

from fwsg import _fast_py
from fwsg.backends.nft.desired import Desired, compile_model
from fwsg.errors import ValidationError
from fwsg.members import Members
from fwsg.model import Model, parse_port
from fwsg.lab.scenario import generate, member_v4

try:
    from fwsg import _fast as _fast_c
except ImportError:  # pragma: no cover - only in a pure build
    _fast_c = None


def test_members_read_as_their_tuple_and_compare_packed():
    m = Model.from_wire({"sg_member_ips": {"g": {"IPv4": ["192.0.2.9", "192.0.2.10",
                                                          "198.51.100.0/24", "192.0.2.9"]}}})
    mem = m.members_of("g", 4)
    assert isinstance(mem, Members)
    assert mem == ("192.0.2.9", "192.0.2.10", "198.51.100.0/24") == tuple(mem)
    assert ("192.0.2.9", "192.0.2.10", "198.51.100.0/24") == mem
    assert hash(mem) == hash(tuple(mem)) and len(mem) == 3 and mem[1] == "192.0.2.10"
    again = Model.from_wire({"sg_member_ips": {"g": {"IPv4": ["198.51.100.0/24", "192.0.2.10",
                                                              "192.0.2.9"]}}})
    assert again.members_of("g", 4) == mem and again == m
    fresh = Model.from_wire({"sg_member_ips": {"g": {"IPv4": ["192.0.2.9", "192.0.2.10"]}}})
    other = fresh.members_of("g", 4)
    assert other != mem and other._text is None  # compared packed, never rendered


def test_unusual_spellings_and_macs_take_the_careful_path():
    doc = {"sg_member_ips": {"g": {"IPv4": [["192.0.2.7", "FA-16-3E-00-00-07"], "192.0.2.8/32",
                                            ["192.0.2.1", None]],
                                   "IPv6": ["2001:DB8:0::1",
                                            ["2001:db8::2", "fa:16:3e:00:00:02"]]}}}
    m = Model.from_wire(doc)
    assert m.members_of("g", 4) == ("192.0.2.1", "192.0.2.7", "192.0.2.8")
    assert m.members_of("g", 6) == ("2001:db8::1", "2001:db8::2")


@pytest.mark.parametrize("items,path,fragment", [
    (["192.0.2.1", "192.0.2.300"], "sg_member_ips.g.IPv4[1]", "192.0.2.300"),
    (["192.0.2.1", ["192.0.2.2", "fa:16:3e:00:00:zz"]], "sg_member_ips.g.IPv4[1][1]", "zz"),
    ([["192.0.2.2", "fa:16:3e:00:00:01"], []], "sg_member_ips.g.IPv4[1]", "empty"),
    (["192.0.2.1", "2001:db8::1"], "sg_member_ips.g.IPv4[1]", "2001:db8::1"),
    (["192.0.2.1", 17], "sg_member_ips.g.IPv4[1]", "17"),
])
def test_a_bad_member_still_names_its_path(items, path, fragment):
    with pytest.raises(ValidationError) as ei:
        Model.from_wire({"sg_member_ips": {"g": {"IPv4": items}}})
    assert str(ei.value).startswith(path + ":") and fragment in str(ei.value)


@pytest.mark.parametrize("impl", [_fast_py] + ([_fast_c] if _fast_c is not None else []))
def test_pack_checks_macs_only_when_asked(impl):
    seq = [["192.0.2.1", "fa:16:3e:00:00:01"], ["192.0.2.2", "FA-16-3E-00-00-02"],
           ["192.0.2.3", None], ["192.0.2.4", "fa:16:3e:00:00:0٣"], ["192.0.2.5", 5]]
    _, rejects = impl.pack_addrs(seq, 4, True)
    assert [i for i, _ in rejects] == [1, 3, 4]
    _, rejects = impl.pack_addrs(seq, 4)
    assert rejects == []


def _doc():
    doc = generate(ports=8, groups=4, rules=5, members=0, seed=2)
    doc["sg_member_ips"]["default"]["IPv4"] = [member_v4(i) for i in range(3000)]
    doc["sg_member_ips"]["sg-1"]["IPv6"] = ["2001:db8:9::/64", "2001:db8::77"]
    return doc


def test_a_changed_list_loads_as_its_difference_and_ends_equal_to_a_fresh_compile():
    doc = _doc()
    d = Desired().load(Model.from_wire(doc))
    d.pending.__init__()
    changed = copy.deepcopy(doc)
    changed["sg_member_ips"]["default"]["IPv4"][10] = "203.0.113.10"
    changed["sg_member_ips"]["sg-1"]["IPv6"] = ["2001:db8:8::/64", "2001:db8::77"]
    d.load(Model.from_wire(changed))
    assert _same(d, changed)
    assert d.members[("default", 4)] == set(Model.from_wire(changed).members_of("default", 4))
    total = sum(len(a) + len(r) for a, r in d.pending.elems.values())
    assert 2 <= total <= 6, d.pending.elems
    # an incremental change in between makes the next load compare against the live set
    d.add_members("default", 4, ["198.51.100.1"])
    d.load(Model.from_wire(changed))
    assert "198.51.100.1" not in d.members[("default", 4)]
    assert _same(d, changed)


def _same(d, doc):
    fresh = compile_model(Model.from_wire(doc))
    return (d.rs.elements == fresh.elements and d.rs.chains == fresh.chains
            and d.rs.sets == fresh.sets)


def test_port_cache_tells_types_apart_and_rechecks_groups():
    raw = {"device": "tap1", "mac_address": "fa:16:3e:00:00:01", "fixed_ips": ["192.0.2.1"],
           "security_groups": ["g"], "port_security_enabled": True}
    assert parse_port("devices.p", "p", raw, {"g": []}).port_security is True
    with pytest.raises(ValidationError, match="port_security_enabled"):
        parse_port("devices.p", "p", dict(raw, port_security_enabled=1), {"g": []})
    with pytest.raises(ValidationError, match=r"^devices.p.security_groups\[0\]"):
        parse_port("devices.p", "p", raw, {})


def test_pending_bulk_updates_equal_one_by_one():
    from hypothesis import given
    from hypothesis import strategies as st

    from fwsg.backends.nft.desired import Pending

    steps = st.lists(st.tuples(st.booleans(), st.sets(st.integers(0, 12), max_size=6)),
                     max_size=8)

    @given(steps)
    def check(seq):
        one, bulk = Pending(), Pending()
        for add, items in seq:
            for e in sorted(items):
                (one.add if add else one.remove)("k", e)
            if items:
                (bulk.add_many if add else bulk.remove_many)("k", set(items))
        assert one.elems.get("k", (set(), set())) == bulk.elems.get("k", (set(), set()))

    check()
