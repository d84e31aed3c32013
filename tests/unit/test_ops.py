"""Every kind of plan operation, table-driven (no root): rendered as nft text, encoded for the
netlink writer (or declined, for the kinds only libnftables carries), applied by the fake kernel
and by the in-memory mirror, with the same result. Then the fake's atomicity and failure
injection, the netlink path of whole plans (decoded again by the pure-Python writer), the bulk
split, and the nft JSON read-back of every object kind, parsed from what this kernel printed.
Tests that go through the hot path run with both of its twins (the ``hot_path`` fixture)."""

import copy
import errno
import json
import pathlib
import sys

import pytest

from fwsg import _fast_py
from fwsg.backends.fake import FakeBackend
from fwsg.backends.nft import netlink
from fwsg.backends.nft.matches import encode
from fwsg.backends.nft.readback import parse_table
from fwsg.backends.nft.render import render
from fwsg.backends.nft.desired import compile_model
from fwsg.errors import KernelError
from fwsg.ops import (OPS, AddElements, AddRule, CreateSet, CreateTable, DeclareChain, DeleteChain,
                      DeleteElements, DeleteRule, DeleteSet, DeleteTable, FillChain, FlushChain,
                      ReplaceRule, apply_to)
from fwsg.plan import Plan, diff
from fwsg.ruleset import ChainDef, Ruleset, SetDef

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"

ADDRS = SetDef("inet", "g1-m4", "ipv4_addr")
PFX = SetDef("inet", "g1-m4n", "ipv4_addr", interval=True)
VMAP = SetDef("inet", "egress", "mark", "verdict")
SPOOF = SetDef("bridge", "spoof4", "ifname . ether_addr . ipv4_addr")
PROFILE = ChainDef("inet", "p1-e", ("jump g1-e", "drop"))
GROUP = ChainDef("inet", "g1-e", ("ip daddr @g1-m4 tcp dport 80 accept",))
BASE = ChainDef("inet", "egress-pre", ("meta mark & 0xffff0000 vmap @egress",),
                "filter hook prerouting priority 0")


R22 = "ip daddr @g1-m4 tcp dport 22 accept"
R443 = "ip daddr @g1-m4 tcp dport 443 accept"
INSERTED = ChainDef("inet", "g1-e", (R22, GROUP.rules[0]))   # a rule before the group's one
APPENDED = ChainDef("inet", "g1-e", (GROUP.rules[0], R443))  # a rule after it
SWAPPED = ChainDef("inet", "g1-e", (R443,))                  # the rule replaced by another


def state():
    """A kernel holding: both tables, the sets above (with a few elements), the group chain
    and an old profile chain nothing jumps to."""
    fake = FakeBackend()
    fake.commit(Plan([
        CreateTable("inet"), CreateTable("bridge"),
        CreateSet(ADDRS), CreateSet(PFX), CreateSet(VMAP), CreateSet(SPOOF),
        AddElements(ADDRS, ("192.0.2.1", "192.0.2.2")), AddElements(PFX, ("198.51.100.0/24",)),
        AddElements(SPOOF, ('"tap1" . fa:16:3e:00:00:01 . 192.0.2.1',)),
        DeclareChain(GROUP), DeclareChain(ChainDef("inet", "p0-e", ("drop",))),
        FillChain(GROUP), FillChain(ChainDef("inet", "p0-e", ("drop",))),
    ]))
    return fake


def _ud(kind, value):
    """One u32 record of a set's userdata as nft writes it (kind, length 4, host order)."""
    return bytes([kind, 4]) + value.to_bytes(4, sys.byteorder)


def dig(c):
    return f'comment "fwsg:{c.digest}/{c.kernel_rule_count}"'


# kind, the ops (applied to state() after `before`), nft text, netlink ops (None: declined),
# what the fake then holds (checked by a function of the fake)
CASES = [
    ("CreateTable", [CreateTable("inet")], ["add table inet fwsg"],
     [("table", "inet", "add table inet fwsg")],
     lambda f: "inet" in f.tables),
    ("DeleteTable", [DeleteTable("bridge")], ["delete table bridge fwsg"],
     [("deltable", "bridge", "delete table bridge fwsg")],
     lambda f: "bridge" not in f.tables and ("bridge", "spoof4") not in f.sets),
    ("CreateSet", [CreateSet(SetDef("inet", "g2-m6", "ipv6_addr"))],
     ["add set inet fwsg g2-m6 { type ipv6_addr; }"],
     [("set", "inet", "g2-m6", 0, 8, 16, None, None, _ud(0, 2), None,
       "add set inet fwsg g2-m6 { type ipv6_addr; }")],
     lambda f: f.elements[("inet", "g2-m6")] == set()),
    ("CreateSet (map)", [CreateSet(SetDef("bridge", "port-src", "ifname", "mark"))],
     ["add map bridge fwsg port-src { type ifname : mark; }"],
     [("set", "bridge", "port-src", 8, 41, 16, 19, 4, _ud(0, 1) + _ud(1, 1) + _ud(6, 0), None,
       "add map bridge fwsg port-src { type ifname : mark; }")],
     lambda f: f.elements[("bridge", "port-src")] == {}),
    ("CreateSet (interval)", [CreateSet(SetDef("inet", "g2-m4n", "ipv4_addr", interval=True))],
     ["add set inet fwsg g2-m4n { type ipv4_addr; flags interval; }"],
     [("set", "inet", "g2-m4n", 4, 7, 4, None, None, _ud(0, 2), None,
       "add set inet fwsg g2-m4n { type ipv4_addr; flags interval; }")],
     lambda f: f.sets[("inet", "g2-m4n")].interval),
    ("DeleteSet", [DeleteSet(SPOOF)], ["delete set bridge fwsg spoof4"],
     [("delset", "bridge", "spoof4", "delete set bridge fwsg spoof4")],
     lambda f: ("bridge", "spoof4") not in f.sets),
    ("AddElements", [AddElements(ADDRS, ("192.0.2.3",))],
     ["add element inet fwsg g1-m4 { 192.0.2.3 }"],
     [("elem", True, "inet", "g1-m4", ["192.0.2.3"], bytes([192, 0, 2, 3]), 4, None)],
     lambda f: "192.0.2.3" in f.elements[("inet", "g1-m4")]),
    ("AddElements (concatenation)",
     [AddElements(SPOOF, ('"tap2" . fa:16:3e:00:00:02 . 192.0.2.2',))],
     ['add element bridge fwsg spoof4 { "tap2" . fa:16:3e:00:00:02 . 192.0.2.2 }'],
     [("elem", True, "bridge", "spoof4", ['"tap2" . fa:16:3e:00:00:02 . 192.0.2.2'],
       [netlink.encode_key(SPOOF.key_type, '"tap2" . fa:16:3e:00:00:02 . 192.0.2.2')], 0, None)],
     lambda f: len(f.elements[("bridge", "spoof4")]) == 2),
    ("AddElements (verdict map)", [AddElements(VMAP, (("0x00010000", "jump g1-e"),))],
     ["add element inet fwsg egress { 0x00010000 : jump g1-e }"],
     [("elem", True, "inet", "egress", ["0x00010000"],
       [netlink.encode_key("mark", "0x00010000")], 0, ["g1-e"])],
     lambda f: f.elements[("inet", "egress")] == {"0x00010000": "jump g1-e"}),
    ("AddElements (interval)", [AddElements(PFX, ("203.0.113.0/28",))],
     ["add element inet fwsg g1-m4n { 203.0.113.0/28 }"], None,
     lambda f: "203.0.113.0/28" in f.elements[("inet", "g1-m4n")]),
    ("DeleteElements", [DeleteElements(ADDRS, ("192.0.2.1",))],
     ["delete element inet fwsg g1-m4 { 192.0.2.1 }"],
     [("elem", False, "inet", "g1-m4", ["192.0.2.1"], bytes([192, 0, 2, 1]), 4, None)],
     lambda f: f.elements[("inet", "g1-m4")] == {"192.0.2.2"}),
    ("DeclareChain", [DeclareChain(PROFILE)], ["add chain inet fwsg p1-e"],
     [("chain", "inet", "p1-e")], lambda f: f.chains[("inet", "p1-e")] == [None, []]),
    ("DeclareChain (base)", [DeclareChain(BASE)],
     ["add chain inet fwsg egress-pre { type filter hook prerouting priority 0; policy accept; }"],
     [("chain", "inet", "egress-pre", 0, 0, 1, "add chain inet fwsg egress-pre "
       "{ type filter hook prerouting priority 0; policy accept; }")],
     lambda f: f.chains[("inet", "egress-pre")][0] == BASE.hook),
    ("FillChain", [DeclareChain(PROFILE), FillChain(PROFILE)],
     ["add chain inet fwsg p1-e", "add rule inet fwsg p1-e jump g1-e",
      f"add rule inet fwsg p1-e drop {dig(PROFILE)}"],
     [("chain", "inet", "p1-e"), ("rule", "inet", "p1-e", "jump", "g1-e", None),
      ("rule", "inet", "p1-e", "drop", None, dig(PROFILE)[9:-1])],
     lambda f: f.rules("inet", "p1-e") == ["jump g1-e", f"drop {dig(PROFILE)}"]),
    ("FillChain (real matches)", [FlushChain("inet", "g1-e"), FillChain(GROUP)],
     ["flush chain inet fwsg g1-e", f"add rule inet fwsg g1-e {GROUP.rules[0]} {dig(GROUP)}"],
     [("flush", "inet", "g1-e"),    # real matches as expressions (backends/nft/matches.py)
      ("xrule", "inet", "g1-e", GROUP.rules[0], encode(GROUP.rules[0]), dig(GROUP)[9:-1])],
     lambda f: f.rules("inet", "g1-e") == [f"{GROUP.rules[0]} {dig(GROUP)}"]),
    ("FlushChain", [FlushChain("inet", "p0-e")], ["flush chain inet fwsg p0-e"],
     [("flush", "inet", "p0-e")], lambda f: f.rules("inet", "p0-e") == []),
    # rule by rule, by handle: state() gave the group chain's rule handle 1, p0-e's handle 2
    ("AddRule (insert)", [AddRule(INSERTED, 0, 1), ReplaceRule(INSERTED, 1, 1)],
     [f"insert rule inet fwsg g1-e position 1 {R22}",
      f"replace rule inet fwsg g1-e handle 1 {GROUP.rules[0]} {dig(INSERTED)}"],
     [("xrule", "inet", "g1-e", R22, encode(R22), None, 1, None),
      ("xrule", "inet", "g1-e", GROUP.rules[0], encode(GROUP.rules[0]), dig(INSERTED)[9:-1],
       None, 1)],
     lambda f: f.chains[("inet", "g1-e")][1] == [(3, R22),
                                                 (1, f"{GROUP.rules[0]} {dig(INSERTED)}")]),
    ("AddRule (append)", [AddRule(APPENDED, 1), ReplaceRule(APPENDED, 0, 1)],
     [f"add rule inet fwsg g1-e {R443} {dig(APPENDED)}",
      f"replace rule inet fwsg g1-e handle 1 {GROUP.rules[0]}"],
     [("xrule", "inet", "g1-e", R443, encode(R443), dig(APPENDED)[9:-1]),
      ("xrule", "inet", "g1-e", GROUP.rules[0], encode(GROUP.rules[0]), None, None, 1)],
     lambda f: f.rules("inet", "g1-e") == [GROUP.rules[0], f"{R443} {dig(APPENDED)}"]),
    ("DeleteRule", [DeleteRule("inet", "g1-e", 1), AddRule(SWAPPED, 0)],
     ["delete rule inet fwsg g1-e handle 1", f"add rule inet fwsg g1-e {R443} {dig(SWAPPED)}"],
     [("delrule", "inet", "g1-e", 1),
      ("xrule", "inet", "g1-e", R443, encode(R443), dig(SWAPPED)[9:-1])],
     lambda f: f.rules("inet", "g1-e") == [f"{R443} {dig(SWAPPED)}"]),
    ("DeleteChain", [FlushChain("inet", "p0-e"), DeleteChain("inet", "p0-e")],
     ["flush chain inet fwsg p0-e", "delete chain inet fwsg p0-e"],
     [("flush", "inet", "p0-e"), ("delchain", "inet", "p0-e")],
     lambda f: ("inet", "p0-e") not in f.chains),
]


def test_every_operation_kind_is_covered():
    assert {type(op) for case in CASES for op in case[1]} == set(OPS)


@pytest.mark.parametrize("kind, ops, text, nl, holds", CASES, ids=[c[0] for c in CASES])
def test_operation(kind, ops, text, nl, holds, hot_path):
    plan = Plan(ops, {}, render)
    assert render(ops) == text
    assert str(plan) == "".join(t + "\n" for t in text)
    assert netlink.netlink_ops(plan) == nl
    fake = state()
    mirror = fake.read()
    assert fake.commit(plan) == "fake"
    assert holds(fake), fake.dump()
    for op in ops:  # the mirror follows the kernel (chains compared by digest)
        apply_to(mirror, op)
    after = fake.read()
    assert (mirror.tables, mirror.sets, mirror.elements) == (after.tables, after.sets,
                                                            after.elements)
    assert {k: c.digest for k, c in mirror.chains.items() if after.chains[k].digest} == \
        {k: c.digest for k, c in after.chains.items() if c.digest}


@pytest.mark.parametrize("ops, code", [
    ([DeleteTable("bridge"), DeleteTable("bridge")], errno.ENOENT),
    ([CreateSet(SetDef("inet", "g1-m4", "ipv6_addr"))], errno.EEXIST),
    ([DeleteSet(ADDRS)], errno.EBUSY),                       # the group chain uses it
    ([DeleteElements(ADDRS, ("203.0.113.99",))], errno.ENOENT),
    ([AddElements(VMAP, (("0x00010000", "jump nowhere"),))], errno.ENOENT),
    ([AddElements(VMAP, (("0x00010000", "jump g1-e"),)),
      AddElements(VMAP, (("0x00010000", "jump p0-e"),))], errno.EEXIST),
    ([DeclareChain(PROFILE), FillChain(PROFILE), DeleteChain("inet", "g1-e")],
     errno.EBUSY),                                            # a rule jumps to it
    ([FillChain(PROFILE)], errno.ENOENT),                     # never declared
    ([DeclareChain(PROFILE), FillChain(ChainDef("inet", "p1-e", ("jump nowhere",)))],
     errno.ENOENT),
    ([AddElements(ADDRS, ("192.0.2.9",)), FlushChain("inet", "nope")], errno.ENOENT),
    ([DeleteRule("inet", "g1-e", 99)], errno.ENOENT),         # no rule has that handle
    ([AddRule(INSERTED, 0, 99)], errno.ENOENT),
    ([ReplaceRule(APPENDED, 0, 2)], errno.ENOENT),            # handle 2 is in another chain
    ([AddRule(ChainDef("inet", "g1-e", ("ip daddr @nope accept",)), 0)], errno.ENOENT),
])
def test_fake_refuses_like_the_kernel_and_changes_nothing(ops, code):
    fake = state()
    before, commits = fake.dump(), fake.commits
    with pytest.raises(KernelError) as e:
        fake.commit(Plan(ops, {}, render))
    assert e.value.errno == code
    assert fake.dump() == before and fake.commits == commits


def test_a_plan_guarded_by_an_old_generation_is_refused_whole():
    fake = state()
    before = fake.dump()
    plan = Plan([DeleteRule("inet", "g1-e", 1), AddRule(SWAPPED, 0)], {}, render, guard=0)
    with pytest.raises(KernelError) as e:
        fake.commit(plan)
    assert e.value.errno == errno.ERESTART and fake.dump() == before
    plan = Plan(plan.ops, {}, render, guard=1)   # state() made one commit: generation 1
    fake.commit(plan)
    assert plan.handles == {1: 3} and plan.after == 2


def test_the_mirror_keeps_the_handles_the_kernel_reported(hot_path):
    fake = state()
    mirror = fake.read()
    plan = Plan([FlushChain("inet", "g1-e"), FillChain(APPENDED)], {}, render)
    fake.commit(plan)
    plan.update(mirror)
    assert mirror.meta["rule_handles"][("inet", "g1-e")] == [3, 4] and mirror.meta[
        "generation"] == 2
    edit = Plan([AddRule(INSERTED.__class__("inet", "g1-e", (R22,) + APPENDED.rules), 0, 3),
                 ReplaceRule(ChainDef("inet", "g1-e", (R22,) + APPENDED.rules), 2, 4)], {},
                render, guard=2)
    fake.commit(edit)
    edit.update(mirror)
    assert mirror.meta["rule_handles"][("inet", "g1-e")] == [5, 3, 4] == \
        [h for h, _ in fake.chains[("inet", "g1-e")][1]]
    unknown = Plan([DeleteRule("inet", "g1-e", 5), ReplaceRule(APPENDED, 1, 4)], {}, render)
    fake.commit(unknown)
    unknown.update(mirror)  # handles reported: still known
    assert mirror.meta["rule_handles"][("inet", "g1-e")] == [3, 4]
    apply_to(mirror, AddRule(INSERTED, 0, 3))   # not reported: forgotten
    assert ("inet", "g1-e") not in mirror.meta["rule_handles"]


def test_a_jump_in_the_generation_keeps_only_the_handles_that_commit_reported():
    mirror = Ruleset()
    mirror.add_set(ADDRS)
    mirror.meta = {"generation": 5, "rule_handles": {("inet", "p0-e"): [2], GROUP.key: [1]}}
    plan = Plan([FlushChain("inet", "g1-e"), FillChain(GROUP)], {}, render, basis=5)
    plan.handles = {1: [9]}
    plan.counted(7)                      # the kernel made 7: someone else committed 6
    assert plan.jumped and plan.after == 7
    plan.update(mirror)
    assert mirror.meta == {"generation": 7, "rule_handles": {GROUP.key: [9]}}
    quiet = Plan([AddElements(ADDRS, ("192.0.2.9",))], {}, render, basis=7)
    quiet.counted(None)                  # not reported: one more, never above the kernel's
    assert (quiet.after, quiet.jumped) == (8, False)
    quiet.update(mirror)
    assert mirror.meta == {"generation": 8, "rule_handles": {GROUP.key: [9]}}
    unknown = Plan([AddElements(ADDRS, ("192.0.2.8",))], {}, render)
    unknown.counted(None)
    unknown.update(mirror)
    assert mirror.meta == {"generation": None, "rule_handles": {}}
    guarded = Plan([DeleteRule("inet", "g1-e", 9)], {}, render, guard=3)
    guarded.counted(4)
    assert (guarded.after, guarded.jumped) == (4, False)


@pytest.mark.parametrize("old, new", [
    (("a", "b", "c"), ("a", "b", "c", "d")),          # appended
    (("a", "b", "c", "d"), ("a", "b", "c")),          # last removed
    (("a", "b", "c", "d"), ("x", "a", "b", "c", "d")),  # inserted first
    (("a", "b", "c", "d"), ("a", "x", "c", "d")),     # one replaced in the middle
    (("a", "b", "c", "d", "e"), ("a", "d", "e")),     # two removed in the middle
    (("a", "b", "c", "d"), ("b", "c", "d")),          # first removed
])
def test_rule_edit_turns_the_old_chain_into_the_new_one(old, new):
    from fwsg.plan import rule_edit

    rules = {r: f"meta l4proto {i} accept" for i, r in enumerate("abcdex")}
    a = ChainDef("inet", "g1-e", tuple(rules[r] for r in old))
    b = ChainDef("inet", "g1-e", tuple(rules[r] for r in new))
    fake = FakeBackend()
    fake.commit(Plan([CreateTable("inet"), DeclareChain(a), FillChain(a)], {}, render))
    handles = [h for h, _ in fake.chains[a.key][1]]
    ops = rule_edit(a, b, handles)
    assert ops and len(ops) < len(b.rules) + 1
    kept = set(handles) - {op.handle for op in ops if type(op) is DeleteRule}
    fake.commit(Plan(ops, {}, render))
    assert fake.rules("inet", "g1-e") == b.rendered_rules()
    assert kept <= {h for h, _ in fake.chains[a.key][1]}   # the rules that stay are not touched
    assert rule_edit(a, ChainDef("inet", "g1-e", ("meta l4proto 99 accept",)), handles) is None
    assert rule_edit(a, b, handles[:-1]) is None


def test_fake_failure_injection_and_last_plan():
    fake = state()
    before = fake.dump()
    plan = Plan([AddElements(ADDRS, ("192.0.2.7",))], {}, render)
    fake.fail_next(2, errno.ENOBUFS)
    for _ in range(2):
        with pytest.raises(KernelError) as e:
            fake.commit(plan)
        assert e.value.errno == errno.ENOBUFS and fake.last_plan is plan
        assert fake.dump() == before
    assert fake.commit(plan) == "fake"
    assert "192.0.2.7" in fake.dump()
    assert fake.commit(Plan()) is None and not fake.last_plan


def test_dump_lists_everything_in_a_stable_order():
    assert state().dump() == (
        "table bridge fwsg\n"
        "  set spoof4 { ifname . ether_addr . ipv4_addr }"
        ' = { "tap1" . fa:16:3e:00:00:01 . 192.0.2.1 }\n'
        "table inet fwsg\n"
        "  map egress { mark : verdict }\n"
        "  set g1-m4 { ipv4_addr } = { 192.0.2.1, 192.0.2.2 }\n"
        "  set g1-m4n { ipv4_addr interval } = { 198.51.100.0/24 }\n"
        "  chain g1-e\n"
        f"    {GROUP.rules[0]} {dig(GROUP)}\n"
        "  chain p0-e\n"
        f"    drop {dig(ChainDef('inet', 'p0-e', ('drop',)))}\n")


class _Capture:
    """Stands in for libnftables under the pure-Python NetlinkWriter: records the text."""

    def __init__(self):
        self.texts = []

    def run(self, text, json_output=False):
        self.texts.append(text)
        return ""


def _decode(ops):
    """What the pure-Python twin of the netlink writer sends for ``ops`` (as nft text)."""
    writer = _fast_py.NetlinkWriter.__new__(_fast_py.NetlinkWriter)
    writer._ctx = _Capture()
    writer.commit(ops)
    return writer._ctx.texts


def test_model_changes_take_the_netlink_path_with_the_same_content(demo_model, hot_path):
    desired_before = compile_model(demo_model)
    fake = FakeBackend()
    fake.commit(diff(desired_before, None))
    doc = copy.deepcopy(demo_model)
    doc["sg_member_ips"]["sg-web"]["IPv4"].append("192.0.2.44")       # a member
    doc["devices"]["port-new"] = dict(doc["devices"]["port-web"], device="tap-new",
                                      mac_address="fa:16:3e:00:00:44", fixed_ips=["192.0.2.44"],
                                      security_groups=["sg-web", "sg-client"])  # a new profile
    plan = diff(compile_model(doc, compile_model(demo_model).meta["port_ids"]), fake.read())
    ops = netlink.netlink_ops(plan)
    assert ops is not None and {o[0] for o in ops} == {"elem", "chain", "rule"}
    sent = "".join(_decode(ops))
    for line in str(plan).splitlines():  # every element and rule of the plan is sent
        if line.startswith("add element"):
            body = line.split("{ ", 1)[1].rstrip(" }")
            assert all(item in sent for item in body.split(", ")), line
        elif line.startswith("add rule"):
            assert line.split(" comment ")[0] in sent, line
    fake.commit(plan)
    assert not diff(compile_model(doc, compile_model(demo_model).meta["port_ids"]), fake.read())


def test_a_whole_cold_start_encodes_and_what_does_not_is_left_to_libnftables(demo_model):
    ops = netlink.netlink_ops(diff(compile_model(demo_model), None))
    assert ops is not None
    assert {o[0] for o in ops} >= {"table", "set", "chain", "rule", "xrule", "elem"}
    assert any(o[0] == "chain" and len(o) > 3 for o in ops)   # base chains with their hooks
    odd = ChainDef("inet", "g9-e", ("tcp flags syn accept",))
    assert netlink.netlink_ops(Plan([DeclareChain(odd), FillChain(odd)])) is None
    assert netlink.netlink_ops(Plan([AddElements(PFX, ("203.0.113.0/28",))])) is None
    odd_set = SetDef("inet", "g9-m4", "ether_type")
    assert netlink.netlink_ops(Plan([CreateSet(odd_set)])) is None


def test_bulk_split_keeps_structure_in_text_and_moves_addresses_to_bounded_batches(hot_path):
    big = SetDef("inet", "g9-m4", "ipv4_addr")
    addrs = tuple(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}" for i in range(25000))
    plan = Plan([CreateTable("inet"), CreateSet(big), AddElements(big, addrs),
                 AddElements(PFX, ("198.51.100.0/24",))], {}, render)
    rest, batches = netlink.split_bulk(plan, threshold=20000, chunk=10000)
    assert rest == [CreateTable("inet"), CreateSet(big), AddElements(PFX, ("198.51.100.0/24",))]
    assert [sum(len(op[4]) for op in b) for b in batches] == [10000, 10000, 5000]
    assert [t for b in batches for op in b for t in op[4]] == list(addrs)
    assert all(len(op[5]) == 4 * len(op[4]) for b in batches for op in b)
    assert netlink.split_bulk(plan, threshold=30000) is None


def test_readback_parses_every_object_kind_as_compiled(hot_path):
    """The kernel's own listing (captured from nft 1.0.6 here; tests/netns/test_readback.py
    checks it is still what the kernel prints) parses back into exactly the compiled state."""
    listing = json.loads((FIXTURES / "nft-readback.json").read_text())
    rs = None
    for fam, items in listing.items():
        rs = parse_table(fam, items, rs)
    want = compile_model(json.loads((FIXTURES / "readback-model.json").read_text()))
    kinds = {(sd.is_map, sd.interval, " . " in sd.key_type, sd.value_type)
             for sd in rs.sets.values()}
    assert kinds >= {(False, False, False, None), (False, True, False, None),
                     (False, False, True, None), (False, True, True, None),
                     (True, False, False, "verdict"), (True, False, False, "mark"),
                     (True, False, False, "ct zone")}
    assert {c.hook is None for c in rs.chains.values()} == {True, False}
    assert rs.tables == want.tables
    assert rs.sets == want.sets
    assert rs.elements == want.elements
    assert {k: c.digest for k, c in rs.chains.items()} == \
        {k: c.digest for k, c in want.chains.items()}
    assert {k: c.hook for k, c in rs.chains.items()} == {k: c.hook for k, c in want.chains.items()}
    assert not diff(want, rs)


def test_a_chain_edited_behind_fwsgs_back_reads_as_drift():
    listing = json.loads((FIXTURES / "nft-readback.json").read_text())
    items = copy.deepcopy(listing["inet"])
    rule = next(i["rule"] for i in items if "rule" in i and i["rule"]["chain"] == "egress-pre")
    items.append({"rule": dict(rule, handle=9999)})  # someone appended a rule
    rs = parse_table("inet", items)
    assert rs.chains[("inet", "egress-pre")].digest == "drift"
    assert isinstance(rs, Ruleset)


def test_the_hot_path_fixture_really_switches_twins(hot_path):
    from fwsg import fast

    assert fast.pack_addrs is hot_path.pack_addrs and fast.render_elements is hot_path.render_elements
    assert fast.COMPILED is (hot_path is not _fast_py)


def test_plan_size_is_counted_without_rendering_and_equals_the_text(demo_model):
    plan = diff(compile_model(demo_model), None)
    assert plan._lines is None
    size = plan.size
    assert plan._lines is None                    # nothing rendered to count it
    assert size == len(str(plan).encode())
    many = tuple(f"10.0.{i >> 8}.{i & 255}" for i in range(9000))   # three statements
    for ops in ([AddElements(ADDRS, many)], [DeleteElements(ADDRS, many)],
                [AddElements(VMAP, (("0x00010000", "jump g1-e"),)),
                 DeleteElements(VMAP, ("0x00020000",))]):
        p = Plan(ops, {}, render)
        assert p.size == len(str(Plan(ops, {}, render)).encode())
