"""The admission rule is one rule: the planner (incremental) and verify.py (from scratch) agree
on every node, and the orders and reasons of what stays down."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fwsg.placement import Limits, plan_recovery, violations
from fwsg.placement.admission import Budget, budget, capacity_reason
from tests.unit.placement_helpers import GiB, cluster, demand, guest, node, state


def test_budget_and_reasons_by_hand():
    cl = cluster({"n": node(8, 16 * GiB, conntrack={"count": 100, "max": 1000})})
    n = cl.nodes["n"]
    b = budget(n, 4 * GiB, 2.0, Limits(memory_reserve=0.25, cpu_limit=0.5, conntrack_threshold=0.5))
    assert b == Budget(memory=8 * GiB, cpu=2.0, conntrack=400)  # 12 - 4 GiB, 4 - 2 cores, 500 - 100
    assert capacity_reason(b, (0, 0, 0), (8 * GiB, 2.0, 400), n) is None  # exactly full
    assert capacity_reason(b, (GiB, 0, 0), (8 * GiB, 0, 0), n) == "memory room 7 GiB < 8 GiB max memory"
    assert capacity_reason(b, (0, 1.5, 0), (0, 1.0, 0), n) == "cpu room 0.50 < 1.00 cores used (--cpu-limit)"
    assert capacity_reason(b, (0, 0, 300), (0, 0, 101), n) == "conntrack room 100 < 101 entries"
    soft = budget(n, 4 * GiB, 7.9, Limits())
    assert soft.cpu == float("inf")  # cpu soft: no room to run out of
    assert capacity_reason(soft, (0, 50.0, 0), (0, 50.0, 0), n) is None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(node_mem=st.integers(8, 64), used=st.integers(0, 40), reserve=st.sampled_from([0.0, 0.1, 0.3]),
       sizes=st.lists(st.integers(1, 16), min_size=1, max_size=6), cpu_limit=st.sampled_from([None, 0.5, 1.0]),
       cpus=st.lists(st.floats(0, 4), min_size=6, max_size=6), cts=st.lists(st.integers(0, 400), min_size=6, max_size=6))
def test_planner_state_and_verify_agree(node_mem, used, reserve, sizes, cpu_limit, cpus, cts):
    """Put the guests on one node one by one: the node state's answer (incremental) for the next
    guest is yes exactly when verify.py (totals from scratch) finds the plan with it clean."""
    nodes = {"dead": node(64, 1024 * GiB),
             "n": node(16, node_mem * GiB, cpu=1.0, mem=min(used, node_mem) * GiB, conntrack={"count": 100, "max": 1000})}
    guests = {f"g{i}": guest("dead", 2, m * GiB, cpu=cpus[i], mem=GiB, conntrack=cts[i]) for i, m in enumerate(sizes)}
    cl = cluster(nodes, guests)
    limits = Limits(memory_reserve=reserve, cpu_limit=cpu_limit)
    plan = plan_recovery(cl, ["dead"], "basic", limits=limits)
    ns = state(cl, "n", limits=limits)
    for p in plan.placements:
        p.target = None
    for p in sorted(plan.placements, key=lambda p: p.guest):
        d = demand(cl, p.guest)
        planner_ok = ns.reason(d) is None
        p.target = "n"
        assert (violations(cl, plan, limits) == []) == planner_ok
        if not planner_ok:
            break
        ns.add(d)


def test_unplaced_are_ordered_by_priority_then_size_each_with_a_reason():
    nodes = {"dead": node(64, 256 * GiB), "n": node(16, 20 * GiB, mem=4 * GiB)}
    guests = {"big": guest("dead", 2, 12 * GiB), "bigger": guest("dead", 2, 14 * GiB),
              "vip": guest("dead", 2, 10 * GiB, priority=5), "tiny": guest("dead", 1, 2 * GiB),
              "low": guest("dead", 2, 13 * GiB, priority=-1)}
    plan = plan_recovery(cluster(nodes, guests), ["dead"])
    # 16 GiB room: vip (priority 5) first, then the smaller ones fit around it
    assert plan.target_of() == {"vip": "n", "tiny": "n"}
    assert [p.guest for p in plan.unplaced] == ["bigger", "big", "low"]
    assert plan.unplaced[0].reason == ("closest n: memory room 4 GiB < 14 GiB max memory; "
                                       "nodes rejecting: capacity 1, failed 1")
    doc = plan.to_dict()
    assert [u["guest"] for u in doc["unplaced_guests"]] == ["bigger", "big", "low"]
    assert all(u["reason"] for u in doc["unplaced_guests"])


def test_losing_candidates_explain_themselves():
    nodes = {"dead": node(64, 256 * GiB), "a": node(8, 32 * GiB, cpu=1.0, mem=GiB),
             "b": node(8, 32 * GiB, cpu=1.0, mem=GiB), "c": node(8, 32 * GiB, cpu=6.0, mem=GiB)}
    plan = plan_recovery(cluster(nodes, {"vm": guest("dead", 2, 4 * GiB, cpu=1.0, mem=GiB)}), ["dead"], "basic")
    why = plan.placements[0].explain()
    assert plan.target_of() == {"vm": "a"}
    assert why["b"] == "same score -0; a sorts first by name" and why["dead"] == "failed"
    plan = plan_recovery(cluster(nodes, {"vm": guest("dead", 2, 4 * GiB, cpu=1.0, mem=GiB)}), ["dead"],
                         "least-allocated")
    # LeastAllocated: a (6/8 + 30/32) * 50 = 84.375, c (1/8 + 30/32) * 50 = 53.125
    assert plan.placements[0].explain()["c"] == "score 53.125 < 84.375 of a"
