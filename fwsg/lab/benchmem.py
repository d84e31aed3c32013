"""Benchmark rows for memory (``scripts/bench``, section 10): the resident size of a fresh
process after a cold start of the bench scenario with 100k and 1M members, and how much of it
the Firewall's state holds per set element. Each size runs in a child process of its own (in
the bench's namespace), so one size's garbage never counts for another. Not a test.

``python -m fwsg.lab.benchmem PORTS GROUPS RULES MEMBERS SEED`` is the child: prints JSON.
"""

import gc
import json
import subprocess
import sys
import time


def _rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def child(ports, groups, rules, members, seed):
    from fwsg.lab.bench import distinct_members, scenario
    from fwsg.firewall import Firewall
    from fwsg.model import Model

    Firewall().flush()
    gc.collect()
    start = _rss_kb()
    doc = distinct_members(scenario(ports, groups, rules, members, seed))
    model = Model.from_wire(doc)
    del doc
    gc.collect()
    before = _rss_kb()
    fw = Firewall()
    t = time.perf_counter()
    r = fw.apply(model)
    ms = (time.perf_counter() - t) * 1000
    gc.collect()
    after = _rss_kb()
    elements = sum(len(v) for v in fw._desired.rs.elements.values())
    fw.flush()
    return {"start_kb": start, "model_kb": before, "after_kb": after, "elements": elements,
            "apply_ms": ms, "changed": r.changed, "timings": r.timings_ms}


def memory_rows(bench, sizes=(100000, 1000000)):
    """Adds one row per size to ``bench`` (a fwsg.lab.bench.Bench)."""
    a = bench.a
    for members in sizes:
        out = subprocess.run([sys.executable, "-m", "fwsg.lab.benchmem", str(a.ports),
                              str(a.groups), str(a.rules), str(members), str(a.seed)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            bench.say(f"   memory row for {members} members failed: {out.stderr.strip()[-300:]}")
            continue
        m = json.loads(out.stdout)
        state = (m["after_kb"] - m["model_kb"]) * 1024
        bench.row(f"rss_{members}", f"10. RSS after a cold start, {members} members (MB)",
                  m["after_kb"] / 1024, m["model_kb"] / 1024, "RSS with the Model parsed",
                  note=f"firewall state {state / 2**20:.0f} MB = {state / m['elements']:.0f} "
                       f"B per set element ({m['elements']} elements); cold start "
                       f"{m['apply_ms']:.0f} ms")


if __name__ == "__main__":
    print(json.dumps(child(*map(int, sys.argv[1:6]))))
