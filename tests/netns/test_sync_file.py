"""The agent with the embedded default source, a file: applied at start, re-applied when the
file changes, a broken file leaves the last good rules (real kernel, real packets); JSON logs."""

import copy
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from fwsg.firewall import Firewall
from tests.netns.fwlab import running_lab

DEMO = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "demo-model.json")


def wait(cond, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting: {what}")
        time.sleep(0.05)


def test_file_source_follows_the_file_and_fails_static(tmp_path):
    with open(DEMO) as f:
        doc = json.load(f)
    model = tmp_path / "model.json"
    model.write_text(json.dumps(doc))
    status = tmp_path / "status.json"
    log = tmp_path / "agent.log"
    with running_lab("syf") as (lab, _):
        def differs(m):  # a fresh Firewall reads the kernel each time
            return bool(Firewall(netns=lab.host_ns).plan(m))
        with open(log, "wb") as out:
            agent = subprocess.Popen(
                [sys.executable, "-m", "fwsg", "agent", "--source", f"file:{model}", "--host",
                 "hv1", "--netns", lab.host_ns, "--status-file", str(status), "--log-json",
                 "--reconcile-interval", "1"],
                stdout=out, stderr=subprocess.STDOUT)
        try:
            wait(lambda: not differs(doc), "the file applied")
            assert lab.tcp_connect("vm3", "vm1", port=80)       # client -> web
            assert not lab.tcp_connect("vm3", "vm2", port=80)   # db has no port 80
            # someone flushes a chain of ours: the reconcile timer repairs it
            from fwsg.commands.show import gather

            g = next(x["name"] for x in gather(lab.host_ns)["groups"] if x["id"] == "sg-web")
            subprocess.run(["ip", "netns", "exec", lab.host_ns, "nft", "flush", "chain", "inet",
                            "fwsg", f"{g}-i"], check=True, timeout=10)
            # (the timer runs every second: the repair is seen in the log, not raced here)
            wait(lambda: "reconcile repaired drift" in log.read_text(), "the repair logged")
            wait(lambda: not differs(doc), "drift repaired by the reconcile timer")
            assert lab.tcp_connect("vm3", "vm1", port=80)
            changed = copy.deepcopy(doc)
            changed["security_groups"]["sg-db"].append(
                {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                 "port_range_min": 80, "port_range_max": 80})
            tmp = tmp_path / "model.json.new"
            tmp.write_text(json.dumps(changed))
            os.replace(tmp, model)
            wait(lambda: not differs(changed), "the changed file applied")
            assert lab.tcp_connect("vm3", "vm2", port=80)
            model.write_text("{broken")
            wait(lambda: "invalid JSON" in log.read_text(), "the broken file reported")
            assert not differs(changed)  # the last good rules stay
            assert lab.tcp_connect("vm3", "vm2", port=80) and not lab.tcp_connect(
                "vm3", "vm1", port=22)
            lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
            assert any(x["level"] == "error" and "model.json" in x["msg"] for x in lines)
            os.kill(agent.pid, signal.SIGTERM)
            assert agent.wait(10) == 0
            assert not differs(changed)  # a clean stop leaves the rules in place
        finally:
            if agent.poll() is None:
                os.kill(agent.pid, signal.SIGKILL)
                agent.wait(10)
