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

import re
import socket
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
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

    def printed(self, ebtables=False):
        """The rules as written after ``-A NAME`` (fwsg writes them as the save tools print
        them, but for protocol names: see :func:`same_rule`), the digest comment included."""
        if ebtables:
            return list(self.rules) + [f"-j {self.final}"]
        return list(self.rules) + [f'-m comment --comment "{names.COMMENT}{self.digest}:'
                                   f'{self.count()}" -j {self.final}']

    def lines(self, name, ebtables=False):
        """The ``-A`` lines of this chain (restore syntax)."""
        return [f"-A {name} {r}" for r in self.printed(ebtables)]


_PROTO = re.compile(r"(?:^| )-p (\S+)")


@lru_cache(maxsize=None)
def _proto_number(name):
    if name.isdigit():
        return name
    try:
        return str(socket.getprotobyname(name))
    except OSError:
        return name


def same_rule(printed, written):
    """Whether ``printed`` (a rule as ``iptables-save`` printed it) is ``written`` (as fwsg
    wrote it): equal text, but for the protocol, which the save tools print by its name in
    the host's /etc/protocols (``-p gre``) where fwsg writes most by number (``-p 47``)."""
    if printed == written:
        return True
    a, b = _PROTO.search(printed), _PROTO.search(written)
    if a is None or b is None or _proto_number(a.group(1)) != _proto_number(b.group(1)):
        return False
    return (printed[:a.start(1)] == written[:b.start(1)]
            and printed[a.end(1):] == written[b.end(1):])


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
    bodies: dict = field(default_factory=dict)  # (fam, table, chain) -> rules as printed
    #                                             (iptables chains read back; see drift)

    def counts(self):
        """Sizes, with the keys the nft backend uses (an ipset is a set, a member an element)."""
        return {"chains": len(self.chains) + len(self.bags),
                "rules": sum(c.count() if isinstance(c, Chain) else 0
                             for c in self.chains.values())
                + sum(len(b) for b in self.bags.values()),
                "sets": len(self.sets), "maps": 0,
                "elements": sum(len(e) for e in self.elements.values())}
