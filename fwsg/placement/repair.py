"""The repair step: place a leftover unit by moving placed units out of its way.

Pure: no I/O here. After a greedy pass some units may fit on no node although the plan could
make room: a node lacks a few GiB that one guest the plan put there occupies, and that guest
fits elsewhere. :func:`repair` tries, for each leftover unit in decision order, first a direct
fit (an earlier repair may have made room), then the cheapest single move (the candidate node
missing the least room, the smallest unit there that makes enough room and that another node
admits), then several moves off one of the three candidate nodes missing the least room
(largest units first, until it admits the leftover). Every move keeps every hard constraint:
the admission rule and anti-affinity are checked for both the moved unit's new node and the
leftover unit's node. Units the failed
nodes' affinity pins, and units with a rule conflict, are never moved or repaired.
"""

from __future__ import annotations

from fwsg.placement import admission
from fwsg.placement.filters import STATIC_FILTERS, anti_affinity


def repair(setup, decided, scorer, limits, placements):
    """Place leftover units of ``decided`` ([(demand, state or None)], updated in place) by
    direct fits, single moves and several moves; update ``placements``. Returns the number of
    units placed."""
    from fwsg.placement.planner import _priority_tier, static_pass  # planner imports this module

    states, ctx = setup.states, setup.ctx
    conflict = {id(d): c for d, c in setup.units}
    index = {id(d): i for i, (d, _) in enumerate(decided)}
    by_guest = {p.guest: p for p in placements}
    cache = {}
    failed_at = {}  # need signature -> version at which it last failed
    version = 0
    room_version = -1
    most_room = 0.0
    done = 0
    for i in range(len(decided)):
        d, target = decided[i]
        if target is not None or conflict[id(d)]:
            continue
        sig = (tuple(gr.name for gr in d.groups), d.pinned, d.cores, d.storages, d.networks, d.max_memory,
               d.cpu if limits.cpu_limit is not None else None, d.conntrack)
        if not d.avoid and failed_at.get(sig) == version:
            continue
        if room_version != version:
            most_room, room_version = max((ns.free_memory for ns in states), default=0.0), version
        if d.max_memory > 2 * most_room + 1e-9 * d.max_memory:
            continue  # neither a direct fit nor one move can make that much room (several are not tried either)
        ok, _, _ = static_pass(cache, states, d, limits)
        cands = [ns for ns in ok if not (d.avoid and anti_affinity(ns, d, limits))]
        direct = _priority_tier([ns for ns in cands if ns.reason(d) is None], d, {})
        if direct:
            chosen = _best(scorer, direct, d, ctx)
        else:
            move = _find_move(d, cands, states, cache, limits, scorer, ctx, static_pass, _priority_tier)
            if move is not None:
                chosen, v, dest = move
                chosen.remove(v)
                dest.add(v)
                moved = [(v, dest)]
            else:
                move = _find_moves(d, cands, states, cache, limits, scorer, ctx, static_pass, _priority_tier)
                if move is None:
                    failed_at[sig] = version
                    continue
                chosen, moved = move
            for v, dest in moved:
                decided[index[id(v)]] = (v, dest)
                for name in v.names:
                    p = by_guest[name]
                    p.target, p.score, p.ranked, p.moved_for = dest.name, None, (), d.names[0]
        chosen.add(d)
        decided[i] = (d, chosen)
        for name in d.names:
            p = by_guest[name]
            p.target, p.score, p.ranked = chosen.name, None, ()
        version += 1
        done += 1
    return done


def _best(scorer, cands, d, ctx):
    """The candidate the scorer prefers (ties: smallest name)."""
    from fwsg.placement.planner import pick

    return cands[pick(cands, scorer.score(cands, d, ctx))]


def _find_move(d, cands, states, cache, limits, scorer, ctx, static_pass, priority_tier):
    """(node for ``d``, unit to move away from it, its new node) or None."""
    most_room = max((ns.free_memory for ns in states), default=0.0)
    for ns in sorted(cands, key=lambda s: (d.max_memory - s.free_memory, s.name)):
        if ns.free_memory + most_room < d.max_memory:
            break  # sorted by missing room: no later node can be helped either
        missing = d.max_memory - ns.free_memory
        movable = [u for u in ns.units if u.pinned is None and missing <= u.max_memory <= most_room]
        for v in sorted(movable, key=lambda u: (u.max_memory, u.names[0])):
            after = (ns.committed - v.max_memory, ns.placed_cpu - v.cpu, ns.placed_ct - v.conntrack)
            if admission.capacity_reason(ns.budget, after, d.need, ns.node) is not None:
                continue
            vok, _, _ = static_pass(cache, states, v, limits)
            dest = [m for m in vok if m is not ns and m.free_memory >= v.max_memory and m.reason(v) is None
                    and not (v.avoid and anti_affinity(m, v, limits))]
            dest = priority_tier(dest, v, {})
            if dest:
                return ns, v, _best(scorer, dest, v, ctx)
    return None


MULTI_NODES = 3
"""Candidate nodes (those missing the least room) on which :func:`_find_moves` tries several moves."""
MULTI_UNITS = 8
"""Most units :func:`_find_moves` moves away from one node."""


def _find_moves(d, cands, states, cache, limits, scorer, ctx, static_pass, priority_tier):
    """(node for ``d``, [(unit moved away from it, its new node)]) or None: when no single move
    makes room, move several placed units (largest first, each to the node the scorer prefers
    among those admitting it) until the node admits ``d``. The moves are applied to the node
    states; on failure they are undone."""
    most_room = max((ns.free_memory for ns in states), default=0.0)
    free_total = sum(ns.free_memory for ns in states)
    tried = 0
    for ns in sorted(cands, key=lambda s: (d.max_memory - s.free_memory, s.name)):
        if tried >= MULTI_NODES or d.max_memory - ns.free_memory > free_total - ns.free_memory:
            break
        tried += 1
        done = []
        movable = sorted((u for u in ns.units if u.pinned is None and u.max_memory <= most_room),
                         key=lambda u: (-u.max_memory, u.names[0]))
        for v in movable:
            if len(done) >= MULTI_UNITS:
                break
            vok, _, _ = static_pass(cache, states, v, limits)
            dest = [m for m in vok if m is not ns and m.free_memory >= v.max_memory and m.reason(v) is None
                    and not (v.avoid and anti_affinity(m, v, limits))]
            dest = priority_tier(dest, v, {})
            if not dest:
                continue
            m = _best(scorer, dest, v, ctx)
            ns.remove(v)
            m.add(v)
            done.append((v, m))
            if ns.reason(d) is None:
                return ns, done
        for v, m in reversed(done):
            m.remove(v)
            ns.add(v)
    return None


def trade(setup, decided, scorer, limits, placements):
    """Restart more guests by taking one placed unit down for several smaller leftovers.

    For each placed unit (largest first) whose node could instead take leftover units holding
    more guests (smallest first; never leftovers of lower HA priority than the unit taken down),
    swap them; repeat until no swap gains. Every swap strictly raises the number of guests placed, so this ends.
    Then the repair step runs again for what is left. Returns the number of swaps.
    """
    conflict = {id(d): c for d, c in setup.units}
    index = {id(d): i for i, (d, _) in enumerate(decided)}
    by_guest = {p.guest: p for p in placements}
    swaps = 0
    while True:
        left = sorted((d for d, t in decided if t is None and not conflict[id(d)]),
                      key=lambda d: (d.max_memory, d.names[0]))
        if not left:
            break
        big = sorted(((d, t) for d, t in decided if t is not None and d.pinned is None
                      and d.max_memory > left[0].max_memory),
                     key=lambda u: (-u[0].max_memory, u[0].names[0]))
        before = swaps
        per_guest = sorted(d.max_memory / len(d.names) for d in left for _ in d.names)
        cheapest = [0.0]
        for m in per_guest:
            cheapest.append(cheapest[-1] + m)
        for u, ns in big:
            if not left or u.max_memory <= left[0].max_memory:
                break
            gain = len(u.names) + 1  # guests the swap must bring up
            if gain >= len(cheapest) or cheapest[gain] > ns.free_memory + u.max_memory + 1e-9 * ns.memory:
                continue  # even the smallest leftovers would not fit there
            picked = _pick(u, ns, left, limits)
            if sum(len(d.names) for d in picked) <= len(u.names):
                continue
            ns.remove(u)
            decided[index[id(u)]] = (u, None)
            for name in u.names:
                p = by_guest[name]
                p.target, p.score, p.ranked = None, None, ()
            for d in picked:
                ns.add(d)
                decided[index[id(d)]] = (d, ns)
                for name in d.names:
                    p = by_guest[name]
                    p.target, p.score, p.ranked = ns.name, None, ()
            taken = {id(d) for d in picked}
            left = sorted([d for d in left if id(d) not in taken] + [u], key=lambda d: (d.max_memory, d.names[0]))
            swaps += 1
        if swaps == before:
            break
    if swaps:
        repair(setup, decided, scorer, limits, placements)
    return swaps


def _pick(u, ns, left, limits):
    """The leftovers (smallest first) that node ``ns`` admits together once unit ``u`` is gone."""
    placed = [ns.committed - u.max_memory, ns.placed_cpu - u.cpu, ns.placed_ct - u.conntrack]
    present = ns.guests.difference(u.names)
    picked = []
    for d in left:
        if d.priority < u.priority or d.pinned is not None and d.pinned != ns.name:
            continue
        if d.max_memory > ns.budget.memory - placed[0]:
            break  # sorted by size: nothing later fits either
        if any(f(ns, d, limits) is not None for _, f in STATIC_FILTERS):
            continue
        if d.avoid and present.intersection(d.avoid):
            continue
        if admission.capacity_reason(ns.budget, tuple(placed), d.need, ns.node) is not None:
            continue
        picked.append(d)
        present.update(d.names)
        placed[0] += d.max_memory
        placed[1] += d.cpu
        placed[2] += d.conntrack
    return picked

