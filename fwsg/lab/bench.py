"""The hot-path benchmark (``scripts/bench``): fwsg against baselines measured in the same run,
in a network namespace of its own. Prints a table, writes JSON. Not a test: no assertion on
time; the targets are printed next to the numbers.

Scenario: N ports on the host, G groups of R rules, M members cluster-wide (IPv4 and IPv6),
every port in the default group plus 1-3 others; group ``default`` holds most members, group
``sg-1`` 1,000 (both referenced as remote groups).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from fwsg import _fast_py, statefile
from fwsg.backends.nft.layout import Names
from fwsg.model import Model
from fwsg.lab.scenario import generate, member_v4, member_v6


def scenario(ports, groups, rules, members, seed=1):
    """The benchmark model (wire dict) and the names of its big and small groups."""
    doc = generate(ports=ports, groups=max(groups, 3), rules=max(rules, 2), members=0, seed=seed)
    mem = doc["sg_member_ips"]
    small = min(1000, members // 10)
    others = max(0, members // 20)
    big = members - small - others
    mem["default"] = {"IPv4": [member_v4(i) for i in range(int(big * 0.9))],
                      "IPv6": [member_v6(i) for i in range(big - int(big * 0.9))]}
    mem["sg-1"] = {"IPv4": [member_v4(200000 + i) for i in range(small)], "IPv6": []}
    rest = [g for g in doc["security_groups"] if g not in ("default", "sg-1")]
    for i in range(others):
        mem[rest[i % len(rest)]]["IPv4"].append(member_v4(400000 + i))
    r = doc["security_groups"]["sg-2"]
    r[0] = {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
            "port_range_min": 22, "port_range_max": 22, "remote_group_id": "default"}
    r[1] = {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
            "port_range_min": 5432, "port_range_max": 5432, "remote_group_id": "sg-1"}
    doc["security_groups"]["default"].append(
        {"direction": "ingress", "ethertype": "IPv6", "remote_group_id": "default"})
    return doc


def distinct_members(doc):
    """``doc`` (from :func:`scenario`) with every member distinct: the IPv4 benchmark range
    holds 131,072 addresses, so the big group's IPv4 members past 120,000 move to IPv6."""
    v4 = doc["sg_member_ips"]["default"]["IPv4"]
    if len(v4) > 120000:
        doc["sg_member_ips"]["default"]["IPv6"] += [member_v6(1 << 20 | i)
                                                    for i in range(len(v4) - 120000)]
        del v4[120000:]
    return doc


def naive_rule_count(model):
    """Rules the 2014 per-port, per-member iptables expansion would need for ``model``."""
    n = 0
    for port in model.ports.values():
        if not port.port_security:
            continue
        for sg in port.security_groups:
            for rule in model.groups[sg]:
                if rule.remote_group is not None:
                    n += len(model.members_of(rule.remote_group, rule.family))
                else:
                    n += 1
        n += 8  # per-port fixed rules (state, DHCP, spoofing)
    return n


def _median_ms(samples):
    return statistics.median(samples) * 1000


def _timed(fn, repeat):
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _nft(text_or_file, is_file=False):
    args = ["nft", "-f", text_or_file] if is_file else ["nft", text_or_file]
    subprocess.run(args, check=True, capture_output=True)


class Bench:
    """Runs the measurements; ``rows`` is the table, ``data`` the JSON. Values are in
    ``unit`` (milliseconds unless a subclass says otherwise)."""

    unit = "ms"

    def __init__(self, args, log):
        self.a = args
        self.log = log
        self.rows = []
        self.data = {"params": vars(args)}

    def row(self, key, what, fwsg_ms, base_ms=None, base_what="", target="", met=None, note=""):
        ratio = (fwsg_ms / base_ms) if base_ms else None
        self.rows.append((what, fwsg_ms, base_what, base_ms, ratio, target, met, note))
        self.data[key] = {"what": what, "fwsg_ms": fwsg_ms, "baseline": base_what,
                          "baseline_ms": base_ms, "ratio": ratio, "target": target, "met": met,
                          "note": note}

    def say(self, msg):
        print(msg, file=self.log, flush=True)

    def run(self):
        from fwsg.backends.nft import NftBackend
        from fwsg.firewall import Firewall

        a = self.a
        self.say(f"== scenario: {a.ports} ports, {a.groups} groups x {a.rules} rules, "
                 f"{a.members} members")
        doc = scenario(a.ports, a.groups, a.rules, a.members, a.seed)
        model = Model.from_wire(doc)
        big, small = "default", "sg-1"
        self.data["scenario"] = {"ports": len(model.ports), "groups": len(model.groups),
                                 "members": sum(len(v) for f in model.members.values()
                                                for v in f.values()),
                                 "big_group": len(model.members_of(big, 4)) + len(model.members_of(big, 6)),
                                 "small_group": len(model.members_of(small, 4))}

        # 1. full apply from empty, vs a bare nft -f of the same set elements
        self.say("== 1. full apply from empty")
        be = NftBackend()
        cold = self.cold_start(be, model, a.repeat, doc)
        fw = cold["fw"]
        self.row("full_apply", f"1. full apply from empty ({cold['elements']} set elements, "
                 "Model given)", cold["fwsg"], cold["nft"], "nft -f, same elements",
                 "<= 0.8x floor", cold["fwsg"] <= 0.8 * cold["nft"], f"via {cold['transport']}")
        self.row("full_apply_parse", "1b. full apply from empty, wire dict (parse included)",
                 cold["wire"], cold["nft"], "nft -f, same elements")
        self.row("floor_inproc", "1c. the floor itself through libnftables in-process",
                 cold["lib"], cold["nft"], "nft -f, same elements")
        self.data["batch_bytes_full"] = cold["batch_bytes"]
        at_1d = len(self.rows)   # row 1d is measured last (see below) and shown here

        # 2. no-op applies
        self.say("== 2. no-op apply")
        Firewall().flush()
        fw = Firewall()
        fw.apply(model)
        same = _timed(lambda: fw.apply(model), a.ops)
        model2 = Model.from_wire(doc)
        fw2 = Firewall()
        fw2.apply(model2)   # reads back, nothing to do
        equal = _timed(lambda: fw2.apply(Model.from_wire(doc)), 3)
        prebuilt = [Model.from_wire(doc) for _ in range(3)]
        it = iter(prebuilt)
        equal_nop = _timed(lambda: fw2.apply(next(it)), 3)
        self.row("noop_same", "2. no-op apply, same Model", _median_ms(same), target="< 10 ms",
                 met=_median_ms(same) < 10)
        self.row("noop_equal", "2b. no-op apply, an equal new Model (compare only)",
                 _median_ms(equal_nop), target="< 10 ms", met=_median_ms(equal_nop) < 10)
        self.row("noop_wire", "2c. no-op apply, wire dict (parse + compare)", _median_ms(equal))
        self.wire_rows(fw, doc)   # fw2 would cost the same: idle, it proved the kernel once

        # 3. member add / remove (delta), full-list form, baselines
        self.say("== 3. member changes")
        res = {}
        for label, sg in (("big", big), ("small", small)):
            adds, dels = [], []
            for i in range(a.ops):
                ip = f"203.0.113.{i % 250 + 1}" if i < 250 else member_v4(900000 + i)
                t = time.perf_counter()
                r1 = fw.add_security_group_members(sg, [ip])
                adds.append(time.perf_counter() - t)
                t = time.perf_counter()
                fw.remove_security_group_members(sg, [ip])
                dels.append(time.perf_counter() - t)
            res[label] = (adds, dels, r1.batch_bytes)
        ab, db, bytes_delta = res["big"]
        as_, ds, _ = res["small"]
        set_name = Names.member_set(big, 4)
        base_proc = _timed(lambda: (_nft(f"add element inet fwsg {set_name} {{ 203.0.113.250 }}"),
                                    _nft(f"delete element inet fwsg {set_name} {{ 203.0.113.250 }}")),
                           max(5, a.ops // 10))
        base_proc = [x / 2 for x in base_proc]
        els = sorted(fw._desired.rs.elements[("inet", set_name)])
        rewrite = [f"flush set inet fwsg {set_name}"] + [
            f"add element inet fwsg {set_name} {{ {', '.join(els[i:i + 4096])} }}"
            for i in range(0, len(els), 4096)]
        rewrite_text = "\n".join(rewrite) + "\n"
        with tempfile.NamedTemporaryFile("w", suffix=".nft", delete=False) as f:
            f.write(rewrite_text)
            rw_file = f.name
        try:
            rw_proc = _timed(lambda: _nft(rw_file, is_file=True), 3)
        finally:
            os.unlink(rw_file)
        rw_lib = _timed(lambda: be.run(rewrite_text), 3)
        big_n = len(els)
        ratio_sizes = _median_ms(ab) / _median_ms(as_)
        self.row("member_add_big", f"3. add 1 member, {big_n}-member group (delta form)",
                 _median_ms(ab), _median_ms(base_proc), "nft process per change", "< 0.15 ms",
                 _median_ms(ab) < 0.15)
        self.row("member_del_big", f"3. remove 1 member, {big_n}-member group (delta form)",
                 _median_ms(db), _median_ms(base_proc), "nft process per change", "< 0.15 ms",
                 _median_ms(db) < 0.15)
        self.row("member_add_small", f"3. add 1 member, {len(model.members_of(small, 4))}-member group",
                 _median_ms(as_), _median_ms(ab), "same, big group",
                 "big/small <= 1.5x", ratio_sizes <= 1.5, f"big/small = {ratio_sizes:.2f}x")
        self.row("member_del_small", "3. remove 1 member, small group", _median_ms(ds))
        self.row("member_rewrite_proc", "3. baseline: rewrite the whole set, nft -f",
                 _median_ms(rw_proc))
        self.row("member_rewrite_lib", "3. baseline: rewrite the whole set, libnftables",
                 _median_ms(rw_lib))
        flows = self.flows_cost(fw, big)
        if flows:
            self.row("member_del_flows", f"3. remove 1 member, {flows[0]} flows tracked",
                     flows[1], _median_ms(db), "same, conntrack table empty",
                     note="the kernel walks its whole conntrack table per dump")
        v4 = list(model.members_of(big, 4))
        v6 = list(model.members_of(big, 6))
        lists = [dict(IPv4=v4[1:] + ["203.0.113.251"], IPv6=v6),
                 dict(IPv4=v4[:-1] + ["203.0.113.252"], IPv6=v6)]
        fw.update_security_group_members(big, {"IPv4": v4, "IPv6": v6})
        full = []
        for i in range(max(6, a.ops // 10)):
            payload = json.loads(json.dumps(lists[i % 2]))  # fresh strings, as from the wire
            t = time.perf_counter()
            r = fw.update_security_group_members(big, payload)
            full.append(time.perf_counter() - t)
        self.row("member_full_list", f"3. full-list form, {len(v4) + len(v6)} addresses, 1-2 changed",
                 _median_ms(full), _median_ms(rw_lib), "rewrite whole set, libnftables",
                 "< 5 ms", _median_ms(full) < 5, f"{r.summary['elements_added']} added, "
                 f"{r.summary['elements_removed']} removed per call")

        # 4. one rule added to the group every port uses, and removed again. A rule of one
        # port from anywhere is an element of the group's port set; a rule of its own (here a
        # port range from a prefix) is added rule by rule (by handle), beside the same change
        # with the chain rewritten whole (flush + refill: what fwsg still does while the
        # handles are unknown). Interleaved.
        self.say("== 4. rule change")
        base_rules = doc["security_groups"][big]
        extra = {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                 "port_range_min": 8443, "port_range_max": 8443}
        ranged = dict(extra, port_range_max=8444, remote_ip_prefix="203.0.113.0/24")
        fw.update_security_group_rules(big, base_rules + [ranged])   # the kernel reports the
        fw.update_security_group_rules(big, base_rules)              # chain's handles
        rule_r, changed, times = None, {}, {}
        for i in range(max(12, a.ops // 4)):
            kind, rule = (("entry", extra), ("rule", ranged), ("rewrite", ranged))[i % 3]
            for rules, key in ((base_rules + [rule], "add"), (base_rules, "del")):
                if kind == "rewrite":
                    fw.current().meta.pop("rule_handles", None)
                before = {k: c.digest for k, c in fw.current().chains.items()}
                t = time.perf_counter()
                r = fw.update_security_group_rules(big, rules)
                times.setdefault(f"{key}_{kind}", []).append(time.perf_counter() - t)
                times.setdefault(f"{key}_{kind}_commit", []).append(r.timings_ms["commit"] / 1000)
                if key == "add" and kind not in changed:
                    if kind == "entry":
                        rule_r = r
                    after = {k: c.digest for k, c in fw.current().chains.items()}
                    changed[kind] = [k[1] for k in after if after[k] != before.get(k)]

        def chains(kind):
            return f"chains changed: {len(changed[kind])} ({', '.join(changed[kind])})"

        add = _median_ms(times["add_entry"])
        self.row("rule_add", f"4. add 1 rule to a group used by all {a.ports} ports "
                 f"(one port from anywhere)", add, _median_ms(times["add_rule"]),
                 "a rule of its own, by handle", target="<= 0.3 ms", met=add <= 0.3,
                 note=f"port-set element; commit (encode + kernel) "
                      f"{_median_ms(times['add_entry_commit']):.3f} ms; {chains('entry')}")
        self.row("rule_del", "4b. remove that rule again", _median_ms(times["del_entry"]),
                 _median_ms(times["del_rule"]), "a rule of its own, by handle",
                 note=f"port-set element; commit {_median_ms(times['del_entry_commit']):.3f} ms")
        self.row("rule_add_own", "4c. add 1 rule of its own (port range from a prefix)",
                 _median_ms(times["add_rule"]), _median_ms(times["add_rewrite"]),
                 "same, chain rewritten",
                 note=f"by handle; commit (encode + kernel) "
                      f"{_median_ms(times['add_rule_commit']):.3f} ms; {chains('rule')}")
        self.row("rule_del_own", "4d. remove that rule again", _median_ms(times["del_rule"]),
                 _median_ms(times["del_rewrite"]), "same, chain rewritten",
                 note=f"by handle; commit {_median_ms(times['del_rule_commit']):.3f} ms")

        # 5. port added / removed
        self.say("== 5. port add/remove")
        shared = list(model.ports["port-0"].security_groups)  # joins an existing profile
        for label, sgs, net in (("existing profile", shared, None),
                                ("new profile", ["default", "sg-1", "sg-2", "sg-3"], None),
                                ("existing profile, network", shared, "net-bench")):
            if net:  # a network (conntrack zone) that already has a port
                fw.prepare_port_filter({
                    "id": "bench-net", "device": "tapbenchnet", "mac_address": "fa:16:3e:ff:00:02",
                    "fixed_ips": ["198.51.100.78"], "security_groups": sgs, "network_id": net})
            padd, pdel, tr = [], [], set()
            for _ in range(max(6, a.ops // 10)):
                port = {"id": "bench-port", "device": "tapbench", "mac_address": "fa:16:3e:ff:00:01",
                        "fixed_ips": ["198.51.100.77", "2001:db8:ff::77"], "security_groups": sgs,
                        **({"network_id": net} if net else {})}
                t = time.perf_counter()
                rp = fw.prepare_port_filter(port)
                padd.append(time.perf_counter() - t)
                t = time.perf_counter()
                rd = fw.remove_port_filter("bench-port")
                pdel.append(time.perf_counter() - t)
                tr.update((rp.transport, rd.transport))
            key = {"existing profile": "port", "new profile": "port_newprofile"}.get(
                label, "port_network")
            if key == "port":
                port_bytes = (rp.batch_bytes, rd.batch_bytes)
            self.row(f"{key}_add", f"5. port added ({label})", _median_ms(padd), target="< 1 ms",
                     met=_median_ms(padd) < 1, note="via " + "/".join(sorted(tr)))
            self.row(f"{key}_del", f"5. port removed ({label})", _median_ms(pdel),
                     target="< 1 ms", met=_median_ms(pdel) < 1)

        # 6. sizes
        rs = NftBackend().read()
        kernel_rules = sum(len(c.rules) for c in rs.chains.values())
        kernel_elems = sum(len(v) for v in rs.elements.values())
        naive = naive_rule_count(model)
        self.data["sizes"] = {"kernel_rules": kernel_rules, "kernel_elements": kernel_elems,
                              "naive_rules": naive, "chains": len(rs.chains)}
        self.data["batch_bytes"] = {"full_apply": cold["batch_bytes"], "member_delta": bytes_delta,
                                    "rule_add": rule_r.batch_bytes, "port_add": port_bytes[0],
                                    "port_del": port_bytes[1]}

        # 7. twins on 1M-element states
        self.say("== 7. compiled vs pure-Python twin, 1M elements")
        self.twins()
        Firewall().flush()

        # 9. conntrack cleanup: flows that lose their rule
        if not a.quick:
            from fwsg.lab.benchflows import conntrack_rows

            self.say("== 9. conntrack cleanup")
            conntrack_rows(self, scenario, repeat=max(1, a.repeat))
            Firewall().flush()
            from fwsg.lab.benchmem import memory_rows

            self.say("== 10. memory")
            memory_rows(self)

        # 1d. last: a million-member cold start leaves the process's heap and collector
        # generations in a state that slowed the rows after it (2-5 by up to 2x), so it runs
        # after them and its row is put back after row 1c
        if a.big_members:
            Firewall().flush()
            n_rows = len(self.rows)
            self.say(f"== 1d. cold start with {a.big_members} members")
            big_model = Model.from_wire(distinct_members(
                scenario(a.ports, a.groups, a.rules, a.big_members, a.seed)))
            huge = self.cold_start(be, big_model, a.big_repeat)
            self.row("full_apply_1m", f"1d. full apply from empty ({huge['elements']} set "
                     "elements, Model given)", huge["fwsg"], huge["nft"],
                     "nft -f, same elements", "<= 1.0x floor", huge["fwsg"] <= huge["nft"],
                     f"via {huge['transport']}")
            del big_model, huge
            Firewall().flush()
            moved = self.rows[n_rows:]
            del self.rows[n_rows:]
            self.rows[at_1d:at_1d] = moved

    def wire_rows(self, fw, doc):
        """apply(dict) of a freshly decoded reply (JSON decoding not timed): equal, and with
        one member of the big group changed."""
        text = json.dumps(doc)
        fresh = [json.loads(text) for _ in range(7)]
        equal = []
        for d in fresh:
            t = time.perf_counter()
            fw.apply(d)
            equal.append(time.perf_counter() - t)
        changed = []
        for i in range(8):
            d = json.loads(text)
            d["sg_member_ips"]["default"]["IPv4"][5] = f"203.0.113.{i % 2 + 1}"
            t = time.perf_counter()
            r = fw.apply(d)
            changed.append(time.perf_counter() - t)
        fw.apply(json.loads(text))
        self.row("wire_equal", "2d. apply(dict), an equal freshly decoded reply", _median_ms(equal),
                 target="<= 10 ms", met=_median_ms(equal) <= 10)
        self.row("wire_one_member", "2e. apply(dict), fresh reply with 1 member changed",
                 _median_ms(changed), target="<= 12 ms", met=_median_ms(changed) <= 12,
                 note=f"{r.summary['elements_added']} added, {r.summary['elements_removed']} "
                      "removed per call")

    def flows_cost(self, fw, sg, n=1000):
        """(flows, median ms) of removing one member while ``n`` flows are tracked (flows from
        that member's address to a port, inserted through conntrack netlink)."""
        import socket

        from pyroute2 import Conntrack
        from pyroute2.conntrack import NFCTAttrTuple

        port = next(iter(fw.model.ports.values()))
        dst = port.fixed_ips[0]
        ct = Conntrack(nfgen_family=socket.AF_INET)
        try:
            for i in range(n):
                src = f"203.0.113.{i % 200 + 1}"
                sport = 10000 + i
                ct.entry("add", timeout=600, tuple_orig=NFCTAttrTuple(
                    saddr=src, daddr=dst, proto=6, sport=sport, dport=22),
                    tuple_reply=NFCTAttrTuple(saddr=dst, daddr=src, proto=6, sport=22,
                                              dport=sport))
        except Exception as e:  # noqa: BLE001 - a kernel without conntrack netlink
            self.say(f"   cannot insert flows ({e}); flow cost not measured")
            return None
        finally:
            ct.close()
        times = []
        for i in range(10):
            ip = f"203.0.113.{i + 1}"
            fw.add_security_group_members(sg, [ip])
            t = time.perf_counter()
            fw.remove_security_group_members(sg, [ip])
            times.append(time.perf_counter() - t)
        subprocess.run(["conntrack", "-F"], capture_output=True)
        return n, _median_ms(times)

    def cold_start(self, be, model, repeat, doc=None):
        """Full applies of ``model`` from empty and ``nft -f`` of the same set elements (each
        set declared as fwsg declares it, in a table of its own), interleaved; also through
        libnftables in-process, and of ``doc`` (wire dict) when given. Medians in ms."""
        from fwsg.firewall import Firewall

        totals, parse_totals, floor_proc, floor_lib = [], [], [], []
        fw = Firewall()
        fw.flush()
        fw.apply(model)
        desired = fw._desired.rs
        floor = ["add table inet floor"]
        for k, sd in sorted(desired.sets.items()):
            if sd.is_map or not desired.elements[k]:
                continue
            floor.append(f"add set inet floor {k[0][0]}{sd.name} {{ type {sd.key_type};"
                         f"{' flags interval;' if sd.interval else ''} }}")
            els = sorted(desired.elements[k])
            for i in range(0, len(els), 4096):
                floor.append(f"add element inet floor {k[0][0]}{sd.name} "
                             f"{{ {', '.join(els[i:i + 4096])} }}")
        n_el = sum(len(v) for k, v in desired.elements.items() if not desired.sets[k].is_map)
        del desired
        text = "\n".join(floor) + "\n"
        del floor
        with tempfile.NamedTemporaryFile("w", suffix=".nft", delete=False) as f:
            f.write(text)
            floor_file = f.name
        try:
            for _ in range(repeat):
                Firewall().flush()
                fw = Firewall()
                t = time.perf_counter()
                r = fw.apply(model)
                totals.append(time.perf_counter() - t)
                t = time.perf_counter()
                _nft(floor_file, is_file=True)
                floor_proc.append(time.perf_counter() - t)
                _nft("delete table inet floor")
                t = time.perf_counter()
                be.run(text)
                floor_lib.append(time.perf_counter() - t)
                _nft("delete table inet floor")
            for _ in range(max(1, repeat // 2) if doc is not None else 0):
                Firewall().flush()
                t = time.perf_counter()
                Firewall().apply(doc)
                parse_totals.append(time.perf_counter() - t)
        finally:
            os.unlink(floor_file)
        return {"fw": fw, "fwsg": _median_ms(totals), "nft": _median_ms(floor_proc),
                "lib": _median_ms(floor_lib),
                "wire": _median_ms(parse_totals) if parse_totals else None,
                "elements": n_el, "transport": r.transport, "batch_bytes": r.batch_bytes}

    def twins(self):
        n = self.a.twin_elements
        a_list = [member_v4(i) for i in range(n)]
        b_list = [member_v4(i + n // 100) for i in range(n)]  # 1% shifted
        try:
            from fwsg import _fast as c
        except ImportError:
            self.say("   fwsg._fast not built: twin comparison skipped")
            return
        pa_c = _timed(lambda: c.pack_addrs(a_list, 4), 3)
        pa_p = _timed(lambda: _fast_py.pack_addrs(a_list, 4), 1)
        A, _ = c.pack_addrs(a_list, 4)
        B, _ = c.pack_addrs(b_list, 4)
        d_c = _timed(lambda: c.diff_packed(A, B, 4), 5)
        d_p = _timed(lambda: _fast_py.diff_packed(A, B, 4), 1)
        sa, sb = set(a_list), set(b_list)
        d_set = _timed(lambda: (sa - sb, sb - sa), 3)
        self.row("twin_diff", f"7. diff of two {n}-element states (packed), compiled",
                 _median_ms(d_c), _median_ms(d_p), "pure-Python twin", ">= 5x faster",
                 _median_ms(d_p) / _median_ms(d_c) >= 5,
                 f"{_median_ms(d_p) / _median_ms(d_c):.0f}x; Python set difference of str: "
                 f"{_median_ms(d_set):.1f} ms")
        self.row("twin_pack", f"7. parse {n} address strings, compiled", _median_ms(pa_c),
                 _median_ms(pa_p), "pure-Python twin", "",
                 None, f"{_median_ms(pa_p) / _median_ms(pa_c):.0f}x")

    def table(self, out):
        w = max(len(r[0]) for r in self.rows)
        out.write(f"\n{'measurement':<{w}} | {'fwsg ' + self.unit:>9} | {'baseline':<30} | "
                  f"{'base ' + self.unit:>9} | "
                  f"{'fwsg/base':>9} | {'target':<18} | met\n")
        out.write("-" * (w + 100) + "\n")
        for what, f_ms, bw, b_ms, ratio, target, met, note in self.rows:
            out.write(f"{what:<{w}} | {f_ms:>9.3f} | {bw:<30} | "
                      f"{(f'{b_ms:.3f}' if b_ms else ''):>9} | "
                      f"{(f'{ratio:.3g}x' if ratio else ''):>9} | {target:<18} | "
                      f"{'' if met is None else ('yes' if met else 'NO')}"
                      f"{'  ' + note if note else ''}\n")
        s = self.data.get("sizes")
        if s:
            out.write(f"\n6. kernel: {s['kernel_rules']} rules in {s['chains']} chains, "
                      f"{s['kernel_elements']} set/map elements; the naive per-member expansion: "
                      f"{s['naive_rules']} rules ({s['naive_rules'] / max(1, s['kernel_rules']):.0f}x)\n")
        b = self.data.get("batch_bytes")
        if b:
            out.write("8. batch bytes: " + ", ".join(f"{k} {v}" for k, v in b.items()) + "\n")


def packet_main(args):
    """``--packet``: the packet-path rows (their labs are namespaces of their own)."""
    from fwsg import fast
    from fwsg.lab.bench_packet import PacketBench

    bench = PacketBench(args, sys.stderr)
    bench.data["compiled"] = fast.COMPILED
    bench.run()
    print("fwsg packet-path benchmark (CPU microseconds per packet over a plain bridge: median "
          "over interleaved rounds, each firewall run sent slice by slice in turn with the plain "
          "bridge's; the interquartile range in the note)")
    bench.table(sys.stdout)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(bench.data, f, indent=2, default=str)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ports", type=int, default=500)
    ap.add_argument("--groups", type=int, default=50)
    ap.add_argument("--rules", type=int, default=20)
    ap.add_argument("--members", type=int, default=100000)
    ap.add_argument("--repeat", type=int, default=5, help="repetitions of the big measurements")
    ap.add_argument("--ops", type=int, default=200, help="repetitions of the small ones")
    ap.add_argument("--twin-elements", type=int, default=1000000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--big-members", type=int, default=1000000,
                    help="distinct members of the second cold start (row 1d); 0 skips it")
    ap.add_argument("--big-repeat", type=int, default=3, help="repetitions of row 1d")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--json-out", metavar="FILE", help="write the results as JSON")
    ap.add_argument("--backend", choices=["nft", "iptables"], default="nft",
                    help="nft: the nftables rows (default); iptables: the iptables backend's "
                    "rows, iptables-legacy and iptables-nft, with Neutron's figures as the peer")
    ap.add_argument("--peer", choices=["neutron"], help="also measure a peer on the same "
                    "scenario: neutron = OpenStack Neutron's agent code and its iptables "
                    "driver (ipset on), installed into a virtualenv of its own on first use")
    ap.add_argument("--peer-repeat", type=int, default=1, help="repetitions of the peer's "
                    "small steps (it is slow)")
    ap.add_argument("--peer-initials", type=int, default=3, help="runs of the peer's initial "
                    "apply (the first within its full run), each beside 2 of fwsg's")
    ap.add_argument("--packet", action="store_true", help="the packet-path rows instead: CPU "
                    "per packet of UDP between two VMs on a bridge, each firewall against none "
                    "(fwsg.lab.bench_packet); with --peer neutron, Neutron's driver as well")
    ap.add_argument("--packet-members", default="10000,50000,100000",
                    help="member counts of the packet labs (comma-separated)")
    ap.add_argument("--packet-backends", default="nft,iptables-nft,iptables-legacy",
                    help="fwsg backends of the packet labs (comma-separated)")
    ap.add_argument("--packet-count", type=int, default=50000, help="packets per run")
    ap.add_argument("--packet-new", type=int, default=20000, help="packets per new-flows run")
    ap.add_argument("--packet-parts", type=int, default=20, help="slices of each run, sent "
                    "in turn with the plain bridge's")
    ap.add_argument("--packet-rounds", type=int, default=9, help="interleaved rounds")
    ap.add_argument("--peer-max-members", type=int, default=50000, help="largest member "
                    "count the peer is asked to take (Neutron's ipsets hold 65,536)")
    args = ap.parse_args(argv)
    if args.quick:
        args.ports, args.groups, args.rules, args.members = 20, 5, 5, 2000
        args.repeat, args.ops, args.twin_elements = 2, 20, 20000
        args.big_members, args.big_repeat = 20000, 1
        if args.packet:
            args.ports = 300   # the packet VMs are ports 248 and 249
            args.packet_count, args.packet_new, args.packet_rounds = 2000, 500, 3
            args.packet_members = ",".join(str(m) for m in (1000, 2000))
    if os.geteuid() != 0:
        print("scripts/bench: run as root (it makes a network namespace)", file=sys.stderr)
        return 1
    from fwsg.lab.errors import LabError

    try:
        if args.peer == "neutron":   # installed (or refused) before minutes of measuring
            from fwsg.lab.peer import DEFAULT_VENV, ensure_venv

            ensure_venv(DEFAULT_VENV, lambda msg: print(msg, file=sys.stderr, flush=True))
        if args.packet:
            return packet_main(args)
        return bench_main(args)
    except LabError as e:
        print(f"scripts/bench: {e}", file=sys.stderr)
        return e.exit_code


def bench_main(args):
    """The hot-path rows (or ``--backend iptables``'s) in a namespace of their own, then the
    peer's; prints the table."""
    from fwsg import fast
    from fwsg.netns import entered

    ns = f"fwsg-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    # the rows' Firewalls (netns=None inside the bench's namespace) keep their names records in
    # a directory of their own, never in the host's record of its root namespace
    try:
        with tempfile.TemporaryDirectory(prefix="fwsg-bench-state-", dir="/run") as records, \
                statefile.kept_in(records):
            # this thread and the nft processes it starts live there until the bench ends;
            # then the thread returns to its own namespace (main() may be called in-process)
            with entered(ns):
                if args.backend == "iptables":
                    from fwsg.lab.bench_iptables import IptablesBench

                    bench = IptablesBench(args, sys.stderr)
                else:
                    bench = Bench(args, sys.stderr)
                bench.data["compiled"] = fast.COMPILED
                bench.run()
            if args.peer == "neutron":
                from fwsg.lab.peer import neutron_rows

                neutron_rows(bench, scenario(args.ports, args.groups, args.rules, args.members,
                                             args.seed), repeat=args.peer_repeat,
                             **({"fwsg_cold_starts": 0, "initials": 1}
                                if args.backend == "iptables"
                                else {"initials": args.peer_initials}))
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    print(f"fwsg benchmark ({'compiled' if fast.COMPILED else 'pure-Python'} hot path, "
          f"median of repeated runs; baselines measured in the same run)")
    bench.table(sys.stdout)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(bench.data, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
