"""Security-group rules as nft rule text (one Rule -> one or two rules) or as an element of
their group chain's port set (:func:`port_key`), and which rules the fixed rules every port has
already decide. No I/O; names come from the layout, never from user text.
"""

from fwsg.backends.nft.layout import Names
from fwsg.model import EGRESS, ICMP4, ICMP6, INGRESS

_L4 = {6: "tcp", 17: "udp", 33: "dccp", 132: "sctp", 136: "udplite"}


def render_rule(rule, members_of, verdict="accept", names=Names):
    """nft text for one Rule (a list: a remote group with prefixes needs two rules).

    ``members_of(sg, family)`` returns (hosts, has_prefixes) of a group: whether its prefix
    set exists. ``names`` gives the member sets' names (a Desired's registry)."""
    fam = rule.family
    ipk = "ip" if fam == 4 else "ip6"
    remote_key = "saddr" if rule.direction == INGRESS else "daddr"
    parts = []
    if rule.src:
        parts.append(f"{ipk} saddr {rule.src}")
    if rule.dst:
        parts.append(f"{ipk} daddr {rule.dst}")
    if not parts and rule.remote_group is None:
        parts.append(f"meta nfproto ipv{fam}")
    l4 = []
    p = rule.protocol
    if p in (ICMP4, ICMP6):
        kw = "icmp" if p == ICMP4 else "icmpv6"
        if rule.icmp_type is None:
            l4.append(f"meta l4proto {p}")
        else:
            l4.append(f"{kw} type {rule.icmp_type}")
            if rule.icmp_code is not None:
                l4.append(f"{kw} code {rule.icmp_code}")
    elif p in _L4 and (rule.port_min is not None or rule.sport_min is not None):
        if rule.sport_min is not None:
            l4.append(f"{_L4[p]} sport {_range(rule.sport_min, rule.sport_max)}")
        if rule.port_min is not None:
            l4.append(f"{_L4[p]} dport {_range(rule.port_min, rule.port_max)}")
    elif p is not None:
        l4.append(f"meta l4proto {p}")
    tail = " ".join(l4 + [verdict])
    if rule.remote_group is None:
        return [" ".join(parts + [tail])]
    out = [" ".join(parts + [f"{ipk} {remote_key} @{names.member_set(rule.remote_group, fam)}", tail])]
    _, has_prefixes = members_of(rule.remote_group, fam)
    if has_prefixes:
        out.append(" ".join(parts + [f"{ipk} {remote_key} "
                                     f"@{names.member_set(rule.remote_group, fam, True)}", tail]))
    return out


# The one rule each group chain starts with: a lookup in a set keyed by family, protocol and
# destination port (``th dport``: the same two bytes for every protocol in _L4; a fragment
# after the first has no transport header and matches no element, as with ``tcp dport``).
# A plain set, not a verdict map: the kernel's table validation (at every rule or jump
# added anywhere) walks the elements of every verdict map a chain looks up, never a set's.
PORT_SET_KEY = "nf_proto . inet_proto . inet_service"


def port_set_rule(set_name):
    """The rule of a group chain that accepts what its port set ``set_name`` holds."""
    return f"meta nfproto . meta l4proto . th dport @{set_name} accept"


def port_key(rule):
    """The port set element (``ipv4 . tcp . 8443``) of a group rule that matches nothing but
    a family, a port protocol and one destination port (no source port, no remote prefix or
    group): such a rule is an element of its chain's port set, not a rule of its own (adding
    one is an element change). None for every other rule."""
    p = rule.protocol
    if (p not in _L4 or rule.port_min is None or rule.sport_min is not None
            or rule.remote_group is not None or rule.src or rule.dst
            or (rule.port_max is not None and rule.port_max != rule.port_min)):
        return None
    return f"ipv{rule.family} . {_L4[p]} . {rule.port_min}"


def _range(lo, hi):
    return str(lo) if hi is None or hi == lo else f"{lo}-{hi}"



def subsumed_by_fixed(rule):
    """True when the fixed rules every port has already decide every packet ``rule`` matches
    (Neutron's per-port DHCP reply rules, for instance): such a rule adds nothing."""
    def within(lo, hi, port):
        return lo is not None and lo == port and (hi is None or hi == port)

    if rule.protocol == 17:
        pairs = {(INGRESS, 4): (67, 68), (INGRESS, 6): (547, 546),
                 (EGRESS, 4): (68, 67), (EGRESS, 6): (546, 547)}
        sport, dport = pairs[(rule.direction, rule.family)]
        return within(rule.sport_min, rule.sport_max, sport) and within(
            rule.port_min, rule.port_max, dport)
    if rule.protocol == ICMP6 and rule.direction == EGRESS:
        return True  # every ICMPv6 leaves a VM but RA, which is dropped before any rule
    if rule.protocol == ICMP6 and rule.direction == INGRESS:
        return rule.icmp_type in (130, 135, 136)
    return False
