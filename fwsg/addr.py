"""Address canonicalisation: one textual form per address, prefix and link-local.

Canonical forms are what nft prints back: IPv4 dotted quad, IPv6 compressed lower-case
(``inet_ntop``), prefixes as ``network/len`` with host bits cleared. Addresses and prefixes
go through ``socket.inet_pton``/``inet_ntop`` (fast); unusual MAC spellings through netaddr.
No I/O here.
"""

import functools
import re
import socket

import netaddr

from fwsg.errors import ValidationError, short_repr

_AF = {4: socket.AF_INET, 6: socket.AF_INET6}


def canonical_ip(path, value):
    """Return the canonical text of a host address; raise ValidationError naming ``path``."""
    if isinstance(value, str):
        fam = socket.AF_INET6 if ":" in value else socket.AF_INET
        try:
            return socket.inet_ntop(fam, socket.inet_pton(fam, value))
        except (OSError, ValueError):
            pass
    raise ValidationError(path, f"{short_repr(value, 60)} is not an IP address")


def canonical_network(path, value):
    """Return ``net/len`` (host bits cleared) for a prefix or a bare address (as /32, /128)."""
    if isinstance(value, str) and value.count("/") <= 1:
        addr, _, plen = value.partition("/")
        if plen and not (plen.isascii() and plen.isdigit() and len(plen) <= 3):
            raise ValidationError(path, f"{short_repr(value, 60)} is not an IP prefix")
        try:
            ip = canonical_ip(path, addr)
        except ValidationError:
            pass
        else:
            fam, width = (socket.AF_INET6, 128) if ":" in ip else (socket.AF_INET, 32)
            bits = int(plen) if plen else width
            if bits <= width:
                host = int.from_bytes(socket.inet_pton(fam, ip), "big")
                net = host >> (width - bits) << (width - bits)
                return f"{socket.inet_ntop(fam, net.to_bytes(width // 8, 'big'))}/{bits}"
    raise ValidationError(path, f"{short_repr(value, 60)} is not an IP prefix")


def canonical_member(path, value):
    """A member address: a host address (canonical, no length) or a prefix shorter than a host
    (``net/len``); ``/32`` and ``/128`` become host addresses."""
    if isinstance(value, str) and "/" not in value:
        return canonical_ip(path, value)
    net = canonical_network(path, value)
    addr, plen = net.split("/")
    if int(plen) == (128 if ":" in addr else 32):
        return addr
    return net


def is_prefix(member):
    """True when a canonical member is a prefix rather than a host address."""
    return "/" in member


def family_of(member):
    """4 or 6 for a canonical address or prefix."""
    return 6 if ":" in member else 4


_CANONICAL_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_LINK_LOCAL = b"\xfe\x80" + bytes(6)


@functools.lru_cache(maxsize=65536)
def eui64_link_local(mac):
    """The IPv6 link-local address (fe80::/64, modified EUI-64) of a MAC, canonical. A MAC
    in the model's canonical form (``aa:bb:cc:dd:ee:ff``) is converted from its bytes; any
    other spelling goes through netaddr (same result)."""
    if isinstance(mac, str) and _CANONICAL_MAC.fullmatch(mac):
        raw = bytes.fromhex(mac.replace(":", ""))
        iid = bytes((raw[0] ^ 2,)) + raw[1:3] + b"\xff\xfe" + raw[3:]
        return socket.inet_ntop(socket.AF_INET6, _LINK_LOCAL + iid)
    return str(netaddr.EUI(mac).ipv6_link_local())


def pack(member):
    """Packed bytes of a canonical host address (4 or 16 bytes)."""
    return socket.inet_pton(_AF[family_of(member)], member)
