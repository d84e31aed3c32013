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
import socket
import sys

META_NFPROTO, META_L4PROTO = 15, 16           # enum nft_meta_keys
CMP_EQ, CMP_LTE, CMP_GTE = 0, 3, 5            # enum nft_cmp_ops
NETWORK, TRANSPORT = 1, 2                     # enum nft_payload_bases
ACCEPT, RETURN = 1, -5                        # NF_ACCEPT, NFT_RETURN
NFPROTO = {4: 2, 6: 10}                      # NFPROTO_IPV4, NFPROTO_IPV6
PORT_PROTOS = {"tcp": 6, "udp": 17, "dccp": 33, "sctp": 132, "udplite": 136}
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
    packed, plen = _prefix(fam, value)
    if plen % 8 == 0:
        n = plen // 8
        return [("payload", NETWORK, offset, n), ("cmp", CMP_EQ, packed[:n])]
    mask = ((1 << width * 8) - (1 << width * 8 - plen)).to_bytes(width, "big")
    return [("payload", NETWORK, offset, width), ("bitwise", mask, bytes(width)),
            ("cmp", CMP_EQ, packed)]


def _prefix(fam, value):
    """(network address bytes, length) of the prefix ``value`` of family ``fam`` (host bits
    clear, length not 0); ValueError otherwise. A prefix as fwsg writes it (canonical
    ``addr/len``) is read with ``inet_pton``; any other spelling through ``ipaddress``."""
    addr, _, plen = value.partition("/")
    af = socket.AF_INET if fam == 4 else socket.AF_INET6
    try:
        packed = socket.inet_pton(af, addr)
    except OSError:
        packed = None
    if packed is not None and plen.isascii() and plen.isdigit() and plen == str(int(plen)) \
            and socket.inet_ntop(af, packed) == addr:
        bits, width = int(plen), len(packed) * 8
        if 0 < bits <= width and int.from_bytes(packed, "big") & ((1 << width - bits) - 1) == 0:
            return packed, bits
    net = ipaddress.ip_network(value)
    if net.version != fam or net.prefixlen == 0:
        raise ValueError(value)
    return net.network_address.packed, net.prefixlen


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
            if addressed == words[i + 1] or (fam is not None and fam != f):
                raise ValueError(text)
            if fam is None:
                out += [("meta", META_NFPROTO), ("cmp", CMP_EQ, bytes([NFPROTO[f]]))]
            fam, addressed = f, words[i + 1]
            out += _address(f, words[i + 1], words[i + 2])
            i += 3
        elif w == "meta" and i + 2 < len(words) and words[i + 1] == "nfproto":
            f = {"ipv4": 4, "ipv6": 6}.get(words[i + 2])
            if f is None or fam is not None:
                raise ValueError(text)
            fam = f
            out += [("meta", META_NFPROTO), ("cmp", CMP_EQ, bytes([NFPROTO[f]]))]
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
        kw, itype = rest[0], int(rest[2])
        out += [("meta", META_L4PROTO), ("cmp", CMP_EQ, bytes([1 if fam == 4 else 58]))]
        rest = rest[3:]
        if rest[:2] == [kw, "code"] and len(rest) >= 3:
            code = int(rest[2])   # nft merges the two loads into one
            out += [("payload", TRANSPORT, 0, 2), ("cmp", CMP_EQ, bytes([itype, code]))]
            rest = rest[3:]
        else:
            out += [("payload", TRANSPORT, 0, 1), ("cmp", CMP_EQ, bytes([itype]))]
    elif rest[:1] and rest[0] in PORT_PROTOS and len(rest) >= 3 and rest[1] in ("sport",
                                                                                  "dport"):
        out += [("meta", META_L4PROTO), ("cmp", CMP_EQ, bytes([PORT_PROTOS[rest[0]]]))]
        ports = [(rest[1], _port_range(rest[2]))]
        if rest[1] == "sport" and rest[3:5] == [rest[0], "dport"] and len(rest) >= 6:
            ports.append(("dport", _port_range(rest[5])))
        rest = rest[3 * len(ports):]
        if len(ports) == 2 and all(lo == hi for _, (lo, hi) in ports):
            # source and destination port, both exact: nft merges the two loads into one
            out += [("payload", TRANSPORT, 0, 4),
                    ("cmp", CMP_EQ, b"".join(lo.to_bytes(2, "big") for _, (lo, _) in ports))]
        else:
            for key, (lo, hi) in ports:
                out.append(("payload", TRANSPORT, 0 if key == "sport" else 2, 2))
                if lo == hi:
                    out.append(("cmp", CMP_EQ, lo.to_bytes(2, "big")))
                else:
                    out += [("cmp", CMP_GTE, lo.to_bytes(2, "big")),
                            ("cmp", CMP_LTE, hi.to_bytes(2, "big"))]
    if rest == ["accept"]:
        out.append(("verdict", ACCEPT))
    elif rest == ["return"]:
        out.append(("verdict", RETURN))
    else:
        raise ValueError(text)
    return tuple(out)


# -- the layout's own rules (base chains, fixed chains, anti-spoofing, zones) -----------------

META_MARK, META_IIFNAME, META_OIFNAME = 3, 6, 7   # enum nft_meta_keys
CT_STATE, CT_ZONE = 0, 17                          # enum nft_ct_keys
CMP_NEQ, LINK, LOOKUP_INV = 1, 0, 1
DROP, JUMP = 0, -3                                 # NF_DROP, NFT_JUMP
REG_VERDICT = 0
_CT_STATES = {"invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 64}
_ICMP6 = {"mld-listener-query": 130, "mld-listener-report": 131, "nd-router-advert": 134,
          "nd-neighbor-solicit": 135, "nd-neighbor-advert": 136, "mld2-listener-report": 143}
# NEWSET userdata nft 1.0.6 writes for an anonymous set of ICMPv6 types (key byte order, typeof)
ICMP6_SET_UDATA = bytes.fromhex("0004020000000314000407000000010c00040e000000010401000000")
TYPE_ICMP6_TYPE = 29
_VERDICTS = {"accept": ("verdict", ACCEPT), "drop": ("verdict", DROP),
             "return": ("verdict", RETURN)}
_LOADS = {   # operand -> its load (payload base, offset, length) or meta key
    "iifname": ("meta", META_IIFNAME), "oifname": ("meta", META_OIFNAME),
    "meta mark": ("meta", META_MARK),
    "ether saddr": ("payload", LINK, 6, 6), "ether daddr": ("payload", LINK, 0, 6),
    "ip saddr": ("payload", NETWORK, 12, 4), "ip daddr": ("payload", NETWORK, 16, 4),
    "ip6 saddr": ("payload", NETWORK, 8, 16), "ip6 daddr": ("payload", NETWORK, 24, 16),
    "arp saddr ether": ("payload", NETWORK, 8, 6), "arp saddr ip": ("payload", NETWORK, 14, 4),
    "meta nfproto": ("meta", META_NFPROTO), "meta l4proto": ("meta", META_L4PROTO),
    "th dport": ("payload", TRANSPORT, 2, 2),
}
_META_WIDTH = {META_IIFNAME: 16, META_OIFNAME: 16, META_MARK: 4, META_NFPROTO: 1,
               META_L4PROTO: 1}
REG32_00 = 8                                       # NFT_REG32_00: the 4-byte registers


def _concat_regs(operands):
    """The register each part of a concatenation is loaded into, as nft allocates them: at
    its offset in 4-byte words from NFT_REG_1, named as a 16-byte register when aligned."""
    regs, words = [], 0
    for op in operands:
        kind = _LOADS[op]
        regs.append(1 + words // 4 if words % 4 == 0 else REG32_00 + words)
        width = _META_WIDTH[kind[1]] if kind[0] == "meta" else kind[3]
        words += (width + 3) // 4
    return regs


_ETHERTYPE = {"ip": b"\x08\x00", "ip6": b"\x86\xdd", "arp": b"\x08\x06"}


def _mark(text):
    return int(text, 16).to_bytes(4, sys.byteorder)


def _load(operand, reg=1):
    kind = _LOADS[operand]
    if kind[0] == "meta":
        return ("meta", kind[1], reg)
    return kind + (reg,)


def _l3_check(family, operand, out, ctx):
    """In the inet family an ``ip``/``ip6`` operand implies ``meta nfproto`` (nft sends the
    check once per rule, before the first such load)."""
    l3 = operand.split()[0]
    if family == "inet" and l3 in ("ip", "ip6") and ctx.get("l3") != l3:
        out += [("meta", META_NFPROTO), ("cmp", CMP_EQ, bytes([NFPROTO[4 if l3 == "ip" else 6]]))]
        ctx["l3"] = l3


def _meta_mark(words, out):
    """``meta mark [& MASK] [== V | != V | V | @SET | != @SET]`` at the head of ``words``;
    the words left."""
    out.append(("meta", META_MARK))
    words = words[2:]
    if words[:1] == ["&"]:
        out.append(("bitwise", _mark(words[1]), bytes(4)))
        words = words[2:]
    if words[:1] == ["!="] and _SET.match(words[1]):
        out.append(("lookup", words[1][1:], 1, -1, LOOKUP_INV))
        words = words[2:]
    elif words[:1] in (["=="], ["!="]):
        out.append(("cmp", CMP_EQ if words[0] == "==" else CMP_NEQ, _mark(words[1])))
        words = words[2:]
    elif words and words[0].startswith("0x"):
        out.append(("cmp", CMP_EQ, _mark(words[0])))
        words = words[1:]
    elif words and _SET.match(words[0]):
        out.append(("lookup", words[0][1:], 1, -1, 0))
        words = words[1:]
    return words


_SETTERS = {("meta", "mark", "set"): ("metaset", META_MARK),
            ("ct", "zone", "set"): ("ctset", CT_ZONE)}


def _set_from_map(family, words, out, ctx, target):
    """``meta mark set OPERAND map @M`` / ``ct zone set OPERAND map @M`` at the head of
    ``words`` (OPERAND one or two words: ``iifname``, ``ip daddr``, ``meta mark``): the
    operand looked up in data map ``M``, its value set as ``target`` (("metaset", key) or
    ("ctset", key)); the words left."""
    two = words[4] != "map"
    operand = " ".join(words[3:5]) if two else words[3]
    rest = words[5:] if two else words[4:]
    if rest[:1] != ["map"] or len(rest) < 2 or not _SET.match(rest[1]):
        raise ValueError(" ".join(words))
    _l3_check(family, operand, out, ctx)
    out += [_load(operand), ("lookup", rest[1][1:], 1, 1), target + (1,)]
    return rest[2:]


def _statement(family, words, out, ctx):
    """Encode the statement at the head of ``words`` into ``out``; the words left."""
    w = words[0]
    target = _SETTERS.get(tuple(words[:3]))
    if target and "map" in words[4:6]:
        return _set_from_map(family, words, out, ctx, target)
    if words[:2] == ["meta", "mark"]:
        return _meta_mark(words, out)
    if w == "vmap" and _SET.match(words[1]):   # the value loaded just before picks the verdict
        out.append(("lookup", words[1][1:], 1, REG_VERDICT))
        return words[2:]
    if words[:2] == ["meta", "l4proto"] and words[2] == "ipv6-icmp":
        out += [("meta", META_L4PROTO), ("cmp", CMP_EQ, bytes([58]))]
        return words[3:]
    if words[:2] == ["ct", "state"]:
        bits = sum(_CT_STATES[x] for x in words[2].split(","))
        out += [("ct", CT_STATE, 1), ("bitwise", bits.to_bytes(4, sys.byteorder), bytes(4)),
                ("cmp", CMP_NEQ, bytes(4))]
        return words[3:]
    if words[:3] == ["ct", "zone", "set"]:
        out += [("imm", 1, int(words[3]).to_bytes(2, sys.byteorder)), ("ctset", CT_ZONE, 1)]
        return words[4:]
    if words[:2] == ["ether", "type"]:
        out += [("payload", LINK, 12, 2), ("cmp", CMP_EQ, _ETHERTYPE[words[2]])]
        ctx["l3"] = words[2]
        return words[3:]
    if words[:6] == ["arp", "htype", "1", "arp", "ptype", "ip"]:
        out += [("payload", NETWORK, 0, 4), ("cmp", CMP_EQ, b"\x00\x01\x08\x00")]
        return words[6:]
    if words[:2] == ["icmpv6", "type"]:
        if family == "inet" and ctx.get("l3") != "ip6":
            out += [("meta", META_NFPROTO), ("cmp", CMP_EQ, bytes([NFPROTO[6]]))]
        out += [("meta", META_L4PROTO), ("cmp", CMP_EQ, bytes([58])),
                ("payload", TRANSPORT, 0, 1)]
        if words[2] != "{":
            out.append(("cmp", CMP_EQ, bytes([_ICMP6[words[2]]])))
            return words[3:]
        end = words.index("}")
        types = [_ICMP6[t.rstrip(",")] for t in words[3:end]]
        out.append(("anonlookup", 1, TYPE_ICMP6_TYPE, 1, ICMP6_SET_UDATA,
                    tuple(bytes([t]) for t in types)))
        return words[end + 1:]
    if family == "inet" and w in ("ip", "ip6") and words[2:3] == ["vmap"]:
        out += [("meta", META_NFPROTO), ("cmp", CMP_EQ, bytes([NFPROTO[4 if w == "ip" else 6]])),
                _load(f"{w} {words[1]}"), ("lookup", words[3][1:], 1, REG_VERDICT)]
        return words[4:]
    if w == "meta" and words[1:2] == ["nfproto"] and words[2:3] != ["."] or w in ("udp",):
        if w == "meta":
            f = {"ipv4": 4, "ipv6": 6}[words[2]]
            out += [("meta", META_NFPROTO), ("cmp", CMP_EQ, bytes([NFPROTO[f]]))]
            words = words[3:]
        if words[:1] != ["udp"] or words[1] != "sport" or words[3:5] != ["udp", "dport"]:
            raise ValueError(" ".join(words))
        ports = int(words[2]).to_bytes(2, "big") + int(words[5]).to_bytes(2, "big")
        out += [("meta", META_L4PROTO), ("cmp", CMP_EQ, bytes([17])),
                ("payload", TRANSPORT, 0, 4), ("cmp", CMP_EQ, ports)]
        return words[6:]
    # an operand or a concatenation, then a set lookup (@S, != @S) or a value
    operands, i = [], 0
    while True:
        for n in (3, 2, 1):
            if " ".join(words[i:i + n]) in _LOADS:
                operands.append(" ".join(words[i:i + n]))
                i += n
                break
        else:
            raise ValueError(" ".join(words))
        if words[i:i + 1] != ["."]:
            break
        i += 1
    inverted = words[i] == "!="
    i += inverted
    target = words[i]
    m = _SET.match(target)
    if m:
        _l3_check(family, operands[0], out, ctx)
        regs = _concat_regs(operands) if len(operands) > 1 else (1,)
        out += [_load(op, reg) for op, reg in zip(operands, regs)]
        out.append(("lookup", m.group(1), 1, -1, LOOKUP_INV if inverted else 0))
        return words[i + 1:]
    if len(operands) != 1 or inverted:
        raise ValueError(" ".join(words))
    value = ipaddress.ip_address(target).packed
    out += [_load(operands[0]), ("cmp", CMP_EQ, value)]
    return words[i + 1:]


@functools.lru_cache(maxsize=1024)
def encode_layout(family, text):
    """The expressions of one of the layout's own rules (:mod:`fwsg.backends.nft.layout`:
    base chains, fixed chains, anti-spoofing, zones), as nft 1.0.6 sends them; ValueError
    for any other rule."""
    words, out, ctx = text.replace("{", "{ ").replace("}", " }").split(), [], {}
    if words[-2:-1] == ["jump"]:
        verdict = ("verdict", JUMP, words[-1])
        words = words[:-2]
    elif words and words[-1] in _VERDICTS:
        verdict = _VERDICTS[words[-1]]
        words = words[:-1]
    else:
        verdict = None
    try:
        while words:
            words = _statement(family, words, out, ctx)
    except (KeyError, IndexError) as e:
        raise ValueError(text) from e
    if verdict is not None:
        out.append(verdict)
    return tuple(out)
