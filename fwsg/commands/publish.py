"""fwsg publish: write a wire-format model into etcd's layout (only the keys that differ)."""

import argparse

from fwsg.commands.common import print_json, read_json

HELP = """\
Write MODEL.json (Neutron's security_group_info_for_devices reply, as JSON) into etcd in fwsg's
key layout (docs/sync.md): one key per group's rules, one key per member, one key per port under
its host. Only keys whose value differs are written, in etcd transactions of bounded size; the
model is authoritative for the groups it names (their members) and for --host's ports.

examples:
  fwsg publish examples/demo-model.json --to etcd://127.0.0.1:2379 --host hv1
  fwsg publish groups-only.json --to etcd://10.0.0.5:2379,10.0.0.6:2379/prod --json
  fwsg publish --cluster examples/cluster.json --to etcd://127.0.0.1:2379

exit status: 0 published, 2 bad input or usage, 1 etcd unreachable or refused.
"""


def register(sub):
    p = sub.add_parser("publish", help="write a model into etcd (only the keys that differ)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL.json", nargs="?",
                   help="the model file, or - for stdin")
    p.add_argument("--cluster", metavar="CLUSTER.json", help="also write the placement cluster "
                   "document (docs/placement.md) to P/cluster")
    p.add_argument("--to", metavar="URL", required=True,
                   help="etcd://HOST:PORT[,HOST:PORT...][/PREFIX] (etcds:// for TLS)")
    p.add_argument("--host", metavar="NAME", help="the hypervisor the model's ports run on "
                   "(required when the model has devices)")
    add_store_options(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def add_store_options(p):
    """TLS and credential options shared by the commands that talk to etcd."""
    p.add_argument("--ca", metavar="FILE", help="CA certificate to verify etcd (implies TLS)")
    p.add_argument("--cert", metavar="FILE", help="client certificate (with --key)")
    p.add_argument("--key", metavar="FILE", help="client certificate's key")
    p.add_argument("--user", metavar="NAME", help="etcd user (password from --password-file "
                   "or $FWSG_ETCD_PASSWORD)")
    p.add_argument("--password-file", metavar="FILE", help="file holding the etcd password")


def store_from_args(url, args):
    """(spec, store) for an etcd URL and the TLS/credential options."""
    import os

    from fwsg.errors import UserError
    from fwsg.sync.url import open_store, parse_source

    password = None
    if getattr(args, "password_file", None):
        try:
            with open(args.password_file) as f:
                password = f.read().strip()
        except OSError as e:
            raise UserError(f"--password-file: {args.password_file}: {e.strerror}") from None
    elif os.environ.get("FWSG_ETCD_PASSWORD"):
        password = os.environ["FWSG_ETCD_PASSWORD"]
    spec = parse_source(url, ca=args.ca, cert=args.cert, key=args.key, user=args.user,
                        password=password)
    if spec.kind != "etcd":
        return spec, None
    return spec, open_store(spec)


def run(args):
    from fwsg.errors import UserError
    from fwsg.model import Model
    from fwsg.sync.layout import Layout, check_name
    from fwsg.sync.publish import publish

    if args.host is not None:
        check_name("--host", args.host)
    if args.model is None and args.cluster is None:
        raise UserError("give MODEL.json and/or --cluster CLUSTER.json")
    model = Model.from_wire(read_json(args.model)) if args.model else None
    cluster = None
    if args.cluster:
        from fwsg.placement import parse_cluster
        from fwsg.sync.publish import dumps

        cluster = read_json(args.cluster, "cluster document")
        parse_cluster(cluster)  # validated before anything is written
    spec, store = store_from_args(args.to, args)
    if store is None:
        raise UserError(f"--to: {args.to!r} is not an etcd:// URL")
    layout = Layout(spec.prefix)
    if cluster is not None:
        if store.get(layout.cluster()) != dumps(cluster).encode():
            store.put(layout.cluster(), dumps(cluster))
        if model is None:
            print(f"published the cluster document to {args.to}")
            return 0
    res = publish(store, layout, model, host=args.host)
    if args.json:
        print_json(res.as_dict())
    else:
        print(f"published to {args.to}: {res.puts} keys written, {res.deletes} deleted, "
              f"{res.unchanged} unchanged, in {res.transactions} transaction(s)")
    return 0
