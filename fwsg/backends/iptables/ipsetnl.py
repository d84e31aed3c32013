"""ipset element changes over one raw netfilter netlink socket (the ipset protocol, version 7).

The hot path of a member change: an ADD or DEL message per element of a ``hash:net`` set,
packed with ``struct`` and sent on a socket opened once inside the namespace; every message
asks for an acknowledgement, and several go out in one ``send`` (the kernel answers each in
turn). No process, no event loop, no generic message objects.

Without ``NLM_F_EXCL`` the kernel takes an element already present (add) or already gone
(del) as success, as ``ipset -exist`` does.
"""

import ipaddress
import os
import socket
import struct

from fwsg.errors import KernelError
from fwsg.netns import entered
from fwsg import nlmsg
from fwsg.nlmsg import HDR as _HDR, NFGEN as _NFGEN, attr as _attr
from fwsg.nlmsg import NETLINK_NETFILTER, NLA_F_NESTED

NFNL_SUBSYS_IPSET = 6
CMD_LIST, CMD_ADD, CMD_DEL = 7, 9, 10
PROTOCOL = 7
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
ATTR_FLAGS, FLAG_LIST_SETNAME = 6, 0x2
NLA_F_NET_BYTEORDER = 0x4000
# attribute types: top level, inside IPSET_ATTR_DATA, inside IPSET_ATTR_IP
ATTR_PROTOCOL, ATTR_SETNAME, ATTR_DATA = 1, 2, 7
ATTR_IP, ATTR_CIDR = 1, 3
ATTR_IPADDR_IPV4, ATTR_IPADDR_IPV6 = 1, 2
# the kernel's own error numbers (include/uapi/linux/netfilter/ipset/ip_set.h), for messages
_IPSET_ERRORS = {2: "the set does not exist", 4097: "protocol error (wrong family?)",
                 4104: "invalid prefix length", 4106: "wrong address family",
                 4352: "hash is full (maxelem reached)"}


def element(name, entry):
    """(address family, the attribute bytes after nfgenmsg) of ``entry`` (``ADDR/LEN``) in set
    ``name``; ValueError for an entry that is not an address prefix."""
    net = ipaddress.ip_network(entry, strict=False)
    if net.version == 4:
        family, ip = socket.AF_INET, _attr(ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER,
                                           net.network_address.packed)
    else:
        family, ip = socket.AF_INET6, _attr(ATTR_IPADDR_IPV6 | NLA_F_NET_BYTEORDER,
                                            net.network_address.packed)
    data = _attr(ATTR_IP | NLA_F_NESTED, ip) + _attr(ATTR_CIDR, bytes((net.prefixlen,)))
    return family, (_attr(ATTR_PROTOCOL, bytes((PROTOCOL,)))
                    + _attr(ATTR_SETNAME, name.encode() + b"\0")
                    + _attr(ATTR_DATA | NLA_F_NESTED, data))


class IpsetSocket:
    """A netfilter netlink socket opened once in ``netns``; :meth:`change` adds or deletes
    elements of a set and returns once the kernel acknowledged every one of them."""

    BATCH = 256   # messages per send (the receive buffer holds their acknowledgements)

    def __init__(self, netns=None):
        self.netns = netns
        self._sock = None
        self._seq = 0

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _socket(self):
        if self._sock is None:
            with entered(self.netns):
                s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            s.bind((0, 0))
            s.settimeout(30)   # an answer the kernel never sends ends as an error, not a hang
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self._sock = s
        return self._sock

    def change(self, name, entries, add):
        """Add (or delete) every ``ADDR/LEN`` of ``entries`` in set ``name``; KernelError
        naming the set, the element and the kernel's reason for the first one refused (the
        others of its batch are still applied, as the ``ipset`` tool does element by
        element)."""
        kind = (NFNL_SUBSYS_IPSET << 8) | (CMD_ADD if add else CMD_DEL)
        entries = list(entries)
        for i in range(0, len(entries), self.BATCH):
            self._batch(name, kind, entries[i:i + self.BATCH])

    def _batch(self, name, kind, entries):
        sock = self._socket()
        msgs, sent = [], {}
        for e in entries:
            try:
                family, body = element(name, e)
            except ValueError:
                raise KernelError(f"ipset {name}: {e!r} is not an address prefix") from None
            self._seq = (self._seq + 1) & 0xFFFFFFFF
            payload = _NFGEN.pack(family, 0, 0) + body
            msgs.append(_HDR.pack(_HDR.size + len(payload), kind, NLM_F_REQUEST | NLM_F_ACK,
                                  self._seq, 0) + payload)
            sent[self._seq] = e
        try:
            sock.send(b"".join(msgs))
            first = None
            while sent:
                data = sock.recv(1 << 16)
                off = 0
                while off + _HDR.size <= len(data):
                    length, mtype, _, seq, _ = _HDR.unpack_from(data, off)
                    if mtype == NLMSG_ERROR and seq in sent:
                        err = -struct.unpack_from("=i", data, off + _HDR.size)[0]
                        entry = sent.pop(seq)
                        if err and first is None:
                            first = (entry, err)
                    off += max(length + (-length & 3), _HDR.size)
        except OSError as e:
            self.close()
            raise KernelError(f"ipset {name}: netlink: {e}") from None
        if first is not None:
            entry, err = first
            why = _IPSET_ERRORS.get(err) or os.strerror(err)
            raise KernelError(f"ipset {name}: {entry} refused: {why}")


def set_names(netns=None):
    """The names of every ipset in ``netns`` (what ``ipset list -n`` prints), asked over one
    netlink dump: no process. KernelError when the kernel refuses the dump or it cannot be
    read (the caller may then ask the ``ipset`` tool)."""
    with entered(netns):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.bind((0, 0))
        sock.settimeout(30)
        payload = (_NFGEN.pack(socket.AF_INET, 0, 0) + _attr(ATTR_PROTOCOL, bytes((PROTOCOL,)))
                   + _attr(ATTR_FLAGS | NLA_F_NET_BYTEORDER, struct.pack(">I", FLAG_LIST_SETNAME)))
        kind = (NFNL_SUBSYS_IPSET << 8) | CMD_LIST
        sock.send(_HDR.pack(_HDR.size + len(payload), kind, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
                  + payload)
        names = []
        while True:
            data = sock.recv(1 << 16)
            off = 0
            while off + _HDR.size <= len(data):
                length, mtype, _, seq, _ = _HDR.unpack_from(data, off)
                if length < _HDR.size:
                    raise KernelError("ipset list: netlink: a malformed answer")
                if seq == 1 and mtype == NLMSG_DONE:
                    return names
                if seq == 1 and mtype == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", data, off + _HDR.size)[0]
                    if err:
                        raise KernelError("ipset list: " + (_IPSET_ERRORS.get(err)
                                                            or os.strerror(err)))
                elif seq == 1 and mtype == kind:
                    names += _setnames(data[off + _HDR.size + _NFGEN.size:off + length])
                off += max(length + (-length & 3), _HDR.size)
    except OSError as e:
        raise KernelError(f"ipset list: netlink: {e}") from None
    finally:
        sock.close()


def _setnames(attrs):
    """The IPSET_ATTR_SETNAME values among the attributes ``attrs`` of one message."""
    return [bytes(value).split(b"\0", 1)[0].decode() for kind, value in nlmsg.attrs(attrs)
            if kind & 0x3FFF == ATTR_SETNAME]
