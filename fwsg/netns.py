"""Entering a named network namespace for the calling thread (``/run/netns/NAME``).

Sockets (libnftables contexts, netlink) opened inside stay bound to that namespace after the
thread has returned to its own.
"""

import contextlib
import ctypes
import errno
import os
import re

from fwsg.errors import UserError, short_repr

_NS_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def check(netns):
    """Return ``netns`` if it names an existing namespace (None = the current one)."""
    if netns is None:
        return None
    if not isinstance(netns, str) or not _NS_NAME.match(netns) or netns in (".", ".."):
        raise UserError(f"--netns: {short_repr(netns, 60)} is not a valid namespace name")
    path = f"/run/netns/{netns}"
    if not os.path.exists(path):
        raise UserError(f"--netns: namespace {short_repr(netns, 60)} does not exist (see 'ip netns list')")
    try:
        is_ns = os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError as e:
        raise UserError(f"--netns: cannot inspect {path}: {e.strerror}") from None
    if not is_ns:
        raise UserError(f"--netns: {path} is not a network namespace (a plain file?)")
    return netns


def identity(netns):
    """A stable key of the network namespace ``netns`` names (None: the caller's): its nsfs
    inode, the same for every name and process that reaches it."""
    path = "/proc/self/ns/net" if netns is None else f"/run/netns/{check(netns)}"
    try:
        st = os.stat(path)
    except OSError as e:
        raise UserError(f"--netns: cannot inspect {path}: {e.strerror}") from None
    return f"{st.st_dev:x}-{st.st_ino:x}"


_CLONE_NEWNET = 0x40000000
_libc = None


def _setns(fd):
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def entered(netns):
    """Run the body inside ``netns`` (no-op for None); always returns to the original one.
    Per thread (setns moves only the calling thread; the saved namespace is this thread's), so
    several threads may enter namespaces at once."""
    if netns is None:
        yield
        return
    check(netns)
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(target)
            finally:
                os.close(target)
        except OSError as e:
            if e.errno == errno.EPERM:
                raise UserError(f"--netns: entering {short_repr(netns, 60)} needs root "
                                "(CAP_SYS_ADMIN)") from None
            raise UserError(f"--netns: cannot enter {short_repr(netns, 60)}: {e.strerror}") from None
        try:
            yield
        finally:
            _setns(saved)
    finally:
        os.close(saved)
