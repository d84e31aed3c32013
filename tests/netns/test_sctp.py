"""SCTP filtering with real packets, without SCTP sockets: this kernel has no SCTP stack
(socket(..., IPPROTO_SCTP) gives EPROTONOSUPPORT), but nftables and conntrack still parse SCTP.
vm1 sends raw SCTP INIT packets (IP protocol 132, a correct CRC32c, so conntrack takes them as
NEW and not INVALID) and vm2's interface is sniffed: the port the group allows arrives, the
others do not, although the host's tap shows every one of them entering the bridge."""

import itertools
import socket
import struct

import pytest

from tests.netns.fwlab import ALL_EGRESS, flush_conntrack, model, rule, running_lab

IPPROTO_SCTP = 132
_sport = itertools.count(41000)


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli; reflected, init and final xor 0xffffffff), as SCTP uses it."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def sctp_init(sport: int, dport: int, init_tag: int = 0x1A2B3C4D, corrupt: bool = False) -> bytes:
    """An SCTP packet (common header, verification tag 0) holding one INIT chunk."""
    chunk = struct.pack("!BBHIIHHI", 1, 0, 20, init_tag, 65536, 10, 10, 1)
    header = struct.pack("!HHII", sport, dport, 0, 0)
    csum = crc32c(header + chunk)
    if corrupt:
        csum ^= 0x5A5A5A5A
    # the checksum field holds the CRC in little-endian byte order (RFC 9260 appendix A)
    return struct.pack("!HHI", sport, dport, 0) + struct.pack("<I", csum) + chunk


def test_crc32c_and_packet_layout():
    assert crc32c(b"123456789") == 0xE3069283           # the standard check value
    assert crc32c(bytes(32)) == 0x8A9136AA               # RFC 3720 B.4: 32 bytes of zeros
    pkt = sctp_init(41000, 5000)
    assert len(pkt) == 32
    assert struct.unpack("!HHI", pkt[:8]) == (41000, 5000, 0)
    # verifying: the CRC over the packet with a zero checksum field equals the field
    assert struct.unpack("<I", pkt[8:12])[0] == crc32c(pkt[:8] + bytes(4) + pkt[12:])
    assert pkt[12] == 1 and struct.unpack("!H", pkt[14:16])[0] == 20


@pytest.fixture(scope="module")
def fwlab():
    with running_lab("sctp") as (lab, fw):
        groups = {"s": [rule("ingress", protocol="sctp", ports=5000),
                        rule("ingress", "IPv6", protocol="sctp", ports=5000)] + ALL_EGRESS,
                  "open": ALL_EGRESS}
        fw.apply(model(lab, groups, {"vm1": ["open"], "vm2": ["s"]}))
        yield lab, fw


def _send(lab, family, dst_ip, packets):
    """Send raw SCTP packets (the kernel adds the IP header) from vm1 to ``dst_ip``."""
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    with lab.netns("vm1"):
        s = socket.socket(af, socket.SOCK_RAW, IPPROTO_SCTP)
    try:
        for pkt in packets:
            s.sendto(pkt, (dst_ip, 0) if family == 4 else (dst_ip, 0, 0, 0))
    finally:
        s.close()


def _sctp_ports(frame):
    """(sport, dport) of an SCTP frame, else None."""
    if frame.proto != IPPROTO_SCTP or frame.payload is None or len(frame.payload) < 12:
        return None
    return struct.unpack("!HH", frame.payload[:4])


def _is(frame, src, dst, sport, dport):
    return (frame.src_ip == src and frame.dst_ip == dst
            and _sctp_ports(frame) == (sport, dport))


@pytest.mark.parametrize("family", [4, 6])
def test_sctp_init_allowed_port_passes_others_do_not(fwlab, family):
    lab, fw = fwlab
    flush_conntrack(lab)
    src, dst = lab.node("vm1").addr(family), lab.node("vm2").addr(family)
    s_closed, s_open, s_bad, s_range = (next(_sport) for _ in range(4))
    # the blocked ones first: were they let through, they would arrive before the allowed one
    sends = [(s_closed, 5001, False), (s_range, 4999, False), (s_bad, 5000, True),
             (s_open, 5000, False)]
    with lab.sniff("vm2") as at_vm2, lab.sniff("host", iface="tap-vm1") as at_bridge:
        _send(lab, family, dst, [sctp_init(sp, dp, corrupt=bad) for sp, dp, bad in sends])
        # every packet left vm1 and entered the bridge: what follows is the filter's doing
        for sp, dp, _ in sends:
            assert at_bridge.seen(lambda f, sp=sp, dp=dp: _is(f, src, dst, sp, dp), timeout=2), \
                (sp, dp)
        assert at_vm2.seen(lambda f: _is(f, src, dst, s_open, 5000), timeout=2), \
            f"SCTP INIT to port 5000 (allowed) did not reach vm2: {at_vm2.frames()}"
        assert not at_vm2.seen(lambda f: _is(f, src, dst, s_closed, 5001), timeout=0.3)
        assert not at_vm2.seen(lambda f: _is(f, src, dst, s_range, 4999))
        # a bad checksum makes the packet INVALID for conntrack: dropped before any allow rule
        assert not at_vm2.seen(lambda f: _is(f, src, dst, s_bad, 5000))
    # what reached vm2 is exactly the allowed INIT, byte for byte
    got = [f for f in at_vm2.frames() if _sctp_ports(f)]
    assert [_sctp_ports(f) for f in got] == [(s_open, 5000)]
    assert got[0].payload[:32] == sctp_init(s_open, 5000)


def test_sctp_without_a_rule_is_dropped_and_udp_5000_too(fwlab):
    """The allow is the sctp rule's: the same port over UDP, and SCTP to a VM whose groups have
    no sctp rule, do not pass."""
    lab, fw = fwlab
    flush_conntrack(lab)
    assert not lab.udp_exchange("vm1", "vm2", port=5000)
    src, dst = lab.node("vm2").addr(4), lab.node("vm1").addr(4)   # vm1: group "open", no sctp
    sp = next(_sport)
    with lab.sniff("vm1") as at_vm1, lab.sniff("host", iface="tap-vm2") as at_bridge:
        with lab.netns("vm2"):
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_SCTP)
        try:
            s.sendto(sctp_init(sp, 5000), (dst, 0))
        finally:
            s.close()
        assert at_bridge.seen(lambda f: _is(f, src, dst, sp, 5000), timeout=2)
        assert not at_vm1.seen(lambda f: _is(f, src, dst, sp, 5000), timeout=0.5)
