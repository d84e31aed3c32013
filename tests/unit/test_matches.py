"""The group-chain rule encoder: the bytecode nft sends for the forms fwsg writes, a clear
refusal (ValueError: the rule goes to libnftables) for the rest."""

import pytest

from fwsg.backends.nft.matches import ACCEPT, CMP_EQ, CMP_GTE, CMP_LTE, encode
from fwsg.backends.nft.desired import Desired
from fwsg.lab.scenario import generate
from fwsg.model import Model


def test_a_prefix_and_a_port_range():
    assert encode("ip saddr 198.51.100.0/24 tcp sport 1000-2000 accept") == (
        ("meta", 15), ("cmp", CMP_EQ, b"\x02"),
        ("payload", 1, 12, 3), ("cmp", CMP_EQ, bytes([198, 51, 100])),
        ("meta", 16), ("cmp", CMP_EQ, b"\x06"), ("payload", 2, 0, 2),
        ("cmp", CMP_GTE, (1000).to_bytes(2, "big")), ("cmp", CMP_LTE, (2000).to_bytes(2, "big")),
        ("verdict", ACCEPT))
    assert encode("ip6 daddr 2001:db8::/60 accept")[2:5] == (
        ("payload", 1, 24, 16), ("bitwise", b"\xff" * 7 + b"\xf0" + bytes(8), bytes(16)),
        ("cmp", CMP_EQ, bytes.fromhex("20010db8") + bytes(12)))


def test_merged_loads_as_nft_writes_them():
    # an ICMP type and code, and two exact ports, are one load (nft merges them); a port
    # range keeps its own load; two addresses are two loads
    assert encode("meta nfproto ipv4 icmp type 3 icmp code 1 accept")[2:] == (
        ("meta", 16), ("cmp", CMP_EQ, b"\x01"), ("payload", 2, 0, 2),
        ("cmp", CMP_EQ, b"\x03\x01"), ("verdict", ACCEPT))
    assert encode("meta nfproto ipv4 tcp sport 1 tcp dport 2 accept")[4:] == (
        ("payload", 2, 0, 4), ("cmp", CMP_EQ, b"\x00\x01\x00\x02"), ("verdict", ACCEPT))
    assert encode("meta nfproto ipv4 udp sport 53 udp dport 1000-2000 accept")[4:] == (
        ("payload", 2, 0, 2), ("cmp", CMP_EQ, b"\x00\x35"), ("payload", 2, 2, 2),
        ("cmp", CMP_GTE, (1000).to_bytes(2, "big")), ("cmp", CMP_LTE, (2000).to_bytes(2, "big")),
        ("verdict", ACCEPT))
    assert encode("ip saddr 192.0.2.0/24 ip daddr @m4 accept") == (
        ("meta", 15), ("cmp", CMP_EQ, b"\x02"), ("payload", 1, 12, 3),
        ("cmp", CMP_EQ, bytes([192, 0, 2])), ("payload", 1, 16, 4), ("lookup", "m4"),
        ("verdict", ACCEPT))


@pytest.mark.parametrize("text", [
    "ip saddr 192.0.2.0/24 ip saddr 198.51.100.0/24 accept",
    "ip saddr 192.0.2.0/24 ip6 daddr 2001:db8::/32 accept",
    "meta nfproto ipv6 icmp type 8 accept",
    "ip saddr 192.0.2.0/24 drop",
    "tcp dport 22 accept",
    "ct state established accept",
])
def test_forms_it_does_not_write_are_refused(text):
    with pytest.raises(ValueError):
        encode(text)


def test_every_group_rule_of_a_generated_model_is_encoded_or_refused():
    d = Desired().load(Model.from_wire(generate(ports=30, groups=12, rules=25, members=300,
                                                seed=5)))
    encoded = refused = 0
    for (fam, name), chain in d.rs.chains.items():
        if fam != "inet" or not name.startswith("g"):
            continue
        for rule in chain.rules:
            try:
                encode(rule)
                encoded += 1
            except ValueError:
                refused += 1
    assert encoded > 10 * max(1, refused)


@pytest.mark.parametrize("prefix", ["192.0.2.0/24", "192.0.2.128/25", "198.51.100.7/32",
                                    "10.0.0.0/8", "128.0.0.0/1", "2001:db8::/32",
                                    "2001:db8::/33", "2001:db8::1/128", "::ffff:192.0.2.0/120",
                                    "2001:DB8::/32", "192.0.2.0/024"])
def test_a_prefix_matches_its_network_as_ipaddress_reads_it(prefix):
    import ipaddress

    net = ipaddress.ip_network(prefix)
    fam, width = net.version, (4 if net.version == 4 else 16)
    exprs = encode(f"{'ip' if fam == 4 else 'ip6'} saddr {prefix} accept")[2:-1]
    offset = 12 if fam == 4 else 8
    if net.prefixlen % 8 == 0:
        n = net.prefixlen // 8
        assert exprs == (("payload", 1, offset, n), ("cmp", CMP_EQ, net.network_address.packed[:n]))
    else:
        assert exprs == (("payload", 1, offset, width),
                         ("bitwise", net.netmask.packed, bytes(width)),
                         ("cmp", CMP_EQ, net.network_address.packed))


@pytest.mark.parametrize("prefix", ["192.0.2.1/24", "0.0.0.0/0", "192.0.2.0/33", "2001:db8::/129",
                                    "2001:db8::1/64", "192.0.2.0/ 24", "192.0.2/24", "010.0.0.0/8"])
def test_a_prefix_with_host_bits_or_no_length_is_refused(prefix):
    with pytest.raises(ValueError):
        encode(f"ip{'6' if ':' in prefix else ''} saddr {prefix} accept")
