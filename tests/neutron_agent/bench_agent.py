"""Benchmark: Neutron's own agent code (``SecurityGroupAgentRpc``, Open vSwitch agent settings)
driving ``firewall_driver = fwsg``, and the same steps with Neutron's ``iptables_hybrid``
driver as the baseline, at 500 ports / 10,000 members, each in a scratch namespace.

Run as root in the ``neutron`` tox environment::

    .tox/neutron/bin/python -m tests.neutron_agent.bench_agent [--ports N] [--members N]

Prints a table: the time of each agent step (the server's answer, built locally, is timed
apart and left out) and the same member change through the driver alone. The namespaces and
the lock directory are removed afterwards, whatever happens; the host's ruleset is never
touched (the iptables driver is built with ``namespace=``).
"""

import argparse
import copy
import ipaddress
import os
import shutil
import subprocess
import sys
import time

V4 = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]


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


STEPS = (("initial", "initial apply (all ports, one agent block)"),
         ("member", "one member added (agent refreshes every port naming it)"),
         ("rule", "one rule added (agent refreshes the group's ports)"),
         ("port", "one port added (prepare_devices_filter)"),
         ("alone", "one member added, driver call alone (no block)"))


def settle(agent):
    """Wait (untimed) until the iptables driver's background conntrack clean-up has drained,
    so that one step's leftovers do not slow the next; fwsg's clean-up is synchronous and timed
    with its step."""
    q = getattr(getattr(agent.firewall, "ipconntrack", None), "_queue", None)
    if q is None:
        return
    while not q.empty():
        time.sleep(0.05)
    time.sleep(0.5)


def steps(agent, cloud, ports):
    """The agent's steps, timed (ms, server answer excluded): key -> ms."""
    out = {"initial": _timed(cloud, agent.setup_port_filters, set(cloud.ports), set())}
    settle(agent)
    cloud.extra_v6.append("2001:db8:2::1")
    agent.security_groups_member_updated(["default"])
    out["member"] = _timed(cloud, agent.setup_port_filters, set(), set())
    settle(agent)
    cloud.groups["sg-1"] = cloud.groups["sg-1"] + [
        {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
         "port_range_min": 22, "port_range_max": 22}]
    agent.security_groups_rule_updated(["sg-1"])
    out["rule"] = _timed(cloud, agent.setup_port_filters, set(), set())
    settle(agent)
    new = cloud.add_port(ports)
    out["port"] = _timed(cloud, agent.setup_port_filters, {new}, set())
    settle(agent)
    m = copy.deepcopy(cloud.security_group_info_for_devices(None, [new])["sg_member_ips"])
    m["default"]["IPv6"].append(["2001:db8:2::2", None])
    t0 = time.perf_counter()   # outside a block: fwsg one transaction, iptables the ipset only
    agent.firewall.update_security_group_members("default", m["default"])
    out["alone"] = (time.perf_counter() - t0) * 1000
    settle(agent)
    return out


def configure():
    """Neutron's options as an agent on this host would have them; privileged calls run
    in-process (we are root), iptables' lock files in a scratch directory."""
    from oslo_config import cfg
    from neutron import privileged
    from neutron.conf.agent import common as agent_config
    from neutron.conf.agent.database import agents_db

    agent_config.register_root_helper(cfg.CONF)
    agents_db.register_db_agents_opts()
    cfg.CONF([], project="neutron")
    cfg.CONF.set_override("root_helper", "", "AGENT")
    cfg.CONF.set_override("lock_path", LOCKS, "oslo_concurrency")
    for ctx in (privileged.default, privileged.conntrack_cmd, privileged.namespace_cmd,
                privileged.link_cmd):
        ctx.set_client_mode(False)
    return cfg


def run_fwsg(cfg, ports, members):
    from neutron.agent import securitygroups_rpc as sg_rpc

    from fwsg.netns import entered

    cfg.CONF.set_override("firewall_driver", "fwsg", "SECURITYGROUP")
    cloud = Cloud(ports, members)
    with entered(NS):   # the driver manages the namespace it is created and used in
        agent = sg_rpc.SecurityGroupAgentRpc(None, cloud, defer_refresh_firewall=True)
        try:
            return steps(agent, cloud, ports)
        finally:
            agent.firewall.firewall.flush()


def run_iptables(cfg, ports, members):
    """The same steps with Neutron's iptables_hybrid driver, confined to the scratch namespace
    (built with ``namespace=``, never in the host's)."""
    from neutron.agent import securitygroups_rpc as sg_rpc
    from neutron.agent.linux.iptables_firewall import OVSHybridIptablesFirewallDriver

    cfg.CONF.set_override("firewall_driver", "noop", "SECURITYGROUP")
    cloud = Cloud(ports, members)
    agent = sg_rpc.SecurityGroupAgentRpc(None, cloud, defer_refresh_firewall=True)
    agent.firewall = OVSHybridIptablesFirewallDriver(namespace=NS_BASE)
    return steps(agent, cloud, ports)


NS = f"fwsg-nbench-{os.getpid()}"
NS_BASE = f"fwsg-nbase-{os.getpid()}"
LOCKS = f"/tmp/fwsg-nbench-{os.getpid()}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ports", type=int, default=500)
    ap.add_argument("--members", type=int, default=10000)
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip Neutron's iptables_hybrid driver (the slow part)")
    args = ap.parse_args(argv)
    if not 1 <= args.ports <= 700:
        ap.error("--ports must be 1..700 (IPv4 addresses come from the documentation ranges)")
    made = []
    try:
        for ns in (NS, NS_BASE):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            made.append(ns)
        os.makedirs(LOCKS, exist_ok=True)
        cfg = configure()
        fw = run_fwsg(cfg, args.ports, args.members)
        base = None if args.no_baseline else run_iptables(cfg, args.ports, args.members)
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(LOCKS, ignore_errors=True)
    print(f"Neutron {_version()} agent code (SecurityGroupAgentRpc), {args.ports} ports, "
          f"{args.members} members in group default; ms, server answer excluded")
    print(f"{'step':58} | {'fwsg':>9} | {'iptables_hybrid':>15} | fwsg/base")
    print("-" * 100)
    for key, label in STEPS:
        b = base[key] if base else None
        ratio = f"{fw[key] / b:.4f}x" if b else ""
        print(f"{label:58} | {fw[key]:9.1f} | {b if b is None else round(b, 1):>15} | {ratio}")
    return 0


def _version():
    from importlib.metadata import version

    return version("neutron")


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    # Neutron's conntrack manager (iptables driver) starts a worker thread that never ends
    # (a TODO in Neutron); everything of ours is cleaned up by now.
    os._exit(rc)
