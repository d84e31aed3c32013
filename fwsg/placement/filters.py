"""Hard constraints: the filters a node must pass before any scorer sees it.

Pure: no I/O here. Each filter is ``f(node_state, demand, limits) -> None | str``: ``None`` when
the node may take the demand, else one line saying why not (without the node name, which the
caller prefixes: ``node2: 3.1 GiB free < 8 GiB max memory``). :data:`FILTERS` lists them in the
order they are tried; a node's reported reason is the first that fails.
"""

from __future__ import annotations

from dataclasses import dataclass

from fwsg.quantities import fmt_bytes


@dataclass(frozen=True)
class Limits:
    """The thresholds of the hard constraints (fractions of capacity)."""

    threshold: float = 0.95  # projected cpu and memory usage after placement
    conntrack_threshold: float = 0.95  # projected conntrack entries vs nf_conntrack_max


def online(ns, d, limits):
    """The node is online (failed and offline nodes never get a state; kept for completeness)."""
    return None if ns.node.online else "offline"


def group(ns, d, limits):
    """Every restricted HA group of the unit lists the node."""
    for gr in d.groups:
        if gr.restricted and ns.name not in gr.nodes:
            return f"not in restricted group '{gr.name}'"
    return None


def pinned(ns, d, limits):
    """Affinity: a unit pinned to a node (a rule partner stays there) goes nowhere else."""
    if d.pinned is not None and d.pinned != ns.name:
        return f"{d.pinned_by.label} (affinity) keeps {d.names[0]} with its peers on {d.pinned}"
    return None


def cores(ns, d, limits):
    """The node has at least as many cores as the unit's largest guest."""
    return None if ns.cores >= d.cores else f"{ns.cores} cores < {d.cores} guest cores"


def storages(ns, d, limits):
    """Every storage the unit uses is present on the node."""
    missing = d.storages - ns.node.storages
    return f"missing storage {', '.join(sorted(missing))}" if missing else None


def networks(ns, d, limits):
    """Every network/bridge the unit uses is present on the node."""
    missing = d.networks - ns.node.networks
    return f"missing network {', '.join(sorted(missing))}" if missing else None


def anti_affinity(ns, d, limits):
    """Anti-affinity: no guest the unit must avoid is on the node (staying or placed by the plan)."""
    if d.avoid:
        hit = ns.guests.intersection(d.avoid)
        if hit:
            other = min(hit)
            return f"{d.avoid[other].label} (anti-affinity): {other} is already there"
    return None


def capacity(ns, d, limits):
    """Capacity, checked in this order:

    - memory headroom (total - used - max memory already committed by the plan) >= the unit's
      max memory: a restarted guest must be able to grow to its configured maximum;
    - projected cpu, then memory, usage after placement <= the hard threshold;
    - conntrack entries after placement <= the conntrack threshold of the node's max (not checked
      when the node reported no max).
    """
    free = ns.memory - ns.mem - ns.committed
    if free < d.max_memory:
        return f"{fmt_bytes(max(free, 0))} free < {fmt_bytes(d.max_memory)} max memory"
    t = limits.threshold
    cpu = (ns.cpu + d.cpu) / ns.cores
    if cpu > t:
        return f"cpu would reach {cpu:.0%} of {ns.cores} cores > {t:.0%}"
    mem = (ns.mem + d.mem) / ns.memory
    if mem > t:
        return f"memory would reach {mem:.0%} of {fmt_bytes(ns.memory)} > {t:.0%}"
    if ns.conntrack_max:
        after = ns.conntrack + d.conntrack
        if after > limits.conntrack_threshold * ns.conntrack_max:
            return f"conntrack {after}/{ns.conntrack_max} entries > {limits.conntrack_threshold:.0%}"
    return None


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
