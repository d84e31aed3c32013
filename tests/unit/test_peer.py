"""The Neutron peer of ``scripts/bench --peer neutron`` (fwsg.lab.peer): when Neutron cannot be
installed, the bench ends before measuring anything, with one line naming the step, exit 1,
and leaves no half-made virtualenv behind. No network: pip is told to use no index."""

import os

import pytest

from fwsg.lab import bench, peer


def test_an_install_that_cannot_happen_is_one_line(tmp_path, monkeypatch, capsys):
    if os.geteuid() != 0:
        pytest.skip("scripts/bench runs as root")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    venv = tmp_path / "peer-venv"
    monkeypatch.setattr(peer, "DEFAULT_VENV", venv)
    rc = bench.main(["--quick", "--peer", "neutron"])
    captured = capsys.readouterr()
    assert rc == 1
    assert captured.out == ""   # nothing measured, no table
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith(f"scripts/bench: --peer neutron: pip install {peer.NEUTRON} in "
                           f"{venv} failed: "), last
    assert not venv.exists()
