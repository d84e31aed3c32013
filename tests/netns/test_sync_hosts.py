"""Two hypervisors (lab namespaces joined by an uplink, like two hosts on one network), an
agent process on each, a private etcd: real packets across hosts, faults, and the kernel read
back and compared with the store.

Topology: hv A runs a1 (web) and a2 (db, admin); hv B runs b1 (web) and b2 (client).
web accepts tcp 80 from the members of client; db accepts tcp 5432 from web's members.
The outage length is FWSG_SYNC_OUTAGE seconds (default 30).
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from fwsg.firewall import Firewall
from fwsg.lab import Lab, netns_available
from fwsg.sync.layout import Layout
from fwsg.sync.publish import publish
from fwsg.sync.store import EtcdStore
from tests.sync_helpers import start_etcd, while_unreachable

from fwsg.lab import traffic

OUTAGE = float(os.environ.get("FWSG_SYNC_OUTAGE", "30"))
PREFIX = "/fwsg"

RULES = {
    "web": [{"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
             "port_range_min": 80, "port_range_max": 80, "remote_group_id": "client"},
            {"direction": "egress", "ethertype": "IPv4"}],
    "db": [{"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
            "port_range_min": 5432, "port_range_max": 5432, "remote_group_id": "web"},
           {"direction": "ingress", "ethertype": "IPv6", "protocol": "tcp",
            "port_range_min": 5432, "port_range_max": 5432, "remote_group_id": "web"},
           {"direction": "egress", "ethertype": "IPv4"}],
    "admin": [{"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
               "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "203.0.113.0/24"}],
    "client": [{"direction": "egress", "ethertype": "IPv4"}],
}
VMS = {  # name: (host, address, groups)
    "a1": ("A", "192.0.2.11", ["web"]), "a2": ("A", "192.0.2.12", ["db", "admin"]),
    "a3": ("A", "192.0.2.13", None),  # a VM whose port is published later
    "b1": ("B", "192.0.2.21", ["web"]), "b2": ("B", "192.0.2.22", ["client"]),
}
HOSTS = {"A": "hv-a", "B": "hv-b"}


def port_of(lab, vm, groups):
    n = lab.node(vm)
    return {"device": n.tap, "mac_address": n.mac, "fixed_ips": list(n.ipv4),
            "security_groups": list(groups), "port_security_enabled": True}


class Cluster:
    """Two labs, one etcd, an agent process per host (killed by PID at the end)."""

    def __init__(self, tmp):
        tag = os.getpid() % 10000
        self.tmp = tmp
        self.labs = {"A": Lab(f"sya{tag}", "192.0.2.1/24", None),
                     "B": Lab(f"syb{tag}", "192.0.2.2/24", None, host_mac="00:00:5e:00:53:02")}
        for vm, (h, ip, _) in VMS.items():
            self.labs[h].add_vm(vm, mac=f"fa:16:3e:00:01:{ip.rsplit('.', 1)[1]}",
                                ipv4=[f"{ip}/24"])
        self.etcd = None
        self.agents = {}
        self.store = None
        self.layout = Layout(PREFIX)

    def up(self):
        for lab in self.labs.values():
            lab.up()
        a, b = self.labs["A"].host_ns, self.labs["B"].host_ns
        for cmd in (["ip", "-n", a, "link", "add", "uplink", "type", "veth", "peer", "name",
                     "uplink", "netns", b],
                    ["ip", "-n", a, "link", "set", "uplink", "master", "br0", "up"],
                    ["ip", "-n", b, "link", "set", "uplink", "master", "br0", "up"]):
            subprocess.run(cmd, check=True, capture_output=True, timeout=10)
        self.etcd = start_etcd()
        self.store = EtcdStore([self.etcd.endpoint])
        return self

    def down(self):
        errors = []
        for h in list(self.agents):
            self.stop_agent(h)
        if self.etcd is not None:
            self.etcd.close()
        for lab in self.labs.values():
            try:
                lab.down()
            except Exception as e:  # keep tearing down
                errors.append(str(e))
        assert not errors, errors

    # -- agents ------------------------------------------------------------------------------
    def status_file(self, h):
        return os.path.join(self.tmp, f"agent-{h}.json")

    def start_agent(self, h):
        log = open(os.path.join(self.tmp, f"agent-{h}.log"), "ab")
        self.agents[h] = subprocess.Popen(
            [sys.executable, "-m", "fwsg", "agent", "--source", f"{self.etcd.url}{PREFIX}",
             "--host", HOSTS[h], "--netns", self.labs[h].host_ns, "--status-file",
             self.status_file(h), "--window", "20", "--publish-stats", "1"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def stop_agent(self, h, sig=signal.SIGTERM):
        p = self.agents.pop(h, None)
        if p is None:
            return None
        if p.poll() is None:
            os.kill(p.pid, sig)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(10)
        return p.returncode

    def status(self, h):
        try:
            with open(self.status_file(h)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def log(self, h):
        with open(os.path.join(self.tmp, f"agent-{h}.log")) as f:
            return f.read()

    # -- traffic -----------------------------------------------------------------------------
    def lab_of(self, vm):
        return self.labs[VMS[vm][0]]

    def tcp(self, src, dst, port=80, timeout=0.5):
        s, d = self.lab_of(src), self.lab_of(dst)
        return traffic.tcp_connect(s.ns(src), d.ns(dst), VMS[dst][1], port, src_if="eth0",
                                   dst_if="eth0", timeout=timeout)

    # -- the store as an oracle --------------------------------------------------------------
    def store_model(self, h):
        """What host ``h`` should hold, read from etcd independently of the agent."""
        L, host = self.layout, HOSTS[h]
        rev, kvs = self.store.range(L.ports(host))
        devices = {L.parse(k)[2]: json.loads(v) for k, v in kvs}
        direct = {g for p in devices.values() for g in p["security_groups"]}
        rules, members = {}, {}
        for g in sorted(direct):
            _, kvs = self.store.range(L.group(g), revision=rev)
            for k, v in kvs:
                what = L.parse(k)
                if what[0] == "rules":
                    rules[g] = json.loads(v)
        closure = direct | {r["remote_group_id"] for g in direct for r in rules.get(g, [])
                            if r.get("remote_group_id")}
        for g in sorted(closure):
            _, kvs = self.store.range(L.group(g), revision=rev)
            members[g] = {"IPv4": [], "IPv6": []}
            for k, v in kvs:
                what = L.parse(k)
                if what[0] == "rules":
                    rules[g] = json.loads(v)
                elif what[0] == "member":
                    ip = json.loads(v)
                    members[g]["IPv6" if ":" in ip else "IPv4"].append(ip)
            rules.setdefault(g, [])
        return {"security_groups": rules, "sg_member_ips": members, "devices": devices}

    def kernel_differs(self, h):
        """The batch that would make host h's kernel equal to the store (empty: equal)."""
        plan = Firewall(netns=self.labs[h].host_ns).plan(self.store_model(h))
        return str(plan) if plan else ""

    def converge(self, timeout=20.0, hosts=("A", "B")):
        deadline = time.monotonic() + timeout
        while True:
            diffs = {h: self.kernel_differs(h) for h in hosts}
            if not any(diffs.values()):
                return
            if time.monotonic() > deadline:
                pytest.fail(f"kernel != store after {timeout:g} s: {diffs}")
            time.sleep(0.1)

    def member_set(self, h, group, fam=4):
        """The IPv{fam} member set of ``group`` in host h's kernel, element by element."""
        from fwsg.commands.show import gather

        info = gather(self.labs[h].host_ns)
        name = next(g["name"] for g in info["groups"] if g["id"] == group)
        out = subprocess.run(["ip", "netns", "exec", self.labs[h].host_ns, "nft", "-j", "list",
                              "set", "inet", "fwsg", f"{name}-m{fam}"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
        (s,) = [o["set"] for o in json.loads(out)["nftables"] if "set" in o]
        return set(s.get("elem", []))

    def ruleset(self, h):
        return subprocess.run(["ip", "netns", "exec", self.labs[h].host_ns, "nft", "list",
                               "ruleset"], capture_output=True, text=True, timeout=10).stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"netns tests: {why}")
    c = Cluster(str(tmp_path_factory.mktemp("sync")))
    try:
        c.up()
        doc = {"security_groups": RULES,
               "sg_member_ips": {g: {"IPv4": [ip for _, (_, ip, gs) in VMS.items()
                                              if gs and g in gs]} for g in RULES}}
        for h in ("A", "B"):
            doc["devices"] = {f"port-{vm}": port_of(c.labs[h], vm, gs)
                              for vm, (hh, _, gs) in VMS.items() if hh == h and gs}
            publish(c.store, c.layout, doc, host=HOSTS[h])
        c.start_agent("A")
        c.start_agent("B")
        c.converge()
        yield c
    finally:
        c.down()


def wait(cond, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting: {what}")
        time.sleep(0.05)


def put_member(c, group, ip):
    c.store.put(c.layout.member(group, ip), json.dumps(ip))


def test_member_change_reaches_both_hosts(cluster):
    c = cluster
    assert c.tcp("b2", "a1") and c.tcp("b2", "b1")        # client -> web, across and on B
    assert not c.tcp("a2", "a1") and not c.tcp("a2", "b1")  # a2 is not a client
    put_member(c, "client", "192.0.2.12")                 # one put: a2 becomes a client
    c.converge()
    assert c.tcp("a2", "a1") and c.tcp("a2", "b1")        # passes on A and on B
    c.store.delete(c.layout.member("client", "192.0.2.12"))
    c.converge()
    assert not c.tcp("a2", "a1") and not c.tcp("a2", "b1")
    assert c.tcp("b2", "a1")


def test_port_added_under_a_is_filtered_on_a_only_and_fan_out_is_zero(cluster):
    c = cluster
    assert c.tcp("b2", "a3")  # a3 has no port in the store yet: not filtered
    c.store.put(c.layout.port("hv-a", "port-a3"), json.dumps(port_of(c.labs["A"], "a3", ["db"])))
    c.converge()
    assert not c.tcp("b2", "a3")                  # filtered on A now (db: 5432 from web only)
    assert c.tcp("b1", "a3", port=5432)           # b1 is in web
    from fwsg.commands.show import gather

    devices_b = {p["device"] for p in gather(c.labs["B"].host_ns)["ports"]}
    assert "tap-a3" not in devices_b and "tap-b1" in devices_b
    # admin is used on A only: B never hears of it
    put_member(c, "admin", "192.0.2.99")
    c.converge()
    wait(lambda: c.status("A")["events_by_group"].get("admin", 0) >= 1, "A hears of admin")
    time.sleep(0.5)  # B would have heard by now too
    assert c.status("B")["events_by_group"].get("admin", 0) == 0
    assert c.status("B")["events_by_group"].get("db", 0) == 0
    assert "admin" not in c.status("B")["groups_watched"]
    c.store.delete(c.layout.member("admin", "192.0.2.99"))


def test_etcd_outage_fail_static_then_converges(cluster):
    c = cluster
    before = {h: c.ruleset(h) for h in ("A", "B")}
    put_member(c, "client", "192.0.2.13")  # a change in flight as etcd goes away
    c.etcd.stop()
    try:
        t_end = time.monotonic() + OUTAGE
        probes = 0
        while time.monotonic() < t_end or probes < 2:
            assert c.tcp("b2", "a1") and c.tcp("b2", "b1")  # allowed flows keep passing
            assert not c.tcp("a2", "a1") and not c.tcp("a2", "b1", timeout=0.3)  # no open window
            probes += 1
        for h in ("A", "B"):
            st = c.status(h)
            assert st["running"] and not st["connected"], st
            assert c.agents[h].poll() is None
        during = {h: c.ruleset(h) for h in ("A", "B")}
    finally:
        c.etcd.start()
    for h in ("A", "B"):  # never flushed: the kernel is what it was, or the pending change
        assert during[h] and "table inet fwsg" in during[h]
        assert during[h] == before[h] or "192.0.2.13" in during[h]
    put_member(c, "client", "192.0.2.12")  # a change after the outage
    c.converge(timeout=30)
    assert c.tcp("a2", "a1") and c.tcp("a2", "b1")
    assert "store unreachable" in c.log("A")
    for vm in ("192.0.2.12", "192.0.2.13"):
        c.store.delete(c.layout.member("client", vm))
    c.converge()


def test_agent_killed_mid_big_apply_then_restarted_converges(cluster):
    c = cluster
    big = [f"2001:db8:1::{i:x}" for i in range(1, 40001)]  # web's IPv6 set exists on A only
    import threading

    ops = [("put", c.layout.member("web", ip), json.dumps(ip)) for ip in big]
    c.store.txn(ops[:20000])
    rest = threading.Thread(target=c.store.txn, args=(ops[20000:],))
    rest.start()  # the agent is applying the first half while the second arrives
    time.sleep(0.3)
    assert c.stop_agent("A", signal.SIGKILL) == -signal.SIGKILL
    rest.join()
    assert c.tcp("b2", "a1")  # the kernel kept filtering: old or new rules, never none
    c.start_agent("A")
    c.converge(timeout=60)
    assert c.member_set("A", "web", 6) == set(big)
    c.store.txn([("delete", c.layout.member("web", ip)) for ip in big])
    c.converge(timeout=60)
    assert c.member_set("A", "web", 6) == set()


def test_compaction_while_an_agent_is_disconnected_resyncs(cluster):
    c = cluster
    assert c.stop_agent("B") == 0  # SIGTERM: a clean stop that leaves the rules in place
    assert c.tcp("b2", "b1") and not c.tcp("a2", "b1")
    put_member(c, "client", "192.0.2.12")  # changes while B is down...
    c.store.compact(c.store.revision())
    c.start_agent("B")
    c.converge()
    assert c.tcp("a2", "b1")
    # now compaction while B runs but cannot reach etcd: its resume revision is gone
    resyncs = c.status("B")["resyncs"]

    def edit(store):
        wait(lambda: not c.status("B")["connected"], "B sees the outage")
        store.delete(c.layout.member("client", "192.0.2.12"))
        store.compact(store.revision())
    while_unreachable(c.etcd, edit)
    c.converge(timeout=30)
    assert not c.tcp("a2", "b1")
    wait(lambda: c.status("B")["resyncs"] == resyncs + 1, "B did a full resync")


def test_malformed_key_is_skipped_and_reported(cluster):
    c = cluster
    bad = c.layout.member("client", "bad")
    c.store.txn([("put", bad, "{oops"),
                 ("put", c.layout.member("client", "192.0.2.12"), '"192.0.2.12"')])
    try:
        deadline = time.monotonic() + 10
        while not c.tcp("a2", "a1"):  # the good key of the same transaction applies
            assert time.monotonic() < deadline
        for h in ("A", "B"):
            # each host reports the key once its own agent has seen the transaction
            while bad not in c.status(h).get("skipped_keys", ()) or bad not in c.log(h):
                assert time.monotonic() < deadline, f"host {h} never reported {bad}"
                time.sleep(0.05)
        p = subprocess.run([sys.executable, "-m", "fwsg", "agent", "status", "--host", "hv-a",
                            "--status-file", c.status_file("A")], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 0 and "skipped     1 key(s)" in p.stdout
    finally:   # a malformed key left behind would fail the tests after this one
        c.store.delete(bad)
        c.store.delete(c.layout.member("client", "192.0.2.12"))


def test_random_stream_kernel_equals_store(cluster):
    c = cluster
    rnd = random.Random(int(os.environ.get("FWSG_SYNC_SEED", "9")))
    pool = [f"198.51.100.{i}" for i in range(1, 120)]
    ports = ["a1", "a3", "b1", "b2"]
    groups = ["web", "client", "db"]
    for _ in range(400):
        r = rnd.random()
        if r < 0.75:
            g, ip = rnd.choice(groups), rnd.choice(pool)
            if rnd.random() < 0.5:
                put_member(c, g, ip)
            else:
                c.store.delete(c.layout.member(g, ip))
        elif r < 0.9:
            g = rnd.choice(["web", "db"])
            rules = list(RULES[g])
            if rnd.random() < 0.5:
                rules.append({"direction": "ingress", "ethertype": "IPv4", "protocol": "udp",
                              "port_range_min": rnd.randint(1, 9000), "port_range_max": 9000})
            c.store.put(c.layout.rules(g), json.dumps(rules))
        else:
            vm = rnd.choice(ports)
            h = VMS[vm][0]
            gs = rnd.sample(["web", "client", "db"], rnd.randint(1, 2))
            c.store.put(c.layout.port(HOSTS[h], f"port-{vm}"),
                        json.dumps(port_of(c.labs[h], vm, gs)))
    c.converge(timeout=30)
    for h in ("A", "B"):
        model = c.store_model(h)
        for g in ("web", "client", "db"):
            if g in model["sg_member_ips"] and any(
                    r.get("remote_group_id") == g for rs in model["security_groups"].values()
                    for r in rs):
                assert c.member_set(h, g) == set(model["sg_member_ips"][g]["IPv4"]), (h, g)


def test_sighup_resyncs_and_repairs_drift(cluster):
    c = cluster
    web = c.member_set("B", "web")
    assert "192.0.2.21" in web
    name = next(g["name"] for g in __import__("fwsg.commands.show", fromlist=["gather"])
                .gather(c.labs["B"].host_ns)["groups"] if g["id"] == "web")
    subprocess.run(["ip", "netns", "exec", c.labs["B"].host_ns, "nft", "delete", "element",
                    "inet", "fwsg", f"{name}-m4", "{ 192.0.2.21 }"], check=True, timeout=10)
    assert "192.0.2.21" not in c.member_set("B", "web")  # someone edited our tables
    os.kill(c.agents["B"].pid, signal.SIGHUP)
    wait(lambda: "192.0.2.21" in c.member_set("B", "web"), "drift repaired after SIGHUP")
    c.converge()


def test_stats_published_under_a_lease_that_dies_with_the_agent(cluster):
    c = cluster
    key = c.layout.stats("hv-b")
    wait(lambda: c.store.get(key) is not None and c.store.get(c.layout.stats("hv-a")),
         "both agents publish their stats")
    doc = json.loads(c.store.get(key))
    assert doc["node"] == "hv-b" and doc["schema"] == "fwsg.probe/1"
    c.stop_agent("B", signal.SIGKILL)  # the node dies: nobody refreshes its lease
    try:
        wait(lambda: c.store.get(key) is None, "hv-b's stats to expire with its lease", 15)
        assert c.store.get(c.layout.stats("hv-a")) is not None
        assert c.tcp("b2", "b1") and not c.tcp("a2", "b1")  # B's kernel keeps filtering
    finally:
        c.start_agent("B")
    c.converge()
