"""Pure-Python twin of the compiled hot path (csrc/_fast.pyx): same names, signatures, results.

NftContext calls libnftables in-process through ctypes.
"""

import ctypes
import ctypes.util
import errno
import json
import re
import socket
import sys

from fwsg.errors import KernelError, errno_in

COMPILED = False

_NFT_CTX_OUTPUT_HANDLE = 1 << 3
_NFT_CTX_OUTPUT_JSON = 1 << 4
_NFT_CTX_OUTPUT_ECHO = 1 << 5
_lib = None


def _libnftables():
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError as e:
            raise KernelError(f"libnftables not found ({e}); install libnftables1") from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_get_flags.restype = ctypes.c_uint
        lib.nft_ctx_output_get_flags.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        for fn in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
        for fn in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, fn).restype = ctypes.c_char_p
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        _lib = lib
    return _lib


class NftContext:
    """A libnftables context bound to the network namespace current at construction."""

    def __init__(self):
        lib = _libnftables()
        self._lib = lib
        self.ctx = lib.nft_ctx_new(0)
        if not self.ctx:
            raise KernelError("libnftables: nft_ctx_new failed")
        lib.nft_ctx_buffer_output(self.ctx)
        lib.nft_ctx_buffer_error(self.ctx)
        self.base_flags = lib.nft_ctx_output_get_flags(self.ctx)

    def __del__(self):
        self.close()

    def close(self):
        """Free the context (idempotent)."""
        if getattr(self, "ctx", None):
            self._lib.nft_ctx_free(self.ctx)
            self.ctx = None

    def run(self, text, json_output=False, echo=False):
        """Run ``text`` (nft syntax, one atomic transaction) and return the library's output;
        with ``echo`` the output lists the objects the transaction created, with handles.

        Raises KernelError carrying the library's error text when the batch is refused; the
        kernel is then unchanged.
        """
        if not self.ctx:
            raise KernelError("libnftables context is closed")
        data = text.encode() if isinstance(text, str) else bytes(text)
        flags = self.base_flags | (_NFT_CTX_OUTPUT_JSON if json_output else 0)
        if echo:
            flags |= _NFT_CTX_OUTPUT_ECHO | _NFT_CTX_OUTPUT_HANDLE
        self._lib.nft_ctx_output_set_flags(self.ctx, flags)
        rc = self._lib.nft_run_cmd_from_buffer(self.ctx, data)
        out = (self._lib.nft_ctx_get_output_buffer(self.ctx) or b"").decode("utf-8", "replace")
        err = (self._lib.nft_ctx_get_error_buffer(self.ctx) or b"").decode("utf-8", "replace")
        if rc != 0:
            raise KernelError("nftables refused the batch: " + (err.strip() or f"error {rc}"),
                              errno_in(err))
        return out


def diff_keys(desired, current):
    """Return (added, removed): sorted lists of the keys in ``desired`` not in ``current`` and
    the reverse. Both arguments are sets (or iterables) of str. Pure: no I/O."""
    d = desired if type(desired) is set else set(desired)
    c = current if type(current) is set else set(current)
    return sorted(d - c), sorted(c - d)


def diff_map(desired, current):
    """Return (added, changed, removed) for two maps key -> value (str -> str).

    ``added`` and ``changed`` are sorted lists of (key, new value); ``removed`` a sorted list of
    keys. Pure: no I/O."""
    added, changed = [], []
    for k, v in desired.items():
        old = current.get(k)
        if old is None:
            added.append((k, v))
        elif old != v:
            changed.append((k, v))
    removed = [k for k in current if k not in desired]
    added.sort()
    changed.sort()
    removed.sort()
    return added, changed, removed


def dicts_key(seq):
    """The key the compiled ``dicts_key`` gives: per dict of the list ``seq`` its length, then
    each key, value and the value's type, in order; None unless ``seq`` is a list of dicts."""
    if type(seq) is not list:
        return None
    out = []
    for d in seq:
        if type(d) is not dict:
            return None
        out.append(len(d))
        for k, v in d.items():
            out += (k, v, type(v))
    return tuple(out)


def dicts_match(seq, key):
    """``dicts_key(seq) == key`` without building ``seq``'s key (the compiled twin's
    contract: lengths first, then item by item)."""
    if type(seq) is not list or type(key) is not tuple:
        return False
    if any(type(d) is not dict for d in seq) or \
            sum(1 + 3 * len(d) for d in seq) != len(key):
        return False
    i, n = 0, len(key)
    for d in seq:
        if i >= n or type(d) is not dict:   # a comparison changed the list under us
            return False
        if not (len(d) == key[i]):
            return False
        i += 1
        for k, v in d.items():
            if i + 3 > n:                   # (or a dict): never read past the key
                return False
            if not (k is key[i] or k == key[i]) or not (v is key[i + 1] or v == key[i + 1]) \
                    or not (type(v) is key[i + 2] or type(v) == key[i + 2]):
                return False
            i += 3
    return True
def _json_flat(v, out, depth):
    t = type(v)
    if t in (str, int, bool, float) or v is None:
        out += (v, t)
        return True
    if depth >= 8:
        return False
    if t is dict:
        out += (dict, len(v))
        for k, x in v.items():
            if type(k) is not str:
                return False
            out.append(k)
            if not _json_flat(x, out, depth + 1):
                return False
        return True
    if t is list:
        out += (list, len(v))
        return all(_json_flat(x, out, depth + 1) for x in v)
    return False


def json_key(value):
    """The key the compiled ``json_key`` gives: a hashable flat form of a JSON value (types
    included, at most 8 levels deep); None for any other value."""
    out = []
    return tuple(out) if _json_flat(value, out, 0) else None


def render_elements(keys):
    """Render element keys (or (key, value) pairs) as the inside of an nft ``{ ... }`` list."""
    return ", ".join(f"{k[0]} : {k[1]}" if type(k) is tuple else k for k in keys)


def diff_delta(pending_added, pending_removed, current):
    """(added, removed) for a recorded delta against ``current`` (a set): the pending additions
    not yet in it and the pending removals still in it, each sorted. O(delta), no I/O."""
    return (sorted(e for e in pending_added if e not in current),
            sorted(e for e in pending_removed if e in current))


def diff_map_keys(desired, current, keys):
    """diff_map restricted to ``keys``: (added, changed, removed) for those keys only."""
    added, changed, removed = [], [], []
    for k in keys:
        v, old = desired.get(k), current.get(k)
        if v is None:
            if old is not None:
                removed.append(k)
        elif old is None:
            added.append((k, v))
        elif old != v:
            changed.append((k, v))
    added.sort()
    changed.sort()
    removed.sort()
    return added, changed, removed


_AF = {4: socket.AF_INET, 6: socket.AF_INET6}


_PLAIN_MAC = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")


def pack_addrs(seq, family, check_macs=False):
    """(packed, rejects): the host addresses of ``seq`` (str, or [ip, mac] pairs) of one family
    as sorted, de-duplicated big-endian records (4 or 16 bytes each), and the (index, item)
    pairs that are not plain host addresses of that family (prefixes, bad values) for the
    caller's slow path; with ``check_macs`` also the pairs whose MAC is neither null nor
    written aa:bb:cc:dd:ee:ff. No I/O."""
    af = _AF[family]
    out, rejects = set(), []
    for i, raw in enumerate(seq):
        item = raw
        if type(item) is list or type(item) is tuple:
            mac = item[1] if len(item) > 1 else None
            if check_macs and mac is not None and not (
                    type(mac) is str and mac.isascii() and _PLAIN_MAC.fullmatch(mac)):
                rejects.append((i, raw))
                continue
            item = item[0] if len(item) else None
        if type(item) is not str:
            rejects.append((i, raw))
            continue
        try:
            out.add(socket.inet_pton(af, item))
        except (OSError, ValueError, UnicodeEncodeError):
            rejects.append((i, raw))
    return b"".join(sorted(out)), rejects


def diff_packed(new, old, width):
    """(added, removed) between two sorted de-duplicated packed lists (records of ``width``
    bytes): records only in ``new``, records only in ``old``; both packed and sorted (``new``
    itself, not a copy, when ``old`` is empty, and ``old`` itself when ``new`` is). No I/O."""
    if not old or not new:
        return new, old
    a = {new[i:i + width] for i in range(0, len(new), width)}
    b = {old[i:i + width] for i in range(0, len(old), width)}
    return b"".join(sorted(a - b)), b"".join(sorted(b - a))


def merge_packed(a, b, width):
    """The sorted de-duplicated union of two sorted de-duplicated packed lists (records of
    ``width`` bytes); ``a`` itself when ``b`` is empty. No I/O."""
    if not b:
        return a
    if not a:
        return b
    recs = {a[i:i + width] for i in range(0, len(a), width)}
    recs.update(b[i:i + width] for i in range(0, len(b), width))
    return b"".join(sorted(recs))


def packed_contains(packed, record, width):
    """True when ``record`` (``width`` bytes) is one of the records of ``packed`` (sorted,
    de-duplicated): a binary search, O(log n). No I/O."""
    if len(record) != width:
        return False
    lo, hi = 0, len(packed) // width
    while lo < hi:
        mid = (lo + hi) >> 1
        r = packed[mid * width:mid * width + width]
        if r == record:
            return True
        if r < record:
            lo = mid + 1
        else:
            hi = mid
    return False


def _record_of(item, family):
    """The record of ``item`` (big-endian bytes), or None when it is not the text of a host
    address of ``family``."""
    if type(item) is not str:
        return None
    try:
        return socket.inet_pton(_AF[family], item)
    except (OSError, ValueError, UnicodeEncodeError):
        return None


def addr_in(item, family, packed, plus, minus):
    """Whether ``item`` is a member of a packed address set: -1 when it is not the text of a
    host address of ``family`` (the caller looks elsewhere), else 1 when its record is in
    ``plus`` or in ``packed`` (sorted records) and not in ``minus`` (sets of records), else 0.
    No I/O."""
    rec = _record_of(item, family)
    if rec is None:
        return -1
    if rec in plus:
        return 1
    if rec in minus:
        return 0
    return 1 if packed_contains(packed, rec, 4 if family == 4 else 16) else 0


def addr_change(item, family, packed, plus, minus, adding):
    """Add (``adding``) or remove one member of a packed address set (``packed``: sorted
    records; ``plus``: records added since, not in ``packed``; ``minus``: records of
    ``packed`` removed since): -1 when ``item`` is not the text of a host address of
    ``family`` (nothing changed, the caller looks elsewhere), 0 when the set already was so,
    1 when it changed (a record taken back from one overlay or recorded in the other).
    No I/O."""
    rec = _record_of(item, family)
    if rec is None:
        return -1
    if rec in plus:
        if adding:
            return 0
        plus.discard(rec)
        return 1
    in_base = packed_contains(packed, rec, 4 if family == 4 else 16)
    if in_base and rec not in minus:
        if adding:
            return 0
        minus.add(rec)
        return 1
    if not adding:
        return 0
    if in_base:
        minus.discard(rec)
    else:
        plus.add(rec)
    return 1


def unpack_addrs(packed, family):
    """The canonical text of every record of a packed list (inet_ntop), in order. No I/O."""
    af, width = _AF[family], (4 if family == 4 else 16)
    return [socket.inet_ntop(af, packed[i:i + width]) for i in range(0, len(packed), width)]


class NetlinkWriter:
    """Commits changes to fwsg's tables as one atomic transaction (the twin of the compiled
    libnftnl batch writer: here through libnftables, same effect): tables, set and map
    declarations, chains and their rules, set/map elements. Bound to the network namespace
    current at construction."""

    def __init__(self):
        from fwsg.backends.nft.host import Generation

        self._ctx = NftContext()
        self._gen = Generation(None)
        self._gen.current()   # its socket opens now, in this namespace
        self.generation = None

    def close(self):
        """Close (idempotent)."""
        self._ctx.close()
        self._gen.close()

    def _generation(self):
        now = self._gen.current()
        return None if now is None else now[1]

    def commit(self, ops, genid=None, echo=False):
        """Commit ``ops`` (the tuples ``fwsg._fast.NetlinkWriter.commit`` takes) as one atomic
        batch, in order, as nft text through libnftables; the arguments and result of the
        compiled writer's ``commit``. Here ``genid`` is checked just before the commit, not
        inside it; the handles come from libnftables' echo; the generation is asked for
        before and after the commit and reported only when it moved by exactly one (this
        commit). Raises KernelError (nothing changed) when the kernel refuses."""
        self.generation = None
        cmds, creating = [], []
        for i, op in enumerate(ops):
            kind = op[0]
            if kind != "elem" and op[1] not in ("inet", "bridge"):
                raise KeyError(op[1])
            if kind == "chain" and len(op) > 3:   # a base chain: its nft statement
                cmds.append(op[6])
            elif kind in ("table", "deltable", "delset"):
                cmds.append(op[-1])
            elif kind == "set":
                cmds.append(op[10])
            elif kind == "chain":
                cmds.append(f"add chain {op[1]} fwsg {op[2]}")
            elif kind == "flush":
                cmds.append(f"flush chain {op[1]} fwsg {op[2]}")
            elif kind == "delchain":
                cmds.append(f"delete chain {op[1]} fwsg {op[2]}")
            elif kind == "delrule":
                cmds.append(f"delete rule {op[1]} fwsg {op[2]} handle {int(op[3])}")
            elif kind in ("rule", "xrule"):
                cmds.append(_rule_command(op))
                creating.append(i)
            elif kind == "elem":
                _, add, family, name, texts, _keys, _width, values = op
                if family not in ("inet", "bridge"):
                    raise KeyError(family)
                items = list(texts)
                if values is not None and add:
                    items = [f"{t} : {_value_text(v)}" for t, v in zip(texts, values)]
                for j in range(0, len(items), 1024):
                    cmds.append(f"{'add' if add else 'delete'} element {family} fwsg {name} "
                                f"{{ {', '.join(items[j:j + 1024])} }}")
            else:
                raise ValueError(f"unknown netlink op {kind!r}")
        handles = [None] * len(ops)
        if not cmds:
            return handles
        if genid is not None and self._generation() != genid:
            raise KernelError("nftables refused the batch: the ruleset changed since "
                              f"generation {genid}", errno.ERESTART)
        text = "\n".join(cmds) + "\n"
        if not echo:
            self._ctx.run(text)
            return handles
        before = self._generation()
        out = self._ctx.run(text, json_output=True, echo=True)
        after = self._generation()   # ours only when it moved by exactly one
        self.generation = after if before is not None and after == (before + 1) & 0xFFFFFFFF \
            else None
        created = []
        for item in json.loads(out)["nftables"] if out.strip() else ():
            for verb in ("add", "insert"):  # a replaced rule is echoed as delete + add
                rule = item.get(verb, {}).get("rule") if isinstance(item, dict) else None
                if rule is not None:
                    created.append(rule.get("handle"))
        if len(created) == len(creating):
            for i, h in zip(creating, created):
                handles[i] = h
        return handles


def _rule_command(op):
    """The nft statement of a "rule" or "xrule" op: appended, inserted before a handle, or
    replacing one."""
    family, chain, comment = op[1], op[2], op[5]
    before = op[6] if len(op) > 6 else None
    replace = op[7] if len(op) > 7 else None
    if op[0] == "rule":
        if op[3] not in ("jump", "drop"):
            raise ValueError(f"unsupported verdict {op[3]!r}")
        text = f"jump {op[4]}" if op[3] == "jump" else "drop"
    else:
        text = op[3]
    if comment is not None:
        text += f' comment "{comment}"'
    if replace is not None:
        return f"replace rule {family} fwsg {chain} handle {int(replace)} {text}"
    if before is not None:
        return f"insert rule {family} fwsg {chain} position {int(before)} {text}"
    return f"add rule {family} fwsg {chain} {text}"


def _value_text(v):
    if isinstance(v, str):
        return f"jump {v}"
    if isinstance(v, int):   # a verdict code (the compiled writer takes only drop's)
        if v != 0:
            raise ValueError(f"unsupported verdict code {v}")
        return "drop"
    if len(v) == 2:          # a conntrack zone (16 bits)
        return str(int.from_bytes(v, sys.byteorder))
    return f"0x{int.from_bytes(v, sys.byteorder):08x}"


_PORT_PROTOS = frozenset((6, 17, 33, 132, 136))


def _flow_of(fam, t, zone):
    """A flow tuple (as dump() gives) from pyroute2's original tuple."""
    ports = t.proto in _PORT_PROTOS
    icmp = t.proto in (1, 58)
    return (fam, t.proto, t.saddr, t.daddr, t.sport if ports else None,
            t.dport if ports else None, t.icmp_type if icmp else None,
            (getattr(t, "icmp_code", None) or 0) if icmp else None,
            t.icmp_id if icmp else None, zone or 0)


class ConntrackTable:
    """The conntrack table of the network namespace current when used (the twin speaks
    conntrack netlink through pyroute2: keep calls inside the namespace): ``dump()`` lists every
    flow's original tuple, ``delete(flows)`` removes flows. A flow is (family, l4 proto, src,
    dst, sport, dport, icmp type, icmp code, icmp id, zone), None where not applicable."""

    def close(self):
        """Close (nothing to do)."""

    def dump(self):
        """Every flow of both families (a list of flow tuples)."""
        from pyroute2 import Conntrack

        out = []
        ct = Conntrack(nfgen_family=socket.AF_UNSPEC)
        try:
            for e in ct.dump_entries():
                t = e.tuple_orig
                fam = {socket.AF_INET: 4, socket.AF_INET6: 6}.get(t.family)
                if fam is None or t.saddr is None:
                    continue
                out.append(_flow_of(fam, t, e.zone))
        finally:
            ct.close()
        return out

    def sweep(self, judge, look, gone, zones=None):
        """Delete, in one pass over the table, the flows ``judge`` no longer allows and those
        of an address in ``gone``; with ``look`` (a set of addresses, canonical text) only
        flows involving one of them or of ``gone`` are judged, and only their families dumped.
        With ``zones`` (conntrack zone -> (FlowJudge or None, addresses gone)), a flow of a
        zone listed there is judged by that judge and gone set instead (None: not judged),
        a flow of another zone by ``judge`` (may be None) and ``gone``. Deletions name the
        flow's zone and are sent in batches while the dump goes on. Returns (judged,
        deleted)."""
        from pyroute2 import Conntrack

        gone_p = {_pack_text(a) for a in gone}
        by_zone = None
        all_gone = set(gone_p)
        if zones is not None:
            by_zone = {int(z): (zj, {_pack_text(a) for a in zg}) for z, (zj, zg) in zones.items()}
            for _zj, zg in by_zone.values():
                all_gone |= zg
        look_p = None if look is None else {_pack_text(a) for a in look} | all_gone
        family = socket.AF_UNSPEC
        if look_p is not None:
            fams = {len(a) for a in look_p}
            if not fams:
                return 0, 0
            if len(fams) == 1:
                family = socket.AF_INET if fams == {4} else socket.AF_INET6
        judged, deleted, batch = 0, 0, []
        ct = Conntrack(nfgen_family=family)
        try:
            for e in ct.dump_entries():
                t = e.tuple_orig
                fam = {socket.AF_INET: 4, socket.AF_INET6: 6}.get(t.family)
                if fam is None or t.saddr is None:
                    continue
                src, dst = socket.inet_pton(t.family, t.saddr), socket.inet_pton(t.family, t.daddr)
                if look_p is not None and src not in look_p and dst not in look_p:
                    continue
                judged += 1
                flow = _flow_of(fam, t, e.zone)
                zjudge, zgone = judge, gone_p
                if by_zone is not None:
                    zjudge, zgone = by_zone.get(flow[9], (judge, gone_p))
                if src in zgone or dst in zgone:
                    batch.append(flow)
                elif (zjudge is not None and zjudge._owned(src, dst)
                      and not zjudge.allowed(flow)):
                    batch.append(flow)
                if len(batch) >= 512:
                    deleted += self.delete(batch)
                    batch = []
        finally:
            ct.close()
        if batch:
            deleted += self.delete(batch)
        return judged, deleted

    def track(self, flows, timeout=600):
        """Insert TCP/UDP flows (family, l4 proto, src, dst, sport, dport[, zone]), TCP ones
        as established, with ``timeout`` seconds to live, in batches; returns how many the
        kernel took (for tests and benchmarks)."""
        from pyroute2 import Conntrack
        from pyroute2.conntrack import NFCTAttrTuple

        n = 0
        for fam in (4, 6):
            af = _AF[fam]
            ct = Conntrack(nfgen_family=af)
            try:
                for flow in (f for f in flows if f[0] == fam):
                    _, l4, src, dst, sport, dport = flow[:6]
                    zone = flow[6] if len(flow) > 6 else 0
                    try:
                        ct.entry("add", timeout=timeout, zone=zone or None, tuple_orig=NFCTAttrTuple(
                            family=af, saddr=src, daddr=dst, proto=l4, sport=sport,
                            dport=dport), tuple_reply=NFCTAttrTuple(
                            family=af, saddr=dst, daddr=src, proto=l4, sport=dport,
                            dport=sport))
                        n += 1
                    except Exception:  # noqa: BLE001 - already tracked
                        pass
            finally:
                ct.close()
        return n

    def delete(self, flows):
        """Delete flows (tuples as dump() gives); returns how many the kernel removed (a flow
        already gone is not an error)."""
        from pyroute2 import Conntrack
        from pyroute2.conntrack import NFCTAttrTuple

        n = 0
        for fam in (4, 6):
            mine = [f for f in flows if f[0] == fam]
            if not mine:
                continue
            af = socket.AF_INET if fam == 4 else socket.AF_INET6
            ct = Conntrack(nfgen_family=af)
            try:
                for _, l4, src, dst, sport, dport, itype, _icode, iid, zone in mine:
                    try:
                        ct.entry("del", tuple_orig=NFCTAttrTuple(
                            family=af, saddr=src, daddr=dst, proto=l4, sport=sport, dport=dport,
                            icmp_type=itype, icmp_id=iid), zone=zone or None)
                        n += 1
                    except Exception:  # noqa: BLE001 - already gone
                        pass
            finally:
                ct.close()
        return n


def _in_net(addr, net):
    """``addr`` (packed) inside ``net`` ((packed network, prefix length)), same family."""
    packed, plen = net
    if len(packed) != len(addr):
        return False
    full, rest = divmod(plen, 8)
    if addr[:full] != packed[:full]:
        return False
    if rest:
        mask = (0xff << (8 - rest)) & 0xff
        return (addr[full] ^ packed[full]) & mask == 0
    return True


class FlowJudge:
    """The policy flattened by ``policy.flow_tables``: ``allowed(flow)`` says whether a
    tracked flow's original direction passes the sender's egress and the receiver's ingress.
    Address ownership is a hash lookup, remote groups a set lookup (their prefixes are
    scanned, and they are few): the cost of a flow does not grow with the groups' sizes. No
    I/O here."""

    def __init__(self, tables):
        self.rules, self.ports, self.hosts, self.prefixes, self.groups = tables

    def _port_of(self, addr):
        idx = self.hosts.get(addr)
        if idx is not None:
            return idx
        for packed, plen, port in self.prefixes:
            if _in_net(addr, (packed, plen)):
                return port
        return -1

    def _matches(self, r, fam, proto, src, dst, sport, dport, itype, icode):
        direction, rfam, rproto, pmin, pmax, smin, smax, rtype, rcode, snet, dnet, group = r
        if rfam != fam:
            return False
        if snet is not None and not _in_net(src, snet):
            return False
        if dnet is not None and not _in_net(dst, dnet):
            return False
        if rproto >= 0 and rproto != proto:
            return False
        if rtype >= 0 and rtype != itype:
            return False
        if rcode >= 0 and rcode != icode:
            return False
        if pmin >= 0 and not (dport >= 0 and pmin <= dport <= pmax):
            return False
        if smin >= 0 and not (sport >= 0 and smin <= sport <= smax):
            return False
        if group >= 0:
            remote = src if direction == 1 else dst
            members, nets = self.groups[group]
            if socket.inet_ntop(_AF[fam], remote) in members:
                return True
            return any(_in_net(remote, n) for n in nets)
        return True

    def _allows(self, port, direction, fam, proto, src, dst, sport, dport, itype, icode):
        psec, egress, ingress = self.ports[port]
        if not psec:
            return True
        udp = proto == 17
        if direction == 0:
            if udp and (sport, dport) in ((67, 68), (547, 546)):
                return False
            if proto == 58 and itype == 134:
                return False
            if udp and (sport, dport) in ((68, 67), (546, 547)):
                return True
            if proto == 58:
                return True
        else:
            if proto == 58 and itype in (130, 135, 136):
                return True
            if udp and (sport, dport) in ((67, 68), (547, 546)):
                return True
        for start, end in (egress if direction == 0 else ingress):
            for i in range(start, end):
                if self._matches(self.rules[i], fam, proto, src, dst, sport, dport, itype, icode):
                    return True
        return False

    def _owned(self, src, dst):
        return self._port_of(src) >= 0 or self._port_of(dst) >= 0

    def _flow_allowed(self, fam, proto, src, dst, sport, dport, itype, icode):
        sp, dp = self._port_of(src), self._port_of(dst)
        if sp >= 0 and not self._allows(sp, 0, fam, proto, src, dst, sport, dport, itype, icode):
            return False
        if dp >= 0 and not self._allows(dp, 1, fam, proto, src, dst, sport, dport, itype, icode):
            return False
        return True

    def allowed(self, flow):
        """True when the model still allows ``flow`` (a tuple as ConntrackTable.dump gives)."""
        fam, proto, src, dst, sport, dport, itype, icode = flow[:8]
        af = _AF[fam]
        return self._flow_allowed(fam, proto, socket.inet_pton(af, src),
                                  socket.inet_pton(af, dst), _num(sport), _num(dport),
                                  _num(itype), _num(icode))


def _num(v):
    return -1 if v is None else v


def _pack_text(text):
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
