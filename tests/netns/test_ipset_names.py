"""The ipset names of a namespace read over netlink (what the backend switch asks on an nft
backend's first apply, without starting the ``ipset`` tool) are the tool's own listing."""

import subprocess

from fwsg.backends.iptables.ipsetnl import set_names
from fwsg.backends.iptables.switch import remove_iptables_state


def _ipset(ns, *args):
    return subprocess.run(["ip", "netns", "exec", ns, "ipset", *args], check=True,
                          capture_output=True, text=True).stdout


def test_set_names_are_what_ipset_lists_however_many(bare_namespaces):
    ns, other = bare_namespaces
    assert set_names(ns) == []
    script = "".join(f"create fwsg-t{i:04d}-v4 hash:net\n" for i in range(600))  # a dump of
    script += "create other hash:ip family inet6\n"                             # many parts
    subprocess.run(["ip", "netns", "exec", ns, "ipset", "restore"], input=script, text=True,
                   check=True)
    assert sorted(set_names(ns)) == sorted(_ipset(ns, "list", "-n").split())
    assert len(set_names(ns)) == 601
    assert set_names(other) == []                       # another namespace's are not listed


def test_the_switch_finds_an_ipset_of_ours_and_removes_it(bare_namespaces):
    ns, _ = bare_namespaces
    _ipset(ns, "create", "fwsg-0123456789-v4", "hash:net")
    _ipset(ns, "create", "not-ours", "hash:net")
    removed = remove_iptables_state(ns)
    assert any("ipset" in line for line in removed), removed
    assert _ipset(ns, "list", "-n").split() == ["not-ours"]
