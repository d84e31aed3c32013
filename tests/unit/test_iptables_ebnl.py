"""ebtables' nat table through netlink (``fwsg.backends.iptables.ebnl``) without a kernel: a
port addition's change packs, message for message and byte for byte, into the batch
ebtables-nft-restore 1.8.9 sends for the same restore text (captured from it: see the golden
file); what it does not pack is left to the restore tool."""

import pathlib
import struct

import pytest

from fwsg.backends.iptables import ebnl
from fwsg.backends.iptables.plan import TableChange
from fwsg.backends.iptables.state import Chain

GOLDEN = pathlib.Path(__file__).with_name("golden") / "ebtables-nft-port-add.batch"


def _golden():
    lines = GOLDEN.read_text().splitlines()
    text = "".join(line[2:] + "\n" for line in lines if line.startswith("> "))
    data = bytes.fromhex("".join(line for line in lines if line and line[0] not in "#>"))
    return text, data


def _messages(data):
    """[(type, flags, nfgenmsg family, body)] of a netlink batch (sequence numbers left out)."""
    out, i = [], 0
    while i < len(data):
        n, typ, flags, _seq, _pid = struct.unpack_from("=IHHII", data, i)
        out.append((typ, flags, data[i + 16], data[i + 20:i + n]))
        i += (n + 3) & ~3
    return out


def _port_change():
    rules = ("-p ARP -s fa:16:3e:00:00:01 --arp-ip-src 192.0.2.10 --arp-mac-src "
             "fa:16:3e:00:00:01 -j RETURN",
             "-p ARP -s fa:16:3e:00:00:02 --arp-ip-src 192.0.2.11 --arp-mac-src "
             "fa:16:3e:00:00:02 -j RETURN",
             "-p ARP -s fa:16:3e:00:00:01 --arp-ip-src 0.0.0.0 --arp-mac-src "
             "fa:16:3e:00:00:01 -j RETURN",
             "-p ARP -j DROP", "-s fa:16:3e:00:00:01 -j RETURN", "-s fa:16:3e:00:00:02 -j RETURN")
    return TableChange(chains={"fwsg-a0a0a0a-12345678-7": Chain(rules, "DROP")}, new=1,
                       new_bags=["fwsg-arp-bbbbbb"],
                       bag_add={"fwsg-arp": ["-i tapz+ -j fwsg-arp-bbbbbb"],
                                "fwsg-arp-bbbbbb": ["-i tapz0 -j fwsg-a0a0a0a-12345678-7"]})


def test_port_addition_packs_as_ebtables_nft_does():
    text, theirs = _golden()
    tc = _port_change()
    assert tc.text("nat", True) == text          # the golden batch is of this very change
    mine, whats = ebnl.batch(ebnl.steps(tc))
    got, want = _messages(mine), _messages(theirs)
    assert len(got) == len(want) == 13            # begin, 2 chains, 9 rules, end
    for i, ((t1, f1, fam1, b1), (t2, f2, fam2, b2)) in enumerate(zip(got, want)):
        assert (t1, fam1) == (t2, fam2), i
        # fwsg asks for an acknowledgement of the last message (the tool polls instead)
        assert f1 & ~ebnl.NLM_F_ACK == f2, i
        if t1 != ebnl.NFNL_MSG_BATCH_BEGIN:      # the tool's begin carries its generation
            assert b1 == b2, (i, whats.get(i + 1))
    assert got[-2][1] & ebnl.NLM_F_ACK and not any(f & ebnl.NLM_F_ACK for _, f, _, _ in got[:-2])


@pytest.mark.parametrize("rule", [
    "-i tap1 -s fa:16:3e:00:00:01 -j RETURN",       # -i only with a jump
    "-p IPv4 -j DROP",
    "-p ARP --arp-ip-src 192.0.2.0/24 -j RETURN",   # a prefix: printed otherwise
    "-s FA:16:3E:00:00:01 -j RETURN",               # not as ebtables-save prints it
    "--arp-ip-src 192.0.2.1 -j RETURN",             # an ARP field without -p ARP
    "-s fa:16:3e:00:00:01 -p ARP -j DROP",          # not in the printed order
    "-j CONTINUE", "-j other-chain", "-i + -j fwsg-x", "-p ARP",
])
def test_what_it_does_not_pack(rule):
    with pytest.raises(ebnl.NotEncodable):
        ebnl.rule_body("fwsg-arp", rule)
    tc = TableChange(bag_add={"fwsg-arp": [rule]})
    assert ebnl.steps(tc) is None


def test_changes_left_to_the_restore_tool():
    tc = _port_change()
    assert ebnl.steps(tc) is not None
    for change in (dict(bag_del={"fwsg-arp": ["-i tapz+ -j fwsg-arp-bbbbbb"]}),
                   dict(stale=["fwsg-a0a0a0a-12345678-7"]),
                   dict(hooks=[("PREROUTING", "fwsg-arp")]),
                   dict(moved=[("PREROUTING", "fwsg-arp")]),
                   dict(new=0)):             # a chain that may exist: declared means emptied
        other = TableChange(**{**tc.__dict__, **change})
        assert ebnl.steps(other) is None, change
    big = TableChange(bag_add={"fwsg-arp": [f"-i tap{i} -j fwsg-x" for i in range(100)]})
    assert ebnl.steps(big) is None
