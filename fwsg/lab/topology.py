"""The test lab: a hypervisor network namespace with a Linux bridge, VMs and an outside peer.

Topology (bridged mode, as with Proxmox or Neutron linuxbridge)::

    fwsg-<lab>-host:  br0 (host addresses)  <- tap-vm1, tap-vm2, ..., up-out  (veth host ends)
    fwsg-<lab>-vm1:   eth0 (MAC, IPv4/IPv6, default routes via the host address)
    fwsg-<lab>-out:   eth0 (the unfiltered "outside" peer, built the same way)

Usage::

    lab = Lab("t1")
    lab.add_vm("vm1", mac="fa:16:3e:00:00:11", ipv4=["192.0.2.11/24"], ipv6=["2001:db8::11/64"])
    with lab:
        assert lab.tcp_connect("vm1", "vm2", port=80)

Every namespace the lab creates is removed on exit, on error, on KeyboardInterrupt, at
interpreter exit, on SIGTERM (when no other handler is installed), and, after a crash (SIGKILL),
by the next ``up()`` of any lab (ownership is an flock held while the lab is up, so this works
across PID namespaces) or of a lab with the same name. ``detach()`` keeps a lab on purpose.
The lab touches nothing outside its namespaces. Probes run in-process (see :mod:`fwsg.lab.traffic`) and return bool within their timeout.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import fcntl
import hashlib
import inspect
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

from fwsg.lab import traffic
from fwsg.lab.errors import LabError, LabUsageError

__all__ = ["Lab", "Node", "netns_available", "lab_namespaces", "cleanup_stale", "sweep_dead_labs"]

_LAB_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,18}[a-z0-9])?$")
_NODE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,13}[a-z0-9])?$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.:@+-]{1,15}$")
_MAC = re.compile(r"^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$")
_STATE_DIR = "/run/fwsg-lab"
_IP_TIMEOUT = 15.0
HOST = "host"

# Sysctls set in every namespace of a lab (all are per-namespace on this kernel).
_NODE_SYSCTLS = {
    "net.ipv6.conf.all.accept_dad": 0,
    "net.ipv6.conf.default.accept_dad": 0,
    "net.ipv6.conf.all.accept_ra": 0,
    "net.ipv6.conf.default.accept_ra": 0,
    "net.ipv6.conf.all.router_solicitations": 0,
    "net.ipv6.conf.default.router_solicitations": 0,
    "net.ipv4.ping_group_range": "0 2147483647",
    # ICMP errors and ICMPv6 echo replies are rate-limited per destination by default
    # (1 s / 100 ms), which turns hundreds of probes into flaky ones.
    "net.ipv4.icmp_ratelimit": 0,
    "net.ipv6.icmp.ratelimit": 0,
    "net.ipv4.icmp_msgs_per_sec": 100000,
    "net.ipv4.icmp_msgs_burst": 100000,
}

_live_labs: "set[Lab]" = set()
_live_lock = threading.Lock()


def _run(argv, *, input=None, timeout=_IP_TIMEOUT, check=True):
    try:
        p = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LabError(f"timed out after {timeout}s: {' '.join(argv)}") from None
    if check and p.returncode != 0:
        detail = (p.stderr or p.stdout).strip()
        if input:
            detail += "\n--- input ---\n" + input
        raise LabError(f"{' '.join(argv)} failed (rc {p.returncode}): {detail}")
    return p


def netns_available() -> tuple[bool, str]:
    """(True, "") if this process can build labs (root, ``ip netns`` works); else (False, why)."""
    if os.geteuid() != 0:
        return False, "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return False, "the ip command (iproute2) is not installed"
    try:
        p = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"ip netns list failed: {e}"
    if p.returncode != 0:
        return False, f"ip netns list failed: {p.stderr.strip()}"
    return True, ""


def _list_netns() -> set:
    try:
        return set(os.listdir(traffic.NETNS_DIR))
    except FileNotFoundError:
        return set()


def lab_namespaces(lab_name: str) -> list:
    """The namespaces that currently exist for lab ``lab_name`` (from its state file and the
    host namespace's name); empty once the lab is down."""
    names = {f"fwsg-{lab_name}-{HOST}"}
    try:
        with open(os.path.join(_STATE_DIR, lab_name + ".json")) as f:
            names |= set(json.load(f).get("namespaces", []))
    except (OSError, ValueError):
        pass
    return sorted(names & _list_netns())


def _delete_netns(names) -> list:
    """Delete namespaces (VMs first, host last); returns those that could not be deleted."""
    existing = _list_netns()
    order = sorted((n for n in names if n in existing), key=lambda n: n.endswith("-" + HOST))
    for n in order:
        subprocess.run(["ip", "netns", "del", n], capture_output=True, timeout=_IP_TIMEOUT)
    return sorted(set(order) & _list_netns())


def cleanup_stale(lab_name: str, extra=()) -> list:
    """Remove the namespaces a previous (crashed or detached) run of lab ``lab_name`` left
    behind; returns the names removed. The caller makes sure no live process owns that lab."""
    names = set(lab_namespaces(lab_name)) | (set(extra) & _list_netns())
    left = _delete_netns(names)
    if left:
        raise LabError(f"cannot remove stale namespaces {left}")
    with_state = os.path.join(_STATE_DIR, lab_name + ".json")
    if os.path.exists(with_state):
        os.unlink(with_state)
    _unlock(lab_name, _try_lock(lab_name))  # drop a leftover lock file nobody holds
    return sorted(names)


def _proc_start(pid: int):
    """Start time of process ``pid`` (clock ticks since boot; informational, and read by
    earlier versions of this module), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _lock_path(lab_name: str) -> str:
    return os.path.join(_STATE_DIR, lab_name + ".lock")


def _try_lock(lab_name: str):
    """The fd of lab ``lab_name``'s lock file, locked by us; None if another process (or
    another Lab object here) holds it. The owner of a live lab holds this lock while the lab
    is up; the kernel releases it when the owner dies, whatever its PID namespace."""
    os.makedirs(_STATE_DIR, exist_ok=True)
    path = _lock_path(lab_name)
    for _ in range(5):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # unlinked by its previous owner meanwhile: lock the new file
    raise LabError(f"cannot lock {path}")


def _unlock(lab_name: str, fd) -> None:
    """Release (and remove) a lock taken by :func:`_try_lock`."""
    if fd is None:
        return
    try:
        os.unlink(_lock_path(lab_name))
    except FileNotFoundError:
        pass
    os.close(fd)


def _read_state(lab_name: str) -> dict:
    try:
        with open(os.path.join(_STATE_DIR, lab_name + ".json")) as f:
            st = json.load(f)
        return st if isinstance(st, dict) else {}
    except (OSError, ValueError):
        return {}


def sweep_dead_labs() -> list:
    """Remove the namespaces of every lab whose owning process is gone (killed before it
    could clean up) and that was not detached; returns the lab names swept. Only namespaces
    recorded in the labs' own state files are touched."""
    swept = []
    try:
        files = os.listdir(_STATE_DIR)
    except FileNotFoundError:
        return swept
    for fn in files:
        name = fn[:-5] if fn.endswith(".json") else None
        if not name or not _LAB_NAME.match(name) or _read_state(name).get("detached"):
            continue
        fd = _try_lock(name)
        if fd is None:
            continue  # its owner is alive
        try:
            if _read_state(name).get("detached") or not os.path.exists(
                    os.path.join(_STATE_DIR, fn)):
                continue
            cleanup_stale(name)
            swept.append(name)
        except LabError:
            pass
        finally:
            _unlock(name, fd)
    return swept


def _atexit_cleanup():
    with _live_lock:
        labs = list(_live_labs)
    for lab in labs:
        try:
            lab.down()
        except Exception as e:  # pragma: no cover - best effort at exit
            print(f"fwsg.lab: cleanup of {lab.name} failed: {e}", file=sys.stderr)


atexit.register(_atexit_cleanup)
_sigterm_installed = False


def _install_sigterm():
    """Turn SIGTERM into SystemExit (so with-blocks and atexit clean up), only if nobody else
    handles SIGTERM and we are in the main thread."""
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def _on_term(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _on_term)
    _sigterm_installed = True


def _split_addrs(addrs, family):
    """Validate "addr/len" strings (a bare address gets /32 or /64); -> (cidrs, addrs)."""
    cidrs, bare = [], []
    for a in addrs or ():
        try:
            iface = ipaddress.ip_interface(a if "/" in a else a + ("/32" if family == 4 else "/64"))
        except ValueError:
            raise LabUsageError(f"not an IPv{family} address: {a!r}") from None
        if iface.version != family:
            raise LabUsageError(f"not an IPv{family} address: {a!r}")
        cidrs.append(str(iface))
        bare.append(str(iface.ip))
    return cidrs, bare


class Node:
    """One endpoint of the lab: ``name``, ``kind`` ("vm", "outside" or "host"), ``ns``
    (namespace), ``iface`` (its interface there: eth0, or br0 for the host), ``tap`` (the
    host-side veth; None for the host), ``mac``, ``ipv4``/``ipv6`` (addresses without prefix),
    ``ipv4_cidrs``/``ipv6_cidrs`` (with prefix), ``link_local`` (EUI-64 of ``mac``)."""

    def __init__(self, name, kind, ns, iface, tap, mac, ipv4, ipv6, bridge=None):
        self.name, self.kind, self.ns, self.iface, self.tap = name, kind, ns, iface, tap
        self.mac = mac
        self.bridge = bridge  # the host bridge its tap is in (guests)
        self.ipv4_cidrs, self.ipv4 = _split_addrs(ipv4, 4)
        self.ipv6_cidrs, self.ipv6 = _split_addrs(ipv6, 6)

    @property
    def link_local(self) -> str:
        return traffic.link_local_of(self.mac)

    def addr(self, family: int = 4) -> str:
        """The node's first address of ``family``; raises :class:`LabError` if it has none."""
        lst = self.ipv4 if family == 4 else self.ipv6
        if family not in (4, 6):
            raise LabUsageError(f"family must be 4 or 6, not {family!r}")
        if not lst:
            raise LabError(f"node {self.name!r} has no IPv{family} address")
        return lst[0]

    def __repr__(self):
        return (f"<Node {self.name} {self.kind} ns={self.ns} tap={self.tap} mac={self.mac} "
                f"v4={self.ipv4} v6={self.ipv6}>")


class Lab:
    """A bridged hypervisor lab in network namespaces named ``fwsg-<name>-<node>``.

    Declare nodes with :meth:`add_vm` / :meth:`add_outside`, then ``with lab:`` (or
    :meth:`up` / :meth:`down`). ``br_netfilter`` sets ``net.bridge.bridge-nf-call-ip{,6}tables``
    in the host namespace to 1 (else 0), so bridged frames reach the ``inet`` hooks.
    """

    def __init__(self, name: str, host_ipv4: str | None = "192.0.2.1/24",
                 host_ipv6: str | None = "2001:db8::1/64", *, br_netfilter: bool = True,
                 bridge: str = "br0", host_mac: str = "00:00:5e:00:53:01"):
        if not isinstance(name, str) or not _LAB_NAME.match(name):
            raise LabUsageError(f"lab name must match [a-z0-9-], 1-20 chars, not {name!r}")
        if not _IFNAME.match(bridge):
            raise LabUsageError(f"not a valid interface name: {bridge!r}")
        self.name = name
        self.br_netfilter = br_netfilter
        self.bridge = bridge
        self._nodes: dict[str, Node] = {}
        host_mac = self._check_mac(host_mac)
        self._nodes[HOST] = Node(HOST, "host", f"fwsg-{name}-{HOST}", bridge, None, host_mac,
                                 [host_ipv4] if host_ipv4 else [],
                                 [host_ipv6] if host_ipv6 else [])
        self._registry = traffic.SocketRegistry()
        self._conns: list = []
        self._sniffers: list = []
        self._created: list[str] = []
        self._lock_fd = None
        self.is_up = False

    # ---------------------------------------------------------------- declaration

    @staticmethod
    def _check_mac(mac):
        mac = str(mac).lower()
        if not _MAC.match(mac):
            raise LabUsageError(f"not a MAC address: {mac!r}")
        if int(mac[:2], 16) & 1:
            raise LabUsageError(f"not a unicast MAC address: {mac!r}")
        return mac

    def _add(self, kind, name, mac, ipv4, ipv6, tap, bridge=None):
        if self.is_up:
            raise LabError("add nodes before up()")
        if not isinstance(name, str) or not _NODE_NAME.match(name) or name == HOST:
            raise LabUsageError(f"node name must match [a-z0-9-], 1-15 chars, not 'host': {name!r}")
        if name in self._nodes:
            raise LabUsageError(f"node {name!r} already exists")
        tap = tap or (f"tap-{name}" if kind == "vm" else f"up-{name}")[:15]
        if not _IFNAME.match(tap) or tap in (".", "..", self.bridge, "lo"):
            raise LabUsageError(f"not a valid interface name for a tap: {tap!r}")
        if any(n.tap == tap for n in self._nodes.values()):
            raise LabUsageError(f"tap {tap!r} already used")
        bridge = bridge or self.bridge
        if not _IFNAME.match(bridge) or bridge in (".", "..", "lo") or any(
                bridge == n.tap for n in self._nodes.values()) or bridge == tap:
            raise LabUsageError(f"not a valid bridge name: {bridge!r}")
        if mac is None:
            h = hashlib.sha256(f"{self.name}/{name}".encode()).digest()
            mac = "fa:16:3e:" + ":".join(f"{x:02x}" for x in h[:3])
        node = Node(name, kind, f"fwsg-{self.name}-{name}", "eth0", tap, self._check_mac(mac),
                    ipv4, ipv6, bridge)
        self._nodes[name] = node
        return node

    def add_vm(self, name, mac=None, ipv4=(), ipv6=(), tap=None, bridge=None) -> Node:
        """Declare a VM: namespace ``fwsg-<lab>-<name>`` with ``eth0`` (``mac``, addresses as
        "a.b.c.d/len" / "x::y/len"), linked to ``br0`` through host-side veth ``tap``
        (default ``tap-<name>``). ``bridge``: another bridge of the host namespace instead
        (created without addresses: a second network, which may reuse the addresses)."""
        return self._add("vm", name, mac, ipv4, ipv6, tap, bridge)

    def add_outside(self, name="out", mac=None, ipv4=(), ipv6=(), tap=None,
                    bridge=None) -> Node:
        """Declare the unfiltered outside peer; built like a VM (host-side veth default
        ``up-<name>``), on ``bridge`` as for :meth:`add_vm`."""
        return self._add("outside", name, mac, ipv4, ipv6, tap, bridge)

    # ---------------------------------------------------------------- lookup

    @property
    def host_ns(self) -> str:
        return self._nodes[HOST].ns

    @property
    def nodes(self) -> dict:
        """Name -> :class:`Node`, the host included."""
        return dict(self._nodes)

    def node(self, name) -> Node:
        """The :class:`Node` called ``name`` ("host" is the hypervisor); accepts a Node."""
        if isinstance(name, Node):
            return name
        try:
            return self._nodes[name]
        except KeyError:
            raise LabError(f"lab {self.name!r} has no node {name!r}") from None

    def ns(self, name) -> str:
        """Namespace name of node ``name``."""
        return self.node(name).ns

    @property
    def namespaces(self) -> list:
        """All namespace names of this lab (host first)."""
        return [n.ns for n in self._nodes.values()]

    # ---------------------------------------------------------------- lifecycle

    def up(self) -> "Lab":
        """Build the topology (removing a stale lab of the same name first). On failure
        everything built so far is removed and :class:`LabError` is raised."""
        if self.is_up:
            return self
        ok, why = netns_available()
        if not ok:
            raise LabError(f"cannot build lab: {why}")
        sweep_dead_labs()
        self._lock_fd = _try_lock(self.name)
        if self._lock_fd is None:
            raise LabError(f"lab {self.name!r} is up in another process "
                           f"(pid {_read_state(self.name).get('pid', '?')}); pick another name")
        with _live_lock:
            _live_labs.add(self)
        try:
            cleanup_stale(self.name, extra=self.namespaces)
            _install_sigterm()
            self._build()
        except BaseException:
            self.down()
            raise
        self.is_up = True
        return self

    def _save_state(self, **extra):
        os.makedirs(_STATE_DIR, exist_ok=True)
        path = os.path.join(_STATE_DIR, self.name + ".json")
        with open(path + ".tmp", "w") as f:
            json.dump({"namespaces": self.namespaces, "pid": os.getpid(),
                       "start": _proc_start(os.getpid()), **extra}, f)
        os.replace(path + ".tmp", path)

    def _build(self):
        host = self._nodes[HOST]
        guests = [n for n in self._nodes.values() if n.kind != "host"]
        # Record the names before creating anything, so a crash leaves a trail.
        self._save_state()
        for n in [host] + guests:
            _run(["ip", "netns", "add", n.ns])
            self._created.append(n.ns)
        brnf = 1 if self.br_netfilter else 0
        for n in [host] + guests:
            values = dict(_NODE_SYSCTLS)
            if n is host:
                for key in ("net.bridge.bridge-nf-call-iptables",
                            "net.bridge.bridge-nf-call-ip6tables"):
                    if traffic.sysctl_read(n.ns, key) is None:
                        if self.br_netfilter:
                            raise LabError(f"{key} does not exist in the host namespace "
                                           f"(br_netfilter missing from this kernel?)")
                        continue
                    values[key] = brnf
            for key in ("net.ipv4.icmp_msgs_per_sec", "net.ipv4.icmp_msgs_burst"):
                if traffic.sysctl_read(n.ns, key) is None:
                    values.pop(key)
            traffic.sysctl_write(n.ns, values)
        cmds = ["link set lo up",
                f"link add {self.bridge} type bridge stp_state 0 forward_delay 0 "
                f"mcast_snooping 0",
                f"link set {self.bridge} address {host.mac}"]
        extra = sorted({n.bridge for n in guests} - {self.bridge})
        for br in extra:  # further networks: bridges without host addresses
            cmds.append(f"link add {br} type bridge stp_state 0 forward_delay 0 mcast_snooping 0")
        for n in guests:
            cmds.append(f"link add {n.tap} type veth peer name eth0 netns {n.ns}")
            cmds.append(f"link set {n.tap} master {n.bridge} up")
        for br in extra:
            cmds.append(f"link set {br} up")
        cmds.append(f"link set {self.bridge} up")
        cmds += [f"addr add {a} dev {self.bridge}" for a in host.ipv4_cidrs]
        cmds += [f"addr add {a} dev {self.bridge} nodad" for a in host.ipv6_cidrs]
        _run(["ip", "-n", host.ns, "-batch", "-"], input="\n".join(cmds) + "\n")
        for n in guests:
            cmds = ["link set lo up", f"link set eth0 address {n.mac}"]
            cmds += [f"addr add {a} dev eth0" for a in n.ipv4_cidrs]
            cmds += [f"addr add {a} dev eth0 nodad" for a in n.ipv6_cidrs]
            cmds.append("link set eth0 up")
            if host.ipv4 and n.ipv4:
                cmds.append(f"route add default via {host.ipv4[0]} dev eth0 onlink")
            if host.ipv6 and n.ipv6:
                cmds.append(f"route add ::/0 via {host.ipv6[0]} dev eth0 onlink")
            _run(["ip", "-n", n.ns, "-batch", "-"], input="\n".join(cmds) + "\n")
        self._wait_ready(guests)

    def _wait_ready(self, guests, timeout=5.0):
        """Wait until every IPv6 address (link-local included) is usable (not tentative)."""
        deadline = time.monotonic() + timeout
        for n in [self._nodes[HOST]] + guests:
            while True:
                out = _run(["ip", "-n", n.ns, "-6", "addr", "show", "dev", n.iface]).stdout
                if "tentative" not in out and (n.kind == "host" or "fe80::" in out):
                    break
                if time.monotonic() > deadline:
                    raise LabError(f"IPv6 addresses of {n.name} still not ready: {out}")
                time.sleep(0.01)

    def down(self) -> None:
        """Remove every namespace of the lab and close its sockets (idempotent, never raises
        for a namespace already gone; raises :class:`LabError` if one cannot be removed)."""
        self._close_probes()
        if self._lock_fd is None:  # not ours (never up, or detached): nothing to remove
            return
        left = _delete_netns(set(self._created) | set(self.namespaces))
        self._created = []
        self.is_up = False
        if left:
            raise LabError(f"could not remove namespaces {left}")
        with _live_lock:
            _live_labs.discard(self)
        try:
            os.unlink(os.path.join(_STATE_DIR, self.name + ".json"))
        except FileNotFoundError:
            pass
        _unlock(self.name, self._lock_fd)
        self._lock_fd = None

    def _close_probes(self) -> None:
        """Close every connection, sniffer and socket this lab opened."""
        for c in list(self._conns):
            c.close()
        self._conns.clear()
        for s in list(self._sniffers):
            s.stop()
        self._sniffers.clear()
        self._registry.close_all()

    def detach(self) -> None:
        """Leave the lab's namespaces up after this process ends (no teardown, no sweep);
        ``cleanup_stale(name)`` or the next ``up()`` of a lab with this name removes them.
        Probes through this object stop working."""
        if not self.is_up:
            raise LabError(f"lab {self.name!r} is not up")
        self._close_probes()
        self._save_state(detached=True)
        self.is_up = False
        with _live_lock:
            _live_labs.discard(self)
        fd, self._lock_fd = self._lock_fd, None
        os.close(fd)  # releases the lock; the lock file stays (harmless)

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()

    def __repr__(self):
        return f"<Lab {self.name} {'up' if self.is_up else 'down'} nodes={list(self._nodes)}>"

    # ---------------------------------------------------------------- changes inside the lab

    def _need_up(self):
        if not self.is_up:
            raise LabError(f"lab {self.name!r} is not up")

    def exec(self, node, argv, timeout: float = 5, check: bool = True,
             input: str | None = None) -> subprocess.CompletedProcess:
        """Run ``argv`` inside the node's namespace (``ip netns exec``); text output captured.
        ``check``: raise :class:`subprocess.CalledProcessError` on a non-zero exit;
        :class:`subprocess.TimeoutExpired` after ``timeout`` (the process is killed)."""
        self._need_up()
        ns = self.ns(node)
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True,
                              text=True, timeout=timeout, check=check, input=input)

    def netns(self, node):
        """Context manager: the calling thread runs inside the node's namespace for the body
        (sockets and libnftables/netlink handles opened there stay in it)."""
        self._need_up()
        return traffic.in_netns(self.ns(node))

    def ip(self, node, *args) -> str:
        """Run ``ip -n <ns> args...`` for a node; returns stdout, raises :class:`LabError`."""
        self._need_up()
        return _run(["ip", "-n", self.ns(node), *args]).stdout

    def add_address(self, node, cidr: str) -> None:
        """Add an extra address ("a.b.c.d/len" or "x::y/len", usable at once) to the node's
        interface; it is appended to ``node.ipv4``/``node.ipv6``."""
        n = self.node(node)
        fam = 6 if ":" in cidr else 4
        cidrs, bare = _split_addrs([cidr], fam)
        self.ip(n, "addr", "add", cidrs[0], "dev", n.iface, *(["nodad"] if fam == 6 else []))
        (n.ipv4_cidrs if fam == 4 else n.ipv6_cidrs).append(cidrs[0])
        (n.ipv4 if fam == 4 else n.ipv6).append(bare[0])

    def del_address(self, node, cidr: str) -> None:
        """Remove an address added to the node's interface."""
        n = self.node(node)
        fam = 6 if ":" in cidr else 4
        cidrs, bare = _split_addrs([cidr], fam)
        self.ip(n, "addr", "del", cidrs[0], "dev", n.iface)
        lst_c, lst = (n.ipv4_cidrs, n.ipv4) if fam == 4 else (n.ipv6_cidrs, n.ipv6)
        if cidrs[0] in lst_c:
            lst_c.remove(cidrs[0])
        if bare[0] in lst:
            lst.remove(bare[0])

    def set_mac(self, node, mac: str) -> None:
        """Change the node's MAC; its link-local address follows (EUI-64 of the new MAC) and
        the other nodes' neighbour caches are flushed so they learn the new MAC."""
        n = self.node(node)
        mac = self._check_mac(mac)
        old_ll = n.link_local
        self.ip(n, "link", "set", "dev", n.iface, "address", mac)
        n.mac = mac
        cur = self.ip(n, "-6", "addr", "show", "dev", n.iface)
        if old_ll + "/64" in cur:
            self.ip(n, "addr", "del", old_ll + "/64", "dev", n.iface)
        if n.link_local + "/64" not in self.ip(n, "-6", "addr", "show", "dev", n.iface):
            self.ip(n, "addr", "add", n.link_local + "/64", "dev", n.iface, "nodad")
        self.flush_neigh()

    def flush_neigh(self) -> None:
        """Forget all ARP/ND entries in every namespace of the lab."""
        for n in self._nodes.values():
            self.ip(n, "neigh", "flush", "dev", n.iface)

    # ---------------------------------------------------------------- probes

    def _dst(self, dst, family, dst_ip):
        if dst_ip is not None:
            return dst_ip
        return self.node(dst).addr(family)

    def _src_if(self, src):
        return self.node(src).iface

    def _target(self, target, family=None):
        """Address for a node name or an address string (family from ``family`` or 4)."""
        if isinstance(target, Node) or target in self._nodes:
            return self.node(target).addr(family or 4)
        return target

    def tcp_connect(self, src, dst, port: int = 80, family: int = 4, dst_ip=None, src_ip=None,
                    timeout: float = 1.0, sport: int = 0, listen: bool = True) -> bool:
        """True if a TCP connection from ``src`` to a listener on ``port`` in node ``dst``
        (reached at ``dst_ip``, default dst's first address of ``family``) completes the
        handshake and echoes a payload within ``timeout``. ``src_ip`` binds the client (may be
        an address the node does not have: spoofing)."""
        self._need_up()
        return traffic.tcp_connect(self.ns(src), self.ns(dst), self._dst(dst, family, dst_ip),
                                   port, src_ip=src_ip, sport=sport, timeout=timeout,
                                   src_if=self._src_if(src), dst_if=self._src_if(dst),
                                   listen=listen, registry=self._registry)

    def sctp_supported(self) -> tuple:
        """(True, "") if SCTP works in the lab's namespaces; else (False, reason)."""
        self._need_up()
        return traffic.sctp_supported(self.host_ns)

    def sctp_connect(self, src, dst, port: int = 5000, family: int = 4, dst_ip=None,
                     src_ip=None, timeout: float = 1.0) -> bool:
        """Like :meth:`tcp_connect` over SCTP; raises :class:`Unsupported` (with the reason)
        if the kernel has no SCTP."""
        self._need_up()
        return traffic.sctp_connect(self.ns(src), self.ns(dst), self._dst(dst, family, dst_ip),
                                    port, src_ip=src_ip, timeout=timeout,
                                    src_if=self._src_if(src), dst_if=self._src_if(dst),
                                    registry=self._registry)

    def udp_exchange(self, src, dst, port: int = 53, family: int = 4, dst_ip=None, src_ip=None,
                     sport: int = 0, timeout: float = 1.0) -> bool:
        """True if a datagram from ``src`` reaches a listener on ``dst_ip:port`` in ``dst``
        and the reply (from ``dst_ip``) comes back within ``timeout``."""
        self._need_up()
        return traffic.udp_exchange(self.ns(src), self.ns(dst), self._dst(dst, family, dst_ip),
                                    port, src_ip=src_ip, sport=sport, timeout=timeout,
                                    src_if=self._src_if(src), dst_if=self._src_if(dst),
                                    registry=self._registry)

    def udp_reaches(self, src, dst, port: int, sport: int = 0, dst_ip=None, broadcast=False,
                    family: int = 4, src_ip=None, join=None, timeout: float = 1.0) -> bool:
        """True if one datagram from ``src`` (source port ``sport``) to ``dst_ip:port`` is
        seen by a wildcard listener on ``port`` in ``dst`` within ``timeout``. For DHCP:
        ``dst_ip="255.255.255.255", broadcast=True``; DHCPv6: ``dst_ip="ff02::1:2"`` (the
        listener joins the group). ``src_ip="0.0.0.0"`` sends a raw frame with that source (a
        DHCP discover from a VM without an address)."""
        self._need_up()
        ip = self._dst(dst, family, dst_ip)
        dst_mac = "ff:ff:ff:ff:ff:ff"
        if not broadcast and not ip.startswith(("255.", "ff")):
            dst_mac = self.node(dst).mac
        return traffic.udp_reaches(self.ns(src), self.ns(dst), ip,
                                   port, sport=sport, src_ip=src_ip, broadcast=broadcast,
                                   timeout=timeout, src_if=self._src_if(src),
                                   dst_if=self._src_if(dst), join=join,
                                   src_mac=self.node(src).mac, dst_mac=dst_mac,
                                   registry=self._registry)

    def udp_unreachable(self, src, dst, port: int = 9, family: int = 4, dst_ip=None,
                        src_ip=None, sport: int = 0, timeout: float = 1.0) -> bool:
        """True if a datagram from ``src`` to a closed ``port`` on ``dst`` draws the ICMP port
        unreachable back to ``src`` within ``timeout`` (nothing may listen on that port)."""
        self._need_up()
        return traffic.udp_unreachable(self.ns(src), self._dst(dst, family, dst_ip), port,
                                       src_ip=src_ip, sport=sport, timeout=timeout,
                                       src_if=self._src_if(src), registry=self._registry)

    def ping(self, src, target, count: int = 1, timeout: float = 1.0, family: int | None = None,
             src_ip=None) -> bool:
        """True if ``src`` gets an echo reply from ``target`` (an address, ``fe80::..%eth0``
        allowed, or a node name: its first address of ``family``) within ``timeout``."""
        self._need_up()
        return traffic.ping(self.ns(src), self._target(target, family), count=count,
                            timeout=timeout, src_ip=src_ip, src_if=self._src_if(src),
                            registry=self._registry)

    def ping_tool(self, src, target, count: int = 1, timeout: float = 1.0,
                  family: int | None = None) -> bool:
        """Like :meth:`ping` but with the ``ping`` binary (slower; for cross-checking)."""
        addr = self._target(target, family)
        argv = ["ping", "-n", "-q", "-c", str(count), "-w", str(max(1, round(timeout)))]
        if ":" in addr:
            argv.append("-6")
        try:
            return self.exec(src, argv + [addr], timeout=timeout + 5, check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def open_tcp(self, src, dst, port: int = 2222, family: int = 4, dst_ip=None, src_ip=None,
                 timeout: float = 1.0, sport: int = 0) -> traffic.TcpConn:
        """An established TCP connection from ``src`` (source port ``sport``, 0: any) to
        ``dst``; ``conn.alive()`` tells whether it still carries data, ``conn.close()`` ends it
        (so does the lab's teardown). Raises :class:`LabError` if it cannot be established
        within ``timeout``."""
        self._need_up()
        c = traffic.open_stream(self.ns(src), self.ns(dst), self._dst(dst, family, dst_ip), port,
                                src_ip=src_ip, timeout=timeout, src_if=self._src_if(src),
                                dst_if=self._src_if(dst), registry=self._registry, sport=sport)
        self._conns.append(c)
        return c

    def sniff(self, node, iface=None, *, max_seconds: float = 30.0, max_frames: int = 20000,
              outgoing: bool = True) -> traffic.Sniffer:
        """A capture of every frame on the node's interface (``iface``: e.g. a tap in the
        host). Use as ``with lab.sniff("out") as s: ...; s.seen(pred, timeout)``; capturing
        when the with-block starts, for at most ``max_seconds``."""
        self._need_up()
        n = self.node(node)
        s = traffic.Sniffer(n.ns, iface or n.iface, max_seconds=max_seconds,
                            max_frames=max_frames, outgoing=outgoing, registry=self._registry)
        self._sniffers.append(s)
        return s

    def send_frame(self, node, frame: bytes, iface=None) -> None:
        """Send a raw Ethernet frame out of the node's interface."""
        self._need_up()
        n = self.node(node)
        traffic.send_frame(n.ns, frame, iface or n.iface, registry=self._registry)

    def arp_probe(self, node, target_ip, sender_ip=None, sender_mac=None, eth_src=None,
                  timeout: float = 1.0) -> bool:
        """Send an ARP request for ``target_ip`` from the node (sender IP/MAC default to the
        node's own, override to spoof; ``eth_src`` overrides the Ethernet source) and return
        True if the ARP reply comes back within ``timeout``."""
        self._need_up()
        n = self.node(node)
        return traffic.arp_probe(n.ns, self._target(target_ip, 4), sender_mac or n.mac,
                                 sender_ip or n.addr(4), ifname=n.iface,
                                 eth_src=eth_src or sender_mac or n.mac, timeout=timeout,
                                 registry=self._registry)

    def send_icmpv6(self, node, dst, icmp_type: int, code: int = 0, payload: bytes = b"",
                    src=None, hop_limit: int = 255) -> None:
        """Send one raw ICMPv6 message from the node (source: ``src`` or the kernel's choice,
        the link-local address for ``ff02::1``); ``payload`` follows type/code/checksum.
        For a router advertisement: ``icmp_type=134, payload=ra_body()``."""
        self._need_up()
        n = self.node(node)
        traffic.send_icmpv6(n.ns, dst, icmp_type, code, payload, src=src, ifname=n.iface,
                            hop_limit=hop_limit, registry=self._registry)

    # ---------------------------------------------------------------- many probes at once

    _PROBES = {"tcp_connect", "udp_exchange", "udp_reaches", "udp_unreachable", "ping",
               "sctp_connect", "arp_probe", "ping_tool"}
    _LISTENING = {"tcp_connect": "tcp", "sctp_connect": "sctp", "udp_exchange": "udp",
                  "udp_reaches": "udp"}

    def probe(self, kind: str, *args, **kwargs) -> bool:
        """Run the probe method called ``kind`` (e.g. "tcp_connect") with these arguments."""
        if kind not in self._PROBES:
            raise LabUsageError(f"unknown probe {kind!r}; one of {sorted(self._PROBES)}")
        return getattr(self, kind)(*args, **kwargs)

    def matrix(self, probes, workers: int = 16) -> list:
        """Run independent probes concurrently; returns their results in order.

        Each probe is ``(kind, *args)`` optionally ending in a kwargs dict, e.g.
        ``("tcp_connect", "vm1", "vm2", {"port": 22})``, or a zero-argument callable.
        Probes that would listen on the same node, protocol and port run one after another.
        """
        specs = []
        for p in probes:
            if callable(p):
                specs.append((p, None))
                continue
            kind, *args = p
            kw = args.pop() if args and isinstance(args[-1], dict) else {}
            if kind not in self._PROBES:
                raise LabUsageError(f"unknown probe {kind!r}")
            key = None
            fn = getattr(self, kind)
            if kind in self._LISTENING:
                try:
                    b = inspect.signature(fn).bind(*args, **kw)
                except TypeError as e:
                    raise LabUsageError(f"matrix: bad arguments for {kind}: {e}") from None
                b.apply_defaults()
                key = (self.ns(b.arguments["dst"]), self._LISTENING[kind], b.arguments["port"])
            specs.append(((lambda fn=fn, a=tuple(args), k=dict(kw): fn(*a, **k)), key))
        groups: dict = {}
        for i, (fn, key) in enumerate(specs):
            groups.setdefault(key if key is not None else ("solo", i), []).append((i, fn))
        results = [None] * len(specs)

        def run_group(items):
            for i, fn in items:
                results[i] = fn()

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
            for f in [ex.submit(run_group, items) for items in groups.values()]:
                f.result()
        return results


def main(argv=None) -> int:
    """``python -m fwsg.lab [NAME]``: build a two-VM + outside lab, run every probe once,
    print timings, tear down."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m fwsg.lab", description=main.__doc__)
    ap.add_argument("name", nargs="?", default="demo")
    ap.add_argument("--hold", type=float, default=0,
                    help="keep the lab up this many seconds (Ctrl-C ends it)")
    a = ap.parse_args(argv)
    lab = Lab(a.name)
    lab.add_vm("vm1", mac="fa:16:3e:00:00:11", ipv4=["192.0.2.11/24"], ipv6=["2001:db8::11/64"])
    lab.add_vm("vm2", mac="fa:16:3e:00:00:12", ipv4=["192.0.2.12/24"], ipv6=["2001:db8::12/64"])
    lab.add_outside("out", mac="fa:16:3e:00:00:99", ipv4=["192.0.2.99/24"],
                    ipv6=["2001:db8::99/64"])
    t0 = time.monotonic()
    with lab:
        print(f"up in {1000 * (time.monotonic() - t0):.0f} ms: {', '.join(lab.namespaces)}")
        for fam in (4, 6):
            for kind, args in [("tcp_connect", ("vm1", "vm2")), ("udp_exchange", ("vm1", "out")),
                               ("udp_unreachable", ("vm2", "vm1")), ("ping", ("vm1", "out"))]:
                t = time.monotonic()
                kw = {"family": fam}
                ok = lab.probe(kind, *args, **kw)
                print(f"  v{fam} {kind:16} {args[0]}->{args[1]}: {ok} "
                      f"({1000 * (time.monotonic() - t):.1f} ms)")
        if a.hold:
            print(f"holding for {a.hold} s (Ctrl-C to end)")
            time.sleep(a.hold)
        t = time.monotonic()
    print(f"down in {1000 * (time.monotonic() - t):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
