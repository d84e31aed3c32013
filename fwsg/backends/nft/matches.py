"""The rules of fwsg's group chains as nf_tables expressions, for the netlink writer.

``encode(text)`` turns one rule, as ``rules.render_rule`` writes it, into the expressions
nft itself would send for it (the same bytecode, so listing it back gives the same text):
the protocol-family check, at most one address match (a prefix, or a set lookup), then
``meta l4proto N``, an ICMP type, or a source or destination port (or range), then ``accept``
or ``return``. Anything else raises ValueError and the caller leaves the rule to
libnftables. No I/O here.
"""

import functools
import ipaddress
import re

META_NFPROTO, META_L4PROTO = 15, 16           # enum nft_meta_keys
CMP_EQ, CMP_LTE, CMP_GTE = 0, 3, 5            # enum nft_cmp_ops
NETWORK, TRANSPORT = 1, 2                     # enum nft_payload_bases
ACCEPT, RETURN = 1, -5                        # NF_ACCEPT, NFT_RETURN
_NFPROTO = {4: 2, 6: 10}                      # NFPROTO_IPV4, NFPROTO_IPV6
_PORT_PROTOS = {"tcp": 6, "udp": 17, "dccp": 33, "sctp": 132, "udplite": 136}
_ADDR_OFFSET = {(4, "saddr"): 12, (4, "daddr"): 16, (6, "saddr"): 8, (6, "daddr"): 24}
_SET = re.compile(r"^@([a-z0-9][a-z0-9-]*)$")


def _port_range(text):
    lo, _, hi = text.partition("-")
    lo, hi = int(lo), int(hi or lo)
    if not 0 <= lo <= hi <= 65535:
        raise ValueError(text)
    return lo, hi


def _address(fam, key, value):
    """Expressions matching ``ip/ip6 saddr/daddr value`` (a prefix or @set)."""
    offset = _ADDR_OFFSET[(fam, key)]
    width = 4 if fam == 4 else 16
    m = _SET.match(value)
    if m:
        return [("payload", NETWORK, offset, width), ("lookup", m.group(1))]
    net = ipaddress.ip_network(value)
    if net.version != fam or net.prefixlen == 0:
        raise ValueError(value)
    packed = net.network_address.packed
    if net.prefixlen % 8 == 0:
        n = net.prefixlen // 8
        return [("payload", NETWORK, offset, n), ("cmp", CMP_EQ, packed[:n])]
    mask = net.netmask.packed
    return [("payload", NETWORK, offset, width), ("bitwise", mask, bytes(width)),
            ("cmp", CMP_EQ, packed)]


@functools.lru_cache(maxsize=65536)
def encode(text):
    """The expressions of one rule of a group chain (see the module docstring), a tuple;
    rules seen before come from a bounded cache (a group's rules are re-sent whole)."""
    words = text.split()
    out, fam, addressed, i = [], None, False, 0
    while i < len(words):
        w = words[i]
        if w in ("ip", "ip6") and i + 2 < len(words) and words[i + 1] in ("saddr", "daddr"):
            f = 4 if w == "ip" else 6
            if addressed or (fam is not None and fam != f):
                raise ValueError(text)
            if fam is None:
                out += [("meta", META_NFPROTO), ("cmp", CMP_EQ, bytes([_NFPROTO[f]]))]
            fam, addressed = f, True
            out += _address(f, words[i + 1], words[i + 2])
            i += 3
        elif w == "meta" and i + 2 < len(words) and words[i + 1] == "nfproto":
            f = {"ipv4": 4, "ipv6": 6}.get(words[i + 2])
            if f is None or fam is not None:
                raise ValueError(text)
            fam = f
            out += [("meta", META_NFPROTO), ("cmp", CMP_EQ, bytes([_NFPROTO[f]]))]
            i += 3
        else:
            break
    rest = words[i:]
    if fam is None and rest not in (["accept"], ["return"]):
        raise ValueError(text)
    if rest[:2] == ["meta", "l4proto"] and len(rest) >= 3:
        out += [("meta", META_L4PROTO), ("cmp", CMP_EQ, bytes([int(rest[2]) & 0xff]))]
        if not 0 <= int(rest[2]) <= 255:
            raise ValueError(text)
        rest = rest[3:]
    elif rest[:1] in (["icmp"], ["icmpv6"]) and rest[1:2] == ["type"] and len(rest) >= 3:
        if (rest[0] == "icmp") != (fam == 4):
            raise ValueError(text)
        itype = int(rest[2])
        if not 0 <= itype <= 255 or rest[3:4] in (["icmp"], ["icmpv6"]):
            raise ValueError(text)   # a code too: nft merges the two loads
        out += [("meta", META_L4PROTO), ("cmp", CMP_EQ, bytes([1 if fam == 4 else 58])),
                ("payload", TRANSPORT, 0, 1), ("cmp", CMP_EQ, bytes([itype]))]
        rest = rest[3:]
    elif rest[:1] and rest[0] in _PORT_PROTOS and len(rest) >= 3 and rest[1] in ("sport",
                                                                                  "dport"):
        if rest[3:4] == [rest[0]]:
            raise ValueError(text)   # source and destination port: nft may merge the loads
        lo, hi = _port_range(rest[2])
        out += [("meta", META_L4PROTO), ("cmp", CMP_EQ, bytes([_PORT_PROTOS[rest[0]]])),
                ("payload", TRANSPORT, 0 if rest[1] == "sport" else 2, 2)]
        if lo == hi:
            out.append(("cmp", CMP_EQ, lo.to_bytes(2, "big")))
        else:
            out += [("cmp", CMP_GTE, lo.to_bytes(2, "big")),
                    ("cmp", CMP_LTE, hi.to_bytes(2, "big"))]
        rest = rest[3:]
    if rest == ["accept"]:
        out.append(("verdict", ACCEPT))
    elif rest == ["return"]:
        out.append(("verdict", RETURN))
    else:
        raise ValueError(text)
    return tuple(out)
