"""A lab in Neutron's hybrid layout (Open vSwitch agent with ``iptables_hybrid``-style plugging).

Topology, all in the hypervisor namespace ``fwsg-<lab>-host``::

    VM eth0 <-veth-> tapXXXXXXXXXXX -- qbrXXXXXXXXXXX (one Linux bridge per port)
                                         |
                                       qvbXXXXXXXXXXX <-veth-> qvoXXXXXXXXXXX -- br-int
    outside eth0 <-veth-> up-out ------------------------------------------------ br-int

``XXXXXXXXXXX`` is the first 11 characters of the Neutron port id, as Nova/os-vif name them.
``br-int`` is a Linux bridge standing in for Open vSwitch's integration bridge (it carries the
hypervisor's own addresses, so host<->VM traffic can be probed). Because it is a Linux bridge,
bridged frames cross the netfilter hooks on br-int as well as on both per-port bridges; with
OVS they would cross them on the per-port bridges only. Everything else (namespaces, probes,
teardown) is :class:`fwsg.lab.Lab`'s.
"""

from fwsg.lab import Lab, LabError
from fwsg.lab.topology import _run

INTEGRATION_BRIDGE = "br-int"


def hybrid_names(port_id):
    """(tap, qbr, qvb, qvo) of a Neutron port id, as the hybrid plugging names them."""
    short = port_id[:11]
    return f"tap{short}", f"qbr{short}", f"qvb{short}", f"qvo{short}"


class HybridLab(Lab):
    """A :class:`Lab` whose VMs are plugged the hybrid way: each VM's tap is the only port of
    its own bridge ``qbr…``, joined to ``br-int`` by the veth pair ``qvb…``/``qvo…``.

    Declare VMs with ``add_vm(name, port_id, ...)``; ``port_ids`` maps VM name -> port id."""

    def __init__(self, name, **kwargs):
        kwargs.setdefault("bridge", INTEGRATION_BRIDGE)
        super().__init__(name, **kwargs)
        self.port_ids = {}

    def add_vm(self, name, port_id=None, mac=None, ipv4=(), ipv6=(), tap=None):
        """Declare a VM plugged through a per-port bridge; ``port_id`` (at least 11 characters
        of [0-9a-f-]) names its devices."""
        if not isinstance(port_id, str) or len(port_id) < 11:
            raise LabError(f"port_id must be a Neutron port id (>= 11 characters), not "
                           f"{port_id!r}")
        node = super().add_vm(name, mac=mac, ipv4=ipv4, ipv6=ipv6,
                              tap=hybrid_names(port_id)[0])
        self.port_ids[name] = port_id
        return node

    def _build(self):
        super()._build()  # every tap on br-int for now; re-plugged below, before any traffic
        cmds = []
        for vm, pid in self.port_ids.items():
            tap, qbr, qvb, qvo = hybrid_names(pid)
            cmds += [f"link add {qbr} type bridge stp_state 0 forward_delay 0 mcast_snooping 0",
                     f"link set {qbr} up",
                     f"link add {qvb} type veth peer name {qvo}",
                     f"link set {tap} nomaster",
                     f"link set {tap} master {qbr}",
                     f"link set {qvb} master {qbr} up",
                     f"link set {qvo} master {self.bridge} up"]
        if cmds:
            _run(["ip", "-n", self.host_ns, "-batch", "-"], input="\n".join(cmds) + "\n")

    def bridge_of(self, vm):
        """The interface the VM's tap is enslaved to (read back from the kernel)."""
        out = self.ip("host", "-o", "link", "show", "dev", self.node(vm).tap)
        words = out.split()
        return words[words.index("master") + 1] if "master" in words else None


def dhcp_rules(node):
    """The per-port rules Neutron's server adds to a port (DHCP and DHCPv6 replies, router
    advertisements), as its ``security_group_info_for_devices`` reply carries them."""
    rules = [{"direction": "ingress", "ethertype": "IPv6", "protocol": "ipv6-icmp",
              "source_port_range_min": 134}]
    for ip in node.ipv4:
        rules.append({"direction": "ingress", "ethertype": "IPv4", "protocol": "udp",
                      "port_range_min": 68, "port_range_max": 68, "source_port_range_min": 67,
                      "source_port_range_max": 67, "dest_ip_prefix": f"{ip}/32"})
    for ip in node.ipv6:
        rules.append({"direction": "ingress", "ethertype": "IPv6", "protocol": "udp",
                      "port_range_min": 546, "port_range_max": 546,
                      "source_port_range_min": 547, "source_port_range_max": 547,
                      "dest_ip_prefix": f"{ip}/128"})
    return rules


def neutron_reply(lab, groups, ports, members=None, **port_extra):
    """Neutron's ``security_group_info_for_devices`` reply for the lab's VMs: ``ports`` maps VM
    name -> its groups; devices are keyed by port id (``device`` = the port id, as the Open
    vSwitch agent asks); members are ``[ip, mac]`` pairs of the ports of each group (remote
    groups only, as the server sends them), plus ``members`` (group -> extra addresses).
    ``port_extra`` maps VM name -> fields to override."""
    devices = {}
    remote = {r["remote_group_id"] for rules in groups.values() for r in rules
              if r.get("remote_group_id")}
    mem = {sg: {"IPv4": [], "IPv6": []} for sg in remote}
    for vm, sgs in ports.items():
        node, pid = lab.node(vm), lab.port_ids[vm]
        devices[pid] = {
            "id": pid, "device": pid, "device_owner": "compute:nova", "mac_address": node.mac,
            "fixed_ips": list(node.ipv4) + list(node.ipv6), "allowed_address_pairs": [],
            "security_groups": list(sgs),
            "security_group_source_groups": sorted(  # remote groups its rules name
                {r["remote_group_id"] for sg in sgs for r in groups[sg]
                 if r.get("remote_group_id")}),
            "port_security_enabled": True, "security_group_rules": dhcp_rules(node),
            "network_id": "4d8f7c5e-0000-4000-8000-000000000001"}
        devices[pid].update(port_extra.get(vm, {}))
        for sg in set(sgs) & remote:
            mem[sg]["IPv4"] += [[ip, node.mac] for ip in node.ipv4]
            mem[sg]["IPv6"] += [[ip, node.mac] for ip in node.ipv6]
    for sg, extra in (members or {}).items():
        for ip in extra:
            mem.setdefault(sg, {"IPv4": [], "IPv6": []})["IPv6" if ":" in ip else "IPv4"].append(
                [ip, None])
    used = {sg for sgs in ports.values() for sg in sgs}
    return {"security_groups": {sg: groups[sg] for sg in used}, "sg_member_ips": mem,
            "devices": devices}
