"""The rebalancing step: lower the hottest node's projected peak by moving guests.

Pure: no I/O here. After the greedy pass (and the repair step) a node may sit above the
overload line although a unit the plan put there fits, under every hard constraint, on a node
that stays cooler. :func:`rebalance` relieves the hottest node, one action at a time:

1. **move** one unit the plan placed there to another node (the restart simply happens there);
2. else **migrate** one guest already *running* there to another node (a live migration): at
   most ``max_migrations`` per plan (the planner's default :data:`MAX_MIGRATIONS`), and only
   when it lowers the hot node's projected peak by at least :data:`MIGRATION_GAIN`.

Each action picks the candidate that minimises max(peak of the hot node after, peak of the
destination after), and only when that is below the hot node's peak now. When neither relieves
the hottest node, migrations stop and the step goes on as it did before migrations existed
(the hottest node holding units the plan placed, until no move lowers it). It never unplaces a
guest, never moves a guest pinned by affinity nor migrates one bound by an affinity rule, and
keeps the HA group tier: the destination has the same group priority as the node it leaves.

A migrated guest is charged to its destination like a restarted one (its max memory, its cpu,
its conntrack entries), and its source is *not* credited (its measured use stays in the source's
admission budget, its name among the source's guests for anti-affinity): so every hard
constraint holds after every restart and every migration, in any order.

Every action lowers the hot node's peak and leaves the destination below the old value; moves
and migrations are capped, so this ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LINE = 0.7
"""Projected peak (fraction of cpu or memory) above which the hottest node is relieved: 10
points under the 80 % overload line, for the drift and bursts the probe window did not see."""

MAX_MIGRATIONS = 4
"""Default cap on live migrations of running guests per plan (``--max-migrations``)."""

MIGRATION_GAIN = 0.02
"""A migration must lower the hot node's projected peak by at least this much (2 points): a
live migration costs network and time, a smaller gain is within the probe's noise."""


@dataclass
class Migration:
    """A running guest the plan live-migrates off a hot node: ``guest`` from ``source`` to
    ``target``; ``before``/``after`` the source's projected peak (fraction) around the move."""

    guest: str
    source: str
    target: str
    before: float
    after: float

    def to_dict(self):
        return {"guest": self.guest, "from": self.source, "to": self.target,
                "peak": {"before": round(self.before, 4), "after": round(self.after, 4)}}


def peak(ns, z, d=None, sign=1.0, out=None):
    """Projected peak of ``ns`` (max of the cpu and memory fractions, mean + z * sigma of the sum),
    with demand ``d`` added (``sign`` 1) or taken away (``sign`` -1), and demand ``out`` (if
    given) taken away."""
    cm, cv, mm, mv = ns.cpu_mean, ns.cpu_var, ns.mem_mean, ns.mem_var
    if d is not None:
        cm += sign * d.cpu_mean
        cv += sign * d.cpu_var
        mm += sign * d.mem_mean
        mv += sign * d.mem_var
    if out is not None:
        cm -= out.cpu_mean
        cv -= out.cpu_var
        mm -= out.mem_mean
        mv -= out.mem_var
    pc = (cm + z * math.sqrt(max(cv, 0.0))) / ns.cores
    pm = (mm + z * math.sqrt(max(mv, 0.0))) / ns.memory
    return pc if pc > pm else pm


def _tier(ns, d):
    """The HA group priority of node ``ns`` for unit ``d`` (None: no group, or not a member)."""
    if not d.groups:
        return None
    return d.groups[0].nodes.get(ns.name)


def _clash(ns, d):
    """True when unit ``d`` would share ``ns`` with a guest it must avoid (anti-affinity)."""
    return bool(d.avoid) and not ns.guests.isdisjoint(d.avoid)


class _Search:
    """The best action off one hot node (see the module doc)."""

    def __init__(self, setup, limits):
        from fwsg.placement.planner import static_pass  # planner imports this module

        self.static_pass = static_pass
        self.states, self.z, self.limits = setup.states, setup.ctx.z, limits
        self.cache = {}

    def ok(self, d):
        return self.static_pass(self.cache, self.states, d, self.limits)[0]

    def move(self, hot, now):
        """(key, unit, destination) of the best move of a unit the plan placed on ``hot``, or
        None: lowest worst peak, then destination name."""
        units = [v for v in hot.units if v.pinned is None]
        return self._best(hot, units, now, lambda worst, d, m: (worst, m.name))

    def migration(self, hot, now, migrants):
        """(key, running guest's demand, destination) of the best live migration off ``hot``
        gaining at least :data:`MIGRATION_GAIN`, or None: lowest worst peak, then the smallest
        guest (max memory: the cheapest to migrate), then names."""
        return self._best(hot, migrants, now - MIGRATION_GAIN,
                          lambda worst, d, m: (worst, d.max_memory, d.names[0], m.name))

    def _best(self, hot, cands, bar, key):
        """The candidate demand in ``cands`` leaving ``hot`` and the destination admitting it
        (every hard constraint, same group tier) with max(peak of hot after, peak of the
        destination after) below ``bar`` and the smallest ``key(worst, demand, destination)``,
        as (key, demand, destination); None when there is none."""
        z = self.z
        best = None
        for d in cands:
            left = peak(hot, z, d, -1.0)
            if left >= bar:
                continue
            tier = _tier(hot, d)
            for m in self.ok(d):
                if m is hot or m.free_memory < d.max_memory or _tier(m, d) != tier:
                    continue
                after = peak(m, z, d)
                worst = left if left > after else after
                if worst >= bar:
                    continue
                k = key(worst, d, m)
                if best is not None and k >= best[0] or m.reason(d) is not None or _clash(m, d):
                    continue
                best = (k, d, m)
        return best


class _Migrants:
    """The running guests of the surviving nodes that may migrate: guests bound by no affinity
    rule, each as a Demand with its anti-affinity partners to avoid. Built per node when that
    node is first the hot one (most plans never migrate)."""

    def __init__(self, setup):
        cluster = setup.cluster
        self.setup = setup
        self.bound = set()
        self.avoid = {}
        for r in cluster.rules:
            if r.kind == "affinity":
                self.bound.update(r.guests)
            else:
                for m in r.guests:
                    for other in r.guests:
                        if other != m:
                            self.avoid.setdefault(m, {}).setdefault(other, r)
        self.names = {ns.name: [] for ns in setup.states}
        for g in cluster.guests.values():
            if g.node in self.names and g.name not in self.bound:
                self.names[g.node].append(g)
        self.built = {}

    def on(self, node):
        """The Demands of the guests that may still migrate off ``node`` (a list the caller
        removes a migrated guest from)."""
        from fwsg.placement.state import Demand

        out = self.built.get(node)
        if out is None:
            cluster, z, use = self.setup.cluster, self.setup.ctx.z, self.setup.use
            out = self.built[node] = []
            for g in self.names[node]:
                d = Demand([g], use, z)
                d.groups = tuple(cluster.groups[name] for name in d.groups)
                d.avoid = self.avoid.get(g.name, {})
                out.append(d)
        return out

    def any_on(self, node):
        out = self.built.get(node)
        return bool(self.names.get(node)) if out is None else bool(out)


def rebalance(setup, decided, limits, placements, line=LINE, max_moves=None, *, max_migrations=0,
              migrations=None):
    """Relieve the hottest node while it is above ``line`` (see the module doc): move units the
    plan placed, updating ``decided`` and ``placements``, and live-migrate at most
    ``max_migrations`` running guests (0: none), appending a :class:`Migration` to
    ``migrations`` for each. Returns the number of placed units moved."""
    states, z = setup.states, setup.ctx.z
    if not states:
        return 0
    index = {id(d): i for i, (d, _) in enumerate(decided)}
    by_guest = {p.guest: p for p in placements}
    search = _Search(setup, limits)
    migrants = _Migrants(setup) if max_migrations > 0 and setup.cluster is not None else None
    done = migrations if migrations is not None else []
    cap = max_moves if max_moves is not None else 2 * len(states) + 8
    moves = 0

    while moves < cap:
        can_migrate = migrants is not None and len(done) < max_migrations
        hot = max((ns for ns in states
                   if any(v.pinned is None for v in ns.units) or can_migrate and migrants.any_on(ns.name)),
                  key=lambda ns: (peak(ns, z), ns.name), default=None)
        now = peak(hot, z) if hot is not None else 0.0
        if now <= line:
            break
        best = search.move(hot, now)
        if best is not None:
            _, v, m = best
            hot.remove(v)
            m.add(v)
            decided[index[id(v)]] = (v, m)
            for name in v.names:
                p = by_guest[name]
                p.target, p.score, p.ranked = m.name, None, ()
                p.relieved = p.relieved or hot.name
                p.rejected = {k: why for k, why in p.rejected.items() if k != m.name}
            moves += 1
            continue
        best = search.migration(hot, now, migrants.on(hot.name)) if can_migrate else None
        if best is not None:
            _, d, m = best
            hot.depart(d)
            m.add(d, placed=False)
            migrants.on(hot.name).remove(d)
            done.append(Migration(d.names[0], hot.name, m.name, now, peak(hot, z)))
            continue
        if not can_migrate:
            break
        migrants = None  # the hottest node cannot be relieved: back to moving placed units only
    return moves
