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


def sweep(netns, model, gone_addresses=(), suspects=None):
    """Delete the entries whose original direction the model no longer allows, and those of
    addresses that no longer belong to any port (``gone_addresses``); with ``suspects`` (a set
    of addresses) only entries involving them are judged. Returns how many were deleted.

    One dump for both families: the kernel walks its whole (global) conntrack hash table for
    a dump, ~10 ms here whatever the filter, so fwsg dumps once and filters itself."""
    from pyroute2 import Conntrack

    index = PortIndex(model)
    gone = set(gone_addresses)
    look = None if suspects is None else set(suspects) | gone
    doomed = []
    with entered(netns):  # pyroute2 opens its sockets lazily: stay inside while using them
        ct = Conntrack(nfgen_family=socket.AF_UNSPEC)
        try:
            for entry in ct.dump_entries():
                t = entry.tuple_orig
                if t is None or t.saddr is None:
                    continue
                if look is not None and t.saddr not in look and t.daddr not in look:
                    continue
                if t.saddr in gone or t.daddr in gone:
                    doomed.append(entry)
                elif index.port_of(t.saddr) is None and index.port_of(t.daddr) is None:
                    continue
                elif not index.flow_allowed(_packet(t)):
                    doomed.append(entry)
        finally:
            ct.close()
        killed = 0
        for family in (socket.AF_INET, socket.AF_INET6):
            mine = [e for e in doomed if e.tuple_orig.family == family]
            if not mine:
                continue
            ct = Conntrack(nfgen_family=family)
            try:
                for entry in mine:
                    try:
                        ct.delete(entry)
                        killed += 1
                    except Exception:  # already gone (timed out or deleted concurrently)
                        pass
            finally:
                ct.close()
    return killed
