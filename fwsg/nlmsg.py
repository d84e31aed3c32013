"""Netlink message framing shared by fwsg's hand-packed nfnetlink clients (``ipsetnl``,
``ebnl``, ``nfdel``): the header layouts and attributes padded to 4 bytes, packed and walked.
No I/O here."""

import struct

NETLINK_NETFILTER = 12
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLMSG_ERROR = 2
NLA_F_NESTED = 0x8000

HDR = struct.Struct("=IHHII")    # nlmsghdr: len, type, flags, seq, pid
NFGEN = struct.Struct("=BBH")    # nfgenmsg: family, version, res_id
NLA = struct.Struct("=HH")       # nlattr: len, type


def attr(kind, payload):
    """One netlink attribute of type ``kind`` holding ``payload``, padded to 4 bytes."""
    n = NLA.size + len(payload)
    return NLA.pack(n, kind) + payload + b"\0" * (-n & 3)


def attrs(buf):
    """[(type, value)] of the netlink attributes packed in ``buf`` (the type with its flags);
    stops at a malformed length."""
    out, i = [], 0
    while i + NLA.size <= len(buf):
        n, kind = NLA.unpack_from(buf, i)
        if n < NLA.size:
            break
        out.append((kind, buf[i + NLA.size:i + n]))
        i += (n + 3) & ~3
    return out


def nest(kind, *parts):
    """A nested attribute of type ``kind`` holding the attributes ``parts``."""
    return attr(kind | NLA_F_NESTED, b"".join(parts))
