"""An in-memory backend with the kernel's atomic semantics, for unit tests.

It interprets the nft commands fwsg emits (the closed subset ``plan.diff`` produces): a batch
either applies whole or raises KernelError and leaves the state as it was. Deleting something
that does not exist, or a set that a rule still references, fails as in the kernel.
"""

import copy
import re

from fwsg.backends.nft import _digest_of
from fwsg.errors import KernelError
from fwsg.ruleset import TABLE, ChainDef, Ruleset, SetDef

_CMD = re.compile(r"^(add|delete|flush) (table|set|map|chain|element|rule) (bridge|inet) "
                  + TABLE + r"(?: (\S+))?(?: (.*))?$")
_DECL = re.compile(r"^\{ type (.+?)(?: : (\S+))?;( flags interval;)? \}$")
_HOOK = re.compile(r"^\{ type (.+); policy accept; \}$")
_COMMENT = re.compile(r' comment "([^"]*)"$')


class FakeBackend:
    """Kernel stand-in: tables, sets/maps with elements, chains with rule lists."""

    name = "fake"

    def __init__(self):
        self.tables = set()
        self.sets = {}      # (family, name) -> SetDef
        self.elements = {}  # (family, name) -> set | dict
        self.chains = {}    # (family, name) -> [hook, [rule text...]]
        self.commits = 0    # transactions that changed something
        self._handle = 0

    def commit(self, plan):
        """Apply every command of ``plan`` or none (KernelError)."""
        if not plan:
            return None
        saved = copy.deepcopy((self.tables, self.sets, self.elements, self.chains, self._handle))
        try:
            for cmd in plan.commands:
                self._apply(cmd)
        except KernelError:
            self.tables, self.sets, self.elements, self.chains, self._handle = saved
            raise
        self.commits += 1
        return "fake"

    def flush(self):
        present = sorted(self.tables)
        for fam in present:
            self._apply(f"delete table {fam} {TABLE}")
        return present

    def read(self):
        rs = Ruleset(tables=frozenset(self.tables))
        for k, sd in self.sets.items():
            rs.sets[k] = sd
            rs.elements[k] = copy.copy(self.elements[k])
        for k, (hook, rules) in self.chains.items():
            c = ChainDef(k[0], k[1], tuple(f"#{h}" for h, _ in rules), hook)
            object.__setattr__(c, "digest", _digest_of([_as_json(r) for _, r in rules]))
            rs.chains[k] = c
        rs.meta = {"handles": {k: [h for h, _ in v[1]] for k, v in self.chains.items()}}
        return rs

    def rules(self, family, chain):
        """Rule texts of a chain (for tests)."""
        return [r for _, r in self.chains[(family, chain)][1]]

    # -- interpretation ---------------------------------------------------------------------
    def _apply(self, cmd):
        m = _CMD.match(cmd)
        if not m:
            raise KernelError(f"fake: cannot parse {cmd!r}")
        verb, obj, fam, name, rest = m.groups()
        key = (fam, name)
        if obj == "table":
            if verb == "add":
                self.tables.add(fam)
            elif verb == "delete":
                self._need(fam in self.tables, cmd)
                self.tables.discard(fam)
                for d in (self.sets, self.elements, self.chains):
                    for k in [k for k in d if k[0] == fam]:
                        del d[k]
            return
        self._need(fam in self.tables, cmd)
        if obj in ("set", "map"):
            if verb == "add":
                dm = _DECL.match(rest or "")
                if not dm or (obj == "map") != bool(dm.group(2)):
                    raise KernelError(f"fake: bad declaration {cmd!r}")
                sd = SetDef(fam, name, dm.group(1), dm.group(2), bool(dm.group(3)))
                if key in self.sets:
                    self._need(self.sets[key] == sd, cmd, "File exists")
                    return
                self.sets[key] = sd
                self.elements[key] = {} if sd.is_map else set()
            else:
                self._need(key in self.sets, cmd)
                ref = f"@{name}"
                for ck, (_, rules) in self.chains.items():
                    if ck[0] == fam and any(ref in r.split() or f"{ref}," in r for _, r in rules):
                        raise KernelError(f"fake: set {name} is in use: {cmd!r}")
                del self.sets[key], self.elements[key]
        elif obj == "element":
            self._need(key in self.sets, cmd)
            sd, elems = self.sets[key], self.elements[key]
            items = _split_elements(rest)
            if verb == "add":
                for it in items:
                    if sd.is_map:
                        k, v = it.split(" : ", 1)
                        if k in elems and elems[k] != v:
                            raise KernelError(f"fake: element {k} exists: {cmd!r}")
                        elems[k] = v
                    else:
                        elems.add(it)
            else:
                for it in items:
                    k = it.split(" : ", 1)[0]
                    self._need(k in elems, cmd)
                    if sd.is_map:
                        del elems[k]
                    else:
                        elems.discard(k)
        elif obj == "chain":
            if verb == "add":
                hook = None
                if rest:
                    hm = _HOOK.match(rest)
                    if not hm:
                        raise KernelError(f"fake: bad chain spec {cmd!r}")
                    hook = hm.group(1)
                if key not in self.chains:
                    self.chains[key] = [hook, []]
            elif verb == "flush":
                self._need(key in self.chains, cmd)
                self.chains[key][1] = []
            else:
                self._need(key in self.chains, cmd)
                self._need(not self.chains[key][1], cmd, "Device or resource busy")
                target = f"jump {name}"
                for ck, (_, rules) in self.chains.items():
                    if ck[0] == fam and any(target in r for _, r in rules):
                        raise KernelError(f"fake: chain {name} is in use: {cmd!r}")
                for ek, el in self.elements.items():
                    if ek[0] == fam and isinstance(el, dict) and target in el.values():
                        raise KernelError(f"fake: chain {name} is in use by a map: {cmd!r}")
                del self.chains[key]
        elif obj == "rule":
            self._need(key in self.chains, cmd)
            for ref in re.findall(r"@([a-z0-9-]+)", rest or ""):
                self._need((fam, ref) in self.sets, cmd)
            for target in re.findall(r"jump ([a-z0-9-]+)", rest or ""):
                self._need((fam, target) in self.chains, cmd)
            self._handle += 1
            self.chains[key][1].append((self._handle, rest))

    @staticmethod
    def _need(cond, cmd, why="No such file or directory"):
        if not cond:
            raise KernelError(f"fake: {why}: {cmd!r}")


def _split_elements(rest):
    body = (rest or "").strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise KernelError(f"fake: bad element list {rest!r}")
    body = body[1:-1].strip()
    return [e.strip() for e in body.split(", ")] if body else []


def _as_json(rule_text):
    m = _COMMENT.search(rule_text)
    return {"comment": m.group(1)} if m else {}
