"""An exact oracle for small clusters: the most guests any plan can restart, and the lowest
projected peak load among the plans that restart that many.

Pure: no I/O here. Used by the placement benchmark to judge the strategies (not by the planner).
The admission rule is the planner's (:mod:`fwsg.placement.admission`, through the same node
states and filters), so "fits" means the same thing to both; the search is independent: a
depth-first branch and bound over every unit x (every admissible node, or left down).

1. **Count**: maximise the guests placed. Bound: the guests placed so far plus a fractional
   knapsack of the remaining units (smallest max memory per guest first) into the memory room
   left on all nodes together. Identical units (same needs, same admissible nodes, no rules)
   are assigned in non-decreasing node order, which removes their permutations. The first
   incumbent is a smallest-first best fit.
2. **Peak**: with the count fixed at the optimum, minimise the projected peak load, the largest
   over surviving nodes of max(cpu used / cores, memory used / memory), usage per ``use``. Bound:
   the peak so far (it only grows). HA group priorities are honoured as the planner does when
   nodes have room: a guest of a group goes to the highest priority tier among the members that
   admit it alone (any admitting node if no member does). Only when no plan restarting the
   optimal count exists that way does this phase drop the preference.

Each phase stops after ``budget`` search nodes; the result says whether it proved optimality.
"""

from __future__ import annotations

from dataclasses import dataclass

from fwsg.placement.admission import Limits
from fwsg.placement.filters import anti_affinity
from fwsg.placement.planner import prepare, static_pass


@dataclass
class Optimum:
    """The oracle's answer: ``placed`` guests (maximum if ``count_proven``), ``target`` guest ->
    node of one plan achieving it with projected ``peak`` (minimum if ``peak_proven``)."""

    placed: int
    moving: int
    target: dict
    peak: float
    count_proven: bool
    peak_proven: bool
    nodes_searched: int

    @property
    def unplaced(self):
        return self.moving - self.placed


def projected_peak(plan):
    """The projected peak load of a planner :class:`~fwsg.placement.planner.RecoveryPlan`, as the oracle
    measures it: max over online nodes of max(cpu after / cores, memory after / memory)."""
    return max((max(n.cpu_after / n.cores, n.mem_after / n.memory) for n in plan.nodes if n.status == "online"),
               default=0.0)


def unplaceable(cluster, failed, *, use="peak", limits=None):
    """How many guests of ``failed`` no plan can restart: their unit is admitted by no node even
    with nothing else placed (a floor for every strategy, cheap on any cluster)."""
    limits = (limits or Limits()).check()
    setup = prepare(cluster, tuple(dict.fromkeys(failed)), use, limits)
    cache = {}
    out = 0
    for d, conflict in setup.units:
        ok = [] if conflict else static_pass(cache, setup.states, d, limits)[0]
        if not any(ns.reason(d) is None and not (d.avoid and anti_affinity(ns, d, limits)) for ns in ok):
            out += len(d.names)
    return out


def solve(cluster, failed, *, use="peak", limits=None, budget=200_000):
    """The :class:`Optimum` for the guests of ``failed`` under ``limits`` (see the module doc)."""
    limits = (limits or Limits()).check()
    setup = prepare(cluster, tuple(dict.fromkeys(failed)), use, limits)
    states = setup.states
    moving = sum(len(d.names) for d, _ in setup.units)
    cache = {}
    units = []
    for d, conflict in setup.units:
        if conflict:
            continue
        ok, _, _ = static_pass(cache, states, d, limits)
        feas = [i for i, ns in enumerate(states)
                if ns in ok and not (d.avoid and anti_affinity(ns, d, limits)) and ns.reason(d) is None]
        if feas:
            units.append((d, feas))
    names = {}
    for k, (d, _) in enumerate(units):
        for n in d.names:
            names[n] = k
    conflicts = [set() for _ in units]
    for k, (d, _) in enumerate(units):
        for other in d.avoid:
            j = names.get(other)
            if j is not None:
                conflicts[k].add(j)
                conflicts[j].add(k)
    # search order: largest first; identical units adjacent
    sig = [None] * len(units)
    for k, (d, feas) in enumerate(units):
        if not conflicts[k] and d.pinned is None:
            sig[k] = (d.need, tuple(feas))
    order = sorted(range(len(units)), key=lambda k: (-units[k][0].max_memory, str(sig[k]), k))
    search = _Search(states, units, conflicts, sig, order, budget)
    search.count()
    best_count, best_assign = search.best_count, list(search.best_assign)
    count_proven = not search.exhausted
    tiers = [_tier(states, d, feas) for d, feas in units]
    search.peak(best_count, best_assign, tiers)
    if search.best_peak == float("inf"):  # the preference costs a guest: drop it
        search.peak(best_count, best_assign, [feas for _, feas in units])
    target = {}
    for k, node in enumerate(search.best_assign):
        if node is not None:
            for n in units[k][0].names:
                target[n] = states[node].name
    return Optimum(placed=best_count, moving=moving, target=target, peak=search.best_peak,
                   count_proven=count_proven, peak_proven=not search.exhausted,
                   nodes_searched=search.searched)


def _tier(states, d, feas):
    """The admissible nodes of the highest priority tier of ``d``'s HA group (all if none)."""
    if not d.groups:
        return feas
    prio = d.groups[0].nodes
    members = [i for i in feas if states[i].name in prio]
    if not members:
        return feas
    top = max(prio[states[i].name] for i in members)
    return [i for i in members if prio[states[i].name] == top]


class _Search:
    """The two depth-first searches over (unit -> node index or None)."""

    def __init__(self, states, units, conflicts, sig, order, budget):
        self.states = states
        self.units = units
        self.conflicts = conflicts
        self.sig = sig
        self.order = order
        self.budget = budget
        self.budget_each = budget
        self.room = [[ns.budget.memory, ns.budget.cpu, ns.budget.conntrack] for ns in states]
        self.load = [[ns.cpu0, ns.mem0] for ns in states]
        self.cap = [(float(ns.cores), float(ns.memory)) for ns in states]
        self.on = [set() for _ in states]
        self.assign = [None] * len(units)
        self.searched = 0
        self.exhausted = False
        self.size = [len(d.names) for d, _ in units]
        self.by_ratio = sorted(range(len(units)), key=lambda k: units[k][0].max_memory / self.size[k])

    # -- helpers -------------------------------------------------------------------------
    def _fits(self, k, i):
        need = self.units[k][0].need
        r = self.room[i]
        return need[0] <= r[0] + 1e-9 * self.cap[i][1] and need[1] <= r[1] + 1e-9 and need[2] <= r[2] \
            and not (self.conflicts[k] & self.on[i])

    def _put(self, k, i, sign):
        d = self.units[k][0]
        r, ld = self.room[i], self.load[i]
        r[0] -= sign * d.max_memory
        r[1] -= sign * d.cpu
        r[2] -= sign * d.conntrack
        ld[0] += sign * d.cpu
        ld[1] += sign * d.mem
        if sign > 0:
            self.on[i].add(k)
            self.assign[k] = i
        else:
            self.on[i].discard(k)
            self.assign[k] = None

    def _peak(self):
        return max((max(c / cc, m / cm) for (c, m), (cc, cm) in zip(self.load, self.cap)), default=0.0)

    def _upper(self, pos, placed):
        """placed + fractional knapsack of the units at order[pos:] into the memory room left."""
        rest = set(self.order[pos:])
        total = sum(max(r[0], 0.0) for r in self.room)
        ub = placed
        for k in self.by_ratio:
            if k not in rest:
                continue
            if not any(self._fits(k, i) for i in self.units[k][1]):
                continue
            m = self.units[k][0].max_memory
            if m <= total:
                total -= m
                ub += self.size[k]
            else:
                ub += self.size[k] * total / m if m else self.size[k]
                break
        return int(ub + 1e-9)

    def _choices(self, pos, k):
        lo = -1
        if pos and self.sig[k] is not None and self.sig[self.order[pos - 1]] == self.sig[k]:
            prev = self.assign[self.order[pos - 1]]
            lo = len(self.states) if prev is None else prev
        return [i for i in self.units[k][1] if i >= lo and self._fits(k, i)], lo

    # -- phase 1: count -----------------------------------------------------------------
    def count(self):
        self.best_count = -1
        self.best_assign = [None] * len(self.units)
        self._greedy()
        self._count(0, 0)

    def _greedy(self):
        """A first incumbent: smallest units first, each onto the admissible node with the least
        room that fits (so a budget-limited search still starts from a good plan)."""
        placed = 0
        for k in self.by_ratio:
            fits = [i for i in self.units[k][1] if self._fits(k, i)]
            if fits:
                self._put(k, min(fits, key=lambda i: (self.room[i][0], i)), +1)
                placed += self.size[k]
        self.best_count, self.best_assign = placed, list(self.assign)
        for k, i in enumerate(self.best_assign):
            if i is not None:
                self._put(k, i, -1)

    def _count(self, pos, placed):
        self.searched += 1
        if self.searched > self.budget:
            self.exhausted = True
            return
        if pos == len(self.order):
            if placed > self.best_count:
                self.best_count, self.best_assign = placed, list(self.assign)
            return
        if self._upper(pos, placed) <= self.best_count:
            return
        k = self.order[pos]
        choices, lo = self._choices(pos, k)
        # best fit first: least memory room left
        choices.sort(key=lambda i: (self.room[i][0], i))
        for i in choices:
            self._put(k, i, +1)
            self._count(pos + 1, placed + self.size[k])
            self._put(k, i, -1)
            if self.exhausted:
                return
        if lo <= len(self.states):  # leave it down
            self._count(pos + 1, placed)

    # -- phase 2: peak ------------------------------------------------------------------
    def peak(self, count, assign, allowed):
        """Lowest peak among plans placing ``count`` guests on ``allowed`` nodes per unit."""
        self.exhausted = False
        self.budget = self.searched + self.budget_each
        self.target_count = count
        self.allowed = allowed
        self.best_peak = float("inf")
        self.best_assign = list(assign)
        if all(i is None or i in allowed[k] for k, i in enumerate(assign)):
            for k, i in enumerate(assign):
                if i is not None:
                    self._put(k, i, +1)
            self.best_peak = self._peak()
            for k, i in enumerate(assign):
                if i is not None:
                    self._put(k, i, -1)
        self.sig = [None] * len(self.units)  # usage differs between otherwise identical units
        self.order.sort(key=lambda k: (-self.units[k][0].mem, k))
        self._peak_dfs(0, 0, sum(self.size))

    def _peak_dfs(self, pos, placed, left):
        self.searched += 1
        if self.searched > self.budget:
            self.exhausted = True
            return
        if placed + left < self.target_count or self._peak() >= self.best_peak - 1e-12:
            return
        if pos == len(self.order):
            if placed >= self.target_count:
                self.best_peak, self.best_assign = self._peak(), list(self.assign)
            return
        k = self.order[pos]
        size = self.size[k]
        choices = [i for i in self.allowed[k] if self._fits(k, i)]
        d = self.units[k][0]
        choices.sort(key=lambda i: (max((self.load[i][0] + d.cpu) / self.cap[i][0],
                                        (self.load[i][1] + d.mem) / self.cap[i][1]), i))
        for i in choices:
            self._put(k, i, +1)
            self._peak_dfs(pos + 1, placed + size, left - size)
            self._put(k, i, -1)
            if self.exhausted:
                return
        self._peak_dfs(pos + 1, placed, left - size)
