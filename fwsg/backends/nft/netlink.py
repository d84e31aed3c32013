"""The nft backend's netlink transport: plan operations as ``NetlinkWriter`` ops (libnftnl
batches, no libnftables cache refill), the kernel encodings of elements, and the split of a big
cold start into bounded steps.

An element's canonical nft text (``"tap1" . fa:16:3e:00:00:01 . 192.0.2.1``, ``0x00010000``,
``jump p1a2b-e``) becomes the bytes nf_tables stores: concatenated components each padded to
4 bytes, interface names as 16 NUL-padded bytes, addresses in network order, marks in host
order. Only the types fwsg uses are known; anything else is ``None`` (the caller then goes
through libnftables). No I/O here.
"""

import re
import socket
import sys

from fwsg import fast
from fwsg.members import Members
from fwsg.backends.nft import matches
from fwsg.ops import (AddElements, DeclareChain, DeleteChain, DeleteElements, FillChain,
                      FlushChain)

BULK_THRESHOLD = 20000  # element additions above which a plan is committed in steps
BULK_CHUNK = 30000      # elements per step: keeps each netlink batch short
NETLINK_MAX = 30000     # elements a plan may carry on the netlink path (one page)

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


# -- plans as NetlinkWriter ops ---------------------------------------------------------------

_SIMPLE = re.compile(r"^(?:jump ([a-z0-9][a-z0-9-]*)|drop)$")


def simple_rules(chain):
    """NetlinkWriter ops for the rules of a regular chain: "rule" for plain verdicts
    (``jump X``/``drop``: the port profiles), "xrule" for the matches of group chains in the
    inet table (``matches.encode``); None when one rule is neither."""
    if chain.hook is not None:
        return None
    rendered = chain.rendered_rules()
    out = []
    for i, rule in enumerate(chain.rules or ("return",)):
        comment = None
        if i == len(rendered) - 1:
            comment = rendered[-1][len(rule):].strip()
            if not (comment.startswith('comment "') and comment.endswith('"')):
                return None
            comment = comment[9:-1]
        m = _SIMPLE.match(rule)
        if m:
            out.append(("rule", chain.family, chain.name, "jump" if m.group(1) else "drop",
                        m.group(1), comment))
        elif chain.family == "inet":
            try:
                exprs = matches.encode(rule)
            except ValueError:
                return None
            out.append(("xrule", chain.family, chain.name, rule, exprs, comment))
        else:
            return None
    return out


def _element_op(add, sd, items):
    """One NetlinkWriter "elem" op (raises ValueError for what it cannot encode)."""
    if sd.is_map:
        if add:
            keys = [encode_key(sd.key_type, k) for k, _ in items]
            values = [encode_value(sd.value_type, v) for _, v in items]
            return ("elem", True, sd.family, sd.name, [k for k, _ in items], keys, 0, values)
        return ("elem", False, sd.family, sd.name, list(items),
                [encode_key(sd.key_type, k) for k in items], 0, None)
    if sd.key_type in ("ipv4_addr", "ipv6_addr"):
        fam = 4 if sd.key_type == "ipv4_addr" else 6
        keys = _packed_keys(items, fam)
        texts = items if isinstance(items, Members) else list(items)
        return ("elem", add, sd.family, sd.name, texts, keys, 4 if fam == 4 else 16, None)
    return ("elem", add, sd.family, sd.name, list(items),
            [encode_key(sd.key_type, t) for t in items], 0, None)


def _packed_keys(items, fam):
    """The packed records of address elements (a Members is taken as it is: no text);
    ValueError when one is not a host address of ``fam``."""
    if isinstance(items, Members) and items.family == fam and not items.prefixes:
        return items.packed
    keys, rejects = fast.pack_addrs(list(items), fam)
    if rejects or len(keys) // (4 if fam == 4 else 16) != len(items):
        raise ValueError(rejects[0] if rejects else "duplicate element")
    return keys


def netlink_ops(plan):
    """The plan as NetlinkWriter ops, in the plan's order, when every operation is one the
    writer carries: elements of sets and maps of known encodings, and regular chains whose
    rules are plain verdicts (declared, filled, flushed, deleted); else None (tables, set
    declarations, base chains, real matches: libnftables takes the plan). None too above
    ``NETLINK_MAX`` elements (one page)."""
    out, elements = [], 0
    try:
        for op in plan.ops:
            kind = type(op)
            if kind is AddElements or kind is DeleteElements:
                if not encodable(op.set):
                    return None
                items = op.elements if kind is AddElements else op.keys
                elements += len(items)
                if elements > NETLINK_MAX:
                    return None
                out.append(_element_op(kind is AddElements, op.set, items))
            elif kind is DeclareChain:
                if simple_rules(op.chain) is None:
                    return None
                out.append(("chain", op.chain.family, op.chain.name))
            elif kind is FillChain:
                rules = simple_rules(op.chain)
                if rules is None:
                    return None
                out += rules
            elif kind is FlushChain:
                out.append(("flush", op.family, op.name))
            elif kind is DeleteChain:
                out.append(("delchain", op.family, op.name))
            else:
                return None
    except ValueError:
        return None
    return out or None


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
