"""Every behaviour of the README's semantics list, shown with real packets in namespaces:
a flow that must pass and one that must not, for each."""

import subprocess

import pytest

from fwsg.firewall import Firewall
from fwsg.lab import ra_body
from tests.netns.fwlab import (ALL_EGRESS, build_lab, flush_conntrack, model, nft_handles, rule,
                               running_lab, web_db)


@pytest.fixture(scope="module")
def fwlab():
    with running_lab("sem") as lab_fw:
        yield lab_fw


@pytest.fixture
def env(fwlab):
    lab, fw = fwlab
    flush_conntrack(lab)
    return lab, fw


def apply(lab, fw, groups, ports, **kw):
    doc = model(lab, groups, ports, **kw)
    fw.apply(doc)
    return doc


WEB = {"web": [rule("ingress", protocol="tcp", ports=80),
               rule("ingress", "IPv6", protocol="tcp", ports=80)] + ALL_EGRESS,
       "open": ALL_EGRESS}


def test_tcp_port_single_and_v6(env):
    lab, fw = env
    apply(lab, fw, WEB, {"vm1": ["open"], "vm2": ["web"]})
    r = lab.matrix([
        ("tcp_connect", "vm1", "vm2", {"port": 80}),
        ("tcp_connect", "vm1", "vm2", {"port": 81}),
        ("tcp_connect", "vm1", "vm2", {"port": 80, "family": 6}),
        ("tcp_connect", "out", "vm2", {"port": 80}),
        ("tcp_connect", "out", "vm2", {"port": 22}),
        ("udp_exchange", "vm1", "vm2", {"port": 80}),
    ])
    assert r == [True, False, True, True, False, False]


def test_port_ranges_udp_and_any_protocol(env):
    lab, fw = env
    groups = {"g": [rule("ingress", protocol="tcp", ports=(1000, 1010)),
                    rule("ingress", protocol="udp", ports=53),
                    rule("ingress", "IPv6")] + ALL_EGRESS, "open": ALL_EGRESS}
    apply(lab, fw, groups, {"vm1": ["open"], "vm2": ["g"]})
    r = lab.matrix([
        ("tcp_connect", "vm1", "vm2", {"port": 1000}),
        ("tcp_connect", "vm1", "vm2", {"port": 1010}),
        ("tcp_connect", "vm1", "vm2", {"port": 1011}),
        ("udp_exchange", "vm1", "vm2", {"port": 53}),
        ("udp_exchange", "vm1", "vm2", {"port": 54}),
        ("udp_exchange", "vm1", "vm2", {"port": 54, "family": 6}),   # any protocol over IPv6
        ("tcp_connect", "vm1", "vm2", {"port": 4444, "family": 6}),
        ("ping", "vm1", "vm2", {"family": 4}),
    ])
    assert r == [True, True, False, True, False, True, True, False]


def test_icmp_type_and_code(env):
    lab, fw = env
    groups = {"ping": [rule("ingress", protocol="icmp", port_range_min=8, port_range_max=0),
                       rule("ingress", "IPv6", protocol="ipv6-icmp", port_range_min=128)]
              + ALL_EGRESS,
              "ts": [rule("ingress", protocol="icmp", port_range_min=13)] + ALL_EGRESS,
              "open": ALL_EGRESS}
    apply(lab, fw, groups, {"vm1": ["open"], "vm2": ["ping"], "vm3": ["ts"]})
    r = lab.matrix([("ping", "vm1", "vm2", {"family": 4}), ("ping", "vm1", "vm2", {"family": 6}),
                    ("ping", "vm1", "vm3", {"family": 4}), ("ping", "vm1", "vm3", {"family": 6})])
    assert r == [True, True, False, False]


@pytest.mark.kernel_feature("sctp")
def test_sctp(env):
    lab, fw = env
    ok, why = lab.sctp_supported()
    if not ok:
        pytest.skip(f"no SCTP here: {why}")
    groups = {"s": [rule("ingress", protocol="sctp", ports=5000)] + ALL_EGRESS, "open": ALL_EGRESS}
    apply(lab, fw, groups, {"vm1": ["open"], "vm2": ["s"]})
    assert lab.sctp_connect("vm1", "vm2", port=5000)
    assert not lab.sctp_connect("vm1", "vm2", port=5001)


def test_remote_prefix(env):
    lab, fw = env
    groups = {"ssh": [rule("ingress", protocol="tcp", ports=22, remote_ip_prefix="192.0.2.96/27"),
                      rule("ingress", "IPv6", protocol="tcp", ports=22,
                           remote_ip_prefix="2001:db8::99/128")] + ALL_EGRESS,
              "open": ALL_EGRESS}
    apply(lab, fw, groups, {"vm1": ["open"], "vm2": ["ssh"]})
    r = lab.matrix([("tcp_connect", "out", "vm2", {"port": 22}),
                    ("tcp_connect", "vm1", "vm2", {"port": 22}),
                    ("tcp_connect", "out", "vm2", {"port": 22, "family": 6}),
                    ("tcp_connect", "vm1", "vm2", {"port": 22, "family": 6})])
    assert r == [True, False, True, False]


def test_remote_group_and_membership_changes_only_elements(env):
    lab, fw = env
    groups = {"web": ALL_EGRESS,
              "db": [rule("ingress", protocol="tcp", ports=5432, remote_group_id="web"),
                     rule("ingress", "IPv6", protocol="tcp", ports=5432, remote_group_id="web")]
              + ALL_EGRESS,
              "empty": ALL_EGRESS}
    apply(lab, fw, groups, {"vm1": ["web"], "vm2": ["db"], "vm3": ["empty"]})
    assert lab.tcp_connect("vm1", "vm2", port=5432)
    assert lab.tcp_connect("vm1", "vm2", port=5432, family=6)
    assert not lab.tcp_connect("vm3", "vm2", port=5432)
    assert not lab.tcp_connect("out", "vm2", port=5432)
    handles = nft_handles(lab)
    # out (not a port here) joins group web: only set elements change
    doc = model(lab, groups, {"vm1": ["web"], "vm2": ["db"], "vm3": ["empty"]},
                members={"web": ["192.0.2.99"]})
    plan = fw.plan(doc)
    assert plan.lines() and all(c.startswith("add element inet fwsg g") for c in plan.lines())
    fw.apply(doc)
    assert lab.tcp_connect("out", "vm2", port=5432)
    assert _rule_handles(nft_handles(lab)) == _rule_handles(handles)


def _rule_handles(text):
    return [line.strip() for line in text.splitlines() if "# handle" in line and (
        "accept" in line or "drop" in line or "jump" in line or "vmap" in line or "mark" in line)]


def test_remote_group_without_members_matches_nothing(env):
    lab, fw = env
    groups = {"nobody": [], "db": [rule("ingress", protocol="tcp", ports=5432,
                                        remote_group_id="nobody")] + ALL_EGRESS,
              "open": ALL_EGRESS}
    apply(lab, fw, groups, {"vm1": ["open"], "vm2": ["db"]})
    assert not lab.tcp_connect("vm1", "vm2", port=5432)
    assert not lab.tcp_connect("out", "vm2", port=5432)


def test_stateful_replies_pass_new_reverse_does_not(env):
    lab, fw = env
    groups = {"in80": [rule("ingress", protocol="tcp", ports=80)],  # no egress rule at all
              "open": ALL_EGRESS + [rule("ingress", protocol="tcp", ports=81)]}
    apply(lab, fw, groups, {"vm1": ["open"], "vm2": ["in80"]})
    assert lab.tcp_connect("vm1", "vm2", port=80)        # replies from vm2 pass (established)
    assert not lab.tcp_connect("vm2", "vm1", port=81)    # vm2 may not open connections
    assert lab.udp_exchange("out", "vm2", port=80) is False


def test_stateless_group(env):
    lab, fw = env
    sl = [rule("ingress", protocol="tcp", ports=80, stateful=False)]
    groups = {"sl": sl, "open": ALL_EGRESS}
    apply(lab, fw, groups, {"vm1": ["open"], "vm2": ["sl"]})
    assert not lab.tcp_connect("vm1", "vm2", port=80)   # replies are not allowed by themselves
    groups["sl"] = sl + [rule("egress", protocol="tcp", source_port_range_min=80,
                              source_port_range_max=80, stateful=False)]
    apply(lab, fw, groups, {"vm1": ["open"], "vm2": ["sl"]})
    assert lab.tcp_connect("vm1", "vm2", port=80)
    assert not lab.tcp_connect("vm1", "vm2", port=81)


def test_related_icmp_errors_pass(env):
    lab, fw = env
    groups = {"udp": [rule("ingress", protocol="udp", ports=(9, 10))] + ALL_EGRESS,
              "client": ALL_EGRESS}  # no ingress rule: only related/established can come in
    apply(lab, fw, groups, {"vm1": ["client"], "vm2": ["udp"]})
    assert lab.udp_unreachable("vm1", "vm2", port=9)            # port unreachable comes back
    assert not lab.udp_unreachable("vm2", "vm1", port=9)        # vm1 takes no new udp


def test_anti_spoofing_ip_mac_arp_and_address_pairs(env):
    lab, fw = env
    groups = {"open": ALL_EGRESS + [rule("ingress", protocol="tcp", ports=80)]}
    apply(lab, fw, groups, {"vm1": ["open"], "vm2": ["open"]})
    lab.add_address("vm1", "192.0.2.50/24")
    try:
        assert lab.tcp_connect("vm1", "vm2", port=80)
        assert not lab.tcp_connect("vm1", "vm2", port=80, src_ip="192.0.2.50")
        assert lab.arp_probe("vm1", "192.0.2.12")
        assert not lab.arp_probe("vm1", "192.0.2.12", sender_ip="192.0.2.50")
        assert not lab.arp_probe("vm1", "192.0.2.12", eth_src="fa:16:3e:00:00:77")
        # the address pair makes 192.0.2.50 (with the port's MAC) legitimate
        apply(lab, fw, groups, {"vm1": ["open"], "vm2": ["open"]},
              vm1={"allowed_address_pairs": [{"ip_address": "192.0.2.48/29"}]})
        assert lab.tcp_connect("vm1", "vm2", port=80, src_ip="192.0.2.50")
        assert lab.arp_probe("vm1", "192.0.2.12", sender_ip="192.0.2.50")
    finally:
        lab.del_address("vm1", "192.0.2.50/24")
    # a changed MAC is dropped whatever the IP
    lab.set_mac("vm1", "fa:16:3e:00:00:77")
    try:
        lab.flush_neigh()
        assert not lab.tcp_connect("vm1", "vm2", port=80)
    finally:
        lab.set_mac("vm1", "fa:16:3e:00:00:11")
        lab.flush_neigh()
    assert lab.tcp_connect("vm1", "vm2", port=80)


def test_dhcp_client_allowed_server_dropped(env):
    lab, fw = env
    apply(lab, fw, {"none": []}, {"vm1": ["none"]})
    # a DHCP discover from 0.0.0.0 leaves the VM; a DHCP server reply from the VM does not
    assert lab.udp_reaches("vm1", "out", port=67, sport=68, dst_ip="255.255.255.255",
                           broadcast=True, src_ip="0.0.0.0")
    assert lab.udp_reaches("vm1", "out", port=67, sport=68, dst_ip="255.255.255.255",
                           broadcast=True)
    assert not lab.udp_reaches("vm1", "out", port=68, sport=67, dst_ip="255.255.255.255",
                               broadcast=True)
    assert lab.udp_reaches("vm1", "out", port=547, sport=546, dst_ip="ff02::1:2", family=6)
    assert not lab.udp_reaches("vm1", "out", port=546, sport=547, dst_ip="ff02::1:2", family=6)


def test_router_advertisement_from_vm_dropped_nd_works(env):
    lab, fw = env
    groups = {"v6": [rule("ingress", "IPv6", protocol="ipv6-icmp", port_range_min=128)]
              + ALL_EGRESS}
    apply(lab, fw, groups, {"vm1": ["v6"], "vm2": ["v6"]})
    lab.flush_neigh()
    assert lab.ping("vm1", "2001:db8::12")                  # needs neighbour discovery
    assert lab.ping("vm1", lab.node("vm2").link_local + "%eth0")
    with lab.sniff("out") as s:
        lab.send_icmpv6("vm1", "ff02::1", icmp_type=134, payload=ra_body())
        lab.send_icmpv6("vm1", "ff02::1", icmp_type=128, payload=b"\x00\x01\x00\x01probe")
        assert s.seen(lambda f: _icmp6(f, 128), timeout=1.0)
        assert not s.seen(lambda f: _icmp6(f, 134), timeout=0.3)


def _icmp6(frame, icmp_type):
    return frame.proto == 58 and frame.icmp_type == icmp_type and frame.src_mac == "fa:16:3e:00:00:11"


def test_port_security_disabled_is_unfiltered(env):
    lab, fw = env
    groups = {"none": []}
    apply(lab, fw, groups, {"vm1": ["none"], "vm3": {"security_groups": [],
                                                     "port_security_enabled": False}})
    assert lab.tcp_connect("out", "vm3", port=4321)
    assert lab.tcp_connect("vm3", "out", port=4321)
    assert not lab.tcp_connect("out", "vm1", port=4321)
    lab.add_address("vm3", "192.0.2.66/24")  # no anti-spoofing on an unfiltered port
    try:
        assert lab.tcp_connect("vm3", "out", port=4321, src_ip="192.0.2.66")
    finally:
        lab.del_address("vm3", "192.0.2.66/24")


def test_same_host_checked_on_both_sides(env):
    lab, fw = env
    groups = {"eg80": [rule("egress", protocol="tcp", ports=80)],
              "in8081": [rule("ingress", protocol="tcp", ports=(80, 81))] + ALL_EGRESS,
              "in80": [rule("ingress", protocol="tcp", ports=80)] + ALL_EGRESS,
              "open": ALL_EGRESS}
    apply(lab, fw, groups, {"vm1": ["eg80"], "vm2": ["in8081"], "vm3": ["open"]})
    r = lab.matrix([("tcp_connect", "vm1", "vm2", {"port": 80}),
                    ("tcp_connect", "vm1", "vm2", {"port": 81}),   # vm1's egress refuses
                    ("tcp_connect", "vm3", "vm2", {"port": 81})])
    assert r == [True, False, True]
    apply(lab, fw, groups, {"vm1": ["open"], "vm2": ["in80"], "vm3": ["open"]})
    r = lab.matrix([("tcp_connect", "vm1", "vm2", {"port": 80}),
                    ("tcp_connect", "vm1", "vm2", {"port": 81})])   # vm2's ingress refuses
    assert r == [True, False]


def test_vm_to_hypervisor_takes_egress_rules(env):
    lab, fw = env
    groups = {"eg80": [rule("egress", protocol="tcp", ports=80)]}
    apply(lab, fw, groups, {"vm1": ["eg80"]})
    assert lab.tcp_connect("vm1", "host", port=80)
    assert not lab.tcp_connect("vm1", "host", port=22)
    lab.add_address("vm1", "192.0.2.51/24")
    try:
        assert not lab.tcp_connect("vm1", "host", port=80, src_ip="192.0.2.51")
    finally:
        lab.del_address("vm1", "192.0.2.51/24")


def test_hypervisor_to_vm_takes_ingress_rules(env):
    lab, fw = env
    groups = {"in80": [rule("ingress", protocol="tcp", ports=80)] + ALL_EGRESS}
    apply(lab, fw, groups, {"vm1": ["in80"]})
    assert lab.tcp_connect("host", "vm1", port=80)
    assert not lab.tcp_connect("host", "vm1", port=22)


@pytest.mark.parametrize("how", ["rule removed", "rule removed (incremental)",
                                 "group removed from the port"])
def test_losing_its_rule_cuts_an_established_connection(env, how):
    lab, fw = env
    groups = {"ssh": [rule("ingress", protocol="tcp", ports=2222)] + ALL_EGRESS,
              "other": [rule("ingress", protocol="tcp", ports=2223)] + ALL_EGRESS,
              "open": ALL_EGRESS}
    apply(lab, fw, groups, {"vm1": ["open"], "vm2": ["ssh", "other"]})
    conn = lab.open_tcp("vm1", "vm2", port=2222)
    keep = lab.open_tcp("vm1", "vm2", port=2223)
    try:
        assert conn.alive() and keep.alive()
        if how == "rule removed":
            groups["ssh"] = ALL_EGRESS
            result = fw.apply(model(lab, groups, {"vm1": ["open"], "vm2": ["ssh", "other"]}))
        elif how == "rule removed (incremental)":
            result = fw.update_security_group_rules("ssh", ALL_EGRESS)
        else:
            node = lab.node("vm2")
            result = fw.update_port_filter({"id": "port-vm2", "device": node.tap,
                                            "mac_address": node.mac,
                                            "fixed_ips": node.ipv4 + node.ipv6,
                                            "security_groups": ["other"]})
        assert result.conntrack_killed >= 1
        assert not conn.alive()
        assert keep.alive()          # a flow that still has its rule survives
    finally:
        conn.close()
        keep.close()


def test_adding_a_rule_keeps_connections_without_a_conntrack_walk(env, monkeypatch):
    """Rules only allow: a rule added cuts no flow, so fwsg does not walk the conntrack table
    for it (a walk costs ~16 ms with 1,000 flows tracked); a rule changed does walk it."""
    import fwsg.conntrack

    lab, fw = env
    groups = {"ssh": [rule("ingress", protocol="tcp", ports=2222)] + ALL_EGRESS,
              "open": ALL_EGRESS}
    apply(lab, fw, groups, {"vm1": ["open"], "vm2": ["ssh"]})
    walks = []
    real = fwsg.conntrack.sweep
    monkeypatch.setattr(fwsg.conntrack, "sweep", lambda *a: walks.append(a) or real(*a))
    conn = lab.open_tcp("vm1", "vm2", port=2222)
    try:
        wider = groups["ssh"] + [rule("ingress", protocol="tcp", ports=2224)]
        fw.update_security_group_rules("ssh", wider)
        assert walks == [] and conn.alive()
        assert lab.tcp_connect("vm1", "vm2", port=2224)          # the new rule is in force
        # the same rules with the first one's port changed: a rule gone, flows judged
        changed = [rule("ingress", protocol="tcp", ports=2225)] + wider[1:]
        r = fw.update_security_group_rules("ssh", changed)
        assert len(walks) == 1 and r.conntrack_killed >= 1 and not conn.alive()
    finally:
        conn.close()


def test_removing_a_member_or_port_cuts_its_connections(env):
    lab, fw = env
    groups = web_db()
    ports = {"vm1": ["web"], "vm2": ["db"]}
    apply(lab, fw, groups, ports, members={"web": ["192.0.2.99"]})
    from_out = lab.open_tcp("out", "vm2", port=5432)
    from_vm1 = lab.open_tcp("vm1", "vm2", port=5432)
    try:
        assert from_out.alive() and from_vm1.alive()
        apply(lab, fw, groups, ports)               # 192.0.2.99 leaves group web
        assert not from_out.alive()
        assert from_vm1.alive()
        apply(lab, fw, groups, {"vm2": ["db"]})     # vm1's port goes away
        assert not from_vm1.alive()
    finally:
        from_out.close()
        from_vm1.close()


def test_second_apply_changes_nothing_in_kernel(env):
    lab, fw = env
    doc = apply(lab, fw, WEB, {"vm1": ["open"], "vm2": ["web"]})
    before = nft_handles(lab)
    assert not fw.apply(doc).changed
    fresh = Firewall(netns=lab.host_ns)           # cold: reads the kernel back
    assert not fresh.plan(doc)
    assert not fresh.apply(doc).changed
    assert nft_handles(lab) == before


def test_direct_netlink_elements_match_libnftables(env):
    """A port whose chains already exist (same groups as another) is added with elements only,
    through the direct netlink path: packets, anti-spoofing and a cold read-back all agree."""
    lab, fw = env
    groups = {"web": [rule("ingress", protocol="tcp", ports=80),
                      rule("ingress", "IPv6", protocol="tcp", ports=80)] + ALL_EGRESS,
              "open": ALL_EGRESS}
    doc = apply(lab, fw, groups, {"vm1": ["open"], "vm2": ["web"]})
    vm3 = lab.node("vm3")
    r = fw.prepare_port_filter({"id": "port-vm3", "device": vm3.tap, "mac_address": vm3.mac,
                                "fixed_ips": vm3.ipv4 + vm3.ipv6, "security_groups": ["web"]})
    assert r.transport == "netlink"
    assert r.summary["chains_added"] == 0
    assert lab.matrix([("tcp_connect", "vm1", "vm3", {"port": 80}),
                       ("tcp_connect", "vm1", "vm3", {"port": 80, "family": 6}),
                       ("tcp_connect", "vm1", "vm3", {"port": 81}),
                       ("tcp_connect", "host", "vm3", {"port": 81})]) == [True, True, False, False]
    lab.add_address("vm3", "192.0.2.53/24")
    try:
        assert not lab.tcp_connect("vm3", "vm1", port=80, src_ip="192.0.2.53")
        assert lab.tcp_connect("vm3", "out", port=80)
    finally:
        lab.del_address("vm3", "192.0.2.53/24")
    doc["devices"]["port-vm3"] = {"device": vm3.tap, "mac_address": vm3.mac,
                                  "fixed_ips": vm3.ipv4 + vm3.ipv6, "security_groups": ["web"]}
    for fam in ("IPv4", "IPv6"):
        doc["sg_member_ips"]["web"][fam] += getattr(vm3, "ipv4" if fam == "IPv4" else "ipv6")
    assert not Firewall(netns=lab.host_ns).plan(doc)      # the kernel holds the same elements
    r = fw.remove_port_filter("port-vm3")
    assert r.transport == "netlink"
    assert not lab.tcp_connect("vm3", "vm1", port=80)     # vm1 takes no new tcp from it
    assert lab.tcp_connect("out", "vm3", port=81)         # vm3 itself is unfiltered now


def _ns_frame(src_mac, src_ip, target):
    """An Ethernet frame carrying a neighbour solicitation for ``target`` from ``src_ip``."""
    import socket
    import struct

    t = socket.inet_pton(socket.AF_INET6, target)
    dst = socket.inet_pton(socket.AF_INET6, "ff02::1:ff" + target.split(":")[-1][-2:].rjust(2, "0"))
    src = socket.inet_pton(socket.AF_INET6, src_ip)
    body = struct.pack("!BBHI", 135, 0, 0, 0) + t
    pseudo = src + dst + struct.pack("!I3xB", len(body), 58)
    data = pseudo + body
    csum = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while csum >> 16:
        csum = (csum & 0xFFFF) + (csum >> 16)
    body = body[:2] + struct.pack("!H", ~csum & 0xFFFF) + body[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(body), 58, 255) + src + dst
    eth = bytes.fromhex("3333" + dst[-4:].hex()) + bytes.fromhex(src_mac.replace(":", "")) + b"\x86\xdd"
    return eth + ip6 + body


def test_ipv6_anti_spoofing_and_dad(env):
    lab, fw = env
    groups = {"open": ALL_EGRESS + [rule("ingress", "IPv6", protocol="tcp", ports=80)]}
    apply(lab, fw, groups, {"vm1": ["open"], "vm2": ["open"]})
    lab.add_address("vm1", "2001:db8::50/64")
    try:
        assert lab.tcp_connect("vm1", "vm2", port=80, family=6, src_ip="2001:db8::11")
        assert not lab.tcp_connect("vm1", "vm2", port=80, family=6, src_ip="2001:db8::50")
        apply(lab, fw, groups, {"vm1": ["open"], "vm2": ["open"]},
              vm1={"allowed_address_pairs": [{"ip_address": "2001:db8::50"}]})
        assert lab.tcp_connect("vm1", "vm2", port=80, family=6, src_ip="2001:db8::50")
    finally:
        lab.del_address("vm1", "2001:db8::50/64")
    mac = lab.node("vm1").mac
    with lab.sniff("out") as s:
        lab.send_frame("vm1", _ns_frame(mac, "::", "2001:db8::51"))            # DAD probe
        lab.send_frame("vm1", _ns_frame(mac, "2001:db8::77", "2001:db8::52"))  # spoofed source
        assert s.seen(lambda f: f.icmp_type == 135 and f.src_ip == "::", timeout=1.0)
        assert not s.seen(lambda f: f.icmp_type == 135 and f.src_ip == "2001:db8::77", timeout=0.3)


@pytest.mark.parametrize("prefix", [False, True], ids=["netlink", "libnftables-fallback"])
def test_big_cold_start_is_committed_in_steps(env, prefix):
    """25,000 members: the structure as one netlink batch (through libnftables when a part of
    it does not encode: an interval set's elements), members in netlink batches; the kernel
    then holds exactly the model (a fresh read-back finds nothing to do) and it filters."""
    lab, fw = env
    fw.flush()
    groups = web_db()
    extra = [f"198.51.{100 + i // 250}.{i % 250 + 1}" for i in range(25000)]
    if prefix:
        extra.append("203.0.113.128/25")
    doc = model(lab, groups, {"vm1": ["web"], "vm2": ["db"]}, members={"web": extra})
    r = fw.apply(doc)
    assert r.transport == ("libnftables+netlink" if prefix else "netlink")
    assert fw.backend.steps == 2   # the structure, then one batch of members
    assert not Firewall(netns=lab.host_ns).plan(doc)
    assert lab.tcp_connect("vm1", "vm2", port=5432)
    assert not lab.tcp_connect("vm3", "vm2", port=5432)


def test_bridge_netfilter_is_switched_on_and_reported(lab_factory):
    lab = build_lab(lab_factory(br_netfilter=False))
    with lab:
        fw = Firewall(netns=lab.host_ns)
        r = fw.apply(model(lab, {"web": [rule("ingress", protocol="tcp", ports=80)] + ALL_EGRESS},
                           {"vm2": ["web"]}))
        assert any("bridge-nf-call-iptables=1" in n for n in r.notices)
        out = lab.exec("host", ["sysctl", "-n", "net.bridge.bridge-nf-call-iptables",
                                "net.bridge.bridge-nf-call-ip6tables"]).stdout.split()
        assert out == ["1", "1"]
        assert lab.tcp_connect("vm1", "vm2", port=80)
        assert not lab.tcp_connect("vm1", "vm2", port=81)


def test_incremental_removals_cut_flows_and_spare_the_others(env):
    """The delta calls judge only the flows of what they removed (one dump, filtered here)."""
    lab, fw = env
    groups = web_db()
    apply(lab, fw, groups, {"vm1": ["web"], "vm2": ["db"], "vm3": ["web"]},
          members={"web": ["192.0.2.99"]})
    from_out = lab.open_tcp("out", "vm2", port=5432)
    from_vm1 = lab.open_tcp("vm1", "vm2", port=5432)
    from_vm3 = lab.open_tcp("vm3", "vm2", port=5432)
    try:
        r = fw.remove_security_group_members("web", ["192.0.2.99"])
        assert r.conntrack_killed == 1
        assert not from_out.alive() and from_vm1.alive() and from_vm3.alive()
        with fw.defer_apply():      # Neutron: the port goes, and so does its membership
            fw.remove_port_filter("port-vm1")
            fw.remove_security_group_members("web", lab.node("vm1").ipv4 + lab.node("vm1").ipv6)
        assert fw.last_result.conntrack_killed >= 1
        assert not from_vm1.alive() and from_vm3.alive()
    finally:
        for c in (from_out, from_vm1, from_vm3):
            c.close()


@pytest.fixture
def routed_peer(env):
    """A namespace routed by the hypervisor (not on the bridge): 198.51.100.2 behind
    198.51.100.1 on the host, forwarding on in the lab's host namespace."""
    lab, fw = env
    ns = f"{lab.host_ns[:-5]}-rt"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        steps = [
            ["ip", "-n", lab.host_ns, "link", "add", "rt-host", "type", "veth", "peer", "name",
             "eth0", "netns", ns],
            ["ip", "-n", lab.host_ns, "addr", "add", "198.51.100.1/24", "dev", "rt-host"],
            ["ip", "-n", lab.host_ns, "link", "set", "rt-host", "up"],
            ["ip", "-n", ns, "addr", "add", "198.51.100.2/24", "dev", "eth0"],
            ["ip", "-n", ns, "link", "set", "eth0", "up"],
            ["ip", "-n", ns, "link", "set", "lo", "up"],
            ["ip", "-n", ns, "route", "add", "default", "via", "198.51.100.1"],
            ["ip", "netns", "exec", lab.host_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
        ]
        for argv in steps:
            subprocess.run(argv, check=True, capture_output=True)
        yield ns
    finally:
        subprocess.run(["ip", "-n", lab.host_ns, "link", "del", "rt-host"], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns])


def test_traffic_routed_by_the_hypervisor_takes_ingress_rules(env, routed_peer):
    from fwsg.lab import traffic

    lab, fw = env
    apply(lab, fw, {"in80": [rule("ingress", protocol="tcp", ports=80)] + ALL_EGRESS},
          {"vm1": ["in80"]})
    vm1 = lab.ns("vm1")
    assert traffic.tcp_connect(routed_peer, vm1, "192.0.2.11", 80, timeout=1.0)
    assert not traffic.tcp_connect(routed_peer, vm1, "192.0.2.11", 81, timeout=1.0)


def test_overlapping_prefixes_replace_each_other(env):
    """Interval sets refuse overlaps: a /24 replacing a /25 (members, address pairs) must
    delete before adding, and overlapping pairs of one port are merged."""
    lab, fw = env
    groups = web_db()
    ports = {"vm1": ["web"], "vm2": ["db"]}
    apply(lab, fw, groups, ports, members={"web": ["192.0.2.96/27"]})
    assert lab.tcp_connect("out", "vm2", port=5432)              # .99 is inside the /27
    apply(lab, fw, groups, ports, members={"web": ["192.0.2.64/26"]})
    assert lab.tcp_connect("out", "vm2", port=5432)              # the /26 replaced the /27
    fw.update_security_group_members("web", {"IPv4": ["192.0.2.11", "192.0.2.0/25",
                                                      "192.0.2.128/25"]})
    assert lab.tcp_connect("out", "vm2", port=5432)
    pairs = [{"ip_address": "192.0.2.48/29"}, {"ip_address": "192.0.2.48/28"}]
    apply(lab, fw, groups, ports, vm1={"allowed_address_pairs": pairs})
    lab.add_address("vm1", "192.0.2.60/24")
    try:
        assert lab.tcp_connect("vm1", "out", port=80, src_ip="192.0.2.60")   # in the /28 only
    finally:
        lab.del_address("vm1", "192.0.2.60/24")
    assert not Firewall(netns=lab.host_ns).plan(model(lab, groups, ports,
                                                      vm1={"allowed_address_pairs": pairs}))


def test_large_member_list_update(env):
    """40,000 members in one full-list update: more than one netlink page, still one apply."""
    lab, fw = env
    groups = {"web": ALL_EGRESS,
              "db": [rule("ingress", "IPv6", protocol="tcp", ports=5432, remote_group_id="web")]
              + ALL_EGRESS}
    ports = {"vm1": ["web"], "vm2": ["db"]}
    apply(lab, fw, groups, ports)
    big = [f"2001:db8:1::{i:x}" for i in range(40000)]
    r = fw.update_security_group_members("web", {"IPv4": ["192.0.2.11"],
                                                 "IPv6": ["2001:db8::11"] + big})
    assert r.summary["elements_added"] == 40000
    doc = model(lab, groups, ports, members={"web": big})
    assert not Firewall(netns=lab.host_ns).plan(doc)
    assert lab.tcp_connect("vm1", "vm2", port=5432, family=6)
    assert not lab.tcp_connect("vm3", "vm2", port=5432, family=6)


def test_a_rule_added_and_removed_by_handle_takes_effect(env, monkeypatch):
    """A group's chain edited rule by rule (the kernel reported its handles at the first
    change): the new rule lets its flow through, the removed one stops it, and the chain
    lists back as a fresh apply of the same model writes it (reconcile compares every rule)."""
    lab, fw = env
    web = [rule("ingress", protocol="tcp", ports=(80, 81)),
           rule("ingress", protocol="tcp", ports=(443, 444))] + ALL_EGRESS
    ssh = rule("ingress", protocol="tcp", ports=(22, 23))   # ranges: rules, not map elements
    apply(lab, fw, {"web": web, "open": ALL_EGRESS}, {"vm1": ["open"], "vm2": ["web"]})
    plans, commit = [], fw.backend.commit
    monkeypatch.setattr(fw.backend, "commit", lambda plan: plans.append(plan) or commit(plan))
    probe = [("tcp_connect", "vm1", "vm2", {"port": 22}),
             ("tcp_connect", "vm1", "vm2", {"port": 80})]
    fw.update_security_group_rules("web", [ssh] + web)   # handles unknown yet: chain rewritten
    assert lab.matrix(probe) == [True, True]
    fw.update_security_group_rules("web", web)           # by handle now
    kinds = {type(op).__name__ for op in plans[-1].ops}
    assert kinds == {"DeleteRule", "ReplaceRule"} and plans[-1].guard is not None
    assert lab.matrix(probe) == [False, True]
    fw.update_security_group_rules("web", [ssh] + web)
    assert {type(op).__name__ for op in plans[-1].ops} == {"AddRule", "ReplaceRule"}
    assert lab.matrix(probe) == [True, True]
    assert Firewall(netns=lab.host_ns).reconcile(fw.model).repaired == []


def test_single_port_rules_are_elements_of_the_groups_port_set(env, monkeypatch):
    """A group rule matching one protocol and one destination port from anywhere is an
    element of its group's port set: it lets exactly that family, protocol and port through, and
    adding or removing one is one element change (no chain touched) that takes effect at
    once; an established flow that loses its entry is cut."""
    lab, fw = env
    groups = {"g": [rule("ingress", protocol="tcp", ports=8443),
                    rule("ingress", "IPv6", protocol="udp", ports=53)] + ALL_EGRESS,
              "open": ALL_EGRESS}
    apply(lab, fw, groups, {"vm1": ["open"], "vm2": ["g"]})
    assert lab.matrix([
        ("tcp_connect", "vm1", "vm2", {"port": 8443}),
        ("tcp_connect", "vm1", "vm2", {"port": 8443, "family": 6}),   # other family
        ("udp_exchange", "vm1", "vm2", {"port": 8443}),               # other protocol
        ("tcp_connect", "vm1", "vm2", {"port": 8444}),                # other port
        ("udp_exchange", "vm1", "vm2", {"port": 53, "family": 6}),
        ("udp_exchange", "vm1", "vm2", {"port": 53}),
        ("tcp_connect", "vm1", "vm2", {"port": 53, "family": 6}),
    ]) == [True, False, False, False, True, False, False]
    plans, commit = [], fw.backend.commit
    monkeypatch.setattr(fw.backend, "commit", lambda plan: plans.append(plan) or commit(plan))
    conn = lab.open_tcp("vm1", "vm2", port=8443)
    try:
        wider = groups["g"] + [rule("ingress", protocol="tcp", ports=22)]
        fw.update_security_group_rules("g", wider)
        assert [type(op).__name__ for op in plans[-1].ops] == ["AddElements"]
        assert plans[-1].ops[0].set.name.endswith("-pi")
        assert lab.tcp_connect("vm1", "vm2", port=22) and conn.alive()
        r = fw.update_security_group_rules("g", wider[1:])       # tcp 8443 gone
        assert [type(op).__name__ for op in plans[-1].ops] == ["DeleteElements"]
        assert r.conntrack_killed >= 1 and not conn.alive()
        assert not lab.tcp_connect("vm1", "vm2", port=8443)
        assert lab.tcp_connect("vm1", "vm2", port=22)
    finally:
        conn.close()
    assert Firewall(netns=lab.host_ns).reconcile(fw.model).repaired == []
