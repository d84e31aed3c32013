"""Benchmark: a no-op ``fwsg apply`` from a fresh process against its cold start.

A fresh process proves the kernel still holds what the last full transaction left (the
namespace's nf_tables generation has not moved, and the desired state's fingerprint is the
one recorded) instead of reading millions of elements back as JSON. Measured, each a new
``fwsg apply`` process in a namespace of its own (root), with the baseline from the same run:

1. cold start into an empty namespace;
2. no-op from a fresh process (the proof holds);
3. no-op from a fresh process after an unrelated change elsewhere in the namespace (the
   generation moved: the whole ruleset is read back; what every fresh no-op cost before).

``python -m fwsg.lab.bench_fresh [--members N] [--ports P] [--groups G]``.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from fwsg.lab.scenario import generate


def _fwsg():
    exe = os.path.join(os.path.dirname(sys.executable), "fwsg")
    return exe if os.path.exists(exe) else "fwsg"


def _timed(argv):
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {p.stderr.strip()}")
    return dt, json.loads(p.stdout)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=1_000_000)
    ap.add_argument("--ports", type=int, default=500)
    ap.add_argument("--groups", type=int, default=50)
    args = ap.parse_args(argv)
    ns = f"fwsg-bench-fresh-{os.getpid()}"
    model = generate(ports=args.ports, groups=args.groups, rules=20, members=args.members,
                     seed=1)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(model, f)
        path = f.name
    subprocess.run(["ip", "netns", "add", ns], check=True)
    rows = []
    try:
        cmd = [_fwsg(), "apply", path, "--netns", ns, "--json"]
        cold, r = _timed(cmd)
        elements = r["counts"]["elements"]
        rows.append(("1. cold start, fresh process", cold, r["changed"]))
        noop, r = _timed(cmd)
        rows.append(("2. no-op, fresh process (generation proof)", noop, r["changed"]))
        subprocess.run(["ip", "netns", "exec", ns, "nft", "add", "table", "ip", "bench-other"],
                       check=True)
        read, r = _timed(cmd)
        rows.append(("3. no-op, fresh process, ruleset read back", read, r["changed"]))
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        os.unlink(path)
    print(f"fresh-process no-op apply: {args.members} members, {args.ports} ports, "
          f"{args.groups} groups; {elements} elements in the kernel")
    print(f"{'measurement':<46} | {'s':>8} | {'x cold start':>12} | target        | met")
    print("-" * 92)
    for name, secs, changed in rows:
        ratio = secs / cold
        target = "<= 2x cold" if name.startswith("2.") else ""
        met = ("yes" if ratio <= 2 else "no") if target else ""
        print(f"{name:<46} | {secs:8.2f} | {ratio:11.2f}x | {target:<13} | {met}"
              + ("" if name.startswith("1.") or not changed else "  (changed!)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
