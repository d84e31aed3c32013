"""fwsg flush: remove fwsg's own tables, nothing else."""

from fwsg.commands.common import add_backend, add_netns, add_wait


def register(sub):
    p = sub.add_parser("flush", help="remove fwsg's tables (bridge fwsg, inet fwsg) only",
                       description="Delete the tables fwsg owns (bridge fwsg and inet fwsg) in "
                       "the namespace. No other table is listed or touched.")
    add_netns(p)
    add_backend(p)
    add_wait(p)
    p.set_defaults(func=run)


def run(args):
    from fwsg import statefile
    from fwsg.firewall import Firewall

    removed = Firewall(netns=args.netns, backend=args.backend, lock_wait=args.wait).flush()
    statefile.remove(args.netns)
    where = f"netns {args.netns}" if args.netns else "this namespace"
    if removed and args.backend.startswith("iptables"):
        print(f"removed fwsg's chains and sets ({', '.join(removed)}) from {where}")
    elif removed:
        print(f"removed {', '.join(f'table {f} fwsg' for f in removed)} from {where}")
    else:
        print(f"fwsg has no tables in {where}")
    return 0
