"""The backend-neutral desired (or current) state: a closed set of nft object types.

A :class:`Ruleset` holds set/map declarations, their elements and chains, for fwsg's two tables
(``bridge fwsg`` and ``inet fwsg``). Elements are canonical nft literals (str), so the state read
back from the kernel and the compiled state compare equal when the kernel holds what was
compiled. Chains compare by a digest of their content, kept in the kernel as the comment of the
chain's last rule. No I/O here.
"""

import hashlib
import re
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from fwsg.members import new_elements

TABLE = "fwsg"
FAMILIES = ("bridge", "inet")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
MARKER = "fwsg:"


def check_name(name):
    """Return ``name`` if it is a safe derived object name (``[a-z0-9-]``, <= 31 chars)."""
    if not _NAME.match(name) or name in RESERVED:
        raise ValueError(f"unsafe nft object name {name!r}")
    return name


# nft keywords that cannot be used as bare chain names (the parser reads them as keywords).
RESERVED = frozenset({"fwd", "drop", "accept", "jump", "goto", "return", "continue", "queue",
                      "table", "chain", "set", "map", "element", "rule", "flush", "delete"})


@dataclass(frozen=True)
class SetDef:
    """A named set (``value_type`` None) or map in one of fwsg's tables."""

    family: str
    name: str
    key_type: str
    value_type: Optional[str] = None
    interval: bool = False

    def __post_init__(self):
        check_name(self.name)

    @property
    def key(self):
        return (self.family, self.name)

    @property
    def is_map(self):
        return self.value_type is not None



@dataclass(frozen=True)
class ChainDef:
    """A chain: ``hook`` is e.g. ``filter hook forward priority 0`` for base chains."""

    family: str
    name: str
    rules: Tuple[str, ...] = ()
    hook: Optional[str] = None
    digest: str = field(default="", compare=False)

    def __post_init__(self):
        check_name(self.name)
        h = hashlib.sha1("\n".join((self.hook or "",) + tuple(self.rules)).encode()).hexdigest()
        object.__setattr__(self, "digest", h[:16])

    @property
    def key(self):
        return (self.family, self.name)

    def rendered_rules(self):
        """The rules as committed: the last one carries the content digest as its comment."""
        rules = list(self.rules) or ["return"]
        rules[-1] = f'{rules[-1]} comment "{MARKER}{self.digest}/{len(rules)}"'
        return rules

    @property
    def kernel_rule_count(self):
        return max(1, len(self.rules))


def digest_of(comments):
    """The digest a chain's rules carry (``comments``: each rule's comment, '' for none, in
    order) if they are exactly what fwsg committed; '' for an empty chain, else ``drift``."""
    if not comments:
        return ""
    comment = comments[-1] or ""
    if not comment.startswith(MARKER):
        return "drift"
    digest, _, count = comment[len(MARKER):].partition("/")
    if not count.isdigit() or int(count) != len(comments):
        return "drift"
    return digest


@dataclass
class Ruleset:
    """Sets, elements and chains of fwsg's tables, plus ``meta`` (names -> user ids)."""

    sets: Dict[tuple, SetDef] = field(default_factory=dict)
    elements: Dict[tuple, object] = field(default_factory=dict)  # set | AddrSet | dict
    chains: Dict[tuple, ChainDef] = field(default_factory=dict)
    tables: frozenset = frozenset(FAMILIES)
    meta: dict = field(default_factory=dict)

    def add_set(self, sdef, elements=None):
        self.sets[sdef.key] = sdef
        self.elements[sdef.key] = new_elements(sdef)
        if elements:
            self.elements[sdef.key].update(elements)
        return sdef

    def add_chain(self, cdef):
        if cdef.key in self.chains and self.chains[cdef.key] != cdef:
            raise ValueError(f"chain {cdef.key} defined twice")
        self.chains[cdef.key] = cdef
        return cdef

    def counts(self):
        """Sizes for reports: tables, chains, rules, sets, maps, elements."""
        return {
            "chains": len(self.chains),
            "rules": sum(c.kernel_rule_count for c in self.chains.values()),
            "sets": sum(1 for s in self.sets.values() if not s.is_map),
            "maps": sum(1 for s in self.sets.values() if s.is_map),
            "elements": sum(len(e) for e in self.elements.values()),
        }
