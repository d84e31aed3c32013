"""``fwsg show --backend iptables``: fwsg's chains, ports and ipsets read back from the kernel."""

from fwsg import statefile
from fwsg.backends.iptables import names
from fwsg.backends.iptables.desired import IN_PORT, bucket_rules
from fwsg.backends.iptables.state import Chain


def summary(backend, st, ids=None):
    """A summary dict of a State read back (only fwsg's own chains and sets are in it)."""
    ids = ids if ids is not None else statefile.load(backend.netns)
    by_device = {v.get("device"): (k, v) for k, v in ids.get("ports", {}).items()}
    group_ids = {v.get("chain"): k for k, v in ids.get("groups", {}).items()}
    ports = []
    for rule in sorted(bucket_rules(st, 4, "filter", IN_PORT)):
        parts = rule.split()
        dev, profile = parts[parts.index("--physdev-out") + 1], parts[-1]
        pid, rec = by_device.get(dev, (None, {}))
        ports.append({"device": dev, "number": None, "id": pid, "profile": profile[5:-2],
                      "groups": rec.get("groups", [])})
    groups = sorted({k[2][:-2] for k in st.chains if k[2].startswith("fwsg-g")})
    sets = [{"name": n, "family": f"IPv{s.family}", "kind": "ipset", "type": "hash:net",
             "interval": False,
             "maxelem": s.maxelem, "elements": len(st.elements.get(n, ()))}
            for n, s in sorted(st.sets.items())]
    return {
        "netns": backend.netns, "backend": backend.describe_tools(),
        "tables": sorted({f"{ {4: 'ip', 6: 'ip6', 'eb': 'eb'}[k[0]]}tables {k[1]}"
                          for k in list(st.chains) + list(st.bags)}),
        "ports": ports,
        "groups": [{"name": g, "id": group_ids.get(g)} for g in groups],
        "sets": sets, "chains": len(st.chains) + len(st.bags),
        "rules": sum(len(b) for b in st.bags.values())
        + sum(c.count() if isinstance(c, Chain) else 0 for c in st.chains.values()),
        "elements": sum(s["elements"] for s in sets),
        "hooks": sorted(f"{f} {t} {b} -> {names.HOOKS[(f, t, b)]}" for f, t, b in st.hooks),
    }


def render(info):
    where = f"netns {info['netns']}" if info["netns"] else "this namespace"
    if not info["chains"] and not info["sets"]:
        print(f"fwsg has no chains or ipsets in {where} ({info['backend']})")
        return
    print(f"fwsg in {where} via {info['backend']}: {len(info['ports'])} ports, "
          f"{len(info['groups'])} groups, {info['chains']} chains, {len(info['sets'])} ipsets, "
          f"{info['elements']} members, {len(info['hooks'])} hooks")
    print("ports:")
    for p in info["ports"]:
        print(f"  {p['device']:<16} {p['profile']:<12} {p['id'] or ''}"
              + (f"  groups: {', '.join(p['groups'])}" if p["groups"] else ""))
    print("groups:")
    for g in info["groups"]:
        print(f"  {g['name']:<18} {g['id'] or ''}")
    print("ipsets:")
    for s in info["sets"]:
        print(f"  {s['name']:<22} {s['family']} {s['elements']:>8} members (maxelem {s['maxelem']})")
