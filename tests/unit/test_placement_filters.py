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


def test_memory_room_accepts_exact_fit_and_rejects_one_byte_short():
    cl = _two({"memory": 16 * GiB, "mem": 8 * GiB}, {"memory": 8 * GiB, "mem": 1 * GiB})
    ns, d = state(cl, "dst"), demand(cl, "vm")
    assert capacity(ns, d, L) is None  # 16 - 8 = 8 GiB room >= 8 GiB
    ns.committed = 1024  # 1 KiB already promised to an earlier guest of the plan
    assert capacity(ns, d, L) is not None
    assert str(capacity(ns, d, L)).endswith("< 8 GiB max memory")


def test_memory_room_counts_placed_guests_once_at_their_max():
    # the double count of issue 10: used 4 GiB + two copies at their 4 GiB max = 12 of 16 GiB
    # leaves 4 GiB for a third copy (the old rule also subtracted their usage: 2 GiB left)
    cl = _two({"memory": 16 * GiB, "mem": 4 * GiB}, {"memory": 4 * GiB, "mem": 1 * GiB})
    ns, d = state(cl, "dst"), demand(cl, "vm")
    ns.add(d)
    ns.add(d)
    assert ns.committed == 8 * GiB and ns.free_memory == 4 * GiB
    assert capacity(ns, d, L) is None
    ns.add(d)
    assert capacity(ns, d, L) == "memory room 0 B < 4 GiB max memory"


def test_memory_reserve():
    cl = _two({"memory": 16 * GiB, "mem": 4 * GiB}, {"memory": 10 * GiB, "mem": 1 * GiB})
    d = demand(cl, "vm")
    assert state(cl, "dst").reason(d) is None  # 16 - 4 = 12 >= 10
    # 25 % reserved: 12 - 4 = 8 GiB < 10 GiB
    assert state(cl, "dst", limits=Limits(memory_reserve=0.25)).reason(d) == "memory room 8 GiB < 10 GiB max memory"


def test_cpu_is_soft_unless_limited():
    cl = _two({"cores": 8, "cpu": 6.5}, {"cores": 2, "cpu": 1.0})
    d = demand(cl, "vm")
    assert state(cl, "dst").reason(d) is None
    ns = state(cl, "dst", limits=Limits(cpu_limit=0.95))
    assert ns.reason(d) is None  # 7.6 - 6.5 = 1.1 cores room >= 1.0
    ns.add(d)  # 0.1 cores room left
    assert ns.reason(d) == "cpu room 0.10 < 1.00 cores used (--cpu-limit)"
    # a node already past the limit is never chosen with the limit, always without
    cl = _two({"cores": 8, "cpu": 9.0}, {"cores": 2, "cpu": 1.0})
    assert state(cl, "dst").reason(d) is None
    assert state(cl, "dst", limits=Limits(cpu_limit=1.0)).reason(d) == "cpu room 0.00 < 1.00 cores used (--cpu-limit)"


def test_unmeasured_guest_counts_its_full_size():
    cl = _two({"cores": 8, "cpu": 1.0}, {"cores": 8})  # no usage: assumes 8 cores busy
    assert state(cl, "dst", limits=Limits(cpu_limit=0.95)).reason(demand(cl, "vm")) == \
        "cpu room 6.60 < 8.00 cores used (--cpu-limit)"


def test_conntrack_room():
    cl = _two({"conntrack": {"count": 9000, "max": 10000}}, {"conntrack": 600})
    d = demand(cl, "vm")
    assert capacity(state(cl, "dst"), d, L) == "conntrack room 500 < 600 entries"  # 9500 - 9000
    cl = _two({"conntrack": {"count": 8900, "max": 10000}}, {"conntrack": 600})
    assert capacity(state(cl, "dst"), d, L) is None  # 9500 - 8900 = 600
    cl = _two({"conntrack": {"count": 10**9, "max": 0}}, {"conntrack": 600})
    assert capacity(state(cl, "dst"), d, L) is None  # unknown max: not checked


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
