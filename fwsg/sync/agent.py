"""The agent: keeps one host's kernel equal to what the store says about that host.

One thread (the apply loop, :meth:`Agent.run`) owns the :class:`fwsg.Firewall`; watch threads
only put events into a bounded queue (a burst blocks the watch streams, it never grows memory
without bound). The loop coalesces what arrives within ``window`` seconds into one
``defer_apply`` transaction.

Invariants:
- fail static: while the store is unreachable nothing touches the kernel (no flush, no open
  window); the agent retries with backoff and resumes every watch from its last revision; a
  compacted revision, SIGHUP, or a failed commit lead to a full resync (one ``apply`` of what
  the store holds at one revision: the kernel gets only the difference).
- fan-out: a host watches only its ports' prefix and the groups in their closure; events per
  group are counted (``events_by_group`` in the status).
- a malformed value skips that key (one log line naming it, counted); the rest applies.
- stopping leaves the kernel as it is.
"""

import collections
import concurrent.futures
import logging
import os
import queue
import random
import threading
import time

from fwsg.errors import FwsgError, KernelError, ValidationError
from fwsg.model import Model, parse_port, parse_rule
from fwsg.sync.layout import Layout
from fwsg.sync.metrics import Metrics
from fwsg.sync.mirror import Malformed, Mirror, decode_member, decode_port, decode_rules
from fwsg.sync.status import write_status
from fwsg.sync.store import Compacted, StoreUnavailable

log = logging.getLogger("fwsg.agent")

QUEUE_MAX = 1024       # event batches waiting (each is one etcd watch response)
BATCH_MAX = 20000      # events folded into one transaction at most
READERS = 4            # concurrent range reads during a full sync
QUIET_GAP = 0.0005     # seconds without a new event that close the coalescing window early


class _Stream:
    """A watch and the revision it (re)starts from: the last revision already applied, not
    the one after it. Replaying that revision is harmless (applying a key is idempotent), and
    it makes etcd report a compaction at the next revision instead of silently dropping a
    delete there (a compaction at revision N removes the tombstones of N, and a watch that
    starts exactly at N gets no error)."""

    def __init__(self, name, prefix, resume):
        self.name, self.prefix, self.resume = name, prefix, resume
        self.watch = None
        self.gen = 0  # which watch of this stream an item in the queue came from


class AgentBase:
    """What every agent has: the Firewall, status, metrics, timers and the stop/resync flags."""

    def __init__(self, fw, host, *, status_file=None, reconcile_every=300.0, metrics=None,
                 on_commit=None):
        self.fw = fw
        self.host = host
        self.status_file = status_file
        self.reconcile_every = reconcile_every
        self.metrics = metrics or Metrics()
        self.on_commit = on_commit
        self._stop = threading.Event()
        self._resync = threading.Event()
        self.connected = False
        self.disconnect_reason = "not connected yet"
        self.revision = 0
        self.last_commit = None
        self.last_error = None
        self.errors = collections.deque(maxlen=20)
        self.skipped = {}
        self.transactions = 0
        self.resyncs = 0
        self.reconnects = 0
        self.started = time.time()
        self._status_at = 0.0
        self._next_reconcile = time.monotonic() + reconcile_every if reconcile_every else None

    def stop(self):
        """Ask the loop to end (the kernel keeps its rules)."""
        self._stop.set()

    def request_resync(self):
        """Ask for a full resync (SIGHUP)."""
        self._resync.set()

    # -- reporting ---------------------------------------------------------------------------
    def _error(self, msg):
        self.last_error = msg
        self.errors.append({"time": time.time(), "error": msg})
        self.metrics.errors.inc()
        log.error("%s", msg)

    def _skip(self, key, reason):
        if self.skipped.get(key) != reason:
            log.warning("skipped key %s: %s", key, reason)
        self.skipped[key] = reason
        self.metrics.skipped.inc()

    def _unskip(self, key):
        self.skipped.pop(key, None)

    def _set_connected(self, up, why=""):
        if up != self.connected:
            if up:
                log.info("connected to the store at revision %s", self.revision)
            else:
                log.error("store unreachable (%s): keeping the last good rules in the kernel", why)
        self.connected = up
        self.disconnect_reason = None if up else why
        self.metrics.connected.set(1 if up else 0)
        self.write_status(force=True)

    def _committed(self, result, events=0, received=()):
        now = time.time()
        self.transactions += 1
        self.last_commit = {"time": now, "revision": self.revision, "events": events,
                            "ms": result.timings_ms.get("total") if result else 0}
        self.metrics.transactions.inc()
        t = time.monotonic()
        for r in received:
            self.metrics.lag.observe(t - r)
        if self.on_commit:
            self.on_commit(self.revision, now)

    def status(self):
        fw = self.fw
        members = self.member_count()
        return {"pid": os.getpid(), "running": not self._stop.is_set(), "host": self.host,
                "netns": fw.netns, "connected": self.connected, "revision": self.revision,
                "disconnected_because": self.disconnect_reason,
                "last_commit": self.last_commit, "transactions": self.transactions,
                "resyncs": self.resyncs, "reconnects": self.reconnects,
                "ports": self.port_count(), "groups_watched": sorted(self.watched_groups()),
                "members": members, "skipped_keys": dict(self.skipped),
                "errors": list(self.errors), "last_error": self.last_error,
                "events_by_group": dict(self.events_by_group()), "started": self.started,
                "updated": time.time(), "source": self.source_name()}

    def write_status(self, force=False):
        if not self.status_file:
            return
        now = time.monotonic()
        if not force and now - self._status_at < 0.25:
            return
        self._status_at = now
        try:
            write_status(self.status_file, self.status())
            if self.transactions and self.fw.backend.name == "nft":
                from fwsg import statefile

                statefile.save(self.fw.netns, self.fw.names())  # ids for 'fwsg show'
        except OSError as e:
            log.warning("cannot write status %s: %s", self.status_file, e)

    def _maybe_reconcile(self):
        if self._next_reconcile is None or time.monotonic() < self._next_reconcile:
            return
        self._next_reconcile = time.monotonic() + self.reconcile_every
        if self.transactions == 0:
            return
        try:
            res = self.fw.reconcile()
        except FwsgError as e:
            self._error(f"reconcile failed: {e}")
            return
        if res.repaired:
            log.warning("reconcile repaired drift: %s", "; ".join(res.repaired))

    # subclasses
    def port_count(self):
        return 0

    def watched_groups(self):
        return ()

    def member_count(self):
        return 0

    def events_by_group(self):
        return {}

    def source_name(self):
        return ""


class EtcdAgent(AgentBase):
    """Follows ``P/hosts/<host>/ports/`` and the groups in their closure in etcd."""

    def __init__(self, fw, store, layout, host, *, window=0.02, backoff_max=5.0,
                 health_every=5.0, **kw):
        super().__init__(fw, host, **kw)
        self.store = store
        self.layout = layout if isinstance(layout, Layout) else Layout(layout)
        self.window = window
        self.backoff_max = backoff_max
        self.mirror = Mirror()
        self.q = queue.Queue(QUEUE_MAX)
        self.streams = {}          # name -> _Stream ("ports" or a group id)
        self._events_by_group = collections.Counter()
        self._count_lock = threading.Lock()
        self._need_full = True
        self._backoff = 0.2
        self.health_every = health_every
        self.health_timeout = 2.0
        self._next_health = time.monotonic() + health_every

    def source_name(self):
        return f"etcd://{','.join(self.store.endpoints)}{self.layout.prefix}"

    def port_count(self):
        return len(self.mirror.ports)

    def member_count(self):
        return sum(len(c) for c in self.mirror.counts.values())

    def watched_groups(self):
        return [n for n in self.streams if n != "\0ports"]

    def events_by_group(self):
        with self._count_lock:
            return dict(self._events_by_group)

    # -- the loop ----------------------------------------------------------------------------
    def run(self):
        """The apply loop; returns when stop() is called. The kernel keeps its rules."""
        log.info("agent for host %s on %s starting", self.host, self.source_name())
        try:
            while not self._stop.is_set():
                if self._resync.is_set():
                    self._resync.clear()
                    log.info("full resync requested")
                    self._need_full = True
                if self._need_full:
                    if not self._full_sync():
                        self._sleep_backoff()
                    continue
                self._maybe_reconcile()
                self._maybe_health_check()
                if self._need_full:
                    continue
                try:
                    item = self.q.get(timeout=0.2)
                except queue.Empty:
                    self.write_status()
                    continue
                batch = [item]
                deadline = time.monotonic() + self.window
                n = len(item[2]) if item[0] == "ev" else 0
                while n < BATCH_MAX:
                    # the window closes at its end, or earlier after a quiet gap: an isolated
                    # event is committed at once, a burst is coalesced
                    left = min(deadline - time.monotonic(), QUIET_GAP)
                    try:
                        nxt = self.q.get(timeout=left) if left > 0 else self.q.get_nowait()
                    except queue.Empty:
                        break
                    batch.append(nxt)
                    if nxt[0] == "ev":
                        n += len(nxt[2])
                self._handle(batch)
                self.write_status()
        finally:
            self._cancel_watches()
            self.write_status(force=True)
            log.info("agent stopped; the kernel keeps its rules")

    def _sleep_backoff(self):
        self._stop.wait(self._backoff * (0.5 + random.random()))
        self._backoff = min(self._backoff * 2, self.backoff_max)

    # -- watches -----------------------------------------------------------------------------
    def _start_watch(self, name, prefix, resume):
        s = self.streams.get(name)
        if s is None:
            s = self.streams[name] = _Stream(name, prefix, resume)
        s.resume = resume
        if s.watch is not None:
            s.watch.cancel()
        s.gen += 1
        group = None if name == "\0ports" else name

        def on_events(events, _rev, s=s, group=group, gen=s.gen):
            if group is not None:
                with self._count_lock:
                    self._events_by_group[group] += len(events)
            self.q.put(("ev", s, events, gen))

        def on_end(err, s=s, gen=s.gen):
            self.q.put(("end", s, err, gen))

        s.watch = self.store.watch(prefix, resume, on_events, on_end)

    def _cancel_watches(self):
        for s in self.streams.values():
            if s.watch is not None:
                s.watch.cancel()
                s.watch = None
        self.streams.clear()

    def _drop_stream(self, name):
        s = self.streams.pop(name, None)
        if s is not None and s.watch is not None:
            s.watch.cancel()

    # -- full sync ---------------------------------------------------------------------------
    def _full_sync(self):
        """Read everything this host needs at one revision, apply it whole, watch from there.
        False (kernel untouched) when the store is unreachable."""
        self._cancel_watches()
        while not self._drain_nowait():
            pass
        try:
            rev, kvs = self.store.range(self.layout.ports(self.host))
            mirror = Mirror()
            for k, v in kvs:
                self._fold(mirror, k, v)
            loaded = set()
            while True:
                need = mirror.closure() - loaded
                if not need:
                    break
                # groups are read concurrently (etcd's gateway spends most of a big read
                # encoding JSON: ~25 us a key); folded here, in this thread, in order
                with concurrent.futures.ThreadPoolExecutor(READERS) as ex:
                    reads = [(sg, ex.submit(self.store.range, self.layout.group(sg), rev))
                             for sg in sorted(need)]
                    for sg, fut in reads:
                        for k, v in fut.result()[1]:
                            self._fold(mirror, k, v)
                        loaded.add(sg)
        except (StoreUnavailable, Compacted) as e:
            self._set_connected(False, str(e))
            return False
        self.mirror = mirror
        self.revision = rev
        self.resyncs += 1
        self.metrics.resyncs.inc()
        try:
            result = self._apply_whole(loaded)
        except FwsgError as e:
            self._error(f"full apply failed, the kernel keeps its rules: {e}")
            return False
        self._committed(result)
        for sg in sorted(loaded):
            self._start_watch(sg, self.layout.group(sg), rev)
        self._start_watch("\0ports", self.layout.ports(self.host), rev)
        self._need_full = False
        self._backoff = 0.2
        self._set_connected(True)
        self._update_gauges()
        log.info("full sync at revision %d: %d ports, %d groups, %d members",
                 rev, len(mirror.ports), len(loaded),
                 sum(len(c) for c in mirror.counts.values()))
        return True

    def _drain_nowait(self):
        try:
            self.q.get_nowait()
            return False
        except queue.Empty:
            return True

    def _apply_whole(self, groups):
        """One apply of the mirror (groups: the closure); bad keys skipped."""
        m = self.mirror
        sgs = {}
        for sg in sorted(groups):
            rules = m.rules.get(sg, [])
            try:
                for i, r in enumerate(rules):
                    parse_rule(f"{self.layout.rules(sg)}[{i}]", r)
                sgs[sg] = rules
                self._unskip(self.layout.rules(sg))
            except ValidationError as e:
                self._skip(self.layout.rules(sg), e.message if e.path is None else str(e))
                sgs[sg] = []
        devices = {}
        for pid, raw in m.ports.items():
            key = self.layout.port(self.host, pid)
            try:
                parse_port(key, pid, raw, sgs)
                devices[pid] = raw
            except ValidationError as e:
                self._skip(key, str(e))
        members = {sg: m.member_lists(sg) for sg in groups}
        for _ in range(len(devices) + 1):
            doc = {"security_groups": sgs, "sg_member_ips": members, "devices": devices}
            try:
                model = Model.from_wire(doc)
                break
            except ValidationError as e:  # a whole-model check (two ports on one tap, ...)
                bad = next((p for p in devices if e.path.startswith(f"devices.{p}.")), None)
                if bad is None:
                    raise
                self._skip(self.layout.port(self.host, bad), str(e))
                devices = {p: v for p, v in devices.items() if p != bad}
        # reconcile: the kernel is read back and every difference repaired (drift included)
        return self.fw.reconcile(model)

    # -- incremental -------------------------------------------------------------------------
    def _fold(self, mirror, key, value, touched=None):
        """Fold one key (value None: deleted) into ``mirror``; bad values skipped."""
        what = self.layout.parse(key)
        if what is None:
            return
        try:
            if what[0] == "port":
                if what[1] != self.host:
                    return
                pid = what[2]
                if value is None:
                    mirror.ports.pop(pid, None)
                else:
                    mirror.ports[pid] = decode_port(key, value)
                if touched is not None:
                    touched["ports"].add(pid)
            elif what[0] == "rules":
                sg = what[1]
                if value is None:
                    mirror.rules.pop(sg, None)
                else:
                    mirror.rules[sg] = decode_rules(key, value)
                if touched is not None:
                    touched["rules"].add(sg)
            elif what[0] == "member":
                sg = what[1]
                addr = None if value is None else decode_member(key, value)
                added, removed = mirror.set_member(sg, key, addr)
                if touched is not None:
                    d = touched["members"].setdefault(sg, [set(), set()])
                    if removed is not None:
                        if removed in d[0]:
                            d[0].discard(removed)
                        else:
                            d[1].add(removed)
                    if added is not None:
                        if added in d[1]:
                            d[1].discard(added)
                        else:
                            d[0].add(added)
            else:
                return
            self._unskip(key)
        except Malformed as e:
            self._skip(key, e.reason)
            if what[0] == "member":  # a member that became malformed is no longer a member
                added, removed = mirror.set_member(what[1], key, None)
                if touched is not None and removed is not None:
                    touched["members"].setdefault(what[1], [set(), set()])[1].add(removed)

    def _handle(self, batch):
        touched = {"ports": set(), "rules": set(), "members": {}}
        received, events, ended = [], 0, []
        for kind, s, payload, gen in batch:
            if self.streams.get(s.name) is not s or gen != s.gen:
                continue  # from a watch dropped or restarted since (which replays them)
            if kind == "end":
                ended.append((s, payload))
                continue
            received.append(time.monotonic())
            for key, value, rev in payload:
                self._fold(self.mirror, key, value, touched)
                s.resume = max(s.resume, rev)
                self.revision = max(self.revision, rev)
                self.metrics.events.labels("delete" if value is None else "put").inc()
            events += len(payload)
        if events:
            try:
                self._apply_changes(touched, events, received)
            except (StoreUnavailable, Compacted) as e:
                self._set_connected(False, str(e))
                self._need_full = True
            except KernelError as e:
                self._error(f"commit refused by the kernel, full resync: {e}")
                self._need_full = True
        if ended:
            self._reconnect(ended)

    def _apply_changes(self, touched, events, received):
        m = self.mirror
        old = set(self.watched_groups())
        new = m.closure()
        added = set()
        rev = None
        while new - old - added:  # load the groups that entered the closure
            for sg in sorted(new - old - added):
                r, kvs = self.store.range(self.layout.group(sg), revision=rev)
                rev = rev or r
                m.drop_group(sg)
                for k, v in kvs:
                    self._fold(m, k, v)
                added.add(sg)
            new = m.closure()
        dropped = old - new
        t0 = time.perf_counter()
        fw = self.fw
        with fw.defer_apply():
            for sg in sorted(added):
                self._call(self.layout.rules(sg), fw.update_security_group_rules, sg,
                           m.rules.get(sg, []))
                fw.update_security_group_members(sg, m.member_lists(sg))
            for sg in sorted(touched["rules"] - added):
                if sg in new:
                    self._call(self.layout.rules(sg), fw.update_security_group_rules, sg,
                               m.rules.get(sg, []))
            for sg, (add, rem) in touched["members"].items():
                if sg in added or sg not in new:
                    continue
                if rem:
                    fw.remove_security_group_members(sg, sorted(rem))
                if add:
                    fw.add_security_group_members(sg, sorted(add))
            for pid in sorted(touched["ports"]):
                if pid not in m.ports:
                    fw.remove_port_filter(pid)
            for pid in sorted(touched["ports"]):
                if pid in m.ports:
                    self._call(self.layout.port(self.host, pid), fw.update_port_filter,
                               dict(m.ports[pid], id=pid))
            for sg in sorted(dropped):
                fw.update_security_group_members(sg, {"IPv4": [], "IPv6": []})
                try:
                    fw.remove_security_group(sg)
                except ValidationError:
                    pass  # a port whose update was skipped still names it: keep the group
        for sg in sorted(dropped):
            self._drop_stream(sg)
            m.drop_group(sg)
        for sg in sorted(added):
            self._start_watch(sg, self.layout.group(sg), rev)
        self.metrics.commit.observe(time.perf_counter() - t0)
        self._committed(fw.last_result, events, received)
        self._update_gauges()

    def _call(self, key, fn, *args):
        try:
            fn(*args)
            self._unskip(key)
        except ValidationError as e:
            self._skip(key, str(e))

    def _maybe_health_check(self):
        """Every ``health_every`` seconds ask etcd for its revision (with a short timeout): a
        watch stream on a silent connection (a frozen or partitioned etcd) never ends by
        itself, so an unanswered check counts as the store going away."""
        now = time.monotonic()
        if not self.health_every or now < self._next_health:
            return
        self._next_health = now + self.health_every
        try:
            self.store.revision(timeout=self.health_timeout)
        except StoreUnavailable as e:
            self._reconnect([], why=f"health check: {e}")
        except Compacted:
            self._need_full = True

    def _reconnect(self, ended, why=None):
        """Streams ended (or the store stopped answering): resume every stream from its
        revision once etcd answers (backoff meanwhile); a compacted revision means a full
        resync."""
        for s, err in ended:
            if isinstance(err, Compacted):
                log.warning("watch %s: revision %d compacted; full resync", s.prefix, s.resume)
                self._need_full = True
                return
        why = why or "; ".join(str(e) for _, e in ended)
        self._set_connected(False, why)
        while not self._stop.is_set():
            try:
                self.store.revision(timeout=self.health_timeout)
            except StoreUnavailable:
                self._sleep_backoff()
                continue
            break
        if self._stop.is_set():
            return
        self.reconnects += 1
        self.metrics.reconnects.inc()
        for s in list(self.streams.values()):
            if s.watch is not None:
                s.watch.cancel()
            self._start_watch(s.name, s.prefix, s.resume)
        self._backoff = 0.2
        self._set_connected(True)

    def _update_gauges(self):
        self.metrics.revision.set(self.revision)
        self.metrics.ports.set(len(self.mirror.ports))
        self.metrics.groups.set(len(self.streams) - 1 if self.streams else 0)
        self.metrics.members.set(sum(len(c) for c in self.mirror.counts.values()))


class FileAgent(AgentBase):
    """Follows a wire-format file: applied whole at start and whenever it changes (mtime, size
    or inode). A file that does not parse is reported and the last good rules stay."""

    def __init__(self, fw, path, host=None, *, poll=0.5, **kw):
        super().__init__(fw, host, **kw)
        self.path = path
        self.poll = poll
        self._sig = None
        self._ports = 0

    def source_name(self):
        return f"file:{self.path}"

    def port_count(self):
        return self._ports

    def run(self):
        from fwsg.commands.common import read_json

        log.info("agent following %s", self.path)
        while not self._stop.is_set():
            try:
                st = os.stat(self.path)
                sig = (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError as e:
                sig = None
                self._set_connected(False, f"{self.path}: {e.strerror}")
            if sig is not None and (sig != self._sig or self._resync.is_set()):
                self._resync.clear()
                self._sig = sig
                try:
                    model = Model.from_wire(read_json(self.path))
                    result = self.fw.apply(model)
                    self._ports = len(model.ports)
                    self.revision += 1
                    self._committed(result)
                    self._set_connected(True)
                    log.info("applied %s (%d ports)", self.path, len(model.ports))
                except FwsgError as e:
                    self._error(f"{self.path}: {e} (keeping the last good rules)")
            self._maybe_reconcile()
            self.write_status()
            self._stop.wait(self.poll)
        self.write_status(force=True)
