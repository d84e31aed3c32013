"""``fwsg show --backend iptables``: fwsg's chains, ports and ipsets read back from the kernel."""

from fwsg import statefile
from fwsg.backends.iptables import IptablesBackend, names
from fwsg.backends.iptables.desired import IN_PORT


def gather(netns, backend="iptables"):
    """A summary dict of fwsg's iptables state in ``netns`` (reads only fwsg's own chains)."""
    be = IptablesBackend(netns, backend.partition("-")[2] or None)
    try:
        st = be.read()
    finally:
        be.close()
    ids = statefile.load(netns)
    by_device = {v.get("device"): (k, v) for k, v in ids.get("ports", {}).items()}
    group_ids = {v.get("chain"): k for k, v in ids.get("groups", {}).items()}
    ports = []
    for rule in sorted(st.bags.get((4, "filter", IN_PORT), ())):
        parts = rule.split()
        dev, profile = parts[parts.index("--physdev-out") + 1], parts[-1]
        pid, rec = by_device.get(dev, (None, {}))
        ports.append({"device": dev, "id": pid, "profile": profile[5:-2],
                      "groups": rec.get("groups", [])})
    groups = sorted({k[2][:-2] for k in st.chains if k[2].startswith("fwsg-g")})
    return {
        "netns": netns, "backend": be.describe(), "ports": ports,
        "groups": [{"chain": g, "id": group_ids.get(g)} for g in groups],
        "ipsets": [{"name": n, "family": f"IPv{s.family}", "maxelem": s.maxelem,
                    "members": len(st.elements.get(n, ()))} for n, s in sorted(st.sets.items())],
        "chains": len(st.chains) + len(st.bags),
        "hooks": sorted(f"{f} {t} {b} -> {names.HOOKS[(f, t, b)]}" for f, t, b in st.hooks),
    }


def render(info):
    where = f"netns {info['netns']}" if info["netns"] else "this namespace"
    if not info["chains"] and not info["ipsets"]:
        print(f"fwsg has no chains or ipsets in {where} ({info['backend']})")
        return
    print(f"fwsg in {where} via {info['backend']}: {len(info['ports'])} ports, "
          f"{len(info['groups'])} groups, {info['chains']} chains, {len(info['ipsets'])} ipsets, "
          f"{len(info['hooks'])} hooks")
    print("ports:")
    for p in info["ports"]:
        print(f"  {p['device']:<16} {p['profile']:<12} {p['id'] or ''}"
              + (f"  groups: {', '.join(p['groups'])}" if p["groups"] else ""))
    print("groups:")
    for g in info["groups"]:
        print(f"  {g['chain']:<18} {g['id'] or ''}")
    print("ipsets:")
    for s in info["ipsets"]:
        print(f"  {s['name']:<22} {s['family']} {s['members']:>8} members (maxelem {s['maxelem']})")
