"""The iptables backend's own behaviour against a real kernel (iptables-legacy and
iptables-nft): member changes touch ipsets only, a second apply makes no kernel call, a cold
read-back finds nothing to do, other users' chains and sets are never touched, drift is
repaired, conntrack zones per network, a refused commit leaves memory equal to the kernel,
groups beyond ipset's default size, switching from and to the nft backend, the CLI."""

import json
import os
import re
import subprocess
import sys

import pytest

from fwsg.errors import KernelError
from fwsg.firewall import Firewall
from tests.netns.fwlab import ALL_EGRESS, flush_conntrack, model, rule, running_lab, web_db

VARIANTS = ("legacy", "nft")
FWSG = os.path.join(os.path.dirname(sys.executable), "fwsg")


@pytest.fixture(scope="module", params=VARIANTS)
def fwlab(request):
    with running_lab(f"ipb{request.param[0]}") as (lab, _):
        yield lab, request.param


@pytest.fixture
def env(fwlab):
    """The lab, a fresh Firewall of the variant; fwsg's state removed afterwards."""
    lab, variant = fwlab
    flush_conntrack(lab)
    fw = Firewall(netns=lab.host_ns, backend=f"iptables-{variant}")
    try:
        yield lab, fw, variant
    finally:
        Firewall(netns=lab.host_ns, backend=f"iptables-{variant}").flush()


def sh(lab, *argv, check=True):
    return subprocess.run(["ip", "netns", "exec", lab.host_ns, *argv], capture_output=True,
                          text=True, check=check, timeout=30).stdout


def saved(lab, variant):
    """Every table of both families, as iptables-save prints it (without its comments)."""
    out = sh(lab, f"iptables-{variant}-save") + sh(lab, f"ip6tables-{variant}-save")
    return [re.sub(r" \[\d+:\d+\]$", "", line) for line in out.splitlines()
            if not line.startswith("#")]   # packet counters move with background traffic


def fwsg_lines(lab, variant):
    return [line for line in saved(lab, variant) if "fwsg-" in line]


def test_member_changes_touch_only_ipsets(env):
    lab, fw, variant = env
    groups = web_db(v6=True)
    ports = {"vm1": ["web"], "vm2": ["db"], "vm3": ["open"]}
    groups["open"] = ALL_EGRESS
    fw.apply(model(lab, groups, ports))
    assert lab.tcp_connect("vm1", "vm2", port=5432)
    assert not lab.tcp_connect("out", "vm2", port=5432)
    before = fwsg_lines(lab, variant)
    r = fw.add_security_group_members("web", ["192.0.2.99"])
    assert r.transport == "ipset-netlink"
    assert r.summary["elements_added"] == 1 and r.summary["restores"] == 0
    assert lab.tcp_connect("out", "vm2", port=5432)
    r = fw.remove_security_group_members("web", ["192.0.2.99"])
    assert r.transport == "ipset-netlink"
    assert not lab.tcp_connect("out", "vm2", port=5432)
    assert fwsg_lines(lab, variant) == before
    assert "192.0.2.11" in sh(lab, "ipset", "list", "fwsg-" + _set_hash("web") + "-v4")


def _set_hash(sg):
    from fwsg.backends.iptables.names import digest

    return digest(sg, 12)


def test_noop_cold_readback_and_other_users_untouched(env):
    lab, fw, variant = env
    for fam in ("iptables", "ip6tables"):
        sh(lab, f"{fam}-{variant}", "-N", "OTHER")
        sh(lab, f"{fam}-{variant}", "-A", "OTHER", "-p", "tcp", "--dport", "9", "-j", "DROP")
        sh(lab, f"{fam}-{variant}", "-A", "FORWARD", "-j", "OTHER")
        sh(lab, f"{fam}-{variant}", "-t", "mangle", "-A", "FORWARD", "-p", "udp", "-j", "MARK",
           "--set-mark", "7")
    sh(lab, "ipset", "create", "other", "hash:ip")
    sh(lab, "ipset", "add", "other", "192.0.2.200")
    try:
        others = [line for line in saved(lab, variant) if "fwsg-" not in line]
        doc = model(lab, web_db(), {"vm1": ["web"], "vm2": ["db"]})
        assert fw.apply(doc).changed
        assert not fw.apply(doc).changed                    # no kernel call at all
        fresh = Firewall(netns=lab.host_ns, backend=f"iptables-{variant}")
        assert not fresh.plan(doc)                          # cold read-back: nothing to do
        assert not fresh.apply(doc).changed
        # fwsg's hooks come first in the built-in chains; every other line is as it was
        now = [line for line in saved(lab, variant) if "fwsg-" not in line]
        assert now == others
        assert lab.tcp_connect("vm1", "vm2", port=5432)
        fresh.flush()
        assert fwsg_lines(lab, variant) == []
        assert [line for line in saved(lab, variant)] == others
        assert "192.0.2.200" in sh(lab, "ipset", "list", "other")
        assert "fwsg-" not in sh(lab, "ipset", "list", "-n")
    finally:
        sh(lab, "ipset", "destroy", "other", check=False)
        for fam in ("iptables", "ip6tables"):
            sh(lab, f"{fam}-{variant}", "-D", "FORWARD", "-j", "OTHER", check=False)
            sh(lab, f"{fam}-{variant}", "-F", "OTHER", check=False)
            sh(lab, f"{fam}-{variant}", "-X", "OTHER", check=False)
            sh(lab, f"{fam}-{variant}", "-t", "mangle", "-F", "FORWARD", check=False)


def test_reconcile_repairs_drift(env):
    lab, fw, variant = env
    doc = model(lab, web_db(), {"vm1": ["web"], "vm2": ["db"], "vm3": ["web"]},
                members={"web": ["192.0.2.99"]})
    fw.apply(doc)
    assert not lab.tcp_connect("vm1", "vm2", port=22)
    ipt = f"iptables-{variant}"
    sh(lab, ipt, "-D", "FORWARD", "-j", "fwsg-ingress")                  # hook gone
    grp = [line for line in fwsg_lines(lab, variant) if line.startswith("-A fwsg-g")
           and line.endswith("-j RETURN") and "-i -m" in line][0]
    sh(lab, ipt, "-I", grp.split()[1], "1", "-j", "ACCEPT")              # a group chain opened
    sh(lab, "ipset", "del", "fwsg-" + _set_hash("web") + "-v4", "192.0.2.99")  # member lost
    sh(lab, "ipset", "add", "fwsg-" + _set_hash("web") + "-v4", "192.0.2.200")  # stray member
    # someone's rule above fwsg's jump would accept vm1's egress before fwsg sees it
    sh(lab, ipt, "-t", "mangle", "-I", "FORWARD", "1", "-s", "192.0.2.11", "-j", "ACCEPT")
    try:
        text = "\n".join(fw.reconcile().repaired)
        assert "jump from FORWARD to fwsg-egress moved back to the top" in text
        assert "jump from FORWARD to fwsg-ingress restored" in text
        assert f"chain {grp.split()[1]} restored" in text
        assert "1 member(s) restored" in text and "1 stray member(s) removed" in text
        assert not Firewall(netns=lab.host_ns, backend=f"iptables-{variant}").plan(doc)
        assert not lab.tcp_connect("vm1", "vm2", port=22)
        assert lab.tcp_connect("out", "vm2", port=5432)
        mangle = sh(lab, ipt + "-save", "-t", "mangle").splitlines()
        forward = [line for line in mangle if line.startswith("-A FORWARD")]
        assert forward[0] == "-A FORWARD -j fwsg-egress"
    finally:
        sh(lab, ipt, "-t", "mangle", "-D", "FORWARD", "-s", "192.0.2.11/32", "-j", "ACCEPT")


def test_reconcile_finds_an_iptables_rule_edited_in_place(env):
    """A group chain's rule replaced by another (same chain, same rule count, the digest
    comment kept) lets a packet through; reconcile finds it by the chain's printed content,
    rewrites the chain, and the packet is dropped again. Rules whose protocol the save tool
    prints by name are not taken for drift."""
    lab, fw, variant = env
    groups = web_db()
    groups["db"] = groups["db"] + [rule("ingress", protocol="gre"), rule("ingress", protocol=47),
                                   rule("ingress", protocol="tcp", ports=(7000, 7001))]
    doc = model(lab, groups, {"vm1": ["web"], "vm2": ["db"]})
    fw.apply(doc)
    assert fw.reconcile().repaired == []          # nothing edited: nothing to repair
    assert not lab.tcp_connect("vm1", "vm2", port=22)
    ipt = f"iptables-{variant}"
    chain = [line.split()[1] for line in fwsg_lines(lab, variant)
             if line.startswith("-A fwsg-g") and "--dport 7000:7001" in line][0]
    rules = [line.split(" ", 2)[2] for line in fwsg_lines(lab, variant)
             if line.startswith(f"-A {chain} ")]
    pos = rules.index("-p tcp -m tcp --dport 7000:7001 -j ACCEPT") + 1
    sh(lab, ipt, "-R", chain, str(pos), "-p", "tcp", "-m", "tcp", "--dport", "22", "-j", "ACCEPT")
    edited = [line.split(" ", 2)[2] for line in fwsg_lines(lab, variant)
              if line.startswith(f"-A {chain} ")]
    assert len(edited) == len(rules) and edited[-1] == rules[-1]   # count and digest kept
    assert lab.tcp_connect("vm1", "vm2", port=22)              # the drift is real
    text = "\n".join(fw.reconcile().repaired)
    assert f"chain {chain} restored (iptables -t filter)" in text
    assert not lab.tcp_connect("vm1", "vm2", port=22)
    assert lab.tcp_connect("vm1", "vm2", port=5432)
    assert fw.reconcile().repaired == []
    assert not Firewall(netns=lab.host_ns, backend=f"iptables-{variant}").plan(doc)


def test_reconcile_finds_an_ebtables_rule_changed_in_place(env):
    """An ARP chain whose rule was swapped for another (same name, same rule count) is found
    by its content, rewritten, and spoofed ARP is dropped again."""
    lab, fw, variant = env
    groups = {"open": ALL_EGRESS}
    doc = model(lab, groups, {"vm1": ["open"], "vm2": ["open"]})
    fw.apply(doc)
    assert not lab.arp_probe("vm1", "192.0.2.12", sender_ip="192.0.2.50")
    saved_eb = sh(lab, "ebtables-nft-save", "-t", "nat").splitlines()
    chain = [line.split()[1] for line in saved_eb
             if line.startswith("-A fwsg-a") and "--arp-ip-src 192.0.2.11 " in line][0]
    rules = [line.split(" ", 2)[2] for line in saved_eb if line.startswith(f"-A {chain} ")]
    pos = rules.index("-p ARP -j DROP") + 1
    sh(lab, "ebtables-nft", "-t", "nat", "-D", chain, "-p", "ARP", "-j", "DROP")
    sh(lab, "ebtables-nft", "-t", "nat", "-I", chain, str(pos), "-p", "ARP", "-j", "RETURN")
    assert lab.arp_probe("vm1", "192.0.2.12", sender_ip="192.0.2.50")   # the drift is real
    text = "\n".join(fw.reconcile().repaired)
    assert f"chain {chain} restored (ebtables -t nat)" in text
    assert not lab.arp_probe("vm1", "192.0.2.12", sender_ip="192.0.2.50")
    assert not Firewall(netns=lab.host_ns, backend=f"iptables-{variant}").plan(doc)


def test_conntrack_zone_per_network(env):
    lab, fw, variant = env
    groups = {"web": [rule("ingress", protocol="tcp", ports=(2222, 2223))] + ALL_EGRESS}
    net = {"network_id": "net-a"}
    doc = model(lab, groups, {"vm1": ["web"], "vm2": ["web"]}, vm1=net, vm2=net)
    fw.apply(doc)
    conn = lab.open_tcp("vm1", "vm2", port=2222)
    try:
        assert conn.alive()
        flows = sh(lab, "conntrack", "-L", "-p", "tcp", "--dport", "2222")
        assert "zone=1" in flows
        assert lab.tcp_connect("out", "vm2", port=2223)
        assert lab.tcp_connect("host", "vm2", port=2223)
        groups["web"] = [rule("ingress", protocol="tcp", ports=2223)] + ALL_EGRESS
        r = fw.apply(model(lab, groups, {"vm1": ["web"], "vm2": ["web"]}, vm1=net, vm2=net))
        assert r.conntrack_killed >= 1            # the zone's flow that lost its rule
        assert not conn.alive()
    finally:
        conn.close()


def test_refused_commit_leaves_memory_equal_to_kernel(env):
    lab, fw, variant = env
    groups = web_db()
    doc = model(lab, groups, {"vm1": ["web"], "vm2": ["db"]})
    fw.apply(doc)
    # someone made a set under the name fwsg will need, of another type: the swap is refused
    groups["db"].append(rule("ingress", protocol="tcp", ports=6000, remote_group_id="db"))
    name = "fwsg-" + _set_hash("db") + "-v4"
    sh(lab, "ipset", "create", name, "hash:ip")
    try:
        with pytest.raises(KernelError, match="ipset"):
            fw.apply(model(lab, groups, {"vm1": ["web"], "vm2": ["db"]}))
        reread = Firewall(netns=lab.host_ns, backend=f"iptables-{variant}")
        assert str(fw.plan(doc)) == str(reread.plan(doc))   # memory == kernel
        assert not fw.plan(doc).tables       # the kernel kept the old rules (the squatter
                                              # set is fwsg's by name: plan destroys it)
        assert lab.tcp_connect("vm1", "vm2", port=5432)
        assert not lab.tcp_connect("vm1", "vm2", port=6000)
    finally:
        sh(lab, "ipset", "destroy", name, check=False)
    new = model(lab, groups, {"vm1": ["web"], "vm2": ["db"]})
    fw.apply(new)
    assert not Firewall(netns=lab.host_ns, backend=f"iptables-{variant}").plan(new)


def test_failure_half_way_leaves_memory_equal_to_kernel(env):
    """The restores are atomic per family, not across: when IPv6's is refused after IPv4's went
    through, memory is re-read (equal to the kernel) and the next apply completes the rest."""
    lab, fw, variant = env
    groups = web_db(v6=True)
    doc = model(lab, groups, {"vm1": ["web"], "vm2": ["db"]})
    fw.apply(doc)
    groups["db"].append(rule("ingress", protocol="tcp", ports=7000))
    groups["db"].append(rule("ingress", "IPv6", protocol="tcp", ports=7000))
    new = model(lab, groups, {"vm1": ["web"], "vm2": ["db"]})
    k = fw.backend.kernel
    argv = k._restore_argv
    k._restore_argv = lambda fam: ["false"] if fam == 6 else argv(fam)
    try:
        with pytest.raises(KernelError):
            fw.apply(new)
    finally:
        k._restore_argv = argv
    reread = Firewall(netns=lab.host_ns, backend=f"iptables-{variant}")
    assert str(fw.plan(new)) == str(reread.plan(new))     # memory == kernel
    assert lab.tcp_connect("vm1", "vm2", port=7000)        # IPv4 went through
    assert not lab.tcp_connect("vm1", "vm2", port=7000, family=6)
    r = fw.apply(new)
    assert r.summary["restores"] == 1                      # only IPv6 was left to do
    assert lab.tcp_connect("vm1", "vm2", port=7000, family=6)
    assert not Firewall(netns=lab.host_ns, backend=f"iptables-{variant}").plan(new)


def test_group_beyond_ipset_default_size(env):
    """100,000 members in one group (ipset's default maxelem is 65,536: Neutron's sets fill up)."""
    lab, fw, variant = env
    extra = [f"2001:db8:1::{i >> 16:x}:{i & 0xffff:x}" for i in range(100000)]
    r = fw.apply(model(lab, web_db(v6=True), {"vm1": ["web"], "vm2": ["db"]},
                       members={"web": extra + ["2001:db8::99"]}))
    assert r.summary["elements_added"] >= 100001
    listing = sh(lab, "ipset", "list", "-t", "fwsg-" + _set_hash("web") + "-v6")
    assert "maxelem 262144" in listing
    assert "Number of entries: 100002" in listing
    assert lab.tcp_connect("out", "vm2", port=5432, family=6)
    assert not lab.tcp_connect("vm3", "vm2", port=5432, family=6)
    r = fw.update_security_group_members("web", {"IPv6": ["2001:db8::11"]})  # a new set, swapped
    assert r.summary["sets_rebuilt"] == 1
    assert not lab.tcp_connect("out", "vm2", port=5432, family=6)
    assert lab.tcp_connect("vm1", "vm2", port=5432, family=6)
    assert not Firewall(netns=lab.host_ns, backend=f"iptables-{variant}").plan(
        model(lab, web_db(v6=True), {"vm1": ["web"], "vm2": ["db"]}))


def test_switching_backends_removes_the_other(fwlab):
    lab, variant = fwlab
    doc = model(lab, web_db(), {"vm1": ["web"], "vm2": ["db"]})
    nft = Firewall(netns=lab.host_ns)
    nft.apply(doc)
    ipt = Firewall(netns=lab.host_ns, backend=f"iptables-{variant}")
    r = ipt.apply(doc)
    assert any("nft table inet fwsg" in n for n in r.notices)
    assert "fwsg" not in sh(lab, "nft", "list", "tables").split()
    assert lab.tcp_connect("vm1", "vm2", port=5432)
    assert not lab.tcp_connect("vm3", "vm2", port=5432)
    back = Firewall(netns=lab.host_ns)
    r = back.apply(doc)
    assert any("iptables backend" in n for n in r.notices)
    assert fwsg_lines(lab, variant) == []
    assert "fwsg-" not in sh(lab, "ipset", "list", "-n")
    assert lab.tcp_connect("vm1", "vm2", port=5432)
    assert not lab.tcp_connect("vm3", "vm2", port=5432)
    back.flush()


def test_cli_bad_input_show_and_flush(fwlab, tmp_path):
    lab, variant = fwlab
    backend = f"iptables-{variant}"
    good = model(lab, web_db(), {"vm1": ["web"], "vm2": ["db"]})
    path = tmp_path / "m.json"
    path.write_text(json.dumps(good))
    cli = [FWSG]
    r = subprocess.run(cli + ["apply", str(path), "--netns", lab.host_ns, "--backend", backend],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"iptables-{variant}" in r.stdout
    before = saved(lab, variant)
    bad = json.loads(json.dumps(good))
    bad["devices"]["port-vm1"]["fixed_ips"] = ["192.0.2.300"]
    path.write_text(json.dumps(bad))
    r = subprocess.run(cli + ["apply", str(path), "--netns", lab.host_ns, "--backend", backend],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "fwsg: devices.port-vm1.fixed_ips[0]: '192.0.2.300' is not an IP address"]
    assert saved(lab, variant) == before
    r = subprocess.run(cli + ["show", "--netns", lab.host_ns, "--backend", backend, "--json"],
                       capture_output=True, text=True, timeout=60)
    info = json.loads(r.stdout)
    assert sorted(p["id"] for p in info["ports"]) == ["port-vm1", "port-vm2"]
    assert [s["elements"] for s in info["sets"]] == [1]
    r = subprocess.run(cli + ["flush", "--netns", lab.host_ns, "--backend", backend],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "removed fwsg's chains" in r.stdout
    assert fwsg_lines(lab, variant) == []


def test_variant_detection(fwlab):
    from fwsg.backends.iptables.tools import detect

    lab, variant = fwlab
    other = "nft" if variant == "legacy" else "legacy"
    sh(lab, f"iptables-{variant}", "-A", "OUTPUT", "-d", "203.0.113.1", "-j", "ACCEPT")
    try:
        assert detect(lab.host_ns).variant == variant    # the one holding rules wins
        assert detect(lab.host_ns, other).variant == other
    finally:
        sh(lab, f"iptables-{variant}", "-D", "OUTPUT", "-d", "203.0.113.1", "-j", "ACCEPT")


def test_ipset_netlink_socket(fwlab):
    """fwsg's ipset netlink messages against the kernel: batches beyond one send, both
    families, an element already there or already gone is no error, a missing set and a
    wrong family are refused naming the set and the element."""
    from fwsg.backends.iptables.ipsetnl import IpsetSocket

    lab, _ = fwlab
    sock = IpsetSocket(lab.host_ns)
    sh(lab, "ipset", "create", "fwsgtest4", "hash:net", "family", "inet")
    sh(lab, "ipset", "create", "fwsgtest6", "hash:net", "family", "inet6")
    try:
        many = [f"{net}.{i}/32" for net in ("198.51.100", "203.0.113") for i in range(256)]
        sock.change("fwsgtest4", many + ["192.0.2.0/24", many[0]], True)
        sock.change("fwsgtest6", ["2001:db8::1/128", "2001:db8:1::/48"], True)
        sock.change("fwsgtest4", many[1:] + ["192.0.2.9/32"], False)
        saved4 = sh(lab, "ipset", "save", "fwsgtest4").split("\n")
        assert sorted(line.split()[2] for line in saved4 if line.startswith("add ")) == \
            ["192.0.2.0/24", "198.51.100.0"]
        saved6 = sh(lab, "ipset", "save", "fwsgtest6")
        assert "add fwsgtest6 2001:db8::1\n" in saved6 and "2001:db8:1::/48" in saved6
        with pytest.raises(KernelError, match="fwsgnone: 192.0.2.1/32 refused: the set does "
                                              "not exist"):
            sock.change("fwsgnone", ["192.0.2.1/32"], True)
        with pytest.raises(KernelError, match="fwsgtest4: 2001:db8::1/128 refused"):
            sock.change("fwsgtest4", ["2001:db8::1/128"], True)
        sock.change("fwsgtest4", ["192.0.2.0/24"], False)    # the socket still works
        assert "add " not in sh(lab, "ipset", "save", "fwsgtest4").replace(
            "add fwsgtest4 198.51.100.0", "")
    finally:
        sock.close()
        sh(lab, "ipset", "destroy", "fwsgtest4", check=False)
        sh(lab, "ipset", "destroy", "fwsgtest6", check=False)


def test_legacy_restores_of_both_families_hold_the_xtables_lock(fwlab):
    """With both IP families to restore, iptables-legacy's processes run side by side under
    the xtables lock fwsg holds for them: meanwhile another iptables process waits for it,
    and each of fwsg's restores has a lock file of its own."""
    import time

    from fwsg.backends.iptables import kernel

    lab, _ = fwlab
    with kernel._xtables_lock(True) as private:
        assert set(private) == {4, 6} and private[4] != private[6]
        assert kernel.XT_LOCK not in private.values()
        other = subprocess.Popen(["ip", "netns", "exec", lab.host_ns, "iptables-legacy", "-L",
                                  "-n"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)                     # time to start; it cannot end while fwsg holds
        if other.poll() is not None:        # the lock: it must still be waiting
            pytest.fail("another iptables process ran while fwsg held the xtables lock")
    assert other.wait(timeout=30) == 0      # released: it went on
    with kernel._xtables_lock(False) as private:
        assert private is None
