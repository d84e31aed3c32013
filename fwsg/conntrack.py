"""Removal of conntrack entries that lost the rule behind them (after a commit, never before).

The table is read and changed inside the managed namespace through ``fast.ConntrackTable``
(libnetfilter_conntrack when compiled; pyroute2 in the pure-Python twin).
"""

from fwsg import fast
from fwsg.netns import entered
from fwsg.policy import Packet, PortIndex


def _packet(flow):
    fam, l4, src, dst, sport, dport, itype, icode, _iid, _zone = flow
    return Packet(fam, l4, src, dst, sport, dport, itype, icode)


def sweep(netns, model, gone_addresses=(), suspects=None):
    """Delete the flows whose original direction the model no longer allows, and those of
    addresses that no longer belong to any port (``gone_addresses``); with ``suspects`` (a set
    of addresses) only flows involving them are judged. Returns how many were deleted.

    One dump for both families (the kernel walks its whole conntrack hash table for every dump,
    ~10 ms here whatever the filter); the compiled hot path parses it at C speed."""
    index = PortIndex(model)
    gone = set(gone_addresses)
    look = None if suspects is None else set(suspects) | gone
    with entered(netns):
        table = fast.ConntrackTable()
        try:
            doomed = []
            for flow in table.dump():
                src, dst = flow[2], flow[3]
                if look is not None and src not in look and dst not in look:
                    continue
                if src in gone or dst in gone:
                    doomed.append(flow)
                elif index.port_of(src) is None and index.port_of(dst) is None:
                    continue
                elif not index.flow_allowed(_packet(flow)):
                    doomed.append(flow)
            return table.delete(doomed) if doomed else 0
        finally:
            table.close()
