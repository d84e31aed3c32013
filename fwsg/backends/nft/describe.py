"""What fwsg holds in the kernel, for people (``fwsg show``): ports with their numbers and
profiles, groups, sets and maps with their sizes, read through the layout's names
(:mod:`fwsg.backends.nft.layout`). User ids come from the names record the CLI keeps; the
kernel never holds them. No I/O here.
"""

from fwsg.backends.nft.layout import (EGRESS_MAP, PORT_SRC, group_of_chain, port_number,
                                      profile_of_verdict, src_mark, unquote_ifname)


def describe(rs, names=None):
    """A summary dict of ``rs`` (a Ruleset read back from the kernel); ``names`` is the record
    of derived names -> user ids (``ports``, ``groups``), possibly empty."""
    names = names or {}
    by_device = {v.get("device"): (k, v) for k, v in names.get("ports", {}).items()}
    groups_by_name = {v.get("name"): k for k, v in names.get("groups", {}).items()}
    egress = rs.elements.get(EGRESS_MAP, {})
    ports = []
    for dev, val in sorted(rs.elements.get(PORT_SRC, {}).items()):
        number, device = port_number(val), unquote_ifname(dev)
        pid, rec = by_device.get(device, (None, {}))
        ports.append({"device": device, "number": number, "id": pid,
                      "profile": profile_of_verdict(egress.get(src_mark(number))) or "",
                      "groups": rec.get("groups", [])})
    groups = sorted({g for g in map(group_of_chain, rs.chains) if g is not None})
    sets = [{"family": k[0], "name": k[1], "kind": "map" if sd.is_map else "set",
             "type": sd.key_type + (f" : {sd.value_type}" if sd.value_type else ""),
             "interval": sd.interval, "elements": len(rs.elements.get(k, ()))}
            for k, sd in sorted(rs.sets.items())]
    return {
        "tables": sorted(rs.tables), "ports": ports,
        "groups": [{"name": g, "id": groups_by_name.get(g)} for g in groups],
        "sets": sets, "chains": len(rs.chains),
        "rules": sum(len(c.rules) for c in rs.chains.values()),
        "elements": sum(s["elements"] for s in sets),
    }
