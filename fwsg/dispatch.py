"""Dispatch by destination address for traffic the hypervisor sends or routes to a VM (it has
no port tag): which port's ingress chain judges a packet to an address. Pure, no I/O.

An address or prefix belongs to one port: that port's ingress profile. Several ports may
use the same address (a VIP in their allowed address pairs) or overlapping prefixes: fwsg
cannot know which of them will receive the packet, so it never lets through more than every
one of them allows: ports with the same profile share it (the address goes to the lowest of
their port numbers: its ingress chain is theirs); ports whose rules differ get
:data:`AMBIGUOUS`, a number no port has, whose ingress is ``drop`` (documented in the README).
"""

import netaddr

from fwsg.portnum import MAX_PORT_ID

AMBIGUOUS = MAX_PORT_ID + 1   # the receiver of an address whose owners' profiles differ: drop


def receiver(owners):
    """The port number whose ingress judges traffic to an address owned by ``owners`` (a set
    of (ingress profile, port number) pairs): None when there is no owner, the lowest number
    when they share one profile, else :data:`AMBIGUOUS`."""
    if not owners:
        return None
    if len({profile for profile, _ in owners}) == 1:
        return min(n for _, n in owners)
    return AMBIGUOUS


def prefix_map(owned):
    """``owned``: prefix (canonical ``net/len``, one family) -> set of (profile, port number)
    pairs. The interval map's entries: disjoint prefixes -> :func:`receiver`, covering every
    owned address (an interval map refuses overlapping keys, so overlaps are cut into pieces,
    each judged by the owners of every prefix covering it)."""
    nets = [(netaddr.IPNetwork(p), frozenset(v)) for p, v in owned.items() if v]
    if not nets:
        return {}
    bounds = sorted({int(n.first) for n, _ in nets} | {int(n.last) + 1 for n, _ in nets})
    version = nets[0][0].version
    pieces = []  # (first, last, verdict), adjacent equal verdicts merged
    for lo, hi in zip(bounds, bounds[1:]):
        covering = set()
        for n, owners in nets:
            if n.first <= lo <= n.last:
                covering |= owners
        v = receiver(covering)
        if v is None:
            continue
        if pieces and pieces[-1][1] + 1 == lo and pieces[-1][2] == v:
            pieces[-1] = (pieces[-1][0], hi - 1, v)
        else:
            pieces.append((lo, hi - 1, v))
    out = {}
    for lo, hi, v in pieces:
        for cidr in netaddr.iprange_to_cidrs(netaddr.IPAddress(lo, version),
                                             netaddr.IPAddress(hi, version)):
            out[str(cidr)] = v
    return out
