"""iptables-legacy tables changed in-process through libiptc (``libip4tc.so.2`` /
``libip6tc.so.2``, shipped with Debian's ``iptables``), without an ``iptables-restore``
process: each table is read once, only fwsg's chains and dispatch rules are changed on
libiptc's copy, and the table is committed (the kernel takes a legacy table only whole).

Rules reach libiptc as binary entries, which this module packs itself from fwsg's own rule
text - only the few forms a port change writes (see :func:`encode`): addresses, ``physdev``,
``mac``, ``comment``, a verdict, a jump to a chain, ``CT --zone``. A plan holding any other
rule (a group's or a port's own rules: ports, protocols, sets) is not encodable and goes
through ``iptables-restore`` as before (``Kernel.commit``). Tests compare what either path
leaves in the kernel, read back with ``iptables-save``.

ctypes releases the GIL during each libiptc call, so the two families (two libraries, no
state shared) run in threads side by side (Kernel.iptc_threads). No I/O at import; the libraries are loaded on first use.
"""

import ctypes
import ipaddress
import os
import struct

from fwsg.errors import KernelError

ENV = "FWSG_LIBIPTC"   # 0: never use libiptc (every legacy change through iptables-restore)

IFNAMSIZ = 16
_MATCH_HDR = 32        # struct xt_entry_match / xt_entry_target: size, name[29], revision
_ENTRY = {4: 112, 6: 168}   # sizeof(struct ipt_entry) / sizeof(struct ip6t_entry)
_VERDICTS = ("ACCEPT", "DROP", "RETURN")
# xt_physdev_info.bitmask
_PHYS_IN, _PHYS_OUT, _PHYS_BRIDGED = 0x01, 0x02, 0x04
_CT_REVISION = 2       # what iptables 1.8 writes for ``-j CT`` on a kernel that has it


def _align(n):
    return (n + 7) & ~7


def _ext(name, revision, data):
    """An xt_entry_match / xt_entry_target: header (size, name, revision) and ``data``,
    padded to 8 bytes."""
    size = _align(_MATCH_HDR + len(data))
    return (struct.pack("=H29sB", size, name.encode(), revision) + data).ljust(size, b"\0")


def _iface(name):
    """(name, mask) as ``xtables_parse_interface`` writes them: a trailing ``+`` is a
    wildcard (kept in the name, not in the mask); otherwise the NUL is compared too."""
    raw = name.encode()
    if len(raw) + 1 > IFNAMSIZ or not raw:
        raise NotEncodable(f"interface {name!r}")
    n = len(raw) - 1 if raw.endswith(b"+") else len(raw) + 1
    return raw.ljust(IFNAMSIZ, b"\0"), (b"\xff" * n).ljust(IFNAMSIZ, b"\0")


class NotEncodable(Exception):
    """A rule outside the forms :func:`encode` packs (the caller uses iptables-restore)."""


def encode(fam, rule):
    """The binary entry (``struct ipt_entry`` / ``ip6t_entry`` with its matches and target)
    of ``rule``, fwsg's text after ``-A CHAIN``, exactly as iptables 1.8 packs it; and the
    target's name (a verdict or a chain). Raises NotEncodable for any other form."""
    toks = rule.split(" ")
    src = dst = None
    matches = []
    target = None
    i = 0
    while i < len(toks):
        t = toks[i]
        if t == "-s" and src is None and not matches and i + 1 < len(toks):
            src = _net(fam, toks[i + 1])
            i += 2
        elif t == "-d" and dst is None and not matches and i + 1 < len(toks):
            dst = _net(fam, toks[i + 1])
            i += 2
        elif t == "-m" and i + 1 < len(toks) and toks[i + 1] in _MATCHES and target is None:
            data, i = _MATCHES[toks[i + 1]](toks, i + 2)
            matches.append(data)
        elif t == "-j" and i + 1 < len(toks) and target is None:
            target, i = _target(toks, i + 1)
        else:
            raise NotEncodable(rule)
    if target is None:
        raise NotEncodable(rule)
    body = b"".join(matches)
    target_offset = _ENTRY[fam] + len(body)
    next_offset = target_offset + len(target[0])
    if fam == 4:
        head = struct.pack("=4s4s4s4s16s16s16s16sHBB", *_addrs(4, src, dst),
                           b"", b"", b"", b"", 0, 0, 0)
        head += struct.pack("=IHHI16x", 0, target_offset, next_offset, 0)
    else:
        head = struct.pack("=16s16s16s16s16s16s16s16sHBBB3x", *_addrs(6, src, dst),
                           b"", b"", b"", b"", 0, 0, 0, 0)
        head += struct.pack("=IHHI4x16x", 0, target_offset, next_offset, 0)
    assert len(head) == _ENTRY[fam]
    return head + body + target[0], target[1]


def _net(fam, text):
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError:
        raise NotEncodable(text) from None
    if net.version != fam or "/" not in text:
        raise NotEncodable(text)
    return net


def _addrs(fam, src, dst):
    """(src, dst, smsk, dmsk) packed; an absent side is all zeros (any)."""
    zero = b"\0" * (4 if fam == 4 else 16)
    return (src.network_address.packed if src else zero,
            dst.network_address.packed if dst else zero,
            src.netmask.packed if src else zero, dst.netmask.packed if dst else zero)


def _physdev(toks, i):
    names = {_PHYS_IN: (b"", b""), _PHYS_OUT: (b"", b"")}
    bits = 0
    while i < len(toks) and toks[i].startswith("--physdev-"):
        opt = toks[i]
        if opt in ("--physdev-in", "--physdev-out") and i + 1 < len(toks):
            bit = _PHYS_IN if opt == "--physdev-in" else _PHYS_OUT
            if bits & bit:
                raise NotEncodable(opt)
            names[bit] = _iface(toks[i + 1])
            bits |= bit
            i += 2
        elif opt == "--physdev-is-bridged" and not bits & _PHYS_BRIDGED:
            bits |= _PHYS_BRIDGED
            i += 1
        else:
            raise NotEncodable(opt)
    if not bits:
        raise NotEncodable("-m physdev")
    (pin, pin_mask), (pout, pout_mask) = names[_PHYS_IN], names[_PHYS_OUT]
    data = struct.pack("=16s16s16s16sBB", pin, pin_mask, pout, pout_mask, 0, bits)
    return _ext("physdev", 0, data), i


def _mac(toks, i):
    if i + 1 >= len(toks) or toks[i] != "--mac-source":
        raise NotEncodable("-m mac")
    try:
        mac = bytes(int(x, 16) for x in toks[i + 1].split(":"))
    except ValueError:
        raise NotEncodable(toks[i + 1]) from None
    if len(mac) != 6:
        raise NotEncodable(toks[i + 1])
    return _ext("mac", 0, struct.pack("=6s2xi", mac, 0)), i + 2


def _comment(toks, i):
    # only a comment without spaces, quoted or not (fwsg's digest comments)
    if i + 1 >= len(toks) or toks[i] != "--comment":
        raise NotEncodable("-m comment")
    text = toks[i + 1]
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if not text or '"' in text or "\\" in text or len(text.encode()) > 255:
        raise NotEncodable(toks[i + 1])
    return _ext("comment", 0, text.encode().ljust(256, b"\0")), i + 2


_MATCHES = {"physdev": _physdev, "mac": _mac, "comment": _comment}


def _target(toks, i):
    name = toks[i]
    if name == "CT":
        if toks[i + 1:i + 2] != ["--zone"] or i + 3 != len(toks) or not toks[i + 2].isdigit():
            raise NotEncodable(" ".join(toks[i:]))
        zone = int(toks[i + 2])
        if zone > 0xFFFF:
            raise NotEncodable(toks[i + 2])
        # struct xt_ct_target_info_v1: flags, zone, ct_events, exp_events, helper[16],
        # timeout[32], then the kernel's own pointer (8-aligned), zero from user space
        data = struct.pack("=HHII16s32s4xQ", 0, zone, 0, 0, b"", b"", 0)
        return (_ext("CT", _CT_REVISION, data), "CT"), i + 3
    if i + 1 != len(toks) or not name or name.startswith("-") or len(name) > 28:
        raise NotEncodable(" ".join(toks[i:]))
    if name not in _VERDICTS and not name.startswith("fwsg-"):
        raise NotEncodable(name)   # another target extension: iptables-restore knows it
    return (_ext(name, 0, struct.pack("=i", 0)), name), i + 1


# -- the libraries -----------------------------------------------------------------------------

class Lib:
    """One family's libiptc (``iptc_*`` of libip4tc, ``ip6tc_*`` of libip6tc)."""

    def __init__(self, fam):
        self.fam = fam
        lib = ctypes.CDLL(f"libip{fam}tc.so.2", use_errno=True)
        prefix = "iptc_" if fam == 4 else "ip6tc_"
        h, s, p, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int
        sigs = {"init": (h, [s]), "free": (None, [h]), "commit": (i, [h]),
                "is_chain": (i, [s, h]), "create_chain": (i, [s, h]),
                "flush_entries": (i, [s, h]), "delete_chain": (i, [s, h]),
                "append_entry": (i, [s, p, h]),
                "insert_entry": (i, [s, p, ctypes.c_uint, h]),
                "delete_entry": (i, [s, p, p, h]), "strerror": (s, [i])}
        for name, (res, args) in sigs.items():
            fn = getattr(lib, prefix + name)
            fn.restype, fn.argtypes = res, args
            setattr(self, name, fn)


_LIBS = {}


def libs():
    """{4: Lib, 6: Lib}, or None when libiptc cannot be loaded (or $FWSG_LIBIPTC is 0)."""
    if os.environ.get(ENV, "1") == "0":
        return None
    if not _LIBS:
        try:
            _LIBS.update({fam: Lib(fam) for fam in (4, 6)})
        except (OSError, AttributeError):
            _LIBS.clear()
            return None
    return _LIBS


class Table:
    """One table of one family, read at construction; changes are made on libiptc's copy and
    reach the kernel only with :meth:`commit` (all of them at once, or none)."""

    def __init__(self, lib, name):
        self.lib, self.name = lib, name
        self.h = lib.init(name.encode())
        if not self.h:
            self._fail("read")

    def _fail(self, what):
        err = ctypes.get_errno()
        msg = self.lib.strerror(err).decode(errors="replace") if err else "failed"
        raise KernelError(f"libip{self.lib.fam}tc ({'ip' if self.lib.fam == 4 else 'ip6'}tables"
                          f" -t {self.name}) refused: {what}: {msg}")

    def _ok(self, rc, what):
        if not rc:
            self._fail(what)

    def step(self, verb, chain, rule=None, entry=None):
        """One step of :func:`steps` on libiptc's copy of the table: ``declare`` (as
        ``:chain - [0:0]`` of ``restore --noflush``: created, or emptied if present),
        ``append``, ``insert`` (at the top), ``delete`` (the first rule whose every byte is
        ``entry``'s, counters aside, as ``-D`` finds it), ``flush``, ``remove``."""
        c, h, lib = chain.encode(), self.h, self.lib
        if verb == "declare":
            verb = "flush" if lib.is_chain(c, h) else "create"
        if verb == "append":
            rc = lib.append_entry(c, entry, h)
        elif verb == "insert":
            rc = lib.insert_entry(c, entry, 0, h)
        elif verb == "delete":
            rc = lib.delete_entry(c, entry, b"\xff" * len(entry), h)
        elif verb == "flush":
            rc = lib.flush_entries(c, h)
        elif verb == "create":
            rc = lib.create_chain(c, h)
        else:
            rc = lib.delete_chain(c, h)
        if not rc:
            flag = {"append": "-A", "insert": "-I", "delete": "-D", "flush": "-F",
                    "create": "-N", "remove": "-X"}[verb]
            self._fail(f"{flag} {chain}" + (f" {rule}" if rule else ""))

    def commit(self):
        self._ok(self.lib.commit(self.h), "commit")

    def close(self):
        if self.h:
            self.lib.free(self.h)
            self.h = None


def steps(fam, tc):
    """The steps of TableChange ``tc`` (family ``fam``) for :meth:`Table.step`, in the order
    its restore text has (plan.TableChange.text), each rule packed: [(verb, chain, rule,
    entry)]. None if a rule is not one :func:`encode` packs (the restore tools take it)."""
    out = [("declare", n, None, None) for n in list(tc.chains) + tc.new_bags]
    rules = [("append", n, r) for n, c in tc.chains.items() for r in c.printed()]
    rules += [("delete", n, r) for n, rs in tc.bag_del.items() for r in rs]
    rules += [("append", n, r) for n, rs in tc.bag_add.items() for r in rs]
    rules += [("delete", b, f"-j {e}") for b, e in tc.moved]
    rules += [("insert", b, f"-j {e}") for b, e in tc.hooks]
    try:
        out += [(verb, n, r, encode(fam, r)[0]) for verb, n, r in rules]
    except NotEncodable:
        return None
    out += [("flush", n, None, None) for n in tc.stale]
    out += [("remove", n, None, None) for n in tc.stale]
    return out


def prepare(lib, table, todo):
    """``table`` read and ``todo`` (from :func:`steps`) made on libiptc's copy, not
    committed: the Table (commit, then close it). KernelError if libiptc refuses a step (the
    copy is freed; the kernel's table was not touched)."""
    t = Table(lib, table)
    try:
        for step in todo:
            t.step(*step)
    except BaseException:
        t.close()
        raise
    return t


def apply(lib, table, todo):
    """Make ``todo`` (from :func:`steps`) on ``table`` through libiptc and commit it;
    KernelError if libiptc refuses a step (the table then stays as it was)."""
    t = prepare(lib, table, todo)
    try:
        t.commit()
    finally:
        t.close()
