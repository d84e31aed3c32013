"""Hard constraints: the filters a node must pass before any scorer sees it.

Pure: no I/O here. Each filter is ``f(node_state, demand, limits) -> None | str``: ``None`` when
the node may take the demand, else one line saying why not (without the node name, which the
caller prefixes: ``node2: memory room 3.1 GiB < 8 GiB max memory``). :data:`FILTERS` lists them in the
order they are tried; a node's reported reason is the first that fails.
"""

from __future__ import annotations

from fwsg.placement.admission import Limits, cores_reason, group_reason, networks_reason, storages_reason
from fwsg.quantities import fmt_bytes

__all__ = ["FILTERS", "Limits", "fmt_bytes", "reject_reason"]


def online(ns, d, limits):
    """The node is online (failed and offline nodes never get a state; kept for completeness)."""
    return None if ns.node.online else "offline"


def group(ns, d, limits):
    """Every restricted HA group of the unit lists the node."""
    return group_reason(ns.node, d.groups)


def pinned(ns, d, limits):
    """Affinity: a unit pinned to a node (a rule partner stays there) goes nowhere else."""
    if d.pinned is not None and d.pinned != ns.name:
        return f"{d.pinned_by.label} (affinity) keeps {d.names[0]} with its peers on {d.pinned}"
    return None


def cores(ns, d, limits):
    """The node has at least as many cores as the unit's largest guest."""
    return cores_reason(ns.node, d.cores)


def storages(ns, d, limits):
    """Every storage the unit uses is present on the node."""
    return storages_reason(ns.node, d.storages)


def networks(ns, d, limits):
    """Every network/bridge the unit uses is present on the node."""
    return networks_reason(ns.node, d.networks)


def anti_affinity(ns, d, limits):
    """Anti-affinity: no guest the unit must avoid is on the node (staying or placed by the plan)."""
    if d.avoid:
        hit = ns.guests.intersection(d.avoid)
        if hit:
            other = min(hit)
            return f"{d.avoid[other].label} (anti-affinity): {other} is already there"
    return None


def capacity(ns, d, limits):
    """The admission rule (:func:`fwsg.placement.admission.capacity_reason`): memory room for
    the unit's max memory, cpu room when ``--cpu-limit`` makes cpu hard, conntrack room. The
    limits are those the node state was built with."""
    return ns.reason(d)


STATIC_FILTERS = (
    ("online", online),
    ("group", group),
    ("affinity", pinned),
    ("cores", cores),
    ("storage", storages),
    ("network", networks),
)
"""Filters whose answer does not change while the plan grows: evaluated once per kind of unit."""

DYNAMIC_FILTERS = (
    ("anti-affinity", anti_affinity),
    ("capacity", capacity),
)
"""Filters that depend on what the plan already placed: evaluated for every unit."""

FILTERS = STATIC_FILTERS + DYNAMIC_FILTERS
"""(name, filter) in the order they are tried."""


def reject_reason(ns, d, limits):
    """The first failing filter's reason for node state ``ns`` and demand ``d``, or None."""
    for _, f in FILTERS:
        why = f(ns, d, limits)
        if why is not None:
            return why
    return None
