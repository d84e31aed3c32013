"""Removal of conntrack entries that lost the rule behind them (after a commit, never before).

The table is read and changed inside the managed namespace through ``fast.ConntrackTable``
(libnetfilter_conntrack when compiled; pyroute2 in the pure-Python twin); flows are judged by
``fast.FlowJudge`` on the policy flattened by ``policy.flow_tables``.
"""

from fwsg import fast
from fwsg.netns import entered
from fwsg.policy import flow_tables


def sweep(netns, state, gone_addresses=(), suspects=None):
    """Delete the flows whose original direction ``state`` (a compile.Desired) no longer
    allows, and those of addresses that no longer belong to any port (``gone_addresses``);
    with ``suspects`` (a set of addresses) only flows involving them are judged. Returns how
    many were deleted.

    One pass: the kernel dumps the table (only the suspects' families when that narrows it;
    it walks its whole hash table for every dump), each flow is judged as it arrives (hash
    lookups, whatever the groups' sizes) and the doomed ones are deleted in batches while the
    dump goes on."""
    judge = fast.FlowJudge(flow_tables(state))
    look = None if suspects is None else set(suspects)
    with entered(netns):
        table = fast.ConntrackTable()
        try:
            _judged, deleted = table.sweep(judge, look, set(gone_addresses))
            return deleted
        finally:
            table.close()
