"""Diff of desired vs current Ruleset, and the one transaction (a :class:`Plan`) that turns the
current state into the desired one.

A Plan is an ordered tuple of typed operations (:mod:`fwsg.ops`). Order inside the transaction:
tables, replaced and new sets/maps, added set elements (an interval set's deletions before its
additions), new chains (all declared before any is filled, so jumps resolve), changed chains
flushed and refilled, map entries (changed keys deleted, then added, then stale ones deleted),
stale set elements, stale chains flushed, stale sets, stale chains deleted, tables. A
chain is never empty for a moment. Pure: no I/O.

A changed chain whose rules' handles the mirror knows (the kernel reported them when fwsg
committed them) and whose new rules the backend can edit in place (``edits``) is changed rule
by rule instead: the rules that went are deleted by handle, the new ones inserted at their
place, and the rule carrying the chain's digest comment replaced. Such a plan is only valid
against the exact kernel generation the mirror was made at (``Plan.guard``): the backend
refuses it if anyone committed anything since, and the caller re-reads and rewrites whole
chains.

``diff(desired, current)`` compares everything (cold start, drift repair); with ``pending``
(what the desired state recorded as touched since the last commit) it looks only there, so an
incremental change costs O(change), not O(ruleset).
"""

from fwsg import fast
from fwsg.members import AddrSet, new_elements
from fwsg.ops import (AddElements, AddRule, CreateSet, CreateTable, DeclareChain, DeleteChain,
                      DeleteElements, DeleteRule, DeleteSet, DeleteTable, FillChain, FlushChain,
                      ReplaceRule, apply_to)
from fwsg.ruleset import Ruleset


class Plan:
    """One transaction: ``ops`` (typed operations, in commit order) and a ``summary`` of what
    changes. ``str(plan)`` is the transaction as text in the syntax of the backend that
    produced it (``render``: ops -> list of statements); empty plan: nothing to commit.

    ``basis``: the generation the mirror the plan was made against was last known at (None:
    unknown); ``guard``: the generation the plan is only valid at (it edits rules by handle),
    or None. Filled by the backend's commit: ``handles`` (op index -> what the kernel
    reported: a rule's handle, or a FillChain's list of them), ``after`` (the generation
    after the commit, as far as fwsg may rely on it: never above the kernel's, else None) and
    ``jumped`` (True when other commits happened since ``basis``: only the handles this plan
    learnt may be relied on)."""

    __slots__ = ("ops", "summary", "_render", "_lines", "guard", "basis", "handles", "after",
                 "jumped")

    def __init__(self, ops=(), summary=None, render=None, guard=None, basis=None):
        self.ops = tuple(ops)
        self.summary = summary if summary is not None else {}
        self._render = render
        self._lines = None
        self.guard = guard
        self.basis = guard if guard is not None else basis
        self.handles = {}
        self.after = None
        self.jumped = False

    def counted(self, reported=None):
        """Set ``after`` (and ``jumped``) for a commit of this plan that the kernel took as one
        transaction: ``reported`` is the generation the kernel said it made, or None. A
        reported generation one above ``basis`` (or after a guarded commit) continues the
        mirror's; another one means someone else committed since (``jumped``). Unreported, one
        above ``basis`` is assumed: never above the kernel's (a guard made from it is refused
        if anyone else committed)."""
        if reported is None:
            self.after = None if self.basis is None else (self.basis + 1) & 0xFFFFFFFF
        else:
            self.after = reported
            self.jumped = self.guard is None and (
                self.basis is None or reported != (self.basis + 1) & 0xFFFFFFFF)

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
        kernel has accepted it: with the rule handles the kernel reported, and the generation
        the commit made (``meta["generation"]``, None when unknown)."""
        handles = self.handles
        for i, op in enumerate(self.ops):
            apply_to(current, op, handles.get(i))
        current.meta["generation"] = self.after
        known = current.meta.get("rule_handles")
        if known and (self.jumped or self.after is None):
            learnt = {getattr(op, "chain", op).key for i, op in enumerate(self.ops)
                      if i in handles}
            current.meta["rule_handles"] = {k: v for k, v in known.items() if k in learnt}


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


def diff(desired, current, pending=None, render=None, edits=None):
    """The Plan that makes ``current`` equal to ``desired`` (both Rulesets); empty when they are
    equal. With ``pending`` (a Pending) only the keys it names are compared. ``render`` is
    the backend's text form of the ops (default: nft). ``edits(chain)``: True when the
    backend can commit ``chain``'s rules one by one (None: never); a changed chain is then
    edited in place when the mirror knows its handles and generation (see the module)."""
    if current is None:
        current = Ruleset(tables=frozenset())
    if pending is not None:
        plan = _chains_changed_only(desired, current, pending, render, edits)
        if plan is not None:
            return plan
    ops = []
    s = _summary()

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
    # A declaration changed (a layout change, or someone else's doing): drop and re-create.
    # The kernel refuses to drop a map a rule still uses: the changed and stale chains are
    # flushed first (in the same transaction: no packet sees them empty), then refilled below.
    replaced = [k for k in stale_sets if k in desired.sets]
    preflushed = set()
    if replaced:
        preflushed = set(changed_chains) | set(stale_chains)
        ops.extend(FlushChain(*k) for k in sorted(preflushed))
    for k in replaced:
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
    for k in new_chains:
        if k in current.chains:  # hook changed: a base chain must be re-created
            ops.append(DeleteChain(*k))
        ops.append(DeclareChain(desired.chains[k]))
    ops.extend(CreateSet(desired.sets[k]) for k in late_sets)
    for k in new_chains:
        ops.append(FillChain(desired.chains[k]))
    guard = _change_chains(desired, current, changed_chains, edits, preflushed, ops)
    s["chains_added"], s["chains_changed"] = len(new_chains), len(changed_chains)

    # Dispatch maps after the chains they jump to exist; a changed key is deleted, then added.
    ops.extend(map_changed_dels)
    ops.extend(map_adds)
    ops.extend(map_dels)
    ops.extend(set_dels)

    # Stale chains may jump to each other: flush them all before deleting any. Stale sets go
    # in between: no rule references them once the chains are flushed, and a stale verdict
    # map may still jump to a stale chain.
    ops.extend(FlushChain(*k) for k in stale_chains if k not in preflushed)
    gone_sets = [k for k in stale_sets if k not in desired.sets]
    ops.extend(DeleteSet(current.sets[k]) for k in gone_sets)
    s["sets_removed"] = len(gone_sets)
    ops.extend(DeleteChain(*k) for k in stale_chains)
    s["chains_removed"] = len(stale_chains)
    ops.extend(DeleteTable(fam) for fam in sorted(current.tables - desired.tables))
    return Plan(ops, s, render, guard, current.meta.get("generation"))


def _summary():
    return {"tables_added": [], "sets_added": 0, "sets_removed": 0, "elements_added": 0,
            "elements_removed": 0, "chains_added": 0, "chains_changed": 0, "chains_removed": 0}


def _chains_changed_only(desired, current, pending, render, edits):
    """The Plan ``diff`` gives for a change that touched only chains both sides hold with the
    same hook (a rule change), without its walk over sets, maps and the rest; None for any
    other change (``diff`` then takes it whole)."""
    if pending.sets or pending.elems or pending.maps or desired.tables != current.tables:
        return None
    changed = []
    keys = pending.chains
    for k in (keys if len(keys) < 2 else sorted(keys)):   # one chain: no list to sort
        want, have = desired.chains.get(k), current.chains.get(k)
        if want is None or have is None or have.hook != want.hook:
            return None
        if have.digest != want.digest:
            changed.append(k)
    ops = []
    guard = _change_chains(desired, current, changed, edits, (), ops)
    s = _summary()
    s["chains_changed"] = len(changed)
    return Plan(ops, s, render, guard, current.meta.get("generation"))


def _change_chains(desired, current, changed, edits, preflushed, ops):
    """Append to ``ops`` what turns each chain of ``changed`` (keys) from ``current``'s into
    ``desired``'s: refilled when ``preflushed`` holds it (flushed already), edited rule by rule
    when ``edits`` allows and the mirror knows its rules' handles (see :func:`rule_edit`),
    else flushed and refilled. Returns the plan's guard: the mirror's generation when a chain
    was edited by handle, else None."""
    guard = current.meta.get("generation") if edits is not None else None
    known = current.meta.get("rule_handles", {}) if guard is not None else {}
    edited = False
    for k in changed:
        want, have = desired.chains[k], current.chains[k]
        steps = None
        if k in preflushed:
            ops.append(FillChain(want))
            continue
        if k in known and have.hook is None and edits(want):
            steps = rule_edit(have, want, known[k])
        if steps is None:
            ops.append(FlushChain(*k))
            ops.append(FillChain(want))
        else:
            ops.extend(steps)
            edited = True
    return guard if edited else None


def rule_edit(old, new, handles):
    """The rule operations turning chain ``old`` (as committed; its rules' kernel handles
    ``handles``, in order) into ``new``: the rules between the common head and tail are
    deleted by handle and the new ones inserted in their place, and the rule that must carry
    the new digest comment (the last) is replaced when it is an old one, as is the old last
    rule when it stays but is no longer last. None when that is not smaller than a flush
    and refill, or when ``handles`` does not fit ``old``."""
    o = old.rules or ("return",)
    n = new.rules or ("return",)
    if len(handles) != len(o):
        return None
    lo, ln = len(o), len(n)
    p = _common_head(o, n, min(lo, ln))
    t = _common_tail(o, n, min(lo, ln) - p)
    gone, added = range(p, lo - t), range(p, ln - t)
    if len(gone) + len(added) + 1 >= ln + 1:
        return None
    out = [DeleteRule(old.family, old.name, handles[i]) for i in gone]
    before = handles[lo - t] if t else None
    out += [AddRule(new, j, before) for j in added]
    if t or p == ln:          # the new last rule is an old one: give it the new comment
        out.append(ReplaceRule(new, ln - 1, handles[lo - 1 if t else ln - 1]))
    elif p == lo:             # the old last rule stays, followed by new ones: comment off
        out.append(ReplaceRule(new, lo - 1, handles[lo - 1]))
    return out


def _common_head(a, b, most):
    """How many leading items the sequences ``a`` and ``b`` share, at most ``most``: one
    comparison of two slices when they share all (a rule appended or the last one removed),
    else item by item."""
    if a[:most] == b[:most]:
        return most
    p = 0
    while p < most and a[p] == b[p]:
        p += 1
    return p


def _common_tail(a, b, most):
    """How many trailing items ``a`` and ``b`` share, at most ``most`` (see
    :func:`_common_head`)."""
    if not most:
        return 0
    if a[len(a) - most:] == b[len(b) - most:]:
        return most
    t, la, lb = 0, len(a) - 1, len(b) - 1
    while t < most and a[la - t] == b[lb - t]:
        t += 1
    return t
