"""Deletions by rule handle (``fwsg.backends.iptables.nfdel``) without a kernel: a rule's
signature ignores what a dump adds (counters, INFO padding, nests without their flag), the
first rule of a chain with the signature is the one deleted, and any change that is not
deletions only, a rule form not packed or a rule not found is left to the restore tools.
The netns tests compare the signatures with real dumps."""

import struct

from fwsg.backends.iptables import ebnl, nfdel
from fwsg.backends.iptables.plan import TableChange
from fwsg.nlmsg import attr

RULE = "-m physdev --physdev-in tap1 -j fwsg-unspec"


def _dumped(fam, rule):
    """What a kernel dump of ``rule`` holds: a counter with values, INFO padded to 8 bytes,
    the data nests without NLA_F_NESTED."""
    def nest(value):
        return b"".join(attr(k, v if isinstance(v, bytes) else
                             b"".join(attr(j, w) for j, w in v)) for k, v in value)
    exprs = attr(1, attr(1, b"counter\0") + attr(2, attr(1, struct.pack(">Q", 7))
                                                 + attr(2, struct.pack(">Q", 700))))
    for name, fields in nfdel.ip_rule(fam, rule)[0]:
        data = b""
        for kind, value in fields:
            if isinstance(value, tuple):
                value = nest(value)
            elif name == "match" and kind == 3:
                value = value.ljust((len(value) + 7) & ~7, b"\0")
            data += attr(kind, value)
        exprs += attr(1, attr(1, name.encode() + b"\0") + attr(2, data))
    return exprs


def test_signature_ignores_counters_padding_and_nest_flags():
    assert nfdel.signature(_dumped(4, RULE)) == nfdel.ip_rule(4, RULE)
    other = nfdel.signature(_dumped(4, RULE.replace("tap1", "tap2")))
    assert other != nfdel.ip_rule(4, RULE)
    # a comment (iptables-nft's userdata) makes another rule
    assert nfdel.signature(_dumped(4, RULE), b"\x00\x05fwsg") != nfdel.ip_rule(4, RULE)


def test_forms_not_packed():
    for rule in ("-s 192.0.2.0/24 -j ACCEPT",                      # a prefix: a bitwise
                 '-m comment --comment "fwsg:x" -j DROP',          # userdata
                 "-p tcp -j ACCEPT"):
        try:
            nfdel.ip_rule(4, rule)
        except nfdel.NotFound:
            continue
        raise AssertionError(rule)
    assert nfdel.ip_rule(6, "-d 2001:db8::1/128 -j fwsg-p1-i")
    assert nfdel.ip_rule(4, "-m physdev --physdev-in tap1 -j CT --zone 3")
    assert nfdel.eb_rule("fwsg-arp-x", "-i tap1 -j fwsg-a1")


def _tc(**kw):
    tc = TableChange()
    for k, v in kw.items():
        setattr(tc, k, v)
    return tc


def test_steps_delete_the_first_equal_rule_then_flush_and_delete_chains():
    sig = nfdel.ip_rule(4, RULE)
    other = nfdel.ip_rule(4, RULE.replace("tap1", "tap2"))
    dump = {"fwsg-e-port-x": [(10, other), (11, sig), (12, sig)]}
    seen = []

    def fake_dump(fam, table, chain, needles=None):
        seen.append((fam, table, chain, needles))
        return dump.get(chain, [])
    msgs = nfdel.steps({(4, "mangle"): _tc(bag_del={"fwsg-e-port-x": [RULE]},
                                           stale=["fwsg-p1-e"])}, fake_dump)
    assert [(m[0], m[1], m[2], m[4]) for m in msgs] == [
        (2, nfdel.NFT_MSG_DELRULE, 0, f"-D fwsg-e-port-x {RULE}"),
        (2, nfdel.NFT_MSG_DELRULE, 0, "-F fwsg-p1-e"),
        (2, nfdel.NFT_MSG_DELCHAIN, nfdel.NLM_F_NONREC, "-X fwsg-p1-e")]
    assert msgs[0][3].endswith(attr(nfdel.RULE_HANDLE, struct.pack(">Q", 11)))
    assert seen[0][:3] == (4, "mangle", "fwsg-e-port-x") and seen[0][3]   # filtered dump


def test_steps_leave_to_the_tools():
    dump = lambda *a: []   # noqa: E731
    found = lambda *a: [(1, nfdel.ip_rule(4, RULE))]   # noqa: E731
    assert nfdel.steps({(4, "mangle"): _tc(bag_del={"c": [RULE]})}, dump) is None  # not found
    assert nfdel.steps({(4, "mangle"): _tc(bag_del={"c": [RULE]})}, found)
    for more in ({"bag_add": {"c": [RULE]}}, {"new_bags": ["b"]}, {"hooks": [("INPUT", "x")]},
                 {"moved": [("INPUT", "x")]}):
        assert nfdel.steps({(4, "mangle"): _tc(bag_del={"c": [RULE]}, **more)}, found) is None
    assert nfdel.steps({(4, "mangle"): _tc(bag_del={"c": ["-p tcp -j ACCEPT"]})}, found) is None
    assert nfdel.steps({("eb", "nat"): _tc(bag_del={"c": ["-i tap1 --weird x -j DROP"]})},
                       found) is None
    assert ebnl.NotEncodable   # the eb forms are ebnl's
