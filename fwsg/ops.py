"""The operations a plan is made of: a small closed set of frozen types.

A transaction is an ordered tuple of these. The diff (:mod:`fwsg.plan`) produces them; every
consumer reads them by name: the nft renderer and netlink encoder of the nft backend, the fake
kernel, the in-memory mirror of the kernel (:func:`apply_to`), and the repair report. No I/O.

``OPS`` lists every kind; a consumer that handles each of them handles every plan.

Rule handles: the kernel numbers every rule (a handle, unique in its table). Rule operations
(AddRule, ReplaceRule, DeleteRule) change a chain rule by rule, naming rules by handle; the
mirror keeps each chain's handles in ``meta["rule_handles"]`` (a list per chain key, in rule
order) when the kernel reported them for the rules fwsg committed, and forgets them otherwise.

Element conventions: a set's elements are canonical texts (``"192.0.2.1"``,
``'"tap1" . fa:16:3e:00:00:01'``), as a tuple or, for plain address sets, a
:class:`fwsg.members.Members` (packed records that read as their texts, rendered only if read);
a map's additions are ``(key, value)`` pairs and its deletions keys only.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

from fwsg.members import new_elements
from fwsg.ruleset import ChainDef, SetDef


@dataclass(frozen=True)
class CreateTable:
    """Create fwsg's table of ``family`` (``bridge`` or ``inet``)."""

    family: str


@dataclass(frozen=True)
class DeleteTable:
    """Delete fwsg's table of ``family`` with everything in it."""

    family: str


@dataclass(frozen=True)
class CreateSet:
    """Declare a set or a map (``set.is_map``), empty."""

    set: SetDef


@dataclass(frozen=True)
class DeleteSet:
    """Delete a set or map (no rule may still reference it)."""

    set: SetDef


@dataclass(frozen=True)
class AddElements:
    """Add elements to a set (texts) or entries to a map ((key, value) pairs)."""

    set: SetDef
    elements: Tuple = ()


@dataclass(frozen=True)
class DeleteElements:
    """Delete elements of a set, or entries of a map by key; each must exist."""

    set: SetDef
    keys: Tuple = ()


@dataclass(frozen=True)
class DeclareChain:
    """Create a chain, empty (a base chain when ``chain.hook`` is set). Chains are declared
    before any is filled, so jumps between new chains resolve."""

    chain: ChainDef


@dataclass(frozen=True)
class FillChain:
    """Append the chain's rules (as committed: the last carries the digest comment) to the
    chain, which is empty at this point of the transaction."""

    chain: ChainDef


@dataclass(frozen=True)
class FlushChain:
    """Remove every rule of a chain (the chain stays)."""

    family: str
    name: str

    @property
    def key(self):
        return (self.family, self.name)


@dataclass(frozen=True)
class DeleteChain:
    """Delete an empty chain no rule or map entry jumps to any more."""

    family: str
    name: str

    @property
    def key(self):
        return (self.family, self.name)


@dataclass(frozen=True)
class AddRule:
    """Add rule ``index`` of ``chain`` (its rules as committed, ``chain.rendered_rules()``;
    ``chain`` is the chain's definition once the transaction's rule operations on it are done)
    before the rule whose handle is ``before``, or at the chain's end (None)."""

    chain: ChainDef
    index: int
    before: Optional[int] = None

    @property
    def key(self):
        return self.chain.key


@dataclass(frozen=True)
class ReplaceRule:
    """Replace the rule whose handle is ``handle`` by rule ``index`` of ``chain`` (as in
    AddRule): the chain keeps its place; only that rule changes."""

    chain: ChainDef
    index: int
    handle: int

    @property
    def key(self):
        return self.chain.key


@dataclass(frozen=True)
class DeleteRule:
    """Delete the rule whose handle is ``handle`` from a chain."""

    family: str
    name: str
    handle: int

    @property
    def key(self):
        return (self.family, self.name)


OPS = (CreateTable, DeleteTable, CreateSet, DeleteSet, AddElements, DeleteElements,
       DeclareChain, FillChain, FlushChain, DeleteChain, AddRule, ReplaceRule, DeleteRule)


def apply_to(rs, op, handles=None):
    """Apply one operation's effect to ``rs`` (a Ruleset mirroring the kernel), without the
    kernel's checks (the kernel accepted the transaction already). Chains are tracked by
    definition: FillChain installs the chain's definition (and digest); the rule operations
    install the definition they carry. ``handles``: what the kernel reported for this
    operation (FillChain: the rules' handles in order; AddRule/ReplaceRule: the rule's
    handle), kept in ``rs.meta["rule_handles"]``; a chain whose handles are not all known
    is forgotten there."""
    kind = type(op)
    if kind in _RULE_KINDS:
        _track_handles(rs, op, handles)
    if kind is AddElements:
        rs.elements[op.set.key].update(op.elements)  # a set's texts, or a map's (key, value)s
    elif kind is DeleteElements:
        elems = rs.elements[op.set.key]
        if op.set.is_map:
            for k in op.keys:
                elems.pop(k, None)
        else:
            elems.difference_update(op.keys)
    elif kind is FillChain or kind is DeclareChain or kind is AddRule or kind is ReplaceRule:
        rs.chains[op.chain.key] = op.chain
    elif kind is FlushChain or kind is DeleteRule:
        pass  # followed by a FillChain, DeleteChain or AddRule/ReplaceRule of that chain
    elif kind is DeleteChain:
        rs.chains.pop(op.key, None)
    elif kind is CreateSet:
        rs.sets[op.set.key] = op.set
        rs.elements[op.set.key] = new_elements(op.set)
    elif kind is DeleteSet:
        rs.sets.pop(op.set.key, None)
        rs.elements.pop(op.set.key, None)
    elif kind is CreateTable:
        rs.tables = rs.tables | {op.family}
    elif kind is DeleteTable:
        rs.tables = rs.tables - {op.family}
        for d in (rs.sets, rs.elements, rs.chains, rs.meta.get("rule_handles", {})):
            for k in [k for k in d if k[0] == op.family]:
                del d[k]
    else:
        raise TypeError(f"not a plan operation: {op!r}")


_RULE_KINDS = frozenset((DeclareChain, FillChain, FlushChain, DeleteChain, AddRule, ReplaceRule,
                         DeleteRule))


def _track_handles(rs, op, handles):
    """Keep ``rs.meta["rule_handles"][chain key]`` equal to the chain's rule handles in the
    kernel, in order, after ``op``; drop the entry when one of them is unknown."""
    known = rs.meta.get("rule_handles")
    if known is None:
        known = rs.meta["rule_handles"] = {}
    kind, chain = type(op), getattr(op, "chain", None)
    key = op.key if chain is None else chain.key
    if kind is DeclareChain or kind is FlushChain:
        known[key] = []
        return
    if kind is DeleteChain:
        known.pop(key, None)
        return
    if kind is FillChain:
        if handles is not None and None not in handles and known.get(key) == []:
            known[key] = list(handles)
        else:
            known.pop(key, None)
        return
    have = known.get(key)
    if have is None:
        return
    try:
        if kind is DeleteRule:
            have.remove(op.handle)
        elif handles is None:
            raise ValueError("handle not reported")
        elif kind is AddRule:
            have.insert(len(have) if op.before is None else have.index(op.before), handles)
        else:
            have[have.index(op.handle)] = handles
    except ValueError:
        known.pop(key, None)
