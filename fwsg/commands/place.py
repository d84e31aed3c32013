"""``fwsg place``: print the recovery plan for the guests of failed nodes."""

from __future__ import annotations

import argparse
import json
import sys

from fwsg.errors import UserError, ValidationError

EXAMPLE = """\
examples:
  fwsg place examples/cluster.json --failed pve2
  fwsg place examples/cluster.json --failed pve2 --failed pve3 --strategy bestfit --json
  fwsg place cluster.json --failed pve2 --stats pve1.json --stats pve3.json --explain

Guests are placed by HA priority, then largest first (max memory, then cpu). A node is a
candidate only if it passes every hard constraint: online, restricted HA group, affinity and
anti-affinity, cores >= vCPUs, storages, networks, memory (measured use + max memory of the
guests restarted there <= memory minus --memory-reserve), conntrack room, and cpu only with
--cpu-limit (cpu is otherwise weighed, not limited: overcommitted cpu slows guests, overcommitted
memory kills them). The strategy ranks the candidates; ties go to the node name. Strategy fwsg
then relieves a node projected above 70% by moving guests it placed there, else by proposing a
live migration of a guest running there (at most --max-migrations, listed in the plan). Guests
that fit nowhere are listed most important first, each with its reason. Exit status: 0 every guest
placed, 3 some guest could not be placed, 2 bad input. Schema: docs/placement.md.

strategies:
"""


def register(subparsers):
    """Add the ``place`` sub-command."""
    from fwsg.placement.scorers import DEFAULT_STRATEGY, STRATEGIES

    epilog = EXAMPLE + "\n".join(f"  {name:<16} {s.summary}" for name, s in STRATEGIES.items())
    p = subparsers.add_parser(
        "place",
        help="plan where the guests of failed nodes restart (HA placement)",
        description="Print the recovery plan for the guests of one or more failed nodes: each "
        "guest's target node or why it cannot be placed, and every node's projected load.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("cluster", metavar="CLUSTER.json", nargs="?",
                   help="the cluster document (see docs/placement.md)")
    p.add_argument("--source", metavar="URL", help="etcd://HOST:PORT[/PREFIX]: read the cluster "
                   "document and the nodes' live stats from the store (docs/sync.md)")
    p.add_argument("--failed", metavar="NODE", action="append", required=True,
                   help="a failed node whose guests must be placed (repeat for several); with "
                   "--source, 'auto' means every node whose stats lease has expired")
    p.add_argument("--strategy", metavar="NAME", default=DEFAULT_STRATEGY, choices=list(STRATEGIES),
                   help=f"how candidates are ranked (default {DEFAULT_STRATEGY}; see below)")
    p.add_argument("--use", choices=("peak", "mean", "latest"), default="peak",
                   help="usage statistic the admission rule and the scorers read (default: peak = the percentile)")
    p.add_argument("--percentile", metavar="N", type=int, default=95,
                   help="which percentile of the usage metrics is the peak (default 95: key p95)")
    p.add_argument("--memory-reserve", metavar="PCT", type=float, default=0.0,
                   help="percent of every node's memory never promised to guests (default 0)")
    p.add_argument("--cpu-limit", metavar="PCT", type=float, default=None,
                   help="make cpu hard: projected cpu use <= PCT of the cores (default: cpu is soft)")
    p.add_argument("--conntrack-threshold", metavar="PCT", type=float, default=95.0,
                   help="hard limit on projected conntrack entries, percent of max (default 95)")
    p.add_argument("--max-migrations", metavar="N", type=int, default=None,
                   help="live migrations of running guests the plan may propose to relieve a hot node "
                   f"(strategy fwsg; default {_default_migrations()}, 0: never touch a running guest)")
    p.add_argument("--stats", metavar="FILE", action="append", default=[],
                   help="a node's probe document (fwsg probe --output); overrides its usage")
    p.add_argument("--explain", action="store_true",
                   help="also list why the other nodes were not chosen for placed guests")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=run)


def _default_migrations():
    from fwsg.placement.rebalance import MAX_MIGRATIONS

    return MAX_MIGRATIONS


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ValidationError(path, f"not valid JSON: {e}") from None


def read_cluster_document(args):
    """The decoded cluster document named by the arguments: CLUSTER.json, or with ``--source``
    the store's cluster document with every node's live stats (``--failed auto`` is resolved to
    the nodes whose stats lease has expired)."""
    if args.source:
        from fwsg.sync.placement_source import cluster_and_failed

        doc, args.failed = cluster_and_failed(args.source, args.failed)
        return doc
    if args.cluster:
        return _read_json(args.cluster)
    raise UserError("give CLUSTER.json or --source etcd://...")


def limits_from_args(args):
    """The :class:`~fwsg.placement.admission.Limits` the options ask for; ValidationError naming
    the option when one is out of range."""
    from fwsg.placement import Limits

    if not 0 <= args.memory_reserve < 100:
        raise ValidationError("--memory-reserve", f"{args.memory_reserve:g} must be in [0, 100)")
    if args.cpu_limit is not None and not 0 < args.cpu_limit <= 1000:
        raise ValidationError("--cpu-limit", f"{args.cpu_limit:g} must be in (0, 1000]")
    if not 0 < args.conntrack_threshold <= 100:
        raise ValidationError("--conntrack-threshold", f"{args.conntrack_threshold:g} must be in (0, 100]")
    return Limits(memory_reserve=args.memory_reserve / 100.0,
                  cpu_limit=None if args.cpu_limit is None else args.cpu_limit / 100.0,
                  conntrack_threshold=args.conntrack_threshold / 100.0)


def run(args, document=read_cluster_document):
    """Plan and print; 0 when every guest is placed, 3 when some is not. ``document(args)``
    returns the decoded cluster document."""
    from fwsg.placement import parse_cluster, plan_recovery
    from fwsg.placement.stats import apply_probe_stats

    if not 50 <= args.percentile <= 99:
        raise ValidationError("--percentile", f"{args.percentile} must be between 50 and 99")
    limits = limits_from_args(args)
    migrations = _default_migrations() if args.max_migrations is None else args.max_migrations
    if not 0 <= migrations <= 10000:
        raise ValidationError("--max-migrations", f"{migrations} must be in [0, 10000]")
    doc = document(args)
    for path in args.stats:
        doc = apply_probe_stats(doc, _read_json(path), where=path)
    cluster = parse_cluster(doc, peak_key=f"p{args.percentile}")
    plan = plan_recovery(cluster, args.failed, args.strategy, use=args.use, limits=limits,
                         max_migrations=migrations)
    if args.json:
        json.dump(plan.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_text(plan, cluster, explain=args.explain))
    return 3 if plan.unplaced else 0


def _gib(n):
    from fwsg.quantities import fmt_bytes

    return fmt_bytes(n)


def render_text(plan, cluster, *, explain=False):
    """The plan for humans: decisions, unplaced guests with every node's reason, node loads."""
    stat = plan.peak_key if plan.use == "peak" else plan.use
    lim = plan.limits
    cpu = "soft" if lim.cpu_limit is None else f"<= {lim.cpu_limit:.0%}"
    lines = [
        f"Recovery plan for {', '.join(plan.failed)}: strategy {plan.strategy}, usage {stat}, "
        f"memory reserve {lim.memory_reserve:.0%}, cpu {cpu} - {len(plan.placed)} of {len(plan.placements)} "
        f"guests placed, {len(plan.unplaced)} unplaced"
        + (f", {len(plan.migrations)} running guests migrated" if plan.migrations else "")
        + f" ({plan.seconds * 1000:.1f} ms)",
        "",
    ]
    if plan.placements:
        rows = [("GUEST", "FROM", "TO", "CORES", "MAX MEM", "NOTE")]
        for p in plan.placements:
            g = cluster.guests[p.guest]
            note = ""
            if len(p.unit) > 1:
                note = "with " + ", ".join(u for u in p.unit if u != p.guest)
            if p.moved_for:
                note = (note + "; " if note else "") + f"moved to make room for {p.moved_for}"
            if p.relieved:
                note = (note + "; " if note else "") + f"moved off {p.relieved} (projected peak above 70%)"
            rows.append((p.guest, p.source, p.target or "-", str(g.cores), _gib(g.memory),
                         note if p.placed else "UNPLACED " + note))
        lines += _table(rows, right={3, 4})
    if plan.migrations:
        lines += ["", f"Live migrations of running guests ({len(plan.migrations)}, at most {plan.max_migrations}; "
                      "each relieves a node projected above 70%):"]
        rows = [("GUEST", "FROM", "TO", "CORES", "MAX MEM", "NOTE")]
        for m in plan.migrations:
            g = cluster.guests[m.guest]
            rows.append((m.guest, m.source, m.target, str(g.cores), _gib(g.memory),
                         f"{m.source} projected peak {m.before:.0%} -> {m.after:.0%}"))
        lines += _table(rows, right={3, 4})
    for p in plan.unplaced:
        lines += ["", f"{p.guest} cannot be placed: {p.reason}"]
        lines += [f"  {n.name}: {p.rejected[n.name]}" for n in plan.nodes if n.name in p.rejected]
    for p in plan.placements if explain else ():
        why = p.explain()
        if not p.placed or not why:
            continue
        lines += ["", f"{p.guest} -> {p.target}; not chosen:"]
        lines += [f"  {n.name}: {why[n.name]}" for n in plan.nodes if n.name in why]
    lines += ["", f"Projected load ({stat}):"]
    rows = [("NODE", "STATUS", "CPU BEFORE", "CPU AFTER", "MEM BEFORE", "MEM AFTER", "GUESTS")]
    for n in plan.nodes:
        if n.status == "failed":
            rows.append((n.name, "failed", _cores(n.cpu_before, n.cores), "-",
                         _mem(n.mem_before, n.memory), "-", f"{n.guests_before} -> 0"))
            continue
        rows.append((n.name, n.status, _cores(n.cpu_before, n.cores), _cores(n.cpu_after, n.cores),
                     _mem(n.mem_before, n.memory), _mem(n.mem_after, n.memory),
                     f"{n.guests_before} -> {n.guests_after}"))
    lines += _table(rows, right={2, 3, 4, 5})
    return "\n".join(lines) + "\n"


def _cores(used, cores):
    return f"{used:.1f}/{cores} ({used / cores:.0%})"


def _mem(used, total):
    return f"{_gib(used)} ({used / total:.0%})"


def _table(rows, right=frozenset()):
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        out.append("  ".join(cells).rstrip())
    return out
