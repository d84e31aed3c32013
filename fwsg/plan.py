"""Diff of desired vs current Ruleset, and the one transaction (a :class:`Plan`) that turns the
current state into the desired one.

A Plan is an ordered tuple of typed operations (:mod:`fwsg.ops`). Order inside the transaction:
tables, replaced and new sets/maps, added set elements (an interval set's deletions before its
additions), new chains (all declared before any is filled, so jumps resolve), changed chains
flushed and refilled, map entries (changed keys deleted, then added, then stale ones deleted),
stale set elements, stale chains flushed, stale sets, stale chains deleted, tables. A
chain is never empty for a moment. Pure: no I/O.

``diff(desired, current)`` compares everything (cold start, drift repair); with ``pending``
(what the desired state recorded as touched since the last commit) it looks only there, so an
incremental change costs O(change), not O(ruleset).
"""

from fwsg import fast
from fwsg.members import AddrSet, new_elements
from fwsg.ops import (AddElements, CreateSet, CreateTable, DeclareChain, DeleteChain,
                      DeleteElements, DeleteSet, DeleteTable, FillChain, FlushChain, apply_to)
from fwsg.ruleset import Ruleset


class Plan:
    """One transaction: ``ops`` (typed operations, in commit order) and a ``summary`` of what
    changes. ``str(plan)`` is the transaction as text in the syntax of the backend that
    produced it (``render``: ops -> list of statements); empty plan: nothing to commit."""

    __slots__ = ("ops", "summary", "_render", "_lines")

    def __init__(self, ops=(), summary=None, render=None):
        self.ops = tuple(ops)
        self.summary = summary if summary is not None else {}
        self._render = render
        self._lines = None

    def lines(self):
        """The transaction as text statements (rendered once, on first use)."""
        if self._lines is None:
            self._lines = self._renderer()(self.ops) if self.ops else []
        return self._lines

    def _renderer(self):
        if self._render is None:
            self._render = _default_render()
        return self._render

    def __str__(self):
        return "".join(c + "\n" for c in self.lines())

    def __bool__(self):
        return bool(self.ops)

    def __repr__(self):
        return f"Plan({len(self.ops)} ops, {self.summary})"

    @property
    def size(self):
        """Size of the transaction's text in bytes."""
        return self.text_size()

    def text_size(self):
        """Size of the transaction's text in bytes, without keeping the text: counted by the
        renderer when it can (its ``size`` attribute), else rendered one operation at a time
        (the text of a million elements is not kept)."""
        if self._lines is not None or not self.ops:
            return sum(len(c) + 1 for c in self.lines())
        render = self._renderer()
        count = getattr(render, "size", None)
        if count is not None:
            return count(self.ops)
        return sum(len(c) + 1 for op in self.ops for c in render((op,)))

    def update(self, current):
        """Apply this plan's effect to ``current`` (a Ruleset mirroring the kernel), once the
        kernel has accepted it."""
        for op in self.ops:
            apply_to(current, op)


def _default_render():
    from fwsg.backends.nft.render import render

    return render


def _empty(sd):
    return new_elements(sd)


def _set_diff(want, have):
    """(added, removed) between two sets' elements: packed Members when both are AddrSets of
    one family (no text rendered), else sorted lists of texts."""
    if type(want) is AddrSet and type(have) is AddrSet and want.family == have.family:
        return want.diff(have)
    return fast.diff_keys(want, have)


def _delta_diff(pending_added, pending_removed, have):
    """diff_delta against ``have`` of any set type (an AddrSet is asked member by member)."""
    if type(have) is set:
        return fast.diff_delta(pending_added, pending_removed, have)
    return (sorted(e for e in pending_added if e not in have),
            sorted(e for e in pending_removed if e in have))


def diff(desired, current, pending=None, render=None):
    """The Plan that makes ``current`` equal to ``desired`` (both Rulesets); empty when they are
    equal. With ``pending`` (a Pending) only the keys it names are compared. ``render`` is
    the backend's text form of the ops (default: nft)."""
    if current is None:
        current = Ruleset(tables=frozenset())
    ops = []
    s = {"tables_added": [], "sets_added": 0, "sets_removed": 0, "elements_added": 0,
         "elements_removed": 0, "chains_added": 0, "chains_changed": 0, "chains_removed": 0}

    for fam in sorted(desired.tables - current.tables):
        ops.append(CreateTable(fam))
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
    for k in stale_sets:  # declaration changed (someone else's doing): drop and re-create
        if k in desired.sets:
            ops.append(DeleteSet(current.sets[k]))
    # libnftables 1.0.6 refuses (ENOENT) an element of an interval verdict map jumping to a
    # chain of the same batch when the map is declared before that chain: such maps are
    # declared after the chains (before any rule references them).
    late_sets = [k for k in new_sets if desired.sets[k].interval and desired.sets[k].is_map]
    for k in new_sets:
        if k not in late_sets:
            ops.append(CreateSet(desired.sets[k]))
    s["sets_added"] = len(new_sets)

    map_adds, map_dels, map_changed_dels, set_dels = [], [], [], []
    new_set_keys = set(new_sets)
    for k in sorted(set_keys):
        sd = desired.sets.get(k)
        if sd is None:
            continue
        want = desired.elements.get(k)
        if want is None:
            want = _empty(sd)
        have = None if k in new_set_keys else current.elements.get(k)
        if have is None:
            have = _empty(sd)
        if sd.is_map:
            if pending is None or k in new_set_keys or k in pending.sets or k not in pending.maps:
                added, changed, removed = fast.diff_map(want, have)
            else:
                added, changed, removed = fast.diff_map_keys(want, have, pending.maps[k])
            if changed:
                map_changed_dels.append(DeleteElements(sd, tuple(c[0] for c in changed)))
            if added or changed:
                map_adds.append(AddElements(sd, tuple(sorted(added + changed))))
            if removed:
                map_dels.append(DeleteElements(sd, tuple(removed)))
            s["elements_added"] += len(added) + len(changed)
            s["elements_removed"] += len(removed) + len(changed)
        else:
            if pending is None or k in new_set_keys or k in pending.sets or k not in pending.elems:
                if type(want) is not AddrSet and not have:
                    # a new or empty set of texts: all of it, in no order (the text sorts it)
                    added, removed = list(want), []
                else:
                    added, removed = _set_diff(want, have)
            else:
                pa, pr = pending.elems[k]
                added, removed = _delta_diff(pa, pr, have)
            if type(added) is list:
                added, removed = tuple(added), tuple(removed)
            if removed and sd.interval:
                # an interval set refuses an element overlapping one still there (a /24
                # replacing its two /25s): deletions first
                ops.append(DeleteElements(sd, removed))
            if added:
                ops.append(AddElements(sd, added))
            if removed and not sd.interval:
                set_dels.append(DeleteElements(sd, removed))
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
            ops.append(DeleteChain(*k))
        ops.append(DeclareChain(desired.chains[k]))
    ops.extend(CreateSet(desired.sets[k]) for k in late_sets)
    for k in new_chains:
        ops.append(FillChain(desired.chains[k]))
    for k in changed_chains:
        ops.append(FlushChain(*k))
        ops.append(FillChain(desired.chains[k]))
    s["chains_added"], s["chains_changed"] = len(new_chains), len(changed_chains)

    # Dispatch maps after the chains they jump to exist; a changed key is deleted, then added.
    ops.extend(map_changed_dels)
    ops.extend(map_adds)
    ops.extend(map_dels)
    ops.extend(set_dels)

    # Stale chains may jump to each other: flush them all before deleting any. Stale sets go
    # in between: no rule references them once the chains are flushed, and a stale verdict
    # map may still jump to a stale chain.
    ops.extend(FlushChain(*k) for k in stale_chains)
    gone_sets = [k for k in stale_sets if k not in desired.sets]
    ops.extend(DeleteSet(current.sets[k]) for k in gone_sets)
    s["sets_removed"] = len(gone_sets)
    ops.extend(DeleteChain(*k) for k in stale_chains)
    s["chains_removed"] = len(stale_chains)
    ops.extend(DeleteTable(fam) for fam in sorted(current.tables - desired.tables))
    return Plan(ops, s, render)
