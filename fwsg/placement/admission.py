"""The admission model: the one rule deciding whether a node may take a guest.

Pure: no I/O here. The planner (:mod:`fwsg.placement.planner`, incrementally), the independent
check (:mod:`fwsg.placement.verify`, from scratch) and the benchmark's exact oracle all call these
functions, so they can never disagree about what fits.

Hard (a node failing one is never chosen):

- **memory**: the node's measured use (per ``use``, default the percentile) + the max memory of
  every guest the plan restarts there <= (1 - ``memory_reserve``) x its memory. A restarted guest
  may grow back to its configured maximum, so it is counted at that; guests that stay are counted
  at what they were measured using (they will not grow past it in the next minutes any more than
  they did in the window). Memory overcommit ends in the OOM killer, so this never bends;
- **cores**: the node has at least as many cores as the guest has vCPUs;
- **storages**, **networks**: present on the node; **restricted HA group**: the node is a member;
- **affinity** (guests bound together, a partner staying pins them) and **anti-affinity**;
- **conntrack**: the node's entries + those the guests bring <= ``conntrack_threshold`` x its max;
- **cpu**, only with ``cpu_limit``: measured cpu + the guests' cpu (per ``use``) <= cpu_limit x
  cores. Without it cpu is soft: overcommitting cpu slows guests down, it does not kill them, so
  the scorers weigh it instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fwsg.errors import ValidationError
from fwsg.quantities import fmt_bytes

INF = math.inf


@dataclass(frozen=True)
class Limits:
    """The operator's knobs of the admission model (fractions of a node's capacity)."""

    memory_reserve: float = 0.0  # share of each node's memory never promised to guests
    cpu_limit: float | None = None  # None: cpu is soft; else hard limit on projected cpu
    conntrack_threshold: float = 0.95  # projected conntrack entries vs nf_conntrack_max

    def check(self):
        """Raise ValidationError naming the field when a knob is out of range; else return self."""
        if not 0 <= self.memory_reserve < 1:
            raise ValidationError("memory_reserve", f"{self.memory_reserve} must be in [0, 1)")
        if self.cpu_limit is not None and not 0 < self.cpu_limit <= 10:
            raise ValidationError("cpu_limit", f"{self.cpu_limit} must be in (0, 10]")
        if not 0 < self.conntrack_threshold <= 1:
            raise ValidationError("conntrack_threshold", f"{self.conntrack_threshold} must be in (0, 1]")
        return self


@dataclass(frozen=True)
class Budget:
    """What a surviving node can still take before the plan puts anything there.

    ``memory`` bytes of max memory, ``cpu`` cores (INF when cpu is soft), ``conntrack`` entries
    (INF when the node reported no max). May be negative: the node is already past the limit.
    """

    memory: float
    cpu: float
    conntrack: float


def budget(node, mem_used, cpu_used, limits):
    """The :class:`Budget` of ``node`` given its measured memory and cpu use (guests of failed
    nodes excluded) under ``limits``."""
    mem = (1.0 - limits.memory_reserve) * node.memory - mem_used
    cpu = INF if limits.cpu_limit is None else limits.cpu_limit * node.cores - cpu_used
    ct = INF if not node.conntrack_max else limits.conntrack_threshold * node.conntrack_max - node.conntrack_count
    return Budget(mem, cpu, ct)


_SLACK = 1e-9  # relative: sums taken in another order must not flip a decision


class Reason:
    """A rejection message formatted only when read (planning rejects many nodes per guest and
    most messages are never shown). Compares equal to its text."""

    __slots__ = ("fmt", "args")

    def __init__(self, fmt, *args):
        self.fmt, self.args = fmt, args

    def __str__(self):
        return self.fmt(*self.args)

    def __repr__(self):
        return repr(str(self))

    def __eq__(self, other):
        return str(self) == str(other)

    def __contains__(self, text):
        return text in str(self)

    __hash__ = None


def _memory_msg(room, need):
    return f"memory room {fmt_bytes(max(room, 0))} < {fmt_bytes(need)} max memory"


def _cpu_msg(room, need):
    return f"cpu room {max(room, 0):.2f} < {need:.2f} cores used (--cpu-limit)"


def _conntrack_msg(room, need):
    return f"conntrack room {max(int(room), 0)} < {need} entries"


def capacity_reason(b, placed, need, node):
    """None when a node with budget ``b``, which the plan already gave ``placed`` = (max memory,
    cpu, conntrack), can also take ``need`` = (max memory, cpu, conntrack); else one line why.

    The memory rule, the optional cpu limit and the conntrack room, in that order.
    """
    return capacity_reasons(((b, placed, node),), need)[0]


def capacity_reasons(entries, need):
    """:func:`capacity_reason` for many nodes at once: ``entries`` are (budget, placed, node);
    one answer per entry, in order. This loop is the rule; the planner calls it once per unit."""
    nm, nc, nt = need
    out = []
    for b, (pm, pc, pt), node in entries:
        room = b.memory - pm
        if nm > room + _SLACK * node.memory:
            out.append(Reason(_memory_msg, room, nm))
            continue
        if b.cpu != INF:
            room = b.cpu - pc
            if nc > room + _SLACK * node.cores:
                out.append(Reason(_cpu_msg, room, nc))
                continue
        if b.conntrack != INF:
            room = b.conntrack - pt
            if nt > room + _SLACK * node.conntrack_max:
                out.append(Reason(_conntrack_msg, room, nt))
                continue
        out.append(None)
    return out


def cores_reason(node, cores):
    """None when ``node`` has at least ``cores`` cores (the largest guest's vCPUs)."""
    return None if node.cores >= cores else f"{node.cores} cores < {cores} guest cores"


def storages_reason(node, storages):
    """None when every storage in ``storages`` is present on ``node``."""
    missing = storages - node.storages
    return f"missing storage {', '.join(sorted(missing))}" if missing else None


def networks_reason(node, networks):
    """None when every network (bridge) in ``networks`` is present on ``node``."""
    missing = networks - node.networks
    return f"missing network {', '.join(sorted(missing))}" if missing else None


def group_reason(node, groups):
    """None when every restricted group among ``groups`` (Group objects) lists ``node``."""
    for gr in groups:
        if gr.restricted and node.name not in gr.nodes:
            return f"not in restricted group '{gr.name}'"
    return None
