"""The wheel ``pip wheel .`` builds holds what an installed fwsg needs outside a clone: the
demo's example model (package data) next to the code that loads it.

The wheel is built from a copy of the tree (without the extension, which changes nothing about
the files packaged), unpacked, and the demo's default model is loaded from the unpacked
package by a separate interpreter that cannot see the source tree.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
_SKIP = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                               ".pytest_cache", ".hypothesis", ".tox", "*.so", "*.c")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    src = tmp_path_factory.mktemp("src") / "fwsg"
    shutil.copytree(ROOT, src, ignore=_SKIP, symlinks=True)
    out = tmp_path_factory.mktemp("wheel")
    env = dict(os.environ, FWSG_NO_EXTENSIONS="1")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "--disable-pip-version-check", "-q", "-w", str(out), str(src)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    wheels = list(out.glob("fwsg-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contains_the_demo_model_and_the_lab(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "fwsg/data/demo-model.json" in names
    for module in ("fwsg/lab/__init__.py", "fwsg/lab/demo.py", "fwsg/commands/demo.py",
                   "fwsg/cli.py", "fwsg/backends/nft/backend.py", "fwsg/backends/base.py"):
        assert module in names, module
    assert not any(n.startswith(("tests/", "examples/")) for n in names)


def test_installed_demo_finds_its_default_model(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import json, fwsg.lab.demo as d, fwsg.model as m; "
            "assert str(d.DEFAULT_MODEL).startswith(%r), d.DEFAULT_MODEL; "
            "print(len(m.Model.from_wire(json.loads(d.DEFAULT_MODEL.read_text())).ports))"
            % str(site))
    env = dict(os.environ, PYTHONPATH=str(site), FWSG_NO_EXTENSIONS="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    shipped = json.loads((ROOT / "fwsg" / "data" / "demo-model.json").read_text())
    assert int(r.stdout) == len(shipped["devices"]) > 0
