"""Conntrack zones per network, with real packets: two networks on one hypervisor (two bridges
in the host namespace) using the SAME addresses and the same 5-tuples.

- each network's flows are stateful on their own: VM -> VM replies, VM -> outside with the
  reply arriving from the uplink, outside -> VM with the VM's reply, hypervisor <-> VM and
  traffic routed by the hypervisor (to an address only one network uses); what no rule allows
  is dropped; a frame on one network's uplink cannot borrow the other network's flow;
- a cleanup in one network (a member removed, a rule removed, a port removed) cuts that
  network's flow and leaves the other network's identical flow alive;
- the kernel holds one conntrack entry per network for the identical 5-tuple, each in its
  network's zone, and a second process keeps the zone numbers.
"""

import copy
import subprocess

import pytest

from fwsg import fast
from fwsg.firewall import Firewall
from fwsg.lab import traffic
from fwsg.netns import entered

SPORT = 40123   # the client port of both networks' identical flows

NETS = {"a": ("br0", "fa:16:3e:0a:00:"), "b": ("br1", "fa:16:3e:0b:00:")}


def _rules(net):
    return [
        # from VMs of this network's client group, and from the outside peer
        {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
         "port_range_min": 80, "port_range_max": 80, "remote_group_id": f"cl-{net}"},
        {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
         "port_range_min": 8080, "port_range_max": 8080, "remote_ip_prefix": "192.0.2.100/32"},
        {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
         "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "192.0.2.1/32"},
        {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",   # routed peer
         "port_range_min": 2222, "port_range_max": 2222, "remote_ip_prefix": "198.51.100.0/24"},
        # out: only to port 80 (replies to 8080 pass by state alone), and UDP to 9000
        {"direction": "egress", "ethertype": "IPv4", "protocol": "tcp",
         "port_range_min": 80, "port_range_max": 80},
        {"direction": "egress", "ethertype": "IPv4", "protocol": "udp",
         "port_range_min": 9000, "port_range_max": 9000},
        # IPv6: the same addresses in both networks too
        {"direction": "ingress", "ethertype": "IPv6", "protocol": "tcp",
         "port_range_min": 80, "port_range_max": 80, "remote_group_id": f"cl-{net}"},
        {"direction": "egress", "ethertype": "IPv6", "protocol": "tcp",
         "port_range_min": 80, "port_range_max": 80},
    ]


def model():
    groups, members, devices = {}, {}, {}
    for net, (_br, mac) in NETS.items():
        groups[f"sg-{net}"] = _rules(net)
        groups[f"cl-{net}"] = []
        members[f"cl-{net}"] = {"IPv4": ["192.0.2.11"], "IPv6": ["2001:db8::11"]}
        members[f"sg-{net}"] = {"IPv4": ["192.0.2.11", "192.0.2.12"], "IPv6": []}
        for i in (1, 2):
            devices[f"port-{net}{i}"] = {
                "device": f"tap-{net}{i}", "mac_address": f"{mac}{i:02x}",
                "fixed_ips": [f"192.0.2.1{i}", f"2001:db8::1{i}"], "security_groups": [f"sg-{net}"],
                "network_id": f"net-{net}"}
    # a VM whose address only network a uses: the hypervisor (br0's address) talks to it
    devices["port-a3"] = {"device": "tap-a3", "mac_address": "fa:16:3e:0a:00:03",
                          "fixed_ips": ["192.0.2.13"], "security_groups": ["sg-a"],
                          "network_id": "net-a"}
    return {"security_groups": groups, "sg_member_ips": members, "devices": devices}


@pytest.fixture
def twolab(lab_factory):
    lab = lab_factory(host_ipv4="192.0.2.1/24", host_ipv6=None)   # on br0 (network a)
    lab.add_vm("a3", mac="fa:16:3e:0a:00:03", ipv4=["192.0.2.13/24"], bridge="br0")
    for net, (br, mac) in NETS.items():
        for i in (1, 2):
            lab.add_vm(f"{net}{i}", mac=f"{mac}{i:02x}", ipv4=[f"192.0.2.1{i}/24"],
                       ipv6=[f"2001:db8::1{i}/64"], bridge=br)
        lab.add_outside(f"o{net}", mac=f"{mac}64", ipv4=["192.0.2.100/24"],
                        ipv6=["2001:db8::100/64"], bridge=br)
    lab.up()
    fw = Firewall(netns=lab.host_ns)
    fw.apply(model())
    # a TCP segment without its conntrack entry is invalid (not picked up again as new): a
    # deleted flow is cut for good, so "alive" below means "its entry was kept"
    traffic.sysctl_write(lab.host_ns, {"net.netfilter.nf_conntrack_tcp_loose": 0})
    yield lab, fw


def zones_of(lab, dport):
    """{zone} of the conntrack entries 192.0.2.11:SPORT -> 192.0.2.12:dport in the host."""
    with entered(lab.host_ns):
        table = fast.ConntrackTable()
        try:
            flows = table.dump()
        finally:
            table.close()
    return sorted(f[9] for f in flows if f[1] == 6 and f[2] == "192.0.2.11"
                  and f[3] == "192.0.2.12" and f[4] == SPORT and f[5] == dport)


def test_each_network_is_stateful_on_its_own(twolab):
    lab, fw = twolab
    zone = {n: fw._desired.port_zone[f"port-{n}1"] for n in NETS}
    assert zone["a"] != zone["b"] and 0 not in zone.values()
    for net in NETS:
        vm1, vm2, out = f"{net}1", f"{net}2", f"o{net}"
        # VM -> VM: the reply passes only by state (vm2's egress allows only port 80)
        assert lab.tcp_connect(vm1, vm2, port=80, sport=SPORT)
        # VM -> outside: the reply arrives from the uplink (vm1's ingress has no rule for it)
        assert lab.tcp_connect(vm1, out, port=80)
        # outside -> VM, the VM's reply passes by state only
        assert lab.tcp_connect(out, vm2, port=8080)
        # and what no rule allows is dropped
        assert not lab.tcp_connect(vm2, vm1, port=80, timeout=0.5)   # not in cl-<net>
        assert not lab.tcp_connect(out, vm1, port=80, timeout=0.5)
        assert not lab.tcp_connect(vm1, out, port=8080, timeout=0.5)  # egress: 80 only
        # IPv6 alike: VM -> VM, VM -> outside (the reply from the uplink), and a drop
        assert lab.tcp_connect(vm1, vm2, port=80, family=6)
        assert lab.tcp_connect(vm1, out, port=80, family=6)
        assert not lab.tcp_connect(vm2, vm1, port=80, family=6, timeout=0.5)
    # the hypervisor and a VM of network a (an address no other network uses): its output
    # is zoned by destination address, the VM's replies by their port
    assert lab.tcp_connect("host", "a3", port=22)       # the reply passes by state only
    assert lab.tcp_connect("a3", "host", port=80)       # the host's reply by state only
    assert not lab.tcp_connect("host", "a3", port=23, timeout=0.5)


def test_identical_flows_live_in_their_networks_zones(twolab):
    lab, fw = twolab
    ca = lab.open_tcp("a1", "a2", port=80, sport=SPORT)
    cb = lab.open_tcp("b1", "b2", port=80, sport=SPORT)
    assert ca.alive() and cb.alive()
    zone = {n: fw._desired.port_zone[f"port-{n}1"] for n in NETS}
    assert zones_of(lab, 80) == sorted(zone.values())   # one entry per network, same 5-tuple
    # a second process keeps every network's zone (read back from the kernel)
    fw2 = Firewall(netns=lab.host_ns)
    fw2.apply(model())
    assert {n: fw2._desired.port_zone[f"port-{n}1"] for n in NETS} == zone
    assert ca.alive() and cb.alive()


@pytest.mark.parametrize("cleanup", ["member", "rule", "port"])
def test_a_cleanup_in_one_network_keeps_the_others_identical_flow(twolab, cleanup):
    lab, fw = twolab
    ca = lab.open_tcp("a1", "a2", port=80, sport=SPORT)
    cb = lab.open_tcp("b1", "b2", port=80, sport=SPORT)
    assert ca.alive() and cb.alive()
    if cleanup == "member":
        fw.remove_security_group_members("cl-a", ["192.0.2.11"])
    elif cleanup == "rule":
        fw.update_security_group_rules("sg-a", [r for r in _rules("a")
                                                if r.get("port_range_min") != 80])
    else:  # the client's port goes (its address is gone from network a only)
        m = copy.deepcopy(model())
        del m["devices"]["port-a1"]
        fw.apply(m)
    # read back before any packet: network a's entry is gone, b's identical one is not
    assert zones_of(lab, 80) == [fw._desired.port_zone["port-b1"]]
    assert not ca.alive(), f"network a's flow survived the {cleanup} removal"
    assert cb.alive(), f"network b's identical flow was cut by network a's {cleanup} removal"
    if cleanup == "port":
        return  # a1 is unfiltered now
    # network b still works, network a refuses what it no longer allows
    assert lab.tcp_connect("b1", "b2", port=80)
    assert not lab.tcp_connect("a1", "a2", port=80, timeout=0.5)


def test_a_frame_from_outside_cannot_borrow_another_networks_flow(twolab):
    """Network a has a UDP flow a2:7000 -> outside:9000. The "reply" sent on network b's
    uplink to a2's MAC (unknown on b's bridge: flooded to b's ports) would be tagged with a2's
    zone and pass b2's ingress as established; it must not reach b2. The same frame on
    network a's uplink is a2's reply and passes (by state only: no ingress rule allows it)."""
    lab, _fw = twolab
    a2, b2 = lab.node("a2"), lab.node("b2")
    assert lab.udp_reaches("a2", "oa", 9000, sport=7000)

    def reply(src, tag):
        return traffic.udp4_frame(lab.node(src).mac, a2.mac, "192.0.2.100", "192.0.2.12",
                                  9000, 7000, tag)

    with lab.sniff("b2") as sb:
        lab.send_frame("ob", reply("ob", b"zone-leak"))
        assert not sb.seen(lambda f: f.payload == b"zone-leak", timeout=1.0)
    with lab.sniff("a2") as sa:
        lab.send_frame("oa", reply("oa", b"zone-reply"))
        assert sa.seen(lambda f: f.payload == b"zone-reply", timeout=1.0)


def test_traffic_routed_into_a_network_is_zoned_by_address(twolab):
    """A peer routed by the hypervisor (not on a bridge) reaches a3 (an address only network
    a uses): the packet carries no port tag, its zone comes from the destination address, and
    a3's reply (zoned by its port) matches it: it passes by state only."""
    lab, _fw = twolab
    ns = f"{lab.host_ns[:-5]}-rt"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for argv in (
                ["ip", "-n", lab.host_ns, "link", "add", "rt-host", "type", "veth", "peer",
                 "name", "eth0", "netns", ns],
                ["ip", "-n", lab.host_ns, "addr", "add", "198.51.100.1/24", "dev", "rt-host"],
                ["ip", "-n", lab.host_ns, "link", "set", "rt-host", "up"],
                ["ip", "-n", ns, "addr", "add", "198.51.100.2/24", "dev", "eth0"],
                ["ip", "-n", ns, "link", "set", "eth0", "up"],
                ["ip", "-n", ns, "route", "add", "default", "via", "198.51.100.1"],
                ["ip", "netns", "exec", lab.host_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"]):
            subprocess.run(argv, check=True, capture_output=True)
        a3 = lab.ns("a3")
        assert traffic.tcp_connect(ns, a3, "192.0.2.13", 2222, timeout=1.0)
        assert not traffic.tcp_connect(ns, a3, "192.0.2.13", 2223, timeout=0.5)
    finally:
        subprocess.run(["ip", "-n", lab.host_ns, "link", "del", "rt-host"], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _previous_layout(rs):
    """Compiled Ruleset ``rs`` as the layout before the zone data maps held it: verdict maps
    jumping to a ``zone-<n>`` chain per zone (``ct zone set n``), looked up by ``vmap``."""
    from fwsg.backends.nft.layout import INET_OUT_ZONE, INET_PRE_ZONE, ZONE4, ZONE6, ZONE_MARK
    from fwsg.ruleset import ChainDef, SetDef

    old = copy.deepcopy(rs)
    zones = set()
    for key in (ZONE_MARK, ZONE4, ZONE6):
        sd = old.sets[key]
        old.sets[key] = SetDef(sd.family, sd.name, sd.key_type, "verdict")
        old.elements[key] = {k: f"jump zone-{z}" for k, z in rs.elements[key].items()}
        zones.update(rs.elements[key].values())
    for z in zones:
        old.chains[("inet", f"zone-{z}")] = ChainDef("inet", f"zone-{z}", (f"ct zone set {z}",))
    old.chains[("inet", "zone-pre")] = ChainDef("inet", "zone-pre", (
        "meta mark vmap @zone-mark", "meta mark 0x0 ip daddr vmap @zone4",
        "meta mark 0x0 ip6 daddr vmap @zone6"), INET_PRE_ZONE)
    old.chains[("inet", "zone-out")] = ChainDef("inet", "zone-out", (
        "ip daddr vmap @zone4", "ip6 daddr vmap @zone6"), INET_OUT_ZONE)
    return old


def test_a_host_of_the_previous_zone_layout_is_upgraded_in_one_transaction(twolab):
    """A kernel holding the zone verdict maps and ``zone-<n>`` chains (the layout before the
    data maps) ends with the data maps after one apply of a new process: one transaction
    (never a moment without zones) that re-declares the three maps and rewrites the chains
    using them (their rules flushed before the maps are dropped), the same zone numbers, the
    flows of both networks kept."""
    from fwsg.backends.nft.render import render
    from fwsg.plan import diff

    lab, fw = twolab
    zone = {n: fw._desired.port_zone[f"port-{n}1"] for n in NETS}
    ca = lab.open_tcp("a1", "a2", port=80, sport=SPORT)
    cb = lab.open_tcp("b1", "b2", port=80, sport=SPORT)
    compiled = fw._desired.rs
    old = _previous_layout(compiled)
    with entered(lab.host_ns):
        ctx = fast.NftContext()
        try:
            ctx.run("".join(c + "\n" for c in render(diff(old, fw.backend.read()).ops)))
        finally:
            ctx.close()
    listing = subprocess.run(["ip", "netns", "exec", lab.host_ns, "nft", "list", "table", "inet",
                              "fwsg"], capture_output=True, text=True, check=True).stdout
    assert f"chain zone-{zone['a']} " in listing and "meta mark vmap @zone-mark" in listing
    assert ca.alive() and cb.alive()   # the previous layout keeps the flows in their zones

    fw2 = Firewall(netns=lab.host_ns)
    before = fw2.backend.generation()
    r = fw2.apply(model())
    assert fw2.backend.generation()[1] == before[1] + 1     # one transaction
    # only the zone objects change: the three maps re-declared, the two base chains
    # rewritten, the zone-<n> chains dropped (no table re-created, no member re-added)
    assert r.summary["tables_added"] == [] and r.summary["sets_added"] == 3
    assert r.summary["chains_changed"] == 2 and r.summary["chains_removed"] == 2
    assert {n: fw2._desired.port_zone[f"port-{n}1"] for n in NETS} == zone
    back = fw2.backend.read()
    assert back.sets == compiled.sets and back.elements == compiled.elements
    assert {k: c.digest for k, c in back.chains.items()} == \
        {k: c.digest for k, c in compiled.chains.items()}
    listing = subprocess.run(["ip", "netns", "exec", lab.host_ns, "nft", "list", "table", "inet",
                              "fwsg"], capture_output=True, text=True, check=True).stdout
    assert "chain zone-" + str(zone["a"]) not in listing and "vmap @zone" not in listing
    assert "ct zone set meta mark map @zone-mark" in listing
    # the flows live on in their zones, new ones get them too, and nothing else changes
    assert ca.alive() and cb.alive()
    assert zones_of(lab, 80) == sorted(zone.values())
    assert not Firewall(netns=lab.host_ns).apply(model()).changed   # nothing left to upgrade
    for net in NETS:
        assert lab.tcp_connect(f"{net}1", f"{net}2", port=80)
        assert not lab.tcp_connect(f"{net}2", f"{net}1", port=80, timeout=0.5)
