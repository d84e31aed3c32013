"""nft text of plan operations: what libnftables parses, and what ``fwsg apply --dry-run`` and
``str(plan)`` show. One statement per line; element lists are sorted and cut into statements of
at most 4,096 elements. Names are fwsg's derived names (``[a-z0-9-]``), never user text. No I/O.
"""

from fwsg import fast
from fwsg.ops import (AddElements, AddRule, CreateSet, CreateTable, DeclareChain, DeleteChain,
                      DeleteElements, DeleteRule, DeleteSet, DeleteTable, FillChain, FlushChain,
                      ReplaceRule)
from fwsg.ruleset import TABLE

CHUNK = 4096  # elements per "add element" statement


def declare_set(sd):
    """``add set|map FAMILY fwsg NAME { type ...; [flags interval;] }``."""
    typ = f"{sd.key_type} : {sd.value_type}" if sd.value_type else sd.key_type
    kind = "map" if sd.is_map else "set"
    return (f"add {kind} {sd.family} {TABLE} {sd.name} "
            "{ type %s;%s }" % (typ, " flags interval;" if sd.interval else ""))


def declare_chain(cd):
    """``add chain FAMILY fwsg NAME`` (with ``{ type HOOK; policy accept; }`` for base chains)."""
    if cd.hook:
        return f"add chain {cd.family} {TABLE} {cd.name} {{ type {cd.hook}; policy accept; }}"
    return f"add chain {cd.family} {TABLE} {cd.name}"


def _elements(verb, sd, items):
    head = f"{verb} element {sd.family} {TABLE} {sd.name} {{ "
    items = sorted(items)   # a plan's elements may come in any order; the text does not
    return [head + fast.render_elements(items[i:i + CHUNK]) + " }"
            for i in range(0, len(items), CHUNK)]


def _add_elements(op):
    return _elements("add", op.set, op.elements)


def _delete_elements(op):
    return _elements("delete", op.set, op.keys)


def _fill(op):
    prefix = f"add rule {op.chain.family} {TABLE} {op.chain.name} "
    return [prefix + r for r in op.chain.rendered_rules()]


def _add_rule(op):
    c = op.chain
    rule = c.rendered_rules()[op.index]
    if op.before is None:
        return [f"add rule {c.family} {TABLE} {c.name} {rule}"]
    return [f"insert rule {c.family} {TABLE} {c.name} position {op.before} {rule}"]


def _replace_rule(op):
    c = op.chain
    return [f"replace rule {c.family} {TABLE} {c.name} handle {op.handle} "
            f"{c.rendered_rules()[op.index]}"]


def _set_kind(sd):
    return "map" if sd.is_map else "set"


RENDER = {
    CreateTable: lambda op: [f"add table {op.family} {TABLE}"],
    DeleteTable: lambda op: [f"delete table {op.family} {TABLE}"],
    CreateSet: lambda op: [declare_set(op.set)],
    DeleteSet: lambda op: [f"delete {_set_kind(op.set)} {op.set.family} {TABLE} {op.set.name}"],
    AddElements: _add_elements,
    DeleteElements: _delete_elements,
    DeclareChain: lambda op: [declare_chain(op.chain)],
    FillChain: _fill,
    FlushChain: lambda op: [f"flush chain {op.family} {TABLE} {op.name}"],
    DeleteChain: lambda op: [f"delete chain {op.family} {TABLE} {op.name}"],
    AddRule: _add_rule,
    ReplaceRule: _replace_rule,
    DeleteRule: lambda op: [f"delete rule {op.family} {TABLE} {op.name} handle {op.handle}"],
}


def render(ops):
    """The statements of ``ops``, in order (a list of str)."""
    out = []
    for op in ops:
        out.extend(RENDER[type(op)](op))
    return out


def _elements_size(verb, sd, items):
    head = len(f"{verb} element {sd.family} {TABLE} {sd.name} {{ ") + len(" }") + 1
    if sd.is_map and verb == "add":
        body = sum(len(k) + len(v) + 3 for k, v in items)
    else:
        body = sum(map(len, items))
    chunks = -(-len(items) // CHUNK)
    return chunks * head + body + 2 * (len(items) - chunks)


def size(ops):
    """The length in bytes of ``render(ops)`` joined one statement a line, counted without
    building the element lists' text."""
    total = 0
    for op in ops:
        kind = type(op)
        if kind is AddElements:
            total += _elements_size("add", op.set, op.elements)
        elif kind is DeleteElements:
            total += _elements_size("delete", op.set, op.keys)
        else:
            total += sum(len(c) + 1 for c in RENDER[kind](op))
    return total


render.size = size   # Plan.size asks the renderer for this when it has it
