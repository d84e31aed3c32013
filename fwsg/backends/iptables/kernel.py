"""Kernel I/O of the iptables backend: ipset elements through one netlink socket (``ipsetnl``;
``ipset restore`` for bulk loads), chains through ``iptables-restore --noflush`` per table and
family (iptables-legacy: in-process through libiptc when every rule is one ``iptc`` packs),
ebtables beside libiptc through nf_tables netlink when the change is one ``ebnl`` packs;
read-back through ``*-save`` of the tables fwsg uses, keeping only fwsg's own chains and the
jumps into them (every other line is dropped unparsed).
"""

import contextlib
import fcntl
import os
import re
import subprocess
import threading

from fwsg.backends.iptables import ebnl, iptc, names, nfdel
from fwsg.backends.iptables.desired import BAGS, BUCKETED
from fwsg.backends.iptables.ipsetnl import IpsetSocket
from fwsg.backends.iptables.plan import TABLE_ORDER
from fwsg.backends.iptables.state import Chain, SetSpec, State
from fwsg.errors import KernelError
from fwsg.netns import entered

IP_TABLES = ("raw", "mangle", "filter")
BULK = 1000          # element changes above this go through one ``ipset restore``
_BAG_NAMES = {n for _, n in BAGS} | {names.ARP}
_BUCKET = re.compile("^(" + "|".join(BUCKETED) + r")-[0-9a-f]{6}$")
_DIGEST = re.compile(r'--comment "?' + names.COMMENT + r'([0-9a-f]+):(\d+)"?')
_EB_NAME = re.compile(r"^fwsg-a[0-9a-f]{6}-([0-9a-f]{8})-(\d+)$")
_ZONE = re.compile(r"^-m physdev --physdev-in (\S+) -j CT --zone (\d+)$")


XT_LOCK = "/run/xtables.lock"   # iptables' own lock (unless $XTABLES_LOCKFILE names another)


@contextlib.contextmanager
def _xtables_lock(take):
    """With ``take``: hold the lock every iptables process takes before it changes a table
    (waiting for it, as ``-w`` does) and yield {4: path, 6: path}, a private lock file for
    each of fwsg's own two restores; else yield None (each restore takes the lock itself)."""
    if not take:
        yield None
        return
    path = os.environ.get("XTABLES_LOCKFILE") or XT_LOCK
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        base = os.path.join(os.path.dirname(path), "fwsg-xtables")
        yield {4: f"{base}-ip.lock", 6: f"{base}-ip6.lock"}
    finally:
        os.close(fd)   # closing releases the lock


def _side_by_side(fn, n):
    """fn(0) ... fn(n - 1) at once: fn(0) in the calling thread, each other in a thread of its
    own; returns when all have returned (fn must not raise)."""
    threads = [threading.Thread(target=fn, args=(i,)) for i in range(1, n)]
    for t in threads:
        t.start()
    fn(0)
    for t in threads:
        t.join()


def _commit_all(tables):
    """Commit each prepared iptc.Table in turn (KernelError at the first refused: the rest
    stay uncommitted)."""
    for t in tables:
        t.commit()


def _entry(m, fam):
    return m if "/" in m else f"{m}/{32 if fam == 4 else 128}"


def _eb_digest(name, body):
    """The digest an ebtables chain read back stands for: the one its name carries if its
    rules, as ``ebtables-save`` prints them, are exactly those that digest was taken of (fwsg
    writes them in that printed form), else ``"?"`` (rewritten). ebtables has no comment
    match, so the name carries the digest, and the content is checked against it."""
    m = _EB_NAME.match(name)
    if not m or int(m.group(2)) != len(body) or not body or not body[-1].startswith("-j "):
        return "?"
    read = Chain(tuple(body[:-1]), body[-1][3:])
    return m.group(1) if read.digest[:8] == m.group(1) else "?"


class Kernel:
    """One namespace's iptables, ebtables and ipsets, through the given Tools."""

    def __init__(self, netns, tools):
        self.netns = netns
        self.tools = tools
        self._ipset = None
        self._eb = None
        self.libiptc = True   # False: every change through the restore tools (tests, bench)
        self.iptc_threads = True   # libiptc: each family in a thread of its own
        self.ebnl = True   # beside libiptc, ebtables through netlink when ebnl packs the change
        self.nfdel = True  # deletions in nf_tables' xtables tables through netlink (nfdel)
        self._nf = None
        self.last_path = None   # how the last commit changed the tables ("libiptc", "restore")
        self.last_eb = None     # and ebtables' ("netlink", "restore"; None: not changed)

    def close(self):
        if self._ipset is not None:
            self._ipset.close()
            self._ipset = None
        if self._eb is not None:
            self._eb.close()
            self._eb = None
        if self._nf is not None:
            self._nf.close()
            self._nf = None

    @property
    def ipset(self):
        """The namespace's ipset netlink socket (opened on first use)."""
        if self._ipset is None:
            self._ipset = IpsetSocket(self.netns)
        return self._ipset

    def run(self, argv, text=None):
        """Run a tool in the namespace; KernelError (one line) when it fails."""
        with entered(self.netns):
            try:
                r = subprocess.run(argv, input=text, capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.SubprocessError) as e:
                raise KernelError(f"{argv[0]}: {e}") from None
        if r.returncode != 0:
            msg = " ".join((r.stderr or r.stdout).split())[:400]
            raise KernelError(f"{argv[0]} refused: {msg}")
        return r.stdout

    # -- read back ---------------------------------------------------------------------------
    def read(self):
        """fwsg's chains, dispatch rules, hooks and ipsets as a State."""
        st = State()
        for fam in (4, 6):
            for table in IP_TABLES:
                self.parse(st, fam, table, self.run([self.tools.save(fam), "-t", table]))
        self.parse(st, "eb", "nat", self.run([self.tools.save("eb"), "-t", "nat"]))
        for name in self.run(["ipset", "list", "-n"]).split():
            if names.is_ours(name):
                self._read_set(st, name)
        return st

    def parse(self, st, fam, table, text):
        """Keep from ``text`` (a ``*-save -t table`` output) only fwsg's chains and hooks."""
        rules, first = {}, set()
        for line in text.splitlines():
            if line.startswith(":fwsg-"):
                rules.setdefault(line[1:].split()[0], [])
            elif line.startswith("-A "):
                _, chain, rest = line.split(" ", 2)
                if names.is_ours(chain):
                    rules.setdefault(chain, []).append(rest)
                elif (fam, table, chain) in names.HOOKS:
                    # the jump counts only as the built-in chain's first rule: a rule inserted
                    # before it could accept what fwsg would drop
                    if rest == f"-j {names.HOOKS[(fam, table, chain)]}" and chain not in first:
                        st.hooks.add((fam, table, chain))
                    elif rest == f"-j {names.HOOKS[(fam, table, chain)]}":
                        st.misplaced.add((fam, table, chain))
                    first.add(chain)
        for chain, body in rules.items():
            key = (fam, table, chain)
            if chain in _BAG_NAMES or _BUCKET.match(chain):
                st.bags[key] = set(body)
                if chain == names.ZONE:
                    for r in body:
                        m = _ZONE.match(r)
                        if m:
                            st.zones[m.group(1)] = int(m.group(2))
            elif fam == "eb":
                st.chains[key] = _eb_digest(chain, body)
            else:
                m = _DIGEST.search(body[-1]) if body else None
                st.chains[key] = m.group(1) if m and int(m.group(2)) == len(body) else "?"
                st.bodies[key] = body

    def _read_set(self, st, name):
        spec, members = None, set()
        for line in self.run(["ipset", "save", name]).splitlines():
            parts = line.split()
            if parts[:1] == ["create"]:
                fam = 6 if "inet6" in parts else 4
                maxelem = int(parts[parts.index("maxelem") + 1]) if "maxelem" in parts else 65536
                spec = SetSpec(fam, maxelem) if parts[2] == "hash:net" else SetSpec(0, 0)
            elif parts[:1] == ["add"]:
                members.add(parts[2])
        if spec is not None:
            st.sets[name] = spec
            st.elements[name] = members

    # -- commit ------------------------------------------------------------------------------
    def commit(self, plan):
        """Commit a Plan: ipsets first (so rules find their sets), then the tables' changes
        (:meth:`tables`: libiptc or one restore per family), then stale sets. Each step is
        atomic; a failure raises KernelError."""
        for name, spec, members in plan.creates:
            self._create(name, spec, members)
        for name, spec, members in plan.rebuilds:
            self._rebuild(name, spec, members)
        for name, ms in plan.dels.items():
            self._elements(name, ms, False)
        for name, ms in plan.adds.items():
            self._elements(name, ms, True)
        self.last_eb = None
        self.last_path = self.tables(plan) if plan.tables else None
        for name in plan.destroys:
            self._destroy(name)

    def tables(self, plan):
        """The plan's table changes: on iptables-legacy, when libiptc loads and every rule is
        one it takes (iptc.steps), in-process (:meth:`_libiptc`); else through the restore
        tools (:meth:`restore_all`). Which one it was: "libiptc" or "restore" (and in
        ``last_eb`` how ebtables' nat table changed: beside libiptc, through netlink when
        ``ebnl`` packs the change and ebtables is ebtables-nft)."""
        eb = [text for fam, _, text in plan.texts() if fam == "eb"]
        if self.tools.variant == "nft" or (set(plan.tables) == {("eb", "nat")} and
                                           self.tools.eb("restore") == "ebtables-nft-restore"):
            msgs = self._nf_deletions(plan.tables)
            if msgs is not None:    # every table of the plan in one nf_tables transaction
                self.nf_socket.commit(msgs)
                self.last_eb = "netlink" if eb else None
                return "netlink"
        libs = iptc.libs() if self.libiptc and self.tools.variant == "legacy" else None
        todo = {k: iptc.steps(k[0], tc) for k, tc in plan.tables.items()
                if k[0] != "eb"} if libs is not None else {}
        if not todo or None in todo.values():
            self.restore_all([(fam, text) for fam, _, text in plan.texts()])
            self.last_eb = "restore" if eb else None
            return "restore"
        msgs = None
        if eb and self.ebnl and self.tools.eb("restore") == "ebtables-nft-restore" \
                and set(k for k in plan.tables if k[0] == "eb") == {("eb", "nat")}:
            msgs = ebnl.steps(plan.tables[("eb", "nat")])
            try:
                self.eb_socket   # opened here, in the namespace, before any thread starts
            except OSError:
                msgs = None      # no netlink socket: the restore process, as before
        eb_del = None
        if eb and msgs is None and self.tools.eb("restore") == "ebtables-nft-restore":
            eb_del = self._nf_deletions({k: tc for k, tc in plan.tables.items()
                                         if k[0] == "eb"})
        self.last_eb = None if not eb else "netlink" if msgs or eb_del else "restore"
        # a change that deletes may open something half-way: all its steps first (_libiptc)
        opens = eb_del is not None or any(tc.bag_del or tc.stale or tc.moved
                                          or len(tc.chains) > tc.new
                                          for k, tc in plan.tables.items() if k[0] != "eb")
        self._libiptc(libs, todo, eb if msgs is None and eb_del is None else (), msgs, eb_del,
                      steps_first=opens)
        return "libiptc"

    def _nf_deletions(self, changes):
        """nfdel's messages for ``changes`` ({(family, table): TableChange} of tables kept in
        nf_tables), or None: deletions through netlink off, no socket, a change holding
        more than deletions, a rule not found (the restore tools take it then)."""
        if not self.nfdel or not changes:
            return None
        try:
            sock = self.nf_socket
            return nfdel.steps(changes, sock.dump)
        except (OSError, KernelError):
            return None

    @property
    def nf_socket(self):
        """The namespace's nfnetlink socket for nfdel (opened on first use, kept open: a
        socket that deleted something costs ~10-15 ms to close)."""
        if self._nf is None:
            self._nf = nfdel.NfSocket(self.netns)
        return self._nf

    @property
    def eb_socket(self):
        """The namespace's nfnetlink socket for ebtables' nat table (opened on first use)."""
        if self._eb is None:
            self._eb = ebnl.EbSocket(self.netns)
        return self._eb

    def _libiptc(self, libs, todo, eb=(), eb_msgs=None, eb_del=None, steps_first=True):
        """Each IP family's steps (``todo``: (family, table) -> iptc.steps) made through
        libiptc, then committed, in table order, with ebtables' change beside them:
        ``eb_msgs`` (ebnl.steps, packed already) committed through netlink at the start of
        the IPv6 thread (or in a thread of its own with one family), ``eb_del`` (nfdel's
        deletions) committed after every table's steps were made and before any table is
        committed, else the restore of the ``eb`` text (at most one) as a process started
        first. The families run side by side, IPv4 in the calling thread, IPv6 in a thread
        of its own (without ``iptc_threads``: one after the other in the calling thread,
        ebtables' batch too; measured slower in most bench runs). The xtables lock is held
        throughout, so every other iptables process waits.

        With ``steps_first`` (a change that deletes or replaces something, which could leave
        a port more open half-way), in two rounds: every table is read and every step made on
        libiptc's copies first; a step refused (a chain in use, a rule not found) ends the
        call before anything of the IP tables or of ``eb_del`` reached the kernel. Then
        ``eb_del`` (refused: nothing of it is left, no IP table is committed), then each
        table's commit (a commit the kernel refuses leaves that table as it was; tables
        committed before it stay, as with iptables-restore). Without (a change that only
        adds: half-way, it is only more closed than the model it left), each table is
        committed as soon as its steps are made, one family's reads beside the other's
        commits (two families committing at once measured ~4 ms slower a port addition).
        KernelError naming each step refused."""
        fams = []
        for fam in (4, 6):
            tables = [(t, todo[(fam, t)]) for t in TABLE_ORDER if (fam, t) in todo]
            if tables:
                fams.append((fam, tables))
        made = [[] for _ in fams]     # the iptc.Tables each family read and changed
        work = [lambda i=i, f=f, ts=ts: self._iptc_family(libs[f], ts, made[i], steps_first)
                for i, (f, ts) in enumerate(fams)]
        eb_error = []
        if eb_msgs:
            sock = self.eb_socket

            def eb_commit():
                try:
                    sock.commit(eb_msgs)
                except KernelError as e:
                    eb_error.append(str(e))
                except Exception as e:  # noqa: BLE001 - reported as refused below
                    eb_error.append(f"ebtables (nat, netlink): {type(e).__name__}: {e}")
            if len(work) == 2:      # IPv4 in the calling thread also starts and joins IPv6's
                v6 = work[1]
                work[1] = lambda: (eb_commit(), v6())
            else:
                work.append(eb_commit)
        errors = [None] * len(work)

        def run(i):
            try:
                work[i]()
            except KernelError as e:
                errors[i] = str(e)
            except Exception as e:  # noqa: BLE001 - reported as refused below
                errors[i] = f"libiptc: {type(e).__name__}: {e}"

        def in_turn_or_side_by_side(n):
            if self.iptc_threads:
                _side_by_side(run, n)
            else:
                for i in range(n):
                    run(i)
        proc = self._start_restore("eb", eb[0]) if eb else None
        try:
            with _xtables_lock(True):
                try:
                    in_turn_or_side_by_side(len(work))
                    if not any(errors) and not eb_error and eb_del:
                        try:
                            self.nf_socket.commit(eb_del)
                        except KernelError as e:
                            eb_error.append(str(e))
                    if not any(errors) and not eb_error:
                        work[:] = [lambda ts=ts: _commit_all(ts) for ts in made if ts]
                        errors[:] = [None] * len(work)
                        if work:   # none without steps_first: committed as they were made
                            in_turn_or_side_by_side(len(work))
                finally:
                    for ts in made:
                        for t in ts:
                            t.close()
        finally:
            if proc is not None:
                errors.append(self._finish_restore("eb", proc))
        errors = eb_error + errors
        if any(errors):
            raise KernelError("; ".join(e for e in errors if e))

    def _start_restore(self, fam, text):
        """A restore process of ``fam`` started and given ``text`` (its input closed); with
        :meth:`_finish_restore`, a restore that runs while the caller does other work."""
        with entered(self.netns):
            try:
                p = subprocess.Popen(self._restore_argv(fam), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            except OSError as e:
                raise KernelError(f"restore: {e}") from None
        for give in (lambda: p.stdin.write(text), p.stdin.close):
            try:
                give()
            except OSError:
                pass   # it ended early: its exit status and output say why
        p.stdin = None   # given: communicate() only collects its output
        return p

    def _finish_restore(self, fam, p):
        """None once the restore ``p`` exited 0, else its one-line refusal."""
        try:
            out, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        if p.returncode == 0:
            return None
        return f"{self._restore_argv(fam)[0]} refused: {' '.join((err or out).split())[:400]}"

    def _iptc_family(self, lib, tables, made, steps_first=True):
        """Read each table and make its steps on libiptc's copy: appended to ``made``, not
        committed (``steps_first``), or committed at once."""
        with entered(self.netns):
            for table, todo in tables:
                if steps_first:
                    made.append(iptc.prepare(lib, table, todo))
                else:
                    iptc.apply(lib, table, todo)

    def restore_all(self, texts):
        """Run one ``restore --noflush`` per (family, text), all at once (the families' tables
        are independent); KernelError naming each that failed. Each process is fed from a
        thread of its own, so none waits for another's input. iptables-legacy's restores
        serialize on the xtables lock, which only keeps iptables processes from changing the
        same tables at once: with both IP families to restore, fwsg takes that lock itself,
        as ``-w`` would (waiting), and gives each of its two restores a lock file of its own,
        so they run side by side while every other iptables process waits for fwsg."""
        if not texts:
            return
        if len(texts) == 1:
            fam, text = texts[0]
            self.run(self._restore_argv(fam), text)
            return
        ip_fams = sum(1 for fam, _ in texts if fam != "eb")
        with _xtables_lock(self.tools.variant == "legacy" and ip_fams > 1) as private:
            procs = []
            with entered(self.netns):
                try:
                    for fam, text in texts:
                        env = None
                        if private and fam != "eb":
                            env = dict(os.environ, XTABLES_LOCKFILE=private[fam])
                        p = subprocess.Popen(self._restore_argv(fam), stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                             text=True, env=env)
                        procs.append((p, text))
                except OSError as e:
                    for p, _ in procs:
                        p.kill()
                        p.wait()
                    raise KernelError(f"restore: {e}") from None
            outs = [None] * len(procs)

            def feed(i):
                p, text = procs[i]
                try:
                    outs[i] = p.communicate(text, timeout=120)
                except Exception as e:  # noqa: BLE001 - ended, reported below as refused
                    p.kill()
                    p.wait()
                    outs[i] = ("", f"{type(e).__name__}: {e}")
            _side_by_side(feed, len(procs))
        errors = []
        for (p, _), (fam, _), (out, err) in zip(procs, texts, outs):
            if p.returncode != 0:
                msg = " ".join((err or out).split())[:400]
                errors.append(f"{self._restore_argv(fam)[0]} refused: {msg}")
        if errors:
            raise KernelError("; ".join(errors))

    def _restore_argv(self, fam):
        return [self.tools.restore(fam), "--noflush"] + ([] if fam == "eb" else ["-w"])

    def _restore(self, lines):
        self.run(["ipset", "restore", "-exist"], "".join(line + "\n" for line in lines))

    @staticmethod
    def _create_line(name, spec, n):
        hashsize = 1024
        while hashsize < n and hashsize < (1 << 20):
            hashsize *= 2
        return (f"create {name} hash:net family {'inet6' if spec.family == 6 else 'inet'} "
                f"hashsize {hashsize} maxelem {spec.maxelem}")

    def _create(self, name, spec, members):
        self._restore([self._create_line(name, spec, len(members))]
                      + [f"add {name} {m}" for m in members])

    def _rebuild(self, name, spec, members):
        """A new set built aside, then swapped in: the live set never lacks a member that
        stays, and never holds one that goes, for longer than the swap."""
        tmp = names.temp_set(name)
        self._destroy(tmp)  # a scratch set left by a process killed half-way
        self._create(tmp, spec, members)
        try:
            self.run(["ipset", "swap", tmp, name])
        except KernelError as e:
            if "does not exist" not in str(e):
                self._destroy(tmp)
                raise
            self.run(["ipset", "rename", tmp, name])  # the live set went away meanwhile
            return
        self.run(["ipset", "destroy", tmp])

    def _elements(self, name, members, add):
        fam = 6 if ":" in next(iter(members)) else 4
        if len(members) > BULK:
            verb = "add" if add else "del"
            self._restore([f"{verb} {name} {m}" for m in members])
            return
        self.ipset.change(name, [_entry(m, fam) for m in members], add)

    def _destroy(self, name):
        try:
            self.run(["ipset", "destroy", name])
        except KernelError as e:
            if "does not exist" not in str(e):
                raise

    # -- flush -------------------------------------------------------------------------------
    def flush(self, st):
        """Remove everything of fwsg's that ``st`` (read back) holds: hooks, chains, sets."""
        removed = []
        for fam in (4, 6, "eb"):
            for table in IP_TABLES + ("nat",):
                chains = [k[2] for k in list(st.chains) + list(st.bags) if k[:2] == (fam, table)]
                hooks = [(b, e) for (f, t, b), e in names.HOOKS.items()
                         if (f, t, b) in st.hooks | st.misplaced and (f, t) == (fam, table)]
                if not chains and not hooks:
                    continue
                lines = [f"*{table}"] + [f"-D {b} -j {e}" for b, e in hooks]
                lines += [f"-F {c}" for c in chains] + [f"-X {c}" for c in chains]
                if fam != "eb":
                    lines.append("COMMIT")
                argv = [self.tools.restore(fam), "--noflush"] + ([] if fam == "eb" else ["-w"])
                self.run(argv, "".join(line + "\n" for line in lines))
                removed.append(f"{ {4: 'iptables', 6: 'ip6tables', 'eb': 'ebtables'}[fam]} {table}")
        for name in st.sets:
            self._destroy(name)
        if st.sets:
            removed.append(f"{len(st.sets)} ipsets")
        return removed
