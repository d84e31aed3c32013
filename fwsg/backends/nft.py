"""The nftables backend: commits a Plan in-process through libnftables and reads fwsg's own
tables back into a Ruleset.

It only ever names ``bridge fwsg`` and ``inet fwsg``: it never lists, flushes or changes any
other table. One long-lived libnftables context per namespace.
"""

import json

from fwsg import fast
from fwsg.errors import KernelError
from fwsg.netns import entered
from fwsg.ruleset import FAMILIES, MARKER, TABLE, ChainDef, Ruleset, SetDef

_ADDR_TYPES = {"ipv4_addr", "ipv6_addr"}


class NftBackend:
    """Kernel access for one network namespace (None = the caller's)."""

    name = "nft"

    def __init__(self, netns=None):
        self.netns = netns
        with entered(netns):
            self._ctx = fast.NftContext()
            self._writer = fast.NetlinkWriter()

    def close(self):
        self._ctx.close()
        self._writer.close()

    def run(self, text, json_output=False):
        """Run nft text in this namespace; KernelError when refused (nothing changed then)."""
        return self._ctx.run(text, json_output)

    def commit(self, plan):
        """Commit one Plan as one atomic transaction; nothing for an empty plan. A plan of element
        changes and plain-verdict chains (port profiles) goes straight to netlink (no
        libnftables cache refill); anything else through libnftables. A plan adding many address elements (a
        cold start) is committed in steps: the structure through libnftables, then the elements
        in bounded netlink batches, each step atomic and never more open than the target.
        Returns which way it went."""
        if not plan:
            return None
        ops = plan.netlink_ops()
        if ops:
            self._writer.commit(ops)
            return "netlink"
        split = plan.split_bulk()
        if split is not None:
            text, batches = split
            self._ctx.run(text)
            for batch in batches:
                self._writer.commit(batch)
            return "libnftables+netlink"
        self._ctx.run(str(plan))
        return "libnftables"

    def prepare_host(self):
        """Before the first commit: remove what the iptables backend left here; notices."""
        from fwsg.backends.iptables.switch import remove_iptables_state

        return remove_iptables_state(self.netns, self._ctx.run("list tables"))

    def flush(self):
        """Delete fwsg's tables (those that exist); return the families removed."""
        present = [f for f in FAMILIES if self._table_json(f) is not None]
        if present:
            self._ctx.run("".join(f"delete table {f} {TABLE}\n" for f in present))
        return present

    def _table_json(self, family):
        try:
            out = self._ctx.run(f"list table {family} {TABLE}", json_output=True)
        except KernelError as e:
            if "No such file or directory" in str(e):
                return None
            raise
        return json.loads(out)["nftables"] if out.strip() else []

    def read(self):
        """The current state of fwsg's tables as a Ruleset (chains carry the digest found in the
        kernel; a chain whose rules were changed by someone else gets a digest that matches
        nothing)."""
        rs = Ruleset(tables=frozenset())
        handles = {}
        tables = set()
        for family in FAMILIES:
            items = self._table_json(family)
            if items is None:
                continue
            tables.add(family)
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
                digest = _digest_of(rlist)
                object.__setattr__(chain, "digest", digest)
                object.__setattr__(chain, "rules", tuple(f"#{r.get('handle')}" for r in rlist))
                handles[key] = [r.get("handle") for r in rlist]
        rs.tables = frozenset(tables)
        rs.meta = {"handles": handles}
        return rs


def _digest_of(rules):
    """The digest a chain's rules carry if they are exactly what fwsg committed, else ''."""
    if not rules:
        return ""
    comment = rules[-1].get("comment", "")
    if not comment.startswith(MARKER):
        return "drift"
    digest, _, count = comment[len(MARKER):].partition("/")
    if not count.isdigit() or int(count) != len(rules):
        return "drift"
    return digest


def parse_set(obj, is_map):
    """A SetDef and its elements (canonical text) from nft's JSON for one set or map."""
    typ = obj["type"]
    types = typ if isinstance(typ, list) else [typ]
    key_type = " . ".join(types)
    value_type = obj.get("map") if is_map else None
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
    return sdef, {_key_text(_unwrap(e), types) for e in raw}


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
