"""Diff of desired vs current Ruleset, and the one transaction (a :class:`Plan`) that turns the
current state into the desired one.

Order inside the transaction: tables, new sets/maps, added set elements, new chains (declared
before any is filled, so jumps resolve), changed chains flushed and refilled, dispatch-map
updates, stale elements deleted, stale chains deleted, stale sets deleted. A chain is never
empty for a moment. Pure: no I/O.

``diff(desired, current)`` compares everything (cold start, drift repair); with ``pending``
(what the desired state recorded as touched since the last commit) it looks only there, so an
incremental change costs O(change), not O(ruleset).
"""

import re
from dataclasses import dataclass, field
from typing import List

from fwsg import fast, nlencode
from fwsg.ruleset import TABLE, Ruleset

_CHUNK = 4096  # elements per "add element" statement
BULK_THRESHOLD = 20000  # element additions above which a plan is committed in steps
BULK_CHUNK = 30000      # elements per step: keeps each netlink batch short
NETLINK_MAX = 30000     # elements a plan may carry on the netlink path (one page)


@dataclass
class Plan:
    """One transaction: ``commands`` in nft syntax (``str(plan)`` is the batch text), a
    ``summary`` of what changes, and ``ops`` to bring an in-memory copy of the current state
    along once the kernel has accepted it (see :meth:`update`)."""

    commands: List[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    ops: list = field(default_factory=list)
    adds_at: dict = field(default_factory=dict)  # set key -> indices of its "add element" commands

    def __str__(self):
        return "".join(c + "\n" for c in self.commands)

    def __bool__(self):
        return bool(self.commands)

    @property
    def size(self):
        """Size of the batch text in bytes."""
        return sum(len(c) + 1 for c in self.commands)

    def netlink_ops(self):
        """The plan as NetlinkWriter ops when it holds only element changes of known encodings
        (see nlencode) and chains whose rules are plain verdicts (``jump X``/``drop``: port
        profile chains); else None. Order: new chains and their rules, changed chains flushed
        and refilled, element deletions, element additions, stale chains flushed and deleted
        (all flushed before any is deleted: they may jump to each other)."""
        if not self.ops:
            return None
        chains, refills, stale, dels, adds = [], [], [], [], []
        try:
            for op in self.ops:
                kind = op[0]
                if kind == "chain":
                    key, cdef = op[1], op[2]
                    if cdef is None:
                        stale.append(key)
                        continue
                    rules = _simple_rules(cdef)
                    if rules is None:
                        return None
                    if op[3] == "new":
                        chains.append(("chain", key[0], key[1]))
                        chains += rules
                    else:
                        refills += [("flush", key[0], key[1])] + rules
                elif kind in ("elems", "map"):
                    sd = op[4]
                    if not nlencode.encodable(sd):
                        return None
                    if kind == "elems":
                        d, a = _set_element_ops(sd, op[2], op[3])
                        dels += d
                        adds += a
                    else:
                        added, removed, changed = op[2], op[3], op[5]
                        gone = list(removed) + list(changed)
                        if gone:
                            dels.append(("elem", False, sd.family, sd.name, gone,
                                         [nlencode.encode_key(sd.key_type, k) for k in gone],
                                         0, None))
                        if added:
                            adds.append(("elem", True, sd.family, sd.name, [k for k, _ in added],
                                         [nlencode.encode_key(sd.key_type, k) for k, _ in added],
                                         0, [nlencode.encode_value(sd.value_type, v)
                                             for _, v in added]))
                else:
                    return None
        except ValueError:
            return None
        if sum(len(op[4]) for op in dels + adds) > NETLINK_MAX:
            return None  # too big for one netlink page: libnftables (or split_bulk) takes it
        # stale chains may jump to each other: flush them all before deleting any
        return (chains + refills + dels + adds + [("flush", k[0], k[1]) for k in stale]
                + [("delchain", k[0], k[1]) for k in stale])

    def split_bulk(self, threshold=BULK_THRESHOLD, chunk=BULK_CHUNK):
        """For a big cold start or resync: (text, batches) where ``text`` is the plan without the
        element additions of plain address sets and ``batches`` those additions as direct
        element batches of at most ``chunk`` elements each. Committed in that order, every step
        is atomic and leaves a ruleset that is correct and never more open than the target
        (a remote group lacking members matches less). None when the plan adds fewer than
        ``threshold`` such elements."""
        bulk = [op for op in self.ops if op[0] == "elems" and op[2] and not op[4].interval
                and op[4].key_type in ("ipv4_addr", "ipv6_addr") and op[1] in self.adds_at]
        if sum(len(op[2]) for op in bulk) < threshold:
            return None
        skip = set()
        batches, current, size = [], [], 0
        for _, key, added, _, sd in bulk:
            skip.update(self.adds_at[key])
            fam, width = (4, 4) if sd.key_type == "ipv4_addr" else (6, 16)
            packed, rejects = fast.pack_addrs(added, fam)
            if rejects:
                return None
            for i in range(0, len(packed) // width, chunk):
                part = packed[i * width:(i + chunk) * width]
                texts = added[i:i + chunk]
                if size and size + len(texts) > chunk:
                    batches.append(current)
                    current, size = [], 0
                current.append(("elem", True, sd.family, sd.name, texts, part, width, None))
                size += len(texts)
        if current:
            batches.append(current)
        text = "".join(c + "\n" for i, c in enumerate(self.commands) if i not in skip)
        return text, batches

    def update(self, current):
        """Apply this plan's effect to ``current`` (a Ruleset mirroring the kernel)."""
        for op in self.ops:
            kind, key = op[0], op[1]
            if kind == "table":
                current.tables = current.tables | {key} if op[2] else current.tables - {key}
            elif kind == "decl":
                if op[2] is None:
                    current.sets.pop(key, None)
                    current.elements.pop(key, None)
                else:
                    current.sets[key] = op[2]
                    current.elements[key] = {} if op[2].is_map else set()
            elif kind == "elems":
                s = current.elements[key]
                s.update(op[2])
                s.difference_update(op[3])
            elif kind == "map":
                m = current.elements[key]
                for k, v in op[2]:
                    m[k] = v
                for k in op[3]:
                    m.pop(k, None)
            elif kind == "chain":
                if op[2] is None:
                    current.chains.pop(key, None)
                else:
                    current.chains[key] = op[2]


def _elements(cmd, family, name, items):
    out = []
    for i in range(0, len(items), _CHUNK):
        out.append(f"{cmd} element {family} {TABLE} {name} {{ "
                   f"{fast.render_elements(items[i:i + _CHUNK])} }}")
    return out


def _empty(sd):
    return {} if sd.is_map else set()


def diff(desired, current, pending=None):
    """The Plan that makes ``current`` equal to ``desired`` (both Rulesets); empty when they are
    equal. With ``pending`` (a compile.Pending) only the keys it names are compared."""
    if current is None:
        current = Ruleset(tables=frozenset())
    cmds, ops, adds_at = [], [], {}
    s = {"tables_added": [], "sets_added": 0, "sets_removed": 0, "elements_added": 0,
         "elements_removed": 0, "chains_added": 0, "chains_changed": 0, "chains_removed": 0}

    for fam in sorted(desired.tables - current.tables):
        cmds.append(f"add table {fam} {TABLE}")
        ops.append(("table", fam, True))
        s["tables_added"].append(fam)

    if pending is None:
        set_keys = set(desired.sets) | set(current.sets)
        chain_keys = set(desired.chains) | set(current.chains)
    else:
        set_keys = pending.sets | set(pending.elems) | set(pending.maps)
        chain_keys = pending.chains

    # Sets and maps: new or replaced declarations, then their elements.
    new_sets, stale_sets = [], []
    for k in sorted(set_keys):
        want, have = desired.sets.get(k), current.sets.get(k)
        if want is not None and want != have:
            new_sets.append(k)
        if have is not None and want != have:
            stale_sets.append(k)
    replaced = [k for k in stale_sets if k in desired.sets]
    for k in replaced:  # declaration changed (someone else's doing): drop and re-create
        kind = "map" if current.sets[k].is_map else "set"
        cmds.append(f"delete {kind} {k[0]} {TABLE} {k[1]}")
    for k in new_sets:
        cmds.append(desired.sets[k].declare())
        ops.append(("decl", k, desired.sets[k]))
    s["sets_added"] = len(new_sets)

    map_adds, map_dels, map_changed_dels, set_dels = [], [], [], []
    for k in sorted(set_keys):
        sd = desired.sets.get(k)
        if sd is None:
            continue
        want = desired.elements.get(k) or _empty(sd)
        have = _empty(sd) if k in new_sets else (current.elements.get(k) or _empty(sd))
        if sd.is_map:
            if pending is None or k in new_sets or k in pending.sets or k not in pending.maps:
                added, changed, removed = fast.diff_map(want, have)
            else:
                added, changed, removed = fast.diff_map_keys(want, have, pending.maps[k])
            if changed:
                map_changed_dels.extend(_elements("delete", sd.family, sd.name,
                                                  [c[0] for c in changed]))
            if added or changed:
                map_adds.extend(_elements("add", sd.family, sd.name, sorted(added + changed)))
            if removed:
                map_dels.extend(_elements("delete", sd.family, sd.name, removed))
            if added or changed or removed:
                ops.append(("map", k, added + changed, removed, sd, [c[0] for c in changed]))
            s["elements_added"] += len(added) + len(changed)
            s["elements_removed"] += len(removed) + len(changed)
        else:
            if pending is None or k in new_sets or k in pending.sets or k not in pending.elems:
                added, removed = fast.diff_keys(want, have)
            else:
                pa, pr = pending.elems[k]
                added, removed = fast.diff_delta(pa, pr, have)
            if removed and sd.interval:
                # an interval set refuses an element overlapping one still there (a /24
                # replacing its two /25s): deletions first
                cmds.extend(_elements("delete", sd.family, sd.name, removed))
            if added:
                start = len(cmds)
                cmds.extend(_elements("add", sd.family, sd.name, added))
                adds_at[k] = range(start, len(cmds))
            if removed and not sd.interval:
                set_dels.extend(_elements("delete", sd.family, sd.name, removed))
            if added or removed:
                ops.append(("elems", k, added, removed, sd))
            s["elements_added"] += len(added)
            s["elements_removed"] += len(removed)

    # Chains: compared by digest (their content's hash, kept in the kernel as a comment).
    new_chains, changed_chains, stale_chains = [], [], []
    for k in sorted(chain_keys):
        want, have = desired.chains.get(k), current.chains.get(k)
        if want is None:
            if have is not None:
                stale_chains.append(k)
        elif have is None or have.hook != want.hook:
            new_chains.append(k)
        elif have.digest != want.digest:
            changed_chains.append(k)
    for k in new_chains:
        if k in current.chains:  # hook changed: a base chain must be re-created
            cmds.append(f"delete chain {k[0]} {TABLE} {k[1]}")
        cmds.append(desired.chains[k].declare())
    for k in new_chains:
        cmds.extend(_rules(desired.chains[k]))
    for k in changed_chains:
        cmds.append(f"flush chain {k[0]} {TABLE} {k[1]}")
        cmds.extend(_rules(desired.chains[k]))
    for k in new_chains:
        ops.append(("chain", k, desired.chains[k], "replaced" if k in current.chains else "new"))
    for k in changed_chains:
        ops.append(("chain", k, desired.chains[k], "changed"))
    s["chains_added"], s["chains_changed"] = len(new_chains), len(changed_chains)

    # Dispatch maps after the chains they jump to exist; a changed key is deleted, then added.
    cmds.extend(map_changed_dels)
    cmds.extend(map_adds)
    cmds.extend(map_dels)
    cmds.extend(set_dels)

    # Stale chains may jump to each other: flush them all before deleting any.
    for k in stale_chains:
        cmds.append(f"flush chain {k[0]} {TABLE} {k[1]}")
    for k in stale_chains:
        cmds.append(f"delete chain {k[0]} {TABLE} {k[1]}")
        ops.append(("chain", k, None, "stale"))
    s["chains_removed"] = len(stale_chains)
    for k in stale_sets:
        if k not in desired.sets:
            kind = "map" if current.sets[k].is_map else "set"
            cmds.append(f"delete {kind} {k[0]} {TABLE} {k[1]}")
            ops.append(("decl", k, None))
    s["sets_removed"] = len([k for k in stale_sets if k not in desired.sets])
    for fam in sorted(current.tables - desired.tables):
        cmds.append(f"delete table {fam} {TABLE}")
        ops.append(("table", fam, False))
    return Plan(cmds, s, ops, adds_at)


_SIMPLE = re.compile(r"^(?:jump ([a-z0-9][a-z0-9-]*)|drop)$")


def _simple_rules(chain):
    """NetlinkWriter "rule" ops for a chain whose rules are all plain verdicts, else None."""
    if chain.hook is not None:
        return None
    rendered = chain.rendered_rules()
    out = []
    for i, rule in enumerate(chain.rules or ("return",)):
        m = _SIMPLE.match(rule)
        if not m:
            return None
        comment = None
        if i == len(rendered) - 1:
            comment = rendered[-1][len(rule):].strip()
            if not (comment.startswith('comment "') and comment.endswith('"')):
                return None
            comment = comment[9:-1]
        out.append(("rule", chain.family, chain.name, "jump" if m.group(1) else "drop",
                    m.group(1), comment))
    return out


def _set_element_ops(sd, added, removed):
    """(deletions, additions) as NetlinkWriter "elem" ops for one set."""
    out = ([], [])
    for add, items in ((True, added), (False, removed)):
        if not items:
            continue
        if sd.key_type in ("ipv4_addr", "ipv6_addr"):
            fam = 4 if sd.key_type == "ipv4_addr" else 6
            keys, rejects = fast.pack_addrs(items, fam)
            if rejects:
                raise ValueError(rejects[0])
            width = 4 if fam == 4 else 16
        else:
            keys, width = [nlencode.encode_key(sd.key_type, t) for t in items], 0
        out[1 if add else 0].append(("elem", add, sd.family, sd.name, list(items), keys, width,
                                     None))
    return out


def _rules(chain):
    prefix = f"add rule {chain.family} {TABLE} {chain.name} "
    return [prefix + r for r in chain.rendered_rules()]
