"""ebtables' nat table (``ebtables-nft``: nf_tables, family bridge) changed in-process over one
nfnetlink socket, without an ``ebtables-nft-restore`` process: the chains and rules a port
addition writes, as one atomic batch.

fwsg's ebtables rules are few forms (``rules.arp_rules``, the dispatch jumps): ``-i DEV -j
CHAIN``, ``-p ARP [-s MAC] [--arp-ip-src IP] [--arp-mac-src MAC] -j VERDICT``, ``-s MAC -j
VERDICT``. :func:`rule_body` packs each as ebtables-nft 1.8 does, message for message (the
same expressions in the same order - interface name and MAC compared by ``meta``/``payload``
and ``cmp``, the ARP fields by the ``arp`` match of ``nft_compat``, a ``counter``, the
verdict - and the same ``compat`` attribute), so ``ebtables-nft-save`` reads back exactly
what the restore tool would have left. A change holding anything else (deletions, hooks, a
chain that may already exist, another rule form) is not packed (:func:`steps` gives None) and
goes through ``ebtables-nft-restore`` as before. No I/O but in :class:`EbSocket`.
"""

import functools
import ipaddress
import os
import re
import socket
import struct

from fwsg.errors import KernelError
from fwsg.netns import entered
from fwsg.nlmsg import HDR as _HDR, NFGEN as _NFGEN, NETLINK_NETFILTER
from fwsg.nlmsg import attr as _attr, nest as _nest

NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE = 3, 6
NFPROTO_BRIDGE = 7
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 0x1, 0x4, 0x200, 0x400, 0x800
NLMSG_ERROR = 2
ETH_P_ARP = 0x0806
MAX_RULES = 64        # a port's change writes fewer; a bigger one goes through the tool
TABLE = "nat"
# verdict codes (linux/netfilter.h, nf_tables.h)
_VERDICTS = {"ACCEPT": 1, "DROP": 0, "RETURN": -5}
NFT_JUMP = -3
# ebt_arp_info.bitmask
_ARP_SRC_IP, _ARP_SRC_MAC = 0x08, 0x20



class NotEncodable(Exception):
    """A rule or change outside what this module packs (the caller uses ebtables-restore)."""


def _u32(v):
    return struct.pack(">I", v & 0xFFFFFFFF)


def _str(text):
    return text.encode() + b"\0"


def _expr(name, *data):
    # NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA { ... } }
    return _nest(1, _attr(1, _str(name)), _nest(2, *data))


@functools.lru_cache(maxsize=1024)
def _cmp_eq(value):
    # NFTA_CMP_SREG 1, NFTA_CMP_OP eq, NFTA_CMP_DATA { NFTA_DATA_VALUE }
    return _expr("cmp", _attr(1, _u32(1)), _attr(2, _u32(0)), _nest(3, _attr(1, value)))


def _link(offset, length):
    # NFTA_PAYLOAD_DREG 1, BASE link layer, OFFSET, LEN
    return _expr("payload", _attr(1, _u32(1)), _attr(2, _u32(0)), _attr(3, _u32(offset)),
                 _attr(4, _u32(length)))


@functools.lru_cache(maxsize=1024)
def _iifname(name):
    """``-i NAME``: the name and its NUL compared, or (``NAME+``) the name only."""
    raw = name.encode()
    if not raw or len(raw) >= 16 or raw == b"+":
        raise NotEncodable(f"-i {name}")
    value = raw[:-1] if raw.endswith(b"+") else raw + b"\0"
    # NFTA_META_KEY iifname (6), NFTA_META_DREG 1
    return _expr("meta", _attr(2, _u32(6)), _attr(1, _u32(1))) + _cmp_eq(value)


_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")


def _mac(text):
    if not _MAC.fullmatch(text):
        raise NotEncodable(text)   # not a MAC as ebtables-save prints it
    return bytes.fromhex(text.replace(":", ""))


def _ipv4(text):
    """(address, mask) of ``--arp-ip-src``: a host as ebtables-save prints it (no prefix)."""
    try:
        addr = ipaddress.IPv4Address(text)
    except ValueError:
        raise NotEncodable(text) from None
    return addr.packed, b"\xff" * 4


def _arp_info(ip, mac):
    """struct ebt_arp_info (52 bytes, padded to 56 as XT_ALIGN does): htype, ptype, opcode,
    (2 bytes of padding,) saddr, smsk, daddr, dmsk, smaddr, smmsk, dmaddr, dmmsk, bitmask,
    invflags."""
    bits = (_ARP_SRC_IP if ip else 0) | (_ARP_SRC_MAC if mac else 0)
    saddr, smsk = ip or (b"\0" * 4, b"\0" * 4)
    smaddr, smmsk = (mac, b"\xff" * 6) if mac else (b"\0" * 6, b"\0" * 6)
    info = struct.pack("=HHH2x4s4s4s4s6s6s6s6sBB", 0, 0, 0, saddr, smsk, b"", b"", smaddr,
                       smmsk, b"", b"", bits, 0)
    return info.ljust(56, b"\0")


@functools.lru_cache(maxsize=1024)
def _verdict(target):
    if target in _VERDICTS:
        code = _attr(1, _u32(_VERDICTS[target]))
    elif target.startswith("fwsg-") and len(target.encode()) < 32:
        code = _attr(1, _u32(NFT_JUMP)) + _attr(2, _str(target))
    else:
        raise NotEncodable(f"-j {target}")
    # NFTA_IMMEDIATE_DREG verdict (0), NFTA_IMMEDIATE_DATA { NFTA_DATA_VERDICT { code [chain] } }
    return _expr("immediate", _attr(1, _u32(0)), _nest(2, _nest(2, code)))


_COUNTER = _expr("counter", _attr(1, b"\0" * 8), _attr(2, b"\0" * 8))
_SRC_MAC = _link(6, 6)                                   # then cmp with the MAC
_IS_ARP = _link(12, 2) + _cmp_eq(struct.pack(">H", ETH_P_ARP))
# NFTA_RULE_COMPAT { PROTO, FLAGS }: the protocol the arp match checks (ebt_entry.ethproto:
# the network-order u16 as a host integer), none for the other rules
_COMPAT = {True: _nest(5, _attr(1, _u32(struct.unpack("=H", struct.pack(">H", ETH_P_ARP))[0])),
                       _attr(2, _u32(0))),
           False: _nest(5, _attr(1, _u32(0)), _attr(2, _u32(0)))}


@functools.lru_cache(maxsize=1024)
def _head(table, chain):
    return _attr(1, _str(table)) + _attr(2, _str(chain))


def rule_body(chain, rule):
    """The NFT_MSG_NEWRULE attributes (after nfgenmsg) appending ``rule`` (ebtables text
    after ``-A CHAIN``, as ebtables-save prints it) to ``chain`` of the nat table, as
    ebtables-nft 1.8 packs them. Raises NotEncodable for any other form. No I/O."""
    toks = rule.split(" ")
    opts, i = {}, 0
    order = ("-i", "-p", "-s", "--arp-ip-src", "--arp-mac-src", "-j")
    seen = -1
    while i + 1 < len(toks):
        opt = toks[i]
        if opt not in order or order.index(opt) <= seen:
            raise NotEncodable(rule)
        seen = order.index(opt)
        opts[opt] = toks[i + 1]
        i += 2
    if i != len(toks) or "-j" not in opts:
        raise NotEncodable(rule)
    arp = opts.get("-p")
    if arp not in (None, "ARP") or ("-i" in opts and len(opts) > 2):
        raise NotEncodable(rule)   # only -i DEV -j CHAIN, or the MAC/ARP forms
    if not arp and ("--arp-ip-src" in opts or "--arp-mac-src" in opts):
        raise NotEncodable(rule)
    exprs = b""
    if "-i" in opts:
        exprs += _iifname(opts["-i"])
    if "-s" in opts:
        exprs += _SRC_MAC + _cmp_eq(_mac(opts["-s"]))
    if arp:
        exprs += _IS_ARP
    if "--arp-ip-src" in opts or "--arp-mac-src" in opts:
        ip = _ipv4(opts["--arp-ip-src"]) if "--arp-ip-src" in opts else None
        mac = _mac(opts["--arp-mac-src"]) if "--arp-mac-src" in opts else None
        # NFTA_MATCH_NAME, NFTA_MATCH_REV, NFTA_MATCH_INFO
        exprs += _expr("match", _attr(1, _str("arp")), _attr(2, _u32(0)),
                       _attr(3, _arp_info(ip, mac)))
    exprs += _COUNTER + _verdict(opts["-j"])
    return _head(TABLE, chain) + _nest(4, exprs) + _COMPAT[bool(arp)]


def chain_body(name):
    """The NFT_MSG_NEWCHAIN attributes creating user chain ``name`` of the nat table (its
    policy RETURN, as ebtables-nft's user chains have without a policy rule). No I/O."""
    if not name.startswith("fwsg-") or len(name.encode()) >= 32:
        raise NotEncodable(name)
    return _attr(1, _str(TABLE)) + _attr(3, _str(name))


def steps(tc):
    """The messages of TableChange ``tc`` (ebtables, table nat) as [(type, flags, body,
    what)] in its restore text's order (``what``: the restore line, for errors), or None
    when it holds anything but new chains with their rules and rules appended to existing
    chains (the restore tool takes it). No I/O."""
    if (tc.bag_del or tc.moved or tc.hooks or tc.stale or tc.new != len(tc.chains)):
        return None   # deletions by text, hooks, a chain that may exist: the tool's
    rules = [(n, r) for n, c in tc.chains.items() for r in c.printed(True)]
    rules += [(n, r) for n, rs in tc.bag_add.items() for r in rs]
    if len(rules) > MAX_RULES:
        return None
    try:
        out = [(NFT_MSG_NEWCHAIN, NLM_F_EXCL, chain_body(n), f"-N {n}")
               for n in list(tc.chains) + tc.new_bags]
        out += [(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, rule_body(n, r), f"-A {n} {r}")
                for n, r in rules]
    except NotEncodable:
        return None
    return out


def batch(msgs, seq=1):
    """``msgs`` (from :func:`steps`) as one nfnetlink batch, the last message asking for an
    acknowledgement; (bytes, {seq: what}). No I/O."""
    def msg(typ, flags, family, res_id, body, s):
        n = _HDR.size + _NFGEN.size + len(body)
        return (_HDR.pack(n, typ, NLM_F_REQUEST | flags, s, 0) + _NFGEN.pack(family, 0, res_id)
                + body)
    res = socket.htons(NFNL_SUBSYS_NFTABLES)
    out = [msg(NFNL_MSG_BATCH_BEGIN, 0, 0, res, b"", seq)]
    whats = {}
    for i, (typ, flags, body, what) in enumerate(msgs):
        s = seq + 1 + i
        ack = NLM_F_ACK if i == len(msgs) - 1 else 0
        out.append(msg(NFNL_SUBSYS_NFTABLES << 8 | typ, flags | ack, NFPROTO_BRIDGE, 0, body, s))
        whats[s] = what
    out.append(msg(NFNL_MSG_BATCH_END, 0, 0, res, b"", seq + 1 + len(msgs)))
    return b"".join(out), whats


class EbSocket:
    """One nfnetlink socket in a namespace, committing :func:`steps` batches to ebtables' nat
    table (all of a batch or nothing: nf_tables' transaction)."""

    def __init__(self, netns):
        with entered(netns):
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        self.sock.settimeout(30)
        self.seq = 0

    def close(self):
        self.sock.close()

    def commit(self, msgs):
        """Send ``msgs`` as one batch and wait for the kernel's answer; KernelError naming
        each message refused (nothing of the batch is then left in the kernel)."""
        if not msgs:
            return
        data, whats = batch(msgs, self.seq + 1)
        first, last = self.seq + 1, self.seq + len(msgs) + 1
        self.seq = last + 1
        errors = []
        try:
            self.sock.send(data)
            done = False
            while not done:
                buf = self.sock.recv(65536)
                i = 0
                while i + _HDR.size <= len(buf):
                    n, typ, _, s, _ = _HDR.unpack_from(buf, i)
                    if typ == NLMSG_ERROR and first <= s <= last:   # not an earlier batch's
                        err = -struct.unpack_from("=i", buf, i + _HDR.size)[0]
                        if err:
                            errors.append(f"{whats.get(s, 'batch')}: {os.strerror(err)}")
                        done = done or s in (first, last)
                    i += (n + 3) & ~3 if n else len(buf)
        except OSError as e:
            raise KernelError(f"ebtables (nat, netlink): {e}") from None
        if errors:
            raise KernelError("ebtables (nat, netlink) refused: " + "; ".join(errors))
