"""The library entry point: ``Firewall(netns, mode, backend)``.

Whole models: ``plan``, ``apply``, ``flush``, ``reconcile``. Incremental calls, named as in
Neutron's FirewallDriver: ``prepare_port_filter``, ``update_port_filter``,
``remove_port_filter``, ``update_security_group_rules``, ``update_security_group_members``,
``add_security_group_members``, ``remove_security_group_members``, and ``defer_apply()``.

Desired state is kept in memory and updated change by change; each change is committed as one
atomic transaction holding only what it touched (nothing changed: no kernel call at all). The
in-memory mirror of the kernel is updated only after the kernel accepted a transaction; a
refused one is undone in memory and the mirror re-read, so memory never diverges from the
kernel. Conntrack entries that lost their rule are removed after the commit.

Firewall orchestrates and nothing else: input is parsed by :mod:`fwsg.model`, and everything
about kernel objects (desired state, diff, transports, read-back, host preparation) is the
backend's, through the interface of :mod:`fwsg.backends.base`.

Threads: a Firewall may be shared by several threads. Every public call (and a whole
``defer_apply`` block) holds the Firewall's lock, so calls run one after another, each seeing
the state the previous one left; the libnftables context and netlink sockets are only used under
it. Processes: every transaction (read back, diff, commit, names record, conntrack sweep) holds
the namespace's lock (:mod:`fwsg.nslock`), shared with every other fwsg process and Firewall on
that namespace; a Firewall that finds another writer committed since its own last transaction
re-reads the kernel first.
"""

import contextlib
import errno
import functools
import gc
import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field

from fwsg import fast, heap, nslock, testhooks
from fwsg.addr import is_prefix
from fwsg.backends import make_backend
from fwsg.errors import KernelError, UserError, ValidationError, short_repr
from fwsg.model import (Model, check_id, host_addresses, is_stateless, member_order,
                        members_by_family, pack_member_list, parse_device, parse_rules,
                        rule_facts)
from fwsg.netns import check
from fwsg.nslock import NamespaceLock
from fwsg.ops import (AddElements, CreateSet, CreateTable, DeleteChain, DeleteElements, DeleteSet,
                      DeleteTable, FillChain)

MODES = ("bridge",)
FULL = "full"  # sweep every flow
MEMBERS = "members"  # a whole model that changed only members (the names record stays)


@dataclass
class ApplyResult:
    """What one transaction did: the plan's summary, sizes, timings (ms) and notices.
    ``counts`` (sizes of the whole desired ruleset) and ``batch_bytes`` (the size of the
    transaction's text) are computed when first read: a cold start of a million members
    never renders their text unless asked."""

    changed: bool
    summary: dict
    counts_of: object
    batch_bytes_of: object
    timings_ms: dict
    conntrack_killed: int = 0
    notices: list = field(default_factory=list)
    repaired: list = field(default_factory=list)
    transport: str = None

    @property
    def counts(self):
        if callable(self.counts_of):
            self.counts_of = self.counts_of()
        return self.counts_of

    @property
    def batch_bytes(self):
        if callable(self.batch_bytes_of):
            self.batch_bytes_of = self.batch_bytes_of()
        return self.batch_bytes_of

    def as_dict(self):
        return {"changed": self.changed, "summary": self.summary, "counts": self.counts,
                "batch_bytes": self.batch_bytes, "timings_ms": self.timings_ms,
                "conntrack_killed": self.conntrack_killed, "notices": self.notices,
                "repaired": self.repaired, "transport": self.transport}


def _serialized(method):
    """Run ``method`` holding the Firewall's (re-entrant) lock."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return call


@contextlib.contextmanager
def _no_cyclic_gc():
    """Hold Python's cyclic garbage collector off (as the caller had it, afterwards): a whole
    model allocates so many containers that the collector would otherwise walk every big set
    of the desired state again and again (measured: ~15 % of a 100k-member cold start).
    Reference counting still frees everything as usual; only cycles wait for the next pass."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _bulky(plan):
    """True for a transaction adding or removing many elements (a cold start, a resync)."""
    s = plan.summary
    return s.get("elements_added", 0) + s.get("elements_removed", 0) >= heap.BURST_ELEMENTS


class _Fingerprint:
    """``fingerprint(rs)`` computed in a thread of its own, from :meth:`begin` on, while the
    caller's thread waits for the kernel. ``result()``: the digest, or None when it was never
    begun or failed (the caller then computes it itself). ``rs`` must not change meanwhile."""

    def __init__(self, rs):
        self.rs, self.fp, self._thread = rs, None, None

    def begin(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fwsg-fingerprint",
                                            daemon=True)
            self._thread.start()

    def _run(self):
        from fwsg.fingerprint import fingerprint

        try:
            self.fp = fingerprint(self.rs)
        except Exception:  # noqa: BLE001 - result() says None: the caller computes it again
            self.fp = None

    def result(self):
        if self._thread is None:
            return None
        self._thread.join()
        return self.fp


def _only_adds(old, new):
    """True when the rule list ``new`` keeps every rule of ``old`` and its statefulness: rules
    only allow, so such a change admits more and cuts no flow (no conntrack sweep needed).
    No I/O here."""
    if not old:
        return False
    o, n = rule_facts(old), rule_facts(new)
    return o.stateless == n.stateless and o.rules <= n.rules


class Firewall:
    """Keeps fwsg's tables in one namespace equal to a model.

    ``netns``: a named namespace (``ip netns``) or None for the caller's. ``mode``: ``bridge``
    (VM taps on a Linux bridge). ``backend``: ``nft`` or ``fake`` (see fwsg.backends.base for
    what a backend provides). ``conntrack``: remove entries that lost their rule after each
    change (default: when the backend's kernel tracks flows). ``lock_wait``:
    how long a transaction waits for another fwsg holding the namespace (None: as long as it
    takes; 0: not at all, :class:`fwsg.errors.Busy` naming the holder's pid).

    Safe to share between threads: public calls are serialized (see the module docstring).
    """

    def __init__(self, netns=None, mode="bridge", backend="nft", conntrack=None, lock_wait=None):
        if mode not in MODES:
            raise UserError(f"--mode: {short_repr(mode, 60)} is not one of {', '.join(MODES)}")
        self.netns = check(netns)
        self.mode = mode
        self.backend = make_backend(backend, self.netns)
        self.conntrack = self.backend.tracks_conntrack if conntrack is None else conntrack
        self.notices = []
        self._current = None     # Ruleset mirroring the kernel (None: read it first)
        self._desired = None     # Desired (None: nothing loaded yet)
        self._model = None       # the Model last applied whole, while nothing changed since
        self._full = True        # next commit compares everything (cold start, after failure)
        self._defer = 0
        self._undo = []          # how to take back the changes not yet committed
        self._sweep = None       # flows to judge after the commit: None, FULL or a set of addresses
        self._gone = set()       # addresses of ports removed since the last commit
        self._packed = {}        # (sg, family) -> packed host members of the last full list
        self.last_result = None
        self._lock = threading.RLock()
        real = self.backend.name != "fake"  # a kernel backend: lock the namespace, keep the record
        self._nslock = NamespaceLock(self.netns, lock_wait) if real else None
        self._token = uuid.uuid4().hex[:12]  # with the pid and a counter: our stamps
        self._count = itertools.count()
        self._stamp = None       # stamp of our last transaction under the namespace lock
        self._record = real      # keep the names record under /run/fwsg
        self._recorded = None    # group names as last recorded
        self._recorded_at = None  # (registry, its changes count) then, see _names_same
        self._recorded_epoch = None  # the desired state's names_epoch then (groups present)
        self._saved = None       # (names record, its file identity) as this Firewall wrote it
        self._record_all = False  # next commit rewrites the whole record (a whole model);
        #                           MEMBERS: a whole model that changed members only
        self._swept = False      # a full conntrack sweep done by this Firewall

    # -- state ------------------------------------------------------------------------------
    @_serialized
    def current(self):
        """The kernel's state as last committed or read (a Ruleset)."""
        if self._current is None:
            self._current = self.backend.read()
        return self._current

    def _ensure_desired(self, create=False):
        """The desired state. Only apply() and reconcile(model) may start one (``create``):
        an incremental call before any model would make fwsg's state empty, and committing
        that would remove every port's filtering."""
        if self._desired is None:
            if not create:
                raise UserError("no model applied yet: call apply(model) or reconcile(model) "
                                "first (an agent starts with a full sync)")
            ids = (self.backend.port_ids(self._current) if self._current is not None
                   else self.backend.read_port_ids())
            self._desired = self.backend.desired(ids, group_names=self._recorded_names())
            self._full = True
        return self._desired

    def _recorded_names(self):
        """Group id -> derived name from the names record (nft backend only)."""
        if not self._record:
            return {}
        from fwsg import statefile

        return statefile.group_names(self.netns)

    @property
    @_serialized
    def model(self):
        """The desired state as a Model (built on demand; O(model))."""
        if self._model is None and self._desired is not None:
            d = self._desired
            members = {}
            for (sg, fam), ips in d.members.items():
                members.setdefault(sg, {4: (), 6: ()})[fam] = member_order(ips, fam)
            self._model = Model(dict(d.groups), members, dict(d.ports))
        return self._model

    @_serialized
    def show(self, names=None):
        """What the kernel holds now, summarised by the backend (read back, not remembered):
        ports, groups, sets and their sizes; ``names`` (derived names -> user ids, as
        :meth:`names` gives, or a saved record of them) adds the user ids."""
        return self.backend.describe(self.backend.read(), names)

    @_serialized
    def names(self):
        """Derived names -> user ids of the desired state (ports, groups), for display."""
        return self._desired.meta() if self._desired is not None else {}

    # -- whole models -----------------------------------------------------------------------
    @_serialized
    def plan(self, model):
        """The Plan that ``apply(model)`` would commit (``str(plan)`` is the backend's batch text).
        Changes nothing."""
        model = Model.from_wire(model)
        current = self.current()
        desired = self.backend.desired(self.backend.port_ids(current),
                                       group_names=self._recorded_names()).load(model)
        return self.backend.diff(desired, current)

    @_serialized
    def apply(self, model):
        """Make the kernel equal to ``model`` (a Model or a wire-format dict) in one atomic
        transaction; returns an ApplyResult. Nothing to change: no kernel call."""
        with _no_cyclic_gc():
            return self._apply(model)

    def _apply(self, model):
        t0 = time.perf_counter()
        model = Model.from_wire(model)
        if model is self._model and not self._full and not self._undo:
            return self._result(self.backend.empty_plan(), {"parse": _ms(t0, time.perf_counter())},
                                t0)
        t1 = time.perf_counter()
        self._check(model)
        loaded = self._desired is not None
        last = self._model   # the model applied last (None after an incremental change)
        d = self._ensure_desired(create=True)
        previous = self.model if loaded else None  # what a refusal goes back to
        old_ports = dict(d.ports)
        d.load(model)
        self._packed.clear()
        if previous is not None:
            self._undo.append(lambda: d.load(previous))
        else:  # a cold start that fails leaves nothing loaded
            self._undo.append(lambda: setattr(self, "_desired", None))
        self._want_sweep()
        for pid, port in old_ports.items():
            if pid not in model.ports:
                self._gone.update(port.fixed_ips)
        self._model = model
        self._record_all = (MEMBERS if last is not None and last.ports == model.ports
                            and last.groups == model.groups else True)
        if self._defer:
            return None
        return self._changed({"parse": _ms(t0, t1), "compile": _ms(t1, time.perf_counter())}, t0)

    @_serialized
    def flush(self):
        """Remove fwsg's tables (and nothing else); the families removed."""
        with self._namespace_locked():
            self._committed()   # before the kernel changes: a crash half-way is still seen
            removed = self.backend.flush()
            if self._record:
                from fwsg import statefile

                statefile.remove(self.netns)
        self._packed.clear()
        self._current = None
        self._desired = None
        self._model = None
        self._undo.clear()
        self._full = True
        return removed

    @_serialized
    def reconcile(self, model=None):
        """Read fwsg's own tables back, repair whatever differs from the desired state
        (elements deleted, chains flushed or changed, tables deleted) in one transaction, and
        report what was repaired (``ApplyResult.repaired``). ``model`` sets the desired state
        first (for a process that has not applied one yet)."""
        t0 = time.perf_counter()
        if model is not None:
            model = Model.from_wire(model)
            self._check(model)
            self._ensure_desired(create=True).load(model)
            self._model = model
            self._packed.clear()
            self._undo.append(lambda: setattr(self, "_desired", None))
        if self._desired is None:
            raise UserError("nothing to reconcile: no model has been applied by this Firewall")
        self._current = None  # read back under the namespace lock
        self._full = True
        self._want_sweep()
        return self._changed({}, t0, repair=True, record=True)

    # -- incremental calls (Neutron FirewallDriver names) ------------------------------------
    @_serialized
    def prepare_port_filter(self, port):
        """Start filtering a port (a wire-format device dict with an ``id``, or a model.Port)."""
        return self._set_port(port)

    @_serialized
    def update_port_filter(self, port):
        """Replace a port's filter (its groups, addresses, rules, port security)."""
        return self._set_port(port)

    @_serialized
    def remove_port_filter(self, port_id):
        """Stop filtering a port and remove everything it owned; kill its connections."""
        d = self._ensure_desired()
        old = d.ports.get(port_id)
        if old is None:
            return self._maybe_commit()
        d.remove_port(port_id)
        self._gone.update(old.fixed_ips)
        self._want_sweep(set())
        self._note(lambda: d.set_port(old))
        return self._maybe_commit()

    @_serialized
    def update_security_group_rules(self, sg_id, rules):
        """Replace the rules of a group (a list of wire-format rule dicts)."""
        check_id("security_group_id", sg_id)
        parsed = parse_rules(sg_id, rules)
        d = self._ensure_desired()
        old = d.groups.get(sg_id)
        if old == parsed:
            return self._maybe_commit()
        self._check_statefulness(sg_id, parsed, old)
        d.set_group(sg_id, parsed)
        if not _only_adds(old, parsed):
            self._want_sweep()   # a rule gone (or statefulness changed) may cut flows
        self._note(lambda: d.set_group(sg_id, old))
        return self._maybe_commit()

    @_serialized
    def remove_security_group(self, sg_id):
        """Forget a group no port uses any more."""
        d = self._ensure_desired()
        users = [pid for pid, p in d.ports.items() if sg_id in p.security_groups]
        if users:
            raise ValidationError(f"security_groups.{sg_id}", f"still used by port {short_repr(users[0], 60)}")
        old = d.groups.get(sg_id)
        if old is None:
            return self._maybe_commit()
        d.set_group(sg_id, None)
        self._note(lambda: d.set_group(sg_id, old))
        return self._maybe_commit()

    @_serialized
    def update_security_group_members(self, sg_id, members):
        """Set the full member list of a group: ``{"IPv4": [...], "IPv6": [...]}`` (Neutron's
        form; bare IPs, prefixes or [ip, mac] pairs). Only the difference reaches the kernel;
        the list is parsed and compared packed, at C speed with the compiled hot path."""
        check_id("security_group_id", sg_id)
        changes = pack_member_list(sg_id, members)  # every family validated before any applied
        d = self._ensure_desired()
        for fam, (packed, prefixes) in changes.items():
            old = self._packed.get((sg_id, fam))
            if old is None:
                cur = d.members.get((sg_id, fam))  # an AddrSet: its hosts are packed already
                old = cur.hosts().packed() if cur is not None else b""
            add_p, rem_p = fast.diff_packed(packed, old, 4 if fam == 4 else 16)
            added = fast.unpack_addrs(add_p, fam)
            removed = fast.unpack_addrs(rem_p, fam)
            cur_pfx = d.prefix_members.get((sg_id, fam), set())
            added += [p for p in prefixes if p not in cur_pfx]
            removed += [p for p in cur_pfx if p not in prefixes]
            self._change_members(sg_id, fam, added, removed)
            self._packed[(sg_id, fam)] = packed
        return self._maybe_commit()

    @_serialized
    def add_security_group_members(self, sg_id, ips):
        """Add addresses (a list, either family) to a group's members."""
        check_id("security_group_id", sg_id)
        for fam, vals in members_by_family(f"sg_member_ips.{sg_id}", ips).items():
            cur = self._ensure_desired().members.get((sg_id, fam), ())
            self._change_members(sg_id, fam, [m for m in vals if m not in cur], [])
        return self._maybe_commit()

    @_serialized
    def remove_security_group_members(self, sg_id, ips):
        """Remove addresses (a list, either family) from a group's members; connections that
        depended on them are cut."""
        check_id("security_group_id", sg_id)
        for fam, vals in members_by_family(f"sg_member_ips.{sg_id}", ips).items():
            cur = self._ensure_desired().members.get((sg_id, fam), ())
            self._change_members(sg_id, fam, [], [m for m in vals if m in cur])
        return self._maybe_commit()

    @contextlib.contextmanager
    def defer_apply(self):
        """Coalesce every change inside the block into one transaction, committed at its end.
        If the block raises, nothing is committed and the changes are taken back. The block holds
        the Firewall's lock: other threads' calls wait until it is committed."""
        with self._lock:
            self._defer += 1
            try:
                yield self
            except BaseException:
                self._defer -= 1
                if not self._defer:
                    self._rollback()
                raise
            self._defer -= 1
            if not self._defer:
                self._commit_pending()

    # -- internals ---------------------------------------------------------------------------
    def _set_port(self, raw):
        d = self._ensure_desired()
        port = parse_device(raw, d.groups) if isinstance(raw, dict) else raw
        other = next((p for p in d.ports.values() if p.device == port.device and p.id != port.id),
                     None)
        if other is not None:
            raise ValidationError(f"devices.{port.id}.device",
                                  f"{short_repr(port.device, 60)} is also the device of port {short_repr(other.id, 60)}")
        old = d.ports.get(port.id)
        if old == port:
            return self._maybe_commit()
        if port.port_security:
            kinds = {is_stateless(d.groups[sg]) for sg in port.security_groups if d.groups.get(sg)}
            if len(kinds) > 1:
                raise ValidationError(f"devices.{port.id}.security_groups",
                                      "mixes stateful and stateless groups (Neutron forbids this)")
        if old is not None:
            self._gone.update(set(old.fixed_ips) - set(port.fixed_ips))
        d.set_port(port)
        self._want_sweep(set(host_addresses(port)) | (set(host_addresses(old)) if old else set()))
        self._note(lambda: d.set_port(old) if old is not None else d.remove_port(port.id))
        return self._maybe_commit()

    def _change_members(self, sg, fam, added, removed):
        if not added and not removed:
            return
        self._packed.pop((sg, fam), None)
        d = self._desired
        if added:
            d.add_members(sg, fam, added)
        if removed:
            d.remove_members(sg, fam, removed)
            self._want_sweep(None if any(is_prefix(m) for m in removed) else removed)

        def undo():
            if added:
                d.remove_members(sg, fam, added)
            if removed:
                d.add_members(sg, fam, removed)
        self._note(undo)

    def _check(self, model):
        """ValidationError, before anything changes, for a model the backend cannot express."""
        check = getattr(self.backend, "check_model", None)
        if check is not None:
            check(model)

    def _check_statefulness(self, sg, rules, old):
        """Refuse a rule change that would make a port mix stateful and stateless groups
        (``old``: the group's rules now, or None)."""
        stateless = rule_facts(rules).stateless
        d = self._desired
        if stateless == rule_facts(old or ()).stateless:
            return  # statefulness unchanged: no port can start mixing
        for pid, port in d.ports.items():
            if sg not in port.security_groups or not port.port_security:
                continue
            for other in port.security_groups:
                o = d.groups.get(other, ())
                if other != sg and o and is_stateless(o) != stateless:
                    raise ValidationError(f"security_groups.{sg}", f"port {short_repr(pid, 60)} would mix "
                                          "stateful and stateless groups (Neutron forbids this)")

    def _note(self, undo):
        self._undo.append(undo)
        if self._record_all is MEMBERS:  # a change of any kind joined a whole model's
            self._record_all = True
        if self._model is not None:
            self._model = None

    def _maybe_commit(self):
        if self._defer:
            return None
        return self._commit_pending()

    def _commit_pending(self):
        return self._changed({}, time.perf_counter())

    def _changed(self, timings, t0, repair=False, record=False):
        """Commit what the desired state recorded as pending (everything after a cold start or
        a failure) under the namespace lock; undo it in memory if the kernel refuses."""
        d = self._desired
        if d is None:
            return self._result(self.backend.empty_plan(), timings, t0)
        record = record or self._record_all
        lock = self._nslock   # held as in _namespace_locked, inline: this is the hot path
        if lock is not None:
            self._lock_namespace()
        try:
            result = self._commit_locked(d, timings, t0, repair)
            if self._record:
                epoch = getattr(d, "names_epoch", None)
                groups = d.names.groups
                same = self._names_same(groups) and self._recorded_epoch == epoch
                if record and result.changed or not same:
                    self._save_names(record is MEMBERS and same)
                    self._recorded = dict(groups.by_key)
                    self._recorded_at = (groups, getattr(groups, "changes", None))
                    self._recorded_epoch = epoch
            if lock is not None:
                self._stamp = lock.stamp
        finally:
            if lock is not None:
                lock.release()
        self._record_all = False
        return result

    def _names_same(self, groups):
        """True when the group names of ``groups`` (a names registry) are the ones last
        recorded: known without comparing them when the registry says no name was bound or
        released since (its ``changes`` count), else compared. No I/O here."""
        if self._recorded is None:
            return False
        at, changes = self._recorded_at or (None, None)
        if at is groups and changes is not None and changes == groups.changes:
            return True
        return self._recorded == groups.by_key

    def _save_names(self, names_same=False):
        """Write the names record, unless the file still is the one this Firewall wrote and
        the names are the same: known (``names_same``: only members changed) or compared (a
        member-only change paid an fsync, ~9 ms, and building the names ~0.5 ms)."""
        from fwsg import statefile

        saved = self._saved
        if saved is not None and saved[1] == statefile.identity(self.netns):
            if names_same:
                return
            meta = self.names()
            if saved[0] == meta:
                return
        else:
            meta = self.names()
        ident = statefile.save(self.netns, meta)
        self._saved = (meta, ident) if ident is not None else None

    def _commit_locked(self, d, timings, t0, repair):
        t2 = time.perf_counter()
        full = self._full
        fp = None
        if full and not repair and self._current is None and self._nslock is not None:
            self._current, fp = self._proven_mirror(d)
        gen0 = self.backend.generation() if full and self._nslock is not None else None
        current = self._current if self._current is not None else self.current()
        repaired, rebuild = [], {}
        if self._full:
            current, rebuild, repaired = self._drift(d, current, deep=repair)

        def make_plan():
            plan = self.backend.diff(d, current, None if self._full else d.pending)
            if rebuild:
                from fwsg.backends.nft.drift import with_rebuild

                plan = with_rebuild(plan, rebuild)
            return plan

        plan = make_plan()
        t3 = time.perf_counter()
        notices = self.backend.prepare_host(self.mode) if plan else []
        self.notices.extend(notices)
        testhooks.point("before-commit")
        if plan:  # stamped before the kernel changes: a process dying inside or right after
            self._committed()   # its commit still tells every other Firewall to re-read
        # a big full transaction: the state's fingerprint (for _prove) is computed in a thread
        # of its own while the kernel takes the batches (the writer's send releases the GIL)
        ahead = _Fingerprint(d.rs) if gen0 is not None and fp is None and \
            getattr(self.backend, "overlaps", False) and _bulky(plan) else None
        try:
            try:
                try:
                    transport = self._send_plan(plan, ahead)
                except KernelError as e:
                    if getattr(plan, "guard", None) is None or e.errno != errno.ERESTART:
                        raise
                    # the namespace moved since the chains' rule handles were learnt (anyone's
                    # commit, in any table; nothing changed): the same change, chains rewritten
                    current.meta["generation"] = None
                    plan = make_plan()
                    transport = self._send_plan(plan, ahead)
            finally:
                fp = ahead.result() if ahead is not None else fp   # before any rollback
        except KernelError as e:
            # the kernel may have drifted from our mirror (an element already deleted by
            # someone else): re-read it and commit the full difference once
            try:
                retry = self._recommit(d, plan, e)
            except KernelError:
                self._rollback()
                raise
            if retry is None:
                self._rollback()
                raise
            plan, current, transport, notes = retry
            repaired = repaired + notes
        if gen0 is not None:
            self._prove(d, gen0, fp)
        testhooks.point("after-commit")
        t4 = time.perf_counter()
        plan.update(current)
        d.clear_pending()
        if _bulky(plan):
            heap.release()  # a cold start's transient buffers: back to the kernel
        self._full = False
        self._undo.clear()
        killed = 0
        # A process that died between its commit and its sweep left flows no rule allows: the
        # first whole-model transaction of every Firewall sweeps, even when nothing changed.
        first = not self._swept and self._sweep is FULL
        if self.conntrack and (plan or first) and self._sweep is not None \
                and self.backend.conntrack_in_use():
            from fwsg.conntrack import sweep

            killed = sweep(self.netns, d, self._gone,
                           None if self._sweep is FULL else self._sweep)
        if self._sweep is FULL:
            self._swept = True
        self._sweep = None
        self._gone = set()
        t5 = time.perf_counter()
        timings.update({"diff": _ms(t2, t3), "commit": _ms(t3, t4), "conntrack": _ms(t4, t5),
                        "total": _ms(t0, t5)})
        result = self._result(plan, timings, t0, killed, notices)
        result.transport = transport
        if repair or repaired:
            result.repaired = repaired + _describe(plan)
        self.last_result = result
        return result

    def _send_plan(self, plan, ahead):
        """``backend.commit(plan)``; ``ahead`` (a :class:`_Fingerprint` or None) is started
        just before the first batch goes to the kernel."""
        if ahead is None:
            return self.backend.commit(plan)
        return self.backend.commit(plan, during=ahead.begin)

    def _drift(self, d, current, deep):
        """The backend's drift check on a full comparison; the marked mirror becomes ours."""
        marked, rebuild, notes = self.backend.drift(d, current, deep)
        if marked is not current:
            self._current = marked
        return marked, rebuild, notes

    def _proven_mirror(self, d):
        """(mirror, fingerprint): a copy of the desired state when the kernel provably holds
        exactly it (the last full transaction recorded this state's fingerprint and the
        namespace's generation has not moved since: nobody committed anything), else
        (None, fingerprint). Spares a fresh process reading millions of elements back."""
        from fwsg.fingerprint import clone, fingerprint

        proof = self._nslock.read_state()
        gen = self.backend.generation()
        if not proof or gen is None or proof.get("generation") != list(gen):
            return None, None
        fp = fingerprint(d.rs)
        if proof.get("fingerprint") != fp:
            return None, fp
        return clone(d.rs), fp

    def _prove(self, d, gen0, fp):
        """After a full transaction: record the generation and the state's fingerprint if
        the generation moved by exactly our own transactions (else nobody may trust it)."""
        from fwsg.fingerprint import fingerprint

        gen1 = self.backend.generation()
        steps = getattr(self.backend, "steps", 0) or 0
        if gen1 is None or gen1[0] != gen0[0] or (gen1[1] - gen0[1]) % (1 << 32) != steps:
            self._nslock.write_state(None)
            return
        self._nslock.write_state({"generation": list(gen1),
                                  "fingerprint": fp or fingerprint(d.rs)})

    def _recommit(self, d, failed, error):
        """After a refused commit: re-read the kernel and, if the full difference is another
        transaction than the refused one, commit that. (plan, current, transport, notes) or
        None (the refusal stands)."""
        try:
            current = self.backend.read()
        except KernelError:
            return None
        plan = self.backend.diff(d, current)
        if plan.ops == failed.ops:
            return None
        self._current = current
        transport = self.backend.commit(plan)  # refused again: the caller rolls back
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "refused"
        return plan, current, transport, [f"kernel differed from fwsg's mirror ({reason[:120]}): "
                                          "re-read and committed the full difference"]

    @contextlib.contextmanager
    def _namespace_locked(self):
        """Hold the namespace lock (no-op for the fake backend); a mirror another writer made
        stale since our last transaction is dropped (re-read, full diff)."""
        if self._nslock is None:
            yield
            return
        self._lock_namespace()
        try:
            yield
            # our mirror is now the kernel as of the lock's stamp (ours if we committed)
            self._stamp = self._nslock.stamp
        finally:
            self._nslock.release()

    def _lock_namespace(self):
        """Take the namespace lock; drop a mirror another writer made stale since our last
        transaction (the next commit re-reads the kernel and compares everything)."""
        if self._nslock.acquire() != self._stamp:
            self._current = None
            self._full = True

    def _committed(self):
        """Stamp the namespace lock with our transaction (held), before it reaches the
        kernel."""
        if self._nslock is not None:
            self._stamp = f"{nslock.pid()}.{self._token}.{next(self._count)}"
            self._nslock.committed(self._stamp)

    def _rollback(self):
        """Take back the uncommitted changes in memory and re-read the kernel."""
        d = self._desired
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        self._packed.clear()
        if d is not None:
            d.clear_pending()
        self._model = None
        self._current = None
        self._full = True
        self._sweep = None
        self._gone = set()

    def _want_sweep(self, addresses=None):
        """After the next commit, judge the flows of ``addresses`` (None: every flow)."""
        if addresses is None or self._sweep is FULL:
            self._sweep = FULL
        else:
            self._sweep = (self._sweep or set()) | set(addresses)

    def _result(self, plan, timings, t0, killed=0, notices=()):
        if "total" not in timings:   # set by the commit, else the time until now
            timings["total"] = _ms(t0, time.perf_counter())
        d = self._desired
        return ApplyResult(changed=bool(plan), summary=plan.summary,
                           counts_of=(d.counts if d is not None else dict),
                           batch_bytes_of=lambda: plan.size, timings_ms=timings,
                           conntrack_killed=killed, notices=list(notices))


def _describe(plan):
    """Human lines for what a repairing plan did."""
    if hasattr(plan, "describe"):  # a backend whose plans describe themselves
        return plan.describe()
    out = []
    for op in plan.ops:
        kind = type(op)
        if kind is CreateTable:
            out.append(f"table {op.family} fwsg re-created")
        elif kind is DeleteTable:
            out.append(f"table {op.family} fwsg removed")
        elif kind is CreateSet:
            out.append(f"set {op.set.family} fwsg {op.set.name} re-created")
        elif kind is DeleteSet:
            out.append(f"stray set {op.set.family} fwsg {op.set.name} removed")
        elif kind in (AddElements, DeleteElements):
            sd = op.set
            where = f"{sd.family} fwsg {sd.name}"
            n = len(op.elements if kind is AddElements else op.keys)
            if sd.is_map:
                out.append(f"{n} map entr(ies) repaired in {where}")
            elif kind is AddElements:
                out.append(f"{n} element(s) restored in {where}")
            else:
                out.append(f"{n} stray element(s) removed from {where}")
        elif kind is FillChain:
            out.append(f"chain {op.chain.family} fwsg {op.chain.name} restored")
        elif kind is DeleteChain:
            out.append(f"stray chain {op.family} fwsg {op.name} removed")
    return out


def _ms(a, b):
    return round((b - a) * 1000, 3)

