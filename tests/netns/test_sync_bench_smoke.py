"""The sync benchmark runs end to end in its smoke size and loses nothing (no time asserted)."""

import json
import os
import subprocess
import sys

import pytest

from fwsg.lab import netns_available


def test_sync_bench_smoke(tmp_path):
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"netns tests: {why}")
    out = tmp_path / "bench.json"
    p = subprocess.Popen([sys.executable, "-m", "fwsg.lab.sync_bench", "--quick", "--rates",
                          "50", "300", "--writers", "2", "--writer-threads", "2",
                          "--json-out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, stderr[-2000:]
    assert "put -> commit at 50/s" in stdout and "storm: agent CPU" in stdout
    data = json.loads(out.read_text())
    assert "etcd data: tmpfs" in stdout  # the benchmark's etcd is not bound by the disk
    assert data["etcd_data_dir"].startswith("/dev/shm/")
    assert not os.path.exists(data["etcd_data_dir"])  # removed afterwards
    assert [r["rate"] for r in data["rates"]] == [50, 300]
    assert all(r["lost_updates"] == 0 and r["uncommitted"] == 0 for r in data["rates"])
    assert [r["writers"] for r in data["rates"]] == [1, 4]  # 300/s: 2 processes x 2 threads
    assert data["storm"]["lost_updates"] == 0
    assert data["wire"]["expanded_bytes"] > data["wire"]["grouped_bytes"]
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"fwsg-syncb-{p.pid}" not in left  # its namespace is gone
