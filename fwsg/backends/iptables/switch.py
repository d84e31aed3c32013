"""Switching a host between fwsg's backends: whichever backend starts on a host removes what the
other left behind (fwsg's own nft tables, or fwsg's own iptables chains and ipsets), so the two
never filter the same traffic twice. Only fwsg's objects are looked at and removed."""

import os
import subprocess

from fwsg.backends.iptables import names
from fwsg.backends.iptables.ipsetnl import set_names
from fwsg.errors import KernelError
from fwsg.netns import entered

NFT_TABLES = ("bridge", "inet")


def remove_nft_state(netns):
    """Delete ``table bridge fwsg`` and ``table inet fwsg`` if present; what was removed."""
    with entered(netns):
        out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        present = [f for f in NFT_TABLES if f"table {f} fwsg" in out.splitlines()]
        if present:
            subprocess.run(["nft", "-f", "-"], input="".join(
                f"delete table {f} fwsg\n" for f in present), text=True, check=True,
                capture_output=True)
    return [f"removed nft table {f} fwsg left by the nft backend" for f in present]


def _has_iptables_state(netns, nft_tables):
    """Cheap signs of fwsg's iptables state: one of its ipsets, or any iptables table at all
    (legacy: /proc/net/ip*_tables_names; nft variant: tables ip/ip6 filter, mangle, raw)."""
    if any(names.is_ours(n) for n in _ipset_names(netns)):
        return True
    with entered(netns):
        for p in ("/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"):
            try:
                with open(p) as f:
                    if f.read().strip():
                        return True
            except OSError:
                pass
    return any(f"table {f} {t}" in nft_tables for f in ("ip", "ip6")
               for t in ("filter", "mangle", "raw"))


def _ipset_names(netns):
    """The namespace's ipset names: one netlink dump (no process on an nft backend's first
    apply), else what ``ipset list -n`` prints."""
    try:
        return set_names(netns)
    except KernelError:
        with entered(netns):
            return subprocess.run(["ipset", "list", "-n"], capture_output=True,
                                  text=True).stdout.split()


def remove_iptables_state(netns, nft_tables=""):
    """Remove fwsg's iptables chains, hooks and ipsets (both variants) if any; what was
    removed. ``nft_tables``: the output of ``nft list tables`` the caller already has."""
    if not _has_iptables_state(netns, nft_tables):
        return []
    from fwsg.backends.iptables.kernel import Kernel
    from fwsg.backends.iptables.tools import Tools

    removed, sets = [], {}
    for variant in ("legacy", "nft"):  # the chains of both variants before any set
        if not os.path.exists(f"/usr/sbin/iptables-{variant}-save"):
            continue
        k = Kernel(netns, Tools(variant))
        try:
            st = k.read()
            sets.update(st.sets)
            st.sets = {}
            removed += [f"removed fwsg's {what} left by the iptables backend"
                        for what in k.flush(st)]
        finally:
            k.close()
    if sets:
        from fwsg.backends.iptables.state import State

        k.flush(State(sets=sets))
        removed.append(f"removed fwsg's {len(sets)} ipsets left by the iptables backend")
    return removed
