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

    Live migrations (``plan.migrations``) are checked the same way: the guest runs on a live
    node that is its source, at most one migration each, the target is another live node passing
    the guest's group, cores, storages and networks, and the target's admission rule counts the
    migrated guest like a restarted one while its source keeps its measured use (so the rule
    holds after every restart and every migration, in any order); for anti-affinity a migrated
    guest occupies its source and its target, and a guest bound by affinity never migrates.
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
    occupied = {}  # migrated guest -> its source, also held for anti-affinity
    moves = list(target.items())
    for mg in getattr(plan, "migrations", ()):
        g = cluster.guests.get(mg.guest)
        if g is None:
            out.append(f"migration of {mg.guest}: unknown guest")
            continue
        src = cluster.nodes.get(g.node)
        if mg.guest in occupied or mg.guest in target or g.node != mg.source or g.node in failed \
                or src is None or not src.online:
            out.append(f"migration of {mg.guest}: it does not run on a live node {mg.source} (or moves twice)")
            continue
        if mg.target == mg.source:
            out.append(f"migration of {mg.guest}: target is its source {mg.source}")
            continue
        occupied[mg.guest] = g.node
        where[mg.guest] = mg.target
        moves.append((mg.guest, mg.target))
    for name, node in moves:
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
        moved = any(m in target or m in occupied for m in r.guests)
        if not moved:
            continue
        if r.kind == "affinity" and (len(set(nodes)) > 1 or any(m in occupied for m in r.guests)):
            out.append(f"{r.label}: affinity guests on {sorted(set(nodes))}"
                       + (" (a bound guest migrates)" if any(m in occupied for m in r.guests) else ""))
        if r.kind == "anti-affinity":
            held = [{where[m]} | ({occupied[m]} if m in occupied else set()) for m in r.guests if m in where]
            if any(a & b for i, a in enumerate(held) for b in held[i + 1:]):
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
