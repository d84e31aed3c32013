"""The whole-ruleset fingerprint: equal objects give equal digests, any difference changes it,
and every declared object may be empty (a map whose elements were all removed)."""

from fwsg.backends.nft.desired import compile_model
from fwsg.fingerprint import clone, fingerprint
from fwsg.model import Model

DOC = {"security_groups": {"sg": [{"direction": "ingress", "ethertype": "IPv4",
                                   "remote_group_id": "sg"}]},
       "sg_member_ips": {"sg": {"IPv4": ["192.0.2.11", "192.0.2.12"], "IPv6": []}},
       "devices": {"p": {"device": "tap-p", "mac_address": "fa:16:3e:00:00:11",
                         "fixed_ips": ["192.0.2.11"], "security_groups": ["sg"]}}}


def test_equal_rulesets_have_equal_fingerprints_and_a_change_shows():
    rs = compile_model(Model.from_wire(DOC))
    copy = clone(rs)
    assert fingerprint(copy) == fingerprint(rs)
    key = next(k for k, v in copy.elements.items() if isinstance(v, set) and v)
    copy.elements[key].pop()
    assert fingerprint(copy) != fingerprint(rs)


def test_declared_but_empty_maps_and_sets_are_fingerprinted():
    doc = dict(DOC, devices={"p": dict(DOC["devices"]["p"], fixed_ips=[])})
    rs = compile_model(Model.from_wire(doc))
    emptied = clone(rs)
    for key in emptied.elements:
        emptied.elements[key] = {} if emptied.sets[key].is_map else set()
    assert any(sd.is_map for sd in emptied.sets.values())
    assert fingerprint(emptied) != fingerprint(rs)
    assert fingerprint(emptied) == fingerprint(clone(emptied))
