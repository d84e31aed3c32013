"""The recovery planner: where the guests of failed nodes go.

Pure: no I/O here. :func:`plan_recovery` filters nodes by the hard constraints
(:mod:`fwsg.placement.filters`), keeps the highest HA-group priority tier, ranks what is left with
a strategy (:mod:`fwsg.placement.scorers`), breaks ties by node name, and accounts every decision
before the next (:mod:`fwsg.placement.state`). The same input always gives the same plan.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fwsg.errors import ValidationError
from fwsg.placement.filters import DYNAMIC_FILTERS, STATIC_FILTERS, Limits
from fwsg.placement.scorers import DEFAULT_STRATEGY, STRATEGIES, Context
from fwsg.placement.state import USES, Demand, NodeState, z_for


@dataclass
class Placement:
    """The decision for one guest: ``target`` is None when it cannot be placed.

    ``rejected`` maps every node that was not chosen for a reason to that reason (one line; in no
    particular order, :meth:`RecoveryPlan.to_dict` orders it like the nodes);
    ``unit`` lists the guests placed together with it (affinity), itself included.
    """

    guest: str
    source: str
    target: str | None
    unit: tuple
    score: float | None = None
    rejected: dict = field(default_factory=dict)

    @property
    def placed(self):
        return self.target is not None


@dataclass
class NodeLoad:
    """A node before and after the plan: usage per the ``use`` statistic, and guest counts."""

    name: str
    status: str  # online | offline | failed
    cores: int
    memory: int
    cpu_before: float
    cpu_after: float
    mem_before: float
    mem_after: float
    committed: float  # max memory of guests placed here
    guests_before: int
    guests_after: int
    placed: list = field(default_factory=list)

    @property
    def cpu_frac(self):
        return self.cpu_after / self.cores

    @property
    def mem_frac(self):
        return self.mem_after / self.memory


@dataclass
class RecoveryPlan:
    """A recovery plan: one :class:`Placement` per guest of the failed nodes (decision order) and
    the projected load of every node after it."""

    strategy: str
    failed: tuple
    use: str
    peak_key: str
    limits: Limits
    placements: list
    nodes: list
    seconds: float = 0.0
    fallback: str | None = None  # the strategy whose pass was kept because it placed more


    @property
    def placed(self):
        return [p for p in self.placements if p.placed]

    @property
    def unplaced(self):
        return [p for p in self.placements if not p.placed]

    def target_of(self):
        """guest name -> target node (placed guests only)."""
        return {p.guest: p.target for p in self.placements if p.placed}

    def to_dict(self):
        """The plan as JSON-ready data (the ``fwsg place --json`` document)."""
        return {
            "schema": "fwsg.plan/1",
            "strategy": self.strategy,
            **({"fallback": self.fallback} if self.fallback else {}),
            "failed": list(self.failed),
            "use": self.use if self.use != "peak" else self.peak_key,
            "threshold": self.limits.threshold,
            "placed": len(self.placed),
            "unplaced": len(self.unplaced),
            "seconds": round(self.seconds, 6),
            "placements": [
                {"guest": p.guest, "from": p.source, "to": p.target,
                 **({"score": round(p.score, 6)} if p.score is not None else {}),
                 **({"with": [u for u in p.unit if u != p.guest]} if len(p.unit) > 1 else {}),
                 "rejected": {n.name: p.rejected[n.name] for n in self.nodes if n.name in p.rejected}}
                for p in self.placements
            ],
            "nodes": [
                {"name": n.name, "status": n.status, "cores": n.cores, "memory": n.memory,
                 "cpu": {"before": round(n.cpu_before, 3), "after": round(n.cpu_after, 3)},
                 "memory_used": {"before": int(n.mem_before), "after": int(n.mem_after)},
                 "committed": int(n.committed),
                 "guests": {"before": n.guests_before, "after": n.guests_after},
                 "placed": list(n.placed)}
                for n in self.nodes
            ],
        }


def _units(cluster, moving, failed):
    """Group the moving guests into units bound by affinity rules, with pins and avoid-sets.

    Returns a list of (guests, pinned node or None, pinning rule, avoid {guest: rule}, conflict).
    """
    parent = {g.name: g.name for g in moving}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for r in cluster.rules:
        if r.kind == "affinity":
            members = [m for m in r.guests if m in parent]
            for m in members[1:]:
                parent[find(m)] = find(members[0])
    comps = {}
    for g in moving:
        comps.setdefault(find(g.name), []).append(g)
    out = []
    for guests in comps.values():
        names = {g.name for g in guests}
        pinned = pinned_by = None
        avoid = {}
        conflict = None
        for r in cluster.rules:
            if not names.intersection(r.guests):
                continue
            if r.kind == "affinity" and pinned is None:
                for m in r.guests:
                    node = cluster.guests[m].node
                    if m not in names and node not in failed:
                        pinned, pinned_by = node, r
                        break
            elif r.kind == "anti-affinity":
                inside = names.intersection(r.guests)
                if len(inside) > 1:
                    conflict = f"{r.label} (anti-affinity) separates {', '.join(sorted(inside))}, which affinity binds together"
                for m in r.guests:
                    if m not in names:
                        avoid.setdefault(m, r)
        guests.sort(key=lambda g: (-g.memory, -g.cores, g.name))
        out.append((guests, pinned, pinned_by, avoid, conflict))
    return out


def plan_recovery(cluster, failed, strategy=DEFAULT_STRATEGY, *, use="peak", limits=None):
    """Plan where every guest of the ``failed`` nodes restarts.

    Guests are placed largest first (max memory, then cpu, then name); each decision updates the
    projected usage of its target before the next. A strategy with ``fallback`` strategies (``fwsg``)
    that leaves guests unplaced is re-run with each; the pass placing the most guests wins
    (ties: the earlier pass). Every node not chosen for a guest carries a
    reason. ``use`` picks the usage statistic checked against the hard threshold and used by the
    usage-based scorers (``peak`` = the document's percentile, ``mean`` or ``latest``).
    Raises ValidationError for an unknown failed node or strategy; never modifies ``cluster``.
    """
    limits = limits or Limits()
    failed = tuple(dict.fromkeys(failed))
    if not failed:
        raise ValidationError("failed", "name at least one failed node")
    for f in failed:
        if f not in cluster.nodes:
            raise ValidationError("failed", f"unknown node {f!r} (nodes: {', '.join(cluster.nodes)})")
    if strategy not in STRATEGIES:
        raise ValidationError("strategy", f"unknown strategy {strategy!r} (one of: {', '.join(STRATEGIES)})")
    if use not in USES:
        raise ValidationError("use", f"{use!r} is not one of {', '.join(USES)}")
    for name, value in (("threshold", limits.threshold), ("conntrack_threshold", limits.conntrack_threshold)):
        if not 0 < value <= 1:
            raise ValidationError(name, f"{value} must be in (0, 1]")
    started = time.perf_counter()
    scorer = STRATEGIES[strategy]
    placements, states = _run(cluster, failed, scorer, use, limits)
    fallback = None
    for alt_name in scorer.fallback if any(not p.placed for p in placements) else ():
        alt, alt_states = _run(cluster, failed, STRATEGIES[alt_name], use, limits)
        if sum(not p.placed for p in alt) < sum(not p.placed for p in placements):
            placements, states, fallback = alt, alt_states, alt_name
    seconds = time.perf_counter() - started
    z = z_for(cluster.peak_key)
    return RecoveryPlan(strategy=strategy, failed=failed, use=use, peak_key=cluster.peak_key, limits=limits,
                placements=placements, nodes=_node_loads(cluster, states, set(failed), use, z),
                seconds=seconds, fallback=fallback)


def _run(cluster, failed, scorer, use, limits):
    """One greedy pass with ``scorer``: (placements in decision order, surviving node states)."""
    z = z_for(cluster.peak_key)
    failed_set = set(failed)

    by_node = {n: [] for n in cluster.nodes}
    for g in cluster.guests.values():
        by_node[g.node].append(g)
    states = []
    fixed_reasons = {}
    for n in cluster.nodes.values():
        if n.name in failed_set:
            fixed_reasons[n.name] = "failed"
        elif not n.online:
            fixed_reasons[n.name] = "offline"
        else:
            states.append(NodeState(n, by_node[n.name], use, z))
    ctx = Context(states=states, z=z,
                  max_cores=float(max(n.cores for n in cluster.nodes.values())),
                  max_memory=float(max(n.memory for n in cluster.nodes.values())))

    moving = [g for f in failed for g in by_node[f]]
    units = []
    for guests, pinned, pinned_by, avoid, conflict in _units(cluster, moving, failed_set):
        d = Demand(guests, use, z)
        d.pinned, d.pinned_by, d.avoid = pinned, pinned_by, avoid
        d.groups = tuple(cluster.groups[name] for name in d.groups)
        units.append((d, conflict))
    units.sort(key=lambda u: (-u[0].max_memory, -u[0].cpu, u[0].names[0]))

    static = [f for _, f in STATIC_FILTERS]
    anti, cap = (f for _, f in DYNAMIC_FILTERS)
    static_cache = {}  # unit signature -> (nodes passing the static filters, their rejections)
    placements = []
    for d, conflict in units:
        rejected = dict(fixed_reasons)
        passed = []
        if conflict:
            for ns in states:
                rejected[ns.name] = conflict
        else:
            key = (tuple(gr.name for gr in d.groups), d.pinned, d.cores, d.storages, d.networks)
            entry = static_cache.get(key)
            if entry is None:
                entry = static_cache[key] = _static_pass(states, d, limits, static)
            ok, static_rejected = entry
            rejected.update(static_rejected)
            avoid = d.avoid
            for ns in ok:
                why = anti(ns, d, limits) if avoid else None
                if why is None:
                    why = cap(ns, d, limits)
                if why is None:
                    passed.append(ns)
                else:
                    rejected[ns.name] = why
        passed = _priority_tier(passed, d, rejected)
        target = score = None
        if passed:
            scores = scorer.score(passed, d, ctx)
            best = 0
            for i in range(1, len(passed)):  # highest score; ties: smallest node name
                if scores[i] > scores[best] or (scores[i] == scores[best] and passed[i].name < passed[best].name):
                    best = i
            chosen = passed[best]
            target, score = chosen.name, scores[best]
            chosen.add(d)
        for g in d.guests:
            placements.append(Placement(guest=g.name, source=g.node, target=target, unit=d.names,
                                        score=score, rejected=rejected))
    return placements, states


def _static_pass(states, d, limits, static):
    """(states passing every static filter, {node: first failing static filter's reason})."""
    ok = []
    rejected = {}
    for ns in states:
        for f in static:
            why = f(ns, d, limits)
            if why is not None:
                rejected[ns.name] = why
                break
        else:
            ok.append(ns)
    return ok, rejected


def _priority_tier(passed, d, rejected):
    """Keep the nodes of the highest priority of the unit's HA group among ``passed`` (Proxmox
    semantics); nodes outside the group only when no group member passed. Records the others."""
    if not d.groups or not passed:
        return passed
    gr = d.groups[0]
    members = [ns for ns in passed if ns.name in gr.nodes]
    if not members:
        return passed
    top = max(gr.nodes[ns.name] for ns in members)
    keep = []
    for ns in passed:
        prio = gr.nodes.get(ns.name)
        if prio == top:
            keep.append(ns)
        elif prio is None:
            rejected[ns.name] = f"not in group '{gr.name}' and a member is available"
        else:
            rejected[ns.name] = f"priority {prio} < {top} in group '{gr.name}'"
    return keep


def _node_loads(cluster, states, failed_set, use, z):
    by_name = {s.name: s for s in states}
    out = []
    for n in cluster.nodes.values():
        s = by_name.get(n.name)
        if s is not None:
            out.append(NodeLoad(n.name, "online", n.cores, n.memory, s.cpu0, s.cpu, s.mem0, s.mem,
                                s.committed, s.services0, s.services, list(s.placed)))
        else:
            staying = [g for g in cluster.guests.values() if g.node == n.name]
            probe = NodeState(n, staying, use, z)
            status = "failed" if n.name in failed_set else "offline"
            after = 0 if status == "failed" else len(staying)
            out.append(NodeLoad(n.name, status, n.cores, n.memory, probe.cpu, 0.0 if status == "failed" else probe.cpu,
                                probe.mem, 0.0 if status == "failed" else probe.mem, 0.0,
                                len(staying), after, []))
    return out
