"""The rebalancing step: lower the hottest node's projected peak by moving guests the plan placed.

Pure: no I/O here. After the greedy pass (and the repair step) the node with the highest
projected peak may sit above the overload line although a unit the plan put there fits, under
every hard constraint, on a node that stays cooler. :func:`rebalance` moves such units one at a
time, always from the hottest node, choosing the move that minimises max(peak of the hot node
after, peak of the destination after), and only when that is below the hot node's peak now. It never unplaces a
guest, never moves a guest that was not placed by this plan, nor one pinned by affinity, and
keeps the HA group tier: the destination has the same group priority as the node it leaves.
Every move strictly lowers the hottest node's peak or moves the hot spot elsewhere below it, and
the number of moves is capped, so this ends.
"""

from __future__ import annotations

import math

from fwsg.placement.filters import anti_affinity

LINE = 0.7
"""Projected peak (fraction of cpu or memory) above which the hottest node is relieved: 10
points under the 80 % overload line, for the drift and bursts the probe window did not see."""


def peak(ns, z, d=None, sign=1.0):
    """Projected peak of ``ns`` (max of the cpu and memory fractions, mean + z * sigma of the sum),
    with demand ``d`` added (``sign`` 1) or taken away (``sign`` -1)."""
    cm, cv, mm, mv = ns.cpu_mean, ns.cpu_var, ns.mem_mean, ns.mem_var
    if d is not None:
        cm += sign * d.cpu_mean
        cv = max(cv + sign * d.cpu_var, 0.0)
        mm += sign * d.mem_mean
        mv = max(mv + sign * d.mem_var, 0.0)
    pc = (cm + z * math.sqrt(cv)) / ns.cores
    pm = (mm + z * math.sqrt(mv)) / ns.memory
    return pc if pc > pm else pm


def _tier(ns, d):
    """The HA group priority of node ``ns`` for unit ``d`` (None: no group, or not a member)."""
    if not d.groups:
        return None
    return d.groups[0].nodes.get(ns.name)


def rebalance(setup, decided, limits, placements, line=LINE, max_moves=None):
    """Move placed units off the hottest node while its projected peak is above ``line`` and a
    move lowers it; update ``decided`` and ``placements``. Returns the number of moves."""
    from fwsg.placement.planner import static_pass  # planner imports this module

    states, z = setup.states, setup.ctx.z
    if not states:
        return 0
    index = {id(d): i for i, (d, _) in enumerate(decided)}
    by_guest = {p.guest: p for p in placements}
    cache = {}
    cap = max_moves if max_moves is not None else 2 * len(states) + 8
    moves = 0
    while moves < cap:
        hot = max((ns for ns in states if any(v.pinned is None for v in ns.units)),
                  key=lambda ns: (peak(ns, z), ns.name), default=None)
        now = peak(hot, z) if hot is not None else 0.0
        if now <= line:
            break
        best = None
        for v in hot.units:
            if v.pinned is not None:
                continue
            left = peak(hot, z, v, -1.0)
            if left >= now:
                continue
            ok, _, _ = static_pass(cache, states, v, limits)
            tier = _tier(hot, v)
            for m in ok:
                if m is hot or m.free_memory < v.max_memory or _tier(m, v) != tier:
                    continue
                after = peak(m, z, v)
                worst = left if left > after else after
                if worst >= now or best is not None and (worst, m.name) >= (best[0], best[2].name):
                    continue
                if m.reason(v) is not None or (v.avoid and anti_affinity(m, v, limits)):
                    continue
                best = (worst, v, m)
        if best is None:
            break
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
    return moves
