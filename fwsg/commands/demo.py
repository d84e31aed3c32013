"""fwsg demo: a lab in network namespaces, the example model, a verdict matrix of real packets."""

import argparse

HELP = """\
Build a lab in network namespaces (a hypervisor namespace with bridge br0, three VMs on taps,
one unfiltered outside host; documentation addresses only), apply a model to it with fwsg, then
send real packets for every pair of hosts and a handful of services and print what passed next
to what the model says should pass. The lab is removed afterwards unless --keep is given.

examples:
  fwsg demo                              # the embedded default: examples/demo-model.json
  fwsg demo --keep                       # leave the lab up to poke around
  fwsg demo --down                       # remove a kept lab
  fwsg demo --model my-model.json --json
  fwsg demo --cluster                    # etcd + two hypervisors with an agent each

exit status: 0 every flow as the model says, 1 a disagreement or a kernel error, 2 bad input.
"""


def register(sub):
    p = sub.add_parser("demo", help="lab in namespaces + example model + real-packet matrix",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", metavar="MODEL.json", default=None,
                   help="model to apply (default: the packaged example, examples/demo-model.json; its ports must "
                        "be the lab's taps tap-vm1..3)")
    p.add_argument("--name", default="demo", help="lab name; namespaces are fwsg-NAME-* "
                   "(default: demo)")
    p.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    p.add_argument("--down", action="store_true", help="remove a lab left by --keep, and exit")
    p.add_argument("--timeout", type=float, default=0.5,
                   help="seconds a probe waits before calling a flow dropped (default 0.5)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--cluster", action="store_true", help="the demo model on two hypervisors "
                   "fed from a private etcd by an agent each; prints the matrix across hosts "
                   "and the time from a member put to packets passing (docs/sync.md)")
    from fwsg.commands.common import add_backend

    add_backend(p)
    p.set_defaults(func=run)


def run(args):
    import sys

    from fwsg.lab import LabError

    try:
        return _run(args)
    except LabError as e:  # the lab's own errors (not fwsg's): one line, their exit code
        print(f"fwsg demo: {e}", file=sys.stderr)
        return e.exit_code


def _run(args):
    from fwsg.lab import demo

    if args.cluster:
        from fwsg.lab import cluster_demo

        return 0 if cluster_demo.run(args.name, timeout=args.timeout) else 1
    if args.down:
        removed = demo.down(args.name)
        print(f"removed {', '.join(removed)}" if removed else f"no lab named {args.name!r}")
        return 0
    ok, _ = demo.run(args.model, name=args.name, keep=args.keep, timeout=args.timeout,
                     as_json=args.json, backend=args.backend)
    return 0 if ok else 1
