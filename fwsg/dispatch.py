"""Dispatch by destination address for traffic the hypervisor sends or routes to a VM (it has
no port tag): which port's ingress chain judges a packet to an address. Pure, no I/O.

An address or prefix belongs to one port: that port's ingress profile. Several ports may
use the same address (a VIP in their allowed address pairs) or overlapping prefixes: fwsg
cannot know which of them will receive the packet, so it never lets through more than every
one of them allows: ports with the same profile share it; ports whose rules differ get
``drop`` (documented in the README).
"""

import netaddr

DROP = "drop"


def verdict(profiles):
    """The dispatch verdict for an address whose owners have these ingress profiles (a set of
    profile names): None when there is no owner."""
    if not profiles:
        return None
    if len(profiles) == 1:
        return f"jump {next(iter(profiles))}-i"
    return DROP


def prefix_map(owned):
    """``owned``: prefix (canonical ``net/len``, one family) -> set of profile names. The
    interval map's entries: disjoint prefixes -> verdict, covering every owned address (an
    interval map refuses overlapping keys, so overlaps are cut into pieces, each judged by the
    profiles of every prefix covering it)."""
    nets = [(netaddr.IPNetwork(p), frozenset(v)) for p, v in owned.items() if v]
    if not nets:
        return {}
    bounds = sorted({int(n.first) for n, _ in nets} | {int(n.last) + 1 for n, _ in nets})
    version = nets[0][0].version
    pieces = []  # (first, last, verdict), adjacent equal verdicts merged
    for lo, hi in zip(bounds, bounds[1:]):
        covering = set()
        for n, profiles in nets:
            if n.first <= lo <= n.last:
                covering |= profiles
        v = verdict(covering)
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
