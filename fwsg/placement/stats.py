"""Feeding probe output into a cluster document.

Pure: no I/O here. :func:`apply_probe_stats` copies a node's measured usage (the ``fwsg probe
--output`` document, schema ``fwsg.probe/1``) into the decoded cluster document, so placement
runs on what the nodes really use rather than on hand-written numbers.
"""

from __future__ import annotations

import copy

from fwsg.errors import ValidationError

PROBE_SCHEMA = "fwsg.probe/1"


def apply_probe_stats(doc, stats, where="stats"):
    """Return a copy of cluster document ``doc`` with probe document ``stats`` merged in.

    The node named ``stats["node"]`` gets ``usage.cpu`` (from metric ``cpu``), ``usage.memory``
    (from ``memory.used``) and ``conntrack`` (from ``conntrack.count``/``conntrack.max``, latest
    values); metrics the probe could not read are left as they were. Guests of that node whose
    name matches a probe guest key get that guest's ``cpu``/``memory`` usage. ``where`` prefixes
    error paths (the file name). Raises ValidationError when the stats name an unknown node.
    """
    if not isinstance(stats, dict) or stats.get("schema") != PROBE_SCHEMA:
        raise ValidationError(f"{where}.schema", f"not a probe stats document (expected {PROBE_SCHEMA!r})")
    node = stats.get("node")
    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    if not isinstance(nodes, dict) or node not in nodes or not isinstance(nodes[node], dict):
        raise ValidationError(f"{where}.node", f"unknown node {node!r} (not in the cluster document)")
    out = copy.deepcopy(doc)
    target = out["nodes"][node]
    metrics = stats.get("metrics") or {}
    usage = dict(target.get("usage") or {})
    if isinstance(metrics.get("cpu"), dict):
        usage["cpu"] = _stat(metrics["cpu"])
    if isinstance(metrics.get("memory.used"), dict):
        usage["memory"] = _stat(metrics["memory.used"])
    if usage:
        target["usage"] = usage
    count, cmax = metrics.get("conntrack.count"), metrics.get("conntrack.max")
    if isinstance(count, dict) and isinstance(cmax, dict):
        target["conntrack"] = {"count": int(count.get("latest", 0)), "max": int(cmax.get("latest", 0))}
    for gname, ginfo in (stats.get("guests") or {}).items():
        guest = out.get("guests", {}).get(gname)
        if not isinstance(guest, dict) or guest.get("node") != node or not isinstance(ginfo, dict):
            continue
        gm = ginfo.get("metrics") or {}
        gusage = dict(guest.get("usage") or {})
        for key in ("cpu", "memory"):
            if isinstance(gm.get(key), dict):
                gusage[key] = _stat(gm[key])
        if gusage:
            guest["usage"] = gusage
    return out


def _stat(metric):
    return {k: v for k, v in metric.items() if k != "unit"}
