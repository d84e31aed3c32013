"""The iptables backend's benchmark rows (``scripts/bench --backend iptables``): the same
scenario as the nft rows, for iptables-legacy and iptables-nft, with baselines measured in the
same run (one ``ipset`` process per change; a whole-table save + restore, which is what
Neutron's driver does for every event) and Neutron's own figures as the peer fwsg replaces.
Not a test: no assertion on time; targets are printed next to the numbers.
"""

import copy
import resource
import subprocess
import time

from fwsg.lab.bench import Bench, _median_ms, _timed, scenario
from fwsg.lab.scenario import member_v4
from fwsg.model import Model

# Neutron's iptables firewall driver (ipset on), 500 ports / 10k members, iptables-nft,
# measured earlier on this machine: (what, seconds)
NEUTRON = (("initial apply", 5.1), ("one member added", 5.7), ("one rule added", 2.9),
           ("one port added", 3.0))


class IptablesBench(Bench):
    """Rows for each iptables variant; ``self.variants`` names them."""

    variants = ("legacy", "nft")

    def run(self):
        a = self.a
        self.say(f"== scenario: {a.ports} ports, {a.groups} groups x {a.rules} rules, "
                 f"{a.members} members (iptables backend)")
        doc = scenario(a.ports, a.groups, a.rules, a.members, a.seed)
        model = Model.from_wire(doc)
        for variant in self.variants:
            self.variant(variant, doc, model)
        for what, s in NEUTRON:
            self.row(f"neutron_{what}", f"peer: Neutron iptables driver, {what}", s * 1000,
                     note="500 ports / 10k members, iptables-nft, ipset on (measured earlier)")

    def variant(self, v, doc, model):
        from fwsg.firewall import Firewall

        a = self.a
        name = f"iptables-{v}"
        fw = Firewall(backend=name)
        fw.flush()
        self.say(f"== {name}: cold apply")
        cold = []
        for _ in range(max(1, a.repeat // 2)):
            fw.flush()
            fw = Firewall(backend=name)
            t = time.perf_counter()
            r = fw.apply(model)
            cold.append(time.perf_counter() - t)
        sizes = r.counts
        self.row(f"{v}_cold", f"{v}: 1. full apply from empty ({sizes['elements']} members, "
                 f"{sizes['rules']} rules)", _median_ms(cold),
                 note=f"{r.summary['restores']} restores, {r.summary['sets_created']} ipsets")

        calls = self._count_calls(fw)
        noop = _timed(lambda: fw.apply(model), a.ops)
        self.row(f"{v}_noop", f"{v}: 2. no-op apply, same Model", _median_ms(noop),
                 target="no kernel call", met=calls[0] == 0, note=f"kernel calls: {calls[0]}")

        self.say(f"== {name}: members")
        big = "default"
        n_big = len(model.members_of(big, 4)) + len(model.members_of(big, 6))
        addrs = [member_v4(900000 + i) for i in range(a.ops)]
        add = _timed_each(lambda ip: fw.add_security_group_members(big, [ip]), addrs)
        rem = _timed_each(lambda ip: fw.remove_security_group_members(big, [ip]), addrs)
        proc = [t / 2 for t in _timed_each(lambda ip: self._ipset_proc(big, ip),
                                           addrs[: max(5, a.ops // 10)])]
        self.row(f"{v}_member_add", f"{v}: 3. add 1 member, {n_big}-member group",
                 _median_ms(add), _median_ms(proc), "ipset process per change",
                 "<= 0.5 ms", _median_ms(add) <= 0.5, f"via {fw.last_result.transport}")
        self.row(f"{v}_member_del", f"{v}: 3. remove 1 member, {n_big}-member group",
                 _median_ms(rem), _median_ms(proc), "ipset process per change",
                 "<= 0.5 ms", _median_ms(rem) <= 0.5)
        cur = {"IPv4": list(model.members_of(big, 4)), "IPv6": list(model.members_of(big, 6))}
        flips = []
        for i in range(max(3, a.repeat)):
            nxt = copy.deepcopy(cur)
            nxt["IPv4"][i] = member_v4(950000 + i)
            t = time.perf_counter()
            fw.update_security_group_members(big, nxt)
            flips.append(time.perf_counter() - t)
            cur = nxt
        self.row(f"{v}_full_list", f"{v}: 3. full-list form, {n_big} addresses, 1 changed",
                 _median_ms(flips))

        self.say(f"== {name}: rule added to the group every port uses")
        rules = [r for r in doc["security_groups"][big]]
        adds, backs = [], []
        for i in range(a.repeat):
            extra = {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                     "port_range_min": 40000 + i, "port_range_max": 40000 + i}
            t = time.perf_counter()
            fw.update_security_group_rules(big, rules + [extra])
            adds.append(time.perf_counter() - t)
            changed = fw.last_result.summary["chains_changed"]
            t = time.perf_counter()
            fw.update_security_group_rules(big, rules)
            backs.append(time.perf_counter() - t)
        whole = self._whole_table(v)
        target = 30 if v == "legacy" else None
        self.row(f"{v}_rule_add", f"{v}: 4. add 1 rule to a group used by all {a.ports} ports",
                 _median_ms(adds), whole, "whole-table save+restore",
                 f"<= {target} ms" if target else "(reported)",
                 _median_ms(adds) <= target if target else None,
                 f"chains rewritten: {changed}")

        self.say(f"== {name}: ports")
        port0 = doc["devices"]["port-0"]
        same, gone, new, gone_new = [], [], [], []
        cpu = {"same": [], "gone": [], "new": [], "gone_new": [], "floor": []}
        extras = [g for g in doc["security_groups"] if g != "default"][-4:]
        for i in range(a.repeat * 2):
            p = dict(port0, id=f"bench-{i}", device=f"tapb{i}",
                     mac_address=f"fa:16:3e:ff:00:{i:02x}",
                     fixed_ips=[f"198.51.100.{i + 1}", f"2001:db8:ffff::{i + 1:x}"])
            q = dict(p, security_groups=["default"] + extras)   # 4 extras: no port has them
            for what, out, fn in (("same", same, lambda: fw.prepare_port_filter(p)),
                                  ("gone", gone, lambda: fw.remove_port_filter(p["id"])),
                                  ("new", new, lambda: fw.prepare_port_filter(q)),
                                  ("gone_new", gone_new, lambda: fw.remove_port_filter(q["id"]))):
                wall, child = _timed_cpu(fn)
                out.append(wall)
                cpu[what].append(child)
        floor = self._touch_floor(fw, cpu["floor"])
        fl = "floor: 3 restores, no change"

        def note(what):
            return (f"restores' CPU {_median_ms(cpu[what]):.1f} ms "
                    f"(floor's {_median_ms(cpu['floor']):.1f})")
        self.row(f"{v}_port_add", f"{v}: 5. port added (existing profile)", _median_ms(same),
                 floor, fl, "<= 20 ms", _median_ms(same) <= 20, note("same"))
        self.row(f"{v}_port_del", f"{v}: 5. port removed (existing profile)", _median_ms(gone),
                 floor, fl, note=note("gone"))
        self.row(f"{v}_port_add_new", f"{v}: 5. port added (new profile)", _median_ms(new),
                 floor, fl, "<= 20 ms", _median_ms(new) <= 20, note("new"))
        self.row(f"{v}_port_del_new", f"{v}: 5. port removed (new profile)", _median_ms(gone_new),
                 floor, fl, note=note("gone_new"))
        self.data[f"{v}_sizes"] = sizes
        fw.flush()

    @staticmethod
    def _count_calls(fw):
        """Count the kernel calls fw makes from now on (processes and ipset netlink)."""
        calls = [0]
        k = fw.backend.kernel
        run, elements = k.run, k._elements

        def counted(fn):
            def wrapper(*args, **kw):
                calls[0] += 1
                return fn(*args, **kw)
            return wrapper
        k.run, k._elements = counted(run), counted(elements)
        return calls

    @staticmethod
    def _ipset_proc(sg, ip):
        """Baseline: one member added and removed by an ``ipset`` process each (half a pair)."""
        from fwsg.backends.iptables.names import member_set

        name = member_set(sg, 4)
        subprocess.run(["ipset", "add", name, ip], check=True, capture_output=True)
        subprocess.run(["ipset", "del", name, ip], check=True, capture_output=True)

    def _touch_floor(self, fw, cpu):
        """Baseline: what a port change cannot go below with this variant - the three restores
        it needs (mangle + filter of each family, ebtables nat), each changing nothing (legacy
        still reads both tables whole), median ms; the restores' CPU time goes to ``cpu``."""
        k = fw.backend.kernel
        texts = [(4, "*mangle\nCOMMIT\n*filter\nCOMMIT\n"),
                 (6, "*mangle\nCOMMIT\n*filter\nCOMMIT\n"), ("eb", "*nat\n")]
        walls = []
        for _ in range(max(3, self.a.repeat)):
            wall, child = _timed_cpu(lambda: k.restore_all(texts))
            walls.append(wall)
            cpu.append(child)
        return _median_ms(walls)

    def _whole_table(self, v):
        """Baseline: what a driver that re-renders a whole table pays for it (save + restore
        of the filter table, IPv4), median ms."""
        def once():
            text = subprocess.run([f"iptables-{v}-save", "-t", "filter"], check=True,
                                  capture_output=True, text=True).stdout
            subprocess.run([f"iptables-{v}-restore", "-w", "-T", "filter"], input=text,
                           check=True, capture_output=True, text=True)
        return _median_ms(_timed(once, max(3, self.a.repeat)))


def _timed_cpu(fn):
    """(wall seconds, CPU seconds of the processes fn ran and waited for): the CPU time says
    what a change costs when other work shares the machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    fn()
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _timed_each(fn, items):
    out = []
    for x in items:
        t = time.perf_counter()
        fn(x)
        out.append(time.perf_counter() - t)
    return out
