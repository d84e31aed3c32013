"""Readers of the kernel's counters, one per source; each takes the filesystem root to read under.

Every reader returns plain numbers, or raises :class:`Unavailable` with a one-line reason
(``/proc/pressure/cpu: no such file (kernel without PSI?)``); none of them writes anything.
Tests point ``root`` at a fake tree.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess

DEFAULT_CGROUP_PATTERNS = (
    "sys/fs/cgroup/qemu.slice/*.scope",
    "sys/fs/cgroup/machine.slice/*",
    "sys/fs/cgroup/lxc/*",
)
"""Globs (relative to root) of guest cgroups (cgroup v2): Proxmox qemu, libvirt/systemd, lxc."""


class Unavailable(Exception):
    """A metric cannot be read here; ``str()`` says why in one line."""


def _read(root, rel):
    path = os.path.join(root, rel)
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        raise Unavailable(f"/{rel}: no such file") from None
    except PermissionError:
        raise Unavailable(f"/{rel}: permission denied") from None
    except OSError as e:
        raise Unavailable(f"/{rel}: {e.strerror}") from None


def cpu_times(root="/"):
    """(busy jiffies, total jiffies, number of cpus) from ``/proc/stat``.

    busy = total - idle - iowait; total = user + nice + system + idle + iowait + irq + softirq +
    steal (guest time is already inside user/nice).
    """
    text = _read(root, "proc/stat")
    agg = None
    ncpu = 0
    for line in text.splitlines():
        if line.startswith("cpu "):
            agg = line.split()[1:]
        elif line.startswith("cpu") and line[3:4].isdigit():
            ncpu += 1
    if agg is None or len(agg) < 4:
        raise Unavailable("/proc/stat: no aggregate cpu line")
    f = [int(x) for x in agg[:8]] + [0] * (8 - min(len(agg), 8))
    total = sum(f[:8])
    idle = f[3] + f[4]
    return total - idle, total, max(ncpu, 1)


def meminfo(root="/"):
    """{"total", "available", "used"} in bytes from ``/proc/meminfo`` (used = total - available)."""
    vals = {}
    for line in _read(root, "proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            vals[key] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    if "MemTotal" not in vals:
        raise Unavailable("/proc/meminfo: no MemTotal")
    total = vals["MemTotal"]
    avail = vals.get("MemAvailable", vals.get("MemFree", 0) + vals.get("Cached", 0))
    return {"total": total, "available": avail, "used": total - avail}


def pressure(root="/"):
    """{"cpu.some": avg10, "cpu.full": ..., "memory.some": ..., ...} from ``/proc/pressure/*``.

    Resources whose file is absent are left out; raises Unavailable only when none is present.
    """
    out = {}
    reasons = []
    for res in ("cpu", "memory", "io"):
        try:
            text = _read(root, f"proc/pressure/{res}")
        except Unavailable as e:
            reasons.append(str(e))
            continue
        for line in text.splitlines():
            kind, *fields = line.split()
            for fld in fields:
                k, _, v = fld.partition("=")
                if k == "avg10":
                    out[f"{res}.{kind}"] = float(v)
    if not out:
        raise Unavailable(f"{reasons[0]} (kernel without PSI, or psi=0)" if reasons else "no PSI data")
    return out


def conntrack(root="/"):
    """(count, max) from ``/proc/sys/net/netfilter/nf_conntrack_{count,max}``."""
    try:
        count = int(_read(root, "proc/sys/net/netfilter/nf_conntrack_count").strip())
        cmax = int(_read(root, "proc/sys/net/netfilter/nf_conntrack_max").strip())
    except Unavailable as e:
        raise Unavailable(f"{e} (nf_conntrack not loaded?)") from None
    except ValueError:
        raise Unavailable("/proc/sys/net/netfilter/nf_conntrack_*: not a number") from None
    return count, cmax


def guest_cgroups(root="/", patterns=DEFAULT_CGROUP_PATTERNS):
    """{guest name: (cgroup dir, cpu usage in microseconds or None, memory.current or None)}.

    A guest is a directory matched by one of ``patterns`` (globs relative to ``root``) holding a
    ``cpu.stat`` or ``memory.current`` (cgroup v2). Its name is the directory name without
    ``.scope``; a later pattern never replaces a name found by an earlier one.
    """
    out = {}
    for pat in patterns:
        for path in sorted(glob.glob(os.path.join(root, pat.lstrip("/")))):
            if not os.path.isdir(path):
                continue
            name = os.path.basename(path)
            name = name[:-6] if name.endswith(".scope") else name
            if name in out:
                continue
            usage = mem = None
            try:
                for line in open(os.path.join(path, "cpu.stat"), encoding="ascii"):
                    k, _, v = line.partition(" ")
                    if k == "usage_usec":
                        usage = int(v)
            except (OSError, ValueError):
                pass
            try:
                mem = int(open(os.path.join(path, "memory.current"), encoding="ascii").read().strip())
            except (OSError, ValueError):
                pass
            if usage is not None or mem is not None:
                out[name] = (path, usage, mem)
    return out


def bridges():
    """Names of the bridges present (netlink, via pyroute2), sorted."""
    try:
        from pyroute2 import IPRoute
    except ImportError as e:  # pragma: no cover - pyroute2 is a dependency
        raise Unavailable(f"pyroute2 not importable: {e}") from None
    try:
        with IPRoute() as ipr:
            links = ipr.get_links()
    except OSError as e:
        raise Unavailable(f"netlink: {e.strerror or e}") from None
    out = []
    for link in links:
        info = link.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        if kind == "bridge":
            out.append(link.get_attr("IFLA_IFNAME"))
    return sorted(out)


FWSG_TABLES = (("inet", "fwsg"), ("bridge", "fwsg"))


def nft_list_fwsg(family, name="fwsg", timeout=10.0):
    """JSON text of ``nft -j list table FAMILY fwsg``, or None when that table does not exist.

    Touches only fwsg's own table (never lists tables). Raises Unavailable when nft is missing,
    not permitted or fails otherwise.
    """
    nft = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if not nft:
        raise Unavailable("nft not installed")
    try:
        res = subprocess.run([nft, "-j", "list", "table", family, name], capture_output=True,
                             text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Unavailable(f"nft: {e}") from None
    if res.returncode == 0:
        return res.stdout
    err = (res.stderr or "").strip().splitlines()
    msg = err[0] if err else f"exit {res.returncode}"
    if "No such file" in msg:
        return None
    if "Operation not permitted" in msg or "Permission denied" in msg:
        raise Unavailable("nft: operation not permitted (needs CAP_NET_ADMIN)")
    raise Unavailable(f"nft: {msg}")


def ruleset_size(list_table=nft_list_fwsg):
    """Size of fwsg's own ruleset: {"tables", "chains", "rules", "sets", "elements", "ports"}.

    ``list_table(family)`` returns nft's JSON for ``table FAMILY fwsg`` or None when absent (all
    zeros when both are). ``elements`` counts set and map elements; ``ports`` is the size of the
    largest map keyed by interface name (the per-port dispatch map). Raises Unavailable when nft
    cannot be asked.
    """
    out = dict.fromkeys(("tables", "chains", "rules", "sets", "elements", "ports"), 0)
    for family, _ in FWSG_TABLES:
        text = list_table(family)
        if text is None:
            continue
        try:
            items = json.loads(text).get("nftables", [])
        except (ValueError, AttributeError):
            raise Unavailable(f"nft: unreadable JSON for table {family} fwsg") from None
        for item in items:
            if not isinstance(item, dict):
                continue
            for kind, body in item.items():
                if kind == "table":
                    out["tables"] += 1
                elif kind == "chain":
                    out["chains"] += 1
                elif kind == "rule":
                    out["rules"] += 1
                elif kind in ("set", "map"):
                    out["sets"] += 1
                    n = len(body.get("elem", []) or [])
                    out["elements"] += n
                    if kind == "map" and body.get("type") == "ifname":
                        out["ports"] = max(out["ports"], n)
    return out
