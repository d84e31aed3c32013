"""Processes killed (SIGKILL, through FWSG_TEST_HOOKS) half-way, with real packets: between
the commit and the conntrack sweep (the next fwsg process's first apply cuts the flows that
lost their rule), and inside a cold start committed in steps (never more open meanwhile; the
next apply completes it)."""

import json
import os
import subprocess
import sys

import pytest

from fwsg.naming import short_hash
from tests.netns.fwlab import ALL_EGRESS, flush_conntrack, model, rule, running_lab

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FWSG = os.path.join(os.path.dirname(sys.executable), "fwsg")
if not os.path.exists(FWSG):
    FWSG = os.path.join(ROOT, ".venv", "bin", "fwsg")


@pytest.fixture(scope="module")
def fwlab():
    with running_lab("crash") as lab_fw:
        yield lab_fw


def fwsg(*args, env=None):
    p = subprocess.run([FWSG, *args], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, **(env or {})))
    return p.returncode, p.stdout, p.stderr


def test_killed_between_commit_and_sweep_next_apply_cuts_the_flows(fwlab, tmp_path):
    lab, fw = fwlab
    flush_conntrack(lab)
    groups = {"ssh": [rule("ingress", protocol="tcp", ports=2222)] + ALL_EGRESS,
              "other": [rule("ingress", protocol="tcp", ports=2223)] + ALL_EGRESS,
              "open": ALL_EGRESS}
    ports = {"vm1": ["open"], "vm2": ["ssh", "other"]}
    a = tmp_path / "a.json"
    a.write_text(json.dumps(model(lab, groups, ports)))
    groups["ssh"] = ALL_EGRESS          # model B: tcp 2222 no longer allowed
    b = tmp_path / "b.json"
    b.write_text(json.dumps(model(lab, groups, ports)))
    assert fwsg("apply", str(a), "--netns", lab.host_ns)[0] == 0
    conn = lab.open_tcp("vm1", "vm2", port=2222)
    keep = lab.open_tcp("vm1", "vm2", port=2223)
    try:
        assert conn.alive() and keep.alive()
        rc, _, _ = fwsg("apply", str(b), "--netns", lab.host_ns,
                        env={"FWSG_TEST_HOOKS": "after-commit=kill"})
        assert rc == -9                                  # died after the commit ...
        assert conn.alive()                              # ... before cutting the flow
        assert not lab.tcp_connect("vm1", "vm2", port=2222)  # the new rules are in force
        rc, out, err = fwsg("apply", str(b), "--netns", lab.host_ns)
        assert rc == 0, err
        assert "no change" in out                        # the kernel already matched ...
        assert not conn.alive()                          # ... yet the flow is cut
        assert keep.alive()                              # and the allowed one survives
    finally:
        conn.close()
        keep.close()


def test_killed_inside_a_commit_in_steps_never_more_open_and_completed_later(fwlab, tmp_path):
    """A cold start big enough to be committed in steps (structure, then member batches),
    killed between two steps: the kernel holds the structure with the groups' members only
    partly loaded (a remote group matching less, never more); the next apply completes it."""
    lab, fw = fwlab
    groups = {"db": [rule("ingress", protocol="tcp", ports=5432, remote_group_id="web")]
              + ALL_EGRESS, "web": ALL_EGRESS}
    ports = {"vm1": ["web"], "vm2": ["db"]}
    extra = [f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}" for i in range(1, 45001)]
    doc = model(lab, groups, ports, members={"web": extra})
    m = tmp_path / "big.json"
    m.write_text(json.dumps(doc))
    subprocess.run(["ip", "netns", "exec", lab.host_ns, "nft", "flush", "ruleset"], check=True)
    rc, _, _ = fwsg("apply", str(m), "--netns", lab.host_ns,
                    env={"FWSG_TEST_HOOKS": "between-steps=kill"})
    assert rc == -9
    listing = subprocess.run(["ip", "netns", "exec", lab.host_ns, "nft", "list", "ruleset"],
                             capture_output=True, text=True, check=True).stdout
    assert "chain ingress-fwd" in listing                  # the structure is in force ...
    assert not lab.tcp_connect("out", "vm2", port=5432)     # ... and nothing more open
    web = "g" + short_hash("web") + "-m4"
    members = subprocess.run(["ip", "netns", "exec", lab.host_ns, "nft", "list", "set", "inet",
                              "fwsg", web], capture_output=True, text=True, check=True).stdout
    assert "192.0.2.11" not in members                      # members not loaded: matches less
    assert not lab.tcp_connect("vm1", "vm2", port=5432)
    rc, out, err = fwsg("apply", str(m), "--netns", lab.host_ns)
    assert rc == 0 and "applied" in out, err
    assert lab.tcp_connect("vm1", "vm2", port=5432)
    assert not lab.tcp_connect("out", "vm2", port=5432)
    rc, out, _ = fwsg("apply", str(m), "--netns", lab.host_ns, "--dry-run")
    assert out == "# nothing to change\n"
