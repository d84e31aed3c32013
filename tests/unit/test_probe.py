"""The probe on fake /proc and /sys trees: cpu rates, memory, PSI, conntrack, guests, nft."""

import json
import os

import pytest

from fwsg.cli import main
from fwsg.probe import Probe, Unavailable, Window, percentile, ruleset_size
from fwsg.probe import readers

STAT1 = "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1\ncpu1 1\ncpu2 1\ncpu3 1\n"
STAT2 = "cpu  300 0 300 1400 0 0 0 0 0 0\ncpu0 1\ncpu1 1\ncpu2 1\ncpu3 1\n"
MEMINFO = "MemTotal:       16384 kB\nMemFree:         1024 kB\nMemAvailable:    4096 kB\n"
PSI = "some avg10=1.50 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.25 avg60=0.00 avg300=0.00 total=0\n"


def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


@pytest.fixture()
def fake(tmp_path):
    root = str(tmp_path)
    write(root, "proc/stat", STAT1)
    write(root, "proc/meminfo", MEMINFO)
    write(root, "proc/sys/kernel/hostname", "pve7\n")
    for res in ("cpu", "memory", "io"):
        write(root, f"proc/pressure/{res}", PSI)
    write(root, "proc/sys/net/netfilter/nf_conntrack_count", "1200\n")
    write(root, "proc/sys/net/netfilter/nf_conntrack_max", "262144\n")
    write(root, "sys/fs/cgroup/qemu.slice/101.scope/cpu.stat", "usage_usec 1000000\nuser_usec 1\n")
    write(root, "sys/fs/cgroup/qemu.slice/101.scope/memory.current", "536870912\n")
    write(root, "sys/fs/cgroup/lxc/200/memory.current", "1048576\n")
    return root


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def primed(root, guests=True, **kw):
    clock = Clock()
    probe = Probe(root, clock=clock, wall=lambda: 1.0e9, **kw)

    def sleep(_):  # the second sample: 2 s later, counters advanced
        clock.t += 2.0
        write(root, "proc/stat", STAT2)
        if guests:
            write(root, "sys/fs/cgroup/qemu.slice/101.scope/cpu.stat", "usage_usec 3000000\n")

    probe.prime(0.5, sleep=sleep)
    return probe


def test_percentile_is_numeric_not_textual():
    # as text, sorted(["9", "10", "100"]) == ["10", "100", "9"]: the median would be "100"
    assert percentile(["9", "10", "100"], 50) == 10
    assert percentile([100, 9, 10], 100) == 100
    assert percentile([9, 10, 100], 0) == 9


def test_percentile_linear_interpolation():
    vals = list(range(1, 101))  # h = 99 * .95 = 94.05 -> 95 + .05 * (96 - 95)
    assert percentile(vals, 95) == pytest.approx(95.05)
    assert percentile([5], 95) == 5
    with pytest.raises(ValueError):
        percentile([], 50)


def test_window_drops_old_samples():
    w = Window(seconds=30, interval=10)
    for t, v in [(0, 100), (10, 1), (20, 2), (30, 3), (40, 4)]:
        w.add(t, v)
    assert len(w) == 4  # t=0 is older than 40 - 30
    assert w.summary(95) == {"latest": 4, "mean": 2.5, "p95": pytest.approx(3.85)}


def test_snapshot_from_fake_tree(fake):
    doc = primed(fake, bridges=lambda: ["vmbr0", "vmbr1"], ruleset=lambda: {
        "tables": 2, "chains": 5, "rules": 9, "sets": 3, "elements": 40, "ports": 4}).document()
    m = doc["metrics"]
    assert doc["schema"] == "fwsg.probe/1" and doc["node"] == "pve7"
    assert doc["capacity"] == {"cores": 4, "memory": 16384 * 1024}
    # busy 200 -> 600 of total 1000 -> 2000 jiffies: 400/1000 of 4 cpus
    assert m["cpu"]["latest"] == pytest.approx(1.6)
    assert m["memory.used"]["latest"] == (16384 - 4096) * 1024
    assert m["pressure.cpu.some.avg10"]["latest"] == 1.5
    assert m["pressure.io.full.avg10"]["latest"] == 0.25
    assert m["conntrack.count"]["latest"] == 1200 and m["conntrack.max"]["latest"] == 262144
    assert m["ruleset.ports"]["latest"] == 4 and m["ruleset.elements"]["latest"] == 40
    assert doc["networks"] == ["vmbr0", "vmbr1"]
    # guest 101: 2 s of cpu time in 2 s of wall time = 1 core; 512 MiB
    g = doc["guests"]["101"]["metrics"]
    assert g["cpu"]["latest"] == pytest.approx(1.0) and g["memory"]["latest"] == 536870912
    assert doc["guests"]["200"]["metrics"]["memory"]["latest"] == 1048576
    assert doc["unavailable"] == {}


def test_missing_sources_are_reported_not_fatal(fake):
    import shutil
    shutil.rmtree(os.path.join(fake, "proc/pressure"))
    shutil.rmtree(os.path.join(fake, "proc/sys/net"))
    shutil.rmtree(os.path.join(fake, "sys"))
    doc = primed(fake, guests=False).document()
    un = doc["unavailable"]
    assert un["pressure"].startswith("/proc/pressure/cpu: no such file")
    assert "nf_conntrack_count: no such file" in un["conntrack"]
    assert un["guests"].startswith("no guest cgroup matches")
    assert un["ruleset"] == "not read under a fake root"
    assert "cpu" in doc["metrics"] and "memory.used" in doc["metrics"]


def test_first_sample_alone_has_no_cpu_rate(fake):
    probe = Probe(fake, clock=Clock())
    probe.sample()
    doc = probe.document()
    assert "cpu" not in doc["metrics"]
    assert doc["unavailable"]["cpu"] == "needs two samples (rate)"


def test_cgroup_patterns_are_configurable(fake):
    write(fake, "srv/guests/vm9/memory.current", "42\n")
    found = readers.guest_cgroups(fake, ["srv/guests/*"])
    assert list(found) == ["vm9"] and found["vm9"][2] == 42


def test_ruleset_size_counts_only_fwsg_tables():
    inet = json.dumps({"nftables": [
        {"metainfo": {}}, {"table": {"family": "inet", "name": "fwsg"}},
        {"chain": {"name": "fwd"}}, {"chain": {"name": "p-1"}}, {"rule": {}}, {"rule": {}},
        {"set": {"name": "sg1", "type": "ipv4_addr", "elem": ["192.0.2.1", "192.0.2.2"]}},
        {"map": {"name": "out", "type": "ifname", "map": "verdict", "elem": [["tap1", {}], ["tap2", {}], ["tap3", {}]]}}]})
    asked = []

    def lister(family):
        asked.append(family)
        return inet if family == "inet" else None  # no bridge table

    assert ruleset_size(lister) == {"tables": 1, "chains": 2, "rules": 2, "sets": 2, "elements": 5, "ports": 3}
    assert asked == ["inet", "bridge"]
    assert ruleset_size(lambda family: None)["elements"] == 0


def test_nft_absent_is_unavailable(monkeypatch):
    monkeypatch.setattr(readers.shutil, "which", lambda *a, **k: None)
    with pytest.raises(Unavailable, match="nft not installed"):
        ruleset_size()


def test_cli_json_snapshot_and_output_file(fake, tmp_path, capsys):
    out = tmp_path / "stats.json"
    rc = main(["probe", "--root", fake, "--prime", "0", "--json", "--node", "n1", "--output", str(out)])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["node"] == "n1" and doc["window"]["samples"] == 2
    assert json.loads(out.read_text())["node"] == "n1"


def test_cli_watch_prints_each_sample(fake, capsys):
    rc = main(["probe", "--root", fake, "--prime", "0", "--watch", "--interval", "0.01", "--count", "3"])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0 and len(lines) == 3 and all("mem 12 MiB/16 MiB" in line for line in lines)


def test_cli_text_and_bad_options(fake, capsys):
    assert main(["probe", "--root", fake, "--prime", "0"]) == 0
    out = capsys.readouterr().out
    assert "memory.used" in out and "unavailable: ruleset: not read under a fake root" in out
    assert main(["probe", "--root", fake, "--interval", "0"]) == 2
    assert capsys.readouterr().err == "fwsg: --interval: 0 must be > 0\n"
    assert main(["probe", "--root", fake, "--window", "5"]) == 2
    assert "--window: 5 must be >= --interval" in capsys.readouterr().err
