"""The per-namespace lock every fwsg writer takes around a transaction (read back, diff,
commit, names record, conntrack sweep): two processes (or two Firewalls) never interleave their
changes in one namespace, whatever names they use for it.

An ``flock`` on ``/run/fwsg/locks/<namespace identity>.lock`` (the identity is the namespace's
nsfs inode, see :func:`fwsg.netns.identity`). The file holds the holder's pid (for the message
a waiting process prints) and a stamp of the last transaction committed under the lock: a
Firewall that finds another writer's stamp knows its mirror of the kernel is stale. Next to
it, ``<identity>.state`` proves what the kernel holds: the nf_tables generation id right after
the last transaction that left fwsg's tables equal to a desired state, and that state's
fingerprint (a fresh process with the same desired state and an unchanged generation need not
read the ruleset back).
"""

import fcntl
import json
import mmap
import os
import tempfile
import time

from fwsg import netns as nsmod
from fwsg.errors import Busy, EnvironmentProblem
from fwsg.statefile import STATE_DIR

LOCK_DIR = os.path.join(STATE_DIR, "locks")
_POLL = 0.01
_SIZE = 64  # bytes of the lock file: "<holder pid> <stamp>\n", space-padded
_PID = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


def pid():
    """This process's id (cached: no system call; a forked child gets its own)."""
    return _PID[0]


class NamespaceLock:
    """Exclusive lock of one network namespace. ``wait``: None waits for ever, 0 not at all,
    else that many seconds; a busy lock raises :class:`fwsg.errors.Busy` naming the holder."""

    def __init__(self, netns=None, wait=None):
        self.netns = netns
        self.wait = wait
        self.path = os.path.join(LOCK_DIR, f"{nsmod.identity(netns)}.lock")
        self._fd = None
        self._map = None
        self._held = False
        self.stamp = None   # last-commit stamp found when acquired

    def acquire(self):
        """Take the lock; returns the stamp of the last transaction committed under it. The
        lock file stays open between transactions (one descriptor per NamespaceLock: two
        NamespaceLocks exclude each other, in one process or several)."""
        if self._fd is None:
            try:
                os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    if os.fstat(fd).st_size < _SIZE:
                        os.ftruncate(fd, _SIZE)
                    self._map = mmap.mmap(fd, _SIZE)  # holder and stamp without a system call
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
            except OSError as e:
                raise EnvironmentProblem(f"cannot open the namespace lock {self.path}: "
                                         f"{e.strerror}") from None
        fd = self._fd
        deadline = None if self.wait is None else time.monotonic() + max(0.0, self.wait)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    holder = _read(self._map)[0]
                    where = f"namespace {self.netns!r}" if self.netns else "this namespace"
                    waited = f" after waiting {self.wait:g} s" if self.wait else ""
                    raise Busy(f"{where} is locked by another fwsg (pid {holder or '?'}){waited}; "
                               "retry, or pass --wait [SECONDS]") from None
                time.sleep(_POLL)
        self._held = True
        holder, self.stamp = _read(self._map)
        if holder != str(_PID[0]):  # name the holder for a waiting process (once per holder)
            _write(self._map, _PID[0], self.stamp)
        return self.stamp

    def committed(self, stamp):
        """Record ``stamp`` as the last transaction committed under this lock (held)."""
        self.stamp = stamp
        _write(self._map, _PID[0], stamp)

    def read_state(self):
        """The kernel-state proof the last full transaction left (``{"generation": int,
        "fingerprint": str}``), or {} (held)."""
        try:
            with open(self.path[:-5] + ".state") as f:
                doc = json.load(f)
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def write_state(self, doc):
        """Replace the kernel-state proof atomically (held); None removes it."""
        target = self.path[:-5] + ".state"
        if doc is None:
            try:
                os.unlink(target)
            except OSError:
                pass
            return
        try:
            fd, tmp = tempfile.mkstemp(dir=LOCK_DIR, prefix=".state-", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f)
            os.replace(tmp, target)
        except OSError:
            pass

    def release(self):
        """Let the lock go (the file stays open for the next transaction)."""
        if self._fd is not None and self._held:
            self._held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self):
        """Release and close the lock file."""
        self.release()
        fd, self._fd = self._fd, None
        if fd is not None:
            self._map.close()
            self._map = None
            os.close(fd)

    def __del__(self):
        # a NamespaceLock dropped with its Firewall gives its descriptor and mapping back
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing left to free
            pass

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def _read(m):
    text = m[:_SIZE].decode("ascii", "replace").split()
    pid = text[0] if text and text[0].isdigit() else None
    return pid, (text[1] if len(text) > 1 else None)


def _write(m, pid, stamp):
    m[:_SIZE] = f"{pid} {stamp or '-'}\n".encode()[:_SIZE].ljust(_SIZE)
