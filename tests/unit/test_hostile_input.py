"""Hostile and absurd input: every refusal is one bounded line naming the field, exit 2, a
ValidationError/UserError from the library (never ValueError/TypeError/AttributeError), and the
(fake) kernel unchanged. Includes a hypothesis fuzz over the wire format."""

import copy
import io
import json
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fwsg.cli import main
from fwsg.errors import MAX_LINE, UserError, ValidationError
from fwsg.firewall import Firewall
from fwsg.model import Model

BASE = {
    "security_groups": {"sg": [{"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                                "port_range_min": 80, "remote_group_id": "sg"}]},
    "sg_member_ips": {"sg": {"IPv4": ["192.0.2.10"], "IPv6": []}},
    "devices": {"p": {"device": "tap1", "mac_address": "fa:16:3e:00:00:01",
                      "fixed_ips": ["192.0.2.10"], "security_groups": ["sg"]}},
}


def _with(path, value):
    doc = copy.deepcopy(BASE)
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return doc


RULE = ("security_groups", "sg", 0)
PORT = ("devices", "p")

BAD_DOCS = [
    # (document or raw text, field named in the error)
    (_with(RULE + ("protocol",), "\u0666"), "protocol"),          # Arabic-Indic digit six
    (_with(RULE + ("port_range_min",), "--80"), "port_range_min"),
    (_with(RULE + ("port_range_min",), "\u0668\u0660"), "port_range_min"),
    (_with(RULE + ("port_range_min",), " 80"), "port_range_min"),
    (_with(PORT + ("security_groups",), [{}]), "security_groups[0]"),
    (_with(PORT + ("security_groups",), [["sg"]]), "security_groups[0]"),
    (json.dumps(BASE).replace('"port_range_min": 80', '"port_range_min": ' + "9" * 5000),
     "port_range_min"),
    (json.dumps(BASE).replace('"protocol": "tcp"', '"protocol": ' + "6" * 100000), "protocol"),
    (json.dumps(BASE)[:-2] + ', "port_security_enabled": false, "port_security_enabled": true}}}',
     "port_security_enabled"),
    ('{"devices": {}, "devices": {}}', "devices"),
    (_with(PORT + ("mac_address",), "fa:16:3e:00:00:01\n"), "mac_address"),
    (_with(PORT + ("mac_address",), " fa:16:3e:00:00:01"), "mac_address"),
    (_with(PORT + ("device",), "tap1\n"), "device"),
    (_with(PORT + ("device",), "x" * 1_000_000), "device"),
    (_with(RULE + ("remote_ip_prefix",), "192.0.2.0/\u0662\u0664"), "remote_ip_prefix"),
    (_with(RULE + ("remote_ip_prefix",), "192.0.2.0/" + "2" * 5000), "remote_ip_prefix"),
    (_with(("sg_member_ips", "sg", "IPv4"), ["192.0.2.1\x00junk"]), "IPv4[0]"),
    (_with(("sg_member_ips", "sg", "IPv4"), ["192.0.2.1\n"]), "IPv4[0]"),
    ('{"devices": {}, "x": NaN}', "NaN"),
] + [(_with(PORT + ("fixed_ips",), [ip]), "fixed_ips[0]")
     for ip in ("0.0.0.0", "255.255.255.255", "::1", "::", "127.0.0.1", "224.0.0.1", "ff02::1")]


@pytest.mark.parametrize("doc,field", BAD_DOCS)
def test_cli_refuses_with_one_bounded_line(capsys, tmp_path, doc, field):
    f = tmp_path / "m.json"
    f.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    rc = main(["apply", str(f), "--backend", "fake"])
    out, err = capsys.readouterr()
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("fwsg: ") and "Traceback" not in err
    assert len(err) <= MAX_LINE + 10
    assert field in err


def test_control_characters_in_ids_are_escaped(capsys, tmp_path):
    doc = copy.deepcopy(BASE)
    doc["devices"]["a\x1b[31m\nb"] = dict(doc["devices"].pop("p"), fixed_ips=["x"])
    f = tmp_path / "m.json"
    f.write_text(json.dumps(doc))
    assert main(["apply", str(f), "--backend", "fake"]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and err.count("\n") == 1 and "\\x1b" in err


@pytest.mark.parametrize("argv,stdin,fragment", [
    (["apply", "/dev/zero"], None, "larger than"),
    (["apply", "-"], "closed", "standard input is closed"),
])
def test_cli_bounded_read_and_closed_stdin(capsys, monkeypatch, argv, stdin, fragment):
    monkeypatch.setattr("fwsg.commands.common.MAX_INPUT", 1 << 20)
    if stdin == "closed":
        monkeypatch.setattr("sys.stdin", None)
    rc = main(argv + ["--backend", "fake"])
    err = capsys.readouterr().err
    assert rc == 2 and fragment in err and err.count("\n") == 1


def test_netns_naming_a_plain_file(capsys, tmp_path, monkeypatch):
    import fwsg.netns as netns

    plain = tmp_path / "plain"
    plain.write_text("")
    real_exists, real_stat = netns.os.path.exists, netns.os.stat
    monkeypatch.setattr(netns.os.path, "exists",
                        lambda p: True if p == "/run/netns/plainfile" else real_exists(p))
    monkeypatch.setattr(netns.os, "stat", lambda p, *a, **k: real_stat(
        str(plain) if p == "/run/netns/plainfile" else p, *a, **k))
    rc = main(["apply", "-", "--netns", "plainfile"])
    err = capsys.readouterr().err
    assert rc == 2 and "not a network namespace" in err


LIBRARY_BAD = [
    _with(RULE + ("port_range_min",), 10 ** 5000),
    _with(RULE + ("port_range_min",), -(10 ** 5000)),
    _with(RULE + ("protocol",), 10 ** 5000),
    _with(RULE + ("port_range_min",), 1.5),
    _with(RULE + ("port_range_min",), b"80"),
    _with(PORT + ("security_groups",), [{"a": 1}]),
    _with(PORT + ("security_groups",), [{1, 2}]),
    _with(PORT + ("fixed_ips",), [10 ** 5000]),
    _with(PORT + ("mac_address",), 10 ** 5000),
    _with(PORT + ("device",), None),
    _with(("sg_member_ips", "sg", "IPv4"), [[10 ** 5000, None]]),
    _with(("sg_member_ips", "sg", "IPv4"), [object()]),
    _with(("security_groups", "sg"), [[]]),
    {"devices": {10 ** 5000: {}}},
    {"devices": {("t",): {}}},
]


@pytest.mark.parametrize("doc", LIBRARY_BAD)
def test_library_raises_validation_error(doc):
    with pytest.raises(ValidationError) as e:
        Model.from_wire(doc)
    assert len(str(e.value)) <= 2 * MAX_LINE


@pytest.mark.parametrize("call,args", [
    ("update_security_group_members", ("sg", {"IPv4": [10 ** 5000]})),
    ("update_security_group_members", ("sg", {"IPv4": [[10 ** 5000, None]]})),
    ("add_security_group_members", ("sg", [object()])),
    ("add_security_group_members", (10 ** 5000, ["192.0.2.1"])),
    ("remove_security_group_members", ("sg", "192.0.2.1")),
    ("update_security_group_rules", ("sg", [{"direction": "ingress", "protocol": "--6"}])),
    ("update_security_group_rules", ("sg", [[1]])),
    ("prepare_port_filter", ({"id": "q", "device": "tap9", "mac_address": "fa:16:3e:00:00:09",
                              "fixed_ips": ["::1"]},)),
    ("prepare_port_filter", ({"id": ["q"]},)),
    ("update_port_filter", ({"id": "p", "device": "tap1", "mac_address": "fa:16:3e:00:00:01",
                             "security_groups": [["sg"]]},)),
])
def test_incremental_calls_raise_user_errors_and_change_nothing(call, args):
    fw = Firewall(backend="fake")
    fw.apply(BASE)
    before = _kernel(fw)
    with pytest.raises(UserError):
        getattr(fw, call)(*args)
    assert _kernel(fw) == before
    assert fw.reconcile().repaired == []


def _kernel(fw):
    b = fw.backend
    return copy.deepcopy((b.tables, b.sets, b.elements,
                          {k: [h, [r for _, r in rules]] for k, (h, rules) in b.chains.items()}))


def _put(doc, path, value):
    """Set ``value`` at ``path`` if the path still exists (earlier mutations may have cut it)."""
    node = doc
    for k in path[:-1]:
        if isinstance(node, dict) and k in node or isinstance(node, list) and \
                isinstance(k, int) and k < len(node):
            node = node[k]
        else:
            return
    k = path[-1]
    if isinstance(node, dict) or isinstance(node, list) and isinstance(k, int) and k < len(node):
        node[k] = value


# -- fuzz --------------------------------------------------------------------------------------
JSON_ATOMS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10 ** 30), max_value=10 ** 30),
    st.floats(allow_nan=False), st.text(max_size=20),
    st.sampled_from(["tcp", "icmp", "--80", "\u0666", "0.0.0.0", "192.0.2.1/24", "::1",
                     "fa:16:3e:00:00:02", "tap2", "ingress", "egress", "IPv6", "sg", "p",
                     "192.0.2.1\n", "x" * 300]))
JSON_VALUES = st.recursive(JSON_ATOMS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)

PATHS = [RULE + (k,) for k in ("direction", "ethertype", "protocol", "port_range_min",
                               "port_range_max", "remote_ip_prefix", "remote_group_id",
                               "stateful", "source_port_range_min")] + \
        [PORT + (k,) for k in ("device", "mac_address", "fixed_ips", "allowed_address_pairs",
                               "security_groups", "port_security_enabled",
                               "security_group_rules")] + \
        [("sg_member_ips", "sg", "IPv4"), ("sg_member_ips", "sg"), ("security_groups", "sg"),
         ("devices", "p"), ("devices",), ("security_groups",), ("sg_member_ips",)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations=st.lists(st.tuples(st.sampled_from(PATHS), JSON_VALUES), min_size=1,
                          max_size=3))
def test_fuzz_wire_format(mutations):
    """A mutated model: applied (success) or refused with a UserError naming a field, the
    kernel then unchanged; through the CLI: exit 0 or 2, one line, never a traceback."""
    doc = copy.deepcopy(BASE)
    for path, value in mutations:
        _put(doc, path, value)
    fw = Firewall(backend="fake")
    fw.apply(BASE)
    before = _kernel(fw)
    try:
        fw.apply(doc)
    except UserError as e:
        assert "\n" not in str(e) and len(str(e)) <= 2 * MAX_LINE
        assert _kernel(fw) == before
    text = json.dumps(doc)
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = io.TextIOWrapper(io.BytesIO(text.encode()))
    sys.stdout, sys.stderr = out, err
    try:
        rc = main(["apply", "-", "--backend", "fake", "--json"])
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
    assert rc in (0, 2), err.getvalue()
    if rc == 2:
        assert err.getvalue().count("\n") == 1 and "Traceback" not in err.getvalue()
