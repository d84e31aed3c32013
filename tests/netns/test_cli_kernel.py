"""The ``fwsg`` command against a real kernel: each test makes its own network namespace
(``fwsg-cli-<pid>-<n>``, always deleted) and runs the installed ``fwsg`` as a subprocess.

What is shown: bad input exits 2 with one line naming the field and value and leaves the kernel
as it was; hostile ids never reach nft; other tables are never touched; a refused commit exits 1
with nftables' reason and changes nothing; ``apply -`` reads stdin; ``--json`` parses.
"""

import itertools
import json
import os
import subprocess
import sys
import time

import pytest

from fwsg import statefile
from fwsg.lab import netns_available

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FWSG = os.path.join(os.path.dirname(sys.executable), "fwsg")
if not os.path.exists(FWSG):
    FWSG = os.path.join(ROOT, ".venv", "bin", "fwsg")
DEMO = os.path.join(ROOT, "examples", "demo-model.json")
HOSTILE = 'x"; flush ruleset; add table ip evil #'

_seq = itertools.count()


def _demo():
    with open(DEMO) as f:
        return json.load(f)


@pytest.fixture
def make_ns():
    """``make_ns() -> name``: a new empty network namespace; all are deleted after the test
    (and fwsg's name record for them removed), whatever happened."""
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"netns tests: {why}")
    made = []

    def make():
        name = f"fwsg-cli-{os.getpid()}-{next(_seq)}"
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=10)
        made.append(name)
        return name

    try:
        yield make
    finally:
        left = []
        for name in made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
            statefile.remove(name)
            if os.path.exists(f"/run/netns/{name}"):
                left.append(name)
        assert not left, f"namespaces not removed: {left}"


def fwsg(*args, input=None):
    """Run the fwsg command; (rc, stdout, stderr)."""
    p = subprocess.run([FWSG, *args], input=input, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def nft(ns, *args, check=True):
    p = subprocess.run(["ip", "netns", "exec", ns, "nft", *args], capture_output=True,
                       text=True, timeout=10)
    if check:
        assert p.returncode == 0, f"nft {' '.join(args)}: {p.stderr}"
    return p.stdout


def snapshot(ns):
    """The whole ruleset as text, and with rule handles."""
    return nft(ns, "list", "ruleset"), nft(ns, "-a", "list", "ruleset")


def tables(ns):
    return sorted(line.strip() for line in nft(ns, "list", "tables").splitlines() if line.strip())


def apply_demo(ns):
    rc, out, err = fwsg("apply", DEMO, "--netns", ns)
    assert rc == 0, err
    assert "applied to netns" in out
    assert {"table bridge fwsg", "table inet fwsg"} <= set(tables(ns))


# ------------------------------------------------------------------------ bad input

def _set(path, value):
    """A mutation of the demo model: set the field at ``path`` (a list of keys) to ``value``."""
    def mutate(doc):
        obj = doc
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value
    return mutate


def _web_rule(**fields):
    def mutate(doc):
        doc["security_groups"]["sg-web"][0].update(fields)
    return mutate


# (id, mutation of the demo model or raw text, fragments stderr must hold)
BAD = [
    ("bad-address", _set(["devices", "port-web", "fixed_ips", 0], "192.0.2.300"),
     ["devices.port-web.fixed_ips[0]", "'192.0.2.300'", "not an IP address"]),
    ("bad-member", _set(["sg_member_ips", "sg-web", "IPv4", 0], "198.51.100.256"),
     ["sg_member_ips.sg-web.IPv4[0]", "'198.51.100.256'"]),
    ("prefix-wrong-family", _web_rule(remote_ip_prefix="2001:db8::/32"),
     ["security_groups.sg-web[0].remote_ip_prefix", "'2001:db8::/32'", "IPv4"]),
    ("member-wrong-family", _set(["sg_member_ips", "sg-web", "IPv4", 0], "2001:db8::11"),
     ["sg_member_ips.sg-web.IPv4[0]", "'2001:db8::11'"]),
    ("port-range-min-gt-max", _web_rule(port_range_min=90, port_range_max=80),
     ["security_groups.sg-web[0].port_range_min", "90", "80"]),
    ("port-out-of-range", _web_rule(port_range_min=70000, port_range_max=70000),
     ["security_groups.sg-web[0].port_range_min", "70000"]),
    ("unknown-protocol", _web_rule(protocol="tcpp"),
     ["security_groups.sg-web[0].protocol", "'tcpp'", "not a known protocol"]),
    ("bad-mac", _set(["devices", "port-db", "mac_address"], "fa:16:3e:00:00:zz"),
     ["devices.port-db.mac_address", "'fa:16:3e:00:00:zz'", "not a MAC address"]),
    ("bad-ifname-injection", _set(["devices", "port-db", "device"], 'tap"; flush ruleset'),
     ["devices.port-db.device", "'tap\"; flush ruleset'", "not a valid interface name"]),
    ("ifname-too-long", _set(["devices", "port-db", "device"], "tap-0123456789ab"),
     ["devices.port-db.device", "'tap-0123456789ab'"]),
    ("malformed-json", '{"security_groups": {"sg": [', ["stdin", "invalid JSON", "line 1"]),
    ("deeply-nested-json", "[" * 100000 + "]" * 100000, ["stdin", "invalid JSON"]),
    ("top-level-list", '[{"security_groups": {}}]', ["must be a JSON object", "list"]),
    ("top-level-string", '"security_groups"', ["must be a JSON object", "str"]),
]


@pytest.fixture(scope="module")
def applied_ns():
    """One namespace holding the demo model, shared by the bad-input cases (none may change
    it); deleted at the end of the module."""
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"netns tests: {why}")
    name = f"fwsg-cli-{os.getpid()}-{next(_seq)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=10)
    try:
        apply_demo(name)
        yield name, snapshot(name)
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        statefile.remove(name)
        assert not os.path.exists(f"/run/netns/{name}")


@pytest.mark.parametrize("how", ["file", "stdin"])
@pytest.mark.parametrize("case,change,fragments", BAD, ids=[b[0] for b in BAD])
def test_bad_input_exits_2_one_line_and_kernel_unchanged(applied_ns, tmp_path, how, case,
                                                         change, fragments):
    ns, before = applied_ns
    if isinstance(change, str):
        text = change
    else:
        doc = _demo()
        change(doc)
        text = json.dumps(doc)
    if how == "stdin":
        rc, out, err = fwsg("apply", "-", "--netns", ns, input=text)
    else:
        f = tmp_path / "bad.json"
        f.write_text(text)
        rc, out, err = fwsg("apply", str(f), "--netns", ns)
        fragments = [str(f) if x == "stdin" else x for x in fragments]
    assert rc == 2, (out, err)
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith("fwsg: "), err
    for frag in fragments:
        assert frag in err, (frag, err)
    assert out == ""
    assert snapshot(ns) == before


def test_bad_input_dry_run_also_exits_2(applied_ns):
    ns, before = applied_ns
    doc = _demo()
    doc["devices"]["port-web"]["fixed_ips"][0] = "192.0.2.300"
    rc, out, err = fwsg("apply", "-", "--netns", ns, "--dry-run", input=json.dumps(doc))
    assert rc == 2 and "devices.port-web.fixed_ips[0]" in err and err.count("\n") == 1
    assert snapshot(ns) == before


# ------------------------------------------------------------------------ hostile ids

def test_hostile_ids_never_reach_nft(make_ns):
    ns = make_ns()
    doc = _demo()
    # a group id, a port id and a remote group id all carry nft syntax
    doc["security_groups"][HOSTILE] = [
        {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
         "port_range_min": 22, "port_range_max": 22, "remote_group_id": "sg-web"},
        {"direction": "egress", "ethertype": "IPv4"}]
    doc["security_groups"]["sg-db"].append(
        {"direction": "ingress", "ethertype": "IPv4", "protocol": "udp",
         "port_range_min": 53, "port_range_max": 53, "remote_group_id": HOSTILE})
    doc["sg_member_ips"][HOSTILE] = {"IPv4": ["198.51.100.7"], "IPv6": ["2001:db8:1::7"]}
    port = doc["devices"].pop("port-client")
    port["security_groups"] = [HOSTILE, "sg-client"]
    doc["devices"][HOSTILE] = port
    text = json.dumps(doc)

    rc, out, err = fwsg("apply", "-", "--netns", ns, "--dry-run", input=text)
    assert rc == 0, err
    assert "add table bridge fwsg" in out and "add table inet fwsg" in out
    assert HOSTILE not in out and "evil" not in out and "flush ruleset" not in out
    assert tables(ns) == []                       # a dry run changes nothing

    rc, out, err = fwsg("apply", "-", "--netns", ns, "--json", "--dry-run", input=text)
    assert rc == 0 and json.loads(out)["changed"] is True
    assert "evil" not in json.loads(out)["batch"]

    rc, out, err = fwsg("apply", "-", "--netns", ns, input=text)
    assert rc == 0, err
    assert tables(ns) == ["table bridge fwsg", "table inet fwsg"]
    ruleset = nft(ns, "list", "ruleset")
    assert "evil" not in ruleset and HOSTILE not in ruleset
    assert "198.51.100.7" in ruleset                # the group and its members are there
    # the ids come back through fwsg's own record, not through nft
    rc, out, err = fwsg("show", "--netns", ns, "--json")
    assert rc == 0, err
    info = json.loads(out)
    assert HOSTILE in [g["id"] for g in info["groups"]]
    assert HOSTILE in [p["id"] for p in info["ports"]]
    # and the same model again is a no-op
    rc, out, err = fwsg("apply", "-", "--netns", ns, input=text)
    assert rc == 0 and "no change" in out, (out, err)


# ------------------------------------------------------------------------ other tables

OTHER = """\
table inet other {
    set egress { type ipv4_addr; elements = { 192.0.2.200, 198.51.100.1 } }
    set allowed6 { type ipv6_addr; flags interval; elements = { 2001:db8:ff::/48 } }
    chain egress-pre {
        type filter hook prerouting priority -150; policy accept;
        ip saddr @egress counter accept
        ip6 saddr @allowed6 tcp dport 22 accept comment "not fwsg"
    }
    chain port-src { ip daddr 203.0.113.9 drop; }
}
table bridge other {
    set macs { type ether_addr; elements = { fa:16:3e:00:00:77 } }
    chain forward {
        type filter hook forward priority 10; policy accept;
        ether saddr @macs drop
    }
}
"""


def _other(ns):
    return {t: (nft(ns, "list", "table", *t.split()), nft(ns, "-a", "list", "table", *t.split()))
            for t in ("inet other", "bridge other")}


def test_other_tables_are_never_touched(make_ns):
    ns = make_ns()
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=OTHER, text=True,
                   check=True, capture_output=True, timeout=10)
    before = _other(ns)
    assert "192.0.2.200" in before["inet other"][0] and "fa:16:3e:00:00:77" in \
        before["bridge other"][0]

    apply_demo(ns)
    assert _other(ns) == before

    rc, out, err = fwsg("apply", DEMO, "--netns", ns)
    assert rc == 0 and "no change" in out, (out, err)
    assert _other(ns) == before

    rc, out, err = fwsg("apply", DEMO, "--netns", ns, "--reconcile")
    assert rc == 0 and "repaired: nothing" in out, (out, err)
    assert _other(ns) == before

    rc, out, err = fwsg("show", "--netns", ns)
    assert rc == 0 and "tables bridge, inet" in out, (out, err)
    assert "other" not in out and "192.0.2.200" not in out

    rc, out, err = fwsg("show", "--netns", ns, "--json")
    assert rc == 0, err
    info = json.loads(out)
    assert info["tables"] == ["bridge", "inet"]
    fwsg_sets = {(s["family"], s["name"]) for s in info["sets"]}
    # only fwsg's objects, although "other" uses some of the same names
    assert ("inet", "allowed6") not in fwsg_sets
    egress = [s for s in info["sets"] if s["name"] == "egress"]
    assert egress == [{"family": "inet", "name": "egress", "kind": "map",
                       "type": "mark : verdict", "interval": False, "elements": 3}]
    macs = [s for s in info["sets"] if s["name"] == "macs"]
    assert len(macs) == 1 and macs[0]["type"] == "ifname . ether_addr"
    listing = nft(ns, "list", "table", "bridge", "fwsg") + nft(ns, "list", "table", "inet", "fwsg")
    assert info["chains"] == listing.count("\tchain ") and info["rules"] > info["chains"]
    assert len(info["ports"]) == 3 and len(info["groups"]) == 4
    assert _other(ns) == before

    rc, out, err = fwsg("flush", "--netns", ns)
    assert rc == 0 and "removed table bridge fwsg, table inet fwsg" in out, (out, err)
    assert tables(ns) == ["table bridge other", "table inet other"]
    assert _other(ns) == before
    rc, out, err = fwsg("flush", "--netns", ns)
    assert rc == 0 and "fwsg has no tables" in out
    rc, out, err = fwsg("show", "--netns", ns, "--json")
    assert rc == 0 and json.loads(out)["tables"] == []
    assert _other(ns) == before


# ------------------------------------------------------------------------ kernel refuses

def test_kernel_refusal_exits_1_and_changes_nothing(make_ns):
    ns = make_ns()
    # another program owns a table named like fwsg's (nft "flags owner": only the socket that
    # made it may change it, while it lives) -> the kernel refuses every change
    holder = subprocess.Popen(["ip", "netns", "exec", ns, "nft", "-i"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    try:
        holder.stdin.write("add table inet fwsg { flags owner; }\n")
        holder.stdin.flush()
        for _ in range(50):
            if tables(ns):
                break
            time.sleep(0.05)
        before = snapshot(ns)
        for extra in ([], ["--json"], ["--reconcile"]):
            rc, out, err = fwsg("apply", DEMO, "--netns", ns, *extra)
            assert rc == 1, (extra, out, err)
            assert out == ""
            assert err.startswith("fwsg: ") and err.count("\n") == 1, err
            assert "Traceback" not in err
            assert "owner" in err, err
            assert snapshot(ns) == before
        assert tables(ns) == ["table inet fwsg"]
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    # once the owner is gone (its table with it), the same command works
    rc, out, err = fwsg("apply", DEMO, "--netns", ns)
    assert rc == 0, err
    assert "map egress" in nft(ns, "list", "table", "inet", "fwsg")


def test_someone_elses_objects_in_fwsgs_table_are_replaced(make_ns):
    """A *set* "egress" where fwsg wants a map of that name, used by someone's rule in fwsg's
    table: the set cannot be deleted on its own (Device or resource busy); fwsg rebuilds its
    table in the same transaction."""
    ns = make_ns()
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], text=True, check=True,
                   capture_output=True, timeout=10, input="""\
table inet fwsg {
    set egress { type ipv4_addr; elements = { 192.0.2.7 } }
    chain mine { ip saddr @egress counter drop; }
}
""")
    rc, out, err = fwsg("apply", DEMO, "--netns", ns, "--reconcile")
    assert rc == 0, err
    assert "rebuilt" in out and "set egress was re-declared" in out, out
    listing = nft(ns, "list", "table", "inet", "fwsg")
    assert "map egress" in listing and "chain mine" not in listing
    rc, out, _ = fwsg("apply", DEMO, "--netns", ns, "--dry-run")
    assert out == "# nothing to change\n"


# ------------------------------------------------------------------------ stdin and --json

def test_apply_stdin_json(make_ns):
    ns = make_ns()
    text = json.dumps(_demo())
    rc, out, err = fwsg("apply", "-", "--netns", ns, "--json", input=text)
    assert rc == 0, err
    r = json.loads(out)
    for key in ("changed", "summary", "counts", "timings_ms", "transport"):
        assert key in r, key
    assert r["changed"] is True
    assert r["transport"] in ("libnftables", "netlink", "libnftables+netlink")
    assert sorted(r["summary"]["tables_added"]) == ["bridge", "inet"]
    assert r["counts"]["rules"] > 0 and r["counts"]["elements"] > 0
    assert all(isinstance(v, (int, float)) for v in r["timings_ms"].values())
    assert tables(ns) == ["table bridge fwsg", "table inet fwsg"]
    # what the summary says is what the kernel holds
    listing = nft(ns, "list", "ruleset")
    assert listing.count("\tchain ") == r["counts"]["chains"]
    assert "192.0.2.11" in listing and "2001:db8::13" in listing

    rc, out, err = fwsg("apply", "-", "--netns", ns, "--json", input=text)
    assert rc == 0, err
    r2 = json.loads(out)
    assert r2["changed"] is False and r2["counts"] == r["counts"]
    assert r2["summary"]["elements_added"] == 0 and r2["summary"]["chains_added"] == 0

    # a member change through stdin touches elements only
    doc = _demo()
    doc["sg_member_ips"]["sg-web"]["IPv4"].append("203.0.113.5")
    rc, out, err = fwsg("apply", "-", "--netns", ns, "--json", input=json.dumps(doc))
    assert rc == 0, err
    r3 = json.loads(out)
    assert r3["changed"] is True and r3["summary"]["elements_added"] == 1
    assert r3["summary"]["chains_changed"] == 0 and r3["summary"]["chains_added"] == 0
    assert "203.0.113.5" in nft(ns, "list", "ruleset")

    # the human form through stdin
    rc, out, err = fwsg("apply", "-", "--netns", ns, input=json.dumps(doc))
    assert rc == 0 and "no change in netns " + ns in out, (out, err)


def test_netns_that_does_not_exist_exits_2():
    ns = f"fwsg-cli-{os.getpid()}-missing"
    rc, out, err = fwsg("apply", DEMO, "--netns", ns)
    assert rc == 2 and err.count("\n") == 1 and ns in err and "does not exist" in err
