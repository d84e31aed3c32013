"""Host preparation for the nft backend, inside the managed namespace: bridged frames must
reach the inet hooks (conntrack lives only there on this kernel), so br_netfilter is loaded
and ``net.bridge.bridge-nf-call-ip{,6}tables`` switched on; and the conntrack table's size, read
before a sweep (an empty table needs no sweep).
"""

import os
import socket
import struct
import subprocess

from fwsg.errors import EnvironmentProblem, UserError
from fwsg.netns import entered

BRIDGE_SYSCTLS = ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables")


def require_net_admin():
    """UserError unless this process may change the packet filter (CAP_NET_ADMIN, i.e. root)."""
    try:
        with open("/proc/self/status") as f:
            caps = next((ln.split()[1] for ln in f if ln.startswith("CapEff:")), "0")
        ok = bool(int(caps, 16) & (1 << 12))  # CAP_NET_ADMIN
    except (OSError, ValueError):
        ok = os.geteuid() == 0
    if not ok:
        raise UserError("fwsg needs root (CAP_NET_ADMIN) to read or change the packet filter")


def prepare_host(netns, mode="bridge"):
    """Switch the sysctls ``mode`` needs on in ``netns``; the notices of what was changed.
    EnvironmentProblem when br_netfilter is not available."""
    if mode != "bridge":
        return []
    notices = []
    with entered(netns):
        for name in BRIDGE_SYSCTLS:
            path = f"/proc/sys/net/bridge/{name}"
            if not os.path.exists(path):
                subprocess.run(["modprobe", "br_netfilter"], capture_output=True, check=False)
            try:
                with open(path) as f:
                    val = f.read().strip()
                if val != "1":
                    with open(path, "w") as f:
                        f.write("1\n")
                    notices.append(f"set net.bridge.{name}=1 in "
                                   f"{netns or 'this namespace'} (was {val})")
            except OSError as e:
                raise EnvironmentProblem(f"cannot enable net.bridge.{name}: {e} "
                                         "(is br_netfilter available?)") from None
    return notices


class ConntrackCount:
    """The number of conntrack entries of one namespace, read without a dump (an fd opened
    once inside the namespace)."""

    def __init__(self, netns):
        self.netns = netns
        self._fd = None

    def close(self):
        """Close the fd (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        try:  # dropped with its backend: give the fd back
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def in_use(self):
        """False when the namespace's conntrack table is empty (or absent): nothing to sweep."""
        if self._fd is None:
            with entered(self.netns):
                try:
                    self._fd = os.open("/proc/sys/net/netfilter/nf_conntrack_count", os.O_RDONLY)
                except OSError:
                    return False
        try:
            return int(os.pread(self._fd, 32, 0) or b"0") > 0
        except (OSError, ValueError):
            return True


class Generation:
    """The nf_tables generation id of one namespace (it moves with every committed
    transaction, whoever commits it), asked over a netlink socket opened once inside it."""

    _GETGEN = (10 << 8) | 16  # NFNL_SUBSYS_NFTABLES, NFT_MSG_GETGEN

    def __init__(self, netns):
        self.netns = netns
        self._sock = None
        self._cookie = None

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def current(self):
        """``(namespace cookie, generation id)`` now; None when the kernel does not say. The
        cookie (SO_NETNS_COOKIE) is never reused by another namespace, so a generation seen
        in one namespace is never mistaken for the same number in a later one."""
        try:
            if self._sock is None:
                with entered(self.netns):
                    self._sock = socket.socket(socket.AF_NETLINK,
                                               socket.SOCK_RAW | socket.SOCK_CLOEXEC, 12)
                self._sock.bind((0, 0))
                self._cookie = struct.unpack("=Q", self._sock.getsockopt(
                    socket.SOL_SOCKET, 71, 8))[0]  # SO_NETNS_COOKIE
            body = struct.pack("=BBH", socket.AF_UNSPEC, 0, 0)
            self._sock.send(struct.pack("=IHHII", 16 + len(body), self._GETGEN, 1, 1, 0) + body)
            data = self._sock.recv(4096)
        except OSError:
            self.close()
            return None
        if len(data) < 20:
            return None
        length, kind = struct.unpack_from("=IH", data, 0)
        off = 20
        while kind != 2 and off + 4 <= min(length, len(data)):  # 2: NLMSG_ERROR
            alen, atype = struct.unpack_from("=HH", data, off)
            if alen < 4:
                break
            if atype & 0x7FFF == 1:  # NFTA_GEN_ID
                return self._cookie, struct.unpack_from(">I", data, off + 4)[0]
            off += (alen + 3) & ~3
        return None
