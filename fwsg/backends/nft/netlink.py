"""The nft backend's netlink transport: plan operations as ``NetlinkWriter`` ops (libnftnl
batches, no libnftables cache refill): tables, set and map declarations, chains (base chains
too), rules (``matches``), elements, and the split of a big cold start into bounded steps.

An element's canonical nft text (``"tap1" . fa:16:3e:00:00:01 . 192.0.2.1``, ``0x00010000``,
``jump p1a2b-e``) becomes the bytes nf_tables stores: concatenated components each padded to
4 bytes, interface names as 16 NUL-padded bytes, addresses in network order, marks in host
order. Only the types fwsg uses are known; anything else is ``None`` (the caller then goes
through libnftables). No I/O here.
"""

import functools
import re
import socket
import sys

from fwsg import fast
from fwsg.members import Members
from fwsg.backends.nft import matches, render
from fwsg.backends.nft.layout import ZONE_VALUE
from fwsg.ruleset import MARKER
from fwsg.ops import (AddElements, AddRule, CreateSet, CreateTable, DeclareChain, DeleteChain,
                      DeleteElements, DeleteRule, DeleteSet, DeleteTable, FillChain, FlushChain,
                      ReplaceRule)

BULK_THRESHOLD = 20000  # element additions above which a plan is committed in steps
BULK_CHUNK = 30000      # elements per step: keeps each netlink batch short
NETLINK_MAX = 30000     # elements a plan may carry on the netlink path (one page)

_IFNAMSIZ = 16
WIDTH = {"ipv4_addr": 4, "ipv6_addr": 16, "mark": 4, "ifname": 16, "ether_addr": 6,
         "nf_proto": 1, "inet_proto": 1, "inet_service": 2}


def _ifname(text):
    raw = text.strip('"').encode()
    if len(raw) >= _IFNAMSIZ:
        raise ValueError(text)
    return raw.ljust(_IFNAMSIZ, b"\0")


def _byte_of(names):
    """text -> one byte: a name nft lists (``ipv4``, ``tcp``) or a number 0-255."""
    def encode(text):
        n = names.get(text)
        if n is None:
            if not (text.isascii() and text.isdigit() and int(text) <= 255):
                raise ValueError(text)
            n = int(text)
        return bytes([n])
    return encode


def _service(text):
    """A port (``inet_service``) in network order."""
    if not (text.isascii() and text.isdigit() and int(text) <= 65535):
        raise ValueError(text)
    return int(text).to_bytes(2, "big")


_ATOMS = {
    "nf_proto": _byte_of({f"ipv{fam}": n for fam, n in matches.NFPROTO.items()}),
    "inet_proto": _byte_of(matches.PORT_PROTOS),
    "inet_service": _service,
    "ipv4_addr": functools.partial(socket.inet_pton, socket.AF_INET),
    "ipv6_addr": functools.partial(socket.inet_pton, socket.AF_INET6),
    "mark": lambda text: int(text, 16).to_bytes(4, sys.byteorder),
    "ifname": _ifname,
    "ether_addr": lambda text: bytes.fromhex(text.replace(":", "")),
}


def _atom(typ, text):
    try:
        return _ATOMS[typ](text)
    except (KeyError, OSError) as e:
        raise ValueError(text) from e


@functools.lru_cache(maxsize=64)
def _encoder(key_type):
    """text -> key bytes for ``key_type`` (ValueError for what it cannot encode)."""
    types = key_type.split(" . ")
    if any(t not in _ATOMS for t in types):
        raise ValueError(key_type)
    if len(types) == 1 and types[0] not in ("ipv4_addr", "ipv6_addr"):
        return _ATOMS[types[0]]      # raises ValueError itself
    if len(types) == 1:
        pton = _ATOMS[types[0]]

        def encode_address(text):
            try:
                return pton(text)
            except OSError as e:   # inet_pton
                raise ValueError(text) from e
        return encode_address
    atoms = [(_ATOMS[t], b"\0" * (-WIDTH[t] % 4)) for t in types]

    def encode(text):
        parts = text.split(" . ") if len(atoms) > 1 else (text,)
        if len(parts) != len(atoms):
            raise ValueError(text)
        try:
            return b"".join([atom(part) + pad for (atom, pad), part in zip(atoms, parts)])
        except OSError as e:   # inet_pton
            raise ValueError(text) from e
    return encode


def encodable(sdef):
    """True when elements of this set/map can take the direct path."""
    if sdef.interval:
        return False
    if any(t not in WIDTH for t in sdef.key_type.split(" . ")):
        return False
    return sdef.value_type in (None, "mark", "verdict", ZONE_VALUE)


def encode_key(key_type, text):
    """Key bytes of one element (components padded to 4 bytes when concatenated)."""
    return _encoder(key_type)(text)


def encode_value(value_type, text):
    """A map value: bytes for a mark or a conntrack zone (2 bytes, host order), the target
    chain (str) for ``jump CHAIN``, the verdict code (int) for ``drop``."""
    if value_type == "mark":
        return _atom("mark", text)
    if value_type == ZONE_VALUE:
        try:
            return int(text).to_bytes(2, sys.byteorder)
        except (ValueError, OverflowError) as e:
            raise ValueError(text) from e
    if value_type == "verdict" and text.startswith("jump "):
        return text[5:]
    if value_type == "verdict" and text == "drop":
        return matches.DROP
    raise ValueError(text)


# -- declarations: tables, sets and maps, base chains ------------------------------------------

# nft type -> (kernel data type, key length, byte order nft records in the set's userdata)
_TYPES = {"ipv4_addr": (7, 4, 2), "ipv6_addr": (8, 16, 2), "ether_addr": (9, 6, 2),
          "mark": (19, 4, 1), "ifname": (41, 16, 1),
          "nf_proto": (2, 1, 1), "inet_proto": (12, 1, 1), "inet_service": (13, 2, 2)}
_VALUES = {"mark": (19, 4, 1), "verdict": (0xffffff00, 0, 0),   # NFT_DATA_VERDICT
           ZONE_VALUE: (4, 2, 1)}                                # integer, 16 bits
# A zone map is declared ``typeof KEY : ct zone``: nft 1.0.6 records both expressions in the
# set's userdata (after the byte orders, before its merge flag).
_ZONE_TYPEOF = {
    "mark": bytes.fromhex("030e" "000409000000" "0106" "000403000000"),              # meta mark
    "ipv4_addr": bytes.fromhex("0314" "000407000000" "010c" "00040c000000" "01040c000000"),
    "ipv6_addr": bytes.fromhex("0314" "000407000000" "010c" "00040d000000" "010409000000"),
}
_CT_ZONE_TYPEOF = bytes.fromhex("0414" "00040c000000" "010c" "000411000000" "0104ffffffff")
_TYPE_BITS = 6                      # a concatenation's type: its parts' types, 6 bits each
_CONCAT_UDATA = bytes.fromhex("03080004" "0d000000" "0100")   # nft 1.0.6's typeof record
_SET_INTERVAL, _SET_MAP, _SET_CONCAT = 0x4, 0x8, 0x80
_HOOKS = {"prerouting": 0, "input": 1, "forward": 2, "output": 3, "postrouting": 4}
_ACCEPT = 1                         # NF_ACCEPT: every base chain's policy


def _udata_u32(kind, value):
    return bytes([kind, 4]) + value.to_bytes(4, sys.byteorder)


def set_op(sd):
    """The NetlinkWriter "set" op declaring ``sd`` as nft 1.0.6 does (flags, key and data
    types, lengths, userdata); ValueError for a type fwsg does not use."""
    parts = sd.key_type.split(" . ")
    kinds = [_TYPES[t] for t in parts]
    flags = (_SET_INTERVAL if sd.interval else 0) | (_SET_MAP if sd.is_map else 0)
    fields = None
    if len(parts) == 1:
        key_type, key_len, order = kinds[0]
        udata = _udata_u32(0, order)
    else:
        key_type, key_len = 0, 0
        for typ, width, _ in kinds:
            key_type = (key_type << _TYPE_BITS) | typ
            key_len += width + (-width % 4)
        udata = _udata_u32(0, 0) + _CONCAT_UDATA
        if sd.interval:
            flags |= _SET_CONCAT
            fields = bytes(width for _, width, _ in kinds)
    data_type = data_len = None
    if sd.is_map:
        if len(parts) > 1:
            raise ValueError(sd.key_type)
        data_type, data_len, data_order = _VALUES[sd.value_type]
        udata += _udata_u32(1, data_order)
        if sd.value_type == ZONE_VALUE:
            udata += _ZONE_TYPEOF[sd.key_type] + _CT_ZONE_TYPEOF
        udata += _udata_u32(6, 0)
    return ("set", sd.family, sd.name, flags, key_type, key_len, data_type, data_len, udata,
            fields, render.declare_set(sd))


def chain_op(cd):
    """The NetlinkWriter "chain" op creating ``cd`` (with its hook, priority and policy
    accept when a base chain)."""
    if cd.hook is None:
        return ("chain", cd.family, cd.name)
    words = cd.hook.split()
    if len(words) != 5 or words[0] != "filter" or words[1] != "hook" or words[3] != "priority":
        raise ValueError(cd.hook)
    return ("chain", cd.family, cd.name, _HOOKS[words[2]], int(words[4]), _ACCEPT,
            render.declare_chain(cd))


# -- plans as NetlinkWriter ops ---------------------------------------------------------------

_SIMPLE = re.compile(r"^(?:jump ([a-z0-9][a-z0-9-]*)|drop)$")


@functools.lru_cache(maxsize=65536)
def _rule_body(family, rule):
    """(kind, a, b) of one rule text: ("rule", verdict, target) for a plain verdict,
    ("xrule", text, expressions) for matches; None when it does not encode. Rules repeat
    across chains and transactions: a bounded cache keeps them."""
    m = _SIMPLE.match(rule)
    if m:
        return ("rule", "jump" if m.group(1) else "drop", m.group(1))
    try:
        return ("xrule", rule, matches.encode(rule) if family == "inet" else
                matches.encode_layout(family, rule))
    except ValueError:
        pass
    try:
        return ("xrule", rule, matches.encode_layout(family, rule))
    except ValueError:
        return None


def simple_rules(chain):
    """NetlinkWriter ops for the rules of a chain, the last carrying the digest comment
    (:meth:`fwsg.ruleset.ChainDef.rendered_rules`): "rule" for plain verdicts (``jump X``/
    ``drop``: the port profiles), "xrule" for rules with matches (group chains:
    ``matches.encode``; the layout's base, fixed, anti-spoofing and zone chains:
    ``matches.encode_layout``); None when one rule is none of these."""
    rules = chain.rules or ("return",)
    family, name, last = chain.family, chain.name, len(rules) - 1
    out = []
    for i, rule in enumerate(rules):   # rule_op(chain, i) for each, inline: a cold start's
        body = _rule_body(family, rule)   # thousands of port-profile rules come through here
        if body is None:
            return None
        out.append((body[0], family, name, body[1], body[2],
                    f"{MARKER}{chain.digest}/{len(rules)}" if i == last else None))
    return out


def editable(chain):
    """True when every rule of ``chain`` can be sent on its own (rule by rule edits); found
    once per ChainDef and kept on it (a ChainDef never changes; no hashing of its rules)."""
    memo = chain.__dict__.get("_editable")
    if memo is None:
        memo = chain.hook is None and simple_rules(chain) is not None
        object.__setattr__(chain, "_editable", memo)   # derived, not a field
    return memo


def rule_op(chain, i, before=None, replace=None):
    """The NetlinkWriter op adding rule ``i`` of ``chain`` (the last one carrying the chain's
    digest comment): appended, inserted before handle ``before`` or replacing handle
    ``replace``; None when the rule does not encode (see :func:`simple_rules`)."""
    rules = chain.rules or ("return",)
    body = _rule_body(chain.family, rules[i])
    if body is None:
        return None
    comment = f"{MARKER}{chain.digest}/{len(rules)}" if i == len(rules) - 1 else None
    where = () if before is None and replace is None else (before, replace)
    return (body[0], chain.family, chain.name, body[1], body[2], comment) + where


def _element_op(add, sd, items):
    """One NetlinkWriter "elem" op (raises ValueError for what it cannot encode)."""
    if sd.key_type in ("ipv4_addr", "ipv6_addr") and not sd.is_map:  # no encoder to build
        fam = 4 if sd.key_type == "ipv4_addr" else 6
        keys = _packed_keys(items, fam)
        texts = items if isinstance(items, Members) else list(items)
        return ("elem", add, sd.family, sd.name, texts, keys, 4 if fam == 4 else 16, None)
    enc = _encoder(sd.key_type)
    if sd.is_map:
        if add:
            keys = [enc(k) for k, _ in items]
            if sd.value_type == "mark":   # encode_value's, without a dispatch per element
                mark = _ATOMS["mark"]
                values = [mark(v) for _, v in items]
            else:
                values = [encode_value(sd.value_type, v) for _, v in items]
            return ("elem", True, sd.family, sd.name, [k for k, _ in items], keys, 0, values)
        return ("elem", False, sd.family, sd.name, list(items), [enc(k) for k in items], 0,
                None)
    return ("elem", add, sd.family, sd.name, list(items), [enc(t) for t in items], 0, None)


def _packed_keys(items, fam):
    """The packed records of address elements (a Members is taken as it is: no text);
    ValueError when one is not a host address of ``fam``."""
    if isinstance(items, Members) and items.family == fam and not items.prefixes:
        return items.packed
    keys, rejects = fast.pack_addrs(list(items), fam)
    if rejects or len(keys) // (4 if fam == 4 else 16) != len(items):
        raise ValueError(rejects[0] if rejects else "duplicate element")
    return keys


def netlink_ops(plan, limit=NETLINK_MAX):
    """The plan (or a list of operations) as NetlinkWriter ops, in order, when every
    operation is one the writer carries: tables, set and map declarations of the types fwsg
    uses, chains (base chains too) whose rules all encode (:func:`simple_rules`), rules added,
    replaced or deleted by handle, elements of sets and maps of known encodings (not interval
    sets); else None (libnftables takes the plan). None too above ``limit`` elements (one
    page)."""
    found = netlink_ops_traced(plan, limit)
    return None if found is None else found[0]


def netlink_ops_traced(plan, limit=NETLINK_MAX):
    """``netlink_ops(plan, limit)`` and, per NetlinkWriter op, the index of the plan
    operation it comes from (to give the handles the kernel reports back to the plan); None
    as there."""
    out, origin, elements, filled = [], [], 0, {}
    try:
        for n, op in enumerate(getattr(plan, "ops", plan)):
            origin.extend([n - 1] * (len(out) - len(origin)))
            kind = type(op)
            if kind is AddRule or kind is ReplaceRule:   # a rule change: first, it is hot
                wop = rule_op(op.chain, op.index, op.before if kind is AddRule else None,
                              op.handle if kind is ReplaceRule else None)
                if wop is None:
                    return None
                out.append(wop)
            elif kind is DeleteRule:
                out.append(("delrule", op.family, op.name, op.handle))
            elif kind is AddElements or kind is DeleteElements:
                if not encodable(op.set):
                    return None
                items = op.elements if kind is AddElements else op.keys
                elements += len(items)
                if elements > limit:
                    return None
                out.append(_element_op(kind is AddElements, op.set, items))
            elif kind is DeclareChain:
                rules = simple_rules(op.chain)
                if rules is None:
                    return None
                filled[op.chain.key] = (op.chain, rules)   # its FillChain follows
                out.append(chain_op(op.chain))
            elif kind is FillChain:
                chain, rules = filled.pop(op.chain.key, (None, None))
                if chain is not op.chain:
                    rules = simple_rules(op.chain)
                if rules is None:
                    return None
                out += rules
            elif kind is FlushChain:
                out.append(("flush", op.family, op.name))
            elif kind is DeleteChain:
                out.append(("delchain", op.family, op.name))
            elif kind is CreateSet:
                out.append(set_op(op.set))
            elif kind is DeleteSet:
                out.append(("delset", op.set.family, op.set.name, render.RENDER[kind](op)[0]))
            elif kind is CreateTable or kind is DeleteTable:
                out.append(("table" if kind is CreateTable else "deltable", op.family,
                            render.RENDER[kind](op)[0]))
            else:
                return None
    except (ValueError, KeyError):
        return None
    if not out:
        return None
    origin.extend([n] * (len(out) - len(origin)))   # the last operation's
    return out, origin


def _is_bulk(op):
    return (type(op) is AddElements and not op.set.interval and not op.set.is_map
            and op.set.key_type in ("ipv4_addr", "ipv6_addr"))


def split_bulk(plan, threshold=BULK_THRESHOLD, chunk=BULK_CHUNK):
    """For a big cold start or resync: (rest, batches) where ``rest`` is the plan's ops without
    the element additions of plain address sets and ``batches`` those additions as
    NetlinkWriter element batches of at most ``chunk`` elements each. Committed in that order,
    every step is atomic and leaves a ruleset that is correct and never more open than the
    target (a remote group lacking members matches less). None when the plan adds fewer than
    ``threshold`` such elements."""
    bulk = [op for op in plan.ops if _is_bulk(op)]
    if sum(len(op.elements) for op in bulk) < threshold:
        return None
    batches, current, size = [], [], 0
    for op in bulk:
        sd, added = op.set, op.elements
        fam, width = (4, 4) if sd.key_type == "ipv4_addr" else (6, 16)
        try:
            packed = _packed_keys(added, fam)
        except ValueError:
            return None
        for i in range(0, len(added), chunk):
            part = packed[i * width:(i + chunk) * width]
            texts = Members(fam, part)  # their text, rendered only if read
            if size and size + len(texts) > chunk:
                batches.append(current)
                current, size = [], 0
            current.append(("elem", True, sd.family, sd.name, texts, part, width, None))
            size += len(texts)
    if current:
        batches.append(current)
    return [op for op in plan.ops if not _is_bulk(op)], batches
