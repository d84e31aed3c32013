"""The cluster document: validation errors name the field; sizes and stats parse."""

import copy
import json
import os

import pytest

from fwsg.errors import ValidationError
from fwsg.placement import load_cluster, parse_cluster
from fwsg.placement.model import size, stat
from fwsg.placement.stats import apply_probe_stats

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "cluster.json")
GOOD = {"nodes": {"n1": {"cores": 8, "memory": "16GiB"}, "n2": {"cores": 8, "memory": 17179869184}},
        "guests": {"vm-12": {"node": "n1", "cores": 2, "memory": "4GiB"}},
        "groups": {"g": {"nodes": {"n1": 1}}},
        "rules": [{"type": "anti-affinity", "guests": ["vm-12", "vm-12b"]}]}
GOOD["guests"]["vm-12b"] = {"node": "n2", "cores": 1, "memory": 1024}


def _bad(mutate):
    doc = copy.deepcopy(GOOD)
    mutate(doc)
    with pytest.raises(ValidationError) as e:
        parse_cluster(doc)
    return str(e.value)


def test_good_document_parses():
    cl = parse_cluster(copy.deepcopy(GOOD))
    assert cl.nodes["n1"].memory == 16 << 30
    assert cl.guests["vm-12"].memory == 4 << 30
    assert cl.rules[0].kind == "anti-affinity"


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["guests"]["vm-12"].update(memory=-4), "guests.vm-12.memory: -4 must be >= 0"),
    (lambda d: d["guests"]["vm-12"].pop("cores"), "guests.vm-12.cores: missing required field"),
    (lambda d: d["guests"]["vm-12"].update(node="n9"), "guests.vm-12.node: unknown node 'n9'"),
    (lambda d: d["guests"]["vm-12"].update(cores=0), "guests.vm-12.cores: 0 must be >= 1"),
    (lambda d: d["guests"]["vm-12"].update(cores=1.5), "guests.vm-12.cores: 1.5 is not an integer"),
    (lambda d: d["guests"]["vm-12"].update(memory="4 parsecs"),
     "guests.vm-12.memory: '4 parsecs' is not a size (bytes, or e.g. '8GiB', '512MiB')"),
    (lambda d: d["guests"]["vm-12"].update(group="nope"), "guests.vm-12.group: unknown group 'nope'"),
    (lambda d: d["guests"]["vm-12"].update(usage={"cpu": {"p95": -1}}), "guests.vm-12.usage.cpu.p95: -1 must be >= 0"),
    (lambda d: d["guests"]["vm-12"].update(usage={"cpu": {"p42x": 1}}), "guests.vm-12.usage.cpu.p42x: unknown field"),
    (lambda d: d["guests"]["vm-12"].update(colour="red"), "guests.vm-12.colour: unknown field"),
    (lambda d: d["guests"]["vm-12"].update(priority="high"), "guests.vm-12.priority: 'high' is not a number"),
    (lambda d: d["guests"]["vm-12"].update(priority=1.5), "guests.vm-12.priority: 1.5 is not an integer"),
    (lambda d: d["nodes"]["n1"].update(memory=0), "nodes.n1.memory: 0 must be > 0"),
    (lambda d: d["nodes"]["n1"].update(online="yes"), "nodes.n1.online: 'yes' is not true or false"),
    (lambda d: d["nodes"]["n1"].update(storages="ceph"), "nodes.n1.storages: expected a list of names"),
    (lambda d: d["nodes"].clear(), "nodes: at least one node is required"),
    (lambda d: d["groups"]["g"].update(nodes={"n7": 1}), "groups.g.nodes.n7: unknown node 'n7'"),
    (lambda d: d["rules"][0].update(type="love"), "rules[0].type: 'love' is not one of affinity, anti-affinity"),
    (lambda d: d["rules"][0].update(guests=["vm-12", "ghost"]), "rules[0].guests[1]: unknown guest 'ghost'"),
    (lambda d: d.update(schema="other/9"), "schema: 'other/9' is not supported"),
])
def test_bad_fields_are_named(mutate, message):
    assert _bad(mutate).startswith(message)


def test_sizes_and_stats():
    assert size("512MiB", "x") == 512 << 20
    assert size("1.5G", "x") == 1_500_000_000
    assert size(2048, "x") == 2048
    s = stat({"latest": 1, "mean": 2, "p95": 3}, "x")
    assert (s.latest, s.mean, s.peak) == (1, 2, 3)
    s = stat({"mean": 2}, "x")  # missing keys take the others' values
    assert (s.latest, s.mean, s.peak) == (2, 2, 2)
    s = stat({"latest": 1, "p99": 7, "p95": 3}, "x", peak_key="p99")
    assert s.peak == 7


def test_example_document_is_valid():
    cl = load_cluster(EXAMPLE)
    assert len(cl.nodes) >= 4 and len(cl.guests) >= 8


def test_probe_stats_override_node_and_guest_usage():
    stats = {"schema": "fwsg.probe/1", "node": "n1",
             "metrics": {"cpu": {"unit": "cores", "latest": 3, "mean": 2, "p95": 5},
                         "memory.used": {"unit": "bytes", "latest": 100, "mean": 90, "p95": 120},
                         "conntrack.count": {"latest": 7, "mean": 7, "p95": 7},
                         "conntrack.max": {"latest": 100, "mean": 100, "p95": 100}},
             "guests": {"vm-12": {"metrics": {"cpu": {"unit": "cores", "latest": 0.5, "mean": 0.4, "p95": 0.9}}}}}
    doc = apply_probe_stats(copy.deepcopy(GOOD), stats, where="n1.json")
    cl = parse_cluster(doc)
    assert cl.nodes["n1"].cpu.peak == 5 and cl.nodes["n1"].mem.mean == 90
    assert (cl.nodes["n1"].conntrack_count, cl.nodes["n1"].conntrack_max) == (7, 100)
    assert cl.guests["vm-12"].cpu.peak == 0.9
    assert "usage" not in GOOD["nodes"]["n1"]  # input not modified
    with pytest.raises(ValidationError, match=r"^n9.json.node: unknown node 'n9'"):
        apply_probe_stats(GOOD, {**stats, "node": "n9"}, where="n9.json")
    with pytest.raises(ValidationError, match="not a probe stats document"):
        apply_probe_stats(GOOD, json.loads('{"node": "n1"}'))
