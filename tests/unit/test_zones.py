"""Conntrack zones in the compiled state (no kernel): one zone per network, numbers that never
collide and survive a restart, maps that leave ambiguous MACs and addresses out (zone 0)."""

import copy

from fwsg.backends.nft.desired import Desired, PortIds, ZoneNumbers, compile_model, port_ids
from fwsg.backends.nft.layout import MAC_DST, ZONE4, ZONE_MARK, dst_mark, src_mark


def port(dev, ip, mac, net=None, psec=True):
    p = {"device": dev, "mac_address": mac, "fixed_ips": [ip], "security_groups": ["sg"],
         "port_security_enabled": psec}
    if net:
        p["network_id"] = net
    return p


def doc(**devices):
    return {"security_groups": {"sg": [{"direction": "egress", "ethertype": "IPv4"}]},
            "sg_member_ips": {}, "devices": devices}


TWO_NETS = doc(a1=port("tapa1", "192.0.2.11", "fa:16:3e:00:00:01", "net-a"),
               a2=port("tapa2", "192.0.2.12", "fa:16:3e:00:00:02", "net-a"),
               b1=port("tapb1", "192.0.2.11", "fa:16:3e:00:00:03", "net-b"),
               c1=port("tapc1", "192.0.2.13", "fa:16:3e:00:00:04", "net-c"),
               n1=port("tapn1", "192.0.2.14", "fa:16:3e:00:00:05"))


def test_one_zone_per_network_and_none_without_network():
    d = Desired().load(TWO_NETS)
    z = d.port_zone
    assert z["a1"] == z["a2"] and len({z["a1"], z["b1"], z["c1"]}) == 3
    assert "n1" not in z and 0 not in z.values()
    rs = d.rs
    n = d.ids["tapa1"]
    assert rs.elements[ZONE_MARK][src_mark(n)] == rs.elements[ZONE_MARK][dst_mark(n)] == \
        str(z['a1'])
    # data maps: no chain per zone (no verdict map for the validation walk)
    assert rs.elements[ZONE_MARK][src_mark(d.ids["tapb1"])] == str(z['b1'])
    assert not [k for k in rs.chains if k[1].startswith("zone-") and rs.chains[k].hook is None]
    # an address of two networks is zoned by neither (zone 0); a unique one by its network
    assert "192.0.2.11" not in rs.elements[ZONE4]
    assert rs.elements[ZONE4]["192.0.2.12"] == str(z['a1'])
    assert "192.0.2.14" not in rs.elements[ZONE4]
    assert rs.elements[MAC_DST]["fa:16:3e:00:00:03"] == dst_mark(d.ids["tapb1"])
    assert "fa:16:3e:00:00:05" not in rs.elements[MAC_DST]


def test_a_model_without_networks_has_empty_zone_maps():
    m = doc(n1=port("tapn1", "192.0.2.14", "fa:16:3e:00:00:05"))
    rs = compile_model(m)
    assert not rs.elements[ZONE_MARK] and not rs.elements[ZONE4] and not rs.elements[MAC_DST]
    assert not [k for k in rs.chains if k[1].startswith("zone-") and rs.chains[k].hook is None]


def test_zone_numbers_never_collide_and_a_freed_one_is_reused_only_when_free():
    zn = ZoneNumbers()
    nets = [f"net-{i}" for i in range(3000)]
    zones = [zn.assign(n, f"dev{i}", i) for i, n in enumerate(nets)]
    assert len(set(zones)) == len(zones) and all(1 <= z <= 65535 for z in zones)
    assert zn.assign("net-0", "other", "p") == zones[0]      # a second port: same zone
    assert not zn.release("net-0", 0) and zn.release("net-0", "p")
    assert zones[0] not in zn.net


def test_a_restart_keeps_the_kernels_zones_and_the_last_port_frees_its_zone():
    d = Desired().load(TWO_NETS)
    kernel = copy.deepcopy(d.rs)
    ids = port_ids(kernel)
    assert isinstance(ids, PortIds) and ids.zones["tapa1"] == d.port_zone["a1"]
    # a zone the kernel holds for a network's devices is kept, whatever the hash says
    ids.zones = {dev: 7 for dev in ("tapa1", "tapa2")}
    d2 = Desired(ids).load(TWO_NETS)
    assert d2.port_zone["a1"] == d2.port_zone["a2"] == 7
    m = copy.deepcopy(TWO_NETS)
    del m["devices"]["c1"]
    zc = d.port_zone["c1"]
    d.load(m)
    assert str(zc) not in d.rs.elements[ZONE_MARK].values()
    assert "192.0.2.13" not in d.rs.elements[ZONE4]


def test_the_zones_of_the_layout_before_data_maps_are_kept():
    """A kernel of the previous layout (``@zone-mark`` jumping to ``zone-<n>``) gives the
    same zone numbers, so the upgrade keeps every network's zone."""
    d = Desired().load(TWO_NETS)
    kernel = copy.deepcopy(d.rs)
    marks = kernel.elements[ZONE_MARK]
    for k in list(marks):
        marks[k] = f"jump zone-{marks[k]}"
    assert port_ids(kernel).zones == port_ids(d.rs).zones
    assert set(port_ids(kernel).zones.values()) == set(d.port_zone.values())


def test_unfiltered_and_networkless_ports_stay_in_zone_0():
    m = doc(a1=port("tapa1", "192.0.2.11", "fa:16:3e:00:00:01", "net-a", psec=False),
            n1=port("tapn1", "192.0.2.11", "fa:16:3e:00:00:05"),
            a2=port("tapa2", "192.0.2.11", "fa:16:3e:00:00:02", "net-a"))
    d = Desired().load(m)
    assert set(d.port_zone) == {"a2"}
    assert "192.0.2.11" not in d.rs.elements[ZONE4]   # shared with the networkless n1
