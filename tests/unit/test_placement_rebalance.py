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
