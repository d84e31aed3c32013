"""Entering a named network namespace for the calling thread (``/run/netns/NAME``).

Sockets (libnftables contexts, netlink) opened inside stay bound to that namespace after the
thread has returned to its own.
"""

import contextlib
import os
import re

from fwsg.errors import UserError

_NS_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def check(netns):
    """Return ``netns`` if it names an existing namespace (None = the current one)."""
    if netns is None:
        return None
    if not isinstance(netns, str) or not _NS_NAME.match(netns) or netns in (".", ".."):
        raise UserError(f"--netns: {netns!r} is not a valid namespace name")
    if not os.path.exists(f"/run/netns/{netns}"):
        raise UserError(f"--netns: namespace {netns!r} does not exist (see 'ip netns list')")
    return netns


@contextlib.contextmanager
def entered(netns):
    """Run the body inside ``netns`` (no-op for None); always returns to the original one."""
    if netns is None:
        yield
        return
    from pyroute2 import netns as pr_netns

    check(netns)
    pr_netns.pushns(netns)
    try:
        yield
    finally:
        pr_netns.popns()
