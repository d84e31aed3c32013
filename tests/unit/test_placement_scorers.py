"""Each scorer against hand-computed numbers (docs/placement.md has the formulas)."""

import math

import pytest

from fwsg.placement.scorers import STRATEGIES, Context, Topsis, topsis_scores
from tests.unit.placement_helpers import GiB, cluster, demand, guest, node, state


@pytest.fixture()
def two():
    """A: 8 cores/16 GiB using 2 cores/4 GiB, 3 guests (6 cores, 8 GiB configured).
    B: 16 cores/32 GiB using 12 cores/8 GiB, 1 guest (4 cores, 4 GiB configured).
    The moving guest: 2 cores, 4 GiB max, using 1 core and 2 GiB (steady)."""
    nodes = {"A": node(8, 16 * GiB, cpu=2.0, mem=4 * GiB), "B": node(16, 32 * GiB, cpu=12.0, mem=8 * GiB),
             "src": node(16, 32 * GiB)}
    guests = {"a1": guest("A", 2, 2 * GiB), "a2": guest("A", 2, 2 * GiB), "a3": guest("A", 2, 4 * GiB),
              "b1": guest("B", 4, 4 * GiB), "vm": guest("src", 2, 4 * GiB, cpu=1.0, mem=2 * GiB)}
    cl = cluster(nodes, guests)
    states = [state(cl, "A"), state(cl, "B")]
    ctx = Context(states=states, z=1.645, max_cores=16.0, max_memory=32.0 * GiB)
    return states, demand(cl, "vm"), ctx


def scores(name, two):
    states, d, ctx = two
    return STRATEGIES[name].score(states, d, ctx)


def test_basic_counts_guests(two):
    assert scores("basic", two) == [-3.0, -1.0]


def test_least_allocated(two):
    # A: cpu (8-2-1)/8 = .625, mem (16-4-2)/16 = .625 -> 62.5
    # B: cpu (16-12-1)/16 = .1875, mem (32-8-2)/32 = .6875 -> 43.75
    assert scores("least-allocated", two) == pytest.approx([62.5, 43.75])


def test_balanced(two):
    # A: 3/8 = .375 vs 6/16 = .375 -> 100; B: 13/16 = .8125 vs 10/32 = .3125 -> (1 - .25) * 100
    assert scores("balanced", two) == pytest.approx([100.0, 75.0])


def test_bestfit(two):
    # scaled by the largest node (16 cores, 32 GiB); free minus demand:
    # A: (6/16 - 1/16, 12/32 - 2/32) = (.3125, .3125); B: (4/16 - 1/16, 24/32 - 2/32) = (.1875, .6875)
    a, b = scores("bestfit", two)
    assert a == pytest.approx(-math.hypot(0.3125, 0.3125))
    assert b == pytest.approx(-math.hypot(0.1875, 0.6875))


def test_fwsg(two):
    # no spread (latest = mean = p95): peak = mean
    # A: pc 3/8 = .375, pm 6/16 = .375, committed (4+0+4)/16 = .5
    #    cost = .375 + .125 * .75 + .25 * .5 + 2 * .375 (mean dominant) = 1.34375
    # B: pc 13/16 = .8125, pm 10/32 = .3125, committed 12/32 = .375
    #    cost = .8125 + .125 * 1.125 + .25 * .375 + 2 * .8125 = 2.671875
    assert scores("fwsg", two) == pytest.approx([-1.34375, -2.671875])


def test_fwsg_weighs_the_mean_load_not_only_the_peak():
    # A: cpu steady 6 of 16; B: cpu mean 4, p95 6 (sigma 2/z). With the steady 1-core guest both
    # project the same peak 7/16 and the same memory, so only the mean (5 < 7 cores) separates
    # them: B, though A sorts first by name.
    z = 1.645
    nodes = {"A": node(16, 64 * GiB, cpu=6.0, mem=8 * GiB),
             "B": node(16, 64 * GiB, cpu={"mean": 4.0, "p95": 6.0}, mem=8 * GiB), "src": node(16, 64 * GiB)}
    cl = cluster(nodes, {"vm": guest("src", 2, 4 * GiB, cpu=1.0, mem=GiB)})
    states = [state(cl, "A"), state(cl, "B")]
    ctx = Context(states=states, z=z, max_cores=16.0, max_memory=64.0 * GiB)
    a, b = STRATEGIES["fwsg"].score(states, demand(cl, "vm"), ctx)
    assert b > a
    assert b - a == pytest.approx(2.0 * 2.0 / 16, rel=1e-3)  # peaks equal up to z = 1.645 vs 1.6449


def test_pack_prefers_the_tightest_memory_fit(two):
    a, b = scores("pack", two)
    # A leaves 16-4-4 = 8 GiB, B 32-8-4 = 20 GiB
    assert a > b
    assert a == pytest.approx(-8 / 32 - 1e-3 * 3 / 8)


def test_topsis_scores_by_hand():
    # rows [1, 2], [2, 1], weights (1, 3); norms sqrt(5): best [1, 3]/sqrt5, worst [2, 6]/sqrt5
    # row 0: d+ = 3/sqrt5, d- = 1/sqrt5 -> .25; row 1: d+ = 1/sqrt5, d- = 3/sqrt5 -> .75
    assert topsis_scores([[1, 2], [2, 1]], (1, 3)) == pytest.approx([0.25, 0.75])
    assert topsis_scores([[1, 1], [1, 1]], (1, 1)) == [0.0, 0.0]


def test_topsis_uses_configured_sizes(two):
    # configured loads: A cpu 6/8 = .75, mem 8/16 = .5; B cpu 4/16 = .25, mem 4/32 = .125
    # guest on A: cpu [1.0, .25], mem [.75, .125]; on B: cpu [.75, .375], mem [.5, .25]
    # B is better on all four criteria -> B is the ideal (1.0), A the anti-ideal (0.0)
    states, d, ctx = two
    assert Topsis().score(states, d, ctx) == pytest.approx([0.0, 1.0])


def test_fwsg_multiplexes_variance_instead_of_adding_percentiles():
    # guest: mean 1, sigma 2 (p95 = 1 + 1.645*2). X: mean 2, sigma 2; Y: mean 3.5, steady.
    # sum of p95s: X 5.29 + 4.29 = 9.58 > Y 3.5 + 4.29 = 7.79  (would pick Y)
    # multiplexed: X 3 + 1.645*sqrt(8) = 7.65 < Y 4.5 + 1.645*2 = 7.79  (picks X)
    z = 1.645
    nodes = {"X": node(16, 64 * GiB, cpu={"mean": 2.0, "p95": 2 + z * 2}, mem=8 * GiB),
             "Y": node(16, 64 * GiB, cpu=3.5, mem=8 * GiB), "src": node(16, 64 * GiB)}
    cl = cluster(nodes, {"vm": guest("src", 8, 4 * GiB, cpu={"mean": 1.0, "p95": 1 + z * 2}, mem=GiB)})
    states = [state(cl, "X"), state(cl, "Y")]
    ctx = Context(states=states, z=z, max_cores=16.0, max_memory=64.0 * GiB)
    x, y = STRATEGIES["fwsg"].score(states, demand(cl, "vm"), ctx)
    assert x > y
    # least-allocated, on percentiles, picks Y
    lx, ly = STRATEGIES["least-allocated"].score(states, demand(cl, "vm"), ctx)
    assert ly > lx
