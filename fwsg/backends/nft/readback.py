"""Reading fwsg's tables back: nft's JSON listing of one table -> Ruleset objects.

Elements come back as the canonical text the compiler produces (``"tap1" . fa:16:3e:..``,
``0x00010000``, ``jump p1a2b-e``), so a kernel holding what was compiled compares equal to it.
Chains come back with the digest their last rule's comment carries (``drift`` when the comment
is missing or the rule count differs: someone else changed the chain). No I/O here.
"""

from fwsg.backends.nft.layout import ZONE_VALUE
from fwsg.members import new_elements
from fwsg.ruleset import ChainDef, Ruleset, SetDef, digest_of


def parse_table(family, items, rs=None):
    """Add one table's objects (``items``: the ``nftables`` list of ``nft -j list table``) to
    ``rs`` (a new Ruleset if None) and return it; ``rs.meta["handles"]`` gets each chain's rule
    handles."""
    if rs is None:
        rs = Ruleset(tables=frozenset())
    rs.tables = rs.tables | {family}
    handles = rs.meta.setdefault("handles", {})
    rules = {}
    for item in items:
        if "set" in item or "map" in item:
            obj = item.get("set") or item.get("map")
            sdef, elems = parse_set(obj, "map" in item)
            rs.sets[sdef.key] = sdef
            rs.elements[sdef.key] = elems
        elif "chain" in item:
            c = item["chain"]
            hook = (f"{c['type']} hook {c['hook']} priority {c['prio']}"
                    if "hook" in c else None)
            rs.chains[(family, c["name"])] = ChainDef(family, c["name"], (), hook)
            rules[c["name"]] = []
        elif "rule" in item:
            r = item["rule"]
            rules.setdefault(r["chain"], []).append(r)
    for name, rlist in rules.items():
        key = (family, name)
        if key not in rs.chains:
            continue
        chain = rs.chains[key]
        object.__setattr__(chain, "digest", digest_of([r.get("comment", "") for r in rlist]))
        object.__setattr__(chain, "rules", tuple(f"#{r.get('handle')}" for r in rlist))
        handles[key] = [r.get("handle") for r in rlist]
    return rs


def parse_set(obj, is_map):
    """A SetDef and its elements (canonical text) from nft's JSON for one set or map."""
    typ = obj["type"]
    types = typ if isinstance(typ, list) else [typ]
    key_type = " . ".join(types)
    value_type = obj.get("map") if is_map else None
    if value_type == "integer":   # nft's JSON names no typeof: fwsg's only such maps
        value_type = ZONE_VALUE
    flags = obj.get("flags", [])
    flags = [flags] if isinstance(flags, str) else flags
    sdef = SetDef(obj["family"], obj["name"], key_type, value_type, "interval" in flags)
    raw = obj.get("elem", [])
    if is_map:
        elems = {}
        for e in raw:
            k, v = e
            elems[_key_text(_unwrap(k), types)] = _value_text(v, value_type)
        return sdef, elems
    elems = new_elements(sdef)  # an address set is kept packed
    elems.update([_key_text(_unwrap(e), types) for e in raw])
    return sdef, elems


def _unwrap(e):
    if isinstance(e, dict) and "elem" in e:
        return e["elem"]["val"]
    return e


def _key_text(val, types):
    if isinstance(val, dict) and "concat" in val:
        return " . ".join(_atom(v, t) for v, t in zip(val["concat"], types))
    return _atom(val, types[0])


def _atom(v, typ):
    if isinstance(v, dict):
        if "prefix" in v:
            return f"{v['prefix']['addr']}/{v['prefix']['len']}"
        if "range" in v:
            return f"{v['range'][0]}-{v['range'][1]}"
    if typ == "ifname":
        return f'"{v}"'
    if typ == "mark":
        return f"0x{int(v):08x}"
    return str(v)


def _value_text(v, value_type):
    if value_type == "verdict":
        if isinstance(v, dict):
            (verdict, arg), = v.items()
            if isinstance(arg, dict) and "target" in arg:
                return f"{verdict} {arg['target']}"
            return verdict
        return str(v)
    if value_type == "mark":
        return f"0x{int(v):08x}"
    return str(v)
