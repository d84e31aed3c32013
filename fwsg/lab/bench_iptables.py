"""The iptables backend's benchmark rows (``scripts/bench --backend iptables``): the same
scenario as the nft rows, for iptables-legacy and iptables-nft, with baselines measured in the
same run (one ``ipset`` process per change; a whole-table save + restore, which is what
Neutron's driver does for every event) and Neutron's own figures as the peer fwsg replaces.
Not a test: no assertion on time; targets are printed next to the numbers.
"""

import copy
import resource
import socket
import subprocess
import time

from fwsg.lab.bench import Bench, _median_ms, _timed, scenario
from fwsg.lab.scenario import member_v4
from fwsg.model import Model
from fwsg.netns import entered
from fwsg.nlmsg import NETLINK_NETFILTER

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
        # the transport of earlier sessions (pyroute2's IPSet, a call per element) and the
        # current one, alternating in rounds of 10 members so load hits both alike
        add, rem, add_old, rem_old = [], [], [], []
        kernel = fw.backend.kernel
        for i in range(0, len(addrs), 10):
            chunk = addrs[i:i + 10]
            for old, out_add, out_rem in ((False, add, rem), (True, add_old, rem_old)):
                with _old_transport(kernel, old):
                    out_add += _timed_each(lambda ip: fw.add_security_group_members(big, [ip]),
                                           chunk)
                    out_rem += _timed_each(
                        lambda ip: fw.remove_security_group_members(big, [ip]), chunk)
        proc = [t / 2 for t in _timed_each(lambda ip: self._ipset_proc(big, ip),
                                           addrs[: max(5, a.ops // 10)])]
        self.row(f"{v}_member_add", f"{v}: 3. add 1 member, {n_big}-member group",
                 _median_ms(add), _median_ms(proc), "ipset process per change",
                 "<= 0.5 ms", _median_ms(add) <= 0.5, f"via {fw.last_result.transport}")
        self.row(f"{v}_member_del", f"{v}: 3. remove 1 member, {n_big}-member group",
                 _median_ms(rem), _median_ms(proc), "ipset process per change",
                 "<= 0.5 ms", _median_ms(rem) <= 0.5)
        self.row(f"{v}_member_add_old", f"{v}: 3. add 1 member, previous transport",
                 _median_ms(add_old), _median_ms(add), "current transport",
                 note="pyroute2 IPSet, a call per element (same run, alternating)")
        self.row(f"{v}_member_del_old", f"{v}: 3. remove 1 member, previous transport",
                 _median_ms(rem_old), _median_ms(rem), "current transport",
                 note="pyroute2 IPSet, a call per element (same run, alternating)")
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
        # what -> (add or remove, the port with an existing or a new profile, the path):
        # "" the current one, "_old" restores as earlier sessions ran them, "_rst" the restore
        # tools where the current path is libiptc (iptables-legacy), "_seq" libiptc with the
        # two families one after the other instead of side by side, "_ebp" libiptc with
        # ebtables through its restore process, not netlink, "_tools" a removal's deletions
        # through the restore tools instead of one nf_tables batch; alternating in each round
        kinds = {"same": ("add", "p", ""), "gone": ("del", "p", ""),
                 "new": ("add", "q", ""), "gone_new": ("del", "q", ""),
                 "same_old": ("add", "p", "_old"), "gone_old": ("del", "p", "_old"),
                 "same_t": ("add", "p", ""), "gone_tools": ("del", "p", "_tools"),
                 "new_t": ("add", "q", ""), "gone_new_tools": ("del", "q", "_tools")}
        if v == "legacy":
            kinds.update({"same_rst": ("add", "p", "_rst"), "gone_rst": ("del", "p", "_rst"),
                          "new_rst": ("add", "q", "_rst"), "gone_new_rst": ("del", "q", "_rst"),
                          "same_seq": ("add", "p", "_seq"), "gone_seq": ("del", "p", "_seq"),
                          "same_ebp": ("add", "p", "_ebp")})
        pairs = ("back", "back_tools")   # a port removed and another added at once
        walls = {k: [] for k in list(kinds) + list(pairs)}
        cpu = {k: [] for k in list(kinds) + list(pairs) + ["floor", "least", "iptc_floor"]}
        sys_cpu = {k: [] for k in cpu}   # the kernel's part (system time) of each
        paths = {k: set() for k in list(kinds) + list(pairs)}
        extras = [g for g in doc["security_groups"] if g != "default"][-4:]
        for i in range(a.repeat * 2):
            p = dict(port0, id=f"bench-{i}", device=f"tapb{i}",
                     mac_address=f"fa:16:3e:ff:00:{i:02x}",
                     fixed_ips=[f"198.51.100.{i + 1}", f"2001:db8:ffff::{i + 1:x}"])
            ports = {"p": p, "q": dict(p, security_groups=["default"] + extras)}  # 4 extras:
            for what, (op, which, path) in kinds.items():                 # no port has them
                port = ports[which]
                fn = ((lambda: fw.prepare_port_filter(port)) if op == "add"
                      else (lambda: fw.remove_port_filter(port["id"])))
                with _previous_restores(fw.backend.kernel, path == "_old"), \
                        _restore_path(fw.backend.kernel, path in ("_old", "_rst")), \
                        _families_in_turn(fw.backend.kernel, path == "_seq"), \
                        _ebtables_process(fw.backend.kernel, path == "_ebp"), \
                        _deletions_by_tools(fw.backend.kernel, path in ("_old", "_tools")):
                    wall, child, kern = _timed_cpu(fn)
                walls[what].append(wall)
                cpu[what].append(child)
                sys_cpu[what].append(kern)
                k = fw.backend.kernel
                eb = f"+ebtables-{k.last_eb}" if k.last_eb else ""
                paths[what].add((k.last_path or "-") + eb)
                if op == "del":   # the next step pays for itself only (see _settle)
                    _settle(fw.netns)
            other = dict(ports["q"], id=f"pair-{i}", device=f"tapq{i}",
                         mac_address=f"fa:16:3e:fe:00:{i:02x}",
                         fixed_ips=[f"198.51.100.{128 + i}", f"2001:db8:fffe::{i + 1:x}"])
            for what in pairs:
                fw.prepare_port_filter(ports["q"])
                _settle(fw.netns)
                k, seen = fw.backend.kernel, []

                def pair():
                    for call in (lambda: fw.remove_port_filter(ports["q"]["id"]),
                                 lambda: fw.prepare_port_filter(other)):
                        call()
                        seen.append((k.last_path or "-") + (f"+ebtables-{k.last_eb}"
                                                            if k.last_eb else ""))
                with _deletions_by_tools(k, what == "back_tools"):
                    wall, child, kern = _timed_cpu(pair)
                paths[what].update(seen)
                walls[what].append(wall)
                cpu[what].append(child)
                sys_cpu[what].append(kern)
                fw.remove_port_filter(other["id"])
                _settle(fw.netns)
        floor = self._touch_floor(fw, cpu["floor"], sys_cpu["floor"])
        fl = "floor: 3 restores, no change"
        least = self._touch_floor(fw, cpu["least"], sys_cpu["least"], one_rule=True)

        def share(what):   # system time is sampled per tick: a share of the sums, not a median
            return round(100 * sum(sys_cpu[what]) / max(sum(cpu[what]), 1e-9))

        self.row(f"{v}_port_least", f"{v}: 5. least change: 1 rule in each table a port adds "
                 "to", least, floor, fl, note=f"CPU {_median_ms(cpu['least']):.1f} ms,"
                 f" {share('least')}% in the kernel (floor's {share('floor')}%)")
        if v == "legacy":
            ifl = self._iptc_floor(fw, cpu["iptc_floor"], sys_cpu["iptc_floor"])
            self.row(f"{v}_port_iptc_floor", f"{v}: 5. bare libiptc commit of the tables a port "
                     "adds to", ifl, least, "least change (restores)",
                     note=f"mangle + filter of both families, 1 chain created each; CPU "
                     f"{_median_ms(cpu['iptc_floor']):.1f} ms, {share('iptc_floor')}% in the "
                     "kernel")

        def note(what):
            return (f"via {'+'.join(sorted(p or '-' for p in paths[what]))}; CPU "
                    f"{_median_ms(cpu[what]):.1f} ms, {share(what)}% in the kernel (floor's "
                    f"{_median_ms(cpu['floor']):.1f})")
        self.row(f"{v}_port_add", f"{v}: 5. port added (existing profile)",
                 _median_ms(walls["same"]), floor, fl, "<= 20 ms",
                 _median_ms(walls["same"]) <= 20, note("same"))
        self.row(f"{v}_port_del", f"{v}: 5. port removed (existing profile)",
                 _median_ms(walls["gone"]), floor, fl, note=note("gone"))
        prev = "restores as before, same run"
        self.row(f"{v}_port_add_prev", f"{v}: 5. port added (existing profile), previous "
                 "restores", _median_ms(walls["same_old"]), _median_ms(walls["same"]),
                 "current path", note=f"{prev}; {note('same_old')}")
        self.row(f"{v}_port_del_prev", f"{v}: 5. port removed (existing profile), previous "
                 "restores", _median_ms(walls["gone_old"]), _median_ms(walls["gone"]),
                 "current path", note=f"{prev}; {note('gone_old')}")
        self.row(f"{v}_port_add_new", f"{v}: 5. port added (new profile)",
                 _median_ms(walls["new"]), floor, fl, "<= 20 ms",
                 _median_ms(walls["new"]) <= 20, note("new"))
        self.row(f"{v}_port_del_new", f"{v}: 5. port removed (new profile)",
                 _median_ms(walls["gone_new"]), floor, fl, note=note("gone_new"))
        for what, base, label in (("gone_tools", "gone", "port removed (existing profile)"),
                                  ("gone_new_tools", "gone_new", "port removed (new profile)")):
            self.row(f"{v}_port_{what}", f"{v}: 5. {label}, deletions through the tools",
                     _median_ms(walls[what]), _median_ms(walls[base]), "nf_tables netlink",
                     note=f"{'ebtables' if v == 'legacy' else 'every table'}'s deletions "
                     f"through the restore tools, as before nfdel, same run; {note(what)}")
        self.row(f"{v}_port_back", f"{v}: 5. a port removed, another added at once (new "
                 "profile)", _median_ms(walls["back"]), _median_ms(walls["back_tools"]),
                 "same, deletions through the tools",
                 note="the two calls back to back, nothing settled between them (the rows "
                 f"above settle after each removal); {note('back')}")
        if v == "legacy":
            rst = "restore tools instead of libiptc, same run"
            for what, base, label in (("same_rst", "same", "port added (existing profile)"),
                                      ("gone_rst", "gone", "port removed (existing profile)"),
                                      ("new_rst", "new", "port added (new profile)"),
                                      ("gone_new_rst", "gone_new", "port removed (new profile)")):
                self.row(f"{v}_port_{what}", f"{v}: 5. {label}, restore tools",
                         _median_ms(walls[what]), _median_ms(walls[base]), "libiptc (current)",
                         note=f"{rst}; {note(what)}")
            for what, base, label in (("same_seq", "same", "port added (existing profile)"),
                                      ("gone_seq", "gone", "port removed (existing profile)")):
                self.row(f"{v}_port_{what}", f"{v}: 5. {label}, families in turn",
                         _median_ms(walls[what]), _median_ms(walls[base]),
                         "families side by side", note=f"libiptc, IPv4 then IPv6 in the "
                         f"calling thread, same run; {note(what)}")
            self.row(f"{v}_port_same_ebp", f"{v}: 5. port added (existing profile), "
                     "ebtables process", _median_ms(walls["same_ebp"]),
                     _median_ms(walls["same"]), "ebtables through netlink",
                     note=f"libiptc, ebtables-nft-restore beside it, same run; "
                     f"{note('same_ebp')}")
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

    def _touch_floor(self, fw, cpu, kern, one_rule=False):
        """Baseline: what a port change cannot go below with this variant - the three restores
        it needs (mangle + filter of each family, ebtables nat), each changing nothing (legacy
        still reads both tables whole), median ms; the restores' CPU time goes to ``cpu``, its
        kernel part to ``kern``. ``one_rule``: each restore adds one rule to each of its
        tables (legacy: each table read, rebuilt and replaced whole), timed, then takes it
        back (not timed): the least a port addition can do."""
        k = fw.backend.kernel
        if one_rule:
            ip = ("*mangle\n{v} fwsg-e-port -m physdev --physdev-in fwsgbench -j fwsg-unspec\n"
                  "COMMIT\n*filter\n{v} fwsg-in-from -m physdev --physdev-in fwsgbench "
                  "--physdev-is-bridged -j ACCEPT\nCOMMIT\n")
            eb = "*nat\n{v} fwsg-arp -i fwsgbench -j DROP\n"
        else:
            ip, eb = "*mangle\nCOMMIT\n*filter\nCOMMIT\n", "*nat\n"
        walls = []
        for _ in range(max(3, self.a.repeat)):
            texts = [(fam, (eb if fam == "eb" else ip).format(v="-A")) for fam in (4, 6, "eb")]
            wall, child, sys_time = _timed_cpu(lambda: k.restore_all(texts))
            walls.append(wall)
            cpu.append(child)
            kern.append(sys_time)
            if one_rule:
                k.restore_all([(fam, (eb if fam == "eb" else ip).format(v="-D"))
                               for fam in (4, 6, "eb")])
        return _median_ms(walls)

    def _iptc_floor(self, fw, cpu, kern):
        """Baseline: the least libiptc commit of the tables a port addition changes - mangle
        and filter of each family read, one chain created, committed (as a port change runs
        them), median ms; the chain is removed again untimed."""
        from fwsg.backends.iptables import iptc
        from fwsg.backends.iptables.plan import TableChange

        k = fw.backend.kernel
        libs = iptc.libs()
        keys = [(fam, t) for fam in (4, 6) for t in ("mangle", "filter")]
        ip = {key: iptc.steps(key[0], TableChange(new_bags=["fwsg-benchfloor"])) for key in keys}
        gone = {key: iptc.steps(key[0], TableChange(stale=["fwsg-benchfloor"])) for key in keys}
        walls = []
        for _ in range(max(3, self.a.repeat)):
            wall, child, sys_time = _timed_cpu(lambda: k._libiptc(libs, ip))
            walls.append(wall)
            cpu.append(child)
            kern.append(sys_time)
            k._libiptc(libs, gone)
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


def _cpu():
    """(user, system) CPU seconds so far of this process (all its threads: libiptc runs
    in-process) and of the processes it ran and waited for."""
    me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return me.ru_utime + kids.ru_utime, me.ru_stime + kids.ru_stime


def _settle(netns):
    """Wait, untimed, until the kernel has freed what the last nf_tables transaction deleted.
    It frees that after a grace period, and the release of any nfnetlink socket waits for it
    (~10-15 ms here): without this, a port added right after a removal through fwsg's kept
    socket would pay the removal's share in its restore processes' exit."""
    with entered(netns):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.bind((0, 0))
    sock.close()


def _timed_cpu(fn):
    """(wall seconds, CPU seconds fn took - fwsg's own and the processes it ran -, the
    kernel's part of them): the CPU time says what a change costs when other work shares the
    machine."""
    u0, s0 = _cpu()
    t = time.perf_counter()
    fn()
    wall = time.perf_counter() - t
    u1, s1 = _cpu()
    return wall, (u1 - u0) + (s1 - s0), s1 - s0


class _Swapped:
    """Within the block (when ``on``), ``kernel``'s method ``attr`` is what :meth:`make`
    returns (a baseline of earlier sessions); afterwards whatever was there before."""

    attr = ""

    def __init__(self, kernel, on):
        self.kernel, self.on = kernel, on

    def __enter__(self):
        if self.on:
            self.saved = self.kernel.__dict__.get(self.attr)
            setattr(self.kernel, self.attr, self.make(self.kernel))

    def __exit__(self, *exc):
        if self.on:
            delattr(self.kernel, self.attr)
            if self.saved is not None:
                setattr(self.kernel, self.attr, self.saved)


class _previous_restores(_Swapped):
    """Restores as earlier sessions ran them (the baseline of the "previous restores" rows):
    every process started at once but fed its text only after the one before it had finished,
    each taking the xtables lock itself."""

    attr = "restore_all"

    @staticmethod
    def make(k):
        import subprocess as sp

        from fwsg.errors import KernelError
        from fwsg.netns import entered

        def restore_all(texts):
            with entered(k.netns):
                procs = [(sp.Popen(k._restore_argv(fam), stdin=sp.PIPE, stdout=sp.PIPE,
                                   stderr=sp.PIPE, text=True), text) for fam, text in texts]
            bad = [p.args[0] for p, text in procs
                   if p.communicate(text, timeout=120) and p.returncode != 0]
            if bad:
                raise KernelError(f"{', '.join(bad)} refused")
        return restore_all


class _restore_path(_Swapped):
    """Tables changed through the restore tools, never libiptc (the baseline of the
    "restore tools" rows: iptables-legacy's path before libiptc)."""

    attr = "libiptc"

    @staticmethod
    def make(k):
        return False


class _families_in_turn(_Swapped):
    """libiptc's two families one after the other in the calling thread (the "families in
    turn" rows), not side by side."""

    attr = "iptc_threads"

    @staticmethod
    def make(k):
        return False


class _ebtables_process(_Swapped):
    """libiptc with ebtables' part through an ``ebtables-nft-restore`` process beside it, as
    before ebtables went through netlink (the "ebtables process" row)."""

    attr = "ebnl"

    @staticmethod
    def make(k):
        return False


class _deletions_by_tools(_Swapped):
    """A port removal's deletions through the restore tools (``ebtables-nft-restore`` beside
    libiptc, ``iptables-nft-restore``), as before they went through one nf_tables batch
    (the "deletions through the tools" rows, and the "previous restores" rows)."""

    attr = "nfdel"

    @staticmethod
    def make(k):
        return False


class _old_transport(_Swapped):
    """ipset elements changed as earlier sessions did: pyroute2's IPSet, one call per
    element (the baseline of the member rows)."""

    attr = "_elements"

    @staticmethod
    def make(k):
        import socket

        from pyroute2.ipset import IPSet

        from fwsg.netns import entered

        if getattr(k, "_bench_pyroute2", None) is None:
            with entered(k.netns):
                k._bench_pyroute2 = IPSet()
        ipset = k._bench_pyroute2

        def elements(name, members, add):
            v6 = ":" in next(iter(members))
            op = ipset.add if add else ipset.delete
            for m in members:
                op(name, m if "/" in m else f"{m}/{128 if v6 else 32}",
                   family=socket.AF_INET6 if v6 else socket.AF_INET, etype="net",
                   exclusive=False)
        return elements


def _timed_each(fn, items):
    out = []
    for x in items:
        t = time.perf_counter()
        fn(x)
        out.append(time.perf_counter() - t)
    return out
