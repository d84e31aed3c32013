"""A seeded generator of clusters, usage series and failure events, and the replay that scores a
plan: the benchmark's engine (``scripts/bench_placement``), also used by tests.

Pure apart from the random generator it is given: no I/O here. The same seed gives the same
cluster, series and events on every run and machine.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from fwsg.placement.model import parse_cluster
from fwsg.quantities import percentile

GiB = 1 << 30
STEP = 10  # seconds between samples
HISTORY = 120  # samples in the probe window (20 min)
FUTURE = 120  # samples replayed after the plan (20 min)
OVERHEAD_CORES = 0.5  # host's own use
OVERHEAD_MEM = 4 * GiB

NODE_SIZES = ((16, 128), (32, 256), (48, 384), (64, 512))  # cores, GiB
GUEST_BUCKETS = (  # weight, cores choices, memory GiB choices
    (0.50, (1, 2), (2, 4)),
    (0.30, (4,), (8, 16)),
    (0.15, (8,), (32,)),
    (0.05, (16,), (64, 128)),
)


@dataclass
class Scenario:
    """A generated cluster (document and parsed), each guest's usage series and the events."""

    seed: int
    doc: dict
    cluster: object
    cpu: dict  # guest -> list of cores used, HISTORY + FUTURE samples
    mem: dict  # guest -> list of bytes used
    events: dict  # event name -> list of failed nodes


def _series_cpu(rng, cores):
    base = cores * rng.uniform(0.05, 0.35)
    amp = rng.uniform(0.0, 0.5) * base
    phase = rng.uniform(0, 2 * math.pi)
    now = rng.uniform(0, 86400)
    noise = base * rng.uniform(0.03, 0.2)
    bursty = rng.random() < 0.3
    out = []
    burst_left = 0
    burst = 0.0
    for i in range(HISTORY + FUTURE):
        t = now + i * STEP
        v = base + amp * math.sin(2 * math.pi * t / 86400 + phase) + rng.gauss(0, noise)
        if bursty:
            if burst_left == 0 and rng.random() < 0.01:
                burst_left = rng.randint(6, 60)
                burst = base * rng.uniform(0.5, 2.0)
            if burst_left:
                v += burst
                burst_left -= 1
        out.append(min(max(v, 0.0), float(cores)))
    return out


def _series_mem(rng, memory):
    base = memory * rng.uniform(0.35, 0.85)
    drift = memory * rng.uniform(-0.0002, 0.0006)
    noise = memory * 0.01
    return [min(max(base + drift * i + rng.gauss(0, noise), 0.0), float(memory))
            for i in range(HISTORY + FUTURE)]


def _stats(series):
    past = series[:HISTORY]
    return {"latest": round(past[-1], 4), "mean": round(sum(past) / len(past), 4),
            "p95": round(percentile(past, 95), 4)}


def generate(seed, *, nodes=None, guests_per_core=None, fill=None):
    """A :class:`Scenario` for ``seed``: 3-64 nodes of mixed sizes (or ``nodes``), guests filling
    them to a random ``fill`` of memory, HA groups, anti-affinity and affinity pairs, storage and
    network masks, and three events (``fail1``, ``fail2``, ``evacuate`` the busiest node)."""
    rng = random.Random(seed)
    n_nodes = nodes or rng.choice((3, 4, 5, 8, 12, 16, 24, 32, 48, 64))
    fill = fill if fill is not None else rng.uniform(0.35, 0.6)
    doc_nodes = {}
    for i in range(n_nodes):
        cores, mem = rng.choice(NODE_SIZES)
        nets = ["vmbr0"] + (["vmbr1"] if rng.random() < 0.7 else []) + (["vmbr2"] if rng.random() < 0.3 else [])
        stor = ["ceph"] + (["nvme"] if rng.random() < 0.5 else [])
        doc_nodes[f"n{i:02d}"] = {"cores": cores, "memory": mem * GiB, "storages": stor, "networks": nets,
                                  "conntrack": {"count": 0, "max": 262144}}
    names = list(doc_nodes)
    groups = {}
    if n_nodes >= 4:
        for k in range(rng.randint(1, 3)):
            members = rng.sample(names, max(2, n_nodes // 2))
            groups[f"g{k}"] = {"nodes": {m: rng.choice((1, 1, 2)) for m in members},
                               "restricted": rng.random() < 0.5}
    committed = {n: 0 for n in names}
    ccount = {n: 0 for n in names}
    doc_guests = {}
    cpu = {}
    mem = {}
    weights = [b[0] for b in GUEST_BUCKETS]
    gi = 0
    misses = 0
    while misses < 50:
        _, core_choices, mem_choices = rng.choices(GUEST_BUCKETS, weights)[0]
        gcores, gmem = rng.choice(core_choices), rng.choice(mem_choices) * GiB
        req_stor = ["ceph"] + (["nvme"] if rng.random() < 0.15 else [])
        req_net = ["vmbr0"] + (["vmbr1"] if rng.random() < 0.3 else []) + (["vmbr2"] if rng.random() < 0.1 else [])
        group = rng.choice(list(groups)) if groups and rng.random() < 0.3 else None
        ok = [n for n in names
              if committed[n] + gmem <= fill * doc_nodes[n]["memory"]
              and doc_nodes[n]["cores"] >= gcores
              and set(req_stor) <= set(doc_nodes[n]["storages"])
              and set(req_net) <= set(doc_nodes[n]["networks"])
              and (group is None or n in groups[group]["nodes"])]
        if not ok:
            misses += 1
            continue
        node = rng.choice(ok)
        name = f"vm-{gi:04d}"
        gi += 1
        committed[node] += gmem
        cpu[name] = _series_cpu(rng, gcores)
        mem[name] = _series_mem(rng, gmem)
        ct = rng.randint(0, 4000)
        ccount[node] += ct
        g = {"node": node, "cores": gcores, "memory": gmem, "storages": req_stor, "networks": req_net,
             "conntrack": ct, "usage": {"cpu": _stats(cpu[name]), "memory": _stats(mem[name])}}
        if group:
            g["group"] = group
        doc_guests[name] = g
    rules = []
    gnames = list(doc_guests)
    by_node = {}
    for name, g in doc_guests.items():
        by_node.setdefault(g["node"], []).append(name)
    for _ in range(len(gnames) // 20):  # anti-affinity pairs on distinct nodes
        a, b = rng.sample(gnames, 2)
        if doc_guests[a]["node"] != doc_guests[b]["node"]:
            rules.append({"type": "anti-affinity", "guests": [a, b]})
    for _ in range(len(gnames) // 40):  # affinity pairs already together
        members = by_node[rng.choice(names)] if by_node else []
        if len(members) >= 2:
            rules.append({"type": "affinity", "guests": rng.sample(members, 2)})
    for n in names:
        nc = [OVERHEAD_CORES] * (HISTORY + FUTURE)
        nm = [float(OVERHEAD_MEM)] * (HISTORY + FUTURE)
        for name in by_node.get(n, []):
            nc = [a + b for a, b in zip(nc, cpu[name])]
            nm = [a + b for a, b in zip(nm, mem[name])]
        doc_nodes[n]["usage"] = {"cpu": _stats(nc), "memory": _stats(nm)}
        doc_nodes[n]["conntrack"]["count"] = ccount[n]
    doc = {"schema": "fwsg.cluster/1", "nodes": doc_nodes, "guests": doc_guests, "groups": groups, "rules": rules}
    cluster = parse_cluster(doc)
    order = sorted(names, key=lambda n: (-doc_nodes[n]["usage"]["memory"]["mean"] / doc_nodes[n]["memory"], n))
    events = {"fail1": [rng.choice(names)], "fail2": rng.sample(names, 2) if n_nodes > 3 else [names[0]],
              "evacuate": [order[0]]}
    return Scenario(seed=seed, doc=doc, cluster=cluster, cpu=cpu, mem=mem, events=events)


class Replay:
    """Replays the FUTURE part of the series for a scenario and a set of failed nodes; the load of
    guests that stay is summed once and shared by every plan scored against it."""

    def __init__(self, sc, failed):
        self.sc = sc
        self.failed = set(failed)
        cl = sc.cluster
        self.base = {}
        for n in cl.nodes.values():
            if n.name in self.failed:
                continue
            c = [OVERHEAD_CORES] * FUTURE
            m = [float(OVERHEAD_MEM)] * FUTURE
            for g in cl.guests.values():
                if g.node == n.name:
                    c = [a + b for a, b in zip(c, sc.cpu[g.name][HISTORY:])]
                    m = [a + b for a, b in zip(m, sc.mem[g.name][HISTORY:])]
            self.base[n.name] = (c, m)

    def score(self, plan, threshold=0.8):
        """Metrics of ``plan`` over the replay: max and p95 node cpu/memory fraction (over all
        node-samples), imbalance (coefficient of variation across nodes of each node's mean
        dominant load), node-minutes with cpu or memory above ``threshold``. Guests the plan
        live-migrates (``plan.migrations``) run on their target for the whole replay."""
        loads = {n: (list(c), list(m)) for n, (c, m) in self.base.items()}
        for guest, target in plan.target_of().items():
            self._shift(loads, guest, target, 1.0)
        for mg in getattr(plan, "migrations", ()):
            self._shift(loads, mg.guest, mg.source, -1.0)
            self._shift(loads, mg.guest, mg.target, 1.0)
        return self._metrics(loads, threshold)

    def alone(self, threshold=0.8):
        """:meth:`score` of the survivors with nothing placed or migrated: the load (and the
        node-minutes above ``threshold``) that exists before any plan."""
        return self._metrics({n: (list(c), list(m)) for n, (c, m) in self.base.items()}, threshold)

    def _shift(self, loads, guest, node, sign):
        c, m = loads[node]
        loads[node] = ([a + sign * b for a, b in zip(c, self.sc.cpu[guest][HISTORY:])],
                       [a + sign * b for a, b in zip(m, self.sc.mem[guest][HISTORY:])])

    def _metrics(self, loads, threshold):
        cl = self.sc.cluster
        cpu_all, mem_all, dominant = [], [], []
        over = 0
        for n, (c, m) in loads.items():
            node = cl.nodes[n]
            fc = [x / node.cores for x in c]
            fm = [x / node.memory for x in m]
            cpu_all += fc
            mem_all += fm
            dominant.append(sum(max(a, b) for a, b in zip(fc, fm)) / FUTURE)
            over += sum(1 for a, b in zip(fc, fm) if a > threshold or b > threshold)
        mean = sum(dominant) / len(dominant)
        sd = math.sqrt(sum((x - mean) ** 2 for x in dominant) / len(dominant))
        return {
            "cpu_max": max(cpu_all), "cpu_p95": percentile(cpu_all, 95),
            "mem_max": max(mem_all), "mem_p95": percentile(mem_all, 95),
            "imbalance": sd / mean if mean else 0.0,
            "overload_min": over * STEP / 60.0,
        }


def scale_case(seed, *, survivors=64, moving=1000, tight=False):
    """A cluster of ``survivors`` 64-core/512 GiB nodes at moderate load plus failed nodes holding
    ``moving`` small and medium guests: the decision-time case. ``tight``: the survivors' memory
    is so full that a few percent of the guests cannot be placed. Returns (cluster, failed)."""
    rng = random.Random(seed)
    used = 430.0 if tight else 160.0  # GiB, p95 of each survivor (plus up to 40)
    nodes = {f"s{i:02d}": {"cores": 64, "memory": 512 * GiB, "storages": ["ceph"], "networks": ["vmbr0"],
                           "usage": {"cpu": {"mean": 12.0 + rng.random() * 8, "p95": 20.0 + rng.random() * 8},
                                     "memory": {"mean": (used - 10) * GiB, "p95": (used + rng.random() * 40) * GiB}}}
             for i in range(survivors)}
    n_failed = 8
    failed = [f"f{i}" for i in range(n_failed)]
    for f in failed:
        nodes[f] = {"cores": 256, "memory": 4096 * GiB, "storages": ["ceph"], "networks": ["vmbr0"]}
    guests = {}
    for i in range(moving):
        cores = rng.choice((1, 1, 2, 2, 4))
        memory = rng.choice((2, 4, 8)) * GiB
        guests[f"vm-{i:04d}"] = {"node": failed[i % n_failed], "cores": cores, "memory": memory,
                                 "storages": ["ceph"], "networks": ["vmbr0"],
                                 "usage": {"cpu": {"mean": cores * 0.2, "p95": cores * 0.4},
                                           "memory": {"mean": memory * 0.5, "p95": memory * 0.6}}}
    rules = [{"type": "anti-affinity", "guests": [f"vm-{i:04d}", f"vm-{i + 1:04d}"]} for i in range(0, 100, 2)]
    doc = {"nodes": nodes, "guests": guests, "rules": rules}
    return parse_cluster(doc), failed
