"""The sync benchmark (scripts/bench_sync): a private etcd, an agent in this process on a network
namespace of its own, the real kernel. Prints a table and writes JSON (--json-out); never
asserts a time. ``--quick`` is the CI smoke size.

Measured: the cost of N watch streams with etcd3gw's HTTP gateway; put-to-commit latency at
fixed change rates (and lost updates: kernel compared with the store at the end); the 2014
storm (port and member puts while this host has its ports in the default group: agent CPU
seconds, time to converge after the last put) beside Neutron's figure measured earlier on this
machine; the grouped wire size vs a per-port expansion; cold start from etcd vs from a file.

The private etcd keeps its data on tmpfs (``/dev/shm``, removed at the end) unless
``--etcd-data disk``: on this machine's disk every etcd commit waits for an fsync (~15 ms under
load), which bounds the writers below 1,000 puts/s and dominates put -> commit. On tmpfs the
fsync is free and the benchmark measures the agent, not the disk. Rates of 200/s and more are
written by several writer processes with several connections each; every change is still one
put (or delete) of its own, never several changes in one transaction. Each rate reports the
rate actually offered next to the target.
"""

import argparse
import bisect
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

NEUTRON_S_PER_MEMBER_EVENT = 5.7  # Neutron's agent, 500 ports / 10k members, this machine


def _pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100.0 * (len(xs) - 1))))]


def _rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _tcp_to(port):
    """Established TCP connections of this process to 127.0.0.1:port."""
    n = 0
    with open("/proc/self/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[3] == "01" and int(parts[2].split(":")[1], 16) == port:
                n += 1
    return n


def _thread_cpu(tids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / tick


STEPS = ["watches", "wire", "cold", "rates", "storm"]


def _writer(endpoint, prefix, groups, pairs, t_start, interval, threads=1):
    """A writer process with ``threads`` connections of its own: pair j adds member j at
    change 2j and removes it at change 2j+1, each ONE put (or delete) at its due time (late
    ones go at once, so the offered rate is what etcd and the writers can do); pair j stays
    on one connection, its delete after its add. Returns [(revision, perf_counter at the
    call, seconds the call took)]."""
    from fwsg.sync.layout import Layout
    from fwsg.sync.store import EtcdStore

    L, out, lock = Layout(prefix), [], threading.Lock()

    def run(mine):
        st, res = EtcdStore([endpoint]), []
        for j in mine:
            ip = f"2001:db8:7::{j:x}"
            key = L.member(groups[j % len(groups)], ip)
            for i in (2 * j, 2 * j + 1):
                d = t_start + i * interval - time.perf_counter()
                if d > 0:
                    time.sleep(d)
                t0 = time.perf_counter()
                rev = st.put(key, json.dumps(ip)) if i % 2 == 0 else st.delete(key)
                res.append((rev, t0, time.perf_counter() - t0))
        with lock:
            out.extend(res)

    ts = [threading.Thread(target=run, args=(pairs[k::threads],)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


class SyncBench:
    def __init__(self, args):
        self.args = args
        self.rows = []
        self.data = {"args": vars(args)}

    def row(self, what, value, unit, baseline=None, note=""):
        self.rows.append((what, value, unit, baseline, note))
        print(f"  {what}: {value} {unit} {note}", file=sys.stderr)

    # -- watches -------------------------------------------------------------------------------
    def watches(self, server, n):
        from fwsg.sync.store import EtcdStore

        st = EtcdStore([server.endpoint])
        th0, rss0, c0 = threading.active_count(), _rss_kb(), _tcp_to(server.client_port)
        seen = {}
        lock = threading.Lock()

        def on_events(evs, _rev):
            t = time.perf_counter()
            with lock:
                for k, _, _ in evs:
                    seen.setdefault(k, t)

        ws = [st.watch(f"/wb{n}/{i}/", st.revision() + 1, on_events, lambda e: None)
              for i in range(n)]
        time.sleep(1.0 + n / 200)
        threads, rss = threading.active_count() - th0, _rss_kb() - rss0
        conns = _tcp_to(server.client_port) - c0
        lat = []
        for j in range(200):
            k = f"/wb{n}/{j % n}/k{j}"
            t0 = time.perf_counter()
            st.put(k, "x")
            while k not in seen and time.perf_counter() - t0 < 2:
                time.sleep(0.0002)
            if k in seen:
                lat.append((seen[k] - t0) * 1000)
        for w in ws:
            w.cancel()
        res = {"watches": n, "threads": threads, "connections": conns, "rss_kb": rss,
               "put_to_event_ms_p50": _pct(lat, 50), "put_to_event_ms_p99": _pct(lat, 99)}
        self.data.setdefault("watches", []).append(res)
        self.row(f"{n} watches: threads / connections / RSS", f"{threads} / {conns} / "
                 f"{rss / 1024:.1f}", "- / - / MiB")
        self.row(f"{n} watches: put -> event p50 / p99", f"{res['put_to_event_ms_p50']:.2f} / "
                 f"{res['put_to_event_ms_p99']:.2f}", "ms")

    # -- the agent on a big model --------------------------------------------------------------
    def setup_model(self, server, prefix):
        from fwsg.lab.scenario import generate
        from fwsg.sync.layout import Layout
        from fwsg.sync.publish import publish
        from fwsg.sync.store import EtcdStore

        a = self.args
        doc = generate(ports=a.ports, groups=a.groups, rules=a.rules, members=a.members, seed=1)
        st, L = EtcdStore([server.endpoint]), Layout(prefix)
        t0 = time.perf_counter()
        publish(st, L, doc, host="hv1")
        self.row("publish the model into etcd (once)", round(time.perf_counter() - t0, 2), "s",
                 note=f"{a.ports} ports, {a.members} members")
        return doc, st, L

    def start_agent(self, server, L, ns, on_commit=None):
        from fwsg.firewall import Firewall
        from fwsg.sync.agent import EtcdAgent
        from fwsg.sync.store import EtcdStore

        agent = EtcdAgent(Firewall(netns=ns), EtcdStore([server.endpoint]), L, "hv1",
                          reconcile_every=0, on_commit=on_commit)
        t = threading.Thread(target=agent.run, daemon=True)
        t0 = time.perf_counter()
        t.start()
        while not agent.connected:
            time.sleep(0.005)
        return agent, t, time.perf_counter() - t0

    def rates(self, server, st, L, ns, doc):
        commits = []

        def on_commit(rev, _t):
            commits.append((rev, time.perf_counter()))

        agent, thread, _ = self.start_agent(server, L, ns, on_commit)
        groups = sorted(doc["security_groups"])
        try:
            for rate in self.args.rates:
                commits.clear()
                puts = []
                cpu0 = _thread_cpu(self._agent_tids(agent, thread))
                n = int(rate * self.args.seconds) // 2 * 2
                interval = 1.0 / rate
                procs, threads = (self.args.writers, self.args.writer_threads) \
                    if rate >= 200 else (1, 1)
                # writers are processes of their own (no GIL shared with the agent), each with
                # several connections; their perf_counter is the same monotonic clock as ours
                t_start = time.perf_counter() + 3.0  # spawning the writers takes a while
                import multiprocessing

                ctx = multiprocessing.get_context("spawn")
                jobs = [(server.endpoint, L.prefix, groups, list(range(w, n // 2, procs)),
                         t_start, interval, threads) for w in range(procs)]
                with ctx.Pool(procs) as pool:
                    for part in pool.starmap(_writer, jobs):
                        puts.extend(part)
                # offered: the changes over the time from the schedule's start to the last
                # call's return (writers late to the schedule lower it)
                achieved = n / (max(t0 + dt for _, t0, dt in puts) - t_start)
                time.sleep(1.0)
                cpu = _thread_cpu(self._agent_tids(agent, thread)) - cpu0
                cs = sorted(commits)
                crev = [r for r, _ in cs]
                lat, late = [], []  # put -> commit (ms); and by when the put was made
                for rev, t0, _ in sorted(puts, key=lambda p: p[1]):
                    i = bisect.bisect_left(crev, rev)
                    if i < len(cs):
                        lat.append((cs[i][1] - t0) * 1000)
                        late.append(lat[-1])
                put_ms = [dt * 1000 for _, _, dt in puts]
                tenth = max(1, len(late) // 10)
                lag_end = (_pct(late[:tenth], 50), _pct(late[-tenth:], 50))
                lost = self.lost(st, L, ns)
                res = {"rate": rate, "achieved": round(achieved, 1), "changes": n,
                       "p50_ms": _pct(lat, 50), "p99_ms": _pct(lat, 99),
                       "transactions": len(cs), "lost_updates": lost,
                       "uncommitted": n - len(lat), "writers": procs * threads,
                       "put_call_ms_p50": _pct(put_ms, 50), "put_call_ms_p99": _pct(put_ms, 99),
                       "lag_end_ms": lag_end, "agent_cpu_s": cpu}
                self.data.setdefault("rates", []).append(res)
                self.row(f"put -> commit at {rate}/s (offered {achieved:.0f}/s): p50 / p99",
                         f"{res['p50_ms']:.2f} / {res['p99_ms']:.2f}", "ms",
                         baseline=f"target {rate}/s",
                         note=f"{len(cs)} transactions for {n} changes; lost updates {lost}")
                self.row(f"  {rate}/s: lag p50 first / last tenth; agent CPU",
                         f"{lag_end[0]:.1f} / {lag_end[1]:.1f}; {cpu:.1f}", "ms; CPU-s",
                         note=f"{procs * threads} writer connection(s), one put per change; "
                         f"etcd put call p50 / p99 {res['put_call_ms_p50']:.1f} / "
                         f"{res['put_call_ms_p99']:.1f} ms")
        finally:
            agent.stop()
            thread.join(10)

    @staticmethod
    def _agent_tids(agent, thread):
        """The apply loop's thread and its watch threads."""
        return [thread.native_id] + [s.watch.thread.native_id for s in agent.streams.values()
                                     if s.watch is not None]

    def lost(self, st, L, ns):
        """Elements that differ between the kernel and the store (0: nothing lost)."""
        from fwsg.firewall import Firewall
        from fwsg.sync.agent import EtcdAgent

        probe = EtcdAgent(Firewall(backend="fake"), st, L, "hv1")
        if not probe._full_sync():
            return None
        probe._cancel_watches()
        plan = Firewall(netns=ns).plan(probe.fw.model)
        s = plan.summary
        return s["elements_added"] + s["elements_removed"] + s["chains_added"] + \
            s["chains_changed"] + s["chains_removed"]

    def storm(self, server, st, L, ns, doc):
        commits = []
        agent, thread, _ = self.start_agent(server, L, ns,
                                            lambda rev, t: commits.append((rev, t)))
        try:
            tids = [thread.native_id] + [s.watch.thread.native_id for s in agent.streams.values()]
            cpu0 = _thread_cpu(tids)
            port = next(iter(doc["devices"].values()))
            ops = []
            for i in range(500):  # 500 VMs boot across 50 hosts; 10 of them here
                host = "hv1" if i % 50 == 0 else f"hv{2 + i % 49}"
                p = dict(port, device=f"tapS{i}", mac_address=f"fa:16:3f:00:{i >> 8:02x}:{i & 255:02x}",
                         fixed_ips=[f"2001:db8:8::{i:x}"], security_groups=["default"])
                ops.append(("put", L.port(host, f"storm-{i}"), json.dumps(p)))
                ops.append(("put", L.member("default", f"2001:db8:8::{i:x}"),
                            json.dumps(f"2001:db8:8::{i:x}")))
            lock = threading.Lock()
            it = iter(ops)
            last = [0, 0.0]

            def writer():
                while True:
                    with lock:
                        op = next(it, None)
                    if op is None:
                        return
                    rev = st.put(op[1], op[2])
                    with lock:
                        if rev > last[0]:
                            last[:] = [rev, time.time()]
            t0 = time.time()
            ws = [threading.Thread(target=writer) for _ in range(4)]
            for w in ws:
                w.start()
            for w in ws:
                w.join()
            t_last = time.time()
            deadline = time.time() + 60
            while not any(r >= last[0] for r, _ in commits) and time.time() < deadline:
                time.sleep(0.002)
            done = next((t for r, t in commits if r >= last[0]), None)
            tids = [thread.native_id] + [s.watch.thread.native_id for s in agent.streams.values()
                                         if s.watch is not None]
            cpu = _thread_cpu(tids) - cpu0
            lost = self.lost(st, L, ns)
        finally:
            agent.stop()
            thread.join(10)
        conv = (done - t_last) if done else None
        res = {"puts": len(ops), "put_seconds": round(t_last - t0, 2), "agent_cpu_s": cpu,
               "converged_after_last_put_s": conv, "transactions": len(commits),
               "lost_updates": lost,
               "neutron_s": NEUTRON_S_PER_MEMBER_EVENT * 500}
        self.data["storm"] = res
        self.row("storm: agent CPU (500 port + 500 member puts)", round(cpu, 2), "CPU-s",
                 baseline=f"Neutron: {NEUTRON_S_PER_MEMBER_EVENT} s per member event x 500 = "
                 f"{NEUTRON_S_PER_MEMBER_EVENT * 500:.0f} s (peer's figure)")
        self.row("storm: converged after the last put", None if conv is None else round(conv, 3),
                 "s", note=f"{len(commits)} transactions; lost updates {lost}")

    def wire_size(self):
        """Grouped (the layout: each group's rules and members once) vs per-port expanded
        (every remote-group rule repeated once per member, as per-port RPC replies carry it),
        for 500 ports in the default group with 10k members. Sizes are summed, not built."""
        from fwsg.model import Model
        from fwsg.lab.scenario import generate
        from fwsg.sync.layout import Layout
        from fwsg.sync.publish import desired_keys

        a = self.args
        from fwsg.lab.scenario import member_v4

        doc = generate(ports=a.ports, groups=a.groups, rules=a.rules, members=0, seed=1)
        n = min(a.members, 10000)  # the default group, used by every port, holds n members
        doc["sg_member_ips"]["default"] = {"IPv4": [member_v4(i) for i in range(n)], "IPv6": []}
        keys = desired_keys(Layout(), Model.from_wire(doc), "hv1")
        grouped = sum(len(k) + len(v) for k, v in keys.items())
        members = doc["sg_member_ips"]
        rule_bytes = {}

        def expanded_rules(g):
            if g not in rule_bytes:
                n = 0
                for r in doc["security_groups"][g]:
                    rg = r.get("remote_group_id")
                    if not rg:
                        n += len(json.dumps(r)) + 2
                        continue
                    base = {k: v for k, v in r.items() if k != "remote_group_id"}
                    one = len(json.dumps(dict(base, source_ip_prefix=""))) + 2
                    ips = members.get(rg, {}).get(r["ethertype"], [])
                    n += len(ips) * one + sum(len(ip) for ip in ips)
                rule_bytes[g] = n
            return rule_bytes[g]

        expanded = 0
        for pid, port in doc["devices"].items():
            expanded += len(json.dumps({pid: port})) + sum(expanded_rules(g)
                                                          for g in port["security_groups"])
        n_default = sum(len(v) for v in members["default"].values())
        self.data["wire"] = {"grouped_bytes": grouped, "expanded_bytes": expanded,
                             "default_members": n_default}
        self.row(f"wire size: grouped ({a.ports} ports in default, {n_default} members)",
                 f"{grouped / 1e6:.2f}", "MB",
                 baseline=f"per-port expanded: {expanded / 1e6:.1f} MB "
                 f"({expanded / grouped:.0f}x)")

    def cold(self, server, L, ns, doc):
        from fwsg.firewall import Firewall
        from fwsg.sync.agent import FileAgent

        Firewall(netns=ns).flush()
        agent, thread, t_etcd = self.start_agent(server, L, ns)
        agent.stop()
        thread.join(10)
        Firewall(netns=ns).flush()
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(doc, f)
        try:
            fa = FileAgent(Firewall(netns=ns), f.name, "hv1", reconcile_every=0)
            t = threading.Thread(target=fa.run, daemon=True)
            t0 = time.perf_counter()
            t.start()
            while not fa.transactions:
                time.sleep(0.005)
            t_file = time.perf_counter() - t0
            fa.stop()
            t.join(10)
        finally:
            os.unlink(f.name)
        self.data["cold_start"] = {"etcd_s": t_etcd, "file_s": t_file}
        self.row("cold start from etcd (read at one revision + one apply)", round(t_etcd, 2),
                 "s", baseline=f"from a file: {t_file:.2f} s")

    def table(self, out):
        w = max(len(r[0]) for r in self.rows)
        out.write(f"{'measurement':<{w}} | {'value':>16} | {'unit':<14} | baseline / note\n")
        out.write("-" * (w + 60) + "\n")
        for what, value, unit, base, note in self.rows:
            extra = "; ".join(x for x in (base or "", note) if x)
            out.write(f"{what:<{w}} | {str(value):>16} | {unit:<14} | {extra}\n")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="scripts/bench_sync", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ports", type=int, default=500)
    ap.add_argument("--groups", type=int, default=50)
    ap.add_argument("--rules", type=int, default=20)
    ap.add_argument("--members", type=int, default=100000)
    ap.add_argument("--seconds", type=float, default=30.0, help="duration of each rate step")
    ap.add_argument("--rates", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--watches", type=int, nargs="+", default=[50, 500])
    ap.add_argument("--steps", nargs="+", default=STEPS, choices=STEPS,
                    help="which measurements (default: all)")
    ap.add_argument("--writers", type=int, default=4,
                    help="writer processes at rates >= 200/s (below: one process, one connection)")
    ap.add_argument("--writer-threads", type=int, default=4,
                    help="connections (threads) per writer process at rates >= 200/s")
    ap.add_argument("--etcd-data", choices=["tmpfs", "disk"], default="tmpfs",
                    help="where the private etcd keeps its data: tmpfs (/dev/shm, default: "
                    "fsync costs nothing, so the benchmark measures the agent, not this "
                    "machine's disk) or disk (a temporary directory under $TMPDIR)")
    ap.add_argument("--quick", action="store_true", help="CI smoke sizes and durations")
    ap.add_argument("--json-out", metavar="FILE")
    args = ap.parse_args(argv)
    if args.quick:
        args.ports, args.groups, args.rules, args.members = 50, 10, 5, 5000
        args.seconds, args.watches = 2.0, [20]
    if os.geteuid() != 0:
        print("scripts/bench_sync: run as root (it makes a network namespace)", file=sys.stderr)
        return 1
    from fwsg.sync.server import EtcdServer

    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on SIGTERM too
    bench = SyncBench(args)
    shm = "/dev/shm" if args.etcd_data == "tmpfs" and os.path.isdir("/dev/shm") else None
    bench.data["etcd_data"] = "tmpfs" if shm else "disk"
    ns = f"fwsg-syncb-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    server = EtcdServer(tmp_parent=shm)  # close() removes its data directory
    bench.data["etcd_data_dir"] = server.data_dir
    try:
        server.start()
        if "watches" in args.steps:
            for n in args.watches:
                bench.watches(server, n)
        if "wire" in args.steps:
            bench.wire_size()
        if {"cold", "rates", "storm"} & set(args.steps):
            doc, st, L = bench.setup_model(server, "/bench")
            if "cold" in args.steps:
                bench.cold(server, L, ns, doc)
            if "rates" in args.steps:
                bench.rates(server, st, L, ns, doc)
            if "storm" in args.steps:
                bench.storm(server, st, L, ns, doc)
    finally:
        server.close()
        subprocess.run(["ip", "netns", "del", ns], check=False)
    print(f"fwsg sync benchmark ({args.ports} local ports, {args.members} members, "
          f"{args.seconds:g} s per rate; one run, noisy 2-core machine)")
    print("etcd data: " + ("tmpfs (/dev/shm; its fsync is free: the agent is measured, not "
                           "the disk)" if shm else "disk (temporary directory; every commit "
                           "waits for fsync)"))
    bench.table(sys.stdout)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(bench.data, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
