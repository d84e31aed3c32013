"""A whole cold start (tables, set and map declarations, base chains, every rule form fwsg
emits) as one libnftnl batch leaves the same kernel objects as libnftables given the same
plan: compared by listing and by the raw attributes the kernel reports for every table, set,
chain and rule (byte for byte, handles left out)."""

import socket
import struct
import subprocess

import pytest

from fwsg import _fast_py
from fwsg.backends.nft import netlink
from fwsg.backends.nft.desired import Desired
from fwsg.backends.nft.render import render
from fwsg.lab.bench import scenario
from fwsg.model import Model
from fwsg.netns import entered
from fwsg.ops import AddElements
from fwsg.plan import diff

try:
    from fwsg import _fast as _fast_c
except ImportError:  # pragma: no cover
    _fast_c = None

pytestmark = pytest.mark.skipif(_fast_c is None, reason="fwsg._fast not built")

# NFT_MSG_GET* -> the attribute numbers to leave out (handles; a chain's and table's use count
# is kept: it counts the references, which must be the same)
_GET = {1: {4}, 10: {16}, 4: {2}, 7: {3, 6}}   # tables, sets, chains, rules


def _attrs(payload):
    out, i = [], 0
    while i + 4 <= len(payload):
        ln, typ = struct.unpack_from("=HH", payload, i)
        out.append((typ & 0x3fff, payload[i + 4:i + ln]))
        i += (ln + 3) & ~3
    return out


def raw_objects(ns):
    """[(message type, family, attributes)] of every table, set, chain and rule in ``ns`` as
    the kernel dumps them (handles and rule positions left out)."""
    with entered(ns):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
    out = []
    try:
        for seq, (get, skip) in enumerate(_GET.items(), 1):
            req = struct.pack("=IHHII", 20, (10 << 8) | get, 0x301, seq, 0) + bytes(4)
            sock.send(req)
            done = False
            while not done:
                data = sock.recv(1 << 20)
                i = 0
                while i + 16 <= len(data):
                    ln, typ = struct.unpack_from("=IH", data, i)
                    if typ == 3:       # NLMSG_DONE
                        done = True
                        break
                    assert typ != 2, "netlink error"
                    family = data[i + 16]
                    out.append((get, family, [a for a in _attrs(data[i + 20:i + ln])
                                              if a[0] not in skip]))
                    i += (ln + 3) & ~3
    finally:
        sock.close()
    return out


def _nft(ns, *args):
    return subprocess.run(["ip", "netns", "exec", ns, "nft", *args], capture_output=True,
                          text=True, check=True).stdout


def structure_plan(doc):
    """The cold-start plan of ``doc`` without the interval sets' elements (the writer leaves
    those to libnftables)."""
    plan = diff(Desired(None).load(Model.from_wire(doc)).rs, None)
    return [op for op in plan.ops if not (type(op) is AddElements and op.set.interval)]


def both_ways(bare_namespaces, ops):
    """Commit ``ops`` through the libnftnl writer in one namespace and as nft text through
    libnftables in the other; the two kernels' listings and raw objects."""
    nl = netlink.netlink_ops(ops, limit=1 << 30)
    assert nl is not None, "the plan does not encode"
    a, b = bare_namespaces
    with entered(a):
        w = _fast_c.NetlinkWriter()
    w.commit(nl)
    w.close()
    with entered(b):
        ctx = _fast_py.NftContext()
    ctx.run("".join(c + "\n" for c in render(ops)))
    ctx.close()
    return [(_nft(ns, "list", "ruleset"), _bytecode(_nft(ns, "--debug=netlink", "list", "ruleset")),
             raw_objects(ns)) for ns in (a, b)]


def _bytecode(listing):
    """nft's bytecode listing, elements sorted (a hash set's order is its own)."""
    lines = listing.splitlines()
    return ([line for line in lines if not line.startswith("\telement ")],
            sorted(line for line in lines if line.startswith("\telement ")))


def _prefixed(doc):
    """``doc`` with prefix members and address-pair prefixes (interval sets and maps)."""
    doc["sg_member_ips"]["sg-1"]["IPv4"].append("198.51.100.0/24")
    doc["sg_member_ips"]["default"]["IPv6"].append("2001:db8:77::/48")
    port = next(iter(doc["devices"].values()))
    port["allowed_address_pairs"] = [{"ip_address": "203.0.113.0/28"},
                                     {"ip_address": "2001:db8:99::/64"}]
    return doc


@pytest.mark.parametrize("prefixes", [False, True], ids=["hosts", "prefixes"])
def test_cold_start_structure_is_the_same_kernel_state_both_ways(bare_namespaces, prefixes):
    doc = scenario(40, 12, 10, 3000)
    for i, port in enumerate(doc["devices"].values()):   # conntrack zones: the zone data maps
        port["network_id"] = f"net-{i % 3}"
    if prefixes:
        doc = _prefixed(doc)
    ops = structure_plan(doc)
    (text_a, dbg_a, raw_a), (text_b, dbg_b, raw_b) = both_ways(bare_namespaces, ops)
    assert text_a == text_b
    assert dbg_a == dbg_b
    assert raw_a == raw_b
    assert "type filter hook prerouting priority raw; policy accept;" in text_a
    assert "flags interval" in text_a if prefixes else "flags interval" not in text_a
    assert "nd-neighbor-solicit" in text_a
    # the zone maps are data maps (``typeof ... : ct zone``) looked up by ``ct zone set``
    assert "typeof meta mark : ct zone" in text_a and "typeof ip6 daddr : ct zone" in text_a
    assert "ct zone set meta mark map @zone-mark" in text_a and "zone-3" not in text_a
    assert "  [ ct set zone with reg 1 ]" in dbg_a[0] and "vmap @zone" not in text_a


def test_every_rule_form_the_compiler_can_emit_encodes():
    """Group rules (addresses, ports and ranges, source and destination ports, ICMP type and
    code, protocols) and every layout rule take the netlink path."""
    doc = _prefixed(scenario(40, 12, 10, 3000))
    rs = Desired(None).load(Model.from_wire(doc)).rs
    for chain in rs.chains.values():
        assert netlink.simple_rules(chain) is not None, chain


def test_a_refused_structure_batch_leaves_the_kernel_unchanged(bare_namespaces):
    """The whole cold start with one rule the kernel refuses (a lookup in a set that does
    not exist) at its end: KernelError, and not even the tables were created."""
    from fwsg.errors import KernelError

    ns = bare_namespaces[0]
    nl = netlink.netlink_ops(structure_plan(scenario(20, 6, 5, 500)), limit=1 << 30)
    bad = ("xrule", "inet", "egress-pre", "ip saddr @nowhere accept",
           netlink.matches.encode("ip saddr @nowhere accept"), None)
    with entered(ns):
        w = _fast_c.NetlinkWriter()
    try:
        with pytest.raises(KernelError):
            w.commit(nl + [bad])
        assert _nft(ns, "list", "ruleset") == ""
        w.commit(nl)                      # the same batch without it goes in whole
        assert "chain egress-pre" in _nft(ns, "list", "ruleset")
    finally:
        w.close()


def test_a_plan_larger_than_one_netlink_page_goes_through_libnftables(bare_namespaces):
    """30,000 rules encode, but their batch would not fit the writer's page: nothing is sent
    that way and libnftables commits the same plan."""
    from fwsg.backends.nft import NftBackend
    from fwsg.ops import CreateTable, DeclareChain, FillChain
    from fwsg.plan import Plan
    from fwsg.ruleset import ChainDef

    ns = bare_namespaces[0]
    chains = [ChainDef("inet", f"g{i:05d}-e", tuple(
        f"ip saddr 192.0.2.0/24 tcp dport {p} accept" for p in range(1, 11)))
        for i in range(3000)]
    ops = [CreateTable("inet")] + [DeclareChain(c) for c in chains] + [
        FillChain(c) for c in chains]
    assert netlink.netlink_ops(ops, limit=1 << 30) is not None
    be = NftBackend(ns)
    try:
        assert be.commit(Plan(ops, {}, render)) == "libnftables"
        assert "tcp dport 10 accept" in _nft(ns, "list", "chain", "inet", "fwsg", "g02999-e")
    finally:
        be.close()
