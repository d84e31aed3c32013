"""fwsg demo --cluster: etcd + two hypervisors with an agent each; every flow as the model says
across hosts, a member put reaches the other host, and everything started is removed."""

import io
import os
import subprocess

import pytest

from fwsg.lab import netns_available


def test_cluster_demo_runs_and_cleans_up():
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"netns tests: {why}")
    from fwsg.lab import cluster_demo as demo

    name = f"cd{os.getpid() % 10000}"
    out, log = io.StringIO(), io.StringIO()
    assert demo.run(name, out=out, log=log), out.getvalue() + log.getvalue()
    text = out.getvalue()
    assert "as the model says" in text and "!" not in text.split("flows probed")[0][-2000:]
    assert "put -> packets passing on the other host:" in text and "ms" in text
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"fwsg-{name}a-" not in left and f"fwsg-{name}b-" not in left
    assert "agents, etcd and labs removed" in log.getvalue()
