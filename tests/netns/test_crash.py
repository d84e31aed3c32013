"""A process killed (SIGKILL) between its commit and its conntrack sweep: the connections that
lost their rule are cut by the next fwsg process's first apply, with real packets."""

import json
import os
import subprocess
import sys

import pytest

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
