"""The nft JSON read-back against the real kernel: a model with every kind of object fwsg
makes (hash and interval sets, concatenated sets, verdict, mark and interface maps, base and
regular chains, digest comments) is applied, read back and found equal to what was compiled.
The kernel's listing is also compared with the fixture the unit tests parse without root
(tests/fixtures/nft-readback.json), so that fixture stays what this kernel really prints."""

import json
import pathlib
import subprocess

import pytest

from fwsg.backends.nft.readback import parse_table
from fwsg.firewall import Firewall
from fwsg.lab import netns_available

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def namespace():
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"netns tests: {why}")
    name = "fwsg-readback-t"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def kernel_listing(ns):
    """``nft -j list table`` of fwsg's two tables in ``ns``: family -> the nftables items."""
    out = {}
    for fam in ("bridge", "inet"):
        r = subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "list", "table", fam, "fwsg"],
                           capture_output=True, text=True, check=True, timeout=10)
        out[fam] = [i for i in json.loads(r.stdout)["nftables"] if "metainfo" not in i]
    return out


def _stable(items):
    """A listing without what differs between runs (handles)."""
    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k != "handle"}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v
    return strip(items)


def test_readback_equals_compiled_and_the_fixture(namespace):
    model = json.loads((FIXTURES / "readback-model.json").read_text())
    fw = Firewall(netns=namespace)
    fw.apply(model)
    compiled = fw._desired.rs
    back = fw.backend.read()
    assert back.tables == compiled.tables
    assert back.sets == compiled.sets
    assert back.elements == compiled.elements
    assert {k: c.digest for k, c in back.chains.items()} == \
        {k: c.digest for k, c in compiled.chains.items()}
    assert {k: c.hook for k, c in back.chains.items()} == \
        {k: c.hook for k, c in compiled.chains.items()}
    listing = kernel_listing(namespace)
    fixture = json.loads((FIXTURES / "nft-readback.json").read_text())
    assert _stable(listing) == _stable(fixture), "regenerate tests/fixtures/nft-readback.json"
    rs = None
    for fam, items in listing.items():
        rs = parse_table(fam, items, rs)
    assert rs.elements == compiled.elements


def regen():  # pragma: no cover - developer helper (root): python -c 'from tests.netns.test_readback import regen; regen()'
    ns = "fwsg-readback-regen"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        Firewall(netns=ns).apply(json.loads((FIXTURES / "readback-model.json").read_text()))
        (FIXTURES / "nft-readback.json").write_text(json.dumps(kernel_listing(ns), indent=1) + "\n")
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_kernel_refusals_carry_the_errno(namespace):
    """Not found and exists are told apart by errno, on both transports."""
    import errno

    from fwsg.backends.nft import NftBackend
    from fwsg.errors import KernelError

    be = NftBackend(namespace)
    try:
        assert be.read().tables == frozenset() and be.flush() == []
        with pytest.raises(KernelError) as e:
            be.run("delete table inet fwsg")
        assert e.value.errno == errno.ENOENT
        be.run("add table inet fwsg\nadd chain inet fwsg c")
        with pytest.raises(KernelError) as e:  # a regular chain cannot become a base chain
            be.run("add chain inet fwsg c { type filter hook input priority 0; }")
        assert e.value.errno == errno.EEXIST
        be.run("add set inet fwsg s { type ipv4_addr; }")
        with pytest.raises(KernelError) as e:  # the netlink writer: deleting a missing element
            be._writer.commit([("elem", False, "inet", "s", ["192.0.2.9"],
                                bytes([192, 0, 2, 9]), 4, None)])
        assert e.value.errno == errno.ENOENT
    finally:
        be.close()


def test_names_record_keeps_a_group_that_comes_back(namespace):
    """``fwsg show`` names groups from the names record: a group removed, then added back after
    the record was rewritten without it (another group's name was new), is recorded again."""
    from fwsg.commands.show import gather

    rule = {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
            "port_range_min": 22, "port_range_max": 22}
    port = {"id": "p1", "device": "tapnames1", "mac_address": "fa:16:3e:00:00:01",
            "fixed_ips": ["192.0.2.10"], "security_groups": ["web"]}
    fw = Firewall(netns=namespace)
    try:
        fw.apply({"security_groups": {"web": [rule], "db": [rule]}, "sg_member_ips": {},
                  "devices": {"p1": dict(port)}})
        fw.update_port_filter(dict(port, security_groups=["db"]))
        fw.remove_security_group("web")
        fw.update_security_group_rules("new", [rule])   # a new name: the record is rewritten
        fw.update_security_group_rules("web", [rule])   # a name known already
        assert {"web", "db", "new"} <= {g["id"] for g in gather(namespace)["groups"]}
    finally:
        fw.flush()
