"""fwsg apply: make the kernel equal to a model, in one atomic transaction."""

import sys

from fwsg.commands.common import add_backend, add_netns, add_wait, print_json, read_json

HELP = """\
Compile MODEL.json (Neutron's security_group_info_for_devices reply, as JSON) to nftables and
commit only the difference to what the kernel holds, as one atomic transaction, in-process.
Conntrack entries that lost their rule are removed afterwards.

examples:
  fwsg apply examples/demo-model.json --netns fwsg-demo-host
  fwsg apply model.json --dry-run            # print the batch, change nothing
  cat model.json | fwsg apply - --json       # machine-readable result
  fwsg apply model.json --wait 30            # another fwsg busy on this namespace: wait <= 30 s

exit status: 0 applied (or nothing to do), 2 bad input or usage, 1 the kernel refused (or
another fwsg held the namespace and --wait was not given or ran out; its pid is named).
"""


def register(sub):
    p = sub.add_parser("apply", help="apply a model (JSON wire format) to the kernel",
                       description=HELP, formatter_class=_raw())
    p.add_argument("model", metavar="MODEL.json", help="the model file, or - for stdin")
    add_netns(p)
    p.add_argument("--mode", default="bridge", choices=["bridge"],
                   help="bridge: VM taps on a Linux bridge (default)")
    add_backend(p)
    p.add_argument("--dry-run", action="store_true", help="print the batch that would be "
                   "committed and change nothing")
    p.add_argument("--reconcile", action="store_true", help="read fwsg's tables back, repair "
                   "whatever differs from the model (drift) and list what was repaired")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_wait(p)
    p.set_defaults(func=run)


def run(args):
    from fwsg.firewall import Firewall
    from fwsg.model import Model

    from fwsg.netns import check

    check(args.netns)
    model = Model.from_wire(read_json(args.model))
    fw = Firewall(netns=args.netns, mode=args.mode, backend=args.backend,
                  lock_wait=args.wait)
    if args.dry_run:
        plan = fw.plan(model)
        if args.json:
            print_json({"changed": bool(plan), "summary": plan.summary, "batch": str(plan),
                        "batch_bytes": plan.size})
        else:
            sys.stdout.write(str(plan) if plan else "# nothing to change\n")
        return 0
    result = fw.reconcile(model) if args.reconcile else fw.apply(model)
    if args.json:
        print_json(result.as_dict())
        return 0
    for n in result.notices:
        print(f"notice: {n}", file=sys.stderr)
    if args.reconcile:
        for line in result.repaired:
            print(f"repaired: {line}")
        if not result.repaired:
            print("repaired: nothing (the kernel matched the model)")
    c, s = result.counts, result.summary
    if hasattr(fw.backend, "describe_tools"):
        print(f"backend: {fw.backend.describe_tools()}")
    where = f"netns {args.netns}" if args.netns else "this namespace"
    if result.changed:
        print(f"applied to {where}: +{s['elements_added']}/-{s['elements_removed']} elements, "
              f"chains +{s['chains_added']} ~{s['chains_changed']} -{s['chains_removed']}, "
              f"{result.batch_bytes} bytes in {result.timings_ms['commit']} ms"
              + (f"; {result.conntrack_killed} conntrack entries removed"
                 if result.conntrack_killed else ""))
    else:
        print(f"no change in {where}" + (f"; {result.conntrack_killed} conntrack entries "
                                         "without a rule removed" if result.conntrack_killed
                                         else ""))
    print(f"fwsg holds {len(model.ports)} ports, {c['chains']} chains, {c['rules']} rules, "
          f"{c['sets']} sets, {c['maps']} maps, {c['elements']} elements")
    return 0


def _raw():
    import argparse

    return argparse.RawDescriptionHelpFormatter

