"""The iptables backend without a kernel: golden restore text, what each change touches,
incremental == full, bounded names, members never in rules, rendering of every rule form."""

import copy
import pathlib
import struct

import pytest

from fwsg.backends.iptables import iptc, names
from fwsg.backends.iptables.desired import Desired
from fwsg.backends.iptables.plan import TableChange, diff
from fwsg.backends.iptables.rules import render
from fwsg.backends.iptables.state import Chain, State
from fwsg.model import Model, parse_port, parse_rule

GOLDEN = pathlib.Path(__file__).with_name("golden") / "demo-model.iptables"


def _full(doc):
    return diff(Desired().load(Model.from_wire(doc)).st, State())


def test_golden_restore_text(demo_model):
    """The whole first commit for the demo model is exactly the reviewed text (regenerate:
    python -c 'from tests.unit.test_iptables import regen; regen()')."""
    assert str(_full(demo_model)) == GOLDEN.read_text()


def regen():  # pragma: no cover - developer helper
    import json

    doc = json.loads((pathlib.Path(__file__).parents[2] / "examples" /
                      "demo-model.json").read_text())
    GOLDEN.write_text(str(_full(doc)))


def _committed(doc):
    """A Desired for ``doc`` and a mirror of a kernel that holds it."""
    d = Desired().load(Model.from_wire(doc))
    cur = State(hooks=set())
    diff(d.st, cur).update(cur)
    d.pending = type(d.pending)()
    return d, cur


def _sg_with_remote(demo_model):
    for sg, rules in demo_model["security_groups"].items():
        for r in rules:
            if r.get("remote_group_id"):
                return r["remote_group_id"]
    raise AssertionError("the demo model has a remote-group rule")


def test_member_change_touches_only_one_set(demo_model):
    d, cur = _committed(demo_model)
    sg = _sg_with_remote(demo_model)
    d.add_members(sg, 4, ["198.51.100.7"])
    plan = diff(d.st, cur, d.pending)
    assert plan.adds == {names.member_set(sg, 4): ["198.51.100.7"]}
    assert not plan.tables and not plan.creates and not plan.rebuilds
    assert plan.texts() == []
    d.remove_members(sg, 4, ["198.51.100.7"])   # back and forth before a commit: nothing
    assert not diff(d.st, cur, d.pending)


def test_rule_added_rewrites_one_chain_per_family(demo_model):
    d, cur = _committed(demo_model)
    sg = next(iter(demo_model["security_groups"]))
    rules = demo_model["security_groups"][sg] + [
        {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 7}]
    d.set_group(sg, tuple(parse_rule("r", r) for r in rules))
    plan = diff(d.st, cur, d.pending)
    assert list(plan.tables) == [(4, "filter")]
    tc = plan.tables[(4, "filter")]
    assert list(tc.chains) == [names.group_chain(sg, "ingress")]
    assert not tc.bag_add and not tc.bag_del and not tc.stale
    assert "-p tcp -m tcp --dport 7 -j ACCEPT" in plan.texts()[0][2]


def test_port_added_with_existing_profile_adds_rules_not_profiles(demo_model):
    d, cur = _committed(demo_model)
    pid, raw = next(iter(demo_model["devices"].items()))
    twin = dict(raw, device="tap-twin", mac_address="fa:16:3e:00:00:99",
                fixed_ips=["192.0.2.77"])
    d.set_port(parse_port("p", "twin", twin, d.groups))
    plan = diff(d.st, cur, d.pending)
    written = {k: list(tc.chains) for k, tc in plan.tables.items() if tc.chains}
    assert list(written) == [("eb", "nat")]      # no iptables chain per port: dispatch rules only
    assert all(n.startswith("fwsg-a") for n in written[("eb", "nat")])
    # per family: its (address, MAC) pair (192.0.2.77; the IPv6 link-local), the rest of its
    # egress, in-port, in-from and its network's zone by physdev (5 x 2); its two addresses:
    # ingress dispatch and zone (2 x 2); ebtables (1)
    assert plan.summary["rules_added"] == 10 + 4 + 1
    d.remove_port("twin")
    assert not diff(d.st, cur, d.pending)


def test_a_bucket_comes_with_its_first_device_and_goes_with_its_last(demo_model):
    d, cur = _committed(demo_model)
    pid, raw = next(iter(demo_model["devices"].items()))
    buckets = {names.bucket_chain(b, "qvb9") for b in (names.E_ADDR, names.E_PORT,
                                                       "fwsg-in-port", "fwsg-in-from",
                                                       names.ARP)}
    for i in (1, 2):
        twin = dict(raw, device=f"qvb9-{i}", mac_address=f"fa:16:3e:00:00:9{i}",
                    fixed_ips=[f"192.0.2.7{i}"])
        d.set_port(parse_port("p", f"twin{i}", twin, d.groups))
        plan = diff(d.st, cur, d.pending)
        new = {n for tc in plan.tables.values() for n in tc.new_bags}
        assert new == (buckets if i == 1 else set())   # per family and ebtables, first device
        assert sum(1 for tc in plan.tables.values() for rules in tc.bag_add.values()
                   for r in rules if "qvb9+" in r) == (9 if i == 1 else 0)
        plan.update(cur)
        d.pending = type(d.pending)()
    d.remove_port("twin1")
    plan = diff(d.st, cur, d.pending)
    stale = {n for tc in plan.tables.values() for n in tc.stale}
    assert not stale & buckets                                # twin2 still uses them
    plan.update(cur)
    d.pending = type(d.pending)()
    arp = d.arp_of["twin2"]
    d.remove_port("twin2")
    plan = diff(d.st, cur, d.pending)
    assert {n for tc in plan.tables.values() for n in tc.stale} == buckets | {arp}
    assert all("qvb9" not in r for tc in plan.tables.values() for rules in tc.bag_add.values()
               for r in rules)
    plan.update(cur)
    assert not diff(Desired().load(Model.from_wire(demo_model)).st, cur)


def test_incremental_changes_equal_a_fresh_load(demo_model):
    d, cur = _committed(demo_model)
    other = copy.deepcopy(demo_model)
    sg = _sg_with_remote(demo_model)
    other["sg_member_ips"].setdefault(sg, {"IPv4": [], "IPv6": []})["IPv4"] = ["192.0.2.0/25"]
    pid = next(iter(other["devices"]))
    del other["devices"][pid]
    d.load(Model.from_wire(other))
    diff(d.st, cur, d.pending).update(cur)
    fresh = Desired().load(Model.from_wire(other)).st
    assert not diff(fresh, cur)             # the mirror holds exactly the new model
    assert {k: c.digest for k, c in fresh.chains.items()} == \
        {k: c.digest for k, c in d.st.chains.items()}
    assert fresh.bags == d.st.bags and fresh.elements == d.st.elements


def test_rules_do_not_grow_with_members(demo_model):
    small = Desired().load(Model.from_wire(demo_model)).st.counts()
    big = copy.deepcopy(demo_model)
    sg = _sg_with_remote(demo_model)
    big["sg_member_ips"][sg]["IPv6"] = [f"2001:db8:5::{i:x}" for i in range(5000)]
    bigc = Desired().load(Model.from_wire(big)).st.counts()
    assert bigc["rules"] == small["rules"] and bigc["chains"] == small["chains"]


def test_names_are_bounded_and_never_user_text():
    hostile = 'x"; -F; ' + "a" * 300
    for n in (names.group_chain(hostile, "ingress"), names.arp_chain(hostile),
              names.profile_chain(names.digest(hostile), "egress"),
              names.fixed_chain("ingress", False)):
        assert len(n) <= 28 and n.startswith("fwsg-") and n.replace("-", "").isalnum()
    s = names.member_set(hostile, 6)
    assert len(names.temp_set(s)) <= 31 and " " not in s


def test_big_member_change_is_a_swap():
    doc = {"security_groups": {"a": [{"direction": "ingress", "ethertype": "IPv6",
                                      "remote_group_id": "b"}], "b": []},
           "sg_member_ips": {"b": {"IPv6": [f"2001:db8::{i:x}" for i in range(5000)]}},
           "devices": {"p": {"device": "tap1", "mac_address": "fa:16:3e:00:00:01",
                             "security_groups": ["a"]}}}
    d, cur = _committed(doc)
    d.set_members("b", 6, [f"2001:db8:1::{i:x}" for i in range(5000)])
    plan = diff(d.st, cur, d.pending)
    assert [r[0] for r in plan.rebuilds] == [names.member_set("b", 6)]
    assert not plan.adds and not plan.dels and not plan.tables
    assert plan.summary["elements_added"] == 5000 and plan.summary["elements_removed"] == 5000


def test_set_grows_beyond_its_maxelem_by_a_rebuild():
    doc = {"security_groups": {"a": [{"direction": "ingress", "remote_group_id": "b"}], "b": []},
           "sg_member_ips": {"b": {"IPv4": ["192.0.2.1"]}},
           "devices": {"p": {"device": "tap1", "mac_address": "fa:16:3e:00:00:01",
                             "security_groups": ["a"]}}}
    d, cur = _committed(doc)
    name = names.member_set("b", 4)
    assert cur.sets[name].maxelem == 65536
    d.add_members("b", 4, [f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}" for i in range(70000)])
    plan = diff(d.st, cur, d.pending)
    assert [(r[0], r[1].maxelem) for r in plan.rebuilds] == [(name, 262144)]


@pytest.mark.parametrize("raw, text", [
    ({"protocol": "tcp", "port_range_min": 80, "port_range_max": 81},
     "-p tcp -m tcp --dport 80:81 -j ACCEPT"),
    ({"protocol": "udp", "source_port_range_min": 53},
     "-p udp -m udp --sport 53 -j ACCEPT"),
    ({"protocol": "icmp", "port_range_min": 8, "port_range_max": 0},
     "-p icmp -m icmp --icmp-type 8/0 -j ACCEPT"),
    ({"protocol": "icmp", "ethertype": "IPv6", "port_range_min": 128},
     "-p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT"),
    ({"protocol": "udplite", "port_range_min": 9},
     "-p udplite -m multiport --dports 9 -j ACCEPT"),
    ({"protocol": 47}, "-p 47 -j ACCEPT"),
    ({"protocol": 99}, "-p 99 -j ACCEPT"),
    ({"remote_ip_prefix": "192.0.2.0/24", "protocol": "sctp", "port_range_min": 5},
     "-s 192.0.2.0/24 -p sctp -m sctp --dport 5 -j ACCEPT"),
    ({"remote_group_id": "g", "protocol": "tcp"},
     f"-p tcp -m set --match-set {names.member_set('g', 4)} src -j ACCEPT"),
])
def test_rule_rendering(raw, text):
    assert render(parse_rule("r", {"direction": "ingress", **raw})) == text


def test_what_iptables_cannot_say_is_refused_before_anything_changes(demo_model):
    from fwsg.errors import ValidationError

    d, cur = _committed(demo_model)
    before = {k: c.digest for k, c in d.st.chains.items()}
    bad = copy.deepcopy(demo_model)
    pid = next(iter(bad["devices"]))
    bad["devices"][pid]["device"] = "tap+"
    with pytest.raises(ValidationError, match=rf"devices\.{pid}\.device: 'tap\+'"):
        d.load(Model.from_wire(bad))
    bad = copy.deepcopy(demo_model)
    sg = next(iter(bad["security_groups"]))
    bad["security_groups"][sg].append({"direction": "ingress", "protocol": 0})
    with pytest.raises(ValidationError, match=r"protocol: 0 cannot be matched"):
        d.load(Model.from_wire(bad))
    assert {k: c.digest for k, c in d.st.chains.items()} == before
    assert not diff(d.st, cur, d.pending)


def test_a_whole_family_member_is_stored_as_two_halves():
    doc = {"security_groups": {"a": [{"direction": "ingress", "remote_group_id": "b"}], "b": []},
           "sg_member_ips": {"b": {"IPv4": ["0.0.0.0/0", "128.0.0.0/1"]}},
           "devices": {"p": {"device": "tap1", "mac_address": "fa:16:3e:00:00:01",
                             "security_groups": ["a"]}}}
    d, cur = _committed(doc)
    name = names.member_set("b", 4)
    assert cur.elements[name] == {"0.0.0.0/1", "128.0.0.0/1"}
    d.remove_members("b", 4, ["0.0.0.0/0"])        # the literal /1 member stays
    diff(d.st, cur, d.pending).update(cur)
    assert cur.elements[name] == {"128.0.0.0/1"}


def test_same_rule_forgives_only_the_protocol_name():
    from fwsg.backends.iptables.state import same_rule

    assert same_rule("-p tcp -m tcp --dport 22 -j ACCEPT", "-p tcp -m tcp --dport 22 -j ACCEPT")
    assert same_rule("-p gre -j ACCEPT", "-p 47 -j ACCEPT")
    assert same_rule("-s 192.0.2.0/24 -p dccp -m dccp --dport 5 -j ACCEPT",
                     "-s 192.0.2.0/24 -p 33 -m dccp --dport 5 -j ACCEPT")
    assert not same_rule("-p gre -j ACCEPT", "-p 50 -j ACCEPT")
    assert not same_rule("-p tcp -m tcp --dport 23 -j ACCEPT", "-p tcp -m tcp --dport 22 -j ACCEPT")
    assert not same_rule("-p gre -j DROP", "-p 47 -j ACCEPT")
    assert not same_rule("-j ACCEPT", "-p 47 -j ACCEPT")


def test_drift_marks_a_chain_whose_printed_rules_differ():
    """reconcile (deep): a chain read back with the right digest but other rules than fwsg
    wrote is marked changed, and the diff rewrites it; without ``deep`` nothing is read."""
    from fwsg.backends.iptables import IptablesBackend
    from fwsg.backends.iptables.kernel import Kernel

    doc = {"security_groups": {"g": [{"direction": "ingress", "ethertype": "IPv4",
                                      "protocol": "tcp", "port_range_min": 22,
                                      "port_range_max": 22}]},
           "devices": {"p": {"device": "tap1", "mac_address": "fa:16:3e:00:00:01",
                             "fixed_ips": ["192.0.2.1"], "security_groups": ["g"]}}}
    d = Desired().load(Model.from_wire(doc))
    key = (4, "filter", names.group_chain("g", "ingress"))
    good = "".join(line + "\n" for line in d.st.chains[key].lines(key[2]))

    def read(text):
        st = State()
        Kernel.parse(None, st, 4, "filter", text)
        return st

    backend = IptablesBackend.__new__(IptablesBackend)
    clean = read(good)
    assert backend.drift(d, clean, deep=True)[0].chains[key] == d.st.chains[key].digest
    edited = read(good.replace("--dport 22", "--dport 23"))
    assert edited.chains[key] == d.st.chains[key].digest     # digest and count still right
    assert backend.drift(d, edited, deep=False)[0].chains[key] == d.st.chains[key].digest
    assert backend.drift(d, edited, deep=True)[0].chains[key] == "?"
    assert key[2] in diff(d.st, edited).tables[(4, "filter")].chains


def test_ipset_netlink_message_encoding():
    """An element in the ipset netlink protocol: the address in network order inside a
    nested IP attribute, its prefix length, the set name NUL-terminated, protocol 7."""
    import socket
    import struct

    from fwsg.backends.iptables.ipsetnl import element

    fam, body = element("fwsg-x", "192.0.2.0/24")
    assert fam == socket.AF_INET
    assert body.startswith(struct.pack("=HHB", 5, 1, 7) + b"\0" * 3)
    assert struct.pack("=HH", 11, 2) + b"fwsg-x\0" in body
    assert struct.pack("=HH", 8, 0x4001) + bytes([192, 0, 2, 0]) in body
    assert struct.pack("=HHB", 5, 3, 24) in body
    fam, body = element("fwsg-y", "2001:db8::1/128")
    assert fam == socket.AF_INET6
    assert struct.pack("=HH", 20, 0x4002) + socket.inet_pton(socket.AF_INET6, "2001:db8::1") in body
    with pytest.raises(ValueError):
        element("fwsg-x", "not-an-address")


# -- libiptc entries (iptc.encode): layout as iptables 1.8 packs it ---------------------------

def test_iptc_entry_layout():
    e, target = iptc.encode(4, "-s 192.0.2.1/32 -m physdev --physdev-in tap1 -m mac "
                               "--mac-source fa:16:3e:00:00:01 -j fwsg-p1-e")
    assert target == "fwsg-p1-e"
    # ipt_entry 112 + physdev 104 + mac 48 + standard target 40
    assert len(e) == 112 + 104 + 48 + 40
    assert e[:4] == bytes([192, 0, 2, 1]) and e[8:12] == b"\xff" * 4      # src, smsk
    assert struct.unpack_from("=HH", e, 88) == (112 + 104 + 48, len(e))   # target, next offset
    phys = e[112:216]
    assert struct.unpack_from("=H", phys)[0] == 104 and phys[2:9] == b"physdev"
    assert phys[32:48] == b"tap1".ljust(16, b"\0")
    assert phys[48:64] == b"\xff" * 5 + b"\0" * 11      # the NUL compared: exactly tap1
    assert phys[96:98] == b"\0\x01"                     # invert, bitmask IN
    assert e[216 + 32:216 + 38] == bytes.fromhex("fa163e000001")
    assert e[264 + 2:264 + 11] == b"fwsg-p1-e"           # a jump: the chain's name

    w, _ = iptc.encode(6, "-m physdev --physdev-out tap+ --physdev-is-bridged -j ACCEPT")
    assert len(w) == 168 + 104 + 40
    assert w[168 + 64:168 + 80] == b"tap+".ljust(16, b"\0")
    assert w[168 + 80:168 + 96] == b"\xff" * 3 + b"\0" * 13   # wildcard: the prefix only
    assert w[168 + 97] == 0x02 | 0x04

    c, _ = iptc.encode(4, '-m comment --comment "fwsg:0123456789ab:3" -j DROP')
    assert len(c) == 112 + 288 + 40 and c[112 + 32:112 + 51] == b"fwsg:0123456789ab:3"
    z, name = iptc.encode(6, "-d 2001:db8::1/128 -j CT --zone 7")
    assert name == "CT" and len(z) == 168 + 104
    assert struct.unpack_from("=HH", z, 168 + 32) == (0, 7) and z[168 + 31] == 2   # rev 2


@pytest.mark.parametrize("rule", [
    "-p tcp -m tcp --dport 22 -j ACCEPT",                 # a group's rule: restore's
    "-m set --match-set fwsg-x-v4 src -j ACCEPT",
    "-m physdev --physdev-in tap1 -j LOG",                # a target extension
    "-s 192.0.2.1/24 -j ACCEPT",                          # host bits set
    "-s 2001:db8::1/128 -j ACCEPT",                       # wrong family (IPv4 asked)
    "-m physdev --physdev-in averyveryverylongname -j ACCEPT",
    '-m comment --comment "two words" -j DROP',
    "-m physdev --physdev-in tap1",                       # no target
    "-j CT --zone 70000",
])
def test_iptc_refuses_what_it_does_not_pack(rule):
    with pytest.raises(iptc.NotEncodable):
        iptc.encode(4, rule)


def test_iptc_steps_in_restore_order():
    tc = TableChange(chains={"fwsg-p1-i": Chain(("-j fwsg-fixed-i-sf", "-j fwsg-g1-i"), "DROP")},
                     new_bags=["fwsg-in-port-abc"], stale=["fwsg-p0-i"],
                     bag_add={"fwsg-in-addr": ["-d 192.0.2.5/32 -j fwsg-p1-i"]},
                     bag_del={"fwsg-in-addr": ["-d 192.0.2.6/32 -j fwsg-p0-i"]},
                     hooks=[("FORWARD", "fwsg-ingress")])
    got = [(verb, chain, rule) for verb, chain, rule, _ in iptc.steps(4, tc)]
    assert got == [("declare", "fwsg-p1-i", None), ("declare", "fwsg-in-port-abc", None),
                   ("append", "fwsg-p1-i", "-j fwsg-fixed-i-sf"),
                   ("append", "fwsg-p1-i", "-j fwsg-g1-i"),
                   ("append", "fwsg-p1-i", tc.chains["fwsg-p1-i"].printed()[-1]),
                   ("delete", "fwsg-in-addr", "-d 192.0.2.6/32 -j fwsg-p0-i"),
                   ("append", "fwsg-in-addr", "-d 192.0.2.5/32 -j fwsg-p1-i"),
                   ("insert", "FORWARD", "-j fwsg-ingress"),
                   ("flush", "fwsg-p0-i", None), ("remove", "fwsg-p0-i", None)]
    assert [e for *_, e in iptc.steps(4, tc)][2] == iptc.encode(4, "-j fwsg-fixed-i-sf")[0]
    tc.chains["fwsg-g1-i"] = Chain(("-p tcp -m tcp --dport 22 -j ACCEPT",))
    assert iptc.steps(4, tc) is None        # one rule it does not pack: the restore tools'
