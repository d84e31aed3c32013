"""Neutron's own agent-side security-group code, timed on a fwsg benchmark scenario: the peer of
``scripts/bench --peer neutron``.

This file runs in a virtualenv that holds OpenStack Neutron (installed there by
``fwsg.lab.peer``), never in fwsg's: it imports only the standard library and Neutron, and is
started as ``python peer_neutron.py SCENARIO.json [REPEAT [all|initial]]`` inside a network
namespace (``initial``: the initial apply only, its rules left in place for packets to cross).

How Neutron is driven, unmodified:
- ``SecurityGroupAgentRpc`` (neutron.agent.securitygroups_rpc), built as the Open vSwitch agent
  builds it (``defer_refresh_firewall=True``), with ``[SECURITYGROUP] firewall_driver =
  iptables`` (``IptablesFirewallDriver``) and ``enable_ipset = true``;
- the RPC to the server is replaced by ``LocalServer``, which answers
  ``security_group_info_for_devices`` as Neutron's server does (the devices asked for, the rules
  of their groups with ``remote_ip_prefix`` renamed ``source_ip_prefix``/``dest_ip_prefix`` by
  direction, the members ([ip, mac]) of the groups their rules name as remote); the
  time spent building an answer is measured and left out;
- Neutron's privileged helpers (oslo.privsep) run in-process (client mode off: this process is
  root already) instead of through a privsep daemon, which only saves Neutron time;
- each step is what the agent's loop does: ``setup_port_filters(new, updated)`` after the RPC
  notification (``security_groups_member_updated`` / ``security_groups_rule_updated``).

Prints one JSON object: milliseconds per step, and the iptables/ipset sizes reached.
"""

import copy
import json
import os
import subprocess
import sys
import time


PREFIX_KEY = {"ingress": "source_ip_prefix", "egress": "dest_ip_prefix"}


def server_rule(rule):
    """A rule as Neutron's server puts it in the reply: ``remote_ip_prefix`` becomes
    ``source_ip_prefix`` (ingress) or ``dest_ip_prefix`` (egress); the agent's driver reads
    only those (given ``remote_ip_prefix`` it would match every address)."""
    out = {k: v for k, v in rule.items() if k != "remote_ip_prefix"}
    if rule.get("remote_ip_prefix") is not None:
        out[PREFIX_KEY[rule["direction"]]] = rule["remote_ip_prefix"]
    return out


class LocalServer:
    """The server side of ``security_group_info_for_devices``, from a wire-format scenario."""

    def __init__(self, doc):
        self.groups = doc["security_groups"]
        self.members = doc["sg_member_ips"]
        self.ports = {}
        for pid, raw in doc["devices"].items():
            self.add_port(pid, raw)
        self.server_s = 0.0

    def add_port(self, pid, raw):
        port = dict(raw)
        port.update(id=pid, device_owner="compute:nova", network_id="net-1",
                    allowed_address_pairs=raw.get("allowed_address_pairs", []),
                    port_security_enabled=raw.get("port_security_enabled", True))
        self.ports[pid] = port

    def _remote_groups(self, sgs):
        return sorted({r["remote_group_id"] for sg in sgs for r in self.groups.get(sg, ())
                       if r.get("remote_group_id")})

    def security_group_info_for_devices(self, context, device_ids):
        t0 = time.perf_counter()
        devices = {}
        for d in device_ids:
            if d in self.ports:
                p = dict(self.ports[d])
                p["security_group_source_groups"] = self._remote_groups(p["security_groups"])
                p["security_group_rules"] = []
                devices[d] = p
        sgs = {sg for p in devices.values() for sg in p["security_groups"]}
        members = {}
        for sg in self._remote_groups(sgs):
            m = self.members.get(sg, {})
            members[sg] = {fam: [[ip, None] for ip in m.get(fam, [])] for fam in ("IPv4", "IPv6")}
        reply = copy.deepcopy({"devices": devices,
                               "security_groups": {sg: [server_rule(r) for r in self.groups[sg]]
                                                   for sg in sgs},
                               "sg_member_ips": members})
        self.server_s += time.perf_counter() - t0
        return reply


def _sizes():
    rules = sum(1 for line in subprocess.run(["iptables-save"], capture_output=True,
                                             text=True).stdout.splitlines()
                if line.startswith("-A"))
    rules += sum(1 for line in subprocess.run(["ip6tables-save"], capture_output=True,
                                              text=True).stdout.splitlines()
                 if line.startswith("-A"))
    out = subprocess.run(["ipset", "list", "-t"], capture_output=True, text=True).stdout
    entries = sum(int(line.split(":")[1]) for line in out.splitlines()
                  if line.startswith("Number of entries"))
    return {"iptables_rules": rules, "ipset_entries": entries}


def run(doc, lock_dir, repeat=1, steps="all"):
    from oslo_concurrency import lockutils
    from oslo_config import cfg

    from neutron.agent import securitygroups_rpc as sg_rpc
    from neutron.conf.agent import common as agent_config
    from neutron.conf.agent import securitygroups_rpc as sg_cfg
    from neutron.conf.agent.database import agents_db
    from neutron import privileged

    agents_db.register_db_agents_opts()
    agent_config.register_root_helper(cfg.CONF)
    sg_cfg.register_securitygroups_opts(cfg.CONF)
    cfg.CONF([], project="neutron")
    lockutils.set_defaults(lock_dir)
    cfg.CONF.set_override("firewall_driver", "iptables", "SECURITYGROUP")
    cfg.CONF.set_override("enable_ipset", True, "SECURITYGROUP")
    for ctx in (privileged.default, privileged.conntrack_cmd, privileged.dhcp_release_cmd,
                privileged.namespace_cmd, privileged.link_cmd):
        ctx.set_client_mode(False)

    server = LocalServer(doc)
    agent = sg_rpc.SecurityGroupAgentRpc(None, server, defer_refresh_firewall=True)

    def timed(fn, *args):
        server.server_s = 0.0
        t0 = time.perf_counter()
        fn(*args)
        return (time.perf_counter() - t0 - server.server_s) * 1000

    import neutron
    from importlib import metadata

    out = {"neutron": metadata.version("neutron"), "neutron_path": neutron.__file__,
           "repeat": repeat}
    try:
        out["initial"] = timed(agent.setup_port_filters, set(server.ports), set())
    except Exception as e:  # noqa: BLE001 - reported, not hidden: Neutron refused the scenario
        lines = [x for x in str(e).splitlines() if x.strip()]
        out["error"] = f"initial apply failed: {lines[-1] if lines else type(e).__name__}"
        return out
    out.update(_sizes())
    if steps == "initial":
        return out
    member, rule, port = [], [], []
    for i in range(repeat):
        server.members["default"]["IPv4"].append(f"203.0.113.{200 + i}")
        agent.security_groups_member_updated(["default"])
        member.append(timed(agent.setup_port_filters, set(), set()))
        server.groups["default"] = server.groups["default"] + [
            {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
             "port_range_min": 8443 + i, "port_range_max": 8443 + i}]
        agent.security_groups_rule_updated(["default"])
        rule.append(timed(agent.setup_port_filters, set(), set()))
        pid = f"peer-port-{i}"
        server.add_port(pid, {"device": f"tappeer{i}", "mac_address": f"fa:16:3e:ff:01:{i:02x}",
                              "fixed_ips": [f"198.51.100.{100 + i}", f"2001:db8:ff::{i + 1:x}"],
                              "security_groups": ["default", "sg-1"]})
        port.append(timed(agent.setup_port_filters, {pid}, set()))
    out.update(member=sorted(member)[len(member) // 2], rule=sorted(rule)[len(rule) // 2],
               port=sorted(port)[len(port) // 2])
    return out


if __name__ == "__main__":
    import logging
    import tempfile

    # Neutron names its iptables chains after the program (as the Linux bridge agent's would)
    sys.argv[0] = "neutron-linuxbridge-agent"
    logging.basicConfig(level=logging.ERROR)

    with open(sys.argv[1]) as f:
        scenario = json.load(f)
    status = 1
    try:
        with tempfile.TemporaryDirectory(prefix="fwsg-peer-locks-") as locks:
            print(json.dumps(run(scenario, locks, int(sys.argv[2]) if len(sys.argv) > 2 else 1,
                                 sys.argv[3] if len(sys.argv) > 3 else "all")))
        status = 0
    finally:
        # Neutron's conntrack helper leaves a worker thread running: do not wait for it
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
