"""Hardening against a real kernel (each test makes its own namespace, always deleted):

- parallel ``fwsg apply`` processes of two models on one namespace end equal to exactly one
  model, never a mix, and the names record is never corrupt; a busy lock names its holder;
- threads hammering one Firewall leave the kernel equal to its model;
- removing what someone else already deleted succeeds and is reported as repaired drift;
- a fuzz of the wire format through the CLI: exit 0 or 2, never a traceback, the namespace's
  ruleset byte-identical after every refusal.
"""

import copy
import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fwsg import statefile
from fwsg.firewall import Firewall
from fwsg.lab import netns_available
from fwsg.nslock import NamespaceLock
from tests.unit.test_hostile_input import JSON_VALUES, PATHS, _put

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FWSG = os.path.join(os.path.dirname(sys.executable), "fwsg")
if not os.path.exists(FWSG):
    FWSG = os.path.join(ROOT, ".venv", "bin", "fwsg")
DEMO = os.path.join(ROOT, "examples", "demo-model.json")
_seq = itertools.count()


@pytest.fixture
def ns():
    """A new empty network namespace, deleted (with fwsg's record for it) after the test."""
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"netns tests: {why}")
    name = f"fwsg-hard-{os.getpid()}-{next(_seq)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=10)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        statefile.remove(name)
        assert not os.path.exists(f"/run/netns/{name}")


def fwsg(*args, input=None):
    p = subprocess.run([FWSG, *args], input=input, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def nft(ns, *args):
    p = subprocess.run(["ip", "netns", "exec", ns, "nft", *args], capture_output=True,
                       text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    return p.stdout


def demo():
    with open(DEMO) as f:
        return json.load(f)


def other_model():
    """Another model for the same ports and groups: other rules and members (so that two
    unsynchronised commits would append to the same chains without any refusal)."""
    doc = demo()
    for sg in doc["security_groups"]:
        doc["security_groups"][sg] = [{"direction": "ingress", "ethertype": "IPv4",
                                       "protocol": "tcp", "port_range_min": 2222}]
    doc["sg_member_ips"]["sg-web"] = {"IPv4": ["198.51.100.7"], "IPv6": []}
    return doc


# -- (5) processes ----------------------------------------------------------------------------

def test_parallel_apply_processes_end_equal_to_one_model(ns, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(demo()))
    b.write_text(json.dumps(other_model()))
    winners = []
    # each process pauses between reading the kernel and committing: without the lock both
    # would read the same state and commit on top of each other
    env = dict(os.environ, FWSG_TEST_HOOKS="before-commit=sleep:0.3")
    for _ in range(4):
        procs = [subprocess.Popen([FWSG, "apply", str(m), "--netns", ns, "--wait", "60"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env)
                 for m in (a, b)]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        same = [m for m in (a, b)
                if fwsg("apply", str(m), "--netns", ns, "--dry-run")[1] == "# nothing to change\n"]
        assert len(same) == 1, "the kernel holds a mix of both models"
        winners.append(same[0])
        with open(statefile.path_for(ns)) as f:
            record = json.load(f)  # never corrupt
        want = json.loads(same[0].read_text())
        assert set(record["ports"]) == set(want["devices"])
        rc, _, err = fwsg("flush", "--netns", ns)
        assert rc == 0, err
    leftovers = [f for f in os.listdir(statefile.STATE_DIR) if f.startswith(f".{ns}.")]
    assert not leftovers


def test_busy_namespace_names_the_holder_and_wait_works(ns, tmp_path):
    m = tmp_path / "m.json"
    m.write_text(json.dumps(demo()))
    lock = NamespaceLock(ns)
    lock.acquire()
    try:
        rc, _, err = fwsg("apply", str(m), "--netns", ns)
        assert rc == 1 and f"pid {os.getpid()}" in err and "--wait" in err
        assert err.count("\n") == 1
        t0 = time.monotonic()
        rc, _, err = fwsg("apply", str(m), "--netns", ns, "--wait", "0.5")
        assert rc == 1 and time.monotonic() - t0 >= 0.5 and "after waiting" in err
        threading.Timer(0.5, lock.release).start()
        rc, out, err = fwsg("apply", str(m), "--netns", ns, "--wait")
        assert rc == 0, err
    finally:
        lock.release()
    assert "fwsg" in nft(ns, "list", "tables")


# -- (4) threads ------------------------------------------------------------------------------

def test_threads_hammering_one_firewall_leave_the_kernel_equal_to_the_model(ns):
    fw = Firewall(netns=ns)
    fw.apply(demo())
    errors = []
    inside = []   # threads inside the backend or the desired state right now

    def exclusive(call):
        def wrapped(*args, **kwargs):
            inside.append(threading.get_ident())
            try:
                if len(inside) > 1:
                    errors.append("two threads inside the Firewall at once")
                time.sleep(0.0005)  # widen the window
                return call(*args, **kwargs)
            finally:
                inside.remove(threading.get_ident())
        return wrapped

    # the backend, the desired state and a transaction are only ever used by one thread
    fw.backend.commit = exclusive(fw.backend.commit)
    fw.backend.read = exclusive(fw.backend.read)
    d = fw._desired
    for name in ("add_members", "remove_members", "set_port", "remove_port", "set_group"):
        setattr(d, name, exclusive(getattr(d, name)))

    def worker(k):
        rnd = random.Random(k)
        sg = ["sg-web", "sg-db", "sg-admin", "sg-client"][k]
        try:
            for i in range(150):
                op = rnd.randrange(6)
                ip = f"198.51.100.{rnd.randrange(1, 250)}"
                if op == 0:
                    fw.add_security_group_members(sg, [ip])
                elif op == 1:
                    fw.remove_security_group_members(sg, [ip])
                elif op == 2:
                    fw.update_security_group_members(sg, {"IPv4": [ip, f"203.0.113.{i % 250}"]})
                elif op == 3:
                    port = {"id": f"t{k}", "device": f"tap-t{k}", "mac_address":
                            f"fa:16:3e:00:01:{k:02x}", "fixed_ips": [f"192.0.2.{200 + k}"],
                            "security_groups": [sg]}
                    fw.prepare_port_filter(port)
                elif op == 4:  # a chain refill through libnftables (the GIL released)
                    fw.update_security_group_rules(sg, [
                        {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                         "port_range_min": rnd.randrange(1, 65535)},
                        {"direction": "egress", "ethertype": "IPv4"}])
                else:
                    with fw.defer_apply():
                        fw.remove_port_filter(f"t{k}")
                        fw.add_security_group_members(sg, [ip])
                        fw.reconcile() if i % 20 == 0 else None
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    def reconciler():
        try:
            for _ in range(40):
                fw.reconcile()   # reads the kernel back through libnftables
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    threads.append(threading.Thread(target=reconciler))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: interleave inside calls
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        sys.setswitchinterval(interval)
    assert not errors, sorted(set(errors))
    fresh = Firewall(netns=ns)
    assert not fresh.plan(fw.model), "the kernel differs from the Firewall's model"
    assert fw.reconcile().repaired == []


# -- (7) removal of what is gone --------------------------------------------------------------

def test_removing_a_member_someone_already_deleted(ns):
    fw = Firewall(netns=ns)
    fw.apply(demo())
    fw.add_security_group_members("sg-web", ["198.51.100.5"])
    name = fw._desired.names.member_set("sg-web", 4)
    nft(ns, "delete", "element", "inet", "fwsg", name, "{ 198.51.100.5 }")
    r = fw.remove_security_group_members("sg-web", ["198.51.100.5"])
    assert r.repaired, "the drift was not reported"
    fw.add_security_group_members("sg-web", ["198.51.100.6"])   # an unrelated call
    members = nft(ns, "list", "set", "inet", "fwsg", name)
    assert "198.51.100.5" not in members and "198.51.100.6" in members
    assert not Firewall(netns=ns).plan(fw.model)


def test_removing_a_port_whose_chain_someone_already_deleted(ns):
    fw = Firewall(netns=ns)
    fw.apply(demo())
    nft(ns, "delete", "element", "bridge", "fwsg", "port-src", '{ "tap-vm3" }')
    r = fw.remove_port_filter("port-client")
    assert r.repaired
    assert '"tap-vm3"' not in nft(ns, "list", "map", "bridge", "fwsg", "port-src")
    assert not Firewall(netns=ns).plan(fw.model)


# -- (8) fuzz through the CLI -----------------------------------------------------------------

BASE = {
    "security_groups": {"sg": [{"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                                "port_range_min": 80, "remote_group_id": "sg"}]},
    "sg_member_ips": {"sg": {"IPv4": ["192.0.2.10"], "IPv6": []}},
    "devices": {"p": {"device": "tap1", "mac_address": "fa:16:3e:00:00:01",
                      "fixed_ips": ["192.0.2.10"], "security_groups": ["sg"]}},
}


@pytest.fixture
def base_ns(ns, tmp_path):
    m = tmp_path / "base.json"
    m.write_text(json.dumps(BASE))
    rc, _, err = fwsg("apply", str(m), "--netns", ns)
    assert rc == 0, err
    return ns


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(st.tuples(st.sampled_from(PATHS), JSON_VALUES), min_size=1,
                          max_size=2))
def test_fuzz_through_the_cli_leaves_the_kernel_unchanged_on_refusal(base_ns, mutations):
    doc = copy.deepcopy(BASE)
    for path, value in mutations:
        _put(doc, path, value)
    before = nft(base_ns, "list", "ruleset")
    rc, _, err = fwsg("apply", "-", "--netns", base_ns, "--dry-run", input=json.dumps(doc))
    assert rc in (0, 2) and "Traceback" not in err
    rc, _, err = fwsg("apply", "-", "--netns", base_ns, input=json.dumps(doc))
    assert rc in (0, 2) and "Traceback" not in err, err
    if rc == 2:
        assert err.count("\n") == 1
        assert nft(base_ns, "list", "ruleset") == before
    else:  # accepted: back to the base for the next example
        rc, _, err = fwsg("apply", "-", "--netns", base_ns, input=json.dumps(BASE))
        assert rc == 0, err


# -- (8) environment and record ---------------------------------------------------------------

def test_corrupt_names_record_is_a_one_line_error_for_show_and_rewritten_by_apply(ns, tmp_path):
    m = tmp_path / "m.json"
    m.write_text(json.dumps(demo()))
    assert fwsg("apply", str(m), "--netns", ns)[0] == 0
    for garbage in ('{"ports": [1, 2]}', "\x00\xff garbage", '["x"]', '{"groups": {"a": 5}}'):
        with open(statefile.path_for(ns), "w", encoding="latin-1") as f:
            f.write(garbage)
        rc, _, err = fwsg("show", "--netns", ns)
        assert rc == 2 and "names record is corrupt" in err and err.count("\n") == 1, err
        rc, _, err = fwsg("apply", str(m), "--netns", ns)
        assert rc == 0, err
        rc, out, err = fwsg("show", "--netns", ns)
        assert rc == 0 and "port-web" in out, err


def test_names_record_rewritten_only_when_names_change_or_the_file_is_not_ours(ns):
    """A whole model that changes only members leaves the record file as written (no fsync on
    the hot path); a port change, a removed record and a record edited by someone else are
    rewritten by the next changed apply."""
    fw = Firewall(netns=ns)
    doc = demo()
    fw.apply(doc)
    written = statefile.identity(ns)
    assert written is not None
    for ip in ("198.51.100.21", "198.51.100.22"):
        doc["sg_member_ips"]["sg-web"]["IPv4"].append(ip)
        assert fw.apply(copy.deepcopy(doc)).changed
        assert statefile.identity(ns) == written
    del doc["devices"]["port-client"]
    assert fw.apply(copy.deepcopy(doc)).changed
    assert statefile.identity(ns) != written
    assert set(statefile.load(ns, strict=True)["ports"]) == {"port-web", "port-db"}
    statefile.remove(ns)
    doc["sg_member_ips"]["sg-web"]["IPv4"].pop()
    assert fw.apply(copy.deepcopy(doc)).changed
    assert set(statefile.load(ns, strict=True)["ports"]) == {"port-web", "port-db"}
    with open(statefile.path_for(ns), "w") as f:
        f.write("{}")
    doc["sg_member_ips"]["sg-web"]["IPv4"].pop()
    assert fw.apply(copy.deepcopy(doc)).changed
    assert set(statefile.load(ns, strict=True)["ports"]) == {"port-web", "port-db"}
    with fw.defer_apply():  # a member-only model and a port in one transaction
        doc["sg_member_ips"]["sg-web"]["IPv4"].append("198.51.100.23")
        fw.apply(copy.deepcopy(doc))
        fw.prepare_port_filter(dict(demo()["devices"]["port-client"], id="port-client"))
    assert set(statefile.load(ns, strict=True)["ports"]) == {"port-web", "port-db", "port-client"}
    fw.flush()


def test_non_root_and_a_plain_file_as_netns(ns, tmp_path):
    m = tmp_path / "m.json"
    m.write_text(json.dumps(demo()))
    os.chmod(tmp_path, 0o755)
    os.chmod(m, 0o644)
    for argv in (["show", "--netns", ns], ["apply", str(m), "--netns", ns], ["show"]):
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            FWSG, *argv], capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and "root" in p.stderr and p.stderr.count("\n") == 1, p.stderr
    plain = f"/run/netns/fwsg-hard-plain-{os.getpid()}"
    with open(plain, "w"):
        pass
    try:
        rc, _, err = fwsg("apply", str(m), "--netns", os.path.basename(plain))
        assert rc == 2 and "not a network namespace" in err and err.count("\n") == 1, err
    finally:
        os.unlink(plain)


# -- (10a) a fresh process reads back only what it must -----------------------------------------

def test_fresh_process_trusts_an_unmoved_generation_and_reads_after_any_change(ns):
    doc = demo()
    Firewall(netns=ns).apply(doc)

    def fresh():
        fw = Firewall(netns=ns)
        reads = []
        real = fw.backend.read
        fw.backend.read = lambda: reads.append(1) or real()
        return fw, reads

    fw, reads = fresh()
    assert not fw.apply(doc).changed and reads == []      # proven: nothing read back
    assert not Firewall(netns=ns).plan(fw.model)           # and the kernel really matches
    web = fw._desired.names.member_set("sg-web", 4)
    nft(ns, "delete", "element", "inet", "fwsg", web, "{ 192.0.2.11 }")   # drift
    fw, reads = fresh()
    r = fw.apply(doc)
    assert reads and r.changed                             # the generation moved: read, repair
    assert "192.0.2.11" in nft(ns, "list", "set", "inet", "fwsg", web)
    fw, reads = fresh()
    assert not fw.apply(doc).changed and reads == []      # proven again after the repair
    other = demo()
    other["sg_member_ips"]["sg-web"]["IPv4"].append("198.51.100.9")
    fw, reads = fresh()
    assert fw.apply(other).changed and reads               # another desired state: read back
    assert "198.51.100.9" in nft(ns, "list", "set", "inet", "fwsg", web)


def test_a_cold_start_in_steps_proves_its_state_with_the_fingerprint_made_beside_the_kernel(
        ns, monkeypatch):
    from fwsg import fingerprint
    from fwsg.lab.bench import scenario

    doc = scenario(ports=20, groups=5, rules=5, members=30000)   # committed in steps
    threads, real = [], fingerprint.fingerprint
    monkeypatch.setattr(fingerprint, "fingerprint",
                        lambda rs: threads.append(threading.current_thread().name) or real(rs))
    assert Firewall(netns=ns).apply(doc).changed
    assert threads == ["fwsg-fingerprint"]                  # computed while the kernel worked
    fw = Firewall(netns=ns)
    reads = []
    real_read = fw.backend.read
    fw.backend.read = lambda: reads.append(1) or real_read()
    assert not fw.apply(doc).changed and reads == []       # the proof it recorded holds
