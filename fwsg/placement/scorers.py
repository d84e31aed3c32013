"""Strategies: scorers that rank the nodes that passed the filters.

Pure: no I/O here. A scorer's ``score(candidates, demand, ctx)`` returns one number per candidate
node state, higher is better, computed as if the demand were placed on that candidate. The
planner takes the highest score; ties go to the smallest node name (deterministic).

``ctx`` is a :class:`Context`: every surviving node state (TOPSIS looks at the whole cluster),
the normal quantile ``z`` of the percentile in use, and the largest node capacities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Context:
    """What scorers may read besides the candidates."""

    states: list  # every surviving NodeState
    z: float
    max_cores: float
    max_memory: float


class Scorer:
    """Base: subclasses define ``name``, ``summary`` and ``score_one`` or ``score``."""

    name = ""
    summary = ""
    repair = False  # the planner runs the repair step (fwsg.placement.repair) after the pass

    def score(self, cands, d, ctx):
        """One score per candidate (higher is better)."""
        return [self.score_one(ns, d, ctx) for ns in cands]

    def score_one(self, ns, d, ctx):  # pragma: no cover - abstract
        raise NotImplementedError


class Basic(Scorer):
    """Proxmox's default (``basic``): the node with the fewest guests."""

    name = "basic"
    summary = "fewest guests on the node (Proxmox HA 'basic' mode)"

    def score_one(self, ns, d, ctx):
        return -float(ns.services)


class BestFit(Scorer):
    """The 2021 Proxmox proposal: the node whose free (cpu, memory) vector is nearest the guest's
    usage vector (Euclidean). Both axes are scaled by the cluster's largest node so that cores and
    bytes weigh alike while absolute sizes stay comparable across nodes."""

    name = "bestfit"
    summary = "Euclidean distance between demand and free (cpu, memory), nearest wins (2021 proposal)"

    def score_one(self, ns, d, ctx):
        free_cpu = (ns.cores - ns.cpu) / ctx.max_cores
        free_mem = ns.free_memory / ctx.max_memory
        dc = free_cpu - d.cpu / ctx.max_cores
        dm = free_mem - d.mem / ctx.max_memory
        return -math.sqrt(dc * dc + dm * dm)


class LeastAllocated(Scorer):
    """Kubernetes' NodeResourcesFit LeastAllocated on measured usage: the mean over cpu and memory
    of (capacity - used after placement) / capacity * 100, each term floored at 0."""

    name = "least-allocated"
    summary = "Kubernetes LeastAllocated: mean free fraction of cpu and memory after placement"

    def score_one(self, ns, d, ctx):
        c = max(ns.cores - ns.cpu - d.cpu, 0.0) / ns.cores
        m = max(ns.memory - ns.mem - d.mem, 0.0) / ns.memory
        return (c + m) * 50.0


class Balanced(Scorer):
    """Kubernetes' NodeResourcesBalancedAllocation on measured usage: (1 - std of the cpu and
    memory fractions after placement) * 100; for two resources std = |f_cpu - f_mem| / 2."""

    name = "balanced"
    summary = "Kubernetes BalancedAllocation: (1 - stddev of cpu and memory fractions) * 100"

    def score_one(self, ns, d, ctx):
        fc = min((ns.cpu + d.cpu) / ns.cores, 1.0)
        fm = min((ns.mem + d.mem) / ns.memory, 1.0)
        return (1.0 - abs(fc - fm) / 2.0) * 100.0


class Topsis(Scorer):
    """Proxmox's ``static`` mode, decision for decision: TOPSIS with every online node as an
    alternative (not only the candidates: the ideal and anti-ideal, and the column norms, come
    from all of them, as Proxmox scores all online nodes before the HA manager keeps the group's).
    For alternative t the criteria are, over all nodes with the guest added to t: 1 + the
    root-mean-square and 1 + the maximum of the cpu load (configured cores / node cores) and of the
    memory load (configured max memory / node memory), all costs, weights 1, 2, 5, 10 (normalised
    to sum 1). Configured sizes only, never measured usage."""

    name = "topsis"
    summary = "Proxmox 'static' TOPSIS: 1 + RMS and max cpu/memory load by configured sizes, weights 1,2,5,10"
    weights = (1.0, 2.0, 5.0, 10.0)

    def loads(self, ns, d):
        """(cpu load, memory load) of ``ns`` now, and what ``d`` adds to each."""
        return (ns.static_cores / ns.cores, ns.static_mem / ns.memory,
                d.static_cores / ns.cores, d.max_memory / ns.memory)

    def score(self, cands, d, ctx):
        alts = ctx.states
        rows = [self.loads(ns, d) for ns in alts]
        matrix = pve_criteria(rows)
        scores = topsis_scores(matrix, self.weights)
        by_name = {ns.name: sc for ns, sc in zip(alts, scores)}
        return [by_name[ns.name] for ns in cands]


class DynamicTopsis(Topsis):
    """The same TOPSIS on measured usage (per ``--use``): node cpu and memory used, plus the
    guest's measured cpu and memory: the usage-based variant Proxmox's static mode lacks."""

    name = "topsis-dynamic"
    summary = "TOPSIS as 'topsis', on measured cpu and memory use instead of configured sizes"

    def loads(self, ns, d):
        return (ns.cpu / ns.cores, ns.mem / ns.memory, d.cpu / ns.cores, d.mem / ns.memory)


def pve_criteria(rows):
    """The criteria matrix of Proxmox's static scheduler.

    ``rows[t]`` = (cpu load, memory load, cpu added, memory added) of node t; row t of the
    result is [1 + RMS cpu, 1 + max cpu, 1 + RMS memory, 1 + max memory] over all nodes when the
    guest runs on t. O(nodes) per row: the sums and the two largest loads are shared.
    """
    n = len(rows)
    out = []
    if not n:
        return out
    cols = []
    for k in (0, 1):
        loads = [r[k] for r in rows]
        sumsq = sum(x * x for x in loads)
        order = sorted(range(n), key=lambda i: -loads[i])[:2]
        cols.append((loads, sumsq, order))
    for t, r in enumerate(rows):
        row = []
        for k in (0, 1):
            loads, sumsq, order = cols[k]
            before = loads[t]
            after = before + r[k + 2]
            other = next((loads[i] for i in order if i != t), 0.0)
            row.append(1.0 + math.sqrt(max(sumsq - before * before + after * after, 0.0) / n))
            row.append(1.0 + max(other, after))
        out.append(row)
    return out


def topsis_scores(matrix, weights):
    """TOPSIS closeness (0..1, higher is better) of each row of ``matrix``, all columns costs.

    Weights are normalised to sum 1; columns are vector-normalised (divided by their Euclidean
    norm; a zero column stays zero), weighted; the ideal is the column minimum, the anti-ideal
    the maximum; score = d(anti) / (d(ideal) + d(anti)), and 0.0 when every alternative is the same.
    """
    cols = len(weights)
    total = sum(weights)
    w = [x / total for x in weights]
    norms = [math.sqrt(sum(r[j] ** 2 for r in matrix)) or 1.0 for j in range(cols)]
    v = [[r[j] / norms[j] for j in range(cols)] for r in matrix]
    best = [min(r[j] for r in v) for j in range(cols)]
    worst = [max(r[j] for r in v) for j in range(cols)]
    out = []
    for r in v:
        dp = math.sqrt(sum((w[j] * (r[j] - best[j])) ** 2 for j in range(cols)))
        dn = math.sqrt(sum((w[j] * (r[j] - worst[j])) ** 2 for j in range(cols)))
        out.append(dn / (dp + dn) if dp + dn > 0 else 0.0)
    return out


class Fwsg(Scorer):
    """fwsg's default (``fwsg``): minimise the candidate's projected peak on its dominant resource.

    When that greedy pass leaves guests unplaced, the planner's repair step moves single placed
    guests to make room for them (placing a guest beats balancing the others).

    The peak of a sum of loads is estimated from means and variances (statistical multiplexing:
    mean + z * sqrt(variance), variance from (pNN - mean) / z), not by adding percentiles, so a
    node of steady guests is not mistaken for a bursty one. Cost = max(peak cpu, peak memory
    fraction) + 0.125 * their sum + 0.25 * the committed-memory fraction (measured use + max
    memory of the guests the plan put there, over memory: keeps room for guests growing to their
    max) + 2 * max(mean cpu, mean memory fraction) (the expected dominant load: spreads what the
    nodes will carry on average, not only their peaks); score = -cost.

    After the pass (and repair) the planner's rebalancing step (:mod:`fwsg.placement.rebalance`)
    moves newly placed guests off the node with the highest projected peak while it is above
    70 % and a move lowers it.
    """

    name = "fwsg"
    summary = ("fwsg: minimise projected peak (mean + z*sigma, multiplexed) and mean of the dominant"
               " resource; then moves a guest, or takes one down for several, to restart more;"
               " then moves placed guests off the hottest node")
    repair = True

    def score(self, cands, d, ctx):
        z, sqrt = ctx.z, math.sqrt
        cm, cv, mm, mv, gmax = d.cpu_mean, d.cpu_var, d.mem_mean, d.mem_var, d.max_memory
        out = []
        for ns in cands:
            pc = (ns.cpu_mean + cm + z * sqrt(ns.cpu_var + cv)) / ns.cores
            pm = (ns.mem_mean + mm + z * sqrt(ns.mem_var + mv)) / ns.memory
            mc = (ns.cpu_mean + cm) / ns.cores
            mf = (ns.mem_mean + mm) / ns.memory
            committed = (ns.mem0 + ns.committed + gmax) / ns.memory
            out.append(-((pc if pc > pm else pm) + 0.125 * (pc + pm) + 0.25 * committed
                         + 2.0 * (mc if mc > mf else mf)))
        return out

    def score_one(self, ns, d, ctx):
        return self.score([ns], d, ctx)[0]


class Pack(Scorer):
    """Capacity-checking best fit: the node left with the least memory room under the admission
    rule after placement, then the lower projected cpu fraction. Classic best-fit bin packing,
    so that big guests still find room when memory is the binding constraint."""

    name = "pack"
    summary = "best fit: least memory room left after placement (bin packing), then lower cpu"

    def score(self, cands, d, ctx):
        scale = ctx.max_memory
        return [-(ns.free_memory - d.max_memory) / scale
                - 1e-3 * (ns.cpu + d.cpu) / ns.cores for ns in cands]


STRATEGIES = {s.name: s for s in (Fwsg(), Basic(), Topsis(), DynamicTopsis(), BestFit(), LeastAllocated(),
                                    Balanced(), Pack())}
"""Every strategy by name; ``fwsg`` is the default."""

DEFAULT_STRATEGY = "fwsg"
