"""Kernel encodings used by the direct element path (checked against what nft 1.0.6 sends, seen
with `nft --debug=netlink`: words printed little-endian)."""

import sys

import pytest

from fwsg.backends.nft.netlink import encodable, encode_key, encode_value
from fwsg.ruleset import SetDef


def words(b):
    return " ".join(b[i:i + 4][::-1].hex() for i in range(0, len(b), 4))


def test_concat_ifname_mac_ipv4_matches_nft():
    key = encode_key("ifname . ether_addr . ipv4_addr", '"tap1" . fa:16:3e:00:00:01 . 192.0.2.1')
    assert words(key) == ("31706174 00000000 00000000 00000000 003e16fa 00000100 010200c0")


def test_ifname_and_mark():
    assert words(encode_key("ifname", '"tap1"')) == "31706174 00000000 00000000 00000000"
    if sys.byteorder == "little":
        assert words(encode_value("mark", "0x00010000")) == "00010000"
        assert words(encode_key("mark", "0x00000002")) == "00000002"


def test_addresses_and_verdicts():
    assert encode_key("ipv6_addr", "2001:db8::1") == bytes.fromhex("20010db8" + "0" * 22 + "01")
    assert encode_value("verdict", "jump pab12-e") == "pab12-e"
    assert encode_value("verdict", "drop") == 0   # NF_DROP (the ambiguous receiver's entry)
    with pytest.raises(ValueError):
        encode_value("verdict", "accept")
    with pytest.raises(ValueError):
        encode_key("ifname", '"a-name-that-is-too-long"')


def test_encodable():
    assert encodable(SetDef("bridge", "spoof4", "ifname . ether_addr . ipv4_addr"))
    assert encodable(SetDef("inet", "egress", "mark", "verdict"))
    assert not encodable(SetDef("inet", "g-m4n", "ipv4_addr", interval=True))
    assert encodable(SetDef("inet", "g-pi", "nf_proto . inet_proto . inet_service"))
    assert not encodable(SetDef("inet", "x", "ether_type"))


def test_port_set_elements_match_nft():
    key_type = "nf_proto . inet_proto . inet_service"
    assert words(encode_key(key_type, "ipv4 . tcp . 8443")) == "00000002 00000006 0000fb20"
    assert words(encode_key(key_type, "ipv6 . udp . 53")) == "0000000a 00000011 00003500"
    assert encode_key(key_type, "ipv4 . 99 . 1") == encode_key(key_type, "2 . 99 . 1")
    for bad in ("ipv5 . tcp . 1", "ipv4 . tcp . 65536", "ipv4 . 256 . 1", "ipv4 . tcp . -1",
                "ipv4 . tcp"):
        with pytest.raises(ValueError):
            encode_key(key_type, bad)


@pytest.mark.parametrize("sd,items", [
    (SetDef("inet", "ingress4", "ipv4_addr", "mark"), [("192.0.2.1", "0x00000002"),
                                                       ("192.0.2.9", "0x0000ffff")]),
    (SetDef("inet", "ingress6", "ipv6_addr", "mark"), [("2001:db8::1", "0x00000002")]),
    (SetDef("inet", "egress", "mark", "verdict"), [("0x00020000", "jump pab12-e"),
                                                   ("0x00030000", "drop")]),
    (SetDef("bridge", "port-src", "ifname", "mark"), [('"tap1"', "0x00010000")]),
])
def test_a_map_batch_is_each_entry_encoded(sd, items):
    from fwsg.backends.nft.netlink import _element_op

    op = _element_op(True, sd, items)
    assert op[5] == [encode_key(sd.key_type, k) for k, _ in items]
    assert op[7] == [encode_value(sd.value_type, v) for _, v in items]


@pytest.mark.parametrize("key_type,text", [("ipv4_addr", "192.0.2.300"), ("ipv6_addr", "2001:db8::g"),
                                           ("ipv4_addr", "2001:db8::1"), ("mark", "0xzz")])
def test_a_key_that_does_not_encode_is_a_value_error(key_type, text):
    with pytest.raises(ValueError):
        encode_key(key_type, text)
