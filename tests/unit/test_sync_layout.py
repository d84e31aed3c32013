"""Key layout and source URLs (pure)."""

import pytest

from fwsg.errors import UserError
from fwsg.sync.layout import Layout
from fwsg.sync.mirror import Malformed, Mirror, decode_member, decode_port
from fwsg.sync.url import parse_source


def test_layout_round_trip_with_awkward_ids():
    L = Layout("/p/")
    assert L.parse(L.rules("sg/1")) == ("rules", "sg/1")
    assert L.parse(L.member("sg", "192.0.2.0/24")) == ("member", "sg", "192.0.2.0/24")
    assert L.parse(L.member("sg", "2001:db8::1")) == ("member", "sg", "2001:db8::1")
    assert L.parse(L.port("hv 1", "port%1")) == ("port", "hv 1", "port%1")
    assert L.parse(L.cluster()) == ("cluster",)
    assert L.parse(L.stats("n1")) == ("stats", "n1")
    assert L.parse("/other/groups/x/rules") is None
    assert L.parse(L.groups() + "x/rules/extra") is None
    # one group's prefix never covers another group whose id starts the same
    assert not L.member("sg-10", "192.0.2.1").startswith(L.group("sg-1"))


def test_source_urls():
    s = parse_source("etcd://127.0.0.1:2379,[2001:db8::5]:2379/prod")
    assert s.kind == "etcd" and s.endpoints == ("127.0.0.1:2379", "[2001:db8::5]:2379")
    assert s.prefix == "/prod" and not s.tls
    s = parse_source("etcds://u:p%40ss@h:2379", ca="ca.pem")
    assert s.tls and s.options["user"] == "u" and s.options["password"] == "p@ss"
    assert parse_source("etcd://h:1").prefix == "/fwsg"
    assert parse_source("file:/etc/m.json").path == "/etc/m.json"
    for bad in ("", "http://h:1", "etcd://h", "etcd://h:99999", "file:"):
        with pytest.raises(UserError):
            parse_source(bad)
    with pytest.raises(UserError, match="--cert and --key"):
        parse_source("etcd://h:1", cert="c.pem")


def test_malformed_values_name_their_key():
    with pytest.raises(Malformed, match="k1"):
        decode_port("k1", b"{not json")
    with pytest.raises(Malformed, match="k2"):
        decode_port("k2", b'{"security_groups": "sg"}')
    with pytest.raises(Malformed, match="k3"):
        decode_member("k3", b'"192.0.2.300"')
    assert decode_member("k", b'["192.0.2.0/24", "fa:16:3e:00:00:01"]') == "192.0.2.0/24"


def test_mirror_closure_and_member_counts():
    m = Mirror()
    m.ports["p"] = {"security_groups": ["a"], "security_group_rules": [{"remote_group_id": "c"}]}
    m.rules["a"] = [{"remote_group_id": "b"}]
    m.rules["b"] = [{"remote_group_id": "z"}]  # b's own rules do not extend the closure
    assert m.closure() == {"a", "b", "c"}
    assert m.set_member("a", "k1", "192.0.2.1") == ("192.0.2.1", None)
    assert m.set_member("a", "k2", "192.0.2.1") == (None, None)  # second key, same address
    assert m.set_member("a", "k1", None) == (None, None)
    assert m.set_member("a", "k2", None) == (None, "192.0.2.1")


@pytest.mark.parametrize("argv, says", [
    (["agent", "--source", "etcd://h:1"], "--host is required"),
    (["agent", "--host", "hv1"], "--source is required"),
    (["agent", "--host", "hv1", "--source", "http://h:1"], "is not file:PATH or etcd://"),
    (["agent", "--host", "hv1", "--source", "etcd://h:1", "--window", "-1"], "--window"),
    (["agent", "--host", "", "--source", "etcd://h:1"], "--host: '' is not a valid name"),
    (["publish", "--to", "etcd://h:1"], "give MODEL.json and/or --cluster"),
    (["place", "--failed", "auto"], "give CLUSTER.json or --source"),
])
def test_cli_bad_usage_exits_2_with_one_line(argv, says, capsys):
    from fwsg.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
