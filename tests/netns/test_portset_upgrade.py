"""A host still holding the layout before the port sets (every group rule a rule of its own,
no ``<group>-pi``/``-pe`` sets) is upgraded by one apply of a new process, in one transaction,
with live flows kept and the verdicts unchanged, real packets both ways."""

import copy
import subprocess

import pytest

from fwsg import fast
from fwsg.firewall import Firewall
from fwsg.netns import entered
from tests.netns.fwlab import ALL_EGRESS, model, rule, running_lab

GROUPS = {"web": [rule("ingress", protocol="tcp", ports=80),
                  rule("ingress", "IPv6", protocol="udp", ports=53),
                  rule("ingress", protocol="tcp", ports=443, remote_ip_prefix="192.0.2.0/24")]
                 + ALL_EGRESS,
          "open": ALL_EGRESS}


@pytest.fixture
def lab_fw():
    with running_lab("pmup") as lab_fw:
        yield lab_fw


def _previous_layout(desired):
    """The Ruleset of ``desired`` (a Desired) as the layout before the port sets held it:
    each group chain its rules in the order of the group, no port sets."""
    from fwsg.backends.nft.desired import _dedupe
    from fwsg.backends.nft.rules import render_rule
    from fwsg.ruleset import ChainDef

    old = copy.deepcopy(desired.rs)
    for sg, rules in desired.groups.items():
        for direction in ("ingress", "egress"):
            name = desired.names.group_chain(sg, direction)
            text = []
            for r in rules:
                if r.direction == direction:
                    text += render_rule(r, lambda g, f: ((), False), names=desired.names)
            old.chains[("inet", name)] = ChainDef("inet", name, _dedupe(text))
            key = ("inet", desired.names.port_set(sg, direction))
            del old.sets[key], old.elements[key]
    return old


def _listing(lab):
    return subprocess.run(["ip", "netns", "exec", lab.host_ns, "nft", "list", "table", "inet",
                           "fwsg"], capture_output=True, text=True, check=True).stdout


PROBES = [("tcp_connect", "vm1", "vm2", {"port": 80}),
          ("tcp_connect", "vm1", "vm2", {"port": 81}),
          ("udp_exchange", "vm1", "vm2", {"port": 53, "family": 6}),
          ("udp_exchange", "vm1", "vm2", {"port": 53}),
          ("tcp_connect", "vm1", "vm2", {"port": 443})]
VERDICTS = [True, False, True, False, True]


def test_a_host_of_the_layout_before_port_sets_is_upgraded_in_one_transaction(lab_fw):
    from fwsg.backends.nft.render import render
    from fwsg.plan import diff

    lab, fw = lab_fw
    doc = model(lab, GROUPS, {"vm1": ["open"], "vm2": ["web"]})
    fw.apply(doc)
    compiled = fw._desired.rs
    with entered(lab.host_ns):
        ctx = fast.NftContext()
        try:
            ctx.run("".join(c + "\n" for c in render(
                diff(_previous_layout(fw._desired), fw.backend.read()).ops)))
        finally:
            ctx.close()
    listing = _listing(lab)
    assert "th dport @" not in listing and "tcp dport 80 accept" in listing
    conn = lab.open_tcp("vm1", "vm2", port=80)
    try:
        assert lab.matrix(PROBES) == VERDICTS          # the previous layout, same verdicts

        fw2 = Firewall(netns=lab.host_ns)
        before = fw2.backend.generation()
        r = fw2.apply(doc)
        assert r.changed
        assert fw2.backend.generation()[1] == before[1] + 1     # one transaction
        assert r.summary["sets_added"] == 4                     # two sets per group
        back = fw2.backend.read()
        assert back.sets == compiled.sets and back.elements == compiled.elements
        assert {k: c.digest for k, c in back.chains.items()} == \
            {k: c.digest for k, c in compiled.chains.items()}
        assert "th dport @" in _listing(lab)
        assert not Firewall(netns=lab.host_ns).apply(doc).changed   # nothing left to upgrade
        assert conn.alive()
        assert lab.matrix(PROBES) == VERDICTS
    finally:
        conn.close()
