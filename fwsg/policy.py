"""What the model says about one packet: the reference semantics, in plain Python.

Used to decide which conntrack entries lost their rule, and by the demo to print what the model
expects next to what real packets did. It mirrors the compiled chains (the fixed per-port rules,
then group rules, then per-port rules; default drop) but knows nothing of nft. No I/O here.
"""

import functools
from dataclasses import dataclass
from typing import Optional

import netaddr

from fwsg.addr import is_prefix, pack
from fwsg.model import EGRESS, ICMP6, INGRESS

_PORT_PROTOS = {6, 17, 33, 132, 136}


@dataclass(frozen=True)
class Packet:
    """The first packet of a flow, as conntrack's original tuple sees it."""

    family: int
    proto: int
    src: str
    dst: str
    sport: Optional[int] = None
    dport: Optional[int] = None
    icmp_type: Optional[int] = None
    icmp_code: Optional[int] = None


def _fixed_verdict(direction, pkt):
    """True/False from the fixed rules every filtered port has, None to go on to the groups."""
    udp = pkt.proto == 17
    if direction == EGRESS:
        if udp and ((pkt.sport, pkt.dport) in ((67, 68), (547, 546))):
            return False
        if pkt.proto == ICMP6 and pkt.icmp_type == 134:
            return False
        if udp and ((pkt.sport, pkt.dport) in ((68, 67), (546, 547))):
            return True
        if pkt.proto == ICMP6:
            return True
    else:
        if pkt.proto == ICMP6 and pkt.icmp_type in (130, 135, 136):
            return True
        if udp and ((pkt.sport, pkt.dport) in ((67, 68), (547, 546))):
            return True
    return None


def _in(addr, prefix):
    return netaddr.IPAddress(addr) in netaddr.IPNetwork(prefix)


def _member(addr, members):
    """``addr`` (canonical) is one of the members or inside one of their prefixes."""
    if addr in members:
        return True
    return any(_in(addr, m) for m in members if is_prefix(m))


def rule_matches(model, rule, pkt):
    """True when ``rule`` (for its own direction) allows ``pkt``."""
    if rule.family != pkt.family:
        return False
    if rule.src and not _in(pkt.src, rule.src):
        return False
    if rule.dst and not _in(pkt.dst, rule.dst):
        return False
    if rule.remote_group is not None:
        remote = pkt.src if rule.direction == INGRESS else pkt.dst
        if not _member(remote, model.members_of(rule.remote_group, rule.family)):
            return False
    if rule.protocol is not None and rule.protocol != pkt.proto:
        return False
    if rule.icmp_type is not None and rule.icmp_type != pkt.icmp_type:
        return False
    if rule.icmp_code is not None and rule.icmp_code != pkt.icmp_code:
        return False
    if rule.port_min is not None and not (pkt.dport is not None
                                          and rule.port_min <= pkt.dport <= rule.port_max):
        return False
    if rule.sport_min is not None and not (pkt.sport is not None
                                           and rule.sport_min <= pkt.sport <= rule.sport_max):
        return False
    return True


def allows(model, port, direction, pkt):
    """True when ``port`` lets ``pkt`` pass in ``direction`` ('ingress' = to the port)."""
    if not port.port_security:
        return True
    fixed = _fixed_verdict(direction, pkt)
    if fixed is not None:
        return fixed
    for sg in port.security_groups:
        for rule in model.groups.get(sg, ()):
            if rule.direction == direction and rule_matches(model, rule, pkt):
                return True
    return any(r.direction == direction and rule_matches(model, r, pkt) for r in port.rules)


class PortIndex:
    """Which port owns an address (fixed IPs, address pairs), for one model."""

    def __init__(self, model):
        self.model = model
        self.hosts = {}
        self.prefixes = []
        for port in model.ports.values():
            for fam in (4, 6):
                for ip, _mac in port.addresses(fam):
                    if is_prefix(ip):
                        self.prefixes.append((netaddr.IPNetwork(ip), port))
                    else:
                        self.hosts.setdefault(str(netaddr.IPAddress(ip)), port)

    def port_of(self, addr):
        if addr is None:
            return None
        key = str(netaddr.IPAddress(addr))
        if key in self.hosts:
            return self.hosts[key]
        ip = netaddr.IPAddress(addr)
        for net, port in self.prefixes:
            if ip in net:
                return port
        return None

    def flow_allowed(self, pkt):
        """True when the flow's first packet passes the sender's egress and receiver's ingress."""
        src, dst = self.port_of(pkt.src), self.port_of(pkt.dst)
        if src is not None and not allows(self.model, src, EGRESS, pkt):
            return False
        if dst is not None and not allows(self.model, dst, INGRESS, pkt):
            return False
        return True


# -- the same semantics, flattened for the compiled flow judge (fast.FlowJudge) ---------------

@functools.lru_cache(maxsize=65536)
def _net(prefix):
    """(packed network, prefix length) of a canonical prefix, or None (cached: the same
    prefixes recur in every flattening, one per conntrack zone)."""
    if prefix is None:
        return None
    net = netaddr.IPNetwork(prefix)
    width = 4 if net.version == 4 else 16
    return net.network.packed.ljust(width, b"\0"), net.prefixlen


def _rule_row(rule, direction, group_index):
    def num(v):
        return -1 if v is None else v

    return (direction, rule.family, num(rule.protocol), num(rule.port_min), num(rule.port_max),
            num(rule.sport_min), num(rule.sport_max), num(rule.icmp_type), num(rule.icmp_code),
            _net(rule.src), _net(rule.dst), group_index(rule.remote_group, rule.family)
            if rule.remote_group is not None else -1)


def flow_tables(state):
    """The policy of ``state`` (a compile.Desired: ``ports``, ``groups``, ``members``,
    ``prefix_members``) as plain tables for ``fast.FlowJudge``; O(ports + rules), never
    O(members): member sets are shared, not copied. No I/O here.

    (rules, ports, hosts, port_prefixes, groups):
    - rules: tuples (direction 0 egress / 1 ingress, family, proto, port min, port max, source
      port min, source port max, icmp type, icmp code, src net, dst net, group index); -1 for
      "any", nets are (packed network, prefix length) or None;
    - ports: (port security, egress ranges, ingress ranges), ranges [(start, end)] into rules;
    - hosts: packed host address -> port index; port_prefixes: [(packed, length, port index)];
    - groups: [(member set of canonical text, [(packed, length) of its prefixes])].
    """
    rules, groups, gindex = [], [], {}

    def group_index(sg, fam):
        key = (sg, fam)
        if key not in gindex:
            gindex[key] = len(groups)
            groups.append((state.members.get(key, frozenset()),
                           [_net(p) for p in sorted(state.prefix_members.get(key, ()))]))
        return gindex[key]

    def add(rule_list):
        ranges = []
        for direction, name in ((0, EGRESS), (1, INGRESS)):
            start = len(rules)
            rules.extend(_rule_row(r, direction, group_index) for r in rule_list
                         if r.direction == name)
            ranges.append((start, len(rules)))
        return ranges

    by_group = {sg: add(rs) for sg, rs in state.groups.items()}
    ports, hosts, prefixes = [], {}, []
    for port in state.ports.values():
        idx = len(ports)
        own = add(port.rules) if port.rules else [(0, 0), (0, 0)]
        eg = [by_group[sg][0] for sg in port.security_groups if sg in by_group] + [own[0]]
        ig = [by_group[sg][1] for sg in port.security_groups if sg in by_group] + [own[1]]
        ports.append((port.port_security, [r for r in eg if r[0] < r[1]],
                      [r for r in ig if r[0] < r[1]]))
        for fam in (4, 6):
            for ip, _mac in port.addresses(fam):
                if is_prefix(ip):
                    prefixes.append((*_net(ip), idx))
                else:
                    hosts.setdefault(pack(ip), idx)
    return rules, ports, hosts, prefixes, groups
