"""Several writers on one namespace (real kernel): a Firewall whose mirror another Firewall or
another process made stale finds out under the namespace lock and commits the full difference;
an idle Firewall that has proven the kernel's state does not prove it again on every call."""

import gc
import json
import os
import subprocess
from fwsg import fingerprint
from fwsg.firewall import Firewall
from tests.netns.test_hardening import FWSG, demo, fwsg, nft, ns, other_model  # noqa: F401 - fixture

WEB = "sg-web"


def members(ns, fw):
    return nft(ns, "list", "set", "inet", "fwsg", fw._desired.names.member_set(WEB, 4))


def counting(fw, monkeypatch):
    """Count the Firewall's read-backs and every fingerprint of a whole ruleset."""
    reads, prints = [], []
    real_read, real_fp = fw.backend.read, fingerprint.fingerprint
    fw.backend.read = lambda: reads.append(1) or real_read()
    monkeypatch.setattr(fingerprint, "fingerprint", lambda rs: prints.append(1) or real_fp(rs))
    return reads, prints


def test_a_commit_by_another_firewall_is_seen_before_an_incremental_change(ns):
    fw1 = Firewall(netns=ns)
    fw1.apply(demo())
    fw2 = Firewall(netns=ns)
    fw2.apply(demo())
    fw2.add_security_group_members(WEB, ["198.51.100.8"])       # fw1's mirror is stale now
    assert "198.51.100.8" in members(ns, fw1)
    fw1.add_security_group_members(WEB, ["198.51.100.9"])
    # fw1 re-read the kernel: its model (without .8) is what the kernel holds
    assert "198.51.100.8" not in members(ns, fw1) and "198.51.100.9" in members(ns, fw1)
    assert not Firewall(netns=ns).plan(fw1.model)


def test_a_commit_by_another_process_is_seen_before_an_incremental_change(ns, tmp_path):
    fw = Firewall(netns=ns)
    fw.apply(demo())
    fw.add_security_group_members(WEB, ["198.51.100.9"])
    m = tmp_path / "other.json"
    m.write_text(json.dumps(other_model()))
    rc, _, err = fwsg("apply", str(m), "--netns", ns)
    assert rc == 0, err
    assert Firewall(netns=ns).plan(fw.model)                     # the kernel holds the other model
    fw.remove_security_group_members(WEB, ["198.51.100.9"])
    assert not Firewall(netns=ns).plan(fw.model)                 # fw re-read: its model again


def test_an_idle_second_firewall_proves_the_kernel_once(ns, monkeypatch):
    fw1 = Firewall(netns=ns)
    fw1.apply(demo())
    fw2 = Firewall(netns=ns)
    reads, prints = counting(fw2, monkeypatch)
    for _ in range(4):                                            # equal new models: no-ops
        assert not fw2.apply(demo()).changed
    assert reads == [] and len(prints) <= 1, (reads, prints)    # proven once, then trusted
    fw1.add_security_group_members(WEB, ["198.51.100.8"])        # another writer commits
    assert fw2.apply(demo()).changed and reads                   # seen: re-read, .8 removed
    assert "198.51.100.8" not in members(ns, fw2)
    reads.clear()
    prints.clear()
    for _ in range(4):
        assert not fw2.apply(demo()).changed
    assert reads == [] and prints == [], (reads, prints)         # its own commit: trusted


def test_a_forked_child_stamps_its_own_transactions(ns):
    """A child forked from a process holding a Firewall commits under stamps its parent's
    Firewall cannot mistake for its own (both commit their n-th transaction)."""
    fw = Firewall(netns=ns)
    fw.apply(demo())
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: wait for the parent's commit, commit through the copy, exit
        code = 1
        try:
            os.read(r, 1)
            fw.add_security_group_members(WEB, ["198.51.100.8"])
            code = 0
        finally:
            os._exit(code)
    fw.add_security_group_members(WEB, ["198.51.100.9"])
    os.write(w, b"x")
    _, status = os.waitpid(pid, 0)
    os.close(r)
    os.close(w)
    assert os.waitstatus_to_exitcode(status) == 0
    assert "198.51.100.8" in members(ns, fw)
    fw.add_security_group_members(WEB, ["198.51.100.10"])
    assert "198.51.100.8" not in members(ns, fw)                 # the child's change was seen
    assert not Firewall(netns=ns).plan(fw.model)


def test_lock_file_holds_the_holder_and_the_stamp_of_the_last_commit(ns):
    fw = Firewall(netns=ns)
    fw.apply(demo())
    fw.add_security_group_members(WEB, ["198.51.100.9"])
    with open(fw._nslock.path) as f:
        holder, stamp = f.read().split()
    assert holder == str(os.getpid()) and stamp == fw._stamp


def test_a_process_killed_inside_its_commit_is_seen_before_an_incremental_change(ns, tmp_path):
    """Another process dies between two steps of its commit (its rules in force, its members
    not yet): the stamp it wrote before touching the kernel makes this Firewall re-read."""
    fw = Firewall(netns=ns)
    fw.apply(demo())
    big = demo()   # one more rule (the first step) and many members (the batches after)
    big["security_groups"][WEB].append({"direction": "ingress", "ethertype": "IPv6",
                                        "protocol": "tcp", "port_range_min": 2222,
                                        "remote_group_id": WEB})
    big["sg_member_ips"][WEB]["IPv6"] = [f"2001:db8::{i >> 16:x}:{i & 0xffff:x}"
                                         for i in range(1, 35001)]
    m = tmp_path / "big.json"
    m.write_text(json.dumps(big))
    p = subprocess.run([FWSG, "apply", str(m), "--netns", ns], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, FWSG_TEST_HOOKS="between-steps=kill"))
    assert p.returncode == -9, p.stderr
    assert Firewall(netns=ns).plan(fw.model)                     # the other's rule in force
    r = fw.add_security_group_members(WEB, ["198.51.100.9"])
    assert not r.repaired, r.repaired                            # seen before, not refused
    assert not Firewall(netns=ns).plan(fw.model)                 # fw re-read: its model again


def test_a_dropped_firewall_gives_its_lock_descriptor_back(ns):
    def fds():
        gc.collect()
        return len(os.listdir("/proc/self/fd"))

    Firewall(netns=ns).apply(demo())
    before = fds()
    for _ in range(20):
        Firewall(netns=ns).apply(demo())
    assert fds() - before < 5
