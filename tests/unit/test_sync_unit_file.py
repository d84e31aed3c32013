"""The systemd unit in contrib/ is valid as shipped."""

import os
import shutil
import subprocess

import pytest

UNIT = os.path.join(os.path.dirname(__file__), "..", "..", "contrib", "systemd",
                    "fwsg-agent.service")


def test_unit_has_restart_reload_and_keeps_netlink():
    with open(UNIT) as f:
        text = f.read()
    for needed in ("Restart=always", "ExecReload=/bin/kill -HUP $MAINPID", "KillSignal=SIGTERM",
                   "CAP_NET_ADMIN", "AF_NETLINK", "RuntimeDirectory=fwsg",
                   "ProtectKernelTunables=no", "fwsg agent --source"):
        assert needed in text, needed


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_unit_verifies(tmp_path):
    dst = tmp_path / "fwsg-agent.service"
    shutil.copy(UNIT, dst)
    p = subprocess.run(["systemd-analyze", "verify", str(dst)], capture_output=True, text=True,
                       timeout=60)
    # verify reports a missing ExecStart binary on machines where fwsg is not installed yet
    problems = [ln for ln in p.stderr.splitlines() if ln.strip()
                and "/usr/local/bin/fwsg" not in ln and "Command " not in ln]
    assert not problems, p.stderr
