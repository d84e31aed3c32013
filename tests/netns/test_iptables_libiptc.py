"""iptables-legacy changes made in-process through libiptc (``fwsg.backends.iptables.iptc``)
against a real kernel: the same port changes through libiptc and through iptables-restore
leave the same tables (read back with iptables-save; ebtables' nat table, changed beside
libiptc through netlink, with ebtables-nft-save and nft's netlink listing), real packets
follow them, a plan with
rules libiptc is not given goes through the restore tools, a refused libiptc commit leaves
memory equal to the kernel, the xtables lock is held while libiptc commits, and iptables-nft
never uses libiptc."""

import fcntl
import os
import re

import pytest

from fwsg.backends.iptables import ebnl, iptc, kernel
from fwsg.errors import KernelError
from fwsg.firewall import Firewall
from tests.netns.fwlab import ALL_EGRESS, model, rule, web_db
from tests.netns.test_iptables_backend import env, fwlab, saved, sh  # noqa: F401 (fixtures)

NET = {"network_id": "net-a"}


def steps(lab):
    """(name, model) in order: a base the restore tools write (group chains with ports), then
    port changes libiptc takes, then a group rule it is not given."""
    groups = web_db(v6=True)
    base = {"vm1": ["web"], "vm2": ["db"]}
    with_vm3 = dict(base, vm3={"security_groups": ["web"], **NET})     # existing profile
    vm3_both = dict(base, vm3={"security_groups": ["web", "db"], **NET})  # a new profile
    without_vm1 = {"vm2": ["db"], "vm3": {"security_groups": ["web", "db"], **NET}}
    more = dict(groups, web=groups["web"] + [rule("ingress", protocol="tcp", ports=8080)])
    return [("base", model(lab, groups, base)),
            ("port added", model(lab, groups, with_vm3)),
            ("port's groups changed", model(lab, groups, vm3_both)),
            ("port removed", model(lab, groups, without_vm1)),
            ("group rule added", model(lab, more, without_vm1))]


def eb_saved(lab):
    """ebtables' nat table as ebtables-nft-save prints it and as nft lists its expressions
    (``--debug=netlink``: every expression and its data, the compat match by name), without
    comments, rule handles and counter values."""
    text = sh(lab, "ebtables-nft-save", "-t", "nat")
    out = [line for line in text.splitlines() if not line.startswith("#")]
    nft = sh(lab, "nft", "--debug=netlink", "list", "table", "bridge", "nat")
    rules = []          # (chain, its expressions) in the kernel's order: chains by age
    for line in nft.split("\ntable bridge nat {")[0].splitlines():
        if line.startswith("bridge nat "):
            rules.append((line.split()[2], []))              # without handle and position
        elif line.strip() and rules:
            rules[-1][1].append(re.sub(r"\[ counter pkts \d+ bytes \d+ \]", "[ counter ]", line))
    return out + [f"{chain}: {' '.join(exprs)}" for chain, exprs in
                  sorted(rules, key=lambda r: r[0])]          # stable: rule order kept


def run_steps(lab, fw, variant, use_libiptc):
    """Apply each step; [(name, transport, tables read back)]."""
    fw.backend.kernel.libiptc = use_libiptc
    out = []
    for name, doc in steps(lab):
        r = fw.apply(doc)
        out.append((name, r.transport, saved(lab, variant) + eb_saved(lab)))
        if name == "port added":      # real packets follow the libiptc commit
            assert lab.tcp_connect("vm3", "vm2", port=5432)      # web -> db
            assert not lab.tcp_connect("vm1", "vm3", port=5432)  # web takes no ingress
        if name == "port's groups changed":
            assert lab.tcp_connect("vm1", "vm3", port=5432)      # now db as well
        if name == "port removed":
            assert not lab.tcp_connect("vm1", "vm2", port=5432)  # vm1 left web's members
    return out


def test_port_changes_through_libiptc_equal_restores(env):
    lab, fw, variant = env
    inproc = run_steps(lab, fw, variant, True)
    fw.flush()
    fw = Firewall(netns=lab.host_ns, backend=f"iptables-{variant}")
    restored = run_steps(lab, fw, variant, False)
    for (name, transport, tables), (_, transport_old, tables_old) in zip(inproc, restored):
        assert tables == tables_old, name
        assert "libiptc" not in transport_old, name
        legacy_port_change = variant == "legacy" and name not in ("base", "group rule added")
        assert ("libiptc" in transport) == legacy_port_change, (name, transport)
        # beside libiptc, a port's new ARP chain (ebnl) and a removal's deletions (nfdel)
        # through netlink; a port's groups changed (chains replaced) through the tool
        assert ("ebtables-netlink" in transport) == (legacy_port_change and name in (
            "port added", "port removed")), (name, transport)
    # the zone rules (raw, CT) went through libiptc too
    assert any("-j CT --zone 1" in line for line in inproc[1][2])
    assert not Firewall(netns=lab.host_ns, backend=f"iptables-{variant}").plan(steps(lab)[-1][1])


@pytest.mark.parametrize("fwlab", ["legacy"], indirect=True)
def test_refused_libiptc_commit_leaves_memory_equal_to_kernel(env):
    """A stale profile chain someone else jumps to cannot be deleted: libiptc refuses the
    IPv4 mangle change (each time, so the Firewall's re-read and second try fail too), and as
    every table's steps are made before any is committed, nothing of the removal reached the
    kernel (IPv6 and ebtables neither): the removed port stays filtered as before; memory is
    re-read equal to the kernel, and once the foreign jump is gone the next apply completes
    it."""
    lab, fw, variant = env
    docs = dict(steps(lab))
    fw.apply(docs["base"])
    only_vm2 = model(lab, web_db(v6=True), {"vm2": ["db"]})
    profile = fw._desired.profile_of["port-vm1"]
    chain = f"fwsg-p{profile}-e"
    sh(lab, "iptables-legacy", "-t", "mangle", "-A", "INPUT", "-j", chain)
    try:
        with pytest.raises(KernelError, match=f"libip4tc .*-X {chain}"):
            fw.apply(only_vm2)
        reread = Firewall(netns=lab.host_ns, backend=f"iptables-{variant}")
        assert str(fw.plan(only_vm2)) == str(reread.plan(only_vm2))   # memory == kernel
        left = {key[:2] for key in fw.plan(only_vm2).tables}
        assert left == {(4, "mangle"), (4, "filter"), (6, "mangle"), (6, "filter"),
                        ("eb", "nat")}                                 # nothing went through
        # vm1 is still filtered (web takes no ingress), in both families
        assert not lab.tcp_connect("vm2", "vm1", port=5432)
        assert not lab.tcp_connect("vm2", "vm1", port=5432, family=6)
    finally:
        sh(lab, "iptables-legacy", "-t", "mangle", "-D", "INPUT", "-j", chain)
    assert "libiptc" in fw.apply(only_vm2).transport
    assert not Firewall(netns=lab.host_ns, backend=f"iptables-{variant}").plan(only_vm2)
    assert not [line for line in saved(lab, variant) if "tap-vm1" in line or chain in line]


@pytest.mark.parametrize("fwlab", ["legacy"], indirect=True)
def test_ebtables_refused_beside_libiptc(env):
    """The ebtables restore runs beside libiptc: refused, the IP tables still went through,
    memory is re-read equal to the kernel, and the next apply completes the rest."""
    lab, fw, variant = env
    docs = dict(steps(lab))
    fw.apply(docs["base"])
    k = fw.backend.kernel
    argv = k._restore_argv
    k.ebnl = False            # through the restore process (netlink: the test below)
    k._restore_argv = lambda fam: ["false"] if fam == "eb" else argv(fam)
    try:
        with pytest.raises(KernelError, match="false refused"):
            fw.apply(docs["port added"])
    finally:
        k._restore_argv = argv
        k.ebnl = True
    reread = Firewall(netns=lab.host_ns, backend=f"iptables-{variant}")
    assert str(fw.plan(docs["port added"])) == str(reread.plan(docs["port added"]))
    assert {key[0] for key in fw.plan(docs["port added"]).tables} == {"eb"}
    assert "libiptc" not in fw.apply(docs["port added"]).transport   # ebtables only
    assert lab.tcp_connect("vm3", "vm2", port=5432)
    assert not Firewall(netns=lab.host_ns, backend=f"iptables-{variant}").plan(docs["port added"])


@pytest.mark.parametrize("fwlab", ["legacy"], indirect=True)
def test_ebtables_netlink_batch_refused_beside_libiptc(env, monkeypatch):
    """ebtables' netlink batch beside libiptc, refused by the kernel (here sent to a table
    that does not exist): nothing of it is left (one transaction), the IP tables went
    through; a Firewall that re-reads finds only ebtables' part missing and completes it.
    (A port addition: half-way, it is more closed than the model it left, so its tables are
    committed as they are made; a removal's are not, see the refused removals.)"""
    lab, fw, variant = env
    docs = dict(steps(lab))
    fw.apply(docs["base"])
    plan = fw.plan(docs["port added"])
    eb_before = sh(lab, "ebtables-nft-save", "-t", "nat").splitlines()[1:-1]
    with monkeypatch.context() as m:
        m.setattr(ebnl, "TABLE", "fwsg-no-such-table")
        with pytest.raises(KernelError, match=r"ebtables \(nat, netlink\) refused: "
                                              r"-N fwsg-a.*: No such file or directory"):
            fw.backend.kernel.commit(plan)
    assert sh(lab, "ebtables-nft-save", "-t", "nat").splitlines()[1:-1] == eb_before
    assert any("tap-vm3" in line for line in saved(lab, variant))
    reread = Firewall(netns=lab.host_ns, backend=f"iptables-{variant}")
    assert {key[0] for key in reread.plan(docs["port added"]).tables} == {"eb"}
    assert "libiptc" not in reread.apply(docs["port added"]).transport   # ebtables only
    assert lab.tcp_connect("vm3", "vm2", port=5432)
    assert not Firewall(netns=lab.host_ns, backend=f"iptables-{variant}").plan(docs["port added"])


@pytest.mark.parametrize("fwlab", ["legacy"], indirect=True)
def test_libiptc_commits_hold_the_xtables_lock(env):
    lab, fw, variant = env
    docs = dict(steps(lab))
    fw.apply(docs["base"])
    held = []
    commit = iptc.Table.commit

    def checked(self):
        fd = os.open(os.environ.get("XTABLES_LOCKFILE") or kernel.XT_LOCK, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(False)             # nobody held it: another iptables could change
        except BlockingIOError:            # the table between fwsg's read and its commit
            held.append(True)
        finally:
            os.close(fd)
        commit(self)
    iptc.Table.commit = checked
    try:
        assert "libiptc" in fw.apply(docs["port added"]).transport
    finally:
        iptc.Table.commit = commit
    assert len(held) >= 4 and all(held)       # mangle, filter, raw of both families


def test_group_rules_and_nft_never_take_libiptc(env):
    lab, fw, variant = env
    groups = {"web": [rule("ingress", protocol="tcp", ports=22)] + ALL_EGRESS}
    r = fw.apply(model(lab, groups, {"vm1": ["web"]}))
    assert r.transport == f"ipset-netlink+iptables-{variant}-restore"
    assert fw.backend.kernel.last_path == "restore"
