"""The hot-path benchmark runs (a quick smoke run, root): exit 0, the JSON has every
measurement, no namespace is left behind and the caller's thread is back in its own
namespace. No assertion on time: performance is never a timed assertion here."""

import json
import os

import pytest

from fwsg import statefile
from fwsg.lab import bench
from fwsg.lab import netns_available

KEYS = ("full_apply", "noop_same", "member_add_big", "member_full_list", "rule_add", "rule_del",
        "port_add", "port_del", "sizes", "batch_bytes", "twin_diff")
ROW_KEYS = {"what", "fwsg_ms", "baseline", "baseline_ms", "ratio", "target", "met", "note"}


def _bench_namespaces():
    try:
        return {n for n in os.listdir("/run/netns") if n.startswith("fwsg-bench-")}
    except FileNotFoundError:
        return set()


def test_bench_quick(tmp_path, capsys, monkeypatch):
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"netns tests: {why}")
    # the host's names record of its root namespace (here a stand-in) is never read or written
    host = tmp_path / "host-state"
    host.mkdir()
    record = host / "_default.json"
    record.write_text('{"ports": {"host-port": "t1"}, "groups": {}}')
    monkeypatch.setattr(statefile, "STATE_DIR", str(host))
    before_ns = _bench_namespaces()
    own = os.stat("/proc/thread-self/ns/net")
    out = tmp_path / "bench.json"
    rc = bench.main(["--quick", "--json-out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    now = os.stat("/proc/thread-self/ns/net")
    assert (now.st_dev, now.st_ino) == (own.st_dev, own.st_ino), \
        "bench.main() left this thread in another network namespace"
    assert f"fwsg-bench-{os.getpid()}" not in _bench_namespaces()
    assert _bench_namespaces() <= before_ns
    assert sorted(os.listdir(host)) == ["_default.json"]
    assert record.read_text() == '{"ports": {"host-port": "t1"}, "groups": {}}'
    assert statefile.STATE_DIR == str(host)

    data = json.loads(out.read_text())
    for key in KEYS:
        assert key in data, key
    for key in ("full_apply", "noop_same", "member_add_big", "member_full_list", "rule_add",
                "port_add", "port_del"):
        row = data[key]
        assert ROW_KEYS <= set(row), (key, row)
        assert isinstance(row["fwsg_ms"], (int, float)) and row["fwsg_ms"] >= 0, (key, row)
        assert row["what"], key
    sizes = data["sizes"]
    assert {"kernel_rules", "kernel_elements", "naive_rules", "chains"} <= set(sizes)
    assert sizes["kernel_rules"] > 0 and sizes["chains"] > 0 and sizes["kernel_elements"] > 0
    assert sizes["naive_rules"] > sizes["kernel_rules"]
    bb = data["batch_bytes"]
    assert {"full_apply", "member_delta", "rule_add", "port_add", "port_del"} <= set(bb)
    assert all(isinstance(v, int) and v > 0 for v in bb.values()), bb
    # a member change is a small fraction of the full batch (what members-in-sets is for)
    assert bb["member_delta"] < bb["full_apply"]
    assert data["params"]["quick"] is True
    assert data["scenario"]["ports"] == data["params"]["ports"]
    # the printed table carries the same rows
    assert "fwsg benchmark" in printed
    assert data["full_apply"]["what"] in printed


IPT_KEYS = ("cold", "noop", "member_add", "member_del", "full_list", "rule_add", "port_add",
            "port_del", "port_add_new", "port_del_new", "port_back")


def test_bench_iptables_quick(tmp_path, capsys):
    """``--backend iptables``: every row for both variants, the no-op makes no kernel call,
    Neutron's figures printed as the peer."""
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"netns tests: {why}")
    out = tmp_path / "bench.json"
    rc = bench.main(["--quick", "--backend", "iptables", "--json-out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    data = json.loads(out.read_text())
    for variant in ("legacy", "nft"):
        for key in IPT_KEYS:
            row = data[f"{variant}_{key}"]
            assert ROW_KEYS <= set(row) and row["fwsg_ms"] >= 0, (variant, key)
        assert data[f"{variant}_noop"]["met"] is True, data[f"{variant}_noop"]
        assert data[f"{variant}_sizes"]["rules"] > 0
    for key in ("port_iptc_floor", "port_same_rst", "port_gone_rst", "port_new_rst",
                "port_gone_new_rst", "port_same_seq", "port_gone_seq",
                "port_same_ebp"):   # libiptc against the restore tools, legacy only
        assert data[f"legacy_{key}"]["fwsg_ms"] > 0, key
    assert "via libiptc+ebtables-netlink;" in data["legacy_port_add"]["note"]
    assert "via libiptc+ebtables-restore;" in data["legacy_port_same_ebp"]["note"]
    assert "via restore+ebtables-restore;" in data["legacy_port_same_rst"]["note"]
    assert "via restore+ebtables-restore;" in data["nft_port_add"]["note"]
    # a removal's deletions: one nf_tables batch, against the restore tools in the same run
    assert "via netlink+ebtables-netlink;" in data["nft_port_del"]["note"]
    assert "via libiptc+ebtables-netlink;" in data["legacy_port_del"]["note"]
    assert "via restore+ebtables-restore;" in data["nft_port_gone_tools"]["note"]
    assert "via libiptc+ebtables-restore;" in data["legacy_port_gone_tools"]["note"]
    # a removal and an addition back to back: the pair's path, both kinds in one note
    assert "netlink+ebtables-netlink" in data["nft_port_back"]["note"]
    assert "restore+ebtables-restore" in data["nft_port_back"]["note"]
    assert "peer: Neutron iptables driver, one member added" in printed
    assert f"fwsg-bench-{os.getpid()}" not in _bench_namespaces()


def test_bench_packet_quick(tmp_path, capsys):
    """``--packet`` (tiny counts, fwsg nft only): every row, and the sanity counts show the
    firewall really judged the packets: the admitted flow arrives everywhere, the denied one
    only without a firewall, and fwsg drops the admitted flow once the sender is no longer a
    member of the big group. No namespace is left behind."""
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"netns tests: {why}")
    out = tmp_path / "bench.json"
    rc = bench.main(["--quick", "--packet", "--packet-backends", "nft", "--json-out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    data = json.loads(out.read_text())
    sanity = data["packet"]["sanity"]
    assert set(sanity) == {"no firewall", "fwsg nft 1000", "fwsg nft 2000"}, sanity
    none = sanity["no firewall"]
    assert none["ok"] and none["admitted"] == none["denied"] == none["sent"] > 0, none
    for label in ("fwsg nft 1000", "fwsg nft 2000"):
        s = sanity[label]
        assert s["ok"], (label, s)
        assert s["admitted"] == s["sent"] and s["denied"] == 0 and s["not_member"] == 0, s
    for kind in ("established", "unreplied", "new_flows"):
        for key in (f"packet_none_{kind}", f"packet_nft_1000_{kind}", f"packet_nft_2000_{kind}"):
            row = data[key]
            assert ROW_KEYS <= set(row), (key, row)
            assert row["fwsg_ms"] == row["fwsg_ms"], key   # a number, not NaN
            assert "SANITY FAILED" not in row["note"], (key, row)
    assert data["packet_none_established"]["fwsg_ms"] > 0
    assert "fwsg packet-path benchmark" in printed
    assert data["packet_nft_2000_unreplied"]["what"] in printed
    prefix = f"fwsg-pk{os.getpid() % 100000}-"
    try:
        left = [n for n in os.listdir("/run/netns") if n.startswith(prefix)]
    except FileNotFoundError:
        left = []
    assert not left, left


def test_fwsg_cold_start_child(tmp_path):
    """The fresh-process cold start the Neutron rows compare (fwsg.lab.peer.fwsg_cold): it
    applies the scenario in a namespace of its own (removed afterwards), and no fwsg module is
    first imported inside the timed call (COLD_IMPORTS names every module a first apply
    loads, as Neutron's are loaded before its clock starts)."""
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"netns tests: {why}")
    from fwsg.lab.peer import fwsg_cold, scenario_file

    path = scenario_file(bench.scenario(20, 5, 5, 2000))
    try:
        runs = fwsg_cold(path, 1, lambda msg: None, settle=0)
    finally:
        os.unlink(path)
    (run,) = runs
    assert run["ms"] > 0 and run["transport"] == "netlink", run
    assert run["timings_ms"]["commit"] > 0, run
    assert run["imported_during"] == [], run
    left = [n for n in os.listdir("/run/netns") if n.startswith(f"fwsg-peer-cold-{os.getpid()}-")]
    assert not left, left
