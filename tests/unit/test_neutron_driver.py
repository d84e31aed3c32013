"""The Neutron firewall driver against the fake kernel: Neutron's port dicts mapped onto fwsg
(both device namings, member forms, server-added rules, prefixes), one transaction per
defer block, trusted ports, errors. No root, no Neutron."""

import copy
import subprocess
import sys

import pytest

from fwsg.errors import KernelError, UserError, ValidationError
from fwsg.firewall import Firewall
from fwsg.model import Rule
from fwsg.neutron import FwsgFirewallDriver, FwsgHybridFirewallDriver, tap_name
from tests.unit.test_incremental import kernel_view

P1 = "4f468977-0938-433c-bf9e-48403c67523f"
P2 = "9c4792da-4aa7-4c38-a86e-80a9f8af8c79"
WEB = "a02f34a6-795b-429e-9a9a-80fdea7b5bf5"
DB = "035efa25-9b08-423d-90c6-7fd994b2b8fd"
AG = "6a1d1c9e-0000-4000-8000-00000000a9a9"   # an address group

GROUPS = {
    WEB: [{"id": "r1", "security_group_id": WEB, "direction": "ingress", "ethertype": "IPv4",
           "protocol": "tcp", "port_range_min": 80, "port_range_max": 80,
           "source_ip_prefix": "198.51.100.0/24", "stateful": True},
          {"direction": "egress", "ethertype": "IPv4", "stateful": True},
          {"direction": "egress", "ethertype": "IPv6", "stateful": True}],
    DB: [{"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
          "port_range_min": 5432, "port_range_max": 5432, "remote_group_id": WEB},
         {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
          "port_range_min": 22, "port_range_max": 22, "remote_address_group_id": AG},
         {"direction": "egress", "ethertype": "IPv4", "dest_ip_prefix": "203.0.113.0/24"}],
}


def server_rules(ip):
    """The per-port rules Neutron's server adds (DHCP replies to the port)."""
    return [{"direction": "ingress", "ethertype": "IPv4", "protocol": "udp",
             "port_range_min": 68, "port_range_max": 68, "source_port_range_min": 67,
             "source_port_range_max": 67, "dest_ip_prefix": f"{ip}/32"},
            {"direction": "ingress", "ethertype": "IPv6", "protocol": "ipv6-icmp",
             "source_port_range_min": 134}]


def port(pid, device, ip, mac, groups, **extra):
    p = {"id": pid, "device": device, "device_owner": "compute:nova", "mac_address": mac,
         "fixed_ips": [ip], "allowed_address_pairs": [], "security_groups": list(groups),
         "security_group_source_groups": [], "port_security_enabled": True,
         "security_group_rules": server_rules(ip), "network_id": "net-1"}
    p.update(extra)
    return p


def hybrid_ports():
    return {P1: port(P1, P1, "192.0.2.11", "fa:16:3e:00:00:11", [WEB]),
            P2: port(P2, P2, "192.0.2.12", "fa:16:3e:00:00:12", [DB])}


MEMBERS = {WEB: {"IPv4": [["192.0.2.11", "fa:16:3e:00:00:11"]], "IPv6": []},
           AG: {"IPv4": ["198.51.100.0/25", ["203.0.113.5", None]]}}


def agent_sync(drv, ports, groups=GROUPS, members=MEMBERS):
    """What SecurityGroupAgentRpc._apply_port_filter does with a server reply."""
    with drv.defer_apply():
        for sg, rules in groups.items():
            drv.update_security_group_rules(sg, copy.deepcopy(rules))
        for sg, m in members.items():
            drv.update_security_group_members(sg, copy.deepcopy(m))
        for p in ports.values():
            drv.prepare_port_filter(copy.deepcopy(p))


def driver(**kw):
    return FwsgFirewallDriver(backend="fake", **kw)


def taps(drv):
    return {k.strip('"') for k in drv.firewall.backend.read().elements[("bridge", "port-src")]}


def equivalent_model(ports, naming="auto"):
    """The wire model a direct fwsg user would apply for the same state."""
    devices = {}
    for dev, p in ports.items():
        d = {k: p[k] for k in ("mac_address", "fixed_ips", "allowed_address_pairs",
                               "security_groups", "port_security_enabled")}
        d["device"] = tap_name(dev, naming)
        d["security_group_rules"] = p["security_group_rules"]
        devices[dev] = d
    groups = copy.deepcopy(GROUPS)
    for r in groups[DB]:
        if "remote_address_group_id" in r:
            r["remote_group_id"] = r.pop("remote_address_group_id")
    members = {WEB: {"IPv4": ["192.0.2.11"]}, AG: {"IPv4": ["198.51.100.0/25", "203.0.113.5"]}}
    return {"security_groups": groups, "sg_member_ips": members, "devices": devices}


# -- naming -------------------------------------------------------------------------------------
def test_tap_name_both_namings():
    assert tap_name(P1) == "tap4f468977-09"                 # a port id: hybrid
    assert tap_name("tap4f468977-09") == "tap4f468977-09"   # an interface: itself
    assert tap_name("vm1", "hybrid") == "tapvm1"
    assert tap_name(P1, "direct") == P1                     # (then refused as an ifname)
    with pytest.raises(ValidationError, match="port.device"):
        tap_name(None)
    with pytest.raises(ValidationError, match="naming"):
        tap_name("x", "ovs")


def test_hybrid_devices_are_port_ids_and_taps_are_derived():
    drv = driver()
    agent_sync(drv, hybrid_ports())
    assert set(drv.ports) == {P1, P2}
    assert drv.ports[P1]["device"] == P1                     # the agent's dict, unchanged
    assert taps(drv) == {"tap4f468977-09", "tap9c4792da-4a"}


def test_direct_devices_are_the_taps():
    ports = {d: port(pid, d, ip, mac, g) for pid, d, ip, mac, g in
             zip((P1, P2), ("tap4f468977-09", "tap9c4792da-4a"), ("192.0.2.11", "192.0.2.12"),
                 ("fa:16:3e:00:00:11", "fa:16:3e:00:00:12"), ([WEB], [DB]))}
    drv = driver()
    agent_sync(drv, ports)
    assert set(drv.ports) == set(ports) == taps(drv)


def test_hybrid_driver_forces_the_hybrid_naming():
    drv = FwsgHybridFirewallDriver(backend="fake")
    p = port("vm1", "vm1", "192.0.2.11", "fa:16:3e:00:00:11", [WEB])
    agent_sync(drv, {"vm1": p})
    assert taps(drv) == {"tapvm1"}


def test_state_equals_a_direct_apply_of_the_same_reply():
    drv = driver()
    agent_sync(drv, hybrid_ports())
    ref = Firewall(backend="fake")
    ref.apply(equivalent_model(hybrid_ports()))
    assert kernel_view(drv.firewall) == kernel_view(ref)


# -- members, rules, prefixes -------------------------------------------------------------------
@pytest.mark.parametrize("form", ["bare", "pairs", "pairs-null-mac"])
def test_member_forms_give_the_same_kernel(form):
    ips = ["192.0.2.11", "192.0.2.40", "198.51.100.0/28"]
    conv = {"bare": lambda ip: ip, "pairs": lambda ip: [ip, "fa:16:3e:00:00:99"],
            "pairs-null-mac": lambda ip: [ip, None]}[form]
    drv = driver()
    agent_sync(drv, hybrid_ports(), members={WEB: {"IPv4": [conv(i) for i in ips],
                                                   "IPv6": [conv("2001:db8::11")]}})
    ref = driver()
    agent_sync(ref, hybrid_ports(), members={WEB: {"IPv4": ips, "IPv6": ["2001:db8::11"]}})
    assert kernel_view(drv.firewall) == kernel_view(ref.firewall)
    assert set(drv.firewall.model.members[WEB][4]) == set(ips)


def test_server_added_rules_and_prefixes_are_kept():
    drv = driver()
    agent_sync(drv, hybrid_ports())
    m = drv.firewall.model
    p1 = m.ports[P1]
    assert Rule("ingress", "IPv4", 17, 68, 68, 67, 67, dst="192.0.2.11/32") in p1.rules
    assert Rule("ingress", "IPv6", 58, icmp_type=134) in p1.rules
    web = m.groups[WEB]
    assert web[0].src == "198.51.100.0/24" and web[0].port_min == 80
    db = m.groups[DB]
    assert db[1].remote_group == AG                 # remote_address_group_id
    assert db[2].dst == "203.0.113.0/24"


def test_member_update_is_one_small_transaction():
    drv = driver()
    agent_sync(drv, hybrid_ports())
    n = drv.firewall.backend.commits
    drv.update_security_group_members(WEB, {"IPv4": [["192.0.2.11", "fa:16:3e:00:00:11"],
                                                     ["192.0.2.77", "fa:16:3e:00:00:77"]]})
    assert drv.firewall.backend.commits == n + 1
    assert drv.firewall.last_result.summary["elements_added"] == 1


# -- defer blocks -------------------------------------------------------------------------------
def test_a_defer_block_is_one_transaction():
    drv = driver()
    assert drv.firewall.backend.commits == 0
    agent_sync(drv, hybrid_ports())                          # 2 groups, members, 2 ports
    assert drv.firewall.backend.commits == 1
    with drv.defer_apply():
        drv.filter_defer_apply_on()                          # nested: still the same block
        p = hybrid_ports()[P1]
        p["fixed_ips"].append("192.0.2.21")
        drv.update_port_filter(p)
        drv.filter_defer_apply_off()
        drv.update_security_group_rules(WEB, GROUPS[WEB][1:])
        drv.remove_port_filter(hybrid_ports()[P2])
        assert drv.firewall.backend.commits == 1             # nothing yet
    assert drv.firewall.backend.commits == 2
    assert set(drv.ports) == {P1}
    assert "192.0.2.21" in drv.firewall.model.ports[P1].fixed_ips


def test_calls_outside_a_block_commit_one_each():
    drv = driver()
    agent_sync(drv, hybrid_ports())
    drv.update_security_group_rules(DB, GROUPS[DB][:1])
    drv.remove_port_filter(P2)                               # by device, too
    assert drv.firewall.backend.commits == 3
    drv.remove_port_filter(P2)                               # not filtered: nothing
    drv.update_security_group_rules(DB, GROUPS[DB][:1])      # unchanged: nothing
    assert drv.firewall.backend.commits == 3


def test_unknown_update_starts_filtering_and_unknown_group_allows_nothing():
    drv = driver()
    agent_sync(drv, {})
    p = port(P1, P1, "192.0.2.11", "fa:16:3e:00:00:11", ["sg-not-sent-yet"])
    drv.update_port_filter(p)
    assert set(drv.ports) == {P1}
    assert drv.firewall.model.groups["sg-not-sent-yet"] == ()


def test_groups_and_members_no_port_uses_are_pruned():
    drv = driver()
    agent_sync(drv, hybrid_ports())
    with drv.defer_apply():
        drv.remove_port_filter(hybrid_ports()[P2])
    m = drv.firewall.model
    assert set(m.groups) == {WEB}
    assert not any(m.members.get(AG, {}).values())
    ref = driver()
    agent_sync(ref, {P1: hybrid_ports()[P1]}, groups={WEB: GROUPS[WEB]}, members={})
    assert kernel_view(drv.firewall) == kernel_view(ref.firewall)


def test_port_security_off_is_listed_but_not_filtered():
    drv = driver()
    p = port(P1, P1, "192.0.2.11", "fa:16:3e:00:00:11", [], port_security_enabled=False)
    agent_sync(drv, {P1: p})
    assert set(drv.ports) == {P1}
    assert drv.firewall.model.ports[P1].port_security is False
    assert not drv.firewall.backend.read().elements.get(("bridge", "secured"))


def test_first_block_replaces_what_an_earlier_run_left():
    fw = Firewall(backend="fake")
    fw.apply(equivalent_model(hybrid_ports()))
    drv = driver()
    drv.firewall = fw                                   # the same kernel, a new agent process
    agent_sync(drv, {P1: hybrid_ports()[P1]}, groups={WEB: GROUPS[WEB]}, members={})
    assert taps(drv) == {"tap4f468977-09"}
    assert fw.backend.commits == 2


def test_a_restarted_agent_that_first_removes_or_refreshes_groups_unfilters_nothing():
    fw = Firewall(backend="fake")
    fw.apply(equivalent_model(hybrid_ports()))        # what the previous agent process left
    drv = driver()
    drv.firewall = fw
    with drv.defer_apply():                           # no port prepared: nothing committed
        drv.update_security_group_rules(DB, GROUPS[DB])
        drv.update_security_group_members(WEB, MEMBERS[WEB])
        drv.remove_port_filter(hybrid_ports()[P1])
        drv.process_trusted_ports(["dhcp"])
    assert fw.backend.commits == 1 and taps(drv) == {"tap4f468977-09", "tap9c4792da-4a"}
    with pytest.raises(ValidationError, match=rf"security_groups\.{DB}\[0\]\.direction"):
        drv.update_security_group_rules(DB, [{"direction": "up"}])
    with pytest.raises(ValidationError, match=rf"sg_member_ips\.{AG}\.IPv4\[0\]"):
        drv.update_security_group_members(AG, {"IPv4": ["192.0.2.999"]})
    with drv.defer_apply():                           # the full sync: what came before counts
        drv.prepare_port_filter(hybrid_ports()[P2])
    assert fw.backend.commits == 2 and taps(drv) == {"tap9c4792da-4a"}
    assert drv.firewall.model.groups[DB][0].remote_group == WEB
    assert set(drv.firewall.model.members[WEB][4]) == {"192.0.2.11"}


# -- trusted ports ------------------------------------------------------------------------------
def test_trusted_ports_are_recorded_and_never_touch_the_kernel():
    drv = driver()
    agent_sync(drv, hybrid_ports())
    n = drv.firewall.backend.commits
    with drv.defer_apply():
        drv.process_trusted_ports(["dhcp-port", "router-port"])
        drv.process_trusted_ports(["dhcp-port"])
    assert drv.trusted_ports == ["dhcp-port", "router-port"]
    drv.remove_trusted_ports(["dhcp-port", "never-seen"])
    assert drv.trusted_ports == ["router-port"]
    assert drv.firewall.backend.commits == n
    assert "dhcp-port" not in drv.ports


def test_security_group_updated_is_accepted_in_every_form():
    drv = driver()
    drv.security_group_updated("sg_rule", {WEB})
    drv.security_group_updated("sg_member", [], {P1})
    drv.security_group_updated("sg_member", [DB], device_ids=None)
    assert drv.firewall.backend.commits == 0


# -- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, path", [
    ({"device": P1}, f"devices.{P1}.mac_address"),
    (dict(hybrid_ports()[P1], mac_address="zz"), f"devices.{P1}.mac_address"),
    (dict(hybrid_ports()[P1], fixed_ips=["192.0.2.300"]), f"devices.{P1}.fixed_ips[0]"),
    ({"mac_address": "fa:16:3e:00:00:01"}, "port.device"),
    ("not-a-dict", "port"),
    (dict(hybrid_ports()[P1], device="tap4f468977-09"), "devices.tap4f468977-09.device"),
])
def test_bad_port_names_the_field_and_changes_nothing(bad, path):
    drv = driver()
    agent_sync(drv, hybrid_ports())
    before, n = kernel_view(drv.firewall), drv.firewall.backend.commits
    with pytest.raises(ValidationError) as e:
        drv.prepare_port_filter(bad)
    assert e.value.path == path
    assert kernel_view(drv.firewall) == before and drv.firewall.backend.commits == n
    assert set(drv.ports) == {P1, P2}


def test_bad_members_and_rules_name_the_field():
    drv = driver()
    agent_sync(drv, hybrid_ports())
    with pytest.raises(ValidationError, match=rf"sg_member_ips\.{WEB}\.IPv4\[1\]"):
        drv.update_security_group_members(WEB, {"IPv4": ["192.0.2.1", ["nope", None]]})
    with pytest.raises(ValidationError, match=rf"security_groups\.{WEB}\[0\]\.direction"):
        drv.update_security_group_rules(WEB, [{"direction": "sideways"}])
    assert set(drv.firewall.model.members[WEB][4]) == {"192.0.2.11"}


def test_an_error_inside_a_block_keeps_the_valid_calls():
    """As Neutron's own drivers: the block's other changes are applied when it ends."""
    drv = driver()
    with pytest.raises(ValidationError):
        with drv.defer_apply():
            drv.update_security_group_rules(WEB, GROUPS[WEB])
            drv.prepare_port_filter(hybrid_ports()[P1])
            drv.prepare_port_filter({"device": P2})
    assert set(drv.ports) == {P1} and drv.firewall.backend.commits == 1
    assert taps(drv) == {"tap4f468977-09"}


def test_refused_block_leaves_kernel_state_and_ports_as_before(monkeypatch):
    drv = driver()
    agent_sync(drv, {P1: hybrid_ports()[P1]})
    before = kernel_view(drv.firewall)

    def refuse(plan):
        raise KernelError("nftables refused the batch: injected")
    monkeypatch.setattr(drv.firewall.backend, "commit", refuse)
    with pytest.raises(KernelError):
        agent_sync(drv, hybrid_ports())
    monkeypatch.undo()
    assert set(drv.ports) == {P1}
    assert kernel_view(drv.firewall) == before
    agent_sync(drv, hybrid_ports())                       # the agent's resync then works
    assert set(drv.ports) == {P1, P2} and taps(drv) == {"tap4f468977-09", "tap9c4792da-4a"}


def test_refused_first_block_starts_over(monkeypatch):
    drv = driver()
    monkeypatch.setattr(drv.firewall.backend, "commit",
                        lambda plan: (_ for _ in ()).throw(KernelError("injected")))
    with pytest.raises(KernelError):
        agent_sync(drv, hybrid_ports())
    monkeypatch.undo()
    assert drv.ports == {}
    agent_sync(drv, hybrid_ports())
    assert set(drv.ports) == {P1, P2}


def test_unbalanced_off_is_harmless_and_the_lock_is_free():
    import threading

    drv = driver()
    drv.filter_defer_apply_off()
    agent_sync(drv, hybrid_ports())
    assert drv._lock.acquire(blocking=False)
    drv._lock.release()
    drv.filter_defer_apply_on()           # a stray off from another thread closes nothing
    t = threading.Thread(target=drv.filter_defer_apply_off)
    t.start()
    t.join(5)
    drv.update_security_group_rules(WEB, GROUPS[WEB][1:])
    n = drv.firewall.backend.commits
    drv.filter_defer_apply_off()
    assert drv.firewall.backend.commits == n + 1


# -- construction -------------------------------------------------------------------------------
def test_constructible_as_neutron_builds_drivers():
    for kw in ({}, {"integration_bridge": "br-int"}, {"namespace": None}):
        d = FwsgFirewallDriver(**kw)
        assert d.ports == {} and d.OVS_HYBRID_PLUG_REQUIRED is True
    with pytest.raises(ValidationError, match="naming"):
        FwsgFirewallDriver(naming="ovs")
    with pytest.raises(UserError, match="does not exist"):
        FwsgFirewallDriver(namespace="fwsg-no-such-namespace")


def test_importing_the_driver_never_imports_neutron():
    code = "import sys, fwsg, fwsg.neutron; print(any(m == 'neutron' or m.startswith(" \
           "('neutron.', 'neutron_lib', 'oslo')) for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_registered_under_neutrons_entry_point_group():
    from importlib.metadata import entry_points

    eps = {e.name: e for e in entry_points(group="neutron.agent.firewall_drivers")}
    assert eps["fwsg"].load() is FwsgFirewallDriver
    assert eps["fwsg_hybrid"].load() is FwsgHybridFirewallDriver


@pytest.mark.parametrize("device", ["../../etc", "tap;rm -rf /", "tap x", "",
                                    "0123456789;abcdef and more text"])
def test_hostile_device_names_never_reach_the_kernel(device):
    drv = driver()
    agent_sync(drv, hybrid_ports())
    before = kernel_view(drv.firewall)
    with pytest.raises(ValidationError):
        drv.prepare_port_filter(dict(hybrid_ports()[P1], device=device))
    assert kernel_view(drv.firewall) == before and device not in drv.ports


def test_a_long_device_is_a_port_id_and_only_its_tap_reaches_the_kernel():
    drv = driver()
    agent_sync(drv, {})
    drv.prepare_port_filter(dict(hybrid_ports()[P1], device="0123456789abcdef; reboot"))
    assert taps(drv) == {"tap0123456789a"}


def test_blocks_from_two_threads_do_not_interleave():
    """The agent's RPC handlers and its loop may call the driver at once: a block is never
    mixed with another thread's calls."""
    import threading

    drv = driver()
    agent_sync(drv, hybrid_ports())
    n = drv.firewall.backend.commits
    done = threading.Event()
    drv.filter_defer_apply_on()
    drv.update_security_group_rules(WEB, GROUPS[WEB][1:])
    t = threading.Thread(target=lambda: (drv.update_security_group_rules(DB, GROUPS[DB][:1]),
                                         done.set()))
    t.start()
    assert not done.wait(0.3)                  # waits for the open block
    drv.filter_defer_apply_off()
    t.join(5)
    assert done.is_set() and drv.firewall.backend.commits == n + 2
    assert len(drv.firewall.model.groups[DB]) == 1 and len(drv.firewall.model.groups[WEB]) == 2
