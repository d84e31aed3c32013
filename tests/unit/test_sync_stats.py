"""Node stats under a lease and placement from the store (real etcd; real lease expiry)."""

import json
import os
import subprocess
import sys

from fwsg.sync.layout import Layout
from fwsg.sync.stats import StatsPublisher, cluster_from_store
from fwsg.sync.store import EtcdStore
from tests.sync_helpers import etcd_server, prefix, wait_for  # noqa: F401

CLUSTER = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "cluster.json")


def probe_doc(node):
    return lambda: {"schema": "fwsg.probe/1", "node": node, "metrics": {
        "cpu": {"unit": "cores", "latest": 1.0, "mean": 1.0, "p95": 1.5},
        "conntrack.count": {"latest": 10}, "conntrack.max": {"latest": 262144}}}


def test_stats_expire_with_the_node_and_place_plans_for_it(etcd_server, prefix):
    st, L = EtcdStore([etcd_server.endpoint]), Layout(prefix)
    url = f"{etcd_server.url}{prefix}"
    p = subprocess.run([sys.executable, "-m", "fwsg", "publish", "--cluster", CLUSTER, "--to",
                        url], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    with open(CLUSTER) as f:
        nodes = list(json.load(f)["nodes"])
    pubs = {n: StatsPublisher(st, L, n, period=0.5, ttl=2, document=probe_doc(n)).start()
            for n in nodes}
    try:
        wait_for(lambda: all(p.published for p in pubs.values()), what="stats published")
        doc, expired = cluster_from_store(st, L)
        assert expired == []
        assert doc["nodes"]["pve1"]["conntrack"] == {"count": 10, "max": 262144}
        pubs["pve2"].stop()  # the node dies: no keepalive any more
        wait_for(lambda: cluster_from_store(st, L)[1] == ["pve2"], timeout=10,
                 what="pve2's lease to expire")
        p = subprocess.run([sys.executable, "-m", "fwsg", "place", "--source", url,
                            "--failed", "auto", "--json"], capture_output=True, text=True,
                           timeout=30)
        assert p.returncode in (0, 3), p.stderr
        plan = json.loads(p.stdout)
        assert plan["failed"] == ["pve2"]
        assert plan["placements"] and all(x["from"] == "pve2" for x in plan["placements"])
    finally:
        for p in pubs.values():
            p.stop()
