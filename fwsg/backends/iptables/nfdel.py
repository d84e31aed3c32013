"""Deletions in the tables iptables-nft and ebtables-nft keep in nf_tables (families ip, ip6,
bridge), made over one long-lived nfnetlink socket instead of a ``*-nft-restore`` process: a
port removal's dispatch rules deleted by rule handle, its stale chains flushed and deleted, all
of a plan in one nf_tables batch (atomic: every table of both IP families and ebtables' nat
table change together, or none does).

Why: a restore tool deletes a rule by its text, so it first reads and parses the rules of
the table (iptables-nft: ~10-20 ms here for fwsg's mangle or filter), and a process whose
transaction deleted anything spends ~10-15 ms closing its netlink socket (the kernel's release
waits for the deleted objects' grace period). A socket kept open pays neither: the handles of
only the chains a deletion names are dumped, and the socket is never closed per change.

A rule is found by what it is, not by its text: :func:`ip_rule` and :func:`eb_rule` give the
expressions the tools write for one of fwsg's rule forms (``iptc.encode`` and
``ebnl.rule_body`` pack them), :func:`signature` reduces those and a dumped rule's alike
(counters left out, nested attributes unpacked, compat ``INFO`` without its padding), and the
first dumped rule with an equal signature is the one ``-D`` would delete. A change holding
anything but deletions, a rule form not packed, or a rule not found goes through the restore
tools as before (:func:`steps` gives None). No I/O but in :class:`NfSocket`.
"""

import os
import socket
import struct

from fwsg.backends.iptables import ebnl, iptc
from fwsg.errors import KernelError
from fwsg.netns import entered
from fwsg.nlmsg import HDR as _HDR, NFGEN as _NFGEN, NETLINK_NETFILTER
from fwsg.nlmsg import attr as _attr, attrs as _attrs

NFT_MSG_DELCHAIN, NFT_MSG_NEWRULE, NFT_MSG_GETRULE, NFT_MSG_DELRULE = 5, 6, 7, 8
NFNL_SUBSYS_NFTABLES = 10
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP, NLM_F_NONREC = 0x1, 0x4, 0x300, 0x100
NLMSG_ERROR, NLMSG_DONE = 2, 3
FAMILY = {4: 2, 6: 10, "eb": 7}          # NFPROTO_IPV4, NFPROTO_IPV6, NFPROTO_BRIDGE
RULE_HANDLE, RULE_EXPRESSIONS, RULE_USERDATA = 3, 4, 7
_TYPE = 0x3FFF                           # nla_type without NESTED / NET_BYTEORDER
_INFO = {"match": 3, "target": 3}        # NFTA_MATCH_INFO, NFTA_TARGET_INFO
_NET = 1                                 # NFT_PAYLOAD_NETWORK_HEADER
_SADDR = {4: (12, 4), 6: (8, 16)}        # (offset, length) in the network header
_DADDR = {4: (16, 4), 6: (24, 16)}


class NotFound(Exception):
    """A rule outside the forms this module packs, or not in its chain (the restore tool
    takes the change, and reports what it finds)."""


_NESTED = {("cmp", 3), ("immediate", 2), ("bitwise", 4), ("bitwise", 5)}  # NFTA_DATA_*


def _data(value):
    """NFTA_DATA_VALUE (raw) or NFTA_DATA_VERDICT (code, chain) unpacked: the kernel dumps
    these nests without the NESTED flag userspace sets, and pads differently."""
    return tuple((k & _TYPE, tuple((j & _TYPE, bytes(w)) for j, w in _attrs(v))
                  if k & _TYPE == 2 else bytes(v)) for k, v in _attrs(value))


def _norm(name, kind, value):
    """A comparable form of one attribute of expression ``name``: data nests unpacked, a
    compat extension's INFO without trailing zeros (the kernel dumps it padded to its
    aligned size, the tools send it padded or not)."""
    kind &= _TYPE
    if (name, kind) in _NESTED:
        return (kind, _data(value))
    if _INFO.get(name) == kind:
        return (kind, bytes(value).rstrip(b"\0"))
    return (kind, bytes(value))


def signature(expressions, userdata=None):
    """The comparable form of a rule: its NFTA_RULE_EXPRESSIONS (bytes, as sent or dumped)
    without counters, each expression as (name, sorted attributes), and its userdata (an
    iptables-nft comment) if any."""
    out = []
    for _, elem in _attrs(expressions):
        parts = dict((k & _TYPE, v) for k, v in _attrs(elem))
        name = bytes(parts.get(1, b"")).rstrip(b"\0").decode(errors="replace")
        if name == "counter":
            continue
        fields = tuple(sorted(_norm(name, k, v) for k, v in _attrs(parts.get(2, b""))))
        out.append((name, fields))
    return tuple(out), (bytes(userdata) if userdata else None)


def needle(sig):
    """Bytes every dump of a rule with signature ``sig`` holds (its first compared value or
    compat INFO), to skip decoding the other rules of a long chain; b"" if none."""
    for name, fields in sig[0]:
        for kind, value in fields:
            if name == "cmp" and kind == 3:
                return value[0][1] if value and isinstance(value[0][1], bytes) else b""
            if _INFO.get(name) == kind and len(value) >= 4:
                return value
    return b""


def _payload(offset, length):
    # NFTA_PAYLOAD_DREG 1, BASE network header, OFFSET, LEN
    return ebnl._expr("payload", _attr(1, ebnl._u32(1)), _attr(2, ebnl._u32(_NET)),
                      _attr(3, ebnl._u32(offset)), _attr(4, ebnl._u32(length)))


def _compat(kind, name, rev, data):
    # NFTA_MATCH_NAME / NFTA_TARGET_NAME, _REV, _INFO
    return ebnl._expr(kind, _attr(1, ebnl._str(name)), _attr(2, ebnl._u32(rev)),
                      _attr(3, data))


def ip_rule(fam, rule):
    """The signature of ``rule`` (fwsg's text after ``-A CHAIN``) as iptables-nft 1.8 writes
    it in family ``fam``'s table: addresses as ``payload`` + ``cmp`` (source first), each
    ``-m`` as a compat ``match``, the verdict as ``immediate`` or ``CT`` as a compat
    ``target``. NotFound for a rule outside those forms (a comment, a prefix that is not a
    host, an interface). No I/O."""
    try:
        entry, _ = iptc.encode(fam, rule)
    except iptc.NotEncodable:
        raise NotFound(rule) from None
    n = 4 if fam == 4 else 16
    src, dst, smsk, dmsk = (entry[i * n:(i + 1) * n] for i in range(4))
    if entry[4 * n:4 * n + 64].strip(b"\0"):
        raise NotFound(rule)                        # -i / -o (fwsg's dispatch has none)
    if fam == 4:
        target_offset = struct.unpack_from("=H", entry, 88)[0]
    else:
        target_offset = struct.unpack_from("=H", entry, 140)[0]
    exprs = b""
    for (addr, mask), (off, length) in (((src, smsk), _SADDR[fam]), ((dst, dmsk), _DADDR[fam])):
        if mask.strip(b"\0"):
            if mask != b"\xff" * n:
                raise NotFound(rule)                # a prefix: iptables-nft adds a bitwise
            exprs += _payload(off, length) + ebnl._cmp_eq(addr)
    i = iptc._ENTRY[fam]
    while i < target_offset:
        size, name, rev = struct.unpack_from("=H29sB", entry, i)
        name = name.rstrip(b"\0").decode()
        if name == "comment":
            raise NotFound(rule)                    # iptables-nft keeps it as userdata
        exprs += _compat("match", name, rev, entry[i + iptc._MATCH_HDR:i + size])
        i += size
    _, name, rev = struct.unpack_from("=H29sB", entry, i)
    name = name.rstrip(b"\0").decode()
    if name == "CT":
        size = struct.unpack_from("=H", entry, i)[0]
        exprs += _compat("target", "CT", rev, entry[i + iptc._MATCH_HDR:i + size])
    else:
        try:
            exprs += ebnl._verdict(name)
        except ebnl.NotEncodable:
            raise NotFound(rule) from None
    return signature(exprs)


def eb_rule(chain, rule):
    """The signature of ebtables rule ``rule`` as ebtables-nft 1.8 writes it (ebnl packs the
    same message). NotFound for a form ebnl does not pack. No I/O."""
    try:
        body = ebnl.rule_body(chain, rule)
    except ebnl.NotEncodable:
        raise NotFound(rule) from None
    exprs = [v for k, v in _attrs(body) if k & _TYPE == RULE_EXPRESSIONS]
    return signature(exprs[0] if exprs else b"")


def _rule_body(table, chain, handle=None):
    # NFTA_RULE_TABLE, NFTA_RULE_CHAIN[, NFTA_RULE_HANDLE]: without a handle, every rule
    body = _attr(1, ebnl._str(table)) + _attr(2, ebnl._str(chain))
    return body + (_attr(RULE_HANDLE, struct.pack(">Q", handle)) if handle is not None else b"")


def _chain_body(table, chain):
    # NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME
    return _attr(1, ebnl._str(table)) + _attr(3, ebnl._str(chain))


def steps(changes, dump):
    """The messages deleting what ``changes`` ({(family, table): TableChange}) deletes, as
    [(family, type, flags, body, what)] for :meth:`NfSocket.commit`: for each table in turn,
    each dispatch rule by the handle of the first rule of its chain with its signature, then
    each stale chain flushed, then deleted (as the restore text orders them). ``dump(family,
    table, chain, needles)`` gives [(handle, signature)] of a chain in order (see
    :meth:`NfSocket.dump`). None when a change
    holds anything but deletions, or a rule is of another form or not found."""
    out = []
    for (fam, table), tc in changes.items():
        if tc.chains or tc.new_bags or tc.bag_add or tc.hooks or tc.moved:
            return None
        nf = FAMILY[fam]
        for chain, rules in tc.bag_del.items():
            try:
                want = [(r, eb_rule(chain, r) if fam == "eb" else ip_rule(fam, r))
                        for r in rules]
            except NotFound:
                return None
            have = list(dump(fam, table, chain, {needle(sig) for _, sig in want} - {b""}
                             if all(needle(sig) for _, sig in want) else None))
            for rule, sig in want:
                at = next((i for i, (_, s) in enumerate(have) if s == sig), None)
                if at is None:
                    return None
                handle = have.pop(at)[0]
                out.append((nf, NFT_MSG_DELRULE, 0, _rule_body(table, chain, handle),
                            f"-D {chain} {rule}"))
        out += [(nf, NFT_MSG_DELRULE, 0, _rule_body(table, n), f"-F {n}") for n in tc.stale]
        out += [(nf, NFT_MSG_DELCHAIN, NLM_F_NONREC, _chain_body(table, n), f"-X {n}")
                for n in tc.stale]
    return out


class NfSocket:
    """One nfnetlink socket in a namespace, kept open: :meth:`dump` lists a chain's rules,
    :meth:`commit` sends one batch (all of it or nothing, nf_tables' transaction)."""

    def __init__(self, netns):
        with entered(netns):
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        self.sock.settimeout(30)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        self.seq = 0

    def close(self):
        self.sock.close()

    def _next(self):
        self.seq = (self.seq + 1) & 0x7FFFFFFF
        return self.seq

    def dump(self, fam, table, chain, needles=None):
        """[(handle, signature)] of ``chain``'s rules in table ``table`` of family ``fam`` (4,
        6, "eb"), in the chain's order; [] if the chain or table does not exist. With
        ``needles`` (bytes), only the rules whose message holds one of them (the others are
        not decoded)."""
        seq = self._next()
        body = _rule_body(table, chain)
        msg = (_HDR.pack(_HDR.size + _NFGEN.size + len(body),
                         NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETRULE,
                         NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
               + _NFGEN.pack(FAMILY[fam], 0, 0) + body)
        out = []
        try:
            self.sock.send(msg)
            while True:
                buf = self.sock.recv(1 << 20)
                i = 0
                while i + _HDR.size <= len(buf):
                    n, typ, _, s, _ = _HDR.unpack_from(buf, i)
                    if n < _HDR.size:
                        break
                    if s == seq:
                        if typ == NLMSG_DONE:
                            return out
                        if typ == NLMSG_ERROR:
                            err = -struct.unpack_from("=i", buf, i + _HDR.size)[0]
                            if err == 2:    # ENOENT: no such table or chain
                                return []
                            raise KernelError(f"nf_tables dump of {chain}: "
                                              f"{os.strerror(err)}")
                        if typ == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWRULE and (
                                not needles or any(buf.find(x, i, i + n) >= 0
                                                   for x in needles)):
                            parts = dict((k & _TYPE, v) for k, v in
                                         _attrs(buf[i + _HDR.size + _NFGEN.size:i + n]))
                            exprs = parts.get(RULE_EXPRESSIONS, b"")
                            out.append((struct.unpack(">Q", parts[RULE_HANDLE])[0],
                                        signature(exprs, parts.get(RULE_USERDATA))))
                    i += (n + 3) & ~3
        except OSError as e:
            raise KernelError(f"nf_tables dump of {chain}: {e}") from None

    def commit(self, msgs):
        """Send ``msgs`` (from :func:`steps`) as one batch and wait for the kernel's answer;
        KernelError naming each message refused (nothing of the batch is then left)."""
        if not msgs:
            return
        res = socket.htons(NFNL_SUBSYS_NFTABLES)
        first = self._next()
        parts = [_HDR.pack(_HDR.size + _NFGEN.size, ebnl.NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST,
                           first, 0) + _NFGEN.pack(0, 0, res)]
        whats = {}
        for k, (family, typ, flags, body, what) in enumerate(msgs):
            s = self._next()
            ack = NLM_F_ACK if k == len(msgs) - 1 else 0
            parts.append(_HDR.pack(_HDR.size + _NFGEN.size + len(body),
                                   NFNL_SUBSYS_NFTABLES << 8 | typ,
                                   NLM_F_REQUEST | flags | ack, s, 0)
                         + _NFGEN.pack(family, 0, 0) + body)
            whats[s] = what
        last = self._next()
        parts.append(_HDR.pack(_HDR.size + _NFGEN.size, ebnl.NFNL_MSG_BATCH_END, NLM_F_REQUEST,
                               last, 0) + _NFGEN.pack(0, 0, res))
        errors = []
        try:
            self.sock.send(b"".join(parts))
            done = False
            while not done:
                buf = self.sock.recv(1 << 16)
                i = 0
                while i + _HDR.size <= len(buf):
                    n, typ, _, s, _ = _HDR.unpack_from(buf, i)
                    if typ == NLMSG_ERROR and first <= s <= last:
                        err = -struct.unpack_from("=i", buf, i + _HDR.size)[0]
                        if err:
                            errors.append(f"{whats.get(s, 'batch')}: {os.strerror(err)}")
                        done = done or s in (first, last - 1)
                    i += (n + 3) & ~3 if n else len(buf)
        except OSError as e:
            raise KernelError(f"nf_tables (netlink): {e}") from None
        if errors:
            raise KernelError("nf_tables (netlink) refused: " + "; ".join(errors))
