"""The cluster document: parsing and validation into frozen objects.

Pure: no I/O here. :func:`parse_cluster` takes the decoded JSON (a dict) and returns a
:class:`Cluster`, or raises :class:`fwsg.errors.ValidationError` naming the offending field
(``guests.vm-12.memory: -4 must be >= 0``). The schema is documented in ``docs/placement.md``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from fwsg.errors import ValidationError

SCHEMA = "fwsg.cluster/1"

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1 << 10,
    "m": 1000**2, "mb": 1000**2, "mib": 1 << 20,
    "g": 1000**3, "gb": 1000**3, "gib": 1 << 30,
    "t": 1000**4, "tb": 1000**4, "tib": 1 << 40,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


@dataclass(frozen=True)
class Stat:
    """One metric as the probe reports it: the latest sample, the window mean and a percentile.

    Invariant: all three are finite and >= 0. ``peak`` is the percentile the document carries
    (``p95`` by default); ``mean`` <= ``peak`` is not required (short windows).
    """

    latest: float
    mean: float
    peak: float

    def get(self, which):
        """The value named ``which``: ``latest``, ``mean`` or ``peak``."""
        return getattr(self, which)


@dataclass(frozen=True)
class ClusterNode:
    """A hypervisor: capacity, where it is, and what it currently uses (whole host)."""

    name: str
    cores: int
    memory: int
    online: bool = True
    storages: frozenset = frozenset()
    networks: frozenset = frozenset()
    cpu: Stat | None = None  # cores in use, whole host; None: derive from its guests
    mem: Stat | None = None  # bytes used, whole host; None: derive from its guests
    conntrack_count: int = 0
    conntrack_max: int = 0  # 0: unknown, not checked


@dataclass(frozen=True)
class Guest:
    """A VM or container: configured size, measured usage, requirements."""

    name: str
    node: str
    cores: int
    memory: int  # max memory, bytes
    cpu: Stat | None = None  # cores used; None: assume ``cores`` (worst case)
    mem: Stat | None = None  # bytes used; None: assume ``memory`` (worst case)
    conntrack: int = 0
    storages: frozenset = frozenset()
    networks: frozenset = frozenset()
    group: str | None = None
    priority: int = 0  # HA restart priority: higher is placed first and listed first when unplaced


@dataclass(frozen=True)
class Group:
    """An HA group: the nodes a guest may run on, with priorities (higher first)."""

    name: str
    nodes: dict = field(default_factory=dict)  # node name -> priority (int)
    restricted: bool = False


@dataclass(frozen=True)
class AffinityRule:
    """A hard rule between guests: ``affinity`` (same node) or ``anti-affinity`` (distinct nodes)."""

    index: int
    kind: str
    guests: tuple
    name: str = ""

    @property
    def label(self):
        """How messages name this rule."""
        return f"rule '{self.name}'" if self.name else f"rules[{self.index}]"


@dataclass(frozen=True)
class Cluster:
    """A validated cluster document. Invariant: every reference (guest node, group, rule member,
    group node) names an object that exists."""

    nodes: dict  # name -> ClusterNode (document order)
    guests: dict  # name -> Guest (document order)
    groups: dict = field(default_factory=dict)
    rules: tuple = ()
    peak_key: str = "p95"  # the percentile read from usage metrics

    def guests_on(self, node):
        """The guests whose ``node`` is ``node``, in document order."""
        return [g for g in self.guests.values() if g.node == node]


# -- field readers -------------------------------------------------------------------------

def _need(obj, key, path):
    if not isinstance(obj, dict):
        raise ValidationError(path, f"expected an object, got {_show(obj)}")
    if key not in obj:
        raise ValidationError(f"{path}.{key}" if path else key, "missing required field")
    return obj[key]


def _show(value):
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def number(value, path, *, minimum=0.0, integer=False):
    """``value`` as a finite number >= ``minimum`` (an int if ``integer``); else ValidationError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(path, f"{_show(value)} is not a number")
    if not math.isfinite(value):
        raise ValidationError(path, f"{_show(value)} is not a finite number")
    if integer and value != int(value):
        raise ValidationError(path, f"{_show(value)} is not an integer")
    if value < minimum:
        raise ValidationError(path, f"{_show(value)} must be >= {minimum:g}")
    return int(value) if integer else float(value)


def size(value, path):
    """A size in bytes: a number, or a string with a unit (``"8GiB"``, ``"512MiB"``, ``"4G"``)."""
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        unit = m.group(2).lower() if m else None
        if not m or unit not in _UNITS:
            raise ValidationError(path, f"{value!r} is not a size (bytes, or e.g. '8GiB', '512MiB')")
        return int(float(m.group(1)) * _UNITS[unit])
    return int(number(value, path))


def _names(value, path):
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValidationError(path, f"expected a list of names, got {_show(value)}")
    return frozenset(value)


def _bool(value, path):
    if not isinstance(value, bool):
        raise ValidationError(path, f"{_show(value)} is not true or false")
    return value


def stat(value, path, *, peak_key="p95", scale=None):
    """A :class:`Stat` from a probe metric (``{"latest", "mean", "p95"}``) or a plain number.

    A plain number stands for all three. A metric object needs at least one of the keys; the
    missing ones take the value of the others (peak falls back to the largest given).
    ``scale`` parses each value (``size`` for bytes); default: a number >= 0.
    """
    parse = scale or (lambda v, p: number(v, p))
    if not isinstance(value, dict):
        v = parse(value, path)
        return Stat(v, v, v)
    known = {"latest", "mean", "unit"} | {k for k in value if re.fullmatch(r"p[0-9]{1,2}(\.[0-9]+)?", k)}
    for k in value:
        if k not in known:
            raise ValidationError(f"{path}.{k}", "unknown field (expected latest, mean, pNN)")
    got = {k: parse(v, f"{path}.{k}") for k, v in value.items() if k != "unit"}
    if not got:
        raise ValidationError(path, f"needs at least one of latest, mean, {peak_key}")
    peak = got.get(peak_key)
    if peak is None:
        peak = max(got.values())
    latest = got.get("latest", got.get("mean", peak))
    mean = got.get("mean", latest)
    return Stat(latest, mean, peak)


# -- the document --------------------------------------------------------------------------

_NODE_FIELDS = {"cores", "memory", "online", "storages", "networks", "usage", "conntrack"}
_GUEST_FIELDS = {"node", "cores", "memory", "usage", "storages", "networks", "group", "type", "conntrack",
                 "priority"}
_GROUP_FIELDS = {"nodes", "restricted"}
_RULE_FIELDS = {"type", "guests", "name"}
RULE_KINDS = ("affinity", "anti-affinity")


def _check_fields(obj, allowed, path):
    if not isinstance(obj, dict):
        raise ValidationError(path, f"expected an object, got {_show(obj)}")
    for k in obj:
        if k not in allowed:
            raise ValidationError(f"{path}.{k}", f"unknown field (expected one of: {', '.join(sorted(allowed))})")


def _usage(obj, path, peak_key):
    """(cpu Stat|None, mem Stat|None) from a ``usage`` object."""
    if obj is None:
        return None, None
    _check_fields(obj, {"cpu", "memory"}, path)
    cpu = stat(obj["cpu"], f"{path}.cpu", peak_key=peak_key) if "cpu" in obj else None
    mem = stat(obj["memory"], f"{path}.memory", peak_key=peak_key, scale=size) if "memory" in obj else None
    return cpu, mem


def _node(name, obj, path, peak_key):
    _check_fields(obj, _NODE_FIELDS, path)
    cores = number(_need(obj, "cores", path), f"{path}.cores", minimum=1, integer=True)
    memory = size(_need(obj, "memory", path), f"{path}.memory")
    if memory <= 0:
        raise ValidationError(f"{path}.memory", f"{memory} must be > 0")
    cpu, mem = _usage(obj.get("usage"), f"{path}.usage", peak_key)
    ct = obj.get("conntrack") or {}
    _check_fields(ct, {"count", "max"}, f"{path}.conntrack")
    ct_count = number(ct.get("count", 0), f"{path}.conntrack.count", integer=True)
    ct_max = number(ct.get("max", 0), f"{path}.conntrack.max", integer=True)
    return ClusterNode(
        name=name, cores=cores, memory=memory,
        online=_bool(obj.get("online", True), f"{path}.online"),
        storages=_names(obj.get("storages"), f"{path}.storages"),
        networks=_names(obj.get("networks"), f"{path}.networks"),
        cpu=cpu, mem=mem, conntrack_count=ct_count, conntrack_max=ct_max,
    )


def _guest(name, obj, path, peak_key):
    _check_fields(obj, _GUEST_FIELDS, path)
    node = _need(obj, "node", path)
    if not isinstance(node, str):
        raise ValidationError(f"{path}.node", f"{_show(node)} is not a node name")
    cores = number(_need(obj, "cores", path), f"{path}.cores", minimum=1, integer=True)
    memory = size(_need(obj, "memory", path), f"{path}.memory")
    cpu, mem = _usage(obj.get("usage"), f"{path}.usage", peak_key)
    group = obj.get("group")
    if group is not None and not isinstance(group, str):
        raise ValidationError(f"{path}.group", f"{_show(group)} is not a group name")
    return Guest(
        name=name, node=node, cores=cores, memory=memory, cpu=cpu, mem=mem,
        conntrack=number(obj.get("conntrack", 0), f"{path}.conntrack", integer=True),
        storages=_names(obj.get("storages"), f"{path}.storages"),
        networks=_names(obj.get("networks"), f"{path}.networks"),
        group=group,
        priority=int(number(obj.get("priority", 0), f"{path}.priority", minimum=-1000000, integer=True)),
    )


def _group(name, obj, path, nodes):
    _check_fields(obj, _GROUP_FIELDS, path)
    raw = _need(obj, "nodes", path)
    prio = {}
    if isinstance(raw, list):  # ["node1", "node2"]: all priority 0
        raw = {n: 0 for n in raw if isinstance(n, str)} if all(isinstance(n, str) for n in raw) else None
    if not isinstance(raw, dict) or not raw:
        raise ValidationError(f"{path}.nodes", "expected a non-empty object {node: priority} or list of nodes")
    for n, p in raw.items():
        if n not in nodes:
            raise ValidationError(f"{path}.nodes.{n}", f"unknown node {n!r}")
        if isinstance(p, bool) or not isinstance(p, int):
            raise ValidationError(f"{path}.nodes.{n}", f"priority {_show(p)} is not an integer")
        prio[n] = p
    return Group(name=name, nodes=prio, restricted=_bool(obj.get("restricted", False), f"{path}.restricted"))


def _rule(i, obj, path, guests):
    _check_fields(obj, _RULE_FIELDS, path)
    kind = _need(obj, "type", path)
    if kind not in RULE_KINDS:
        raise ValidationError(f"{path}.type", f"{_show(kind)} is not one of {', '.join(RULE_KINDS)}")
    members = _need(obj, "guests", path)
    if not isinstance(members, list) or len(members) < 2:
        raise ValidationError(f"{path}.guests", "expected a list of at least two guests")
    for j, g in enumerate(members):
        if g not in guests:
            raise ValidationError(f"{path}.guests[{j}]", f"unknown guest {_show(g)}")
    if len(set(members)) != len(members):
        raise ValidationError(f"{path}.guests", "lists a guest twice")
    name = obj.get("name", "")
    if not isinstance(name, str):
        raise ValidationError(f"{path}.name", f"{_show(name)} is not a string")
    return AffinityRule(index=i, kind=kind, guests=tuple(members), name=name)


def _mapping(doc, key):
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ValidationError(key, f"expected an object keyed by name, got {_show(value)}")
    for name in value:
        if not name:
            raise ValidationError(key, "empty name")
    return value


def parse_cluster(doc, *, peak_key="p95"):
    """Validate the decoded cluster document ``doc`` and return a :class:`Cluster`.

    ``peak_key`` names the percentile read from usage metrics (``p95``). Raises
    ValidationError on the first bad field; never returns a partially valid cluster.
    """
    if not isinstance(doc, dict):
        raise ValidationError("", f"the cluster document must be a JSON object, got {_show(doc)}")
    _check_fields(doc, {"schema", "nodes", "guests", "groups", "rules"}, "")
    schema = doc.get("schema", SCHEMA)
    if schema != SCHEMA:
        raise ValidationError("schema", f"{_show(schema)} is not supported (expected {SCHEMA!r})")
    raw_nodes = _mapping(doc, "nodes")
    if not raw_nodes:
        raise ValidationError("nodes", "at least one node is required")
    nodes = {n: _node(n, o, f"nodes.{n}", peak_key) for n, o in raw_nodes.items()}
    groups = {n: _group(n, o, f"groups.{n}", nodes) for n, o in _mapping(doc, "groups").items()}
    guests = {}
    for n, o in _mapping(doc, "guests").items():
        g = _guest(n, o, f"guests.{n}", peak_key)
        if g.node not in nodes:
            raise ValidationError(f"guests.{n}.node", f"unknown node {g.node!r}")
        if g.group is not None and g.group not in groups:
            raise ValidationError(f"guests.{n}.group", f"unknown group {g.group!r}")
        guests[n] = g
    rules = doc.get("rules", [])
    if not isinstance(rules, list):
        raise ValidationError("rules", f"expected a list, got {_show(rules)}")
    parsed = tuple(_rule(i, r, f"rules[{i}]", guests) for i, r in enumerate(rules))
    return Cluster(nodes=nodes, guests=guests, groups=groups, rules=parsed, peak_key=peak_key)
