"""Fixtures for the netns tests: real kernel, real packets, root only.

- ``require_root``: skips the test unless this process can build labs (root, ``ip netns``).
- ``FWSG_REQUIRE_NETNS=1`` (set by scripts/test, hence CI): a netns test that skips is reported
  as a failure instead, so CI cannot go green without the kernel. The one exception: a test
  marked ``kernel_feature(NAME)`` may skip when this kernel lacks that optional feature (SCTP).
- ``lab_factory``: ``lab_factory(**Lab kwargs) -> Lab`` (not yet up) with a name unique to the
  test; every lab it made is torn down after the test, whatever happened.
- ``add_std_nodes``: declares the standard nodes on a lab (see ``STD_NODES``).
- ``lab``: a lab already up with the standard nodes vm1, vm2 (VMs) and out (outside).
- ``bare_namespaces``: two empty network namespaces (names), deleted after the test.
"""

import itertools
import os
import re
import subprocess

import pytest

from fwsg.lab.demo import NODES
from fwsg.lab import Lab, netns_available

_seq = itertools.count()

# Standard nodes (documentation ranges only): the demo's vm1, vm2 and out.
STD_NODES = {k: NODES[k] for k in ("vm1", "vm2", "out")}


REQUIRE_NETNS = os.environ.get("FWSG_REQUIRE_NETNS") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With FWSG_REQUIRE_NETNS=1, a skipped netns test is a failure (its skip reason shown)."""
    outcome = yield
    report = outcome.get_result()
    if (REQUIRE_NETNS and report.skipped and not hasattr(report, "wasxfail")
            and item.get_closest_marker("kernel_feature") is None):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (f"FWSG_REQUIRE_NETNS=1: netns test {item.nodeid} was skipped "
                           f"({reason}); the kernel tests must run here")


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


@pytest.fixture
def bare_namespaces(require_root):
    names = [f"fwsg-bare-{os.getpid()}-{next(_seq)}" for _ in range(2)]
    made = []
    try:
        for n in names:
            subprocess.run(["ip", "netns", "add", n], check=True)
            made.append(n)
        yield names
    finally:
        for n in made:
            subprocess.run(["ip", "netns", "del", n])


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
