"""Compare the placement strategies on seeded generated clusters; print a table, write JSON.

For every seed: a cluster of 3-64 mixed nodes with guests, usage series (daily cycle, noise,
bursts), HA groups, affinity/anti-affinity, storage and network masks; three events (one node
fails, two fail, the busiest node is evacuated). Each strategy plans each event; the plan is
checked independently for hard-constraint violations and the next 20 minutes of the series are
replayed on the result. Plus the decision time of 1,000 guests over 64 nodes.

    scripts/bench_placement                  # 100 seeds (about 30 s on 2 cores)
    scripts/bench_placement --quick          # 8 seeds
    scripts/bench_placement --seeds 200 --json-out bench.json
"""

import argparse
import json
import os
import platform
import sys
import time


from fwsg.placement import STRATEGIES, plan_recovery, violations
from fwsg.placement.simulate import Replay, generate, scale_case
from fwsg.quantities import percentile

COLUMNS = (
    ("unplaced", "unplaced", "{:.0f}"),
    ("violations", "viol", "{:.0f}"),
    ("cpu_max", "cpu max", "{:.1%}"),
    ("cpu_p95", "cpu p95", "{:.1%}"),
    ("mem_max", "mem max", "{:.1%}"),
    ("mem_p95", "mem p95", "{:.1%}"),
    ("imbalance", "imbalance", "{:.3f}"),
    ("overload_min", ">80% node-min", "{:.1f}"),  # total over all events
    ("ms_mean", "ms/plan", "{:.2f}"),
    ("ms_scale", "ms 1000x64", "{:.1f}"),
)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=100, help="number of seeds (default 100)")
    ap.add_argument("--first-seed", type=int, default=0, help="first seed (default 0)")
    ap.add_argument("--quick", action="store_true", help="8 seeds, one timing repeat")
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated (default: all)")
    ap.add_argument("--json-out", metavar="FILE", help="write all results as JSON")
    args = ap.parse_args(argv)
    seeds = 8 if args.quick else args.seeds
    names = [s for s in args.strategies.split(",") if s]
    for s in names:
        if s not in STRATEGIES:
            ap.error(f"unknown strategy {s!r} (one of: {', '.join(STRATEGIES)})")

    totals = {s: {"unplaced": 0, "violations": 0, "cpu_max": [], "cpu_p95": [], "mem_max": [],
                  "mem_p95": [], "imbalance": [], "overload_min": 0.0, "ms": []} for s in names}
    per_seed = []
    guests_moved = 0
    started = time.time()
    for i, seed in enumerate(range(args.first_seed, args.first_seed + seeds)):
        sc = generate(seed)
        for event, failed in sc.events.items():
            replay = Replay(sc, failed)
            row = {"seed": seed, "event": event, "nodes": len(sc.cluster.nodes),
                   "guests": len(sc.cluster.guests), "failed": failed, "results": {}}
            for s in names:
                plan = plan_recovery(sc.cluster, failed, s)
                m = replay.score(plan)
                v = violations(sc.cluster, plan)
                t = totals[s]
                t["unplaced"] += len(plan.unplaced)
                t["violations"] += len(v)
                for k in ("cpu_max", "cpu_p95", "mem_max", "mem_p95", "imbalance"):
                    t[k].append(m[k])
                t["overload_min"] += m["overload_min"]
                t["ms"].append(plan.seconds * 1000)
                row["results"][s] = {**{k: round(x, 5) for k, x in m.items()}, "unplaced": len(plan.unplaced),
                                     "violations": len(v), "ms": round(plan.seconds * 1000, 3),
                                     **({"fallback": plan.fallback} if plan.fallback else {})}
            guests_moved += len(plan.placements)
            per_seed.append(row)
        print(f"\r  seed {i + 1}/{seeds}", end="", file=sys.stderr, flush=True)
    print(f"\r  {seeds} seeds x 3 events in {time.time() - started:.0f} s", file=sys.stderr)

    scale, failed = scale_case(0)
    repeats = 1 if args.quick else 5
    summary = {}
    for s in names:
        best = min(plan_recovery(scale, failed, s).seconds for _ in range(repeats))
        t = totals[s]
        n = len(t["imbalance"])
        summary[s] = {
            "unplaced": t["unplaced"], "violations": t["violations"],
            "cpu_max": max(t["cpu_max"]), "cpu_p95": percentile(t["cpu_p95"], 95),
            "mem_max": max(t["mem_max"]), "mem_p95": percentile(t["mem_p95"], 95),
            "imbalance": sum(t["imbalance"]) / n, "overload_min": t["overload_min"],
            "ms_mean": sum(t["ms"]) / n, "ms_scale": best * 1000,
        }
    print(render(summary, seeds, guests_moved))
    if args.json_out:
        doc = {"seeds": seeds, "first_seed": args.first_seed, "events": 3 * seeds,
               "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
               "summary": summary, "runs": per_seed}
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
        print(f"wrote {args.json_out}", file=sys.stderr)
    bad = [s for s in names if summary[s]["violations"]]
    return 1 if bad else 0


def render(summary, seeds, moved):
    head = ["strategy"] + [c[1] for c in COLUMNS]
    rows = [[s] + [fmt.format(summary[s][k]) for k, _, fmt in COLUMNS] for s in summary]
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"
    out = [f"{seeds} seeds x 3 events ({moved} guests to place, per strategy)",
           "unplaced, viol: totals | cpu/mem max: worst node-sample of the 20-min replay | "
           "p95: p95 over events of each event's p95 node-sample",
           ">80% node-min: total over all events | imbalance (CV of node dominant load), ms/plan: mean per event | "
           "ms 1000x64: decision time, 1,000 guests onto 64 nodes (best of 5)", "",
           line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
