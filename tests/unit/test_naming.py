"""Derived names never collide: two group ids whose short hashes are equal get distinct names
(with the hash width made tiny so that a colliding pair is found at once), each group keeps its
own rules, and a fresh process seeded by the names record keeps the longer name."""

import itertools

import pytest

from fwsg import naming
from fwsg.backends.nft.desired import Desired
from fwsg.firewall import Firewall
from fwsg.model import Model


@pytest.fixture
def narrow(monkeypatch):
    monkeypatch.setattr(naming, "HASH_WIDTH", 2)
    seen = {}
    for i in itertools.count():
        sg = f"sg-{i}"
        h = naming.short_hash(sg)
        if h in seen:
            return seen[h], sg
        seen[h] = sg


def _model(tight, open_):
    return {
        "security_groups": {
            tight: [{"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                     "port_range_min": 22, "remote_group_id": tight}],
            open_: [{"direction": "ingress", "ethertype": "IPv4"}],
        },
        "sg_member_ips": {tight: {"IPv4": ["192.0.2.1"]}, open_: {"IPv4": ["198.51.100.1"]}},
        "devices": {
            "p-tight": {"device": "tap1", "mac_address": "fa:16:3e:00:00:01",
                        "fixed_ips": ["192.0.2.10"], "security_groups": [tight]},
            "p-open": {"device": "tap2", "mac_address": "fa:16:3e:00:00:02",
                       "fixed_ips": ["192.0.2.11"], "security_groups": [open_]},
        },
    }


def test_colliding_ids_get_distinct_names_and_keep_their_rules(narrow):
    tight, open_ = narrow
    assert naming.short_hash(tight) == naming.short_hash(open_)
    fw = Firewall(backend="fake")
    fw.apply(_model(tight, open_))
    names = fw._desired.names
    gt, go = names.group(tight), names.group(open_)
    assert gt != go
    b = fw.backend
    assert b.rules("inet", f"{gt}-i")[1].startswith(f"ip saddr @{gt}-m4 tcp dport 22 accept")
    assert b.rules("inet", f"{go}-i")[1].startswith("meta nfproto ipv4 accept")
    assert b.elements[("inet", f"{gt}-m4")] == {"192.0.2.1"}
    # the tight port's chain jumps to the tight group's chain only
    ingress = b.elements[("inet", "ingress")]
    n = fw._desired.ids["tap1"]
    profile = ingress[f"0x{n:08x}"].split()[1]
    jumps = [r.split()[1] for r in b.rules("inet", profile) if r.startswith("jump g")]
    assert jumps == [f"{gt}-i"]
    assert fw.names()["groups"][tight]["name"] == gt


def test_recorded_names_are_kept_by_a_fresh_process(narrow):
    tight, open_ = narrow
    first = Desired().load(Model.from_wire(_model(tight, open_)))
    recorded = {sg: first.names.group(sg) for sg in (tight, open_)}
    # a fresh process meeting the ids in the other order keeps the recorded names
    again = Desired(group_names=recorded)
    again.load(Model.from_wire(_model(open_, tight)))
    assert {sg: again.names.group(sg) for sg in (tight, open_)} == recorded


def test_a_hostile_record_cannot_alias_two_ids(narrow):
    tight, open_ = narrow
    d = Desired(group_names={open_: "g" + naming.short_hash(tight, 3), tight: "gzz"})
    d.load(Model.from_wire(_model(tight, open_)))
    assert d.names.group(tight) != d.names.group(open_)
    assert d.names.group(open_).startswith("g" + naming.short_hash(open_))


def test_profile_names_do_not_collide(monkeypatch):
    monkeypatch.setattr(naming, "HASH_WIDTH", 1)   # 16 names: distinct profiles must collide
    doc = {"security_groups": {}, "devices": {}}
    for i in range(20):
        doc["security_groups"][f"sg{i}"] = [{"direction": "ingress", "ethertype": "IPv4",
                                             "protocol": "tcp", "port_range_min": 1000 + i}]
        doc["devices"][f"p{i}"] = {"device": f"tap{i}", "mac_address": f"fa:16:3e:00:00:{i:02x}",
                                   "fixed_ips": [f"192.0.2.{i + 10}"], "security_groups": [f"sg{i}"]}
    fw = Firewall(backend="fake")
    fw.apply(doc)
    profiles = set(fw._desired.profile_of.values())
    assert len(profiles) == 20


def test_changes_count_moves_exactly_when_the_names_do():
    """``changes`` moves with every name bound or released (Firewall skips comparing the
    names record when it did not move), not when a known name is asked for again."""
    reg = naming.NameRegistry("g")
    n0 = reg.changes
    a = reg.name("sg-a")
    assert reg.changes == n0 + 1
    assert reg.name("sg-a") == a and reg.changes == n0 + 1
    reg.release("sg-unknown")
    assert reg.changes == n0 + 1
    reg.release("sg-a")
    assert reg.changes == n0 + 2 and "sg-a" not in reg.by_key
    reg.seed({"sg-b": "g" + naming.short_hash("sg-b")})
    assert reg.changes == n0 + 3 and "sg-b" in reg.by_key


def test_names_record_follows_a_name_bound_without_a_group_coming(monkeypatch):
    """The record is written again when a name was bound since it was written, though no
    group came or went (the desired state's names epoch did not move), and not after a
    change that bound none (the registry's ``changes`` count decides without comparing)."""
    fw = Firewall(backend="fake")
    fw._record = True   # the fake backend keeps no record: count the writes instead
    saved = []
    monkeypatch.setattr(fw, "_save_names", lambda names_same=False: saved.append(names_same))
    doc = _model("sg-a", "sg-b")
    fw.apply(doc)
    assert len(saved) == 1
    rule = {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 80}
    fw.update_security_group_rules("sg-b", doc["security_groups"]["sg-b"] + [rule])
    assert len(saved) == 1                       # nothing bound: no write
    epoch = fw._desired.names_epoch
    fw._desired.names.groups.name("sg-unused")   # bound, the epoch unchanged
    assert fw._desired.names_epoch == epoch
    fw.update_security_group_rules("sg-b", doc["security_groups"]["sg-b"])
    assert len(saved) == 2
