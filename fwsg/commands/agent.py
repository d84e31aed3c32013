"""fwsg agent: keep this host's kernel equal to the store (etcd or a file); ``status``."""

import argparse
import json
import logging
import signal
import sys
import time

from fwsg.commands.common import add_netns, print_json

HELP = """\
Run the sync agent: read this host's ports and the groups they need (directly and as remote
groups) from the store at one revision, apply them in one transaction, then follow only those
keys, committing what arrives within --window as one transaction. If the store goes away the
kernel keeps the last good rules (fail static) and the agent reconnects with backoff. A value
that cannot be used is skipped with one log line naming its key. SIGHUP: full resync.
SIGTERM/SIGINT: stop, leaving the rules in place. Key layout: docs/sync.md.

examples:
  fwsg agent --source etcd://10.0.0.5:2379 --host hv1
  fwsg agent --source etcds://etcd1:2379,etcd2:2379/prod --ca ca.pem --cert hv1.pem --key hv1.key \\
             --host hv1 --metrics-port 9464 --log-json
  fwsg agent --source file:/etc/fwsg/model.json --host hv1      # reloaded when it changes
  fwsg agent status --host hv1 [--json]

exit status: 0 stopped by a signal, 2 bad usage, 1 cannot start (no root, no namespace);
'status': 0 running and connected, 1 not connected or not running, 2 no status found.
"""


def register(sub):
    p = sub.add_parser("agent", help="sync daemon: keep the kernel equal to etcd (or a file)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", nargs="?", default="run", choices=["run", "status"],
                   help="run (default) or status: print the running agent's status")
    p.add_argument("--source", metavar="URL", help="etcd://HOST:PORT[,HOST:PORT...][/PREFIX] "
                   "(etcds:// for TLS) or file:PATH")
    p.add_argument("--host", metavar="NAME", help="this hypervisor's name in the store")
    add_netns(p)
    from fwsg.commands.publish import add_store_options

    add_store_options(p)
    p.add_argument("--window", metavar="MS", type=float, default=20.0,
                   help="coalesce events arriving within this many ms into one transaction "
                   "(default 20)")
    p.add_argument("--reconcile-interval", metavar="S", type=float, default=300.0,
                   help="repair drift in fwsg's tables every S seconds (0: never; default 300)")
    p.add_argument("--health-interval", metavar="S", type=float, default=5.0,
                   help="ask etcd for its revision every S seconds; no answer within 2 s "
                   "counts as the store going away (a frozen or partitioned etcd keeps watch "
                   "connections open and silent; default 5, 0: never)")
    p.add_argument("--metrics-port", metavar="PORT", type=int,
                   help="serve Prometheus metrics on 127.0.0.1:PORT")
    p.add_argument("--metrics-addr", metavar="ADDR", default="127.0.0.1",
                   help="address for --metrics-port (default 127.0.0.1)")
    p.add_argument("--status-file", metavar="FILE",
                   help="where the status is written (default /run/fwsg/agent-HOST.json)")
    p.add_argument("--publish-stats", metavar="SECONDS", type=float, nargs="?", const=10.0,
                   help="also publish this node's probe stats under P/stats/HOST with a lease "
                   "(TTL 3x the period; default period 10 s)")
    p.add_argument("--log-json", action="store_true", help="log JSON lines (for machines)")
    p.add_argument("--json", action="store_true", help="status: print as JSON")
    p.set_defaults(func=run)


class _JsonFormatter(logging.Formatter):
    def format(self, record):
        return json.dumps({"time": round(record.created, 3), "level": record.levelname.lower(),
                           "logger": record.name, "msg": record.getMessage()})


def setup_logging(as_json):
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(_JsonFormatter() if as_json else
                   logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("fwsg")
    root.handlers[:] = [h]
    root.setLevel(logging.INFO)
    root.propagate = False


def run(args):
    from fwsg.errors import UserError
    from fwsg.sync.layout import check_name
    from fwsg.sync.status import status_path

    if args.host is None:
        raise UserError("--host is required (this hypervisor's name in the store)")
    check_name("--host", args.host)
    path = args.status_file or status_path(args.host, args.netns)
    if args.action == "status":
        return show_status(path, args.json)
    if not args.source:
        raise UserError("--source is required (etcd://HOST:PORT or file:PATH)")
    if args.window < 0 or args.window > 10000:
        raise UserError(f"--window: {args.window:g} must be between 0 and 10000 ms")
    if args.reconcile_interval < 0:
        raise UserError(f"--reconcile-interval: {args.reconcile_interval:g} must be >= 0")
    if args.health_interval < 0:
        raise UserError(f"--health-interval: {args.health_interval:g} must be >= 0")
    from fwsg.commands.publish import store_from_args

    spec, store = store_from_args(args.source, args)
    setup_logging(args.log_json)
    from fwsg.firewall import Firewall
    from fwsg.sync.agent import EtcdAgent, FileAgent
    from fwsg.sync.metrics import Metrics

    fw = Firewall(netns=args.netns)
    metrics = Metrics()
    if args.metrics_port:
        metrics.serve(args.metrics_port, args.metrics_addr)
    common = {"status_file": path, "reconcile_every": args.reconcile_interval, "metrics": metrics}
    if spec.kind == "file":
        agent = FileAgent(fw, spec.path, args.host, **common)
    else:
        from fwsg.sync.layout import Layout

        agent = EtcdAgent(fw, store, Layout(spec.prefix), args.host,
                          window=args.window / 1000.0, health_every=args.health_interval,
                          **common)
    stats = None
    if args.publish_stats and store is not None:
        from fwsg.sync.stats import StatsPublisher

        from fwsg.sync.layout import Layout

        stats = StatsPublisher(store, Layout(spec.prefix), args.host, args.publish_stats)
        stats.start()
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    signal.signal(signal.SIGHUP, lambda *_: agent.request_resync())
    try:
        agent.run()
    finally:
        if stats is not None:
            stats.stop()
    return 0


def show_status(path, as_json):
    from fwsg.sync.status import read_status

    doc = read_status(path)
    if doc is None:
        print(f"fwsg: no agent status at {path}", file=sys.stderr)
        return 2
    if as_json:
        print_json(doc)
    else:
        lc = doc.get("last_commit") or {}
        age = f"{time.time() - lc['time']:.1f} s ago" if lc.get("time") else "never"
        state = ("running" if doc.get("running") else "NOT RUNNING") + ", " + \
            ("connected" if doc.get("connected") else "NOT CONNECTED (kernel keeps last good rules)")
        print(f"agent {doc.get('host')} (pid {doc.get('pid')}): {state}")
        print(f"  source      {doc.get('source')}")
        if not doc.get("connected") and doc.get("disconnected_because"):
            print(f"  why         {doc['disconnected_because']}")
        print(f"  revision    {doc.get('revision')}; last commit {age}; "
              f"{doc.get('transactions', 0)} transactions")
        print(f"  ports       {doc.get('ports')}; members {doc.get('members')}")
        groups = doc.get("groups_watched") or []
        print(f"  groups      {len(groups)} watched: {', '.join(groups[:10])}"
              + (" ..." if len(groups) > 10 else ""))
        skipped = doc.get("skipped_keys") or {}
        print(f"  skipped     {len(skipped)} key(s)")
        for k, why in list(skipped.items())[:10]:
            print(f"    {k}: {why}")
        if doc.get("last_error"):
            print(f"  last error  {doc['last_error']}")
    return 0 if doc.get("running") and doc.get("connected") else 1
