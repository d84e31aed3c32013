"""The planner: order, incremental accounting, groups, rules, explanations, determinism."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fwsg.errors import ValidationError
from fwsg.placement import STRATEGIES, Limits, plan_recovery, violations
from fwsg.placement.simulate import Replay, generate
from tests.unit.placement_helpers import GiB, cluster, guest, node


def test_largest_first_and_each_decision_sees_the_previous():
    cl = cluster({"dead": node(64, 256 * GiB), "n1": node(16, 64 * GiB, cpu=0.0, mem=0),
                  "n2": node(16, 64 * GiB, cpu=0.0, mem=0)},
                 {"small1": guest("dead", 2, 4 * GiB, cpu=1.0, mem=4 * GiB),
                  "big": guest("dead", 4, 8 * GiB, cpu=2.0, mem=8 * GiB),
                  "small2": guest("dead", 2, 4 * GiB, cpu=1.0, mem=4 * GiB)})
    plan = plan_recovery(cl, ["dead"], "fwsg")
    assert [p.guest for p in plan.placements] == ["big", "small1", "small2"]
    # big -> n1 (tie, name); small1 -> n2 (n1 now busier); small2 -> n2 (4 GiB < 8 GiB on n1)
    assert plan.target_of() == {"big": "n1", "small1": "n2", "small2": "n2"}
    loads = {n.name: n for n in plan.nodes}
    assert loads["n2"].cpu_after == 2.0 and loads["n2"].mem_after == 8 * GiB
    assert loads["n1"].committed == 8 * GiB and loads["n2"].guests_after == 2
    assert loads["dead"].status == "failed" and loads["dead"].guests_after == 0


def test_unplaced_guest_names_a_reason_for_every_node():
    cl = cluster({"dead": node(64, 256 * GiB), "small": node(4, 16 * GiB), "full": node(32, 16 * GiB, mem=14 * GiB),
                  "off": node(32, 256 * GiB, online=False)},
                 {"vm": guest("dead", 8, 8 * GiB)})
    plan = plan_recovery(cl, ["dead"])
    (p,) = plan.unplaced
    assert p.rejected == {"dead": "failed", "off": "offline", "small": "4 cores < 8 guest cores",
                          "full": "memory room 2 GiB < 8 GiB max memory"}
    assert p.reason == ("closest full: memory room 2 GiB < 8 GiB max memory; "
                        "nodes rejecting: capacity 1, cores 1, failed 1, offline 1")
    assert plan.to_dict()["placements"][0]["to"] is None


def test_group_priority_tier_and_fallback_outside_unrestricted_group():
    nodes = {"dead": node(), "hi": node(mem=12 * GiB), "lo": node(), "other": node()}
    groups = {"g": {"nodes": {"hi": 2, "lo": 1}, "restricted": False}}
    cl = cluster(nodes, {"vm": guest("dead", group="g", mem=GiB)}, groups=groups)
    plan = plan_recovery(cl, ["dead"], "least-allocated")
    # hi is busier than lo and other, but has the highest priority
    assert plan.target_of() == {"vm": "hi"}
    assert plan.placements[0].rejected["lo"] == "priority 1 < 2 in group 'g'"
    assert plan.placements[0].rejected["other"] == "not in group 'g' and a member is available"
    # hi and lo gone: an unrestricted group falls back to any node
    plan = plan_recovery(cl, ["dead", "hi", "lo"], "least-allocated")
    assert plan.target_of()["vm"] == "other"


def test_affinity_moves_together_and_follows_a_staying_peer():
    nodes = {"dead": node(32, 64 * GiB), "a": node(), "b": node()}
    guests = {"app": guest("dead", mem=GiB), "cache": guest("dead", mem=GiB), "db": guest("dead", mem=GiB),
              "peer": guest("b", mem=GiB)}
    rules = [{"type": "affinity", "guests": ["app", "cache"]}, {"type": "affinity", "guests": ["db", "peer"]}]
    plan = plan_recovery(cluster(nodes, guests, rules=rules), ["dead"], "basic")
    t = plan.target_of()
    assert t["app"] == t["cache"]
    assert t["db"] == "b"
    assert {p.guest: p.unit for p in plan.placements}["app"] == ("app", "cache")


def test_anti_affinity_between_moving_guests():
    nodes = {"dead": node(32, 64 * GiB), "a": node(), "b": node(16, 64 * GiB)}
    guests = {"x": guest("dead", mem=GiB), "y": guest("dead", mem=GiB)}
    rules = [{"type": "anti-affinity", "guests": ["x", "y"]}]
    plan = plan_recovery(cluster(nodes, guests, rules=rules), ["dead"], "least-allocated")
    t = plan.target_of()
    assert t["x"] != t["y"]


def test_conflicting_rules_leave_the_unit_unplaced_with_the_reason():
    nodes = {"dead": node(32, 64 * GiB), "a": node()}
    guests = {"x": guest("dead", mem=GiB), "y": guest("dead", mem=GiB)}
    rules = [{"type": "affinity", "guests": ["x", "y"]}, {"type": "anti-affinity", "guests": ["x", "y"]}]
    plan = plan_recovery(cluster(nodes, guests, rules=rules), ["dead"])
    assert len(plan.unplaced) == 2
    assert "rules[1] (anti-affinity) separates x, y" in plan.placements[0].rejected["a"]


@pytest.mark.parametrize("bad, path", [
    ({"failed": ["nope"]}, "failed"),
    ({"failed": []}, "failed"),
    ({"failed": ["dead"], "strategy": "magic"}, "strategy"),
    ({"failed": ["dead"], "use": "p99"}, "use"),
    ({"failed": ["dead"], "limits": Limits(memory_reserve=1.5)}, "memory_reserve"),
    ({"failed": ["dead"], "limits": Limits(cpu_limit=0)}, "cpu_limit"),
    ({"failed": ["dead"], "limits": Limits(conntrack_threshold=0)}, "conntrack_threshold"),
])
def test_bad_arguments_name_the_field(bad, path):
    cl = cluster({"dead": node(), "a": node()}, {"vm": guest("dead")})
    with pytest.raises(ValidationError) as e:
        plan_recovery(cl, **bad)
    assert e.value.path == path


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), nodes=st.sampled_from([3, 4, 6, 9]),
       strategy=st.sampled_from(sorted(STRATEGIES)), reserve=st.floats(0.0, 0.3),
       cpu_limit=st.one_of(st.none(), st.floats(0.5, 1.0)))
def test_no_plan_violates_a_hard_constraint_and_plans_are_deterministic(seed, nodes, strategy, reserve, cpu_limit):
    sc = generate(seed, nodes=nodes)
    for failed in sc.events.values():
        limits = Limits(memory_reserve=reserve, cpu_limit=cpu_limit)
        plan = plan_recovery(sc.cluster, failed, strategy, limits=limits)
        assert violations(sc.cluster, plan) == []
        again = plan_recovery(sc.cluster, failed, strategy, limits=limits)
        assert again.target_of() == plan.target_of()
        assert [p.guest for p in again.placements] == [p.guest for p in plan.placements]
        assert {p.guest for p in plan.placements} == {g.name for g in sc.cluster.guests.values() if g.node in failed}


def test_violations_detects_a_broken_plan():
    sc = generate(3, nodes=4)
    failed = sc.events["fail1"]
    plan = plan_recovery(sc.cluster, failed, "fwsg")
    assert violations(sc.cluster, plan) == []
    assert plan.placed
    alive = [n for n in sc.cluster.nodes if n not in failed]
    for p in plan.placements:  # cram everything onto one node
        p.target = alive[0]
    assert violations(sc.cluster, plan)
    plan.placements[0].target = failed[0]
    assert any("failed or offline" in v for v in violations(sc.cluster, plan))


def test_replay_counts_overload_minutes():
    sc = generate(5, nodes=4)
    failed = sc.events["fail1"]
    r = Replay(sc, failed)
    m = r.score(plan_recovery(sc.cluster, failed, "fwsg"), threshold=0.0)
    # threshold 0: every node-sample counts: 3 survivors x 120 samples x 10 s
    assert m["overload_min"] == pytest.approx(3 * 120 * 10 / 60)
    assert 0 <= m["imbalance"] < 5
