"""``topsis`` and ``basic`` decide like Proxmox VE's HA schedulers.

The cases are Proxmox's own published tests of its static scheduler (the perl test of
``PVE::RS::ResourceScheduling::Static`` in pve-rs: test_balance, test_balance_removal,
test_overcommitted, test_balance_small_memory_difference), replayed through fwsg's scorer the
way the HA manager uses it: score every online node, order by score (higher first) then name,
start the service on the first. Sizes are Proxmox's (decimal bytes, cpus).
"""

import pytest

from fwsg.placement import plan_recovery
from fwsg.placement.scorers import STRATEGIES, Context
from fwsg.placement.state import Demand, NodeState
from tests.unit.placement_helpers import cluster, guest, node


class Scheduler:
    """Proxmox's scheduler object, backed by fwsg node states: nodes with configured services."""

    def __init__(self, strategy="topsis"):
        self.scorer = STRATEGIES[strategy]
        self.nodes = {}  # name -> (cores, memory)
        self.services = {}  # sid -> [(node, cores, memory)]

    def add_node(self, name, cores, memory):
        self.nodes[name] = (cores, memory)

    def remove_node(self, name):
        del self.nodes[name]

    def add_service(self, name, sid, cores, memory):
        self.services.setdefault(sid, []).append((name, cores, memory))

    def remove_service(self, sid):
        self.services.pop(sid, None)

    def ranking(self, cores, memory):
        """Node names in the order the HA manager tries them for a service of this size."""
        nodes = {n: node(c, m) for n, (c, m) in self.nodes.items()}
        nodes["src"] = node(64, 10**15)
        guests = {}
        for sid, where in self.services.items():
            for i, (n, c, m) in enumerate(where):
                if n in self.nodes:
                    guests[f"{sid}@{i}"] = guest(n, c, m)
        guests["new"] = guest("src", cores, memory)
        cl = cluster(nodes, guests)
        states = [NodeState(cl.nodes[n], cl.guests_on(n), "peak", 1.645) for n in self.nodes]
        ctx = Context(states=states, z=1.645, max_cores=64.0, max_memory=10.0**15)
        scores = self.scorer.score(states, Demand([cl.guests["new"]], "peak", 1.645), ctx)
        return [s.name for _, s in sorted(zip(scores, states), key=lambda x: (-x[0], x[1].name))]


def test_balance():
    s = Scheduler()
    s.add_node("A", 10, 100_000_000_000)
    s.add_node("B", 20, 200_000_000_000)
    for i in range(15):
        order = s.ranking(4, 20_000_000_000)
        assert order == (["A", "B"] if i % 3 == 2 else ["B", "A"]), i
        s.add_service(order[0], f"vm:{100 + i}", 4, 20_000_000_000)


def test_balance_removal():
    s = Scheduler()
    for name, k in (("A", 1), ("B", 2), ("C", 3)):
        s.add_node(name, 10 * k, 100_000_000_000 * k)
    size = (4, 20_000_000_000)
    s.add_service("A", "a", *size)
    s.add_service("A", "b", *size)
    s.add_service("B", "c", *size)
    s.add_service("B", "d", *size)
    s.add_service("C", "c", *size)  # 'c' counts on both nodes (a migration in progress)
    assert s.ranking(*size) == ["C", "B", "A"]
    s.remove_service("d")
    s.remove_service("c")
    s.add_service("C", "c", *size)
    assert s.ranking(*size) == ["B", "C", "A"]
    s.remove_node("B")
    assert s.ranking(*size) == ["C", "A"]


def test_overcommitted():
    s = Scheduler()
    s.add_node("A", 4, 4_102_062_080)
    s.add_node("B", 4, 4_102_062_080)
    s.add_node("C", 4, 4_102_053_888)
    s.add_node("D", 4, 4_102_053_888)
    size = (1, 536_870_912)
    for n, sid in (("A", "a"), ("A", "b"), ("A", "c"), ("B", "d"), ("A", "e")):
        s.add_service(n, sid, *size)
    assert s.ranking(*size) == ["C", "D", "B", "A"]


@pytest.mark.parametrize("start_load", [True, False])
def test_balance_small_memory_difference(start_load):
    s = Scheduler()
    s.add_node("A", 8, 10_000_000_000)
    s.add_node("B", 4, 9_000_000_000)
    s.add_node("C", 4, 8_000_000_000)
    if start_load:
        s.add_service("A", "vm:100", 4, 1_000_000_000)
        s.add_service("B", "vm:101", 2, 1_000_000_000)
        s.add_service("C", "vm:102", 2, 1_000_000_000)
    expected = {0: ["A", "B", "C"], 1: ["A", "B", "C"], 2: ["B", "C", "A"], 3: ["C", "A", "B"]}
    for i in range(20):
        order = s.ranking(3, 16_000_000)
        assert order == expected[i % 4], i
        s.add_service(order[0], f"vm:{103 + i}", 3, 16_000_000)


def test_topsis_plan_follows_proxmox_decision_by_decision():
    # test_balance through the planner: 15 equal guests of a failed node (placed in name order)
    nodes = {"A": node(10, 100_000_000_000, cpu=0.0, mem=0), "B": node(20, 200_000_000_000, cpu=0.0, mem=0),
             "dead": node(64, 10**13)}
    guests = {f"vm:{100 + i}": guest("dead", 4, 20_000_000_000) for i in range(15)}
    plan = plan_recovery(cluster(nodes, guests), ["dead"], "topsis")
    assert [p.target for p in plan.placements] == ["A" if i % 3 == 2 else "B" for i in range(15)]


def test_basic_is_fewest_services_then_name():
    s = Scheduler("basic")
    for n in "ABC":
        s.add_node(n, 8, 10**11)
    s.add_service("A", "a1", 1, 10**9)
    s.add_service("A", "a2", 1, 10**9)
    s.add_service("C", "c1", 1, 10**9)
    picks = []
    for i in range(4):
        order = s.ranking(1, 10**9)
        picks.append(order[0])
        s.add_service(order[0], f"n{i}", 1, 10**9)
    # counts A2 B0 C1 -> B; A2 B1 C1 -> B (tie, name); A2 B2 C1 -> C; all 2 -> A
    assert picks == ["B", "B", "C", "A"]


def test_topsis_weighs_every_online_node_not_only_the_candidates():
    # C cannot take the guest (no ceph) but, as in Proxmox, it is still a TOPSIS alternative:
    # over A, B and C, A wins (0.906 vs 0.783); over A and B alone B would (0.823 vs 0.177)
    G = 1_000_000_000
    nodes = {"A": node(8, 64 * G, storages=["ceph"]), "B": node(16, 64 * G, storages=["ceph"]),
             "C": node(8, 64 * G), "dead": node(64, 1000 * G, storages=["ceph"])}
    guests = {"a": guest("A", 6, 25 * G), "b1": guest("B", 12, 3 * G), "b2": guest("B", 12, 4 * G),
              "c": guest("C", 4, 51 * G), "vm": guest("dead", 2, 4 * G, storages=["ceph"])}
    plan = plan_recovery(cluster(nodes, guests), ["dead"], "topsis")
    assert plan.target_of() == {"vm": "A"}
    assert plan.placements[0].rejected["C"] == "missing storage ceph"
