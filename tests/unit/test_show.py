"""``Firewall.show``: what the kernel holds, read back and summarised through the layout (fake
kernel; the same path the CLI's ``fwsg show`` takes against the real one)."""

import copy

from fwsg.backends.nft.layout import Names
from fwsg.firewall import Firewall


def test_show_reads_ports_profiles_and_groups_back(demo_model):
    fw = Firewall(backend="fake")
    assert fw.show()["tables"] == []
    fw.apply(demo_model)
    info = fw.show(fw.names())
    assert info["tables"] == ["bridge", "inet"]
    names = fw.names()
    by_device = {p["device"]: p for p in info["ports"]}
    assert set(by_device) == {p["device"] for p in names["ports"].values()}
    for pid, rec in names["ports"].items():
        shown = by_device[rec["device"]]
        assert (shown["id"], shown["number"], shown["profile"], shown["groups"]) == \
            (pid, rec["number"], rec["profile"], rec["groups"])
    assert {(g["name"], g["id"]) for g in info["groups"]} == \
        {(Names.group(sg), sg) for sg in demo_model["security_groups"]}
    kernel = fw.backend.read()
    assert info["chains"] == len(kernel.chains)
    assert info["elements"] == sum(len(e) for e in kernel.elements.values())
    # a port removed behind nobody's back is gone from what show reads
    doc = copy.deepcopy(demo_model)
    del doc["devices"]["port-client"]
    fw.apply(doc)
    assert "tap-vm3" not in {p["device"] for p in fw.show()["ports"]}
    # without the names record, the kernel still says what it holds (no user ids)
    assert all(p["id"] is None and p["profile"] for p in fw.show()["ports"])
