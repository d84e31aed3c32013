"""The compiler: layout invariants, names never carry user text, rules do not grow with members."""

import copy
import pathlib
import re

from fwsg.backends.nft.desired import compile_model
from fwsg.plan import diff

GOLDEN = pathlib.Path(__file__).with_name("golden") / "demo-model.nft"


def test_golden_batch(demo_model):
    """The full batch for the demo model, from empty, is exactly the reviewed text.
    (Regenerate with: python -c 'from tests.unit.test_compile import regen; regen()')."""
    text = str(diff(compile_model(demo_model), None))
    assert text == GOLDEN.read_text()


def regen():  # pragma: no cover - developer helper
    import json

    doc = json.loads((pathlib.Path(__file__).parents[2] / "examples" / "demo-model.json").read_text())
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(str(diff(compile_model(doc), None)))


def test_rule_count_independent_of_members(demo_model):
    small = compile_model(demo_model).counts()
    big = copy.deepcopy(demo_model)
    big["sg_member_ips"]["sg-web"]["IPv4"] = [f"198.51.100.{i}" for i in range(1, 255)] + [
        f"203.0.113.{i}" for i in range(1, 255)]
    bigc = compile_model(big).counts()
    assert bigc["rules"] == small["rules"]
    assert bigc["chains"] == small["chains"]
    assert bigc["elements"] == small["elements"] + 508 - 1


def test_dispatch_is_by_verdict_map_not_jump_lists(demo_model):
    """Base chains do not grow with ports: ports are reached through verdict maps."""
    rs = compile_model(demo_model)
    more = copy.deepcopy(demo_model)
    for i in range(20, 60):
        more["devices"][f"extra{i}"] = {"device": f"tap{i}", "mac_address": f"fa:16:3e:00:01:{i:02x}",
                                        "fixed_ips": [f"192.0.2.{i}"], "security_groups": ["sg-web"]}
    rs2 = compile_model(more)
    base = {k: c for k, c in rs.chains.items() if c.hook}
    assert len(base) == 7  # five filter chains, two raw chains setting conntrack zones
    for k, c in base.items():
        assert rs2.chains[k].rules == c.rules
        assert not any("jump p" in r for r in c.rules)
    assert len(rs2.elements[("inet", "egress")]) == 43
    ingress = rs2.elements[("inet", "ingress")]
    assert ingress.pop("0x0000ffff") == "drop"   # the receiver of an ambiguous address
    assert len(ingress) == 43 and all(v.startswith("jump p") for v in ingress.values())
    # routed and host traffic: address -> the receiver's number (a data map), then @ingress
    assert set(rs2.elements[("inet", "ingress4")].values()) <= set(ingress)
    assert sum(1 for k, c in base.items() for r in c.rules if "@ingress" in r.split()) == 2


def test_hostile_ids_never_reach_nft_text(demo_model):
    evil = '"; flush ruleset; add table ip x #'
    doc = copy.deepcopy(demo_model)
    doc["security_groups"][evil] = doc["security_groups"].pop("sg-web")
    doc["sg_member_ips"][evil] = doc["sg_member_ips"].pop("sg-web")
    for rule in doc["security_groups"]["sg-db"]:
        if rule.get("remote_group_id") == "sg-web":
            rule["remote_group_id"] = evil
    doc["devices"][evil + "port"] = doc["devices"].pop("port-web")
    doc["devices"][evil + "port"]["security_groups"] = [evil]
    text = str(diff(compile_model(doc), None))
    assert "flush ruleset" not in text and "table ip x" not in text
    for name in re.findall(r"(?:chain|set|map) (?:inet|bridge) fwsg (\S+)", text):
        assert re.fullmatch(r"[a-z0-9-]+", name), name


def test_prefix_members_get_an_interval_set_only_when_present(demo_model):
    rs = compile_model(demo_model)
    assert not any(s.interval for s in rs.sets.values())
    doc = copy.deepcopy(demo_model)
    doc["sg_member_ips"]["sg-web"]["IPv4"].append("198.51.100.0/24")
    doc["sg_member_ips"]["sg-web"]["IPv4"].append("198.51.100.128/25")  # merged into the /24
    rs2 = compile_model(doc)
    interval = [k for k, s in rs2.sets.items() if s.interval]
    assert len(interval) == 1
    assert rs2.elements[interval[0]] == {"198.51.100.0/24"}
    # hosts stay in the hash set
    hashset = interval[0][1][:-1]
    assert rs2.elements[("inet", hashset)] == {"192.0.2.11"}


def test_port_numbers_stay_stable():
    base = {"security_groups": {"sg": []}, "devices": {
        f"p{i}": {"device": f"tap{i}", "mac_address": f"fa:16:3e:00:00:{i:02x}",
                  "fixed_ips": [f"192.0.2.{i}"], "security_groups": ["sg"]} for i in range(1, 6)}}
    ids1 = compile_model(base).meta["port_ids"]
    doc = copy.deepcopy(base)
    del doc["devices"]["p2"]
    doc["devices"]["p9"] = {"device": "tap9", "mac_address": "fa:16:3e:00:00:09",
                            "fixed_ips": ["192.0.2.9"], "security_groups": ["sg"]}
    ids2 = compile_model(doc, ids1).meta["port_ids"]
    for dev in ("tap1", "tap3", "tap4", "tap5"):
        assert ids2[dev] == ids1[dev]
    assert ids2["tap9"] == ids1["tap2"]  # the freed number is reused


def test_ports_with_identical_chains_share_a_profile(demo_model):
    doc = copy.deepcopy(demo_model)
    twin = copy.deepcopy(doc["devices"]["port-db"])
    twin.update(device="tap-vm9", mac_address="fa:16:3e:00:00:19", fixed_ips=["192.0.2.19"])
    # Neutron's per-port DHCP reply rule is subsumed by the fixed rules: still the same profile
    twin["security_group_rules"] = [{"direction": "ingress", "ethertype": "IPv4", "protocol": "udp",
                                     "port_range_min": 68, "port_range_max": 68,
                                     "source_port_range_min": 67, "source_port_range_max": 67,
                                     "dest_ip_prefix": "192.0.2.19/32"}]
    doc["devices"]["port-db2"] = twin
    rs = compile_model(doc)
    ports = rs.meta["ports"]
    assert ports["port-db2"]["profile"] == ports["port-db"]["profile"]
    assert ports["port-web"]["profile"] != ports["port-db"]["profile"]
    assert len([k for k in rs.chains if k[0] == "inet" and k[1].startswith("p")]) == 2 * 3
    # a rule that is not subsumed makes its own profile
    twin["security_group_rules"] = [{"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                                     "port_range_min": 8080}]
    rs = compile_model(doc)
    assert rs.meta["ports"]["port-db2"]["profile"] != rs.meta["ports"]["port-db"]["profile"]


def test_port_security_disabled_is_unfiltered(demo_model):
    doc = copy.deepcopy(demo_model)
    doc["devices"]["port-client"]["port_security_enabled"] = False
    rs = compile_model(doc)
    assert '"tap-vm3"' not in rs.elements[("bridge", "port-src")]
    assert '"tap-vm3"' not in rs.elements[("bridge", "secured")]
    assert not any("tap-vm3" in e for e in rs.elements[("bridge", "spoof4")])


def _marks(rs, device):
    """The (sender, receiver) marks of a port's device in a compiled Ruleset."""
    dev = f'"{device}"'
    return rs.elements[("bridge", "port-src")][dev], rs.elements[("bridge", "port-dst")][dev]


def test_stateless_port_has_no_conntrack_rule(demo_model):
    """A port with a stateless group is filtered and in ``@stateless`` (the base chains jump
    to the state rules only for filtered ports not in it); its profile holds no fixed rule."""
    doc = copy.deepcopy(demo_model)
    for r in doc["security_groups"]["sg-client"]:
        r["stateful"] = False
    rs = compile_model(doc)
    client = _marks(rs, doc["devices"]["port-client"]["device"])
    web = _marks(rs, doc["devices"]["port-web"]["device"])
    stateless, filtered = rs.elements[("inet", "stateless")], rs.elements[("inet", "filtered")]
    assert set(client) <= filtered and set(client) <= stateless
    assert set(web) <= filtered and not set(web) & stateless
    assert rs.chains[("inet", "fixed-state")].rules[0] == "ct state invalid drop"
    assert not any(r.startswith("ct state") for r in rs.chains[("inet", "fixed-e")].rules)
    pid = rs.meta["ports"]["port-client"]["profile"]
    assert all(r.startswith("jump g") for r in rs.chains[("inet", pid + "-e")].rules)
    for chain in ("egress-pre", "ingress-fwd", "ingress-out"):
        rules = rs.chains[("inet", chain)].rules
        judge = [r for r in rules if "@filtered" in r or "vmap" in r]
        assert [r.split()[-2:] for r in judge][:1] == [["jump", "fixed-state"]]
        assert judge[-1].endswith("@filtered drop")


def test_stateless_flip_moves_only_the_stateful_marks(demo_model):
    """A group turning stateless (and back) changes ``@stateless`` only: profiles and
    ``@filtered`` stay as they are."""
    import dataclasses

    from fwsg.backends.nft.desired import Desired
    from fwsg.model import EGRESS, INGRESS, Model

    doc = copy.deepcopy(demo_model)
    st = Desired()
    st.load(Model.from_wire(doc))
    client = _marks(st.rs, doc["devices"]["port-client"]["device"])
    chains = dict(st.rs.chains)
    assert not set(client) & st.rs.elements[("inet", "stateless")]
    rules = Model.from_wire(doc).groups["sg-client"]
    flipped = [dataclasses.replace(r, stateful=False) for r in rules]
    st.clear_pending()
    st.set_group("sg-client", flipped)
    assert set(client) <= st.rs.elements[("inet", "stateless")]
    assert set(client) <= st.rs.elements[("inet", "filtered")]
    assert {k for k in st.rs.chains if st.rs.chains[k] != chains.get(k)} <= {
        ("inet", st.names.group_chain("sg-client", d)) for d in (INGRESS, EGRESS)}
    st.set_group("sg-client", rules)
    assert not set(client) & st.rs.elements[("inet", "stateless")]
