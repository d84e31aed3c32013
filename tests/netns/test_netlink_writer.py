"""The compiled libnftnl batch writer and its libnftables twin leave identical kernels."""

import os
import subprocess

import pytest

from fwsg import _fast_py
from fwsg.errors import KernelError
from fwsg.lab import netns_available
from fwsg.netns import entered
from fwsg.backends.nft.netlink import encode_key, encode_value

try:
    from fwsg import _fast as _fast_c
except ImportError:  # pragma: no cover
    _fast_c = None

SETUP = """add table inet fwsg
add table bridge fwsg
add chain inet fwsg target
add set inet fwsg m4 { type ipv4_addr; }
add map inet fwsg egress { type mark : verdict; }
add map bridge fwsg port-src { type ifname : mark; }
add set bridge fwsg spoof4 { type ifname . ether_addr . ipv4_addr; }
"""


def ops():
    spoof = '"tap1" . fa:16:3e:00:00:01 . 192.0.2.1'
    return [
        ("chain", "inet", "p1-e"),
        ("rule", "inet", "p1-e", "jump", "target", None),
        ("rule", "inet", "p1-e", "drop", None, "fwsg:0123456789abcdef/2"),
        ("elem", True, "inet", "m4", ["192.0.2.1", "192.0.2.7"],
         bytes([192, 0, 2, 1, 192, 0, 2, 7]), 4, None),
        ("elem", True, "inet", "egress", ["0x00010000"], [encode_key("mark", "0x00010000")], 0,
         ["p1-e"]),
        ("elem", True, "inet", "egress", ["0x0000ffff"], [encode_key("mark", "0x0000ffff")], 0,
         [encode_value("verdict", "drop")]),   # the ambiguous receiver's entry
        ("elem", True, "bridge", "port-src", ['"tap1"'], [encode_key("ifname", '"tap1"')], 0,
         [encode_value("mark", "0x00010000")]),
        ("elem", True, "bridge", "spoof4", [spoof],
         [encode_key("ifname . ether_addr . ipv4_addr", spoof)], 0, None),
    ]


@pytest.fixture
def two_namespaces():
    ok, why = netns_available()
    if not ok:
        pytest.skip(why)
    names = [f"fwsg-nlw-{os.getpid()}-{i}" for i in range(2)]
    for n in names:
        subprocess.run(["ip", "netns", "add", n], check=True)
    try:
        yield names
    finally:
        for n in names:
            subprocess.run(["ip", "netns", "del", n])


def ruleset(ns):
    return subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(_fast_c is None, reason="fwsg._fast not built")
def test_both_writers_leave_the_same_ruleset(two_namespaces):
    for ns, mod in zip(two_namespaces, (_fast_c, _fast_py)):
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=SETUP, text=True,
                       check=True)
        with entered(ns):
            writer = mod.NetlinkWriter()
        writer.commit(ops())
        writer.commit([("elem", False, "inet", "m4", ["192.0.2.7"], bytes([192, 0, 2, 7]), 4,
                        None)])
        writer.close()
    a, b = (ruleset(ns) for ns in two_namespaces)
    assert a == b
    assert "jump target" in a and 'drop comment "fwsg:0123456789abcdef/2"' in a
    assert "0x0000ffff : drop" in a
    assert "192.0.2.7" not in a and "192.0.2.1" in a
    assert '"tap1" . fa:16:3e:00:00:01 . 192.0.2.1' in a


# deleting a missing element fails the whole batch
MISSING = ("elem", False, "inet", "m4", ["192.0.2.99"], bytes([192, 0, 2, 99]), 4, None)


def _set_up_writer(ns):
    """SETUP loaded in ``ns``; (its ruleset, a compiled writer bound to ``ns``)."""
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=SETUP, text=True,
                   check=True)
    with entered(ns):
        return ruleset(ns), _fast_c.NetlinkWriter()


@pytest.mark.skipif(_fast_c is None, reason="fwsg._fast not built")
def test_refused_batch_changes_nothing(two_namespaces):
    ns = two_namespaces[0]
    before, writer = _set_up_writer(ns)
    with pytest.raises(Exception, match="refused"):
        writer.commit([("chain", "inet", "p9-e"), MISSING])
    assert ruleset(ns) == before


@pytest.mark.skipif(_fast_c is None, reason="fwsg._fast not built")
def test_failure_inside_a_batch_is_found_and_the_next_batch_is_answered(two_namespaces):
    """Only a batch's last message asks for an acknowledgement: a failure before it is still
    found (the batch refused whole), and its answers never count for the next batch."""
    ns = two_namespaces[0]
    before, writer = _set_up_writer(ns)
    missing = MISSING
    for _ in range(3):
        with pytest.raises(KernelError, match="refused"):
            writer.commit([("chain", "inet", "p8-e"), missing, ("chain", "inet", "p9-e")])
        assert ruleset(ns) == before
    writer.commit([("chain", "inet", "p8-e"), ("chain", "inet", "p9-e")])
    after = ruleset(ns)
    assert "chain p8-e" in after and "chain p9-e" in after
    with pytest.raises(KernelError, match="refused"):
        writer.commit([missing])
    assert ruleset(ns) == after


def _handles(ns, chain):
    """(rule text without handle, handle) of a chain, as nft lists them with -a."""
    out = subprocess.run(["ip", "netns", "exec", ns, "nft", "-a", "list", "chain", "inet", "fwsg",
                          chain], capture_output=True, text=True, check=True).stdout
    rules = []
    for line in out.splitlines():
        text, sep, handle = line.strip().rpartition(" # handle ")
        if sep and not text.startswith("chain "):
            rules.append((text, int(handle)))
    return rules


@pytest.mark.skipif(_fast_c is None, reason="fwsg._fast not built")
def test_both_writers_edit_rules_by_handle_alike_and_report_handles(two_namespaces):
    from fwsg.backends.nft.matches import encode
    from fwsg.errors import KernelError

    a, b, c = ("ip saddr 192.0.2.0/24 tcp dport %d accept" % p for p in (22, 80, 443))
    for ns, mod in zip(two_namespaces, (_fast_c, _fast_py)):
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=SETUP, text=True,
                       check=True)
        with entered(ns):
            writer = mod.NetlinkWriter()
        made = writer.commit([("chain", "inet", "g1-i"),
                              ("xrule", "inet", "g1-i", a, encode(a), None),
                              ("rule", "inet", "g1-i", "jump", "target", "fwsg:x/2")], echo=True)
        gen = writer.generation
        assert made[0] is None and [h for _, h in _handles(ns, "g1-i")] == made[1:]
        # c inserted before a, b added at the end with the comment, the jump's comment off
        made2 = writer.commit([("xrule", "inet", "g1-i", c, encode(c), None, made[1], None),
                               ("xrule", "inet", "g1-i", b, encode(b), "fwsg:y/4"),
                               ("rule", "inet", "g1-i", "jump", "target", None, None, made[2])],
                              genid=gen, echo=True)
        assert writer.generation == gen + 1
        listed = _handles(ns, "g1-i")
        assert [t for t, _ in listed] == [c, a, "jump target", f'{b} comment "fwsg:y/4"']
        assert [h for _, h in listed] == [made2[0], made[1], made2[2], made2[1]]
        before = ruleset(ns)
        with pytest.raises(KernelError) as e:     # made against an older generation: refused
            writer.commit([("delrule", "inet", "g1-i", made[1])], genid=gen, echo=True)
        assert e.value.errno == 85 and ruleset(ns) == before        # ERESTART, nothing changed
        writer.commit([("delrule", "inet", "g1-i", made[1])], genid=gen + 1)
        assert a not in ruleset(ns)
        writer.close()
    assert ruleset(two_namespaces[0]) == ruleset(two_namespaces[1])
