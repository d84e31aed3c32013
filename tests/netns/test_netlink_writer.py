"""The compiled libnftnl batch writer and its libnftables twin leave identical kernels."""

import os
import subprocess

import pytest

from fwsg import _fast_py
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
    assert "192.0.2.7" not in a and "192.0.2.1" in a
    assert '"tap1" . fa:16:3e:00:00:01 . 192.0.2.1' in a


@pytest.mark.skipif(_fast_c is None, reason="fwsg._fast not built")
def test_refused_batch_changes_nothing(two_namespaces):
    ns = two_namespaces[0]
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=SETUP, text=True,
                   check=True)
    before = ruleset(ns)
    with entered(ns):
        writer = _fast_c.NetlinkWriter()
    with pytest.raises(Exception, match="refused"):
        writer.commit([("chain", "inet", "p9-e"),
                       ("elem", False, "inet", "m4", ["192.0.2.99"], bytes([192, 0, 2, 99]), 4,
                        None)])  # deleting a missing element fails the whole batch
    assert ruleset(ns) == before
