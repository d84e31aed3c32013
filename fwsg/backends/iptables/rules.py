"""Model rules -> iptables/ip6tables rule text (the part after ``-A CHAIN``). No I/O here.

Allowed packets are ACCEPTed: egress and ingress are separate table traversals (mangle for a
port's egress, filter for its ingress), so an ACCEPT in a shared group chain ends only its own
direction's check, and a group chain that matches nothing returns to the port's profile.
"""

from fwsg.backends.iptables import names
from fwsg.errors import ValidationError
from fwsg.model import EGRESS, ICMP4, ICMP6, INGRESS

_L4 = {6: "tcp", 17: "udp", 33: "dccp", 132: "sctp"}
# names iptables knows without /etc/protocols; every other protocol by number
_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp", 132: "sctp", 136: "udplite"}
STATE = ("-m conntrack --ctstate INVALID -j DROP",
         "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")


def _range(lo, hi):
    return str(lo) if hi is None or hi == lo else f"{lo}:{hi}"


def check(path, rule):
    """Refuse what iptables cannot say exactly (ValidationError naming ``path``): protocol 0
    means "any protocol" to iptables (``-p 0``), not IPv4 protocol 0 / IPv6 hop-by-hop."""
    if rule.protocol == 0:
        raise ValidationError(f"{path}.protocol", "0 cannot be matched by the iptables backend "
                              "(iptables reads -p 0 as any protocol)")


def render(rule, verdict="ACCEPT"):
    """iptables text for one model Rule (its family's table decides iptables/ip6tables)."""
    parts = []
    if rule.src:
        parts.append(f"-s {rule.src}")
    if rule.dst:
        parts.append(f"-d {rule.dst}")
    p = rule.protocol
    if p is not None:
        parts.append(f"-p {_NAMES.get(p, p)}")
    if p in (ICMP4, ICMP6):
        if rule.icmp_type is not None:
            code = "" if rule.icmp_code is None else f"/{rule.icmp_code}"
            parts.append(f"-m icmp --icmp-type {rule.icmp_type}{code}" if p == ICMP4
                         else f"-m icmp6 --icmpv6-type {rule.icmp_type}{code}")
    elif p in _L4 and (rule.port_min is not None or rule.sport_min is not None):
        ports = [f"-m {_L4[p]}"]
        if rule.sport_min is not None:
            ports.append(f"--sport {_range(rule.sport_min, rule.sport_max)}")
        if rule.port_min is not None:
            ports.append(f"--dport {_range(rule.port_min, rule.port_max)}")
        parts.append(" ".join(ports))
    elif p == 136 and (rule.port_min is not None or rule.sport_min is not None):
        if rule.sport_min is not None:  # udplite has no match of its own: multiport knows it
            parts.append(f"-m multiport --sports {_range(rule.sport_min, rule.sport_max)}")
        if rule.port_min is not None:
            parts.append(f"-m multiport --dports {_range(rule.port_min, rule.port_max)}")
    if rule.remote_group is not None:
        side = "src" if rule.direction == INGRESS else "dst"
        parts.append(f"-m set --match-set {names.member_set(rule.remote_group, rule.family)} {side}")
    parts.append(f"-j {verdict}")
    return " ".join(parts)


def fixed_rules(direction, stateful, family):
    """The rules every filtered port has in ``direction`` before its groups' rules."""
    out = list(STATE) if stateful else []
    if direction == EGRESS:
        if family == 4:
            out += ["-p udp -m udp --sport 67 --dport 68 -j DROP",      # DHCP server from a VM
                    "-p udp -m udp --sport 68 --dport 67 -j ACCEPT"]    # DHCP client
        else:
            out += ["-p udp -m udp --sport 547 --dport 546 -j DROP",    # DHCPv6 server
                    "-p ipv6-icmp -m icmp6 --icmpv6-type 134 -j DROP",  # RA from a VM
                    "-p udp -m udp --sport 546 --dport 547 -j ACCEPT",  # DHCPv6 client
                    "-p ipv6-icmp -j ACCEPT"]                           # ND, DAD, MLD, ping6
    else:
        if family == 4:
            out += ["-p udp -m udp --sport 67 --dport 68 -j ACCEPT"]    # DHCP replies
        else:
            out += [f"-p ipv6-icmp -m icmp6 --icmpv6-type {t} -j ACCEPT" for t in (130, 135, 136)]
            out += ["-p udp -m udp --sport 547 --dport 546 -j ACCEPT"]  # DHCPv6 replies
    return out


def egress_rules(port, family, device, egress_profile):
    """A port's source checks, one rule per (address, MAC) pair: traffic from its device with
    that source goes on to its egress profile. Written as ``iptables-save`` prints them (the
    dispatch chains are compared rule by rule); a whole-family pair matches any source."""
    out = []
    for ip, mac in port.addresses(family):
        src = "" if ip in ("0.0.0.0/0", "::/0") else f"-s {_host(ip, family)} "
        out.append(f"{src}-m physdev --physdev-in {device} -m mac --mac-source {mac} "
                   f"-j {egress_profile}")
    return out


def unspec_rules(family):
    """Shared by every port: what may leave a VM from the unspecified address (DHCP
    discovery; DAD and MLD reports); everything else from a wrong source drops (the chain's
    final rule)."""
    if family == 4:
        return ["-s 0.0.0.0/32 -d 255.255.255.255/32 -p udp -m udp --sport 68 --dport 67 "
                "-j ACCEPT"]
    return [f"-s ::/128 -p ipv6-icmp -m icmp6 --icmpv6-type {t} -j ACCEPT"
            for t in (135, 131, 143)]  # NS (DAD), MLD report, MLDv2 report


def arp_rules(port):
    """ebtables rules of a port's frames: ARP only from its IPv4 addresses with their MAC (and
    probes from 0.0.0.0), every frame only from its MACs; the chain's final rule drops."""
    out = []
    macs = sorted({port.mac} | {p.mac for p in port.allowed_address_pairs})
    for ip, mac in port.addresses(4):
        out.append(f"-p ARP -s {mac} --arp-ip-src {ip} --arp-mac-src {mac} -j RETURN")
    for mac in macs:
        out.append(f"-p ARP -s {mac} --arp-ip-src 0.0.0.0 --arp-mac-src {mac} -j RETURN")
    out.append("-p ARP -j DROP")
    for mac in macs:
        out.append(f"-s {mac} -j RETURN")
    return out


def _host(ip, family):
    return ip if "/" in ip else f"{ip}/{32 if family == 4 else 128}"
