"""Traffic the hypervisor sends to a VM (no port tag: dispatched by destination address) on
an address covered only by an allowed-address-pair prefix, or on a VIP several ports share:
the VM's ingress rules decide, with real packets. Ports sharing a VIP with different rules:
the hypervisor's traffic to it is dropped (never more than every owner allows)."""

import pytest

from fwsg.lab import traffic
from tests.netns.fwlab import ALL_EGRESS, flush_conntrack, model, rule, running_lab
from tests.netns.test_semantics import routed_peer  # noqa: F401 - a fixture (uses env)


@pytest.fixture(scope="module")
def fwlab():
    with running_lab("disp") as lab_fw:
        yield lab_fw


@pytest.fixture
def env(fwlab):
    lab, fw = fwlab
    flush_conntrack(lab)
    return lab, fw


GROUPS = {"in80": [rule("ingress", protocol="tcp", ports=80)] + ALL_EGRESS,
          "in22": [rule("ingress", protocol="tcp", ports=22)] + ALL_EGRESS}


def test_host_to_an_address_pair_prefix_takes_the_vms_ingress_rules(env):
    lab, fw = env
    fw.apply(model(lab, GROUPS, {"vm1": ["in80"], "vm2": ["in22"]},
                   vm1={"allowed_address_pairs": [{"ip_address": "192.0.2.64/28"}]},
                   vm2={"allowed_address_pairs": [{"ip_address": "192.0.2.72/29"}]}))
    lab.add_address("vm1", "192.0.2.66/24")
    try:
        assert lab.tcp_connect("host", "vm1", port=80, dst_ip="192.0.2.66")
        assert not lab.tcp_connect("host", "vm1", port=22, dst_ip="192.0.2.66")
    finally:
        lab.del_address("vm1", "192.0.2.66/24")
    # inside both prefixes (vm1's /28 and vm2's /29 overlap): neither port's rules alone
    lab.add_address("vm1", "192.0.2.74/24")
    try:
        assert not lab.tcp_connect("host", "vm1", port=80, dst_ip="192.0.2.74")
        assert not lab.tcp_connect("host", "vm1", port=22, dst_ip="192.0.2.74")
    finally:
        lab.del_address("vm1", "192.0.2.74/24")


@pytest.mark.parametrize("groups2", [["in80"], ["in22"]], ids=["same-rules", "other-rules"])
def test_host_to_a_shared_vip(env, groups2):
    lab, fw = env
    vip = [{"ip_address": "192.0.2.50"}]
    fw.apply(model(lab, GROUPS, {"vm1": ["in80"], "vm2": groups2},
                   vm1={"allowed_address_pairs": vip}, vm2={"allowed_address_pairs": vip}))
    lab.add_address("vm1", "192.0.2.50/24")
    try:
        if groups2 == ["in80"]:
            assert lab.tcp_connect("host", "vm1", port=80, dst_ip="192.0.2.50")
        else:
            assert not lab.tcp_connect("host", "vm1", port=80, dst_ip="192.0.2.50")
        assert not lab.tcp_connect("host", "vm1", port=22, dst_ip="192.0.2.50")
        assert lab.tcp_connect("host", "vm1", port=80)      # its own address: its rules
    finally:
        lab.del_address("vm1", "192.0.2.50/24")


def test_routed_to_an_address_pair_prefix_takes_the_vms_ingress_rules(env, routed_peer):
    lab, fw = env
    fw.apply(model(lab, GROUPS, {"vm1": ["in80"]},
                   vm1={"allowed_address_pairs": [{"ip_address": "192.0.2.64/28"}]}))
    lab.add_address("vm1", "192.0.2.66/24")
    try:
        vm1 = lab.ns("vm1")
        assert traffic.tcp_connect(routed_peer, vm1, "192.0.2.66", 80, timeout=1.0)
        assert not traffic.tcp_connect(routed_peer, vm1, "192.0.2.66", 22, timeout=1.0)
    finally:
        lab.del_address("vm1", "192.0.2.66/24")
