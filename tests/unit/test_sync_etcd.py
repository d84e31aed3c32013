"""Publish and the agent against a real etcd (a private server per module); the Firewall uses
the in-memory backend here (tests/netns/test_sync_hosts.py runs agents on the real kernel)."""

import copy
import json
import os
import subprocess
import sys

import pytest

from fwsg.firewall import Firewall
from fwsg.sync.agent import EtcdAgent
from fwsg.sync.layout import Layout
from fwsg.sync.publish import publish
from fwsg.sync.store import EtcdStore
from tests.sync_helpers import (AgentThread, etcd_server, prefix, wait_for,  # noqa: F401
                                 while_unreachable)

HERE = os.path.dirname(__file__)
DEMO = os.path.join(HERE, "..", "..", "examples", "demo-model.json")


def demo():
    with open(DEMO) as f:
        return json.load(f)


def split(doc, ports):
    """The model with only ``ports`` as devices (what one host publishes)."""
    d = copy.deepcopy(doc)
    d["devices"] = {p: v for p, v in d["devices"].items() if p in ports}
    return d


def agent(server, layout, host, **kw):
    return EtcdAgent(Firewall(backend="fake"), EtcdStore([server.endpoint]), layout, host,
                     reconcile_every=0, **kw)


def members(a, sg, fam=4):
    m = a.fw.model
    return set(m.members.get(sg, {}).get(fam, ())) if m is not None else set()


def test_publish_writes_only_what_differs(etcd_server, prefix):
    st, L = EtcdStore([etcd_server.endpoint]), Layout(prefix)
    r = publish(st, L, demo(), host="hv1")
    assert r.puts == 14 and r.deletes == 0 and r.transactions >= 2
    rev = st.revision()
    assert publish(st, L, demo(), host="hv1").puts == 0
    assert st.revision() == rev  # nothing written at all
    doc = demo()
    doc["sg_member_ips"]["sg-web"]["IPv4"] = ["192.0.2.11", "192.0.2.40"]
    del doc["devices"]["port-client"]
    r = publish(st, L, doc, host="hv1")
    assert (r.puts, r.deletes) == (1, 1)
    assert st.get(L.member("sg-web", "192.0.2.40")) == b'"192.0.2.40"'
    assert st.get(L.port("hv1", "port-client")) is None
    assert st.get(L.port("hv1", "port-web")) is not None


def test_publish_in_bounded_transactions(etcd_server, prefix):
    st, L = EtcdStore([etcd_server.endpoint]), Layout(prefix)
    doc = {"security_groups": {"g": []},
           "sg_member_ips": {"g": {"IPv4": [f"198.51.100.{i}" for i in range(1, 255)] +
                                   [f"203.0.113.{i}" for i in range(1, 255)]}}}
    r = publish(st, L, doc)
    assert r.puts == 509 and r.transactions == 4  # 128 operations at most per transaction
    _, kvs = st.range(L.members("g"))
    assert len(kvs) == 508


def test_publish_cli_bad_input_exits_2_and_writes_nothing(etcd_server, prefix, tmp_path):
    bad = tmp_path / "bad.json"
    doc = demo()
    doc["devices"]["port-web"]["fixed_ips"] = ["192.0.2.300"]
    bad.write_text(json.dumps(doc))
    st = EtcdStore([etcd_server.endpoint])
    rev = st.revision()
    p = subprocess.run([sys.executable, "-m", "fwsg", "publish", str(bad), "--to",
                        f"{etcd_server.url}{prefix}", "--host", "hv1"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert "devices.port-web.fixed_ips[0]" in p.stderr and "Traceback" not in p.stderr
    assert st.revision() == rev
    p = subprocess.run([sys.executable, "-m", "fwsg", "publish", DEMO, "--to",
                        f"{etcd_server.url}{prefix}"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "--host is required" in p.stderr


def test_agent_cold_start_then_members_ports_and_fan_out(etcd_server, prefix):
    st, L = EtcdStore([etcd_server.endpoint]), Layout(prefix)
    doc = demo()
    # hv1 runs port-web and port-db (groups web, db, admin); hv2 runs port-client (client)
    publish(st, L, split(doc, {"port-web", "port-db"}), host="hv1")
    publish(st, L, split(doc, {"port-client"}), host="hv2")
    with AgentThread(agent(etcd_server, L, "hv1")) as a1, \
            AgentThread(agent(etcd_server, L, "hv2")) as a2:
        wait_for(lambda: a1.connected and a2.connected, what="both agents connected")
        assert set(a1.fw.model.ports) == {"port-web", "port-db"}
        assert set(a2.fw.model.ports) == {"port-client"}
        assert set(a1.watched_groups()) == {"sg-web", "sg-db", "sg-admin"}
        assert set(a2.watched_groups()) == {"sg-client"}
        # a member of sg-web (used on hv1 only): one put
        st.put(L.member("sg-web", "192.0.2.40"), '"192.0.2.40"')
        wait_for(lambda: "192.0.2.40" in members(a1, "sg-web"), what="member on hv1")
        st.delete(L.member("sg-web", "192.0.2.40"))
        wait_for(lambda: "192.0.2.40" not in members(a1, "sg-web"), what="member gone")
        # a new port on hv2 using sg-web: hv2 starts watching sg-web, loads it whole
        port = dict(doc["devices"]["port-web"], device="tap-vm9", mac_address="fa:16:3e:00:00:19",
                    fixed_ips=["192.0.2.19"])
        st.put(L.port("hv2", "port-new"), json.dumps(port))
        wait_for(lambda: a2.fw.model and "port-new" in a2.fw.model.ports, what="port on hv2")
        assert "sg-web" in a2.watched_groups()
        assert members(a2, "sg-web") == {"192.0.2.11"}
        assert "port-new" not in a1.fw.model.ports
        # events for a group only hv1 uses reach hv1 and never hv2 (the fan-out property)
        st.put(L.member("sg-admin", "192.0.2.41"), '"192.0.2.41"')
        wait_for(lambda: "192.0.2.41" in members(a1, "sg-admin"), what="admin member on hv1")
        assert a1.events_by_group().get("sg-admin", 0) == 1
        assert a2.events_by_group().get("sg-admin", 0) == 0
        assert a2.events_by_group().get("sg-db", 0) == 0
        # the port leaves hv2: sg-web is no longer watched there
        st.delete(L.port("hv2", "port-new"))
        wait_for(lambda: "sg-web" not in a2.watched_groups(), what="sg-web dropped on hv2")
        st.put(L.member("sg-web", "192.0.2.42"), '"192.0.2.42"')
        wait_for(lambda: "192.0.2.42" in members(a1, "sg-web"), what="member on hv1")
        before = a2.events_by_group().get("sg-web", 0)
        st.put(L.member("sg-web", "192.0.2.43"), '"192.0.2.43"')
        wait_for(lambda: "192.0.2.43" in members(a1, "sg-web"), what="member on hv1")
        assert a2.events_by_group().get("sg-web", 0) == before
        assert "sg-web" not in (a2.fw.model.groups or {})


def test_agent_skips_malformed_keys_and_applies_the_rest(etcd_server, prefix):
    st, L = EtcdStore([etcd_server.endpoint]), Layout(prefix)
    publish(st, L, demo(), host="hv1")
    st.put(L.member("sg-web", "x"), "not json")
    st.put(L.port("hv1", "port-bad"), '{"device": "tap-x", "mac_address": "zz", '
                                      '"security_groups": ["sg-web"]}')
    with AgentThread(agent(etcd_server, L, "hv1")) as a:
        wait_for(lambda: a.connected, what="connected")
        assert set(a.fw.model.ports) == {"port-web", "port-db", "port-client"}
        assert set(a.skipped) == {L.member("sg-web", "x"), L.port("hv1", "port-bad")}
        # later: a malformed rules value and a good member in the same burst
        st.txn([("put", L.rules("sg-db"), '[{"direction": "sideways", "ethertype": "IPv4"}]'),
                ("put", L.member("sg-db", "192.0.2.44"), '"192.0.2.44"')])
        wait_for(lambda: "192.0.2.44" in members(a, "sg-db"), what="good member applied")
        assert L.rules("sg-db") in a.skipped and "direction" in a.skipped[L.rules("sg-db")]
        assert len(a.fw.model.groups["sg-db"]) == 4  # the last good rules stay
        assert a.status()["skipped_keys"] == a.skipped
        # fixing the value clears it
        st.put(L.member("sg-web", "x"), '"192.0.2.45"')
        wait_for(lambda: "192.0.2.45" in members(a, "sg-web"), what="fixed member")
        assert L.member("sg-web", "x") not in a.skipped


def test_changes_while_down_applied_at_start_and_compaction_resyncs(etcd_server, prefix):
    st, L = EtcdStore([etcd_server.endpoint]), Layout(prefix)
    publish(st, L, demo(), host="hv1")
    st.put(L.member("sg-web", "192.0.2.46"), '"192.0.2.46"')  # while no agent runs
    with AgentThread(agent(etcd_server, L, "hv1")) as a:
        wait_for(lambda: a.connected, what="connected")
        assert "192.0.2.46" in members(a, "sg-web")
        resyncs = a.metrics.resyncs._value.get()

        def edit(store):  # while the agent cannot reach etcd: changes, then compaction past
            assert not a.connected  # the revision it would resume from
            assert "192.0.2.46" in members(a, "sg-web")  # fail static: nothing was dropped
            store.delete(L.member("sg-web", "192.0.2.46"))
            store.put(L.member("sg-web", "192.0.2.47"), '"192.0.2.47"')
            store.compact(store.revision())
        while_unreachable(etcd_server, edit)
        wait_for(lambda: a.connected and "192.0.2.47" in members(a, "sg-web"), timeout=20,
                 what="converged after compaction")
        assert "192.0.2.46" not in members(a, "sg-web")
        assert a.metrics.resyncs._value.get() == resyncs + 1


def test_agent_status_command(etcd_server, prefix, tmp_path):
    path = tmp_path / "status.json"
    p = subprocess.run([sys.executable, "-m", "fwsg", "agent", "status", "--host", "hv1",
                        "--status-file", str(path)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "no agent status" in p.stderr
    st, L = EtcdStore([etcd_server.endpoint]), Layout(prefix)
    publish(st, L, demo(), host="hv1")
    with AgentThread(agent(etcd_server, L, "hv1", status_file=str(path))) as a:
        wait_for(lambda: a.connected and path.exists(), what="status written")
        a.write_status(force=True)
        p = subprocess.run([sys.executable, "-m", "fwsg", "agent", "status", "--host", "hv1",
                            "--status-file", str(path), "--json"], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        doc = json.loads(p.stdout)
        assert doc["connected"] and doc["ports"] == 3 and len(doc["groups_watched"]) == 4
        p = subprocess.run([sys.executable, "-m", "fwsg", "agent", "status", "--host", "hv1",
                            "--status-file", str(path)], capture_output=True, text=True,
                           timeout=30)
        assert "connected" in p.stdout and "4 watched" in p.stdout


def test_metrics_endpoint(etcd_server, prefix):
    import urllib.request

    from fwsg.sync.metrics import Metrics
    from fwsg.sync.server import free_port

    st, L = EtcdStore([etcd_server.endpoint]), Layout(prefix)
    publish(st, L, demo(), host="hv1")
    m = Metrics()
    port = free_port()
    m.serve(port)
    with AgentThread(agent(etcd_server, L, "hv1", metrics=m)) as a:
        wait_for(lambda: a.connected, what="connected")
        st.put(L.member("sg-web", "192.0.2.48"), '"192.0.2.48"')
        st.put(L.member("sg-web", "y"), '"nope"')
        wait_for(lambda: "192.0.2.48" in members(a, "sg-web"), what="member")
        wait_for(lambda: a.skipped, what="skip")
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            values[k] = float(v)
    assert values['fwsg_agent_events_total{kind="put"}'] >= 2
    assert values["fwsg_agent_transactions_total"] >= 2
    assert values["fwsg_agent_commit_seconds_count"] >= 1
    assert values["fwsg_agent_event_to_commit_seconds_count"] >= 1
    assert values["fwsg_agent_skipped_keys_total"] >= 1
    assert values["fwsg_agent_groups_watched"] == 4
    assert values["fwsg_agent_ports"] == 3
    assert values["fwsg_agent_members"] == 8


def test_user_password_auth():
    from fwsg.sync.store import StoreUnavailable
    from fwsg.sync.url import open_store, parse_source
    from tests.sync_helpers import start_etcd

    server = start_etcd()  # a server of its own: auth is switched on for the whole cluster
    try:
        admin = EtcdStore([server.endpoint])
        for path, body in (("auth/user/add", {"name": "root", "password": "s3cret"}),
                           ("auth/user/grant", {"user": "root", "role": "root"}),
                           ("auth/enable", {})):
            admin.call(path, body)
        with pytest.raises(StoreUnavailable):
            EtcdStore([server.endpoint]).put("/k", "v")  # no token: refused
        st = open_store(parse_source(f"etcd://root:s3cret@{server.endpoint}/p"))
        L = Layout("/p")
        assert publish(st, L, demo(), host="hv1").puts == 14
        with AgentThread(EtcdAgent(Firewall(backend="fake"), st, L, "hv1",
                                   reconcile_every=0)) as a:
            wait_for(lambda: a.connected, what="connected with a token")
            st.put(L.member("sg-web", "192.0.2.49"), '"192.0.2.49"')
            wait_for(lambda: "192.0.2.49" in members(a, "sg-web"), what="watch with a token")
        bad = open_store(parse_source(f"etcd://root:wrong@{server.endpoint}"))
        with pytest.raises(StoreUnavailable, match="refused user 'root'"):
            bad.revision()
    finally:
        server.close()


def _certs(d):
    """A CA, a server certificate for 127.0.0.1 and a client certificate (openssl)."""
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60, cwd=d)
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=fwsg test CA")
    # etcd's gateway dials etcd itself with the server certificate: it needs clientAuth too
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\n"
                                 "extendedKeyUsage=serverAuth,clientAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return {k: str(d / v) for k, v in (("ca", "ca.pem"), ("cert", "server.pem"),
                                        ("key", "server.key"), ("client_cert", "client.pem"),
                                        ("client_key", "client.key"))}


def test_tls_with_client_certificates(tmp_path):
    import shutil

    from fwsg.errors import EnvironmentProblem
    from fwsg.sync.server import EtcdServer
    from fwsg.sync.store import StoreUnavailable
    from fwsg.sync.url import open_store, parse_source

    assert shutil.which("openssl"), "openssl is needed to make the test certificates"
    c = _certs(tmp_path)
    server = EtcdServer(tls=c)
    try:
        try:
            server.start()
        except EnvironmentProblem as e:
            pytest.fail(f"etcd with TLS did not start: {e}")
        url = f"{server.url}/p"
        st = open_store(parse_source(url, ca=c["ca"], cert=c["client_cert"], key=c["client_key"]))
        L = Layout("/p")
        assert publish(st, L, demo(), host="hv1").puts == 14
        with AgentThread(EtcdAgent(Firewall(backend="fake"), st, L, "hv1",
                                   reconcile_every=0)) as a:
            wait_for(lambda: a.connected, what="connected over TLS")
            st.put(L.member("sg-web", "192.0.2.50"), '"192.0.2.50"')
            wait_for(lambda: "192.0.2.50" in members(a, "sg-web"), what="watch over TLS")
        with pytest.raises(StoreUnavailable):  # no client certificate: refused
            open_store(parse_source(url, ca=c["ca"])).revision()
    finally:
        server.close()


def test_compaction_exactly_at_a_delete_is_not_missed(etcd_server, prefix):
    """A compaction at revision N removes the delete made at N; a watch resuming at N would
    get neither the delete nor an error. The agent resumes one revision earlier."""
    st, L = EtcdStore([etcd_server.endpoint]), Layout(prefix)
    publish(st, L, demo(), host="hv1")
    st.put(L.member("sg-web", "192.0.2.51"), '"192.0.2.51"')
    with AgentThread(agent(etcd_server, L, "hv1")) as a:
        wait_for(lambda: a.connected and "192.0.2.51" in members(a, "sg-web"), what="start")

        def edit(store):  # the only write while the agent is away, then compaction at it
            rev = store.delete(L.member("sg-web", "192.0.2.51"))
            store.compact(rev)
        while_unreachable(etcd_server, edit)
        wait_for(lambda: a.connected and "192.0.2.51" not in members(a, "sg-web"), timeout=20,
                 what="the delete applied after reconnecting")


def test_several_endpoints_a_dead_one_is_skipped(etcd_server, prefix):
    from fwsg.sync.server import free_port
    from fwsg.sync.store import StoreUnavailable

    dead = f"127.0.0.1:{free_port()}"
    st = EtcdStore([dead, etcd_server.endpoint], timeout=2)
    assert st.put(f"{prefix}/k", "v") > 0 and st.get(f"{prefix}/k") == b"v"
    with pytest.raises(StoreUnavailable, match="unreachable"):
        EtcdStore([dead], timeout=2).revision()


def test_frozen_etcd_is_noticed_and_followed_again(etcd_server, prefix):
    """A frozen (or partitioned) etcd keeps its connections open and silent: the health check
    notices, the rules stay, and the agent follows the store again once it answers."""
    import signal

    st, L = EtcdStore([etcd_server.endpoint]), Layout(prefix)
    publish(st, L, demo(), host="hv1")
    with AgentThread(agent(etcd_server, L, "hv1", health_every=0.5)) as a:
        wait_for(lambda: a.connected, what="connected")
        before = a.fw.model
        os.kill(etcd_server.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: not a.connected, timeout=15, what="the frozen store noticed")
            assert a.fw.model == before and "health check" in a.disconnect_reason
        finally:
            os.kill(etcd_server.pid, signal.SIGCONT)
        st.put(L.member("sg-web", "192.0.2.52"), '"192.0.2.52"')
        wait_for(lambda: a.connected and "192.0.2.52" in members(a, "sg-web"), timeout=20,
                 what="following the store again")
        assert a.reconnects >= 1
