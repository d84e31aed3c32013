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
from fwsg.placement.admission import Limits, Reason, capacity_reasons
from fwsg.placement.filters import STATIC_FILTERS, anti_affinity
from fwsg.placement.rebalance import MAX_MIGRATIONS, rebalance
from fwsg.placement.repair import repair, trade
from fwsg.placement.scorers import DEFAULT_STRATEGY, STRATEGIES, Context
from fwsg.placement.state import USES, Demand, NodeState, z_for


@dataclass
class Placement:
    """The decision for one guest: ``target`` is None when it cannot be placed.

    ``rejected`` maps every node that was not chosen for a reason to that reason (one line; in no
    particular order, :meth:`RecoveryPlan.to_dict` orders it like the nodes);
    ``unit`` lists the guests placed together with it (affinity), itself included; ``ranked``
    (candidate node states, their scores) as the scorer saw them (the losers' explanation); ``reason`` one
    line summing up why an unplaced guest fits nowhere; ``moved_for`` the guest whose room the
    repair step made by moving this one; ``relieved`` the node the rebalancing step moved it off;
    ``key`` orders unplaced guests (HA priority, then size).
    """

    guest: str
    source: str
    target: str | None
    unit: tuple
    score: float | None = None
    rejected: dict = field(default_factory=dict)
    ranked: tuple = ()
    reason: str = ""
    moved_for: str | None = None
    relieved: str | None = None
    key: tuple = ()

    @property
    def placed(self):
        return self.target is not None

    def explain(self):
        """{node: why it is not the target}: filter rejections, then lost scores and ties."""
        out = dict(self.rejected)
        if self.target is None or not self.ranked:
            return out
        ranked = [(ns.name, x) for ns, x in zip(*self.ranked)]
        best = dict(ranked).get(self.target)
        for name, score in ranked:
            if name == self.target or name in out:
                continue
            if best is not None and score == best:
                out[name] = f"same score {score:.6g}; {self.target} sorts first by name"
            else:
                out[name] = f"score {score:.6g} < {best:.6g} of {self.target}"
        return out


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
    committed: float  # max memory of guests placed (or live-migrated) here
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
    repaired: int = 0  # units the repair step placed by moving an already placed unit
    rebalanced: int = 0  # moves of the rebalancing step (fwsg.placement.rebalance)
    migrations: list = field(default_factory=list)  # live migrations of running guests (rebalance.Migration)
    max_migrations: int = 0

    @property
    def placed(self):
        return [p for p in self.placements if p.placed]

    @property
    def unplaced(self):
        """Guests left down, most important first: HA priority, then max memory, cores, name."""
        return sorted((p for p in self.placements if not p.placed), key=lambda p: p.key)

    def target_of(self):
        """guest name -> target node (placed guests only)."""
        return {p.guest: p.target for p in self.placements if p.placed}

    def _placement(self, p):
        why = p.explain()
        return {"guest": p.guest, "from": p.source, "to": p.target,
                **({"score": round(p.score, 6)} if p.score is not None else {}),
                **({"with": [u for u in p.unit if u != p.guest]} if len(p.unit) > 1 else {}),
                **({"reason": p.reason} if p.reason else {}),
                **({"moved_for": p.moved_for} if p.moved_for else {}),
                **({"relieved": p.relieved} if p.relieved else {}),
                "rejected": {n.name: str(why[n.name]) for n in self.nodes if n.name in why}}

    def to_dict(self):
        """The plan as JSON-ready data (the ``fwsg place --json`` document)."""
        return {
            "schema": "fwsg.plan/1",
            "strategy": self.strategy,
            "failed": list(self.failed),
            "use": self.use if self.use != "peak" else self.peak_key,
            "limits": {"memory_reserve": self.limits.memory_reserve, "cpu_limit": self.limits.cpu_limit,
                       "conntrack_threshold": self.limits.conntrack_threshold},
            "placed": len(self.placed),
            "unplaced": len(self.unplaced),
            "repaired": self.repaired,
            "rebalanced": self.rebalanced,
            "migrated": len(self.migrations),
            "max_migrations": self.max_migrations,
            "seconds": round(self.seconds, 6),
            "placements": [self._placement(p) for p in self.placements],
            "unplaced_guests": [{"guest": p.guest, "reason": p.reason} for p in self.unplaced],
            "migrations": [m.to_dict() for m in self.migrations],
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
    rules_of = {}
    for r in cluster.rules:
        for m in r.guests:
            if m in parent:
                rules_of.setdefault(m, []).append(r)
    out = []
    for guests in comps.values():
        names = {g.name for g in guests}
        pinned = pinned_by = None
        avoid = {}
        conflict = None
        mine = {id(r): r for g in guests for r in rules_of.get(g.name, ())}
        for r in sorted(mine.values(), key=lambda r: r.index):
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


def plan_recovery(cluster, failed, strategy=DEFAULT_STRATEGY, *, use="peak", limits=None,
                  max_migrations=MAX_MIGRATIONS):
    """Plan where every guest of the ``failed`` nodes restarts.

    Units (guests bound by affinity) are placed by HA priority, then largest first (max memory,
    then cpu, then name); each node passes the admission filters, the highest HA-group priority
    tier is kept, the strategy scores, ties go to the smallest node name, and the decision
    updates its target before the next. A strategy with ``repair`` (``fwsg``) then tries to place
    each unit left over by moving placed units to other nodes that admit them (and swaps), and
    finally relieves the hottest node (:mod:`fwsg.placement.rebalance`) without taking any
    guest down: moving placed units, and live-migrating at most ``max_migrations``
    running guests (each listed in the plan's ``migrations``; 0 never touches a running guest).
    Every node not chosen carries a reason. ``use`` picks the usage statistic (``peak`` = the
    document's percentile, ``mean`` or ``latest``) the admission rule and the usage-based
    scorers read. Raises ValidationError for an unknown failed node, strategy, ``use``, a
    limit out of range or a negative ``max_migrations``; never modifies ``cluster``.
    """
    limits = (limits or Limits()).check()
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
    if isinstance(max_migrations, bool) or not isinstance(max_migrations, int) or max_migrations < 0:
        raise ValidationError("max_migrations", f"{max_migrations!r} must be an integer >= 0")
    started = time.perf_counter()
    scorer = STRATEGIES[strategy]
    setup = prepare(cluster, failed, use, limits)
    placements, decided = _run(setup, scorer, limits)
    repaired = 0
    if scorer.repair and any(t is None for _, t in decided):
        repaired = repair(setup, decided, scorer, limits, placements)
        if any(t is None for _, t in decided):
            trade(setup, decided, scorer, limits, placements)
    migrations = []
    rebalanced = rebalance(setup, decided, limits, placements, max_migrations=max_migrations,
                           migrations=migrations) if scorer.repair else 0
    _explain_unplaced(setup, decided, placements, limits)
    seconds = time.perf_counter() - started
    return RecoveryPlan(strategy=strategy, failed=failed, use=use, peak_key=cluster.peak_key, limits=limits,
                placements=placements, nodes=_node_loads(cluster, setup.states, set(failed), use, setup.ctx.z),
                seconds=seconds, repaired=repaired, rebalanced=rebalanced, migrations=migrations,
                max_migrations=max_migrations if scorer.repair else 0)


@dataclass
class Setup:
    """What every pass starts from: surviving node states, the units to place (decision order,
    each with an anti/affinity conflict message or None), failed/offline reasons, the scorers'
    context, and what the rebalancing step needs to migrate running guests (the cluster and
    the usage statistic). Built by :func:`prepare`; passes mutate the node states."""

    states: list
    units: list  # [(Demand, conflict or None)]
    fixed_reasons: dict
    ctx: Context
    cluster: object = None
    use: str = "peak"


def prepare(cluster, failed, use, limits):
    """The :class:`Setup` for planning the guests of ``failed`` (no validation here)."""
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
            states.append(NodeState(n, by_node[n.name], use, z, limits))
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
    units.sort(key=lambda u: unit_key(u[0]))
    return Setup(states=states, units=units, fixed_reasons=fixed_reasons, ctx=ctx, cluster=cluster, use=use)


def unit_key(d):
    """The decision order of units: HA priority (higher first), max memory, cpu, name."""
    return (-d.priority, -d.max_memory, -d.cpu, d.names[0])


def _run(setup, scorer, limits):
    """One greedy pass with ``scorer``: (placements in decision order, [(demand, target state or
    None)] in the same order)."""
    states, ctx = setup.states, setup.ctx
    cache = {}  # unit signature -> (nodes passing the static filters, their rejections)
    placements = []
    decided = []
    most_room = max((ns.free_memory for ns in states), default=0.0)
    slack = 1e-9 * max((ns.memory for ns in states), default=0)
    for d, conflict in setup.units:
        rejected = dict(setup.fixed_reasons)
        if d.max_memory > most_room + slack:
            passed = []  # no node has the memory room; the reasons come from _explain_unplaced
        else:
            passed = admissible(states, d, conflict, limits, cache, rejected)
            passed = _priority_tier(passed, d, rejected)
        chosen = score = None
        ranked = ()
        if passed:
            scores = scorer.score(passed, d, ctx)
            best = pick(passed, scores)
            chosen = passed[best]
            score = scores[best]
            ranked = (passed, scores)
            was = chosen.free_memory
            chosen.add(d)
            if was >= most_room:
                most_room = max(ns.free_memory for ns in states)
        decided.append((d, chosen))
        key = unit_key(d)
        for g in d.guests:
            placements.append(Placement(guest=g.name, source=g.node, target=chosen.name if chosen else None,
                                        unit=d.names, score=score, rejected=rejected, ranked=ranked,
                                        key=key + (g.name,)))
    return placements, decided


def pick(cands, scores):
    """The index of the highest score; ties go to the smallest node name."""
    top = max(scores)
    best = scores.index(top)
    if scores.count(top) > 1:
        best = min((cands[i].name, i) for i, x in enumerate(scores) if x == top)[1]
    return best


def admissible(states, d, conflict, limits, cache, rejected, kinds=None):
    """The node states that admit unit ``d`` now (every filter of :data:`FILTERS` passes).

    Each other node's first failing filter's reason goes into ``rejected``; ``kinds`` (if given)
    counts them by filter name. ``cache`` memoises the static filters (see :func:`static_pass`).
    """
    if conflict:
        for ns in states:
            rejected[ns.name] = conflict
        if kinds is not None:
            kinds["rules"] = kinds.get("rules", 0) + len(states)
        return []
    ok, static_rejected, static_kinds = static_pass(cache, states, d, limits)
    rejected.update(static_rejected)
    if kinds is not None:
        for k in static_kinds.values():
            kinds[k] = kinds.get(k, 0) + 1
    if d.avoid:
        free = []
        for ns in ok:
            why = anti_affinity(ns, d, limits)
            if why is None:
                free.append(ns)
            else:
                rejected[ns.name] = why
                if kinds is not None:
                    kinds["anti-affinity"] = kinds.get("anti-affinity", 0) + 1
        ok = free
    whys = capacity_reasons([ns.entry for ns in ok], d.need)
    passed = []
    for ns, why in zip(ok, whys):
        if why is None:
            passed.append(ns)
        else:
            rejected[ns.name] = why
            if kinds is not None:
                kinds["capacity"] = kinds.get("capacity", 0) + 1
    return passed


def static_pass(cache, states, d, limits):
    """(states passing every static filter, {node: first failing static filter's reason},
    {node: that filter's name}) for ``d``, memoised in ``cache`` by the unit's static signature."""
    key = (tuple(gr.name for gr in d.groups), d.pinned, d.cores, d.storages, d.networks)
    entry = cache.get(key)
    if entry is None:
        ok = []
        rejected = {}
        kinds = {}
        for ns in states:
            for name, f in STATIC_FILTERS:
                why = f(ns, d, limits)
                if why is not None:
                    rejected[ns.name] = why
                    kinds[ns.name] = name
                    break
            else:
                ok.append(ns)
        entry = cache[key] = (ok, rejected, kinds)
    return entry


def _explain_unplaced(setup, decided, placements, limits):
    """Give every unplaced guest, against the final plan, each node's reason and a one-line
    summary (the node that came closest on memory, and how many nodes fail each filter)."""
    by_guest = {p.guest: p for p in placements}
    conflicts = {id(u): c for u, c in setup.units}
    cache = {}
    for d, target in decided:
        if target is not None:
            continue
        rejected = dict(setup.fixed_reasons)
        kinds = {}
        for why in setup.fixed_reasons.values():
            kinds[why] = kinds.get(why, 0) + 1
        passed = admissible(setup.states, d, conflicts[id(d)], limits, cache, rejected, kinds)
        for ns in passed:  # only a repair that gave up on a unit leaves it admissible
            rejected[ns.name] = "admits it, but the plan stopped searching"
        closest = max((ns for ns in setup.states if isinstance(rejected.get(ns.name), Reason)),
                      key=lambda ns: (ns.free_memory, ns.name), default=None)
        parts = []
        if closest is not None:
            parts.append(f"closest {closest.name}: {rejected[closest.name]}"
                         + (f" (for {len(d.names)} guests bound by affinity)" if len(d.names) > 1 else ""))
        parts.append("nodes rejecting: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))))
        reason = "; ".join(parts)
        for name in d.names:
            p = by_guest[name]
            p.rejected = rejected
            p.reason = reason
            p.ranked = ()


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
