"""The iptables backend's state, desired or read back: chains, ipsets and their members.

- ``chains``: (family, table, name) -> :class:`Chain` (desired) or its digest (read back).
  family is 4 (iptables), 6 (ip6tables) or "eb" (ebtables). A chain's last rule carries
  ``fwsg:<digest>`` as a comment, so a later run compares chains without re-rendering them.
- ``bags``: (family, table, name) -> set of rule texts: the dispatch chains, whose rule order
  does not matter and whose rules are added and deleted one by one (``-A`` / ``-D``).
- ``sets`` / ``elements``: ipset name -> :class:`SetSpec` / set of canonical members.
- ``hooks``: the (family, table, built-in chain) that jump to fwsg's entry chain.

No I/O here.
"""

from dataclasses import dataclass, field
from functools import cached_property
from typing import Tuple

from fwsg.backends.iptables import names

MIN_MAXELEM = 65536


@dataclass(frozen=True)
class Chain:
    """An ordered chain: ``rules`` then a final rule with verdict ``final`` carrying the digest."""

    rules: Tuple[str, ...]
    final: str = "RETURN"

    @cached_property
    def digest(self):
        return names.digest("\n".join(self.rules) + "\n" + self.final, 12)

    def count(self):
        return len(self.rules) + 1

    def lines(self, name, ebtables=False):
        """The ``-A`` lines of this chain (restore syntax)."""
        out = [f"-A {name} {r}" for r in self.rules]
        if ebtables:
            out.append(f"-A {name} -j {self.final}")
        else:
            out.append(f'-A {name} -m comment --comment "{names.COMMENT}{self.digest}:'
                       f'{self.count()}" -j {self.final}')
        return out


def eb_chain_name(port_id, chain):
    """ebtables has no comment match: a port's ARP chain is named by its content instead."""
    return f"fwsg-a{names.digest(port_id, 6)}-{chain.digest[:8]}-{chain.count()}"


@dataclass(frozen=True)
class SetSpec:
    family: int
    maxelem: int

    def fits(self, n):
        return n <= self.maxelem


def size_for(n):
    """maxelem for a set of ``n`` members: room to double, never below ipset's default."""
    m = MIN_MAXELEM
    while m < 2 * n:
        m *= 2
    return m


@dataclass
class State:
    chains: dict = field(default_factory=dict)
    bags: dict = field(default_factory=dict)
    sets: dict = field(default_factory=dict)
    elements: dict = field(default_factory=dict)
    hooks: set = field(default_factory=set)
    misplaced: set = field(default_factory=set)  # hooks found below another rule
    zones: dict = field(default_factory=dict)   # device -> conntrack zone (read back)

    def counts(self):
        """Sizes, with the keys the nft backend uses (an ipset is a set, a member an element)."""
        return {"chains": len(self.chains) + len(self.bags),
                "rules": sum(c.count() if isinstance(c, Chain) else 0
                             for c in self.chains.values())
                + sum(len(b) for b in self.bags.values()),
                "sets": len(self.sets), "maps": 0,
                "elements": sum(len(e) for e in self.elements.values())}
