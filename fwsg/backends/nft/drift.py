"""Drift that digests cannot see: fwsg's tables compared by content with what fwsg would write.

The kernel's rules, base chains (hook, priority, policy) and set/map declarations (type,
flags, ...) are compared with the same objects built from the desired state inside a private,
empty network namespace (a thread that unshares its own; it vanishes with the thread), both
listed by nftables as JSON: equal objects list equally, so any difference is someone else's
doing. Rule handles and elements are not compared here (elements are compared by the diff).

What differs is marked in the mirror of the kernel so that the diff rewrites it: a chain's
digest becomes ``drift`` (flushed and refilled); a family holding a changed base chain or a
re-declared set is rebuilt: its table is deleted and re-created in the same transaction (a set
still referenced by rules cannot be deleted on its own: "Device or resource busy").
"""

import copy
import ctypes
import json
import threading

from fwsg import fast
from fwsg.backends.nft.render import render
from fwsg.errors import EnvironmentProblem
from fwsg.ops import CreateSet, CreateTable, DeclareChain, DeleteTable, FillChain
from fwsg.plan import Plan
from fwsg.ruleset import FAMILIES, TABLE, Ruleset

_CLONE_NEWNET = 0x40000000
_RULE_SKIP = ("handle", "family", "table")
_OBJ_SKIP = ("handle", "family", "table", "elem")


def listing(run, families=FAMILIES):
    """{family: [JSON objects of ``table FAMILY fwsg``]} through ``run`` (libnftables)."""
    out = {}
    for fam in families:
        try:
            text = run(f"list table {fam} {TABLE}", json_output=True)
        except Exception as e:  # noqa: BLE001 - a missing table is simply absent
            if "No such file or directory" in str(e):
                continue
            raise
        out[fam] = json.loads(text)["nftables"] if text.strip() else []
    return out


def structure_text(desired):
    """nft text declaring the desired tables, sets/maps (no elements) and chains with rules."""
    chains = [c for _, c in sorted(desired.chains.items())]
    ops = [CreateTable(fam) for fam in sorted(desired.tables)]
    ops += [CreateSet(sd) for _, sd in sorted(desired.sets.items())]
    ops += [DeclareChain(c) for c in chains] + [FillChain(c) for c in chains]
    return "".join(line + "\n" for line in render(ops))


def expected_listing(desired):
    """The JSON listing nftables gives for the desired structure, built in a private network
    namespace (never the managed one)."""
    result = {}

    def build():
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(_CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
            ctx = fast.NftContext()
            try:
                ctx.run(structure_text(desired))
                result["listing"] = listing(ctx.run, sorted(desired.tables))
            finally:
                ctx.close()
        except Exception as e:  # noqa: BLE001 - reported to the caller
            result["error"] = e

    t = threading.Thread(target=build, name="fwsg-drift")
    t.start()
    t.join()
    if "error" in result:
        raise EnvironmentProblem(f"cannot build the reference ruleset for the drift check: "
                                 f"{result['error']}")
    return result["listing"]


def _index(items):
    """(chains {name: attrs}, rules {chain: [rule]}, sets {name: attrs}) of one listing."""
    chains, rules, sets = {}, {}, {}
    for item in items:
        if "chain" in item:
            c = item["chain"]
            chains[c["name"]] = {k: v for k, v in c.items() if k not in _OBJ_SKIP}
            rules.setdefault(c["name"], [])
        elif "rule" in item:
            r = item["rule"]
            rules.setdefault(r["chain"], []).append(
                json.dumps({k: v for k, v in r.items() if k not in _RULE_SKIP}, sort_keys=True))
        elif "set" in item or "map" in item:
            obj = item.get("set") or item.get("map")
            sets[obj["name"]] = ("map" in item,
                                 {k: v for k, v in obj.items() if k not in _OBJ_SKIP})
    return chains, rules, sets


def compare(desired, kernel, expected):
    """What differs between the kernel's listing and the expected one, for objects fwsg
    wants: (chains whose rules differ {(family, name)}, families to rebuild {family: reason})."""
    changed, rebuild = set(), {}
    for fam in desired.tables:
        if fam not in kernel or fam not in expected:
            continue
        kc, kr, ks = _index(kernel[fam])
        ec, er, es = _index(expected[fam])
        for name, attrs in ec.items():
            if name in kc and kc[name] != attrs:
                rebuild.setdefault(fam, f"chain {name} was changed ({_what(attrs, kc[name])})")
            elif name in kr and kr[name] != er.get(name, []):
                changed.add((fam, name))
        for name, decl in es.items():
            if name in ks and ks[name] != decl:
                rebuild.setdefault(fam, f"set {name} was re-declared "
                                        f"({_what(decl[1], ks[name][1])})")
    return changed, rebuild


def _what(want, have):
    keys = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
    return ", ".join(f"{k} {have.get(k)!r} instead of {want.get(k)!r}" for k in keys)[:200]


def mark(current, changed, rebuild):
    """A copy of ``current`` (the mirror) where changed chains carry the digest ``drift`` and
    rebuilt families are absent (the diff then re-creates them whole)."""
    out = Ruleset(tables=frozenset(f for f in current.tables if f not in rebuild))
    out.meta = dict(current.meta)
    out.meta["rule_handles"] = {k: v for k, v in current.meta.get("rule_handles", {}).items()
                                if k not in changed and k[0] not in rebuild}
    for k, sd in current.sets.items():
        if k[0] not in rebuild:
            out.sets[k] = sd
            out.elements[k] = current.elements[k]
    for k, c in current.chains.items():
        if k[0] in rebuild:
            continue
        if k in changed:
            c = copy.copy(c)
            object.__setattr__(c, "digest", "drift")
        out.chains[k] = c
    return out


def declarations_differ(desired, current):
    """Families where a set/map fwsg wants exists in the kernel with another declaration (a
    delete of that set would be refused while rules reference it): {family: reason}."""
    out = {}
    for k, sd in desired.sets.items():
        have = current.sets.get(k)
        if have is not None and have != sd:
            out.setdefault(k[0], f"set {k[1]} was re-declared")
    return out


def with_rebuild(plan, families):
    """``plan`` (made against a mirror without ``families``) preceded by the deletion of those
    tables, in the same transaction."""
    if not families:
        return plan
    pre = tuple(DeleteTable(fam) for fam in sorted(families))
    return Plan(pre + plan.ops, plan.summary, plan._render, plan.guard, plan.basis)


def inspect(backend, desired, current, deep):
    """Drift the digests cannot show, marked in a copy of the mirror ``current``: sets
    re-declared by someone else (their family is rebuilt in the transaction) and, with
    ``deep`` (reconcile), every rule, base chain and declaration compared by content.
    (mirror, {family: reason}, report lines)."""
    rebuild = declarations_differ(desired, current)
    changed = set()
    if deep:
        changed, more = compare(desired, listing(backend.run), expected_listing(desired))
        for fam, why in more.items():
            rebuild.setdefault(fam, why)
    if not changed and not rebuild:
        return current, {}, []
    notes = [f"table {fam} fwsg rebuilt in the transaction: {why}"
             for fam, why in sorted(rebuild.items())]
    notes += [f"chain {fam} fwsg {name}: rules changed by someone else"
              for fam, name in sorted(changed)]
    return mark(current, changed, rebuild), rebuild, notes
