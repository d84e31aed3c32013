"""Real-packet probes between network namespaces, run in-process.

Every socket is created inside its namespace by switching only the calling thread's network
namespace (``setns(2)`` on one thread), then switching back; a socket keeps the namespace it
was created in, so all I/O afterwards is ordinary non-blocking Python socket code in this
process. No helper processes are started, every wait is bounded by a deadline, and a probe
that passes costs about a millisecond.

The functions here know nothing about the lab's topology: they take namespace names,
interface names and addresses. :mod:`fwsg.lab.topology` resolves node names to those.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import os
import select
import socket
import struct
import threading
import time

from fwsg.lab.errors import LabError, Unsupported

__all__ = [
    "in_netns", "ns_socket", "sysctl_write", "sysctl_read",
    "tcp_connect", "udp_exchange", "udp_reaches", "udp_unreachable", "ping", "sctp_connect",
    "sctp_supported", "udp4_frame", "TcpConn", "open_stream", "Frame", "Sniffer", "send_frame",
    "send_icmpv6", "arp_request_frame", "arp_probe", "ra_body", "link_local_of",
]

NETNS_DIR = "/run/netns"
_CLONE_NEWNET = 0x40000000
_IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
_IPV6_FREEBIND = 78
_IPPROTO_SCTP = getattr(socket, "IPPROTO_SCTP", 132)
_ETH_P_ALL = 0x0003
_ETH_P_ARP = 0x0806

_libc = ctypes.CDLL(None, use_errno=True)


# --------------------------------------------------------------------------------------------
# namespaces


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(ns: str):
    """Run the body with this thread (only) in network namespace ``ns``; always switch back.

    Raises :class:`LabError` if the namespace does not exist or the switch cannot be verified.
    Sockets created in the body belong to ``ns`` for their whole life.
    """
    if not isinstance(ns, str) or not ns or "/" in ns or ns in (".", ".."):
        raise LabError(f"not a namespace name: {ns!r}")
    try:
        target = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise LabError(f"network namespace {ns!r} does not exist") from None
    try:
        want = os.fstat(target)
        orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            # Switching back is harmless if the switch never happened, so the body and the
            # switch itself are inside the same try (no window for a KeyboardInterrupt).
            _setns(target)
            now = os.stat("/proc/thread-self/ns/net")
            if (now.st_dev, now.st_ino) != (want.st_dev, want.st_ino):
                raise LabError(f"setns into {ns!r} did not take effect")
            yield
        finally:
            try:
                _setns(orig)
            finally:
                os.close(orig)
    finally:
        os.close(target)


def sysctl_write(ns: str, values: dict) -> None:
    """Set sysctls (``{"net.ipv6.conf.all.accept_dad": 0}``) inside namespace ``ns`` only.

    Keys that do not exist on this kernel raise :class:`LabError`.
    """
    with in_netns(ns):
        for key, value in values.items():
            path = "/proc/sys/" + key.replace(".", "/")
            try:
                with open(path, "w") as f:
                    f.write(str(value))
            except FileNotFoundError:
                raise LabError(f"sysctl {key} does not exist in namespace {ns!r}") from None


def sysctl_read(ns: str, key: str):
    """Value of sysctl ``key`` in namespace ``ns`` (stripped text), or None if it does not exist."""
    with in_netns(ns):
        try:
            with open("/proc/sys/" + key.replace(".", "/")) as f:
                return f.read().strip()
        except FileNotFoundError:
            return None


class SocketRegistry:
    """Keeps the sockets a lab opened so teardown can close leftovers (an open socket keeps its
    namespace, and its interfaces, alive after ``ip netns del``)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._socks = set()

    def add(self, s):
        with self._lock:
            self._socks.add(s)
        return s

    def close(self, s):
        with self._lock:
            self._socks.discard(s)
        with contextlib.suppress(OSError):
            s.close()

    def close_all(self):
        with self._lock:
            socks, self._socks = self._socks, set()
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()

    def __len__(self):
        return len(self._socks)


_default_registry = SocketRegistry()


def ns_socket(ns: str, family, type_, proto=0, registry: SocketRegistry | None = None):
    """A non-blocking socket created in namespace ``ns`` (registered for teardown)."""
    with in_netns(ns):
        s = socket.socket(family, type_, proto)
    s.setblocking(False)
    return (registry or _default_registry).add(s)


def ifindex(ns: str, ifname: str) -> int:
    """Interface index of ``ifname`` inside namespace ``ns``."""
    with in_netns(ns):
        try:
            return socket.if_nametoindex(ifname)
        except OSError:
            raise LabError(f"no interface {ifname!r} in namespace {ns!r}") from None


# --------------------------------------------------------------------------------------------
# addresses


def link_local_of(mac: str) -> str:
    """The EUI-64 IPv6 link-local address (``fe80::...``) of a MAC address."""
    b = bytes(int(x, 16) for x in mac.split(":"))
    if len(b) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    eui = bytes([b[0] ^ 0x02]) + b[1:3] + b"\xff\xfe" + b[3:]
    return str(ipaddress.IPv6Address(b"\xfe\x80" + b"\0" * 6 + eui))


def _family_of(ip: str) -> int:
    return 6 if ":" in ip else 4


def _sockaddr(ns: str, ip: str, port: int, default_if: str | None):
    """(family, sockaddr) for ``ip`` (may carry ``%ifname``); link-local and multicast v6
    addresses without a scope get ``default_if``."""
    scope_if = None
    if "%" in ip:
        ip, scope_if = ip.split("%", 1)
    if _family_of(ip) == 4:
        return socket.AF_INET, (ip, port)
    a = ipaddress.IPv6Address(ip)
    scope = 0
    if scope_if is None and (a.is_link_local or (a.is_multicast and (a.packed[1] & 0x0F) <= 2)):
        scope_if = default_if
    if scope_if:
        scope = ifindex(ns, scope_if)
    return socket.AF_INET6, (ip, port, 0, scope)


def _bind(s, ns, family, ip, port, default_if, freebind=True):
    try:
        _bind_raw(s, ns, family, ip, port, default_if, freebind)
    except OSError as e:
        raise LabError(f"cannot bind [{ip or 'any'}]:{port} in {ns!r}: {e.strerror}") from None


def _bind_raw(s, ns, family, ip, port, default_if, freebind):
    if family == socket.AF_INET:
        if freebind:
            s.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
        s.bind((ip or "0.0.0.0", port))
    else:
        if freebind:
            s.setsockopt(socket.IPPROTO_IPV6, _IPV6_FREEBIND, 1)
        if ip:
            s.bind(_sockaddr(ns, ip, port, default_if)[1])
        else:
            s.bind(("::", port, 0, 0))


def _wait(sock_or_socks, deadline, write=False):
    """True when readable (or writable), False at the deadline."""
    socks = sock_or_socks if isinstance(sock_or_socks, (list, tuple)) else [sock_or_socks]
    left = deadline - time.monotonic()
    if left <= 0:
        left = 0
    if write:
        _, w, _ = select.select([], socks, [], left)
        return bool(w)
    r, _, _ = select.select(socks, [], [], left)
    return bool(r)


def _nonce() -> bytes:
    return b"fwsg-" + os.urandom(6).hex().encode()


def _connect_stream(client, addr, deadline) -> bool:
    try:
        client.connect(addr)
        return True
    except BlockingIOError:
        pass
    except OSError:
        return False
    if not _wait(client, deadline, write=True):
        return False
    return client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0


def _accept(listener, deadline):
    while True:
        if not _wait(listener, deadline):
            return None
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            continue
        conn.setblocking(False)
        return conn


def _recv_until(sock, want: bytes, deadline, buf=b"") -> bool:
    """Read from ``sock`` until ``want`` is in the data read; False at EOF, error or deadline."""
    while want not in buf:
        if not _wait(sock, deadline):
            return False
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            return False
        if not data:
            return False
        buf += data
    return True


def _abort(sock):
    """Close with RST (no TIME_WAIT left behind)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# --------------------------------------------------------------------------------------------
# stream probes (TCP, SCTP)


def _stream_probe(src_ns, dst_ns, dst_ip, port, *, proto, src_ip=None, sport=0, timeout=1.0,
                  src_if="eth0", dst_if="eth0", listen=True, registry=None):
    reg = registry or _default_registry
    fam, addr = _sockaddr(src_ns, dst_ip, port, src_if)
    socks = []
    try:
        if listen:
            lst = ns_socket(dst_ns, fam, socket.SOCK_STREAM, proto, reg)
            socks.append(lst)
            lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            _bind(lst, dst_ns, fam, None, port, dst_if, freebind=False)
            lst.listen(16)
        cli = ns_socket(src_ns, fam, socket.SOCK_STREAM, proto, reg)
        socks.append(cli)
        if src_ip or sport:
            cli.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            _bind(cli, src_ns, fam, src_ip, sport, src_if)
        deadline = time.monotonic() + timeout
        if not _connect_stream(cli, addr, deadline):
            return False
        if not listen:
            return True
        srv = _accept(lst, deadline)
        if srv is None:
            return False
        reg.add(srv)
        socks.append(srv)
        msg = _nonce()
        try:
            cli.send(msg)
        except OSError:
            return False
        if not _recv_until(srv, msg, deadline):
            return False
        try:
            srv.send(msg)
        except OSError:
            return False
        return _recv_until(cli, msg, deadline)
    finally:
        for s in socks:
            _abort(s)
            reg.close(s)


def tcp_connect(src_ns, dst_ns, dst_ip, port, **kw) -> bool:
    """True if a TCP handshake from ``src_ns`` to ``dst_ip:port`` (a listener on any address in
    ``dst_ns``) completes and a payload makes the round trip before ``timeout``.

    Keywords: ``src_ip`` (bind the client, also to a non-local address), ``sport``,
    ``timeout`` (seconds, default 1.0), ``src_if``/``dst_if`` (scope of link-local
    addresses), ``listen=False`` (no listener: True only if the handshake completes).
    """
    return _stream_probe(src_ns, dst_ns, dst_ip, port, proto=socket.IPPROTO_TCP, **kw)


_sctp_cache: dict = {}


def sctp_supported(ns: str) -> tuple[bool, str]:
    """(True, "") if SCTP sockets can be created in ``ns``; else (False, reason)."""
    with in_netns(ns):
        try:
            socket.socket(socket.AF_INET, socket.SOCK_STREAM, _IPPROTO_SCTP).close()
            return True, ""
        except OSError as e:
            return False, (f"kernel has no SCTP: socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP) "
                           f"failed with {errno.errorcode.get(e.errno, e.errno)} ({e.strerror})")


def sctp_connect(src_ns, dst_ns, dst_ip, port, **kw) -> bool:
    """Like :func:`tcp_connect` over SCTP; raises :class:`Unsupported` if the kernel lacks SCTP."""
    ok, why = sctp_supported(src_ns)
    if not ok:
        raise Unsupported(why)
    return _stream_probe(src_ns, dst_ns, dst_ip, port, proto=_IPPROTO_SCTP, **kw)


class TcpConn:
    """A long-lived TCP connection between two namespaces whose server side echoes.

    ``alive()`` is True while bytes still make the round trip; ``close()`` ends it (RST).
    """

    def __init__(self, client, server, registry, desc=""):
        self._cli = client
        self._srv = server
        self._reg = registry
        self._buf = b""
        self.desc = desc
        self.closed = False

    def alive(self, timeout: float = 1.0) -> bool:
        """True if a fresh token sent by the client is echoed back by the server within
        ``timeout``; False on timeout, reset or close."""
        if self.closed:
            return False
        deadline = time.monotonic() + timeout
        token = _nonce()
        try:
            self._cli.send(token)
        except OSError:
            return False
        while True:
            if not _wait([self._cli, self._srv], deadline):
                return False
            for s in select.select([self._cli, self._srv], [], [], 0)[0]:
                try:
                    data = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    return False
                if not data:
                    return False
                if s is self._srv:
                    try:
                        self._srv.sendall(data)
                    except OSError:
                        return False
                else:
                    self._buf = (self._buf + data)[-4096:]
                    if token in self._buf:
                        self._buf = b""
                        return True

    def close(self) -> None:
        """Close both ends (idempotent)."""
        if self.closed:
            return
        self.closed = True
        for s in (self._cli, self._srv):
            _abort(s)
            self._reg.close(s)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<TcpConn {self.desc}{' closed' if self.closed else ''}>"


def open_stream(src_ns, dst_ns, dst_ip, port, *, src_ip=None, timeout=1.0, src_if="eth0",
                dst_if="eth0", registry=None, sport=0) -> TcpConn:
    """Open a TCP connection from ``src_ns`` (source port ``sport``, 0: any) to a one-shot
    echo listener on ``port`` in ``dst_ns``; the listener is closed once the connection is
    accepted.

    Raises :class:`LabError` if the connection is not established within ``timeout``.
    """
    reg = registry or _default_registry
    fam, addr = _sockaddr(src_ns, dst_ip, port, src_if)
    lst = ns_socket(dst_ns, fam, socket.SOCK_STREAM, 0, reg)
    cli = srv = None
    try:
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _bind(lst, dst_ns, fam, None, port, dst_if, freebind=False)
        lst.listen(1)
        cli = ns_socket(src_ns, fam, socket.SOCK_STREAM, 0, reg)
        if src_ip or sport:
            _bind(cli, src_ns, fam, src_ip, sport, src_if)
        deadline = time.monotonic() + timeout
        if _connect_stream(cli, addr, deadline):
            srv = _accept(lst, deadline)
        if srv is None:
            raise LabError(f"open_tcp: no connection to [{dst_ip}]:{port} within {timeout}s")
        reg.add(srv)
        conn = TcpConn(cli, srv, reg, desc=f"{src_ns} -> [{dst_ip}]:{port}")
        cli = None
        return conn
    finally:
        reg.close(lst)
        if cli is not None:
            _abort(cli)
            reg.close(cli)


# --------------------------------------------------------------------------------------------
# UDP


def udp_exchange(src_ns, dst_ns, dst_ip, port, *, src_ip=None, sport=0, timeout=1.0,
                 src_if="eth0", dst_if="eth0", registry=None) -> bool:
    """True if a datagram from ``src_ns`` reaches a listener on ``dst_ip:port`` in ``dst_ns``
    and the listener's reply (sent from ``dst_ip``) comes back before ``timeout``."""
    reg = registry or _default_registry
    fam, addr = _sockaddr(src_ns, dst_ip, port, src_if)
    srv = cli = None
    try:
        srv = ns_socket(dst_ns, fam, socket.SOCK_DGRAM, 0, reg)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _bind(srv, dst_ns, fam, dst_ip, port, dst_if)
        cli = ns_socket(src_ns, fam, socket.SOCK_DGRAM, 0, reg)
        if src_ip or sport:
            cli.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            _bind(cli, src_ns, fam, src_ip, sport, src_if)
        deadline = time.monotonic() + timeout
        msg = _nonce()
        try:
            cli.sendto(msg, addr)
        except OSError:
            return False
        peer = None
        while peer is None:
            if not _wait(srv, deadline):
                return False
            try:
                data, frm = srv.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                continue
            if data == msg:
                peer = frm
        try:
            srv.sendto(msg, peer)
        except OSError:
            return False
        return _recv_msg(cli, msg, deadline)
    finally:
        _close(reg, srv, cli)


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp4_frame(src_mac, dst_mac, src_ip, dst_ip, sport, dport, payload: bytes,
               ttl: int = 64) -> bytes:
    """An Ethernet frame with an IPv4/UDP datagram (checksums filled), any source address
    (e.g. ``0.0.0.0`` for a DHCP discover)."""
    sip, dip = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
    udp_len = 8 + len(payload)
    pseudo = sip + dip + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    c = _csum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, ttl, 17, 0, sip, dip)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return _mac_bytes(dst_mac) + _mac_bytes(src_mac) + b"\x08\x00" + ip + udp


def udp_reaches(src_ns, dst_ns, dst_ip, port, *, sport=0, src_ip=None, broadcast=False,
                timeout=1.0, src_if="eth0", dst_if="eth0", join=None, src_mac=None,
                dst_mac="ff:ff:ff:ff:ff:ff", registry=None) -> bool:
    """True if a datagram sent from ``src_ns`` to ``dst_ip:port`` is seen by a listener bound to
    the wildcard address on ``port`` in ``dst_ns`` before ``timeout`` (one way, no reply).

    ``broadcast``: allow a broadcast destination (the client is bound to ``src_if``).
    ``join``: an IPv6 multicast group (e.g. ``ff02::1:2``) the listener joins on ``dst_if``;
    by default the group of ``dst_ip`` if that is IPv6 multicast.
    ``src_ip="0.0.0.0"`` (a DHCP client without an address) sends a raw frame from
    ``src_mac`` to ``dst_mac`` (default broadcast) with that source, as DHCP clients do.
    """
    reg = registry or _default_registry
    fam, addr = _sockaddr(src_ns, dst_ip, port, src_if)
    srv = cli = None
    try:
        srv = ns_socket(dst_ns, fam, socket.SOCK_DGRAM, 0, reg)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _bind(srv, dst_ns, fam, None, port, dst_if, freebind=False)
        if fam == socket.AF_INET6:
            group = join
            if group is None and ipaddress.IPv6Address(dst_ip.split("%")[0]).is_multicast:
                group = dst_ip.split("%")[0]
            if group:
                idx = ifindex(dst_ns, dst_if)
                mreq = socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", idx)
                srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        msg = _nonce()
        if fam == socket.AF_INET and src_ip == "0.0.0.0":
            if not src_mac:
                raise LabError("udp_reaches from 0.0.0.0 needs src_mac")
            deadline = time.monotonic() + timeout
            send_frame(src_ns, udp4_frame(src_mac, dst_mac, "0.0.0.0", addr[0], sport or 68,
                                          port, msg), src_if, registry=reg)
            return _recv_msg(srv, msg, deadline)
        cli = ns_socket(src_ns, fam, socket.SOCK_DGRAM, 0, reg)
        cli.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if broadcast:
            cli.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if broadcast or fam == socket.AF_INET6 and addr[3]:
            cli.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, src_if.encode())
        if fam == socket.AF_INET6 and addr[3]:
            cli.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, addr[3])
        if src_ip or sport:
            _bind(cli, src_ns, fam, src_ip, sport, src_if)
        deadline = time.monotonic() + timeout
        try:
            cli.sendto(msg, addr)
        except OSError:
            return False
        return _recv_msg(srv, msg, deadline)
    finally:
        _close(reg, srv, cli)


def _close(reg, *socks) -> None:
    """Close the sockets that were opened (None for those that were not)."""
    for s in socks:
        if s is not None:
            reg.close(s)


def _recv_msg(sock, msg, deadline) -> bool:
    while True:
        if not _wait(sock, deadline):
            return False
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            return False
        if data == msg:
            return True


def udp_unreachable(src_ns, dst_ip, port, *, src_ip=None, sport=0, timeout=1.0, src_if="eth0",
                    registry=None) -> bool:
    """True if a datagram to a port nobody listens on draws an ICMP port unreachable back to
    ``src_ns`` (the socket sees ECONNREFUSED) before ``timeout``."""
    reg = registry or _default_registry
    fam, addr = _sockaddr(src_ns, dst_ip, port, src_if)
    cli = ns_socket(src_ns, fam, socket.SOCK_DGRAM, 0, reg)
    try:
        if src_ip or sport:
            cli.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            _bind(cli, src_ns, fam, src_ip, sport, src_if)
        deadline = time.monotonic() + timeout
        try:
            cli.connect(addr)
            cli.send(_nonce())
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
        while True:
            if not _wait(cli, deadline):
                return False
            try:
                cli.recv(65536)
            except ConnectionRefusedError:
                return True
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return False
    finally:
        reg.close(cli)


# --------------------------------------------------------------------------------------------
# ICMP echo


def ping(src_ns, dst_ip, *, count=1, timeout=1.0, src_ip=None, src_if="eth0",
         registry=None) -> bool:
    """True if at least one of ``count`` ICMP(v6) echo requests from ``src_ns`` to ``dst_ip``
    (``fe80::...%eth0`` allowed) is answered within ``timeout`` (for all of them together).

    Uses ICMP datagram ("ping") sockets; the lab enables them in its namespaces through
    ``net.ipv4.ping_group_range``.
    """
    reg = registry or _default_registry
    fam, addr = _sockaddr(src_ns, dst_ip, 0, src_if)
    proto = socket.IPPROTO_ICMP if fam == socket.AF_INET else socket.IPPROTO_ICMPV6
    req_type, rep_type = (8, 0) if fam == socket.AF_INET else (128, 129)
    s = ns_socket(src_ns, fam, socket.SOCK_DGRAM, proto, reg)
    try:
        if src_ip:
            _bind(s, src_ns, fam, src_ip, 0, src_if)
        deadline = time.monotonic() + timeout
        payload = _nonce()
        interval = timeout / max(count, 1)
        for seq in range(1, count + 1):
            pkt = struct.pack("!BBHHH", req_type, 0, 0, 0, seq) + payload
            try:
                s.sendto(pkt, addr)
            except OSError:
                pass
            step = min(deadline, time.monotonic() + interval) if seq < count else deadline
            while _wait(s, step):
                try:
                    data = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    break
                if len(data) >= 8 and data[0] == rep_type and data[8:] == payload:
                    return True
        return False
    finally:
        reg.close(s)


# --------------------------------------------------------------------------------------------
# L2: frames, sniffing, raw ICMPv6


def _mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def _mac_str(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


class Frame:
    """One captured Ethernet frame with decoded fields (None where not applicable).

    Fields: ``raw``, ``time``, ``pkttype`` (0 host, 1 broadcast, 2 multicast, 3 other host,
    4 outgoing), ``dst_mac``, ``src_mac``, ``ethertype``; for IPv4/IPv6: ``ip_version``,
    ``src_ip``, ``dst_ip``, ``proto`` (next header after IPv6 base header), ``hop_limit``;
    ``sport``/``dport`` for TCP/UDP; ``icmp_type``/``icmp_code`` for ICMP(v6); for ARP:
    ``arp_op``, ``arp_sender_mac``, ``arp_sender_ip``, ``arp_target_ip``; ``payload``
    (the L4 payload, or the L3 payload for other protocols).
    """

    __slots__ = ("raw", "time", "pkttype", "dst_mac", "src_mac", "ethertype", "ip_version",
                 "src_ip", "dst_ip", "proto", "hop_limit", "sport", "dport", "icmp_type",
                 "icmp_code", "arp_op", "arp_sender_mac", "arp_sender_ip", "arp_target_ip",
                 "payload")

    def __init__(self, raw: bytes, t: float = 0.0, pkttype: int = 0):
        for k in self.__slots__:
            setattr(self, k, None)
        self.raw, self.time, self.pkttype = raw, t, pkttype
        if len(raw) < 14:
            return
        self.dst_mac, self.src_mac = _mac_str(raw[0:6]), _mac_str(raw[6:12])
        et = struct.unpack("!H", raw[12:14])[0]
        off = 14
        if et == 0x8100 and len(raw) >= 18:
            et = struct.unpack("!H", raw[16:18])[0]
            off = 18
        self.ethertype = et
        l3 = raw[off:]
        try:
            if et == 0x0800 and len(l3) >= 20:
                ihl = (l3[0] & 0x0F) * 4
                self.ip_version, self.proto, self.hop_limit = 4, l3[9], l3[8]
                self.src_ip = socket.inet_ntop(socket.AF_INET, l3[12:16])
                self.dst_ip = socket.inet_ntop(socket.AF_INET, l3[16:20])
                self._l4(l3[ihl:], icmp=1)
            elif et == 0x86DD and len(l3) >= 40:
                self.ip_version, self.proto, self.hop_limit = 6, l3[6], l3[7]
                self.src_ip = socket.inet_ntop(socket.AF_INET6, l3[8:24])
                self.dst_ip = socket.inet_ntop(socket.AF_INET6, l3[24:40])
                l4 = l3[40:]
                if self.proto == 0 and len(l4) >= 8:  # hop-by-hop (MLD)
                    self.proto, l4 = l4[0], l4[(l4[1] + 1) * 8:]
                self._l4(l4, icmp=58)
            elif et == _ETH_P_ARP and len(l3) >= 28:
                self.arp_op = struct.unpack("!H", l3[6:8])[0]
                self.arp_sender_mac = _mac_str(l3[8:14])
                self.arp_sender_ip = socket.inet_ntop(socket.AF_INET, l3[14:18])
                self.arp_target_ip = socket.inet_ntop(socket.AF_INET, l3[24:28])
            else:
                self.payload = l3
        except (struct.error, ValueError, OSError):
            pass

    def _l4(self, l4: bytes, icmp: int):
        if self.proto in (6, 17) and len(l4) >= 4:
            self.sport, self.dport = struct.unpack("!HH", l4[:4])
            hl = 8 if self.proto == 17 else ((l4[12] >> 4) * 4 if len(l4) >= 13 else 20)
            self.payload = l4[hl:]
        elif self.proto == icmp and len(l4) >= 2:
            self.icmp_type, self.icmp_code = l4[0], l4[1]
            self.payload = l4[4:]
        else:
            self.payload = l4

    def __repr__(self):
        bits = [f"{self.src_mac}>{self.dst_mac}", f"0x{self.ethertype or 0:04x}"]
        if self.ip_version:
            bits.append(f"{self.src_ip}>{self.dst_ip} p{self.proto}")
        if self.icmp_type is not None:
            bits.append(f"icmp {self.icmp_type}/{self.icmp_code}")
        if self.sport is not None:
            bits.append(f"{self.sport}>{self.dport}")
        if self.arp_op:
            bits.append(f"arp op{self.arp_op} {self.arp_sender_ip}>{self.arp_target_ip}")
        return "<Frame " + " ".join(bits) + ">"


class Sniffer:
    """An AF_PACKET capture on one interface of a namespace, running from ``start()`` (it is
    capturing when ``start()`` returns) to ``stop()``, never longer than ``max_seconds``, never
    more than ``max_frames`` frames. A context manager."""

    def __init__(self, ns, ifname="eth0", *, max_seconds=30.0, max_frames=20000,
                 outgoing=True, registry=None):
        self.ns, self.ifname = ns, ifname
        self.max_seconds, self.max_frames = max_seconds, max_frames
        self.outgoing = outgoing
        self._reg = registry or _default_registry
        self._frames = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = None
        self._sock = None

    def start(self):
        """Begin capturing; returns self."""
        s = ns_socket(self.ns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL),
                      self._reg)
        try:
            s.bind((self.ifname, _ETH_P_ALL))
        except OSError as e:
            self._reg.close(s)
            raise LabError(f"sniff: cannot bind to {self.ifname!r} in {self.ns!r}: {e}") from None
        self._sock = s
        self._end = time.monotonic() + self.max_seconds
        self._thread = threading.Thread(target=self._run, name=f"sniff-{self.ns}", daemon=True)
        self._thread.start()
        return self

    def _run(self):
        s = self._sock
        try:
            while not self._stop.is_set() and time.monotonic() < self._end:
                if not _wait(s, min(self._end, time.monotonic() + 0.05)):
                    continue
                while True:
                    try:
                        data, addr = s.recvfrom(65536)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        return
                    pkttype = addr[2]
                    if pkttype == socket.PACKET_OUTGOING and not self.outgoing:
                        continue
                    with self._cond:
                        self._frames.append(Frame(data, time.monotonic(), pkttype))
                        self._cond.notify_all()
                        if len(self._frames) >= self.max_frames:
                            return
        finally:
            with self._cond:
                self._stop.set()
                self._cond.notify_all()

    def stop(self):
        """Stop capturing (idempotent); frames stay available."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._sock is not None:
            self._reg.close(self._sock)
            self._sock = None

    def frames(self, predicate=None) -> list:
        """The frames captured so far (optionally only those matching ``predicate``)."""
        with self._cond:
            fr = list(self._frames)
        return [f for f in fr if predicate is None or predicate(f)]

    def seen(self, predicate=None, timeout: float = 0.0) -> bool:
        """True if a frame matching ``predicate`` was captured, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        checked = 0
        with self._cond:
            while True:
                for f in self._frames[checked:]:
                    if predicate is None or predicate(f):
                        return True
                checked = len(self._frames)
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return False
                self._cond.wait(left)

    def __enter__(self):
        return self.start() if self._thread is None else self

    def __exit__(self, *exc):
        self.stop()


def send_frame(ns, frame: bytes, ifname="eth0", registry=None) -> None:
    """Send one raw Ethernet frame (destination MAC first, no FCS) out of ``ifname`` in ``ns``."""
    reg = registry or _default_registry
    s = ns_socket(ns, socket.AF_PACKET, socket.SOCK_RAW, 0, reg)
    try:
        s.bind((ifname, 0))
        s.setblocking(True)
        s.settimeout(1.0)
        s.send(frame)
    finally:
        reg.close(s)


def arp_request_frame(sender_mac: str, sender_ip: str, target_ip: str,
                      eth_src: str | None = None, eth_dst: str = "ff:ff:ff:ff:ff:ff",
                      op: int = 1, target_mac: str = "00:00:00:00:00:00") -> bytes:
    """An Ethernet frame carrying an ARP packet (request by default; ``op=2`` for a reply)."""
    eth = _mac_bytes(eth_dst) + _mac_bytes(eth_src or sender_mac) + struct.pack("!H", _ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op)
    arp += _mac_bytes(sender_mac) + socket.inet_aton(sender_ip)
    arp += _mac_bytes(target_mac) + socket.inet_aton(target_ip)
    return (eth + arp).ljust(60, b"\0")


def arp_probe(ns, target_ip, sender_mac, sender_ip, *, ifname="eth0", eth_src=None,
              timeout=1.0, registry=None) -> bool:
    """Send an ARP request for ``target_ip`` out of ``ifname`` (sender fields as given, so they
    may be spoofed) and return True if an ARP reply from ``target_ip`` to ``sender_ip`` arrives
    on that interface within ``timeout``."""
    reg = registry or _default_registry
    s = ns_socket(ns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ARP), reg)
    try:
        s.bind((ifname, _ETH_P_ARP))
        deadline = time.monotonic() + timeout
        s.send(arp_request_frame(sender_mac, sender_ip, target_ip, eth_src=eth_src))
        while _wait(s, deadline):
            try:
                data, addr = s.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                continue
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            f = Frame(data)
            if f.arp_op == 2 and f.arp_sender_ip == target_ip and f.arp_target_ip == sender_ip:
                return True
        return False
    finally:
        reg.close(s)


def send_icmpv6(ns, dst, icmp_type, code=0, body=b"", *, src=None, ifname="eth0",
                hop_limit=255, registry=None) -> None:
    """Send one ICMPv6 message (``body`` after type/code/checksum; the kernel fills the
    checksum) from ``ns`` to ``dst`` with hop limit ``hop_limit``; link-local and multicast
    destinations go out of ``ifname``."""
    reg = registry or _default_registry
    fam, addr = _sockaddr(ns, dst, 0, ifname)
    if fam != socket.AF_INET6:
        raise LabError(f"send_icmpv6: {dst!r} is not an IPv6 address")
    s = ns_socket(ns, socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6, reg)
    try:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, hop_limit)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, hop_limit)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        if addr[3]:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, addr[3])
        if src:
            _bind(s, ns, fam, src, 0, ifname)
        s.sendto(struct.pack("!BBH", icmp_type, code, 0) + body, addr)
    finally:
        reg.close(s)


def ra_body(prefix: str = "2001:db8:ffff::/64", router_lifetime: int = 0,
            src_mac: str | None = None) -> bytes:
    """The body of a router advertisement (after type/code/checksum) announcing ``prefix``
    (on-link, autonomous), with a source link-layer option if ``src_mac`` is given."""
    net = ipaddress.IPv6Network(prefix)
    body = struct.pack("!BBHII", 64, 0, router_lifetime, 0, 0)
    body += struct.pack("!BBBBIII", 3, 4, net.prefixlen, 0xC0, 3600, 1800, 0)
    body += net.network_address.packed
    if src_mac:
        body += struct.pack("!BB", 1, 1) + _mac_bytes(src_mac)
    return body
