"""The exact oracle against brute force on tiny clusters, and the planner's repair and swap
steps reaching it where a greedy pass does not."""

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fwsg.placement import plan_recovery, violations
from fwsg.placement.oracle import projected_peak, solve
from tests.unit.placement_helpers import GiB, cluster, guest, node


def brute_force(cl, failed):
    """(most guests placed, lowest projected peak among such plans) over every assignment,
    each judged by verify.py."""
    plan = plan_recovery(cl, failed, "basic")
    alive = [n for n in cl.nodes if n not in failed and cl.nodes[n].online]
    best = (-1, 0.0)
    for targets in itertools.product(alive + [None], repeat=len(plan.placements)):
        for p, t in zip(plan.placements, targets):
            p.target = t
        if violations(cl, plan):
            continue
        count = sum(t is not None for t in targets)
        peak = _peak(cl, plan, alive)
        if count > best[0] or (count == best[0] and peak < best[1]):
            best = (count, peak)
    return best


def _peak(cl, plan, alive):
    cpu = {n: cl.nodes[n].cpu.peak for n in alive}
    mem = {n: cl.nodes[n].mem.peak for n in alive}
    for p in plan.placements:
        if p.target:
            g = cl.guests[p.guest]
            cpu[p.target] += min(g.cpu.peak, g.cores)  # usage is capped at the configured size
            mem[p.target] += min(g.mem.peak, g.memory)
    return max(max(cpu[n] / cl.nodes[n].cores, mem[n] / cl.nodes[n].memory) for n in alive)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=st.lists(st.tuples(st.integers(2, 8), st.integers(4, 24), st.integers(0, 8)), min_size=1, max_size=3),
       guests=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 12), st.floats(0, 2), st.booleans()),
                       min_size=1, max_size=5),
       anti=st.booleans())
def test_oracle_matches_brute_force(nodes, guests, anti):
    doc_nodes = {"dead": node(64, 1024 * GiB, cpu=0.0, mem=0, storages=["ceph"])}
    for i, (cores, mem, used) in enumerate(nodes):
        doc_nodes[f"n{i}"] = node(cores, mem * GiB, cpu=0.5, mem=min(used, mem) * GiB,
                                  storages=["ceph"] if i != 1 else [])
    doc_guests = {f"g{i}": guest("dead", c, m * GiB, cpu=u, mem=m * GiB // 2, storages=["ceph"] if ceph else [])
                  for i, (c, m, u, ceph) in enumerate(guests)}
    rules = [{"type": "anti-affinity", "guests": ["g0", "g1"]}] if anti and len(guests) > 1 else None
    cl = cluster(doc_nodes, doc_guests, rules=rules)
    o = solve(cl, ["dead"])
    count, peak = brute_force(cl, ["dead"])
    assert o.count_proven and o.peak_proven
    assert o.placed == count
    assert abs(o.peak - peak) < 1e-9
    # its plan is a real one: no violation, and the peak it claims
    plan = plan_recovery(cl, ["dead"], "basic")
    for p in plan.placements:
        p.target = o.target.get(p.guest)
    assert violations(cl, plan) == []
    assert sum(p.target is not None for p in plan.placements) == o.placed


def _swap_case():
    # one node with 16 GiB room; a 12 GiB guest and three 5 GiB ones: largest first places the
    # big one and strands all three small ones; the most guests is three (15 GiB)
    nodes = {"dead": node(64, 256 * GiB), "n": node(16, 16 * GiB, cpu=0.0, mem=0)}
    guests = {"big": guest("dead", 2, 12 * GiB, cpu=1.0, mem=GiB),
              **{f"s{i}": guest("dead", 1, 5 * GiB, cpu=0.5, mem=GiB) for i in range(3)}}
    return cluster(nodes, guests)


def test_fwsg_takes_one_guest_down_for_several():
    cl = _swap_case()
    assert len(plan_recovery(cl, ["dead"], "pack").unplaced) == 3
    plan = plan_recovery(cl, ["dead"], "fwsg")
    assert plan.target_of() == {"s0": "n", "s1": "n", "s2": "n"}
    assert solve(cl, ["dead"]).unplaced == len(plan.unplaced) == 1
    assert plan.unplaced[0].reason.startswith("closest n: memory room 1 GiB < 12 GiB max memory")


def test_fwsg_repair_moves_a_placed_guest_to_make_room():
    # v (8 GiB, any node) goes first and to idle a; L (6 GiB) needs nvme, which only a has, and
    # a has 2 GiB left: repair moves v to b and puts L on a
    nodes = {"dead": node(64, 256 * GiB, storages=["nvme"]), "a": node(8, 10 * GiB, cpu=0.0, mem=0, storages=["nvme"]),
             "b": node(8, 10 * GiB, cpu=6.0, mem=0)}
    guests = {"v": guest("dead", 2, 8 * GiB, cpu=1.0, mem=GiB),
              "L": guest("dead", 2, 6 * GiB, cpu=1.0, mem=GiB, storages=["nvme"])}
    cl = cluster(nodes, guests)
    assert plan_recovery(cl, ["dead"], "least-allocated").target_of() == {"v": "a"}
    plan = plan_recovery(cl, ["dead"], "fwsg")
    assert plan.target_of() == {"v": "b", "L": "a"}
    assert plan.repaired == 1
    assert {p.guest: p.moved_for for p in plan.placements}["v"] == "L"
    assert violations(cl, plan) == []


def _two_small_one_nvme(b_memory, b_cpu):
    """Node dead fails: v1, v2 (4 GiB each, HA priority 1) and L (10 GiB, needs nvme, which only
    the idle 12 GiB node a has); node b has ``b_memory`` and ``b_cpu`` cores of 8 in use."""
    nodes = {"dead": node(64, 256 * GiB, storages=["nvme"]),
             "a": node(8, 12 * GiB, cpu=0.0, mem=0, storages=["nvme"]),
             "b": node(8, b_memory, cpu=b_cpu, mem=0)}
    guests = {"v1": guest("dead", 1, 4 * GiB, cpu=0.5, mem=GiB, priority=1),
              "v2": guest("dead", 1, 4 * GiB, cpu=0.5, mem=GiB, priority=1),
              "L": guest("dead", 2, 10 * GiB, cpu=1.0, mem=GiB, storages=["nvme"])}
    return cluster(nodes, guests)


def test_fwsg_repair_moves_several_placed_guests_to_make_room():
    # v1, v2 (4 GiB each, HA priority 1) go first, both to idle a (12 GiB); L (10 GiB) needs nvme,
    # which only a has, and a has 4 GiB left: no single move makes 6 GiB, moving both to b does
    cl = _two_small_one_nvme(b_memory=10 * GiB, b_cpu=6.0)
    assert plan_recovery(cl, ["dead"], "least-allocated").target_of() == {"v1": "a", "v2": "a"}
    plan = plan_recovery(cl, ["dead"], "fwsg")
    assert plan.target_of() == {"v1": "b", "v2": "b", "L": "a"}
    assert solve(cl, ["dead"]).unplaced == 0
    assert {p.guest: p.moved_for for p in plan.placements}["v1"] == "L"
    assert violations(cl, plan) == []


def test_fwsg_repair_undoes_moves_that_do_not_make_enough_room():
    # as above, but b (cpu 3 of 8) has room for one of v1, v2 only: L stays down, and the loads
    # of the plan still show both on a (the tentative move of one is undone)
    cl = _two_small_one_nvme(b_memory=6 * GiB, b_cpu=3.0)
    plan = plan_recovery(cl, ["dead"], "fwsg")
    assert [p.guest for p in plan.unplaced] == ["L"]
    loads = {n.name: sorted(n.placed) for n in plan.nodes}
    assert {g: t for g, t in plan.target_of().items()} == {"v1": "a", "v2": "a"}
    assert loads["a"] == ["v1", "v2"] and loads["b"] == []


def test_floor_counts_guests_no_node_admits_even_alone():
    from fwsg.placement.oracle import unplaceable

    nodes = {"dead": node(64, 256 * GiB), "a": node(8, 16 * GiB, cpu=0.0, mem=0)}
    guests = {"fits": guest("dead", 2, 8 * GiB), "also": guest("dead", 2, 8 * GiB),  # each fits alone
              "huge": guest("dead", 2, 32 * GiB), "nvme": guest("dead", 2, GiB, storages=["nvme"])}
    assert unplaceable(cluster(nodes, guests), ["dead"]) == 2
