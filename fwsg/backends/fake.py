"""An in-memory kernel stand-in fed by typed plan operations, for unit tests (no root).

It keeps what the kernel keeps for fwsg's tables (tables, sets and maps with their elements,
chains with numbered rules) and refuses what the kernel refuses, with the kernel's errno:
a missing table, set, chain or element (ENOENT), a map key already bound to another value
(EEXIST), deleting a set a rule references or a chain something still jumps to (EBUSY), a
rule or map entry naming a set or chain that does not exist (ENOENT). Like this kernel, it
deletes a chain that still has rules (tests/netns/test_fake_matches_kernel.py holds the fake
to the real kernel's answers). Rules
carry handles as in the kernel (a replaced rule keeps its handle); a plan whose ``guard`` is not
the fake's generation (it moves with every commit) is refused with ERESTART; a commit reports
the handles of the rules it created and the generation it made (``plan.handles``,
``plan.after``), as the netlink path does. A
transaction applies whole or not at all. ``fail_next(n, errno)`` makes the next ``n`` commits
fail as a refusing kernel would; ``last_plan`` is the last plan handed to ``commit``; ``dump()``
lists the state as text (stable order) for golden tests and failure messages.
"""

import copy
import errno as E
import re

from fwsg.backends.nft.render import render
from fwsg.errors import KernelError
from fwsg.ops import (AddElements, AddRule, CreateSet, CreateTable, DeclareChain, DeleteChain,
                      DeleteElements, DeleteRule, DeleteSet, DeleteTable, FillChain, FlushChain,
                      ReplaceRule)
from fwsg.plan import Plan, diff
from fwsg.ruleset import ChainDef, Ruleset, digest_of

_SET_REF = re.compile(r"@([a-z0-9][a-z0-9-]*)")
_JUMP = re.compile(r"\b(?:jump|goto) ([a-z0-9][a-z0-9-]*)")
_COMMENT = re.compile(r' comment "([^"]*)"$')


class FakeBackend:
    """Kernel stand-in: tables, sets/maps with elements, chains with rule lists. Implements
    :class:`fwsg.backends.base.Backend` (diff and desired state as the nft backend: the fake
    stands in for the kernel, not for the layout)."""

    name = "fake"
    tracks_conntrack = False  # no flows here

    def __init__(self, netns=None):
        self.netns = netns
        self.tables = set()
        self.sets = {}      # (family, name) -> SetDef
        self.elements = {}  # (family, name) -> set | dict
        self.chains = {}    # (family, name) -> [hook, [(handle, rule text), ...]]
        self.commits = 0    # transactions that changed something
        self.last_plan = None
        self._handle = 0
        self._gen = 0        # generation: moves with every commit
        self._failures = []  # errnos of the next refused commits

    # -- the Backend interface ----------------------------------------------------------------
    def prepare_host(self, mode="bridge"):
        return []

    def conntrack_in_use(self):
        return False

    def desired(self, port_ids=None, group_names=None):
        from fwsg.backends.nft.desired import Desired

        return Desired(port_ids, group_names=group_names)

    def generation(self):
        """The fake kernel keeps no generation: a fresh Firewall always reads it back."""
        return None

    def read_port_ids(self):
        return self.port_ids(self.read())

    def drift(self, desired, current, deep=False):
        """The fake kernel only changes through plans: no drift beyond what diff sees."""
        return current, {}, []

    def describe(self, state, names=None):
        """A summary of ``state`` (from :meth:`read`) for people: ports, groups, sets."""
        from fwsg.backends.nft.describe import describe

        return describe(state, names)

    def port_ids(self, current):
        from fwsg.backends.nft.desired import port_ids

        return port_ids(current)

    def diff(self, desired, current, pending=None):
        return diff(desired.rs, current, pending, render, lambda chain: chain.hook is None)

    def empty_plan(self):
        return Plan((), {}, render)

    def close(self):
        pass

    def fail_next(self, n=1, errno=E.EPERM):
        """Refuse the next ``n`` non-empty commits with ``errno`` (state unchanged)."""
        self._failures.extend([errno] * n)

    def commit(self, plan):
        """Apply every operation of ``plan`` or none (KernelError carrying the errno)."""
        self.last_plan = plan
        if not plan:
            return None
        if self._failures:
            code = self._failures.pop(0)
            raise KernelError(f"fake: transaction refused (injected, errno {code})", code)
        if plan.guard is not None and plan.guard != self._gen:
            raise KernelError(f"fake: generation {self._gen}, not {plan.guard}", E.ERESTART)
        saved = copy.deepcopy((self.tables, self.sets, self.elements, self.chains, self._handle))
        reported = {}
        try:
            for n, op in enumerate(plan.ops):
                made = self._apply(op)
                if made is not None:
                    reported[n] = made
        except KernelError:
            self.tables, self.sets, self.elements, self.chains, self._handle = saved
            raise
        self.commits += 1
        self._gen += 1
        plan.handles.update(reported)
        plan.counted(self._gen)
        return "fake"

    def edit_behind_fwsgs_back(self, family, chain, rule, index=None):
        """Insert ``rule`` (text) into a chain as another program would (a new generation);
        for tests of concurrent writers."""
        self._handle += 1
        rules = self.chains[(family, chain)][1]
        rules.insert(len(rules) if index is None else index, (self._handle, rule))
        self._gen += 1

    def flush(self):
        present = sorted(self.tables)
        for fam in present:
            self._apply(DeleteTable(fam))
        return present

    def read(self):
        rs = Ruleset(tables=frozenset(self.tables))
        for k, sd in self.sets.items():
            rs.sets[k] = sd
            rs.elements[k] = copy.copy(self.elements[k])
        for k, (hook, rules) in self.chains.items():
            c = ChainDef(k[0], k[1], tuple(f"#{h}" for h, _ in rules), hook)
            object.__setattr__(c, "digest", digest_of([_comment(r) for _, r in rules]))
            rs.chains[k] = c
        rs.meta = {"handles": {k: [h for h, _ in v[1]] for k, v in self.chains.items()}}
        return rs

    # -- for tests ----------------------------------------------------------------------------
    def rules(self, family, chain):
        """Rule texts of a chain."""
        return [r for _, r in self.chains[(family, chain)][1]]

    def dump(self):
        """The whole state as text, in a stable order (tables, sets with sorted elements,
        chains with their rules)."""
        out = []
        for fam in sorted(self.tables):
            out.append(f"table {fam} fwsg")
            for k in sorted(k for k in self.sets if k[0] == fam):
                sd, el = self.sets[k], self.elements[k]
                kind = "map" if sd.is_map else "set"
                typ = sd.key_type + (f" : {sd.value_type}" if sd.is_map else "")
                items = (sorted(f"{a} : {b}" for a, b in el.items()) if sd.is_map
                         else sorted(el))
                out.append(f"  {kind} {k[1]} {{ {typ}{' interval' if sd.interval else ''} }}"
                           + (f" = {{ {', '.join(items)} }}" if items else ""))
            for k in sorted(k for k in self.chains if k[0] == fam):
                hook, rules = self.chains[k]
                out.append(f"  chain {k[1]}" + (f" {{ {hook} }}" if hook else ""))
                out += [f"    {r}" for _, r in rules]
        return "\n".join(out) + ("\n" if out else "")

    # -- the kernel's rules -------------------------------------------------------------------
    def _check_refs(self, op, c, rule):
        for ref in _SET_REF.findall(rule):
            _need((c.family, ref) in self.sets, op)
        for target in _JUMP.findall(rule):
            _need((c.family, target) in self.chains, op)

    def _new_rule(self, op, c, rule):
        """Check a new rule's references; its handle."""
        self._check_refs(op, c, rule)
        self._handle += 1
        return self._handle

    def _apply(self, op):
        """Apply one operation (KernelError when the kernel would refuse it); the handle(s)
        of the rules it created, else None."""
        kind = type(op)
        if kind is CreateTable:
            self.tables.add(op.family)
        elif kind is DeleteTable:
            _need(op.family in self.tables, op)
            self.tables.discard(op.family)
            for d in (self.sets, self.elements, self.chains):
                for k in [k for k in d if k[0] == op.family]:
                    del d[k]
        elif kind is CreateSet:
            sd = op.set
            _need(sd.family in self.tables, op)
            if sd.key in self.sets:
                _need(self.sets[sd.key] == sd, op, E.EEXIST)
                return
            self.sets[sd.key] = sd
            self.elements[sd.key] = {} if sd.is_map else set()
        elif kind is DeleteSet:
            key = op.set.key
            _need(key in self.sets, op)
            for ck, (_, rules) in self.chains.items():
                if ck[0] == key[0] and any(key[1] in _SET_REF.findall(r) for _, r in rules):
                    raise KernelError(f"fake: set {key[1]} is in use by chain {ck[1]}",
                                      E.EBUSY)
            del self.sets[key], self.elements[key]
        elif kind is AddElements:
            key = op.set.key
            _need(key in self.sets, op)
            elems = self.elements[key]
            if op.set.is_map:
                for k, v in op.elements:
                    _need(k not in elems or elems[k] == v, op, E.EEXIST)
                    target = _jump_target(v)
                    _need(target is None or (key[0], target) in self.chains, op)
                    elems[k] = v
            else:
                elems.update(op.elements)
        elif kind is DeleteElements:
            key = op.set.key
            _need(key in self.sets, op)
            elems = self.elements[key]
            for k in op.keys:
                _need(k in elems, op)
                if op.set.is_map:
                    del elems[k]
                else:
                    elems.discard(k)
        elif kind is DeclareChain:
            c = op.chain
            _need(c.family in self.tables, op)
            if c.key not in self.chains:
                self.chains[c.key] = [c.hook, []]
        elif kind is FillChain:
            c = op.chain
            _need(c.key in self.chains, op)
            made = []
            for rule in c.rendered_rules():
                made.append(self._new_rule(op, c, rule))
                self.chains[c.key][1].append((made[-1], rule))
            return made
        elif kind is AddRule or kind is ReplaceRule:
            c = op.chain
            _need(c.key in self.chains, op)
            rules = self.chains[c.key][1]
            rule = c.rendered_rules()[op.index]
            at = op.before if kind is AddRule else op.handle
            pos = len(rules)
            if at is not None:
                pos = next((i for i, (h, _) in enumerate(rules) if h == at), None)
                _need(pos is not None, op)
            if kind is ReplaceRule:
                self._check_refs(op, c, rule)
                rules[pos] = (at, rule)
                return at
            rules.insert(pos, (self._new_rule(op, c, rule), rule))
            return rules[pos][0]
        elif kind is DeleteRule:
            _need(op.key in self.chains, op)
            rules = self.chains[op.key][1]
            pos = next((i for i, (h, _) in enumerate(rules) if h == op.handle), None)
            _need(pos is not None, op)
            del rules[pos]
        elif kind is FlushChain:
            _need(op.key in self.chains, op)
            self.chains[op.key][1] = []
        elif kind is DeleteChain:
            _need(op.key in self.chains, op)
            for ck, (_, rules) in self.chains.items():
                if ck[0] == op.family and any(op.name in _JUMP.findall(r) for _, r in rules):
                    raise KernelError(f"fake: chain {op.name} is in use", E.EBUSY)
            for ek, el in self.elements.items():
                if ek[0] == op.family and isinstance(el, dict) and \
                        any(_jump_target(v) == op.name for v in el.values()):
                    raise KernelError(f"fake: chain {op.name} is in use by a map",
                                      E.EBUSY)
            del self.chains[op.key]
        else:
            raise TypeError(f"not a plan operation: {op!r}")


def _need(cond, op, code=E.ENOENT):
    if not cond:
        import os

        raise KernelError(f"fake: {os.strerror(code)}: {_what(op)}", code)


def _what(op):
    """A short description of an operation for error messages (never its element list)."""
    target = getattr(op, "set", None) or getattr(op, "chain", None)
    if target is not None:
        return f"{type(op).__name__} {target.family} {target.name}"
    return f"{type(op).__name__} {getattr(op, 'family', '')} {getattr(op, 'name', '')}".rstrip()


def _jump_target(value):
    m = _JUMP.match(value) if isinstance(value, str) else None
    return m.group(1) if m else None


def _comment(rule_text):
    m = _COMMENT.search(rule_text)
    return m.group(1) if m else ""
