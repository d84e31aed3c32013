"""The Neutron driver in Neutron's hybrid layout (tap -> qbr… -> qvb…/qvo… -> br-int), driven
the way the agent drives it, with real packets passing and being dropped. Plus the Linux
bridge agent's layout (device = the tap on one bridge)."""

import copy
import os

import pytest

from fwsg.lab import Lab, netns_available
from fwsg.neutron import FwsgFirewallDriver
from tests.netns.fwlab import ALL_EGRESS, build_lab, flush_conntrack, rule
from tests.netns.hybridlab import HybridLab, dhcp_rules, hybrid_names, neutron_reply

PORT_IDS = {"vm1": "1b4e28ba-2fa1-41d2-883f-0016d3cca427",
            "vm2": "6fa459ea-ee8a-4ca4-894e-db77e160355e",
            "vm3": "c9bf9e57-1685-4c89-bafb-ff5af830be8a"}
NODES = {"vm1": dict(mac="fa:16:3e:00:00:11", ipv4=["192.0.2.11/24"], ipv6=["2001:db8::11/64"]),
         "vm2": dict(mac="fa:16:3e:00:00:12", ipv4=["192.0.2.12/24"], ipv6=["2001:db8::12/64"]),
         "vm3": dict(mac="fa:16:3e:00:00:13", ipv4=["192.0.2.13/24"], ipv6=["2001:db8::13/64"])}
GROUPS = {
    "web": [rule("ingress", protocol="tcp", ports=80),
            rule("ingress", "IPv6", protocol="tcp", ports=80)] + ALL_EGRESS,
    "db": [rule("ingress", protocol="tcp", ports=5432, remote_group_id="web"),
           rule("ingress", "IPv6", protocol="tcp", ports=5432, remote_group_id="web")]
    + ALL_EGRESS,
    "egress-80": [rule("egress", protocol="tcp", ports=80)],
}
PORTS = {"vm1": ["web"], "vm2": ["db"], "vm3": ["egress-80"]}


def sync(drv, reply, update=False):
    """SecurityGroupAgentRpc._apply_port_filter with ``reply`` as the server's answer."""
    with drv.defer_apply():
        for sg, rules in reply["security_groups"].items():
            drv.update_security_group_rules(sg, copy.deepcopy(rules))
        for sg, members in reply["sg_member_ips"].items():
            drv.update_security_group_members(sg, copy.deepcopy(members))
        for dev in reply["devices"].values():
            (drv.update_port_filter if update else drv.prepare_port_filter)(copy.deepcopy(dev))


@pytest.fixture(scope="module")
def hyb():
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"netns tests: {why}")
    lab = HybridLab(f"nhyb{os.getpid() % 100000}")
    for vm, spec in NODES.items():
        lab.add_vm(vm, port_id=PORT_IDS[vm], **spec)
    lab.add_outside("out", mac="fa:16:3e:00:00:99", ipv4=["192.0.2.99/24"],
                    ipv6=["2001:db8::99/64"])
    lab.up()
    try:
        yield lab, FwsgFirewallDriver(namespace=lab.host_ns)
    finally:
        lab.down()


@pytest.fixture
def env(hyb):
    lab, drv = hyb
    flush_conntrack(lab)
    sync(drv, neutron_reply(lab, GROUPS, PORTS), update=bool(drv.ports))
    return lab, drv


def test_the_lab_is_the_hybrid_layout(hyb):
    lab, _ = hyb
    for vm, pid in PORT_IDS.items():
        tap, qbr, qvb, qvo = hybrid_names(pid)
        assert lab.node(vm).tap == tap
        assert lab.bridge_of(vm) == qbr
        assert f"master {qbr}" in lab.ip("host", "-o", "link", "show", "dev", qvb)
        assert "master br-int" in lab.ip("host", "-o", "link", "show", "dev", qvo)


def test_groups_remote_groups_and_egress_rules(env):
    lab, drv = env
    assert set(drv.ports) == set(lab.port_ids.values())
    r = lab.matrix([
        ("tcp_connect", "out", "vm1", {"port": 80}),                 # web: 80 open
        ("tcp_connect", "out", "vm1", {"port": 22}),
        ("tcp_connect", "out", "vm1", {"port": 80, "family": 6}),
        ("tcp_connect", "vm1", "vm2", {"port": 5432}),               # vm1 is a member of web
        ("tcp_connect", "vm1", "vm2", {"port": 5432, "family": 6}),
        ("tcp_connect", "out", "vm2", {"port": 5432}),
        ("tcp_connect", "vm3", "vm1", {"port": 80}),                 # vm3: egress tcp 80 only
        ("tcp_connect", "vm3", "vm2", {"port": 5432}),
        ("tcp_connect", "vm3", "out", {"port": 443}),
        ("tcp_connect", "host", "vm1", {"port": 80}),                # the hypervisor itself
        ("tcp_connect", "host", "vm1", {"port": 81}),
    ])
    assert r == [True, False, True, True, True, False, True, False, False, True, False]


def test_member_and_rule_updates_through_the_driver(env):
    lab, drv = env
    assert not lab.tcp_connect("out", "vm2", port=5432)
    drv.update_security_group_members("web", {"IPv4": [["192.0.2.11", "fa:16:3e:00:00:11"],
                                                       ["192.0.2.99", None]]})
    assert lab.tcp_connect("out", "vm2", port=5432)
    conn = lab.open_tcp("out", "vm2", port=5432)
    try:
        assert conn.alive()
        drv.update_security_group_members("web", {"IPv4": [["192.0.2.11", None]]})
        assert not conn.alive()                       # the flow lost its rule: cut
        assert not lab.tcp_connect("out", "vm2", port=5432)
    finally:
        conn.close()
    drv.update_security_group_rules("web", GROUPS["web"] + [rule("ingress", protocol="tcp",
                                                                 ports=22)])
    assert lab.tcp_connect("out", "vm1", port=22)


def test_port_update_anti_spoofing_and_address_pairs(env):
    lab, drv = env
    lab.add_address("vm1", "192.0.2.61/24")
    lab.add_address("vm1", "2001:db8::61/64")
    try:
        assert lab.tcp_connect("vm1", "out", port=80)
        assert lab.tcp_connect("vm1", "out", port=80, family=6, src_ip="2001:db8::11")
        assert not lab.tcp_connect("vm1", "out", port=80, src_ip="192.0.2.61")
        assert not lab.tcp_connect("vm1", "out", port=80, family=6, src_ip="2001:db8::61")
        reply = neutron_reply(lab, GROUPS, PORTS, vm1={
            "allowed_address_pairs": [{"ip_address": "192.0.2.61",
                                       "mac_address": "fa:16:3e:00:00:11"}]})
        sync(drv, reply, update=True)
        assert lab.tcp_connect("vm1", "out", port=80, src_ip="192.0.2.61")
    finally:
        lab.del_address("vm1", "192.0.2.61/24")
        lab.del_address("vm1", "2001:db8::61/64")


def test_port_removed_and_port_security_off(env):
    lab, drv = env
    pid = lab.port_ids["vm1"]
    assert not lab.tcp_connect("out", "vm1", port=22)
    with drv.defer_apply():                           # SecurityGroupAgentRpc.remove_devices_filter
        drv.remove_port_filter(drv.ports[pid])
    assert pid not in drv.ports
    assert lab.tcp_connect("out", "vm1", port=22)     # no filter at all any more
    sync(drv, neutron_reply(lab, GROUPS, {"vm1": ["web"]}))
    assert not lab.tcp_connect("out", "vm1", port=22)
    sync(drv, neutron_reply(lab, GROUPS, {"vm1": ["web"]},
                            vm1={"port_security_enabled": False}), update=True)
    assert lab.tcp_connect("out", "vm1", port=22)


def test_server_added_dhcp_rules_reach_the_port(env):
    lab, drv = env
    assert dhcp_rules(lab.node("vm3"))[1]["dest_ip_prefix"] == "192.0.2.13/32"
    # vm3 has no ingress rule of its own: only the server's DHCP reply rule lets 67->68 in
    assert lab.udp_reaches("out", "vm3", port=68, sport=67)
    assert not lab.udp_reaches("out", "vm3", port=69, sport=67)
    assert not lab.udp_reaches("out", "vm3", port=68, sport=80)


def test_direct_naming_on_one_bridge(require_root):
    """The Linux bridge agent's call: device is the tap itself."""
    lab = build_lab(Lab(f"ndir{os.getpid() % 100000}"))
    lab.up()
    try:
        drv = FwsgFirewallDriver(namespace=lab.host_ns)
        devices = {}
        for vm, sgs in (("vm1", ["web"]), ("vm2", ["db"])):
            n = lab.node(vm)
            devices[n.tap] = {"device": n.tap, "mac_address": n.mac,
                              "fixed_ips": n.ipv4 + n.ipv6, "security_groups": sgs,
                              "security_group_rules": dhcp_rules(n)}
        reply = {"security_groups": {g: GROUPS[g] for g in ("web", "db")}, "devices": devices,
                 "sg_member_ips": {"web": {"IPv4": lab.node("vm1").ipv4, "IPv6": []}}}
        sync(drv, reply)
        assert set(drv.ports) == {"tap-vm1", "tap-vm2"}
        drv.process_trusted_ports(["up-out"])          # e.g. a DHCP port: left unfiltered
        r = lab.matrix([("tcp_connect", "out", "vm1", {"port": 80}),
                        ("tcp_connect", "out", "vm1", {"port": 22}),
                        ("tcp_connect", "vm1", "vm2", {"port": 5432}),
                        ("tcp_connect", "vm3", "vm2", {"port": 5432}),
                        ("tcp_connect", "vm3", "out", {"port": 22})])
        assert r == [True, False, True, False, True]
    finally:
        lab.down()


def test_agent_restart_keeps_filtering_until_the_full_sync(env):
    """A new agent process (a new driver on the same kernel) whose first calls touch no port
    leaves the previous filtering in place; its full sync then takes over in one transaction."""
    lab, _ = env
    drv = FwsgFirewallDriver(namespace=lab.host_ns)
    reply = neutron_reply(lab, GROUPS, PORTS)
    with drv.defer_apply():
        for sg, rules in reply["security_groups"].items():
            drv.update_security_group_rules(sg, copy.deepcopy(rules))
        drv.remove_port_filter({"device": "0d0d0d0d-0000-4000-8000-000000000000"})
    probes = [("tcp_connect", "out", "vm1", {"port": 80}),
              ("tcp_connect", "out", "vm1", {"port": 22}),
              ("tcp_connect", "vm3", "out", {"port": 443})]
    assert lab.matrix(probes) == [True, False, False]      # still filtered
    sync(drv, neutron_reply(lab, GROUPS, {"vm1": ["web"], "vm3": ["egress-80"]}))
    assert lab.matrix(probes) == [True, False, False]
    assert lab.tcp_connect("out", "vm2", port=22)            # vm2 not re-prepared: unfiltered
