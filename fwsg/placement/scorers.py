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
    fallback = ()  # strategies re-run by the planner when this one leaves guests unplaced

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
        free_mem = (ns.memory - ns.mem - ns.committed) / ctx.max_memory
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
    """Proxmox's ``static`` mode: TOPSIS over four cost criteria computed for the whole cluster as
    if the guest ran on the candidate: root-mean-square and maximum of the cpu load (configured
    cores / node cores) and of the memory load (configured max memory / node memory), weights
    1, 2, 5, 10. Like Proxmox, it uses configured sizes only, never measured usage."""

    name = "topsis"
    summary = "Proxmox 'static' TOPSIS: RMS and max cpu/memory load by configured sizes, weights 1,2,5,10"
    weights = (1.0, 2.0, 5.0, 10.0)

    def score(self, cands, d, ctx):
        states = ctx.states
        n = len(states)
        per_res = []
        for attr, cap in (("static_cores", "cores"), ("static_mem", "memory")):
            loads = {s.name: getattr(s, attr) / getattr(s, cap) for s in states}
            ranked = sorted(loads.items(), key=lambda kv: -kv[1])[:2]
            per_res.append((loads, sum(x * x for x in loads.values()), ranked))
        crit = []
        for ns in cands:
            row = []
            for (loads, sumsq, ranked), add in zip(per_res, (d.static_cores / ns.cores,
                                                             d.max_memory / ns.memory)):
                before = loads[ns.name]
                after = before + add
                others = next((x for name, x in ranked if name != ns.name), 0.0)
                row.append(math.sqrt((sumsq - before * before + after * after) / n))
                row.append(max(others, after))
            crit.append(row)
        return topsis_scores(crit, self.weights)


def topsis_scores(matrix, weights):
    """TOPSIS closeness (0..1, higher is better) of each row of ``matrix``, all columns costs.

    Columns are vector-normalised (divided by their Euclidean norm), weighted; the ideal is the
    column minimum, the anti-ideal the maximum; score = d(anti) / (d(ideal) + d(anti)), and 0.0
    when every alternative is identical.
    """
    cols = len(weights)
    norms = [math.sqrt(sum(r[j] ** 2 for r in matrix)) or 1.0 for j in range(cols)]
    v = [[weights[j] * r[j] / norms[j] for j in range(cols)] for r in matrix]
    best = [min(r[j] for r in v) for j in range(cols)]
    worst = [max(r[j] for r in v) for j in range(cols)]
    out = []
    for r in v:
        dp = math.sqrt(sum((r[j] - best[j]) ** 2 for j in range(cols)))
        dn = math.sqrt(sum((r[j] - worst[j]) ** 2 for j in range(cols)))
        out.append(dn / (dp + dn) if dp + dn > 0 else 0.0)
    return out


class Fwsg(Scorer):
    """fwsg's default (``fwsg``): minimise the candidate's projected peak on its dominant resource.

    When that greedy pass leaves guests unplaced, the planner re-runs the other strategies
    (``pack`` first) and keeps the pass that places the most guests: placing a guest beats
    balancing the others, and greedy passes fail on different instances.

    The peak of a sum of loads is estimated from means and variances (statistical multiplexing:
    mean + z * sqrt(variance), variance from (pNN - mean) / z), not by adding percentiles, so a
    node of steady guests is not mistaken for a bursty one. Cost = max(peak cpu, peak memory
    fraction) + 0.25 * their mean + 0.25 * the committed-memory fraction (keeps headroom for
    guests growing to their max); score = -cost.
    """

    name = "fwsg"
    summary = ("fwsg: minimise projected peak (mean + z*sigma, multiplexed) of the dominant resource;"
               " if guests stay unplaced, keeps the pass of another strategy that places more")
    fallback = ("pack", "least-allocated", "balanced", "basic", "bestfit", "topsis")

    def score(self, cands, d, ctx):
        z, sqrt = ctx.z, math.sqrt
        cm, cv, mm, mv, gmax = d.cpu_mean, d.cpu_var, d.mem_mean, d.mem_var, d.max_memory
        out = []
        for ns in cands:
            pc = (ns.cpu_mean + cm + z * sqrt(ns.cpu_var + cv)) / ns.cores
            pm = (ns.mem_mean + mm + z * sqrt(ns.mem_var + mv)) / ns.memory
            committed = (ns.mem + ns.committed + gmax) / ns.memory
            out.append(-((pc if pc > pm else pm) + 0.125 * (pc + pm) + 0.25 * committed))
        return out

    def score_one(self, ns, d, ctx):
        return self.score([ns], d, ctx)[0]


class Pack(Scorer):
    """Tightest memory fit: the node left with the least memory headroom (total - used - committed
    max memory) after placement, then the lower projected cpu fraction. Packs guests so that big
    ones still find room when memory is the binding constraint."""

    name = "pack"
    summary = "tightest memory headroom after placement (bin packing), then lower cpu"

    def score(self, cands, d, ctx):
        scale = ctx.max_memory
        return [-(ns.memory - ns.mem - ns.committed - d.max_memory) / scale
                - 1e-3 * (ns.cpu + d.cpu) / ns.cores for ns in cands]


STRATEGIES = {s.name: s for s in (Fwsg(), Basic(), Topsis(), BestFit(), LeastAllocated(), Balanced(), Pack())}
"""Every strategy by name; ``fwsg`` is the default."""

DEFAULT_STRATEGY = "fwsg"
