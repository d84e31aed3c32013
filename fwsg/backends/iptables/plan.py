"""Diff of the desired iptables/ipset state against the kernel's, and the Plan that makes them
equal. Pure: no I/O.

A Plan has three parts, committed in this order by the backend: ipset changes (new sets with
their members, element additions and deletions, rebuilt sets swapped in), one
``iptables-restore --noflush`` text per (family, table) holding only the chains that changed
(declared - which empties them - then refilled), dispatch rules added/deleted one by one, hooks
missing from built-in chains, stale chains flushed then deleted; finally stale sets destroyed.
"""

from dataclasses import dataclass, field

from fwsg.backends.iptables import names

TABLE_ORDER = ("raw", "mangle", "filter", "nat")
SWAP_MIN = 2000   # a full-list change touching more elements than this (and than half the
                  # set) builds a new set and swaps it in


def chain_digest(key, chain):
    """What the kernel-side mirror keeps for a chain: its digest (ebtables chains are named by
    theirs and keep 8 characters)."""
    return chain.digest[:8] if key[0] == "eb" else chain.digest


@dataclass
class TableChange:
    chains: dict = field(default_factory=dict)     # name -> Chain (new or changed)
    new: int = 0                                   # how many of them are new
    stale: list = field(default_factory=list)      # chain names to delete
    new_bags: list = field(default_factory=list)   # dispatch chains to create
    bag_add: dict = field(default_factory=dict)    # name -> [rule]
    bag_del: dict = field(default_factory=dict)    # name -> [rule]
    hooks: list = field(default_factory=list)      # built-in chains missing their jump
    moved: list = field(default_factory=list)      # jumps found below other rules (deleted)

    def __bool__(self):
        return bool(self.chains or self.stale or self.new_bags or self.bag_add
                    or self.bag_del or self.hooks)

    def text(self, table, ebtables=False):
        """The restore text of this change (``--noflush``)."""
        policy = "RETURN" if ebtables else "- [0:0]"
        out = [f"*{table}"]
        out += [f":{n} {policy}" for n in list(self.chains) + self.new_bags]
        for n, c in self.chains.items():
            out += c.lines(n, ebtables)
        for n, rules in self.bag_del.items():
            out += [f"-D {n} {r}" for r in rules]
        for n, rules in self.bag_add.items():
            out += [f"-A {n} {r}" for r in rules]
        for builtin, entry in self.moved:
            out.append(f"-D {builtin} -j {entry}")
        for builtin, entry in self.hooks:
            out.append(f"-I {builtin} 1 -j {entry}")
        out += [f"-F {n}" for n in self.stale]
        out += [f"-X {n}" for n in self.stale]
        if not ebtables:
            out.append("COMMIT")
        return "".join(line + "\n" for line in out)


@dataclass
class Plan:
    creates: list = field(default_factory=list)    # (name, spec, members) new sets
    rebuilds: list = field(default_factory=list)   # (name, spec, members) built aside, swapped
    adds: dict = field(default_factory=dict)       # set name -> [member]
    dels: dict = field(default_factory=dict)       # set name -> [member]
    tables: dict = field(default_factory=dict)     # (family, table) -> TableChange
    destroys: list = field(default_factory=list)   # set names
    rebuilt_delta: dict = field(default_factory=dict)  # set name -> (added, removed) counts

    def __bool__(self):
        return bool(self.creates or self.rebuilds or self.adds or self.dels or self.destroys
                    or any(self.tables.values()))

    def texts(self):
        """[(family, tables, restore text)]: one text per family (iptables-restore takes several
        tables in one run; iptables-nft commits them as one transaction), in table order."""
        out = []
        for fam in (4, 6, "eb"):
            tables = [t for t in TABLE_ORDER if self.tables.get((fam, t))]
            if tables:
                out.append((fam, tables, "".join(self.tables[(fam, t)].text(t, fam == "eb")
                                                 for t in tables)))
        return out

    def ipset_lines(self):
        """The ipset part in ``ipset restore`` syntax (for display)."""
        out = []
        for name, spec, members in self.creates + self.rebuilds:
            out.append(f"create {name} hash:net family inet{'6' if spec.family == 6 else ''} "
                       f"maxelem {spec.maxelem} ({len(members)} members)")
        for name, ms in self.dels.items():
            out += [f"del {name} {m}" for m in ms]
        for name, ms in self.adds.items():
            out += [f"add {name} {m}" for m in ms]
        out += [f"destroy {n}" for n in self.destroys]
        return out

    def __str__(self):
        lines = self.ipset_lines()
        for fam, _, text in self.texts():
            tool = {4: "iptables", 6: "ip6tables", "eb": "ebtables"}[fam]
            lines.append(f"# {tool}-restore --noflush")
            lines.append(text.rstrip("\n"))
        return "".join(line + "\n" for line in lines)

    @property
    def ops(self):
        """What the plan does, comparable between plans (Firewall compares a refused plan with
        the one a re-read gives)."""
        return str(self)

    @property
    def commands(self):
        return str(self).splitlines() if self else []

    @property
    def size(self):
        return len(str(self)) if self else 0

    @property
    def summary(self):
        tcs = self.tables.values()
        return {"sets_created": len(self.creates), "sets_rebuilt": len(self.rebuilds),
                "sets_destroyed": len(self.destroys),
                "elements_added": sum(len(v) for v in self.adds.values())
                + sum(len(m) for _, _, m in self.creates)
                + sum(a for a, _ in self.rebuilt_delta.values()),
                "elements_removed": sum(len(v) for v in self.dels.values())
                + sum(r for _, r in self.rebuilt_delta.values()),
                "chains_added": sum(t.new for t in tcs),
                "chains_changed": sum(len(t.chains) - t.new for t in tcs),
                "chains_removed": sum(len(t.stale) for t in tcs),
                "rules_added": sum(len(r) for t in tcs for r in t.bag_add.values()),
                "rules_removed": sum(len(r) for t in tcs for r in t.bag_del.values()),
                "hooks_added": sum(len(t.hooks) for t in tcs),
                "restores": len(self.texts())}

    def describe(self):
        """Human lines for what a repairing plan did."""
        out = []
        for name, _, m in self.creates:
            out.append(f"ipset {name} re-created ({len(m)} members)")
        for name, _, m in self.rebuilds:
            out.append(f"ipset {name} rebuilt ({len(m)} members)")
        for name, ms in self.adds.items():
            out.append(f"{len(ms)} member(s) restored in ipset {name}")
        for name, ms in self.dels.items():
            out.append(f"{len(ms)} stray member(s) removed from ipset {name}")
        for (fam, table), tc in sorted(self.tables.items(), key=str):
            where = f"{ {4: 'iptables', 6: 'ip6tables', 'eb': 'ebtables'}[fam]} -t {table}"
            out += [f"chain {n} restored ({where})" for n in tc.chains]
            out += [f"stray chain {n} removed ({where})" for n in tc.stale]
            for n, rules in tc.bag_add.items():
                out.append(f"{len(rules)} rule(s) restored in {n} ({where})")
            for n, rules in tc.bag_del.items():
                out.append(f"{len(rules)} stray rule(s) removed from {n} ({where})")
            moved = {b for b, _ in tc.moved}
            out += [f"jump from {b} to {e} {'moved back to the top' if b in moved else 'restored'}"
                    f" ({where})" for b, e in tc.hooks]
        out += [f"stray ipset {n} destroyed" for n in self.destroys]
        return out

    def update(self, current):
        """Bring ``current`` (the kernel mirror) along once the kernel accepted this plan."""
        for name, spec, members in self.creates + self.rebuilds:
            current.sets[name] = spec
            current.elements[name] = set(members)
        for name, ms in self.dels.items():
            current.elements[name].difference_update(ms)
        for name, ms in self.adds.items():
            current.elements[name].update(ms)
        for name in self.destroys:
            current.sets.pop(name, None)
            current.elements.pop(name, None)
        for (fam, table), tc in self.tables.items():
            for n, c in tc.chains.items():
                current.chains[(fam, table, n)] = chain_digest((fam,), c)
            for n in tc.new_bags:
                current.bags[(fam, table, n)] = set()
            for n, rules in tc.bag_del.items():
                current.bags[(fam, table, n)].difference_update(rules)
            for n, rules in tc.bag_add.items():
                current.bags[(fam, table, n)].update(rules)
            for builtin, _ in tc.hooks:
                current.hooks.add((fam, table, builtin))
            for builtin, _ in tc.moved:
                current.misplaced.discard((fam, table, builtin))
            for n in tc.stale:
                current.chains.pop((fam, table, n), None)
                current.bags.pop((fam, table, n), None)


def _tc(plan, fam, table):
    return plan.tables.setdefault((fam, table), TableChange())


def diff(desired, current, pending=None):
    """The Plan turning ``current`` (a State read back or mirrored) into ``desired`` (a
    Desired's State). With ``pending`` only what it names is compared."""
    plan = Plan()
    if pending is None:
        chain_keys = set(desired.chains) | set(current.chains)
        bag_keys = {k: None for k in set(desired.bags) | set(current.bags)}
        set_keys = set(desired.sets) | set(current.sets)
        elem_keys = {k: None for k in desired.sets}
    else:
        chain_keys = pending.chains
        bag_keys = pending.bags
        set_keys = pending.sets
        elem_keys = {k: v for k, v in pending.elems.items() if k not in pending.sets}
    _sets(plan, desired, current, set_keys, elem_keys)
    for key in sorted(chain_keys, key=str):
        want = desired.chains.get(key)
        have = current.chains.get(key)
        fam, table, name = key
        if want is None:
            if have is not None:
                _tc(plan, fam, table).stale.append(name)
        elif have != chain_digest(key, want):
            tc = _tc(plan, fam, table)
            tc.chains[name] = want
            tc.new += have is None
    for key, delta in sorted(bag_keys.items(), key=lambda kv: str(kv[0])):
        fam, table, name = key
        want = desired.bags.get(key)
        have = current.bags.get(key)
        if want is None:
            if have is not None:
                _tc(plan, fam, table).stale.append(name)
            continue
        if have is None:
            _tc(plan, fam, table).new_bags.append(name)
            have = set()
        if delta is None:
            add, rem = want - have, have - want
        else:
            add = [r for r in delta[0] if r not in have]
            rem = [r for r in delta[1] if r in have]
        if add:
            _tc(plan, fam, table).bag_add[name] = sorted(add)
        if rem:
            _tc(plan, fam, table).bag_del[name] = sorted(rem)
    if pending is None:
        for hook, entry in names.HOOKS.items():
            if hook not in current.hooks:
                _tc(plan, hook[0], hook[1]).hooks.append((hook[2], entry))
            if hook in current.misplaced:
                _tc(plan, hook[0], hook[1]).moved.append((hook[2], entry))
    plan.tables = {k: v for k, v in plan.tables.items() if v}
    return plan


def _sets(plan, desired, current, set_keys, elem_keys):
    for name in sorted(set_keys):
        want, have = desired.sets.get(name), current.sets.get(name)
        if want is None:
            if have is not None:
                plan.destroys.append(name)
            continue
        members = desired.elements[name]
        if have is None:
            plan.creates.append((name, want, set(members)))
        elif have.family != want.family or not have.fits(len(members)):
            plan.rebuilds.append((name, want, set(members)))
            old = current.elements.get(name, set())
            plan.rebuilt_delta[name] = (len(members - old), len(old - members))
        else:
            elem_keys[name] = None
    for name, delta in elem_keys.items():
        want, have = desired.elements[name], current.elements.get(name)
        if have is None:
            continue
        if delta is None:
            add, rem = want - have, have - want
        else:
            add = [e for e in delta[0] if e not in have]
            rem = [e for e in delta[1] if e in have]
        if len(add) + len(rem) > max(SWAP_MIN, len(want) // 2):
            plan.rebuilds.append((name, desired.sets[name], set(want)))
            plan.rebuilt_delta[name] = (len(add), len(rem))
            continue
        if add:
            plan.adds[name] = list(add)
        if rem:
            plan.dels[name] = list(rem)
