"""The interface every backend implements (nft, iptables, fake).

A backend owns everything kernel-specific for one network namespace: how a model becomes its
objects (the desired-state builder), how two states differ (the diff, as a Plan of typed
operations, :mod:`fwsg.ops`), how a plan reaches the kernel (its transports), how the kernel's
state is read back, and what the host needs first (modules, sysctls). ``fwsg.Firewall`` keeps
the model, the undo log, ``defer_apply`` and the conntrack sweeps, and calls only what is
written here. The states a backend builds, reads and diffs are its own (for nft and the fake: a
:class:`fwsg.ruleset.Ruleset`); Firewall never looks inside them.

Model-delta based: the desired state is changed by the same small calls the agent makes
(a group's rules, a group's members of one family, one port), and records what each call
touched, so a commit costs O(change).
"""

from typing import Iterable, List, Optional, Protocol

from fwsg.addr import is_prefix
from fwsg.members import AddrSet, Members
from fwsg.model import rule_facts


class DesiredState(Protocol):
    """What the kernel should hold for a model, kept current change by change (no I/O).

    Every mutator records what it touched in ``pending``; :meth:`Backend.diff` with that
    pending looks only there. ``load`` from empty gives the same state as any sequence of
    mutations that ends in the same model."""

    pending: object
    """What changed since the last commit (the backend's own record; falsy when nothing)."""

    groups: dict    # group id -> tuple of model.Rule
    members: dict   # (group id, family) -> AddrSet of canonical members (packed)
    prefix_members: dict  # (group id, family) -> the prefixes among them
    ports: dict     # port id -> model.Port
    loaded_members: dict  # (group id, family) -> the member list last loaded whole (see load_model)

    def members_of(self, sg: str, family: int) -> AddrSet:
        """The canonical members of a group, one family (what conntrack sweeps judge by)."""

    def load(self, model) -> "DesiredState":
        """Make the state equal to ``model`` (a fwsg.model.Model), touching only what differs
        (backends check what they cannot express, then call :func:`load_model`)."""

    def set_group(self, sg: str, rules: Optional[tuple]) -> None:
        """Set a group's rules (a tuple of model.Rule), or remove the group (None)."""

    def set_members(self, sg: str, family: int, members: Iterable[str]) -> None:
        """Replace the members (canonical hosts and prefixes) of one group and family."""

    def add_members(self, sg: str, family: int, members: Iterable[str]) -> None:
        """Add canonical members of one family to a group."""

    def remove_members(self, sg: str, family: int, members: Iterable[str]) -> None:
        """Remove canonical members of one family from a group."""

    def set_port(self, port) -> None:
        """Add or replace a port (a model.Port)."""

    def remove_port(self, port_id: str) -> None:
        """Remove a port and everything it owns."""

    def clear_pending(self) -> None:
        """Forget what was recorded (after a commit, or after the changes were taken back)."""

    def meta(self) -> dict:
        """Derived names -> user ids, for display (``ports``, ``groups``)."""

    def counts(self) -> dict:
        """Sizes for reports: chains, rules, sets, maps, elements."""


class Backend(Protocol):
    """Kernel access for one network namespace."""

    name: str
    tracks_conntrack: bool
    """True when the kernel keeps flows that a change may have to cut (Firewall sweeps them)."""

    def prepare_host(self, mode: str) -> List[str]:
        """Make the namespace able to filter ``mode`` traffic (kernel modules, sysctls), once;
        returns notices of what was changed. EnvironmentProblem when impossible."""

    def conntrack_in_use(self) -> bool:
        """False when the namespace has no tracked flow (a sweep can be skipped)."""

    def desired(self, port_ids: Optional[dict] = None,
                group_names: Optional[dict] = None) -> "DesiredState":
        """A new, empty desired state. ``port_ids`` (device -> number, from :meth:`port_ids`)
        keeps the numbers the kernel already uses; ``group_names`` (group id -> derived name,
        from the names record) keeps names that were lengthened to avoid a collision."""

    def drift(self, desired, current, deep: bool = False):
        """Drift a digest comparison cannot show: (``current`` with what differs marked,
        {family: reason} of tables the plan must delete and re-create
        (``fwsg.backends.nft.drift.with_rebuild``), report lines). ``deep``: compare every
        object by content (reconcile); else only what would make the diff's plan fail."""

    def port_ids(self, current) -> dict:
        """device -> port number in ``current`` (a state from :meth:`read`)."""

    def read(self):
        """The kernel's current state of the backend's own objects (nothing else is read)."""

    def describe(self, state, names: Optional[dict] = None) -> dict:
        """A summary of ``state`` (from :meth:`read`) for people and ``fwsg show --json``:
        ``tables``, ``ports`` (device, number, id, profile, groups), ``groups`` (name, id),
        ``sets`` (family, name, kind, type, interval, elements), ``chains``, ``rules``,
        ``elements``. ``names`` is the record of derived names -> user ids, if any."""

    def diff(self, desired, current, pending=None):
        """The Plan turning ``current`` into the desired state's objects (both states of this
        backend); with ``pending`` only what it names is compared. Pure: no I/O. An empty plan
        is falsy; ``plan.summary`` counts what changes; ``plan.update(current)`` moves
        ``current`` along once committed; ``str(plan)`` is the backend's text of it."""

    def empty_plan(self):
        """A Plan with nothing in it (what a call that changes nothing reports)."""

    def commit(self, plan) -> Optional[str]:
        """Commit ``plan`` as one atomic transaction (or in steps that are each atomic and
        never more open than the target); returns the transport used, None for an empty
        plan. KernelError (with ``errno``) when refused: then nothing of that step changed.
        A plan with a ``guard`` (it edits rules by handle) is refused (ERESTART) unless the
        kernel is still at that generation; what the kernel reports (rule handles, the
        generation made) goes to ``plan.handles`` and ``plan.after``."""

    def flush(self) -> List[str]:
        """Remove every object of the backend (and nothing else); what was removed."""

    def close(self) -> None:
        """Release the namespace's handles (sockets, contexts)."""


def load_model(state, model):
    """Drive ``state``'s mutators (a :class:`DesiredState`) until it holds ``model`` (a Model),
    touching only what differs, and return ``state``. Backend-neutral; no I/O here.

    Ports that go away or move to another device leave first, so no device is ever held by two
    ports at once (a swap of two taps would otherwise share numbers). A member list equal to the
    one last loaded costs one compare; two packed lists load as their difference only."""
    for pid in [p for p in state.ports if p not in model.ports
                or model.ports[p].device != state.ports[p].device]:
        state.remove_port(pid)
    for sg, fams in model.members.items():
        for fam, ips in fams.items():
            old = state.loaded_members.get((sg, fam))
            if old == ips:
                continue
            if isinstance(old, Members) and isinstance(ips, Members):
                added, removed = ips.delta(old)
                state.remove_members(sg, fam, removed)
                state.add_members(sg, fam, added)
            elif AddrSet.of(fam, ips) != state.members.get((sg, fam), set()):
                state.set_members(sg, fam, ips)
            state.loaded_members[(sg, fam)] = ips
    for (sg, fam) in [k for k in state.members if k[0] not in model.members]:
        state.set_members(sg, fam, ())
        state.loaded_members.pop((sg, fam), None)
    for sg, rules in model.groups.items():
        if state.groups.get(sg) != rules:
            state.set_group(sg, rules)
    for sg in [g for g in state.groups if g not in model.groups]:
        state.set_group(sg, None)
    ports, have = model.ports, state.ports
    changed = [pid for pid, p in ports.items() if have.get(pid) is not p and have.get(pid) != p]
    for pid in sorted(changed, key=lambda k: ports[k].device):
        state.set_port(ports[pid])
    return state


class MemberBook:
    """Bookkeeping every backend's desired state shares, on the model's side: which member sets
    the rules reference (``refs``: (group, family) -> owners) and each group's canonical
    members (each an :class:`fwsg.members.AddrSet`: packed, sharing the model's records when
    loaded from a Members). A subclass defines ``_member_sets(sg, family)``, which makes that set's kernel
    objects follow ``refs`` and ``members``. No I/O here."""

    _refs_of = None   # owner -> the (group, family) references its rules hold
    names_epoch = 0   # moves when a group or a referenced member set comes or goes

    def _set_refs(self, owner, rules):
        """Record which member sets ``owner``'s rules reference; create/remove sets. Costs
        O(references) of ``owner``, not O(all references)."""
        wanted = rule_facts(rules).refs
        held = self._refs_of
        if held is None:
            held = self._refs_of = {}   # owner -> the refs it holds
        had = held.get(owner, ())
        if wanted == had:
            return   # the same references (most rule changes): nothing to book
        if wanted:
            held[owner] = wanted
        else:
            held.pop(owner, None)
        for ref in had:
            owners = self.refs.get(ref)
            if owners is not None and owner in owners and ref not in wanted:
                owners.discard(owner)
                if not owners:
                    del self.refs[ref]
                    self.names_epoch += 1
                    self._member_sets(*ref)
        for ref in wanted:
            if ref not in self.refs:
                self.refs[ref] = {owner}
                self.names_epoch += 1
                self._member_sets(*ref)
            else:
                self.refs[ref].add(owner)

    def _book_set(self, sg, fam, members):
        """Replace the recorded members of one group and family."""
        self.loaded_members.pop((sg, fam), None)
        cur = self.members[(sg, fam)] = AddrSet.of(fam, members)
        self.prefix_members[(sg, fam)] = {m for m in cur.extra if is_prefix(m)}

    def _book_add(self, sg, fam, members):
        """Record added members; returns (all members now, the new ones, the new prefixes)."""
        cur = self.members.get((sg, fam))
        if cur is None:
            cur = self.members[(sg, fam)] = AddrSet(fam)
        self.loaded_members.pop((sg, fam), None)
        new = [m for m in members if cur.change(m, True)]
        pfx = [m for m in new if is_prefix(m)]
        if pfx:
            self.prefix_members.setdefault((sg, fam), set()).update(pfx)
        return cur, new, pfx

    def _book_remove(self, sg, fam, members):
        """Record removed members; returns (members left, the ones gone, the prefixes gone),
        or None when the group had none."""
        cur = self.members.get((sg, fam))
        if not cur:
            return None
        gone = [m for m in members if cur.change(m, False)]
        self.loaded_members.pop((sg, fam), None)
        pfx = [m for m in gone if is_prefix(m)]
        if pfx:
            self.prefix_members.get((sg, fam), set()).difference_update(pfx)
        return cur, gone, pfx
