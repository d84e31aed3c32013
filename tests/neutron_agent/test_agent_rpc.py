"""Neutron's own agent-side security-group code (``SecurityGroupAgentRpc``, as the Open vSwitch
agent builds it) driving ``firewall_driver = fwsg`` in the hybrid lab, with real packets.

The RPC to the server is replaced by :class:`LocalServer`, which answers
``security_group_info_for_devices`` from a model of the cloud as Neutron's server does
(devices asked for, their groups, the members of the remote groups their rules name).
Needs Neutron installed (``tox -e neutron``) and root; skipped otherwise.
"""

import copy
import os

import pytest

sg_rpc = pytest.importorskip("neutron.agent.securitygroups_rpc")
cfg = pytest.importorskip("oslo_config.cfg")

from fwsg.lab import netns_available  # noqa: E402
from fwsg.neutron import FwsgFirewallDriver  # noqa: E402
from tests.netns.fwlab import ALL_EGRESS, flush_conntrack, rule  # noqa: E402
from tests.netns.hybridlab import HybridLab, neutron_reply  # noqa: E402

PORT_IDS = {"vm1": "1b4e28ba-2fa1-41d2-883f-0016d3cca427",
            "vm2": "6fa459ea-ee8a-4ca4-894e-db77e160355e",
            "vm3": "c9bf9e57-1685-4c89-bafb-ff5af830be8a"}
NODES = {"vm1": dict(mac="fa:16:3e:00:00:11", ipv4=["192.0.2.11/24"], ipv6=["2001:db8::11/64"]),
         "vm2": dict(mac="fa:16:3e:00:00:12", ipv4=["192.0.2.12/24"], ipv6=["2001:db8::12/64"]),
         "vm3": dict(mac="fa:16:3e:00:00:13", ipv4=["192.0.2.13/24"], ipv6=["2001:db8::13/64"])}


class LocalServer:
    """The server side of the security-group RPC, answered from ``groups``/``ports``."""

    def __init__(self, lab, groups, ports):
        self.lab, self.groups, self.ports = lab, groups, ports
        self.calls = []

    def security_group_info_for_devices(self, context, device_ids):
        self.calls.append(sorted(device_ids))
        full = neutron_reply(self.lab, self.groups, self.ports)
        devices = {d: p for d, p in full["devices"].items() if d in device_ids}
        sgs = {sg for p in devices.values() for sg in p["security_groups"]}
        remote = {r.get("remote_group_id") for sg in sgs for r in self.groups[sg]}
        return copy.deepcopy({
            "devices": devices,
            "security_groups": {sg: self.groups[sg] for sg in sgs},
            "sg_member_ips": {sg: m for sg, m in full["sg_member_ips"].items() if sg in remote}})


@pytest.fixture(scope="module")
def agent_lab():
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"netns tests: {why}")
    from neutron.conf.agent.database import agents_db

    try:
        agents_db.register_db_agents_opts()   # rpc_resources_processing_step
    except cfg.DuplicateOptError:
        pass
    cfg.CONF([], project="neutron")
    cfg.CONF.set_override("firewall_driver", "fwsg", "SECURITYGROUP")
    lab = HybridLab(f"nagt{os.getpid() % 100000}")
    for vm, spec in NODES.items():
        lab.add_vm(vm, port_id=PORT_IDS[vm], **spec)
    lab.add_outside("out", mac="fa:16:3e:00:00:99", ipv4=["192.0.2.99/24"],
                    ipv6=["2001:db8::99/64"])
    lab.up()
    try:
        yield lab
    finally:
        cfg.CONF.reset()
        lab.down()


def test_neutron_agent_code_drives_fwsg(agent_lab):
    lab = agent_lab
    groups = {
        "web": [rule("ingress", protocol="tcp", ports=80),
                rule("ingress", "IPv6", protocol="tcp", ports=80)] + ALL_EGRESS,
        "db": [rule("ingress", protocol="tcp", ports=5432, remote_group_id="web"),
               rule("ingress", "IPv6", protocol="tcp", ports=5432, remote_group_id="web")]
        + ALL_EGRESS,
        "egress-80": [rule("egress", protocol="tcp", ports=80)],
    }
    ports = {"vm1": ["web"], "vm2": ["db"], "vm3": ["egress-80"]}
    server = LocalServer(lab, groups, ports)
    ids = {vm: lab.port_ids[vm] for vm in ports}
    flush_conntrack(lab)
    with lab.netns("host"):   # the agent runs on the hypervisor: here, the lab's host namespace
        agent = sg_rpc.SecurityGroupAgentRpc(None, server, defer_refresh_firewall=True)
        drv = agent.firewall
        assert type(drv) is FwsgFirewallDriver      # loaded through the entry point 'fwsg'
        commits = []
        real_commit = drv.firewall.backend.commit
        drv.firewall.backend.commit = \
            lambda plan: (commits.append(plan) if plan else None) or real_commit(plan)

        # the agent's loop: new ports (and a trusted one the server knows nothing about)
        agent.setup_port_filters({ids["vm1"], ids["vm2"], ids["vm3"], "trusted-dhcp-port"},
                                 set())
        assert len(commits) == 1                     # one block, one transaction
        assert set(drv.ports) == set(ids.values())
        assert drv.trusted_ports == ["trusted-dhcp-port"]
        probes = [("tcp_connect", "out", "vm1", {"port": 80}),
                  ("tcp_connect", "out", "vm1", {"port": 22}),
                  ("tcp_connect", "vm1", "vm2", {"port": 5432}),
                  ("tcp_connect", "vm1", "vm2", {"port": 5432, "family": 6}),
                  ("tcp_connect", "vm3", "vm2", {"port": 5432}),
                  ("tcp_connect", "vm3", "vm1", {"port": 80}),
                  ("tcp_connect", "vm3", "out", {"port": 443})]
        assert lab.matrix(probes) == [True, False, True, True, False, True, False]

        # vm3 joins web: the server notifies a member change and a port update
        ports["vm3"] = ["egress-80", "web"]
        agent.security_groups_member_updated(["web"])
        assert agent.firewall_refresh_needed()
        agent.setup_port_filters(set(), {ids["vm3"]})
        assert server.calls[-1] == sorted([ids["vm2"], ids["vm3"]])
        assert lab.matrix(probes[4:6]) == [True, True]

        # a rule is added to web
        groups["web"] = groups["web"] + [rule("ingress", protocol="tcp", ports=22)]
        agent.security_groups_rule_updated(["web"])
        agent.setup_port_filters(set(), set())
        assert lab.tcp_connect("out", "vm1", port=22)
        assert not lab.tcp_connect("out", "vm2", port=22)

        # vm1 is deleted: its filter goes, and with it its membership of web
        n = len(commits)
        del ports["vm1"]
        agent.remove_devices_filter([ids["vm1"], "trusted-dhcp-port"])
        assert len(commits) == n + 1 and ids["vm1"] not in drv.ports
        assert drv.trusted_ports == []
        agent.security_groups_member_updated(["web"])
        agent.setup_port_filters(set(), set())
        assert lab.tcp_connect("out", "vm1", port=23)   # no filter on a port Neutron dropped
        assert not lab.tcp_connect("vm1", "vm2", port=5432)   # no longer a member of web
        assert lab.tcp_connect("vm3", "vm2", port=5432)

        # a full refresh (the agent's resync) changes nothing
        n = len(commits)
        agent.refresh_firewall()
        assert len(commits) == n
