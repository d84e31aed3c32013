"""Fixtures for the netns tests: real kernel, real packets, root only.

- ``require_root``: skips the test unless this process can build labs (root, ``ip netns``).
- ``lab_factory``: ``lab_factory(**Lab kwargs) -> Lab`` (not yet up) with a name unique to the
  test; every lab it made is torn down after the test, whatever happened.
- ``add_std_nodes``: declares the standard nodes on a lab (see ``STD_NODES``).
- ``lab``: a lab already up with the standard nodes vm1, vm2 (VMs) and out (outside).
"""

import itertools
import os
import re

import pytest

from fwsg.demo import NODES
from fwsg.lab import Lab, netns_available

_seq = itertools.count()

# Standard nodes (documentation ranges only): the demo's vm1, vm2 and out.
STD_NODES = {k: NODES[k] for k in ("vm1", "vm2", "out")}


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.netns)


@pytest.fixture
def require_root():
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"netns tests: {why}")


def _unique_name(request) -> str:
    base = re.sub(r"[^a-z0-9]+", "", request.node.name.lower())[:8] or "t"
    return f"{base}{os.getpid() % 10000}-{next(_seq)}"[:20].strip("-")


@pytest.fixture
def lab_factory(require_root, request):
    labs = []

    def make(name=None, **kwargs) -> Lab:
        lab = Lab(name or _unique_name(request), **kwargs)
        labs.append(lab)
        return lab

    yield make
    errors = []
    for lab in labs:
        try:
            lab.down()
        except Exception as e:  # keep tearing down the others
            errors.append(f"{lab.name}: {e}")
    assert not errors, f"lab teardown failed: {errors}"


def _add_std_nodes(lab: Lab, names=("vm1", "vm2", "out")) -> Lab:
    """Declare the standard nodes (vm1, vm2: VMs; out: the outside peer) on ``lab``."""
    for n in names:
        if n == "out":
            lab.add_outside(n, **STD_NODES[n])
        else:
            lab.add_vm(n, **STD_NODES[n])
    return lab


@pytest.fixture
def add_std_nodes():
    """``add_std_nodes(lab, names=("vm1", "vm2", "out")) -> lab``: declare standard nodes."""
    return _add_std_nodes


@pytest.fixture
def lab(lab_factory):
    lab = _add_std_nodes(lab_factory())
    lab.up()
    return lab
