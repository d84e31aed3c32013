"""An independent check of a finished plan against every hard constraint.

Pure: no I/O here. :func:`violations` recomputes each node's totals from scratch (the cluster
plus the plan's targets) and applies the admission rule (:mod:`fwsg.placement.admission`, the
same functions the planner uses) to them, so it does not share the planner's incremental
accounting: a bug there shows up here. The benchmark counts these; a correct planner always
yields an empty list.
"""

from __future__ import annotations

from fwsg.placement import admission
from fwsg.placement.state import guest_cpu, guest_mem, z_for


def violations(cluster, plan, limits=None):
    """Every hard constraint the plan breaks, one line each (empty when it breaks none).

    Checked: target online and not failed; restricted groups; affinity and anti-affinity among
    final positions; cores; storages; networks; on every node that received guests the
    admission rule (memory: measured use + max memory of the guests placed there <= (1 -
    reserve) x memory; cpu when a cpu limit is set; conntrack room).
    """
    limits = limits or plan.limits
    z = z_for(cluster.peak_key)
    use = plan.use
    failed = set(plan.failed)
    target = plan.target_of()
    where = {}
    for g in cluster.guests.values():
        if g.node in failed:
            if g.name in target:
                where[g.name] = target[g.name]
        else:
            where[g.name] = g.node
    out = []
    received = {}
    for name, node in target.items():
        g = cluster.guests[name]
        n = cluster.nodes.get(node)
        if n is None:
            out.append(f"{name}: unknown target {node}")
            continue
        received.setdefault(node, []).append(g)
        if node in failed or not n.online:
            out.append(f"{name}: target {node} is failed or offline")
        gr = cluster.groups.get(g.group) if g.group else None
        for why in (admission.group_reason(n, (gr,) if gr else ()), admission.cores_reason(n, g.cores),
                    admission.storages_reason(n, g.storages), admission.networks_reason(n, g.networks)):
            if why:
                out.append(f"{name} on {node}: {why}")
    for r in cluster.rules:
        nodes = [where[m] for m in r.guests if m in where]
        moved = any(m in target for m in r.guests)
        if not moved:
            continue
        if r.kind == "affinity" and len(set(nodes)) > 1:
            out.append(f"{r.label}: affinity guests on {sorted(set(nodes))}")
        if r.kind == "anti-affinity" and len(set(nodes)) < len(nodes):
            out.append(f"{r.label}: anti-affinity guests share a node")
    for node, guests in received.items():
        n = cluster.nodes[node]
        staying = [g for g in cluster.guests.values() if g.node == node]
        cpu = n.cpu.get(use) if n.cpu else sum(guest_cpu(g, use, z)[0] for g in staying)
        mem = n.mem.get(use) if n.mem else sum(guest_mem(g, use, z)[0] for g in staying)
        b = admission.budget(n, mem, cpu, limits)
        need = (sum(g.memory for g in guests), sum(guest_cpu(g, use, z)[0] for g in guests),
                sum(g.conntrack for g in guests))
        why = admission.capacity_reason(b, (0.0, 0.0, 0), need, n)
        if why:
            out.append(f"{node}: {why} of the guests placed there")
    return out
