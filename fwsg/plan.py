"""Diff of desired vs current Ruleset, and the one transaction (a :class:`Plan`) that turns the
current state into the desired one.

Order inside the transaction: tables, new sets/maps, added set elements, new chains (declared
before any is filled, so jumps resolve), changed chains flushed and refilled, dispatch-map
updates, stale elements deleted, stale chains deleted, stale sets deleted. A chain is never
empty for a moment. Pure: no I/O.
"""

from dataclasses import dataclass, field
from typing import List

from fwsg import fast
from fwsg.ruleset import TABLE, Ruleset

_CHUNK = 4096  # elements per "add element" statement


@dataclass
class Plan:
    """One transaction: ``commands`` in nft syntax (``str(plan)`` is the batch text) and a
    summary of what changes."""

    commands: List[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    def __str__(self):
        return "".join(c + "\n" for c in self.commands)

    def __bool__(self):
        return bool(self.commands)

    @property
    def size(self):
        """Size of the batch text in bytes."""
        return sum(len(c) + 1 for c in self.commands)


def _elements(cmd, family, name, items):
    out = []
    for i in range(0, len(items), _CHUNK):
        out.append(f"{cmd} element {family} {TABLE} {name} {{ "
                   f"{fast.render_elements(items[i:i + _CHUNK])} }}")
    return out


def diff(desired, current):
    """The Plan that makes ``current`` equal to ``desired`` (both Rulesets). An empty Plan when
    they are already equal."""
    current = current or Ruleset(tables=frozenset())
    cmds = []
    s = {"tables_added": [], "sets_added": 0, "sets_removed": 0, "elements_added": 0,
         "elements_removed": 0, "chains_added": 0, "chains_changed": 0, "chains_removed": 0}

    for fam in sorted(desired.tables - current.tables):
        cmds.append(f"add table {fam} {TABLE}")
        s["tables_added"].append(fam)

    # Sets and maps whose declaration changed are replaced: removed first, re-added.
    replaced = {k for k, sd in desired.sets.items() if k in current.sets and current.sets[k] != sd}
    new_sets = sorted(k for k in desired.sets if k not in current.sets or k in replaced)
    for k in new_sets:
        cmds.append(desired.sets[k].declare())
        s["sets_added"] += 1

    # Set elements first (new chains may reference them); map elements after the chains.
    adds_maps, dels_sets, dels_maps, dels_changed = [], [], [], []
    for k in sorted(desired.sets):
        sd = desired.sets[k]
        want = desired.elements.get(k) or ({} if sd.is_map else set())
        have = {} if k in new_sets else (current.elements.get(k) or ({} if sd.is_map else set()))
        if sd.is_map:
            added, changed, removed = fast.diff_map(want, have)
            if changed:
                dels_changed.extend(_elements("delete", sd.family, sd.name, [c[0] for c in changed]))
            if added or changed:
                adds_maps.extend(_elements("add", sd.family, sd.name, sorted(added + changed)))
            if removed:
                dels_maps.extend(_elements("delete", sd.family, sd.name, removed))
            s["elements_added"] += len(added) + len(changed)
            s["elements_removed"] += len(removed) + len(changed)
        else:
            added, removed = fast.diff_keys(want, have)
            if added:
                cmds.extend(_elements("add", sd.family, sd.name, added))
            if removed:
                dels_sets.extend(_elements("delete", sd.family, sd.name, removed))
            s["elements_added"] += len(added)
            s["elements_removed"] += len(removed)

    new_chains = sorted(k for k in desired.chains if k not in current.chains
                        or current.chains[k].hook != desired.chains[k].hook)
    changed_chains = sorted(k for k in desired.chains if k in current.chains and k not in new_chains
                            and current.chains[k].digest != desired.chains[k].digest)
    for k in new_chains:
        if k in current.chains:  # hook changed: a base chain must be re-created
            cmds.append(f"delete chain {k[0]} {TABLE} {k[1]}")
        cmds.append(desired.chains[k].declare())
    for k in new_chains:
        cmds.extend(_rules(desired.chains[k]))
    for k in changed_chains:
        cmds.append(f"flush chain {k[0]} {TABLE} {k[1]}")
        cmds.extend(_rules(desired.chains[k]))
    s["chains_added"], s["chains_changed"] = len(new_chains), len(changed_chains)

    # Map updates: changed keys are deleted before being added again.
    cmds.extend(dels_changed)
    cmds.extend(adds_maps)
    cmds.extend(dels_maps)
    cmds.extend(dels_sets)

    stale_chains = sorted(k for k in current.chains if k not in desired.chains)
    # Stale chains may jump to each other: flush them all before deleting any.
    for k in stale_chains:
        cmds.append(f"flush chain {k[0]} {TABLE} {k[1]}")
    for k in stale_chains:
        cmds.append(f"delete chain {k[0]} {TABLE} {k[1]}")
    s["chains_removed"] = len(stale_chains)
    stale_sets = sorted(k for k in current.sets if k not in desired.sets or k in replaced)
    if replaced:  # a replaced set must go before its new declaration
        pre = [f"delete {'map' if current.sets[k].is_map else 'set'} {k[0]} {TABLE} {k[1]}"
               for k in sorted(replaced)]
        cmds = pre + cmds
    for k in stale_sets:
        if k not in replaced:
            kind = "map" if current.sets[k].is_map else "set"
            cmds.append(f"delete {kind} {k[0]} {TABLE} {k[1]}")
    s["sets_removed"] = len(stale_sets)
    for fam in sorted(current.tables - desired.tables):
        cmds.append(f"delete table {fam} {TABLE}")
    return Plan(cmds, s)


def _rules(chain):
    prefix = f"add rule {chain.family} {TABLE} {chain.name} "
    return [prefix + r for r in chain.rendered_rules()]
