"""Benchmark: Neutron's own agent code (``SecurityGroupAgentRpc``, Open vSwitch agent settings)
driving ``firewall_driver = fwsg`` at 500 ports / 10,000 members, in a scratch namespace.

Run as root in the ``neutron`` tox environment::

    .tox/neutron/bin/python -m tests.neutron_agent.bench_agent [--ports 500] [--members 10000]

Prints a table: the time of each agent step (the server's answer, built locally, is timed
apart and left out), the same change through the driver alone, and Neutron's iptables_hybrid
figures for the same sizes measured earlier on this machine (not in this run; quoted). The
namespace is removed afterwards, whatever happens.
"""

import argparse
import copy
import ipaddress
import os
import subprocess
import sys
import time

V4 = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
IPTABLES_HYBRID = {"initial": 5100.0, "member": 5700.0, "rule": 2900.0, "port": 3000.0}


def v4_address(i):
    net, k = V4[i // 254], i % 254 + 1
    return str(net.network_address + k)


def port_id(i):
    return f"{i:08x}-0000-4000-8000-{i:012x}"


class Cloud:
    """The server's view: groups, ports, members; answers security_group_info_for_devices."""

    def __init__(self, ports, members, groups=10, rules=10):
        self.groups = {"default": [
            {"direction": "ingress", "ethertype": "IPv4", "remote_group_id": "default"},
            {"direction": "ingress", "ethertype": "IPv6", "remote_group_id": "default"},
            {"direction": "egress", "ethertype": "IPv4"},
            {"direction": "egress", "ethertype": "IPv6"}]}
        for g in range(groups):
            self.groups[f"sg-{g}"] = [
                {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                 "port_range_min": 1000 + 10 * g + r, "port_range_max": 1000 + 10 * g + r,
                 "source_ip_prefix": f"198.51.100.{r * 16}/28"} for r in range(rules)]
        self.ports = {}
        for i in range(ports):
            self.add_port(i, groups)
        extra = max(0, members - 2 * ports)
        self.extra_v6 = [f"2001:db8:1::{k:x}" for k in range(1, extra + 1)]
        self.server_s = 0.0

    def add_port(self, i, groups=10):
        pid = port_id(i)
        self.ports[pid] = {
            "id": pid, "device": pid, "device_owner": "compute:nova",
            "mac_address": f"fa:16:3e:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
            "fixed_ips": [v4_address(i), f"2001:db8::{i + 1:x}"], "allowed_address_pairs": [],
            "security_groups": ["default", f"sg-{i % groups}"],
            "security_group_source_groups": ["default"], "port_security_enabled": True,
            "security_group_rules": [], "network_id": "net-1"}
        return pid

    def security_group_info_for_devices(self, context, device_ids):
        t0 = time.perf_counter()
        devices = {d: self.ports[d] for d in device_ids if d in self.ports}
        sgs = {sg for p in devices.values() for sg in p["security_groups"]}
        members = {"IPv4": [], "IPv6": []}
        for p in self.ports.values():
            members["IPv4"].append([p["fixed_ips"][0], p["mac_address"]])
            members["IPv6"].append([p["fixed_ips"][1], p["mac_address"]])
        members["IPv6"] += [[ip, None] for ip in self.extra_v6]
        reply = copy.deepcopy({"devices": devices,
                               "security_groups": {sg: self.groups[sg] for sg in sgs},
                               "sg_member_ips": {"default": members}})
        self.server_s += time.perf_counter() - t0
        return reply


def _timed(cloud, fn, *args):
    cloud.server_s = 0.0
    t0 = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t0 - cloud.server_s) * 1000


def run(ports, members):
    from oslo_config import cfg
    from neutron.agent import securitygroups_rpc as sg_rpc
    from neutron.conf.agent.database import agents_db

    from fwsg.netns import entered

    agents_db.register_db_agents_opts()
    cfg.CONF([], project="neutron")
    cfg.CONF.set_override("firewall_driver", "fwsg", "SECURITYGROUP")
    cloud = Cloud(ports, members)
    rows = []
    with entered(NS):
        agent = sg_rpc.SecurityGroupAgentRpc(None, cloud, defer_refresh_firewall=True)
        drv = agent.firewall
        ids = set(cloud.ports)
        rows.append(("initial apply (all ports, one agent block)", "initial",
                     _timed(cloud, agent.setup_port_filters, ids, set())))
        cloud.extra_v6.append("2001:db8:2::1")
        agent.security_groups_member_updated(["default"])
        rows.append((f"one member added (agent refreshes all {ports} ports)", "member",
                     _timed(cloud, agent.setup_port_filters, set(), set())))
        cloud.groups["sg-1"] = cloud.groups["sg-1"] + [
            {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
             "port_range_min": 22, "port_range_max": 22}]
        agent.security_groups_rule_updated(["sg-1"])
        rows.append(("one rule added (agent refreshes the group's ports)", "rule",
                     _timed(cloud, agent.setup_port_filters, set(), set())))
        new = cloud.add_port(ports)
        rows.append(("one port added (prepare_devices_filter)", "port",
                     _timed(cloud, agent.setup_port_filters, {new}, set())))
        m = copy.deepcopy(cloud.security_group_info_for_devices(None, [new])["sg_member_ips"])
        m["default"]["IPv6"].append(["2001:db8:2::2", None])
        t0 = time.perf_counter()
        drv.update_security_group_members("default", m["default"])
        rows.append(("one member added, driver call alone", None,
                     (time.perf_counter() - t0) * 1000))
        drv.firewall.flush()
    return rows


NS = f"fwsg-nbench-{os.getpid()}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ports", type=int, default=500)
    ap.add_argument("--members", type=int, default=10000)
    args = ap.parse_args(argv)
    if not 1 <= args.ports <= 700:
        ap.error("--ports must be 1..700 (IPv4 addresses come from the documentation ranges)")
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        rows = run(args.ports, args.members)
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)
    print(f"Neutron agent code + fwsg driver, {args.ports} ports, {args.members} members "
          "in group default")
    print(f"{'step':56} | {'fwsg ms':>9} | {'iptables_hybrid ms*':>19} | fwsg/base")
    print("-" * 104)
    for label, key, ms in rows:
        same_size = (args.ports, args.members) == (500, 10000)
        base = IPTABLES_HYBRID.get(key) if key and same_size else None
        ratio = f"{ms / base:.4f}x" if base else ""
        print(f"{label:56} | {ms:9.1f} | {base if base else '':>19} | {ratio}")
    print("* measured earlier on this machine with Neutron's iptables_hybrid driver at 500 ports /"
          " 10k members; not part of this run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
