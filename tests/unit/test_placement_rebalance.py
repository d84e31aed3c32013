"""The rebalancing step: relieves the hottest node by moving guests the plan placed, never
breaking a hard constraint or the HA group tier, never unplacing anyone."""

from fwsg.placement.admission import Limits
from fwsg.placement.planner import plan_recovery, prepare
from fwsg.placement.rebalance import rebalance
from tests.unit.placement_helpers import GiB, cluster, guest, node


def _setup(nodes, guests, groups=None, rules=None, on="A"):
    """Prepare the failure of ``src`` and place every unit on node ``on`` by hand (as a greedy
    pass could have); returns (setup, decided, placements-by-guest stand-ins)."""
    cl = cluster({**nodes, "src": node(32, 256 * GiB)}, guests, groups=groups, rules=rules)
    setup = prepare(cl, ["src"], "peak", Limits())
    target = next(ns for ns in setup.states if ns.name == on)
    decided = []
    for d, _ in setup.units:
        target.add(d)
        decided.append((d, target))
    placements = [_P(n, on) for d, _ in setup.units for n in d.names]
    return setup, decided, placements


class _P:
    def __init__(self, guest, target):
        self.guest, self.target, self.score, self.ranked, self.rejected = guest, target, 0.0, (), {}
        self.relieved = None


def _two_busy(**extra):
    return {"g1": guest("src", 8, 4 * GiB, cpu=6.0, mem=GiB, **extra),
            "g2": guest("src", 8, 4 * GiB, cpu=6.0, mem=GiB, **extra)}


def test_moves_a_placed_guest_off_a_node_above_the_line():
    # both on A: 12/16 cores = 75 % > 70 %; one moves to B: 6/16 each
    setup, decided, ps = _setup({"A": node(16, 64 * GiB, cpu=0.0, mem=0), "B": node(16, 64 * GiB, cpu=0.0, mem=0)},
                                _two_busy())
    assert rebalance(setup, decided, Limits(), ps) == 1
    assert sorted(t.name for _, t in decided) == ["A", "B"]
    assert sorted(p.target for p in ps) == ["A", "B"]
    assert [p.relieved for p in ps if p.target == "B"] == ["A"]
    assert [p.relieved for p in ps if p.target == "A"] == [None]


def test_leaves_a_node_below_the_line_alone():
    guests = {"g1": guest("src", 8, 4 * GiB, cpu=5.0, mem=GiB), "g2": guest("src", 8, 4 * GiB, cpu=5.0, mem=GiB)}
    setup, decided, ps = _setup({"A": node(16, 64 * GiB, cpu=0.0, mem=0), "B": node(16, 64 * GiB, cpu=0.0, mem=0)},
                                guests)  # 10/16 = 62.5 %
    assert rebalance(setup, decided, Limits(), ps) == 0
    assert {t.name for _, t in decided} == {"A"}


def test_never_breaks_the_memory_rule():
    # B is cooler on cpu but has 2 GiB of room for 4 GiB guests
    setup, decided, ps = _setup({"A": node(16, 64 * GiB, cpu=0.0, mem=0), "B": node(16, 8 * GiB, cpu=0.0, mem=6 * GiB)},
                                _two_busy())
    assert rebalance(setup, decided, Limits(), ps) == 0
    assert {t.name for _, t in decided} == {"A"}


def test_never_joins_anti_affinity_partners():
    nodes = {"A": node(16, 64 * GiB, cpu=0.0, mem=0), "B": node(16, 64 * GiB, cpu=0.0, mem=0)}
    guests = {**_two_busy(), "rival": guest("B", 1, GiB, cpu=0.0, mem=0)}
    rules = [{"type": "anti-affinity", "guests": ["g1", "rival"]}, {"type": "anti-affinity", "guests": ["g2", "rival"]}]
    setup, decided, ps = _setup(nodes, guests, rules=rules)
    assert rebalance(setup, decided, Limits(), ps) == 0


def test_keeps_the_ha_group_tier():
    nodes = {"A": node(16, 64 * GiB, cpu=0.0, mem=0), "B": node(16, 64 * GiB, cpu=0.0, mem=0),
             "C": node(16, 64 * GiB, cpu=0.0, mem=0)}
    groups = {"g": {"nodes": {"A": 2, "B": 1, "C": 2}}}
    setup, decided, ps = _setup(nodes, _two_busy(group="g"), groups=groups)
    assert rebalance(setup, decided, Limits(), ps) == 1
    assert sorted(t.name for _, t in decided) == ["A", "C"]  # C (priority 2 like A), never B


def test_the_plan_reports_its_moves_and_stays_valid():
    from fwsg.placement import violations

    nodes = {"A": node(16, 64 * GiB, cpu=0.0, mem=0), "B": node(16, 64 * GiB, cpu=0.0, mem=0)}
    cl = cluster({**nodes, "src": node(32, 256 * GiB)}, _two_busy())
    plan = plan_recovery(cl, ["src"])
    assert plan.to_dict()["rebalanced"] == plan.rebalanced
    assert not plan.unplaced and not violations(cl, plan)
    assert sorted(plan.target_of().values()) == ["A", "B"]


def test_never_breaks_the_conntrack_rule():
    # B would take 900 + 100 entries > 95 % of 1000: the admission rule says no
    nodes = {"A": node(16, 64 * GiB, cpu=0.0, mem=0),
             "B": node(16, 64 * GiB, cpu=0.0, mem=0, conntrack={"count": 900, "max": 1000})}
    setup, decided, ps = _setup(nodes, _two_busy(conntrack=100))
    assert rebalance(setup, decided, Limits(), ps) == 0


def test_plan_recovery_relieves_a_node_an_earlier_choice_made_hot(capsys):
    # g1 (HA priority 2) goes first, to idle A (ties by name); g2 needs nvme, which only A has:
    # A ends at 12/16 cores (75 %), so the rebalancing step moves g1 to B
    import json

    from fwsg.cli import main
    from fwsg.placement import violations

    doc = {"nodes": {"A": node(16, 64 * GiB, cpu=0.0, mem=0, storages=["nvme"]),
                     "B": node(16, 64 * GiB, cpu=0.0, mem=0), "src": node(32, 256 * GiB, storages=["nvme"])},
           "guests": {"g1": guest("src", 8, 4 * GiB, cpu=6.0, mem=GiB, priority=2),
                      "g2": guest("src", 8, 4 * GiB, cpu=6.0, mem=GiB, storages=["nvme"])}}
    cl = cluster(doc["nodes"], doc["guests"])
    assert plan_recovery(cl, ["src"], "least-allocated").target_of() == {"g1": "A", "g2": "A"}
    plan = plan_recovery(cl, ["src"])
    assert plan.target_of() == {"g1": "B", "g2": "A"}
    assert plan.rebalanced == 1 and not violations(cl, plan)
    out = plan.to_dict()
    assert [p.get("relieved") for p in out["placements"]] == ["A", None]
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cluster.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        assert main(["place", path, "--failed", "src"]) == 0
    assert "moved off A (projected peak above 70%)" in capsys.readouterr().out


# --- live migrations of running guests ----------------------------------------------------

def _hot_before(**extra):
    """A is busy before the failure (two running guests at 5 cores each of 16) and the only node
    with vmbr1, which the failed node's guest needs: the restart cannot go elsewhere, so only a
    migration of a running guest to idle B relieves A."""
    nodes = {"A": node(16, 64 * GiB, networks=["vmbr1"]), "B": node(16, 64 * GiB),
             "src": node(32, 256 * GiB, networks=["vmbr1"])}
    guests = {"r1": guest("A", 8, 4 * GiB, cpu=5.0, mem=GiB, **extra.get("r1", {})),
              "r2": guest("A", 8, 8 * GiB, cpu=5.0, mem=GiB, **extra.get("r2", {})),
              "new": guest("src", 4, 4 * GiB, cpu=2.0, mem=GiB, networks=["vmbr1"])}
    return nodes, guests


def test_migrates_a_running_guest_off_a_node_hot_before_the_restart():
    from fwsg.placement import violations

    nodes, guests = _hot_before()
    cl = cluster(nodes, guests)
    plan = plan_recovery(cl, ["src"])  # A: (5 + 5 + 2) / 16 = 75 % > 70 %
    assert plan.target_of() == {"new": "A"}
    assert [(m.guest, m.source, m.target) for m in plan.migrations] == [("r1", "A", "B")]  # smaller max memory
    assert plan.migrations[0].before > 0.7 > plan.migrations[0].after
    assert not violations(cl, plan)
    doc = plan.to_dict()
    assert doc["migrated"] == 1 and doc["max_migrations"] == 4
    assert doc["migrations"] == [{"guest": "r1", "from": "A", "to": "B",
                                  "peak": {"before": round(plan.migrations[0].before, 4),
                                           "after": round(plan.migrations[0].after, 4)}}]
    loads = {n.name: n for n in plan.nodes}
    assert loads["A"].cpu_after == 7.0 and loads["B"].cpu_after == 5.0  # r1 left A for B
    assert loads["B"].placed == [] and loads["B"].guests_after == 1


def test_no_migration_when_capped_at_zero_or_for_other_strategies():
    nodes, guests = _hot_before()
    cl = cluster(nodes, guests)
    assert plan_recovery(cl, ["src"], max_migrations=0).migrations == []
    assert plan_recovery(cl, ["src"], "least-allocated").migrations == []


def test_migration_cap_and_bad_cap():
    import pytest

    from fwsg.errors import ValidationError

    nodes = {"A": node(16, 64 * GiB, networks=["vmbr1"]), "B": node(16, 64 * GiB), "C": node(16, 64 * GiB),
             "src": node(32, 256 * GiB, networks=["vmbr1"])}
    guests = {f"r{i}": guest("A", 4, 4 * GiB, cpu=3.5, mem=GiB) for i in range(4)}
    guests["new"] = guest("src", 4, 4 * GiB, cpu=2.0, mem=GiB, networks=["vmbr1"])
    cl = cluster(nodes, guests)  # A: 16 / 16 cores, 12.5 after one migration: two are needed
    assert len(plan_recovery(cl, ["src"]).migrations) == 2
    assert len(plan_recovery(cl, ["src"], max_migrations=1).migrations) == 1
    with pytest.raises(ValidationError, match="max_migrations"):
        plan_recovery(cl, ["src"], max_migrations=-1)


def test_migrated_guest_is_charged_its_max_memory_on_the_target():
    # r1 uses 1 GiB but may grow to 12 GiB, r2 to 16 GiB; an 82 % reserve leaves B 11.5 GiB of
    # room: neither moves; an 80 % reserve leaves 12.8 GiB: r1 moves
    nodes, guests = _hot_before()
    guests["r1"]["memory"] = 12 * GiB
    guests["r2"]["memory"] = 16 * GiB
    cl = cluster(nodes, guests)
    assert plan_recovery(cl, ["src"], limits=Limits(memory_reserve=0.82)).migrations == []
    assert [m.guest for m in plan_recovery(cl, ["src"], limits=Limits(memory_reserve=0.8)).migrations] == ["r1"]


def test_never_migrates_to_an_anti_affinity_partner_nor_a_guest_bound_by_affinity():
    nodes, guests = _hot_before()
    guests["rival"] = guest("B", 1, GiB, cpu=0.0, mem=0)
    rules = [{"type": "anti-affinity", "guests": ["r1", "rival"]}]
    plan = plan_recovery(cluster(nodes, guests, rules=rules), ["src"])
    assert [(m.guest, m.target) for m in plan.migrations] == [("r2", "B")]
    rules = [{"type": "affinity", "guests": ["r1", "r2"]}]
    assert plan_recovery(cluster(nodes, guests, rules=rules), ["src"]).migrations == []


def test_migration_keeps_restricted_groups_and_tiers():
    nodes, guests = _hot_before(r1={"group": "g"}, r2={"group": "g"})
    nodes["C"] = node(16, 64 * GiB)
    plan = plan_recovery(cluster(nodes, guests, groups={"g": {"nodes": {"A": 1, "C": 1, "B": 2},
                                                                "restricted": True}}), ["src"])
    assert [m.target for m in plan.migrations] == ["C"]  # same priority as A; never B (priority 2)
    plan = plan_recovery(cluster(nodes, guests, groups={"g": {"nodes": ["A"], "restricted": True}}), ["src"])
    assert plan.migrations == []


def test_cli_lists_migrations_and_takes_the_cap(capsys, tmp_path):
    import json

    from fwsg.cli import main

    nodes, guests = _hot_before()
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps({"nodes": nodes, "guests": guests}))
    assert main(["place", str(path), "--failed", "src"]) == 0
    out = capsys.readouterr().out
    assert "1 running guests migrated" in out.splitlines()[0]
    assert "Live migrations of running guests (1, at most 4;" in out
    assert "r1     A     B" in out and "A projected peak" in out
    assert main(["place", str(path), "--failed", "src", "--max-migrations", "0", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["migrated"] == 0 and doc["migrations"] == [] and doc["max_migrations"] == 0
    assert main(["place", str(path), "--failed", "src", "--max-migrations", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fwsg: --max-migrations: -1 must be") and err.count("\n") == 1


def test_verify_checks_every_migration():
    from fwsg.placement import violations
    from fwsg.placement.rebalance import Migration

    nodes, guests = _hot_before()
    guests["rival"] = guest("B", 1, GiB, cpu=0.0, mem=0)
    guests["pal"] = guest("A", 1, GiB, cpu=0.0, mem=0)
    rules = [{"type": "anti-affinity", "guests": ["r1", "rival"]}, {"type": "affinity", "guests": ["r2", "pal"]}]
    nodes["C"] = node(16, 8 * GiB, mem=6 * GiB)
    cl = cluster(nodes, guests, rules=rules)
    plan = plan_recovery(cl, ["src"], max_migrations=0)
    assert not violations(cl, plan)

    def check(*moves):
        plan.migrations = [Migration(g, s, t, 0.8, 0.6) for g, s, t in moves]
        return violations(cl, plan)

    assert check(("r1", "A", "C")) == ["C: memory room 2 GiB < 4 GiB max memory of the guests placed there"]
    assert check(("r1", "A", "B")) == ["rules[0]: anti-affinity guests share a node"]
    # each moves away from the other, but for a moment they would share a node: not allowed
    assert check(("r1", "A", "B"), ("rival", "B", "A")) == ["rules[0]: anti-affinity guests share a node"]
    assert check(("r2", "A", "B")) == ["rules[1]: affinity guests on ['A', 'B'] (a bound guest migrates)"]
    assert check(("r1", "B", "C")) == ["migration of r1: it does not run on a live node B (or moves twice)"]
    assert check(("new", "src", "B")) == ["migration of new: it does not run on a live node src (or moves twice)"]
    assert check(("r1", "A", "A")) == ["migration of r1: target is its source A"]
    assert check(("rival", "B", "C")) == []  # a valid one: C has room for its 1 GiB
    # guests bound by affinity never migrate, not even together
    assert check(("r2", "A", "B"), ("pal", "A", "B")) == [
        "rules[1]: affinity guests on ['B'] (a bound guest migrates)"]


def test_the_benchmark_replays_migrations_on_their_target():
    # seed 87, two nodes failed: every restarted guest needs vmbr1, which only n04 has; the plan
    # migrates a running guest off n04 and the replay runs that guest on its target
    from fwsg.placement.simulate import Replay, generate

    sc = generate(87)
    failed = sc.events["fail2"]
    plan = plan_recovery(sc.cluster, failed)
    assert [(m.guest, m.source, m.target) for m in plan.migrations] == [("vm-0003", "n04", "n01")]
    replay = Replay(sc, failed)
    moved = replay.score(plan)
    migrations, plan.migrations = plan.migrations, []
    stayed = replay.score(plan)
    assert stayed == replay.score(plan_recovery(sc.cluster, failed, max_migrations=0))
    assert moved["overload_min"] < stayed["overload_min"]
    assert replay.alone()["overload_min"] == 0.0
    plan.migrations = migrations
    assert replay.score(plan) == moved
