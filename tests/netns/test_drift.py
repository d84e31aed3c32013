"""Drift that only a content comparison shows, repaired by reconcile with real packets: a rule
replaced in place by ``accept``, a base chain's policy changed, a member set re-declared by
someone else as an interval set holding 0.0.0.0/0 (which made every apply fail with "Device or
resource busy"), a foreign element in a group's port set. Each: the drift really opens (or closes) traffic, reconcile reports and
repairs it in one transaction, traffic follows the model again."""

import json
import re
import subprocess

import pytest

from fwsg.firewall import Firewall
from tests.netns.fwlab import ALL_EGRESS, flush_conntrack, model, rule, running_lab, web_db


@pytest.fixture(scope="module")
def fwlab():
    with running_lab("drift") as lab_fw:
        yield lab_fw


@pytest.fixture
def env(fwlab):
    lab, fw = fwlab
    flush_conntrack(lab)
    return lab, fw


def nft(lab, *args, stdin=None):
    p = subprocess.run(["ip", "netns", "exec", lab.host_ns, "nft", *args], input=stdin,
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    return p.stdout


def profile_chain(lab, fw, port_id, direction):
    n = fw._desired.ids[lab.node(port_id.split("-")[1]).tap]
    key = f"0x{n << 16:08x}" if direction == "e" else f"0x{n:08x}"
    verdict = fw.current().elements[("inet", "egress" if direction == "e" else "ingress")][key]
    return verdict.split()[1]


def _web_on_port_80(lab, fw):
    """vm2 in group ``web`` (TCP 80 in from anywhere), vm1 in ``open``: 80 passes, 22 not."""
    groups = {"web": [rule("ingress", protocol="tcp", ports=80)] + ALL_EGRESS,
              "open": ALL_EGRESS}
    fw.apply(model(lab, groups, {"vm1": ["open"], "vm2": ["web"]}))
    assert lab.tcp_connect("vm1", "vm2", port=80)
    assert not lab.tcp_connect("vm1", "vm2", port=22)


def test_rule_replaced_in_place_by_accept(env):
    lab, fw = env
    _web_on_port_80(lab, fw)
    chain = profile_chain(lab, fw, "port-vm2", "i")
    listing = nft(lab, "-a", "list", "chain", "inet", "fwsg", chain)
    # the profile's one rule (its group's jump, carrying the chain's digest) becomes an
    # accept that keeps the digest: count and comment as before
    m = re.search(r'jump g[0-9a-f]+-i comment "([^"]+)" # handle (\d+)', listing)
    nft(lab, "replace", "rule", "inet", "fwsg", chain, "handle", m.group(2), "accept",
        "comment", f'"{m.group(1)}"')
    assert lab.tcp_connect("vm1", "vm2", port=22)            # the drift opened the port
    assert not Firewall(netns=lab.host_ns).plan(fw.model)     # the digests cannot see it
    result = fw.reconcile()
    assert any(chain in line for line in result.repaired), result.repaired
    assert not lab.tcp_connect("vm1", "vm2", port=22)
    assert lab.tcp_connect("vm1", "vm2", port=80)
    assert fw.reconcile().repaired == []


def test_base_chain_policy_changed(env):
    lab, fw = env
    groups = {"web": [rule("ingress", protocol="tcp", ports=80)] + ALL_EGRESS}
    fw.apply(model(lab, groups, {"vm2": ["web"]}))
    assert lab.tcp_connect("out", "vm2", port=80)
    nft(lab, "add", "chain", "inet", "fwsg", "ingress-fwd",
        "{ type filter hook forward priority 0; policy drop; }")
    nft(lab, "add", "chain", "inet", "fwsg", "egress-pre",
        "{ type filter hook prerouting priority 0; policy drop; }")
    assert not lab.tcp_connect("vm2", "out", port=80)        # the drift broke traffic
    result = fw.reconcile()
    assert any("policy" in line for line in result.repaired), result.repaired
    assert "policy accept" in nft(lab, "list", "chain", "inet", "fwsg", "ingress-fwd")
    assert lab.tcp_connect("out", "vm2", port=80)
    assert not lab.tcp_connect("out", "vm2", port=22)


def _redeclare_open(lab, fw, sg):
    """Someone re-declares group ``sg``'s member set as an interval set holding 0.0.0.0/0,
    keeping the rules that reference it exactly as fwsg wrote them."""
    name = fw._desired.names.member_set(sg, 4)
    users = []
    for c in sorted(fw.current().chains):
        text = nft(lab, "list", "chain", c[0], "fwsg", c[1])
        if f"@{name}" in text:
            body = [ln.strip() for ln in text.splitlines()[2:-2] if ln.strip()]
            users.append((c, body))
    assert users
    batch = [f"flush chain inet fwsg {c[1]}" for c, _ in users]
    batch += [f"delete set inet fwsg {name}",
              f"add set inet fwsg {name} {{ type ipv4_addr; flags interval; "
              f"elements = {{ 0.0.0.0/0 }}; }}"]
    batch += [f"add rule inet fwsg {c[1]} {r}" for c, body in users for r in body]
    nft(lab, "-f", "-", stdin="\n".join(batch) + "\n")


def test_member_set_redeclared_as_open_interval_set(env, tmp_path):
    lab, fw = env
    doc = model(lab, web_db(), {"vm1": ["web"], "vm2": ["db"]})
    fw.apply(doc)
    assert lab.tcp_connect("vm1", "vm2", port=5432)
    assert not lab.tcp_connect("out", "vm2", port=5432)
    _redeclare_open(lab, fw, "web")
    assert lab.tcp_connect("out", "vm2", port=5432)          # the drift opened the group
    # a fresh process's apply repairs it too (it used to fail: Device or resource busy)
    m = tmp_path / "m.json"
    m.write_text(json.dumps(doc))
    fresh = Firewall(netns=lab.host_ns)
    result = fresh.apply(doc)
    assert any("re-declared" in line for line in result.repaired), result.repaired
    assert not lab.tcp_connect("out", "vm2", port=5432)
    assert lab.tcp_connect("vm1", "vm2", port=5432)
    # and reconcile from the long-lived Firewall
    _redeclare_open(lab, fw, "web")
    assert lab.tcp_connect("out", "vm2", port=5432)
    result = fw.reconcile()
    assert any("re-declared" in line for line in result.repaired), result.repaired
    assert not lab.tcp_connect("out", "vm2", port=5432)
    assert lab.tcp_connect("vm1", "vm2", port=5432)
    assert fw.reconcile().repaired == []


def test_foreign_element_in_a_port_set_is_removed(env):
    """Someone adds ``ipv4 . tcp . 22`` to a group's port set and takes ``ipv4 . tcp . 80``
    out: port 22 opens, 80 closes; reconcile takes the one out and puts the other back, in
    one transaction."""
    lab, fw = env
    _web_on_port_80(lab, fw)
    name = fw._desired.names.port_set("web", "ingress")
    nft(lab, "-f", "-", stdin=f"add element inet fwsg {name} {{ ipv4 . tcp . 22 }}\n"
                              f"delete element inet fwsg {name} {{ ipv4 . tcp . 80 }}\n")
    assert lab.tcp_connect("vm1", "vm2", port=22)            # the drift opened the port
    assert not lab.tcp_connect("vm1", "vm2", port=80)
    result = fw.reconcile()
    assert any(name in line for line in result.repaired), result.repaired
    assert not lab.tcp_connect("vm1", "vm2", port=22)
    assert lab.tcp_connect("vm1", "vm2", port=80)
    assert fw.reconcile().repaired == []
