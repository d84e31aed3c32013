"""Group-chain rules built as netlink expressions (fwsg.backends.nft.matches) leave the same
kernel as libnftables: the same rules listed back, and a rule change through the Firewall
ends in the ruleset a fresh apply of the same model writes."""

import os
import subprocess

import pytest

from fwsg import _fast_py
from fwsg.backends.nft import matches
from fwsg.firewall import Firewall
from fwsg.lab import netns_available
from fwsg.netns import entered

try:
    from fwsg import _fast as _fast_c
except ImportError:  # pragma: no cover
    _fast_c = None

SETUP = """add table inet fwsg
add chain inet fwsg g1-i
add set inet fwsg s4 { type ipv4_addr; }
add set inet fwsg s6 { type ipv6_addr; }
add set inet fwsg p4 { type ipv4_addr; flags interval; }
"""

RULES = [
    "ip saddr 198.51.100.0/24 tcp dport 22 accept",
    "ip saddr 198.51.100.128/25 udp sport 1000-2000 accept",
    "ip daddr 10.0.0.0/7 accept",
    "ip6 saddr 2001:db8::/60 meta l4proto 47 accept",
    "ip6 daddr 2001:db8:1::/48 sctp dport 80-90 accept",
    "meta nfproto ipv4 udp dport 53 accept",
    "meta nfproto ipv4 icmp type 8 accept",
    "meta nfproto ipv6 icmpv6 type 128 accept",
    "meta nfproto ipv4 meta l4proto 1 accept",
    "meta nfproto ipv6 accept",
    "ip saddr @s4 tcp dport 5432 accept",
    "ip saddr @p4 dccp dport 5 accept",
    "ip6 daddr @s6 udplite dport 1-65535 accept",
    "ip saddr 192.0.2.5/32 meta l4proto 136 accept",
    "meta nfproto ipv4 icmp type 3 icmp code 1 accept",
    "ip6 saddr @s6 icmpv6 type 1 icmpv6 code 4 accept",
    "meta nfproto ipv4 tcp sport 1024 tcp dport 22 accept",
    "ip saddr @s4 udp sport 53 udp dport 1000-2000 accept",
    "ip saddr 198.51.100.0/24 udp sport 50-60 udp dport 1000 accept",
    "ip saddr 192.0.2.0/24 ip daddr 198.51.100.0/25 tcp dport 22 accept",
    "ip6 saddr 2001:db8::/32 ip6 daddr @s6 accept",
]


@pytest.fixture
def two_namespaces():
    ok, why = netns_available()
    if not ok:
        pytest.skip(why)
    names = [f"fwsg-xr-{os.getpid()}-{i}" for i in range(2)]
    for n in names:
        subprocess.run(["ip", "netns", "add", n], check=True)
    try:
        yield names
    finally:
        for n in names:
            subprocess.run(["ip", "netns", "del", n])


def _ruleset(ns):
    return subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(_fast_c is None, reason="fwsg._fast not built")
def test_expressions_list_back_as_the_rules_libnftables_writes(two_namespaces):
    ops = [("xrule", "inet", "g1-i", r, matches.encode(r), None) for r in RULES]
    ops[-1] = ops[-1][:5] + ("fwsg:0123456789abcdef/14",)
    for ns, mod in zip(two_namespaces, (_fast_c, _fast_py)):
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=SETUP, text=True,
                       check=True)
        with entered(ns):
            writer = mod.NetlinkWriter()
        writer.commit(ops)
        writer.close()
    a, b = (_ruleset(ns) for ns in two_namespaces)
    assert a == b
    assert a.count(" accept") == len(RULES) and 'comment "fwsg:0123456789abcdef/14"' in a


def _doc(extra_rule=None):
    rules = [{"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
              "port_range_min": 22, "port_range_max": 22, "remote_group_id": "web"},
             {"direction": "ingress", "ethertype": "IPv4", "protocol": "udp",
              "source_port_range_min": 1000, "source_port_range_max": 2000,
              "remote_ip_prefix": "198.51.100.128/25"},
             {"direction": "ingress", "ethertype": "IPv6", "protocol": "icmp",
              "port_range_min": 128},
             {"direction": "egress", "ethertype": "IPv6", "remote_ip_prefix": "2001:db8::/60"},
             {"direction": "egress", "ethertype": "IPv4"}]
    if extra_rule:
        rules.append(extra_rule)
    return {"security_groups": {"db": rules, "web": []},
            "sg_member_ips": {"web": {"IPv4": ["192.0.2.7", "198.51.100.0/28"], "IPv6": []}},
            "devices": {"p1": {"device": "tapdb", "mac_address": "fa:16:3e:00:00:01",
                               "fixed_ips": ["192.0.2.1"], "security_groups": ["db"]}}}


def test_a_rule_change_goes_through_netlink_and_ends_as_a_fresh_apply(two_namespaces):
    extra = {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
             "port_range_min": 8000, "port_range_max": 8080}
    changed = _doc(extra)
    fw = Firewall(netns=two_namespaces[0])
    fw.apply(_doc())
    r = fw.update_security_group_rules("db", changed["security_groups"]["db"])
    assert r.changed and r.transport == "netlink"
    Firewall(netns=two_namespaces[1]).apply(changed)
    a, b = (_ruleset(ns) for ns in two_namespaces)
    assert a == b and "tcp dport 8000-8080 accept" in a
    assert Firewall(netns=two_namespaces[0]).reconcile(changed).repaired == []


def test_rules_edited_by_handle_through_netlink_or_libnftables_leave_the_same_kernel(
        two_namespaces, monkeypatch):
    """The same rule changes in two namespaces: through the netlink writer in one, through
    libnftables (the plan as nft text: insert/replace/delete rule ... handle) in the other,
    once both know the chain's handles. Same rules listed back, equal to a fresh apply."""
    from fwsg.backends.nft import netlink

    extra = {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
             "port_range_min": 8000, "port_range_max": 8080}
    first = dict(extra, port_range_min=22, port_range_max=22, remote_ip_prefix="203.0.113.0/24")
    base = _doc()["security_groups"]["db"]
    fws = [Firewall(netns=ns) for ns in two_namespaces]
    traced = netlink.netlink_ops_traced
    plans = {0: [], 1: []}
    for i, fw in enumerate(fws):
        fw.apply(_doc())
        fw.update_security_group_rules("db", base + [extra])   # rewritten: handles reported
        commit = fw.backend.commit
        monkeypatch.setattr(fw.backend, "commit",
                            lambda plan, i=i, commit=commit: plans[i].append(plan) or commit(plan))
    for rules in (base, [first] + base, [first] + base + [extra], base + [extra]):
        for i, fw in enumerate(fws):
            if i == 1:
                monkeypatch.setattr(netlink, "netlink_ops_traced", lambda plan: None)
            r = fw.update_security_group_rules("db", rules)
            monkeypatch.setattr(netlink, "netlink_ops_traced", traced)
            assert r.transport == ("netlink", "libnftables")[i] and not r.repaired
            assert plans[i][-1].guard is not None and not any(
                type(op).__name__ == "FlushChain" for op in plans[i][-1].ops)
            if i == 1:   # libnftables reports no handles: rewritten next time, then by handle
                fw.update_security_group_rules("db", rules + [dict(extra, port_range_min=9,
                                                                   port_range_max=10)])
                fw.update_security_group_rules("db", rules)
        a, b = (_ruleset(ns) for ns in two_namespaces)
        assert a == b
        doc = _doc()
        doc["security_groups"]["db"] = rules
        for fw in fws:
            assert not Firewall(netns=fw.netns).plan(doc)
            assert Firewall(netns=fw.netns).reconcile(doc).repaired == []


def test_a_rule_another_program_put_into_the_chain_stops_the_edit_by_handle(two_namespaces):
    """Another program inserts a rule into fwsg's group chain (its commit moves the
    generation): fwsg's next rule change is refused by the kernel as made against an older
    generation, nothing of it applied, and redone by rewriting the chain: the kernel ends equal
    to a fresh apply of the model, the foreign accept gone, no rule deleted by a stale handle."""
    ns = two_namespaces[0]
    extra = {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
             "port_range_min": 8000, "port_range_max": 8080}
    base = _doc()["security_groups"]["db"]
    fw = Firewall(netns=ns)
    fw.apply(_doc())
    fw.update_security_group_rules("db", base + [extra])     # rewritten: handles reported
    chain = next(k[1] for k in fw.current().meta["rule_handles"] if k[1].endswith("-i"))
    plans, commit = [], fw.backend.commit
    fw.backend.commit = lambda plan: plans.append(plan) or commit(plan)
    fw.update_security_group_rules("db", base)               # by handle
    assert plans[-1].guard is not None
    subprocess.run(["ip", "netns", "exec", ns, "nft", "insert", "rule", "inet", "fwsg", chain,
                    "tcp", "dport", "9999", "accept"], check=True)
    plans.clear()
    r = fw.update_security_group_rules("db", base + [extra])
    assert [p.guard is not None for p in plans] == [True, False] and not r.repaired
    listed = _ruleset(ns)
    assert "dport 9999" not in listed and "tcp dport 8000-8080 accept" in listed
    Firewall(netns=two_namespaces[1]).apply(_doc(extra))
    assert listed == _ruleset(two_namespaces[1])
