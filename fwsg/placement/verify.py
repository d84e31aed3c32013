"""An independent check of a finished plan against every hard constraint.

Pure: no I/O here. :func:`violations` recomputes each node's totals from scratch (the cluster
plus the plan's targets), so it does not share the planner's incremental accounting: a bug there
shows up here. The benchmark counts these; a correct planner always yields an empty list.
"""

from __future__ import annotations

from fwsg.placement.state import guest_cpu, guest_mem, z_for

_EPS = 1e-9


def violations(cluster, plan, limits=None):
    """Every hard constraint the plan breaks, one line each (empty when it breaks none).

    Checked: target online and not failed; restricted groups; affinity and anti-affinity among
    final positions; cores; storages; networks; memory headroom (used + max memory of placed
    guests <= total); projected cpu and memory <= threshold on nodes that received guests;
    conntrack headroom.
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
        if gr and gr.restricted and node not in gr.nodes:
            out.append(f"{name}: {node} not in restricted group {gr.name}")
        if n.cores < g.cores:
            out.append(f"{name}: {node} has {n.cores} < {g.cores} cores")
        if not g.storages <= n.storages:
            out.append(f"{name}: {node} lacks storage {sorted(g.storages - n.storages)}")
        if not g.networks <= n.networks:
            out.append(f"{name}: {node} lacks network {sorted(g.networks - n.networks)}")
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
        cpu_after = cpu + sum(guest_cpu(g, use, z)[0] for g in guests)
        mem_after = mem + sum(guest_mem(g, use, z)[0] for g in guests)
        committed = mem + sum(g.memory for g in guests)
        if committed > n.memory * (1 + _EPS):
            out.append(f"{node}: used + max memory of placed guests {committed:.0f} > {n.memory}")
        if cpu_after > limits.threshold * n.cores * (1 + _EPS):
            out.append(f"{node}: cpu {cpu_after:.2f} > {limits.threshold:.0%} of {n.cores}")
        if mem_after > limits.threshold * n.memory * (1 + _EPS):
            out.append(f"{node}: memory {mem_after:.0f} > {limits.threshold:.0%} of {n.memory}")
        if n.conntrack_max:
            ct = n.conntrack_count + sum(g.conntrack for g in guests)
            if ct > limits.conntrack_threshold * n.conntrack_max * (1 + _EPS):
                out.append(f"{node}: conntrack {ct} > {limits.conntrack_threshold:.0%} of {n.conntrack_max}")
    return out
