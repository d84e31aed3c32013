"""Port removals whose deletions go through one nf_tables batch (``fwsg.backends.iptables.
nfdel``: every table of iptables-nft, ebtables' nat table beside libiptc) against a real
kernel, both variants: they leave exactly what the restore tools leave (read back with the
save tools and nft's expression listing), the removed port's traffic is no longer judged by
its rules while the others' still is, nothing of the port is left in any table, ipset or
ebtables; and a removal the kernel refuses half-way leaves every table as it was, the port
filtered as before (real packets), memory equal to the kernel."""

import pytest

from fwsg.errors import KernelError
from fwsg.firewall import Firewall
from tests.netns.fwlab import model, web_db
from tests.netns.test_iptables_backend import env, fwlab, saved, sh  # noqa: F401 (fixtures)
from tests.netns.test_iptables_libiptc import eb_saved

NET = {"network_id": "net-a"}


def steps(lab):
    """(name, model): a base, then removals (as Neutron makes them: the port and its
    membership): vm2, alone in its profile and its network's zone, its rules between the
    others' in each dispatch bucket; then the last two ports, which empties the buckets."""
    groups = web_db(v6=True)
    base = {"vm1": ["web"], "vm2": {"security_groups": ["web", "db"], **NET}, "vm3": ["db"]}
    return [("base", model(lab, groups, base)),
            ("vm2 removed", model(lab, groups, {"vm1": ["web"], "vm3": ["db"]})),
            ("all removed", model(lab, groups, {}))]


def tap_lines(lab, variant, vm):
    tap = lab.node(vm).tap
    return [line for line in saved(lab, variant) + eb_saved(lab) if tap in line]


def run_steps(lab, fw, variant, netlink):
    fw.backend.kernel.nfdel = netlink
    out = []
    for name, doc in steps(lab):
        r = fw.apply(doc)
        out.append((name, r.transport, saved(lab, variant) + eb_saved(lab)))
        if name == "vm2 removed":
            assert not tap_lines(lab, variant, "vm2")
            assert tap_lines(lab, variant, "vm1") and tap_lines(lab, variant, "vm3")
            assert lab.matrix([
                ("tcp_connect", "vm2", "vm3", {"port": 5432}),      # vm2 left web's members
                ("tcp_connect", "vm1", "vm3", {"port": 5432}),      # the others still pass
                ("tcp_connect", "vm1", "vm3", {"port": 5432, "family": 6}),
                ("tcp_connect", "out", "vm3", {"port": 5432}),      # and are still filtered
                ("tcp_connect", "vm3", "vm2", {"port": 5432}),      # vm2 is not any more
                ("tcp_connect", "vm3", "vm2", {"port": 5432, "family": 6}),
            ]) == [False, True, True, False, True, True]
    return out


def test_port_removal_through_netlink_equals_restores(env):
    lab, fw, variant = env
    netlink = run_steps(lab, fw, variant, True)
    fw.flush()
    fw = Firewall(netns=lab.host_ns, backend=f"iptables-{variant}")
    restored = run_steps(lab, fw, variant, False)
    for (name, transport, tables), (_, transport_old, tables_old) in zip(netlink, restored):
        assert tables == tables_old, name
        assert "netlink" not in transport_old.replace("ipset-netlink", ""), name
        if name != "base":
            assert ("nf_tables-netlink" if variant == "nft" else "ebtables-netlink") \
                in transport, (name, transport)
    # nothing of the ports is left: no dispatch rule, bucket, profile, zone or ARP chain
    assert not [line for line in netlink[-1][2] if "tap-" in line or "fwsg-p" in line
                or "CT --zone" in line or "fwsg-a" in line.replace("fwsg-arp", "")]
    members = sh(lab, "ipset", "list", "-o", "save")
    assert not [ip for ip in lab.node("vm2").ipv4 + lab.node("vm2").ipv6 if f" {ip}" in members]
    assert not Firewall(netns=lab.host_ns, backend=f"iptables-{variant}").plan(steps(lab)[-1][1])


def test_removal_refused_half_way_leaves_the_port_filtered(env):
    """Someone else's ebtables rule jumps to vm1's ARP chain, so the kernel refuses to
    delete it: iptables-nft's single batch is refused whole; beside libiptc, ebtables'
    deletions are committed only after every IP table's steps were made and before any
    table is committed, so none is. Every table stays as it was, vm1 stays filtered (its
    group takes no ingress), memory equals the kernel; once the foreign rule is gone the
    removal goes through."""
    lab, fw, variant = env
    groups = web_db(v6=True)
    doc = model(lab, groups, {"vm1": ["web"], "vm2": ["db"], "vm3": ["web"]})
    fw.apply(doc)
    arp = fw._desired.arp_of["port-vm1"]
    sh(lab, "ebtables-nft", "-t", "nat", "-A", "OUTPUT", "-j", arp)
    try:
        before = saved(lab, variant) + eb_saved(lab)
        with pytest.raises(KernelError, match=f"-X {arp}"):
            fw.remove_port_filter("port-vm1")
        assert saved(lab, variant) + eb_saved(lab) == before      # nothing went through
        assert lab.matrix([("tcp_connect", "vm2", "vm1", {"port": 5432}),
                           ("tcp_connect", "vm2", "vm1", {"port": 5432, "family": 6}),
                           ("tcp_connect", "vm3", "vm2", {"port": 5432})]) == [False, False, True]
        reread = Firewall(netns=lab.host_ns, backend=f"iptables-{variant}")
        assert str(fw.plan(doc)) == str(reread.plan(doc)) == ""   # memory == kernel
    finally:
        sh(lab, "ebtables-nft", "-t", "nat", "-D", "OUTPUT", "-j", arp)
    r = fw.remove_port_filter("port-vm1")
    assert "netlink" in r.transport.replace("ipset-netlink", "")
    assert not tap_lines(lab, variant, "vm1")
    assert lab.tcp_connect("vm2", "vm1", port=5432)                # unfiltered now
    assert not lab.tcp_connect("out", "vm2", port=5432)             # the others still are
