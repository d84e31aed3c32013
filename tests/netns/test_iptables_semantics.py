"""The semantics suite against the iptables backend, with iptables-legacy and iptables-nft:
the behaviour tests of test_semantics.py run unchanged on a lab whose Firewall uses
``backend="iptables-<variant>"`` (the nft-specific ones - nft handles, netlink transport,
libnftables steps - are replaced by iptables equivalents in test_iptables_backend.py)."""

import functools

import pytest

from fwsg.firewall import Firewall
from tests.netns import test_semantics as sem
from tests.netns.fwlab import flush_conntrack, running_lab

VARIANTS = ("legacy", "nft")


@pytest.fixture(scope="module", params=VARIANTS)
def fwlab(request):
    with running_lab(f"ipt{request.param[0]}") as (lab, _):
        fw = Firewall(netns=lab.host_ns, backend=f"iptables-{request.param}")
        try:
            yield lab, fw
        finally:
            fw.flush()


@pytest.fixture
def env(fwlab, monkeypatch):
    """The lab, its Firewall; the shared tests' cold read-backs (``Firewall(netns=...)``) use
    the same backend and variant."""
    lab, fw = fwlab
    flush_conntrack(lab)
    monkeypatch.setattr(sem, "Firewall", functools.partial(
        Firewall, backend=f"iptables-{fw.backend.variant}"))
    return lab, fw


routed_peer = sem.routed_peer

SHARED = [
    "test_tcp_port_single_and_v6", "test_port_ranges_udp_and_any_protocol",
    "test_icmp_type_and_code", "test_sctp", "test_remote_prefix",
    "test_remote_group_without_members_matches_nothing",
    "test_stateful_replies_pass_new_reverse_does_not", "test_stateless_group",
    "test_related_icmp_errors_pass", "test_anti_spoofing_ip_mac_arp_and_address_pairs",
    "test_dhcp_client_allowed_server_dropped", "test_router_advertisement_from_vm_dropped_nd_works",
    "test_port_security_disabled_is_unfiltered", "test_same_host_checked_on_both_sides",
    "test_vm_to_hypervisor_takes_egress_rules", "test_hypervisor_to_vm_takes_ingress_rules",
    "test_losing_its_rule_cuts_an_established_connection",
    "test_removing_a_member_or_port_cuts_its_connections", "test_ipv6_anti_spoofing_and_dad",
    "test_incremental_removals_cut_flows_and_spare_the_others",
    "test_traffic_routed_by_the_hypervisor_takes_ingress_rules",
    "test_overlapping_prefixes_replace_each_other", "test_large_member_list_update",
]
for _name in SHARED:
    globals()[_name] = getattr(sem, _name)


@pytest.mark.parametrize("variant", VARIANTS)
def test_bridge_netfilter_is_switched_on_and_reported(lab_factory, monkeypatch, variant):
    monkeypatch.setattr(sem, "Firewall", functools.partial(Firewall,
                                                           backend=f"iptables-{variant}"))
    sem.test_bridge_netfilter_is_switched_on_and_reported(lab_factory)
