"""fwsg show: what fwsg has in the kernel (ports, groups, sets and their sizes)."""

from fwsg.commands.common import add_backend, add_netns, print_json
from fwsg.errors import printable


def register(sub):
    p = sub.add_parser("show", help="show fwsg's ports, groups and sets in the kernel",
                       description="Read fwsg's own tables back from the kernel and summarise "
                       "them: ports (tap, number), groups, sets/maps with element counts. User "
                       "ids come from the record written by the last 'fwsg apply'.")
    add_netns(p)
    add_backend(p)
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=run)


def gather(netns, backend="nft"):
    """A summary dict of fwsg's kernel state in ``netns`` (user ids from the names record)."""
    from fwsg import statefile
    from fwsg.firewall import Firewall

    return {"netns": netns, **Firewall(netns=netns, backend=backend).show(
        statefile.load(netns, strict=True))}


def run(args):
    info = gather(args.netns, args.backend)
    if args.json:
        print_json(info)
        return 0
    if args.backend.startswith("iptables"):
        from fwsg.backends.iptables.show import render

        render(info)
        return 0
    where = f"netns {args.netns}" if args.netns else "this namespace"
    if not info["tables"]:
        print(f"fwsg has no tables in {where}")
        return 0
    print(f"fwsg in {where}: tables {', '.join(info['tables'])}; {len(info['ports'])} ports, "
          f"{len(info['groups'])} groups, {info['chains']} chains, {info['rules']} rules, "
          f"{info['elements']} elements")
    print("ports:")
    for p in info["ports"]:  # user ids: control characters escaped, length bounded
        print(f"  {p['device']:<16} #{p['number']:<5} {p['profile']:<12} "
              f"{printable(p['id'] or '', 80)}"
              + (f"  groups: {', '.join(printable(str(g), 80) for g in p['groups'])}"
                 if p["groups"] else ""))
    print("groups:")
    for g in info["groups"]:
        print(f"  {g['name']:<14} {printable(g['id'] or '', 80)}")
    print("sets and maps:")
    for s in info["sets"]:
        print(f"  {s['family']:<6} {s['kind']:<3} {s['name']:<18} {s['elements']:>8} elements"
              f"  ({s['type']}{', interval' if s['interval'] else ''})")
    return 0
