"""Removal of conntrack entries that lost the rule behind them (after a commit, never before).

The table is read and changed inside the managed namespace through ``fast.ConntrackTable``
(libnetfilter_conntrack when compiled; pyroute2 in the pure-Python twin); flows are judged by
``fast.FlowJudge`` on the policy flattened by ``policy.flow_tables``. With conntrack zones
(one per network, see docs/design.md) a flow is judged by the policy of its zone's ports
only, and an address counts as gone in a zone only when no port of that zone still has it:
two networks using the same addresses never cut each other's flows.
"""

from types import SimpleNamespace

from fwsg import fast
from fwsg.model import host_addresses
from fwsg.netns import entered
from fwsg.policy import flow_tables


def port_zones(state):
    """port id -> conntrack zone of ``state`` (a backend's Desired); empty when every port is
    in the default zone 0. No I/O here."""
    zones = getattr(state, "port_zone", None)
    if zones is not None:
        return zones
    zone_of = getattr(state, "zone_of", None) or {}
    return {pid: zone_of[p.network_id] for pid, p in state.ports.items()
            if p.network_id in zone_of}


def zone_judges(state, gone_addresses):
    """zone -> (FlowJudge, addresses gone in that zone) for every zone ``state``'s ports use,
    or None when all are in zone 0 (one judge for the whole table). Each judge holds only its
    zone's ports and their groups' rules: O(ports + their rules) in all. No I/O here."""
    zones = port_zones(state)
    if not zones:
        return None
    by_zone = {}
    for pid, port in state.ports.items():
        by_zone.setdefault(zones.get(pid, 0), {})[pid] = port
    out = {}
    for z, ports in by_zone.items():
        used = {sg for p in ports.values() for sg in p.security_groups if sg in state.groups}
        view = SimpleNamespace(ports=ports, groups={sg: state.groups[sg] for sg in used},
                               members=state.members, prefix_members=state.prefix_members)
        owned = {ip for p in ports.values() for ip in host_addresses(p)}
        out[z] = (fast.FlowJudge(flow_tables(view)), set(gone_addresses) - owned)
    return out


def sweep(netns, state, gone_addresses=(), suspects=None):
    """Delete the flows whose original direction ``state`` (a compile.Desired) no longer
    allows, and those of addresses that no longer belong to any port (``gone_addresses``);
    with ``suspects`` (a set of addresses) only flows involving them are judged. Returns how
    many were deleted. A flow is judged in its conntrack zone (see :func:`zone_judges`); flows
    of a zone no port uses any more lose only their gone addresses' flows.

    One pass: the kernel dumps the table (only the suspects' families when that narrows it;
    it walks its whole hash table for every dump), each flow is judged as it arrives (hash
    lookups, whatever the groups' sizes) and the doomed ones are deleted in batches while the
    dump goes on."""
    zones = zone_judges(state, gone_addresses)
    judge = fast.FlowJudge(flow_tables(state)) if zones is None else None
    look = None if suspects is None else set(suspects)
    with entered(netns):
        table = fast.ConntrackTable()
        try:
            if zones is None:
                _judged, deleted = table.sweep(judge, look, set(gone_addresses))
            else:
                _judged, deleted = table.sweep(None, look, set(gone_addresses), zones)
            return deleted
        finally:
            table.close()
