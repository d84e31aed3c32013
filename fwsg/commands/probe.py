"""``fwsg probe``: sample this node's resource usage (the data HA placement reads)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from fwsg.errors import UserError, ValidationError

EPILOG = """\
examples:
  fwsg probe                         # one snapshot, for humans
  fwsg probe --json                  # one snapshot as the stats document (JSON)
  fwsg probe --watch --output /run/fwsg/stats.json
                                     # sample every 10 s, print each sample, keep the file fresh
  fwsg place cluster.json --failed pve2 --stats pve1.json --stats pve3.json

The first snapshot takes two samples --prime seconds apart, so cpu (a rate from /proc/stat) is
real at once. Metrics: cpu (cores in use), memory used/available/total, PSI avg10, conntrack
count/max, fwsg's own ruleset size (nft tables inet/bridge fwsg only), bridges (netlink), and per
guest cgroup (v2) cpu and memory. Each metric reports latest, mean and the --percentile over the
--window. What cannot be read here (no PSI, no conntrack module, no privileges) is listed under
"unavailable" with the reason; the probe does not fail because of it.
"""


def register(subparsers):
    """Add the ``probe`` sub-command."""
    p = subparsers.add_parser(
        "probe",
        help="sample this node's cpu, memory, pressure, conntrack and guests",
        description="Sample this node's resource usage and its guests' (cgroup v2), keep a rolling "
        "window, and report latest, mean and a percentile per metric.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print the stats document as JSON")
    p.add_argument("--watch", action="store_true", help="keep sampling every --interval; print each sample")
    p.add_argument("--output", metavar="FILE", help="write the stats document to FILE (atomically; "
                   "rewritten after every sample with --watch)")
    p.add_argument("--interval", metavar="SEC", type=float, default=10.0, help="seconds between samples (default 10)")
    p.add_argument("--window", metavar="SEC", type=float, default=1200.0,
                   help="rolling window in seconds (default 1200 = 20 min)")
    p.add_argument("--percentile", metavar="Q", type=float, default=95.0, help="percentile reported (default 95)")
    p.add_argument("--prime", metavar="SEC", type=float, default=0.5,
                   help="gap between the first two samples (default 0.5)")
    p.add_argument("--count", metavar="N", type=int, default=0,
                   help="with --watch: stop after N samples (default: until interrupted)")
    p.add_argument("--cgroup", metavar="GLOB", action="append", default=None,
                   help="guest cgroup glob (repeatable; replaces the defaults: "
                   "/sys/fs/cgroup/qemu.slice/*.scope, /sys/fs/cgroup/machine.slice/*, /sys/fs/cgroup/lxc/*)")
    p.add_argument("--node", metavar="NAME", help="node name in the document (default: hostname)")
    p.add_argument("--root", metavar="DIR", default="/",
                   help="read proc/ and sys/ under DIR (testing, containers); skips netlink and nft")
    p.set_defaults(func=run)


def _check(args):
    if args.interval <= 0:
        raise ValidationError("--interval", f"{args.interval:g} must be > 0")
    if args.window < args.interval:
        raise ValidationError("--window", f"{args.window:g} must be >= --interval ({args.interval:g})")
    if not 0 <= args.percentile <= 100:
        raise ValidationError("--percentile", f"{args.percentile:g} must be between 0 and 100")
    if args.prime < 0:
        raise ValidationError("--prime", f"{args.prime:g} must be >= 0")
    if args.count < 0:
        raise ValidationError("--count", f"{args.count} must be >= 0")
    if not os.path.isdir(args.root):
        raise UserError(f"--root: {args.root}: not a directory")


def write_document(path, doc):
    """Write ``doc`` as JSON to ``path`` atomically (temp file in the same directory, rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".fwsg-probe-", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"{path}: cannot write: {e.strerror}") from None


def run(args):
    """Sample, print, write; 0 on success (also when some metrics are unavailable)."""
    from fwsg.probe import DEFAULT_CGROUP_PATTERNS, Probe

    _check(args)
    patterns = tuple(args.cgroup) if args.cgroup else DEFAULT_CGROUP_PATTERNS
    probe = Probe(args.root, window=args.window, interval=args.interval, percentile=args.percentile,
                  cgroup_patterns=patterns, node=args.node)
    sample = probe.prime(args.prime)
    if not args.watch:
        doc = probe.document()
        if args.output:
            write_document(args.output, doc)
        if args.json:
            json.dump(doc, sys.stdout, indent=2)
            sys.stdout.write("\n")
        elif not args.output:
            sys.stdout.write(render_text(doc))
        return 0
    n = 1
    while True:
        doc = probe.document()
        if args.output:
            write_document(args.output, doc)
        if args.json:
            sys.stdout.write(json.dumps(doc, separators=(",", ":")) + "\n")
        else:
            sys.stdout.write(render_sample(doc, sample) + "\n")
        sys.stdout.flush()
        if args.count and n >= args.count:
            return 0
        time.sleep(args.interval)
        sample = probe.sample()
        n += 1


def _gib(n):
    from fwsg.quantities import fmt_bytes

    return fmt_bytes(n)


def render_sample(doc, sample):
    """One line for ``--watch``: this sample's main values."""
    cap = doc["capacity"]
    parts = [time.strftime("%H:%M:%S")]
    if "cpu" in sample:
        parts.append(f"cpu {sample['cpu']:.2f}/{cap.get('cores', '?')} cores")
    if "memory.used" in sample:
        parts.append(f"mem {_gib(sample['memory.used'])}/{_gib(cap.get('memory', 0))}")
    if "pressure.cpu.some.avg10" in sample:
        parts.append(f"psi cpu {sample['pressure.cpu.some.avg10']:.1f}% mem "
                     f"{sample.get('pressure.memory.some.avg10', 0):.1f}% io {sample.get('pressure.io.some.avg10', 0):.1f}%")
    if "conntrack.count" in sample:
        parts.append(f"conntrack {sample['conntrack.count']}/{sample['conntrack.max']}")
    parts.append(f"guests {len(sample.get('guests', {}))}")
    return "  ".join(parts)


def render_text(doc):
    """The stats document for humans: one line per metric, then guests, then what is unavailable."""
    q = f"p{doc['window']['percentile']:g}"
    lines = [f"node {doc['node']}: {doc['capacity'].get('cores', '?')} cores, "
             f"{_gib(doc['capacity'].get('memory', 0))}; {doc['window']['samples']} samples over "
             f"{doc['window']['seconds']:g} s window", ""]
    rows = [("METRIC", "LATEST", "MEAN", q.upper())]
    for name, m in doc["metrics"].items():
        fmt = _gib if m["unit"] == "bytes" else (lambda v: f"{v:.2f}" if isinstance(v, float) else str(v))
        rows.append((name, fmt(m["latest"]), fmt(m["mean"]), fmt(m[q])))
    for name, g in doc["guests"].items():
        for k, m in g["metrics"].items():
            fmt = _gib if m["unit"] == "bytes" else (lambda v: f"{v:.2f}")
            rows.append((f"guest {name} {k}", fmt(m["latest"]), fmt(m["mean"]), fmt(m[q])))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines += ["  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]) for r in rows]
    lines.append("")
    lines.append("networks: " + (", ".join(doc["networks"]) or "(no bridges)"))
    for k, why in doc["unavailable"].items():
        lines.append(f"unavailable: {k}: {why}")
    return "\n".join(lines) + "\n"
