"""Removal of conntrack entries that lost the rule behind them (after a commit, never before).

Speaks conntrack netlink through pyroute2 inside the managed namespace.
"""

import socket

from fwsg.netns import entered

from fwsg.policy import Packet, PortIndex

_FAMILY = {socket.AF_INET: 4, socket.AF_INET6: 6}


def _packet(t):
    return Packet(_FAMILY.get(t.family, 4), t.proto, t.saddr, t.daddr,
                  t.sport if t.proto != 1 and t.proto != 58 else None,
                  t.dport if t.proto != 1 and t.proto != 58 else None,
                  getattr(t, "icmp_type", None), None)


def sweep(netns, model, gone_addresses=()):
    """Delete the entries whose original direction the model no longer allows, and those of
    addresses that no longer belong to any port (``gone_addresses``). Returns how many."""
    from pyroute2 import Conntrack

    index = PortIndex(model)
    gone = set(gone_addresses)
    killed = 0
    with entered(netns):  # pyroute2 opens its socket lazily: stay inside while using it
        for nfgen_family in (socket.AF_INET, socket.AF_INET6):
            killed += _sweep_family(Conntrack(nfgen_family=nfgen_family), index, gone)
    return killed


def _sweep_family(ct, index, gone):
    """Sweep one address family's table with socket ``ct`` (closed afterwards)."""
    killed = 0
    try:
        for entry in list(ct.dump_entries()):
            t = entry.tuple_orig
            if t is None or t.saddr is None:
                continue
            if t.saddr in gone or t.daddr in gone:
                drop = True
            elif index.port_of(t.saddr) is None and index.port_of(t.daddr) is None:
                continue
            else:
                drop = not index.flow_allowed(_packet(t))
            if drop:
                try:
                    ct.delete(entry)
                    killed += 1
                except Exception:  # already gone (timed out or deleted concurrently)
                    pass
    finally:
        ct.close()
    return killed
