"""Builders of small cluster documents for the placement tests (hand-sized numbers)."""

from fwsg.placement import parse_cluster
from fwsg.placement.state import Demand, NodeState, z_for

GiB = 1 << 30


def node(cores=8, memory=16 * GiB, cpu=None, mem=None, **extra):
    """A node document; ``cpu``/``mem`` are flat usage numbers (latest = mean = p95) or dicts."""
    doc = {"cores": cores, "memory": memory, **extra}
    return _with_usage(doc, cpu, mem)


def guest(on, cores=2, memory=4 * GiB, cpu=None, mem=None, **extra):
    """A guest document on node ``on``."""
    doc = {"node": on, "cores": cores, "memory": memory, **extra}
    return _with_usage(doc, cpu, mem)


def cluster(nodes, guests=None, groups=None, rules=None):
    """Parse a document made of the given parts."""
    doc = {"nodes": nodes, "guests": guests or {}}
    if groups:
        doc["groups"] = groups
    if rules:
        doc["rules"] = rules
    return parse_cluster(doc)


def state(cl, name, use="peak", limits=None):
    """The NodeState of node ``name`` with the guests the document puts on it."""
    return NodeState(cl.nodes[name], cl.guests_on(name), use, z_for(cl.peak_key), limits)


def demand(cl, *names, use="peak"):
    """The Demand of the named guests (one unit), group names resolved to Group objects."""
    d = Demand([cl.guests[n] for n in names], use, z_for(cl.peak_key))
    d.groups = tuple(cl.groups[g] for g in d.groups)
    return d


def _with_usage(doc, cpu, mem):
    """``doc`` with a usage section holding whichever of cpu and memory are given."""
    usage = {k: v for k, v in (("cpu", cpu), ("memory", mem)) if v is not None}
    if usage:
        doc["usage"] = usage
    return doc
