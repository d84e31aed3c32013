"""The fake kernel is only worth its speed if it behaves like the real one: the same calls
against a real namespace and against the fake leave the same state read back (sets, elements,
chains by digest and hook), and the same refused transactions are refused by both with the
same errno, leaving both unchanged."""

import errno
import json
import pathlib
import subprocess

import pytest

from fwsg.errors import KernelError
from fwsg.firewall import Firewall
from fwsg.lab import netns_available
from fwsg.ops import AddElements, DeleteChain, DeleteElements, DeleteSet, DeleteTable
from fwsg.plan import Plan

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def pair():
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"netns tests: {why}")
    name = "fwsg-fakecmp-t"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    subprocess.run(["ip", "netns", "add", name], check=True)
    real = Firewall(netns=name)
    try:
        yield real, Firewall(backend="fake")
    finally:
        real.backend.close()
        subprocess.run(["ip", "netns", "del", name], check=False)


def view(fw):
    rs = fw.backend.read()
    return (rs.tables, rs.sets, rs.elements, {k: (c.digest, c.hook) for k, c in rs.chains.items()})


def test_same_calls_same_state(pair):
    real, fake = pair
    model = json.loads((FIXTURES / "readback-model.json").read_text())
    steps = [
        lambda fw: fw.apply(model),
        lambda fw: fw.add_security_group_members("sg-web", ["192.0.2.44", "203.0.113.0/26"]),
        lambda fw: fw.remove_security_group_members("sg-web", ["192.0.2.11"]),
        lambda fw: fw.update_security_group_rules("sg-admin", [
            {"direction": "ingress", "ethertype": "IPv4", "protocol": "udp",
             "port_range_min": 53}]),
        lambda fw: fw.remove_port_filter("port-client"),
        lambda fw: fw.prepare_port_filter(dict(model["devices"]["port-client"], id="port-c2")),
        lambda fw: fw.apply(model),
    ]
    for i, step in enumerate(steps):
        r_real, r_fake = step(real), step(fake)
        assert r_real.summary == r_fake.summary, i
        assert view(real) == view(fake), i
    assert real.flush() == fake.flush() == ["bridge", "inet"]
    assert view(real) == view(fake)


def test_same_refusals_same_errno(pair):
    real, fake = pair
    model = json.loads((FIXTURES / "readback-model.json").read_text())
    real.apply(model)
    fake.apply(model)
    sets = fake.backend.read().sets
    group_set = next(sd for k, sd in sets.items() if k[1].endswith("-m4"))
    egress = sets[("inet", "egress")]
    bad = [
        [DeleteElements(group_set, ("203.0.113.250",))],                       # not there
        [AddElements(egress, (("0x00ff0000", "jump p-nowhere"),))],            # no such chain
        [DeleteSet(group_set)],                                                # a rule uses it
        [DeleteChain("inet", "fixed-e")],                                      # jumped to
        [AddElements(group_set, ("203.0.113.251",)), DeleteTable("bridge"),
         DeleteTable("bridge")],                                               # half-way
    ]
    for ops in bad:
        before_real, before_fake = view(real), view(fake)
        codes = []
        for fw in (real, fake):
            plan = Plan(ops)
            with pytest.raises(KernelError) as e:
                fw.backend.commit(plan)
            codes.append(e.value.errno)
        assert codes[0] == codes[1] and codes[0] in (errno.ENOENT, errno.EBUSY), (ops, codes)
        assert view(real) == before_real and view(fake) == before_fake
    assert view(real) == view(fake)
    # and what the kernel accepts, the fake accepts: a chain with rules nothing jumps to
    for fw in (real, fake):
        assert fw.backend.commit(Plan([DeleteChain("inet", "egress-pre")]))
    assert view(real) == view(fake)
