"""Kernel encodings of fwsg's set/map elements, for the direct netlink element path.

An element's canonical nft text (``"tap1" . fa:16:3e:00:00:01 . 192.0.2.1``, ``0x00010000``,
``jump p1a2b-e``) becomes the bytes nf_tables stores: concatenated components each padded to
4 bytes, interface names as 16 NUL-padded bytes, addresses in network order, marks in host
order. Only the types fwsg uses are known; anything else is ``None`` (the caller then goes
through libnftables). No I/O here.
"""

import socket
import sys

_IFNAMSIZ = 16
WIDTH = {"ipv4_addr": 4, "ipv6_addr": 16, "mark": 4, "ifname": 16, "ether_addr": 6}


def _atom(typ, text):
    if typ == "ipv4_addr":
        return socket.inet_pton(socket.AF_INET, text)
    if typ == "ipv6_addr":
        return socket.inet_pton(socket.AF_INET6, text)
    if typ == "mark":
        return int(text, 16).to_bytes(4, sys.byteorder)
    if typ == "ifname":
        raw = text.strip('"').encode()
        if len(raw) >= _IFNAMSIZ:
            raise ValueError(text)
        return raw.ljust(_IFNAMSIZ, b"\0")
    if typ == "ether_addr":
        return bytes.fromhex(text.replace(":", ""))
    raise ValueError(typ)


def encodable(sdef):
    """True when elements of this set/map can take the direct path."""
    if sdef.interval:
        return False
    if any(t not in WIDTH for t in sdef.key_type.split(" . ")):
        return False
    return sdef.value_type in (None, "mark", "verdict")


def encode_key(key_type, text):
    """Key bytes of one element (components padded to 4 bytes when concatenated)."""
    types = key_type.split(" . ")
    if len(types) == 1:
        return _atom(types[0], text)
    parts = text.split(" . ")
    if len(parts) != len(types):
        raise ValueError(text)
    out = b""
    for typ, part in zip(types, parts):
        b = _atom(typ, part)
        out += b + b"\0" * (-len(b) % 4)
    return out


def encode_value(value_type, text):
    """A map value: bytes for a mark, the target chain (str) for ``jump CHAIN``."""
    if value_type == "mark":
        return _atom("mark", text)
    if value_type == "verdict" and text.startswith("jump "):
        return text[5:]
    raise ValueError(text)
