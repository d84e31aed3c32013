"""The wire format: every documented variant is accepted; bad input names path and value."""

import copy

import pytest

from fwsg.errors import ValidationError
from fwsg.model import Model, parse_rule, parse_rules


def test_neutron_reply_parses_verbatim(neutron_reply):
    m = Model.from_wire(neutron_reply)
    assert len(m.ports) == 4 and len(m.groups) == 3
    port = m.ports["4f468977-0938-433c-bf9e-48403c67523f"]
    assert port.device == "tap4f468977-09"
    assert port.mac == "fa:16:3e:03:27:37"
    assert port.fixed_ips == ("192.0.2.11", "2001:db8::11")
    # server-added rules: RA as ICMPv6 type 134 from source_port_range_min, DHCP replies
    ra = [r for r in port.rules if r.protocol == 58]
    assert ra and ra[0].icmp_type == 134 and ra[0].direction == "ingress"
    dhcp = [r for r in port.rules if r.protocol == 17 and r.family == 4]
    assert {(r.sport_min, r.port_min, r.dst) for r in dhcp} == {
        (67, 68, "192.0.2.11/32"), (67, 68, "255.255.255.255/32")}
    # source_ip_prefix on ingress, "::/0" means any
    sg = m.groups["035efa25-9b08-423d-90c6-7fd994b2b8fd"]
    assert sg[0].src == "2001:db8:ffff::/64" and sg[1].src is None
    assert sg[2].port_min == 5000 and sg[2].port_max == 5010
    # members as [ip, null] pairs; a group with only IPv6
    assert m.members_of("035efa25-9b08-423d-90c6-7fd994b2b8fd", 4) == ("192.0.2.12",)
    assert m.members_of("a02f34a6-795b-429e-9a9a-80fdea7b5bf5", 4) == ()
    assert m.members_of("a02f34a6-795b-429e-9a9a-80fdea7b5bf5", 6) == ("2001:db8::11",)


def test_round_trip(neutron_reply, demo_model):
    for doc in (neutron_reply, demo_model):
        m = Model.from_wire(doc)
        assert Model.from_wire(m.to_wire()) == m


@pytest.mark.parametrize("raw,expect", [
    ({"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22,
      "port_range_max": 22, "remote_ip_prefix": "198.51.100.0/24"},
     dict(protocol=6, port_min=22, port_max=22, src="198.51.100.0/24", dst=None)),
    ({"direction": "egress", "ethertype": "IPv4", "protocol": "17", "port_range_min": 53,
      "remote_ip_prefix": "203.0.113.7"},
     dict(protocol=17, port_min=53, port_max=53, dst="203.0.113.7/32", src=None)),
    ({"direction": "ingress", "ethertype": "IPv6", "protocol": "icmp", "port_range_min": 128,
      "port_range_max": 0}, dict(protocol=58, icmp_type=128, icmp_code=0)),
    ({"direction": "ingress", "ethertype": "IPv4", "protocol": 132, "port_range_min": 5000,
      "port_range_max": 5010, "source_port_range_min": 1024, "source_port_range_max": 2048},
     dict(protocol=132, port_min=5000, sport_min=1024, sport_max=2048)),
    ({"direction": "egress", "ethertype": "IPv4", "stateful": False}, dict(stateful=False)),
    ({"direction": "ingress", "ethertype": "IPv4", "remote_ip_prefix": "192.0.2.77/24"},
     dict(src="192.0.2.0/24")),
])
def test_rule_variants(raw, expect):
    r = parse_rule("r", raw)
    for k, v in expect.items():
        assert getattr(r, k) == v, k


BAD = [
    (("sg_member_ips", "sg-a", "IPv4"), ["192.0.2.300"], "sg_member_ips.sg-a.IPv4[0]", "192.0.2.300"),
    (("devices", "p1", "fixed_ips"), ["10.0.0.300"], "devices.p1.fixed_ips[0]", "10.0.0.300"),
    (("security_groups", "sg-a", 0, "remote_ip_prefix"), "2001:db8::/64",
     "security_groups.sg-a[0].remote_ip_prefix", "IPv4"),
    (("security_groups", "sg-a", 0, "port_range_min"), 90, "security_groups.sg-a[0].port_range_min", "90"),
    (("security_groups", "sg-a", 0, "protocol"), "bogus", "security_groups.sg-a[0].protocol", "bogus"),
    (("devices", "p1", "mac_address"), "fa:16:3e:zz:00:01", "devices.p1.mac_address", "zz"),
    (("devices", "p1", "device"), 'tap"; flush ruleset', "devices.p1.device", "interface name"),
    (("devices", "p1", "device"), "a-very-long-interface-name", "devices.p1.device", "interface name"),
    (("devices", "p1", "security_groups"), ["sg-missing"], "devices.p1.security_groups[0]", "sg-missing"),
    (("security_groups", "sg-a", 0, "direction"), "sideways", "security_groups.sg-a[0].direction", "sideways"),
    (("security_groups", "sg-a", 0, "ethertype"), "IPv5", "security_groups.sg-a[0].ethertype", "IPv5"),
    (("devices", "p1", "port_security_enabled"), "yes", "devices.p1.port_security_enabled", "yes"),
    (("security_groups", "sg-a", 0, "port_range_max"), 70000, "security_groups.sg-a[0].port_range_max", "70000"),
]


def _base():
    return {
        "security_groups": {"sg-a": [{"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                                      "port_range_min": 80, "port_range_max": 81,
                                      "remote_ip_prefix": "192.0.2.0/24"}]},
        "sg_member_ips": {"sg-a": {"IPv4": ["192.0.2.1"], "IPv6": []}},
        "devices": {"p1": {"device": "tap1", "mac_address": "fa:16:3e:00:00:01",
                           "fixed_ips": ["192.0.2.1"], "security_groups": ["sg-a"]}},
    }


@pytest.mark.parametrize("where,value,path,fragment", BAD)
def test_bad_input_names_path_and_value(where, value, path, fragment):
    doc = _base()
    node = doc
    for k in where[:-1]:
        node = node[k]
    node[where[-1]] = value
    with pytest.raises(ValidationError) as ei:
        Model.from_wire(doc)
    msg = str(ei.value)
    assert msg.startswith(path + ":"), msg
    assert fragment in msg
    assert "\n" not in msg


def test_base_is_valid():
    assert Model.from_wire(_base()).ports["p1"].device == "tap1"


def test_mixed_stateful_and_stateless_groups_rejected():
    doc = _base()
    doc["security_groups"]["sg-b"] = [{"direction": "egress", "ethertype": "IPv4", "stateful": False}]
    doc["devices"]["p1"]["security_groups"] = ["sg-a", "sg-b"]
    with pytest.raises(ValidationError, match="stateful and stateless"):
        Model.from_wire(doc)


def test_two_ports_on_one_device_named_whatever_the_groups():
    """The whole-model check names the second port of a device, with every group stateful and
    with stateless groups of their own ports beside them (no port mixing)."""
    for stateless in (False, True):
        doc = _base()
        doc["devices"]["p2"] = dict(doc["devices"]["p1"], mac_address="fa:16:3e:00:00:02")
        if stateless:
            doc["security_groups"]["sg-b"] = [{"direction": "egress", "ethertype": "IPv4",
                                               "stateful": False}]
            doc["devices"]["p3"] = dict(doc["devices"]["p1"], device="tap3",
                                        mac_address="fa:16:3e:00:00:03", security_groups=["sg-b"])
            doc["devices"]["p2"]["device"] = "tap2"
            assert set(Model.from_wire(doc).ports) == {"p1", "p2", "p3"}
            doc["devices"]["p3"]["device"] = "tap1"
        with pytest.raises(ValidationError, match=r"^devices\.p[23]\.device: 'tap1' is also the "
                           r"device of port 'p1'"):
            Model.from_wire(doc)


def test_members_accept_bare_pairs_and_prefixes():
    doc = _base()
    doc["sg_member_ips"]["sg-a"] = {"IPv4": ["192.0.2.5", ["192.0.2.6", "fa:16:3e:00:00:06"],
                                             "198.51.100.0/24", "192.0.2.7/32"],
                                    "IPv6": ["2001:DB8::0:1"]}
    m = Model.from_wire(doc)
    assert m.members_of("sg-a", 4) == ("192.0.2.5", "192.0.2.6", "192.0.2.7", "198.51.100.0/24")
    assert m.members_of("sg-a", 6) == ("2001:db8::1",)


def test_unknown_keys_ignored_and_wrong_types_rejected():
    doc = _base()
    doc["devices"]["p1"]["binding:host_id"] = "hv1"
    doc["extra"] = {"whatever": 1}
    Model.from_wire(doc)
    bad = copy.deepcopy(doc)
    bad["devices"]["p1"]["fixed_ips"] = "192.0.2.1"
    with pytest.raises(ValidationError, match=r"^devices.p1.fixed_ips: .* is not a list"):
        Model.from_wire(bad)


def test_address_pairs_and_link_local():
    doc = _base()
    doc["devices"]["p1"]["allowed_address_pairs"] = [
        {"ip_address": "198.51.100.0/24", "mac_address": "fa:16:3e:00:00:99"},
        {"ip_address": "2001:db8::99"}]
    p = Model.from_wire(doc).ports["p1"]
    assert ("198.51.100.0/24", "fa:16:3e:00:00:99") in p.addresses(4)
    v6 = p.addresses(6)
    assert ("2001:db8::99", "fa:16:3e:00:00:01") in v6
    assert ("fe80::f816:3eff:fe00:1", "fa:16:3e:00:00:01") in v6
    assert ("fe80::f816:3eff:fe00:99", "fa:16:3e:00:00:99") in v6


def test_empty_or_foreign_document_is_refused_but_explicit_empty_is_fine():
    with pytest.raises(ValidationError, match="none of security_groups"):
        Model.from_wire({})
    with pytest.raises(ValidationError, match="none of security_groups"):
        Model.from_wire({"port": {}})
    assert Model.from_wire({"devices": {}}).ports == {}


def test_multicast_port_mac_and_bad_member_mac_rejected():
    doc = _base()
    doc["devices"]["p1"]["mac_address"] = "01:00:5e:00:00:01"
    with pytest.raises(ValidationError, match=r"^devices.p1.mac_address: .* multicast"):
        Model.from_wire(doc)
    doc = _base()
    doc["sg_member_ips"]["sg-a"]["IPv4"] = [["192.0.2.1", "zz"]]
    with pytest.raises(ValidationError, match=r"^sg_member_ips.sg-a.IPv4\[0\]\[1\]: 'zz'"):
        Model.from_wire(doc)
    doc["sg_member_ips"]["sg-a"]["IPv4"] = [["192.0.2.1", "FA:16:3E:00:00:01"], ["192.0.2.2", None]]
    assert Model.from_wire(doc).members_of("sg-a", 4) == ("192.0.2.1", "192.0.2.2")


def test_rule_list_cache_does_not_confuse_equal_lists_of_other_types():
    """The rule-list cache is keyed by every dict's keys, values and value types: an equal
    list with a value of another type (True for 1, a float for an int), another order of
    keys or a non-dict item is parsed (and refused) on its own."""
    good = [{"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
             "port_range_min": 1, "port_range_max": 1, "stateful": True}]
    assert parse_rules("sg", good)[0].stateful is True
    assert parse_rules("sg", [dict(good[0])]) is parse_rules("sg", good)   # equal: cached
    with pytest.raises(ValidationError, match=r"^security_groups.sg\[0\].stateful"):
        parse_rules("sg", [dict(good[0], stateful=1)])
    with pytest.raises(ValidationError, match=r"^security_groups.sg\[0\].port_range_min"):
        parse_rules("sg", [dict(good[0], port_range_min=1.5)])
    with pytest.raises(ValidationError, match=r"^security_groups.sg\[1\]"):
        parse_rules("sg", good + ["tcp"])
    unhashable = [dict(good[0], extra=["a list"])]   # no key: parsed every time, still right
    assert parse_rules("sg", unhashable) == parse_rules("sg", good)


def test_rule_list_changed_in_place_is_parsed_again():
    """The last lists of a group are compared by content, not by identity: the same list
    object changed in place is parsed on its own."""
    rules = [{"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
              "port_range_min": 22, "port_range_max": 22}]
    first = parse_rules("sg-inplace", rules)
    assert parse_rules("sg-inplace", rules) is first
    rules[0]["port_range_min"] = rules[0]["port_range_max"] = 80
    again = parse_rules("sg-inplace", rules)
    assert again[0].port_min == 80 and again != first
    rules.append({"direction": "egress"})
    assert len(parse_rules("sg-inplace", rules)) == 2
    del rules[1]
    assert parse_rules("sg-inplace", rules) is again


def test_rule_cache_does_not_confuse_equal_values_of_other_types():
    good = {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 1,
            "port_range_max": 1, "stateful": True}
    assert parse_rule("r", good).stateful is True
    with pytest.raises(ValidationError, match="stateful"):
        parse_rule("r", dict(good, stateful=1))
    with pytest.raises(ValidationError, match="port_range_min"):
        parse_rule("r", dict(good, port_range_min=True))


# addresses a port may not own, each kind at its edges, and neighbours it may own (the
# ``ipaddress`` module's classification is the reference)
PORT_ADDRESSES = ["0.0.0.0", "0.0.0.1", "126.255.255.255", "127.0.0.0", "127.255.255.255",
                  "128.0.0.0", "223.255.255.255", "224.0.0.0", "239.255.255.255", "240.0.0.0",
                  "255.255.255.254", "255.255.255.255", "::", "::1", "::2", "::ffff:127.0.0.1",
                  "::127.0.0.1", "feff:ffff::", "ff00::", "ff02::1", "fe80::1", "2001:db8::1"]


@pytest.mark.parametrize("ip", PORT_ADDRESSES)
def test_fixed_ip_refused_exactly_when_ipaddress_says_unusable(ip):
    import ipaddress

    a = ipaddress.ip_address(ip)
    kind = ("the unspecified address" if a.is_unspecified else "a loopback address"
            if a.is_loopback else "a multicast address" if a.is_multicast
            else "the broadcast address" if ip == "255.255.255.255" else None)
    doc = _base()
    doc["devices"]["p1"]["fixed_ips"] = ["192.0.2.1", ip]
    if kind is None:
        assert Model.from_wire(doc).ports["p1"].fixed_ips == ("192.0.2.1", ip)
        return
    with pytest.raises(ValidationError) as ei:
        Model.from_wire(doc)
    assert str(ei.value) == f"devices.p1.fixed_ips[1]: '{ip}' is {kind}, not a port's address"


@pytest.mark.parametrize("mac", ["00:00:00:00:00:00", "02:00:00:00:00:00", "fa:16:3e:00:00:01",
                                 "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:01", "fe:ff:00:00:ff:fe",
                                 "FA:16:3E:00:00:01", "fa-16-3e-00-00-01", "fa:16:3e:0:0:1"])
def test_link_local_is_netaddrs_modified_eui64(mac):
    import netaddr

    from fwsg.addr import eui64_link_local

    eui64_link_local.cache_clear()
    assert eui64_link_local(mac) == str(netaddr.EUI(mac).ipv6_link_local())


@pytest.mark.parametrize("value", ["192.0.2.77/24", "192.0.2.77/0", "192.0.2.77/32", "192.0.2.77",
                                   "192.0.2.77/024", "2001:DB8::1:2/64", "2001:db8::/0",
                                   "::ffff:192.0.2.77/120", "::192.0.2.77/100", "2001:db8::1",
                                   "2001:db8:0:0:1::/127", "2001:db8::1/128"])
def test_prefix_canonical_as_netaddr_gives_it(value):
    import netaddr

    from fwsg.addr import canonical_network

    net = netaddr.IPNetwork(value)
    assert canonical_network("p", value) == f"{net.network}/{net.prefixlen}"


@pytest.mark.parametrize("value", ["192.0.2.0/33", "2001:db8::/129", "192.0.2.0/-1", "192.0.2/24",
                                   "192.0.2.0/24/1", "192.0.2.0/ 24", "192.0.2.0/1000", 7])
def test_bad_prefix_is_one_line_naming_field_and_value(value):
    doc = _base()
    doc["security_groups"]["sg-a"][0]["remote_ip_prefix"] = value
    with pytest.raises(ValidationError) as ei:
        Model.from_wire(doc)
    assert str(ei.value) == (f"security_groups.sg-a[0].remote_ip_prefix: {value!r} is not an "
                             "IP prefix")


def test_rule_facts_follow_the_rules_they_are_asked_about():
    """Facts of a rule tuple are computed once and given back for that tuple; a list (which
    may change) or an iterator is never answered from the cache."""
    from fwsg.model import rule_facts

    stateful = {"direction": "ingress", "ethertype": "IPv4", "remote_group_id": "sg-b"}
    rules = parse_rules("sg", [stateful, dict(stateful, ethertype="IPv6")])
    facts = rule_facts(rules)
    assert facts is rule_facts(rules)
    assert facts.rules == frozenset(rules) and not facts.stateless
    assert facts.refs == {("sg-b", 4), ("sg-b", 6)}
    listed = list(rules)
    assert rule_facts(listed) == facts
    listed.append(parse_rules("sg", [dict(stateful, stateful=False)])[0])
    changed = rule_facts(listed)
    assert changed.stateless and len(changed.rules) == 3
    assert rule_facts(iter(rules)) == facts
