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
    assert not encodable(SetDef("inet", "x", "inet_service"))
