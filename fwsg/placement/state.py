"""Incremental accounting: what a unit of guests demands, and what a node has after each decision.

Pure: no I/O here. A :class:`NodeState` starts from the node's measured usage and is updated by
:meth:`NodeState.add` for every guest the plan puts on it, so each decision sees the projected
load left by the previous ones.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from fwsg.placement import admission

USES = ("peak", "mean", "latest")


def z_for(peak_key):
    """The standard-normal quantile of percentile ``peak_key`` (``p95`` -> 1.645), at least 0.5.

    Used to turn (mean, pNN) into a standard deviation, assuming roughly normal noise.
    """
    q = float(peak_key[1:]) / 100.0
    return max(NormalDist().inv_cdf(min(max(q, 0.5), 0.999)), 0.5)


class Demand:
    """What placing a unit (one guest, or guests bound together by affinity) asks of a node.

    Sums over members, except ``cores`` (the largest member: a node needs that many cores).
    """

    __slots__ = ("names", "guests", "cores", "max_memory", "cpu", "cpu_mean", "cpu_var", "mem",
                 "mem_mean", "mem_var", "conntrack", "storages", "networks", "groups",
                 "static_cores", "pinned", "pinned_by", "avoid", "source", "priority", "need")

    def __init__(self, guests, use, z):
        self.guests = tuple(guests)
        self.names = tuple(g.name for g in guests)
        self.source = guests[0].node
        self.cores = max(g.cores for g in guests)
        self.static_cores = sum(g.cores for g in guests)
        self.max_memory = sum(g.memory for g in guests)
        self.cpu = self.cpu_mean = self.cpu_var = 0.0
        self.mem = self.mem_mean = self.mem_var = 0.0
        for g in guests:
            c, cm, cv = guest_cpu(g, use, z)
            m, mm, mv = guest_mem(g, use, z)
            self.cpu += c
            self.cpu_mean += cm
            self.cpu_var += cv
            self.mem += m
            self.mem_mean += mm
            self.mem_var += mv
        self.conntrack = sum(g.conntrack for g in guests)
        self.priority = max(g.priority for g in guests)
        self.need = (self.max_memory, self.cpu, self.conntrack)  # what the admission rule weighs
        self.storages = frozenset().union(*(g.storages for g in guests))
        self.networks = frozenset().union(*(g.networks for g in guests))
        self.groups = tuple(dict.fromkeys(g.group for g in guests if g.group is not None))  # names;
        # the planner swaps in the Group objects
        self.pinned = None  # node name the unit must go to (affinity with a guest staying there)
        self.pinned_by = None  # the AffinityRule that pins it
        self.avoid = {}  # guest name -> AffinityRule: guests this unit must not share a node with


def _spread(stat, use, z, cap):
    value = min(stat.get(use), cap)
    mean = min(stat.mean, cap)
    sigma = max(min(stat.peak, cap) - mean, 0.0) / z
    return value, mean, sigma * sigma


def guest_cpu(g, use, z):
    """(cores used per ``use``, mean, variance) of guest ``g``; its size when unmeasured.

    Usage is capped at the guest's configured cores.
    """
    if g.cpu is None:
        return float(g.cores), float(g.cores), 0.0
    return _spread(g.cpu, use, z, float(g.cores))


def guest_mem(g, use, z):
    """(bytes used per ``use``, mean, variance) of guest ``g``; its max memory when unmeasured.

    Usage is capped at the guest's max memory.
    """
    if g.mem is None:
        return float(g.memory), float(g.memory), 0.0
    return _spread(g.mem, use, z, float(g.memory))


class NodeState:
    """A surviving node's projected usage during planning.

    ``cpu``/``mem`` are the projected usage (per ``use``) the usage-based scorers read;
    ``*_mean``/``*_var`` feed the fwsg scorer; ``committed`` is the max memory of guests the plan
    has put here, ``placed_cpu``/``placed_ct`` their cpu and conntrack entries: with ``budget``
    (:func:`fwsg.placement.admission.budget`) what the admission rule checks. ``static_*`` are
    configured sizes (Proxmox's static model); ``guests`` the names of every guest on it, staying
    or placed; ``units`` the demands the plan put here, in order.
    """

    __slots__ = ("node", "name", "cores", "memory", "cpu", "cpu_mean", "cpu_var", "mem",
                 "mem_mean", "mem_var", "committed", "conntrack", "conntrack_max", "services",
                 "static_cores", "static_mem", "guests", "placed", "cpu0", "mem0", "services0",
                 "budget", "placed_cpu", "placed_ct", "units", "entry")

    def __init__(self, node, staying, use, z, limits=None):
        self.node = node
        self.name = node.name
        self.cores = node.cores
        self.memory = node.memory
        self.guests = {g.name for g in staying}
        self.placed = []
        self.services = len(staying)
        self.static_cores = sum(g.cores for g in staying)
        self.static_mem = sum(g.memory for g in staying)
        self.cpu, self.cpu_mean, self.cpu_var = _node_usage(node.cpu, staying, guest_cpu, use, z)
        self.mem, self.mem_mean, self.mem_var = _node_usage(node.mem, staying, guest_mem, use, z)
        self.committed = 0.0
        self.conntrack = node.conntrack_count
        self.conntrack_max = node.conntrack_max
        self.cpu0, self.mem0, self.services0 = self.cpu, self.mem, self.services
        self.budget = admission.budget(node, self.mem, self.cpu, limits or admission.Limits())
        self.placed_cpu = 0.0
        self.placed_ct = 0
        self.units = []
        self.entry = (self.budget, self.taken(), node)  # what admission.capacity_reasons reads

    @property
    def free_memory(self):
        """Max memory a further guest may still bring here under the admission rule."""
        return self.budget.memory - self.committed

    def reason(self, d):
        """None when the admission rule lets this node also take demand ``d``, else why not."""
        return admission.capacity_reason(self.budget, self.taken(), d.need, self.node)

    def taken(self):
        """(max memory, cpu, conntrack) the plan has put here: what the admission rule subtracts."""
        return (self.committed, self.placed_cpu, self.placed_ct)

    def add(self, d, placed=True):
        """Account demand ``d`` as placed here (the incremental update). ``placed`` False: a
        running guest the plan migrates here (charged like a restart, but not one of the plan's
        movable units nor listed among the guests it placed)."""
        self.placed_cpu += d.cpu
        self.placed_ct += d.conntrack
        if placed:
            self.units.append(d)
        self.cpu += d.cpu
        self.cpu_mean += d.cpu_mean
        self.cpu_var += d.cpu_var
        self.mem += d.mem
        self.mem_mean += d.mem_mean
        self.mem_var += d.mem_var
        self.committed += d.max_memory
        self.conntrack += d.conntrack
        self.services += len(d.names)
        self.static_cores += d.static_cores
        self.static_mem += d.max_memory
        self.guests.update(d.names)
        if placed:
            self.placed.extend(d.names)
        self.entry = (self.budget, self.taken(), self.node)

    def depart(self, d):
        """A running guest (demand ``d``) migrates away: its load leaves the projection, but the
        admission budget is not credited and its name stays among ``guests``, so every hard
        constraint holds whether the migration happens before or after the restarts."""
        self.cpu -= d.cpu
        self.cpu_mean -= d.cpu_mean
        self.cpu_var = max(self.cpu_var - d.cpu_var, 0.0)
        self.mem -= d.mem
        self.mem_mean -= d.mem_mean
        self.mem_var = max(self.mem_var - d.mem_var, 0.0)
        self.services -= len(d.names)
        self.static_cores -= d.static_cores
        self.static_mem -= d.max_memory

    def remove(self, d):
        """Undo :meth:`add` of demand ``d`` (the plan moves it elsewhere)."""
        self.depart(d)
        self.placed_cpu -= d.cpu
        self.placed_ct -= d.conntrack
        self.units.remove(d)
        self.committed -= d.max_memory
        self.conntrack -= d.conntrack
        self.guests.difference_update(d.names)
        for n in d.names:
            self.placed.remove(n)
        self.entry = (self.budget, self.taken(), self.node)


def _node_usage(stat, staying, per_guest, use, z):
    """(value per ``use``, mean, variance) of a node: measured if given, else its guests' sum."""
    if stat is not None:
        sigma = max(stat.peak - stat.mean, 0.0) / z
        return stat.get(use), stat.mean, sigma * sigma
    value = mean = var = 0.0
    for g in staying:
        v, m, s = per_guest(g, use, z)
        value += v
        mean += m
        var += s
    return value, mean, var


def peak_estimate(mean, var, z):
    """The percentile-``z`` estimate of a sum of independent loads: mean + z * sqrt(variance)."""
    return mean + z * math.sqrt(var)
