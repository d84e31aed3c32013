"""Each hard constraint, with hand-computed numbers."""

from fwsg.placement.filters import (Limits, anti_affinity, capacity, cores, fmt_bytes, group,
                                    networks, pinned, storages)
from fwsg.placement.model import AffinityRule
from tests.unit.placement_helpers import GiB, cluster, demand, guest, node, state

L = Limits()


def _two(target=None, g=None, **kw):
    """Node 'src' (failed) holds guest 'vm'; node 'dst' is the candidate."""
    return cluster({"src": node(cores=32, memory=64 * GiB), "dst": node(**(target or {}))},
                   {"vm": guest("src", **(g or {}))}, **kw)


def test_memory_headroom_accepts_exact_fit_and_rejects_one_byte_short():
    cl = _two({"memory": 16 * GiB, "mem": 8 * GiB}, {"memory": 8 * GiB, "mem": 1 * GiB})
    ns, d = state(cl, "dst"), demand(cl, "vm")
    assert capacity(ns, d, L) is None  # 16 - 8 = 8 GiB free >= 8 GiB
    ns.committed = 1  # one byte already promised to an earlier guest of the plan
    assert capacity(ns, d, L) == "8 GiB free < 8 GiB max memory"


def test_memory_headroom_counts_max_memory_of_earlier_placements():
    cl = _two({"memory": 16 * GiB, "mem": 4 * GiB}, {"memory": 8 * GiB, "mem": 1 * GiB})
    ns, d = state(cl, "dst"), demand(cl, "vm")
    ns.add(d)  # first copy: committed 8 GiB, used 4 + 1 GiB
    assert ns.committed == 8 * GiB
    # free = 16 - 5 - 8 = 3 GiB < 8 GiB
    assert capacity(ns, d, L) == "3 GiB free < 8 GiB max memory"


def test_cpu_threshold():
    cl = _two({"cores": 8, "cpu": 6.5}, {"cores": 2, "cpu": 1.0})
    ns, d = state(cl, "dst"), demand(cl, "vm")
    # (6.5 + 1) / 8 = 93.75% <= 95%
    assert capacity(ns, d, L) is None
    ns.cpu = 6.7  # (6.7 + 1) / 8 = 96.25%
    assert capacity(ns, d, L) == "cpu would reach 96% of 8 cores > 95%"
    assert capacity(ns, d, Limits(threshold=0.97)) is None


def test_memory_threshold_uses_usage_not_max():
    # headroom: 16 - 13.5 = 2.5 GiB >= 2 GiB max; usage (13.5 + 2) / 16 = 96.9% > 95%
    cl = _two({"memory": 16 * GiB, "mem": int(13.5 * GiB)}, {"memory": 2 * GiB, "mem": 2 * GiB})
    assert capacity(state(cl, "dst"), demand(cl, "vm"), L) == "memory would reach 97% of 16 GiB > 95%"


def test_unmeasured_guest_counts_its_full_size():
    cl = _two({"cores": 8, "cpu": 1.0}, {"cores": 8})  # no usage: assumes 8 cores busy
    assert capacity(state(cl, "dst"), demand(cl, "vm"), L) == "cpu would reach 112% of 8 cores > 95%"


def test_conntrack_headroom():
    cl = _two({"conntrack": {"count": 9000, "max": 10000}}, {"conntrack": 600})
    ns, d = state(cl, "dst"), demand(cl, "vm")
    assert capacity(ns, d, L) == "conntrack 9600/10000 entries > 95%"  # limit 9500
    ns.conntrack = 8900
    assert capacity(ns, d, L) is None  # 9500 <= 9500
    ns.conntrack_max = 0  # unknown max: not checked
    ns.conntrack = 10**9
    assert capacity(ns, d, L) is None


def test_cores():
    cl = _two({"cores": 4}, {"cores": 8})
    assert cores(state(cl, "dst"), demand(cl, "vm"), L) == "4 cores < 8 guest cores"
    cl = _two({"cores": 8}, {"cores": 8})
    assert cores(state(cl, "dst"), demand(cl, "vm"), L) is None


def test_storages_and_networks():
    cl = _two({"storages": ["ceph"], "networks": ["vmbr0"]},
              {"storages": ["ceph", "nvme", "zfs"], "networks": ["vmbr0", "vmbr9"]})
    ns, d = state(cl, "dst"), demand(cl, "vm")
    assert storages(ns, d, L) == "missing storage nvme, zfs"
    assert networks(ns, d, L) == "missing network vmbr9"
    cl = _two({"storages": ["ceph", "nvme"], "networks": ["vmbr0"]}, {"storages": ["nvme"], "networks": ["vmbr0"]})
    assert storages(state(cl, "dst"), demand(cl, "vm"), L) is None
    assert networks(state(cl, "dst"), demand(cl, "vm"), L) is None


def test_restricted_group_filters_unrestricted_does_not():
    groups = {"db": {"nodes": {"src": 1}, "restricted": True}}
    cl = _two(g={"group": "db"}, groups=groups)
    assert group(state(cl, "dst"), demand(cl, "vm"), L) == "not in restricted group 'db'"
    groups["db"]["restricted"] = False
    cl = _two(g={"group": "db"}, groups=groups)
    assert group(state(cl, "dst"), demand(cl, "vm"), L) is None


def test_anti_affinity_sees_staying_and_placed_guests():
    cl = cluster({"src": node(), "dst": node(memory=64 * GiB)},
                 {"vm": guest("src"), "peer": guest("dst"), "other": guest("src")})
    ns, d = state(cl, "dst"), demand(cl, "vm")
    rule = AffinityRule(index=0, kind="anti-affinity", guests=("vm", "peer"))
    d.avoid = {"peer": rule}
    assert anti_affinity(ns, d, L) == "rules[0] (anti-affinity): peer is already there"
    d.avoid = {"other": AffinityRule(index=1, kind="anti-affinity", guests=("vm", "other"), name="spread")}
    assert anti_affinity(ns, d, L) is None
    ns.add(demand(cl, "other"))  # the plan put 'other' here
    assert anti_affinity(ns, d, L) == "rule 'spread' (anti-affinity): other is already there"


def test_affinity_pin():
    cl = _two()
    ns, d = state(cl, "dst"), demand(cl, "vm")
    d.pinned, d.pinned_by = "elsewhere", AffinityRule(index=2, kind="affinity", guests=("vm", "x"))
    assert pinned(ns, d, L) == "rules[2] (affinity) keeps vm with its peers on elsewhere"
    d.pinned = "dst"
    assert pinned(ns, d, L) is None


def test_fmt_bytes():
    assert fmt_bytes(0) == "0 B"
    assert fmt_bytes(512 << 20) == "512 MiB"
    assert fmt_bytes(int(3.1 * GiB)) == "3.1 GiB"
