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


def _nft(lab, text):
    lab.exec("host", ["nft", "-f", "-"], input=text)


def _map_type(lab, name):
    return lab.exec("host", ["nft", "list", "map", "inet", "fwsg", name]).stdout


def test_the_hosts_own_mark_neither_picks_the_judge_nor_stops_its_other_traffic(
        env, routed_peer):
    """The hypervisor's own packets carry a mark naming vm2's port (set by a table of the
    host's): to vm1 they are still judged by vm1's rules (the address decides); to an address
    no VM has they are not judged at all, mark left as it was."""
    lab, fw = env
    both = {"in80": [rule("ingress", protocol="tcp", ports=80),
                     rule("ingress", "IPv6", protocol="tcp", ports=80)] + ALL_EGRESS,
            "in22": [rule("ingress", protocol="tcp", ports=22),
                     rule("ingress", "IPv6", protocol="tcp", ports=22)] + ALL_EGRESS}
    fw.apply(model(lab, both, {"vm1": ["in80"], "vm2": ["in22"]}))
    vm2 = fw._desired.ids[fw._desired.ports[next(
        p for p, port in fw._desired.ports.items() if port.security_groups == ("in22",))].device]
    _nft(lab, "table inet hostmark {\n chain out {\n type filter hook output priority -400;\n"
              f" meta mark set {vm2:#010x}\n }}\n}}\n")
    try:
        for family in (4, 6):
            assert lab.tcp_connect("host", "vm1", port=80, family=family)
            assert not lab.tcp_connect("host", "vm1", port=22, family=family)
        assert traffic.tcp_connect(lab.host_ns, routed_peer, "198.51.100.2", 80, timeout=1.0)
    finally:
        _nft(lab, "delete table inet hostmark\n")


def test_a_host_running_the_previous_layout_ends_with_this_one_in_one_apply(env):
    """The layout before address dispatch used data maps (``@ingress4``/``@ingress6``
    verdict maps straight to the profile chains, read by each base chain), installed by
    hand: a fresh Firewall's apply re-creates the inet table with the current layout in one
    transaction, and the hypervisor's traffic to a VM is judged by its rules before and
    after."""
    from fwsg.firewall import Firewall

    lab, fw = env
    doc = model(lab, GROUPS, {"vm1": ["in80"], "vm2": ["in22"]})
    fw.apply(doc)
    rs = fw._desired.rs
    ingress = rs.elements[("inet", "ingress")]
    old = ["flush chain inet fwsg ingress-fwd", "flush chain inet fwsg ingress-out",
           "delete map inet fwsg ingress4", "delete map inet fwsg ingress6",
           "delete element inet fwsg ingress { 0x0000ffff }"]
    for fam in (4, 6):
        old.append(f"add map inet fwsg ingress{fam} {{ type ipv{fam}_addr : verdict; }}")
        elems = ", ".join(f"{a} : {ingress[n]}" for a, n in rs.elements[("inet", f"ingress{fam}")].items())
        old.append(f"add element inet fwsg ingress{fam} {{ {elems} }}")
    old += ["add rule inet fwsg ingress-fwd meta mark & 0x0000ffff vmap @ingress",
            "add rule inet fwsg ingress-fwd meta mark & 0x0000ffff == 0x0 ip daddr vmap @ingress4",
            "add rule inet fwsg ingress-fwd meta mark & 0x0000ffff == 0x0 ip6 daddr vmap @ingress6",
            "add rule inet fwsg ingress-out ip daddr vmap @ingress4",
            "add rule inet fwsg ingress-out ip6 daddr vmap @ingress6"]
    # profile chains as that layout had them: the fixed rules first, a drop last
    for _fam, name in rs.chains:
        if name.startswith("p") and name[-2:] in ("-e", "-i"):
            old += [f"insert rule inet fwsg {name} jump fixed-{name[-1]}",
                    f"insert rule inet fwsg {name} jump fixed-state",
                    f"add rule inet fwsg {name} drop"]
    _nft(lab, "\n".join(old) + "\n")
    assert "ipv4_addr : verdict" in _map_type(lab, "ingress4")
    assert lab.tcp_connect("host", "vm1", port=80)
    assert not lab.tcp_connect("host", "vm1", port=22)
    fresh = Firewall(netns=lab.host_ns)
    fresh.apply(doc)
    assert "ipv4_addr : mark" in _map_type(lab, "ingress4")
    assert not fresh.plan(doc)
    flush_conntrack(lab)
    assert lab.tcp_connect("host", "vm1", port=80)
    assert not lab.tcp_connect("host", "vm1", port=22)
    assert lab.tcp_connect("host", "vm2", port=22)
    assert not lab.tcp_connect("host", "vm2", port=80)
