"""Helpers for the firewall netns tests: a lab with three VMs and an outside host, and a small
builder for models whose ports are the lab's VMs (members computed as Neutron does)."""

import contextlib
import copy
import os
import subprocess

import pytest

from fwsg.lab.demo import add_nodes
from fwsg.firewall import Firewall
from fwsg.lab import Lab, netns_available

ALL_EGRESS = [{"direction": "egress", "ethertype": "IPv4"},
              {"direction": "egress", "ethertype": "IPv6"}]


def build_lab(lab):
    """The demo's nodes on ``lab``: vm1-vm3 (192.0.2.11-13) and the outside host out (.99)."""
    return add_nodes(lab)


@contextlib.contextmanager
def running_lab(prefix):
    """A demo-node lab (up) and a Firewall on its host namespace, torn down afterwards; skips
    the test when namespaces are not available."""
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"netns tests: {why}")
    lab = build_lab(Lab(f"{prefix}{os.getpid() % 100000}"))
    lab.up()
    try:
        yield lab, Firewall(netns=lab.host_ns)
    finally:
        lab.down()


def web_db(v6=False):
    """Groups ``web`` (egress only) and ``db`` (tcp 5432 from web's members)."""
    db = [rule("ingress", protocol="tcp", ports=5432, remote_group_id="web")]
    if v6:
        db.append(rule("ingress", "IPv6", protocol="tcp", ports=5432, remote_group_id="web"))
    return {"web": list(ALL_EGRESS), "db": db + ALL_EGRESS}


def rule(direction, ethertype="IPv4", protocol=None, ports=None, **kw):
    r = {"direction": direction, "ethertype": ethertype}
    if protocol is not None:
        r["protocol"] = protocol
    if ports is not None:
        lo, hi = (ports, ports) if isinstance(ports, int) else ports
        r["port_range_min"], r["port_range_max"] = lo, hi
    r.update(kw)
    return r


def model(lab, groups, ports, members=None, **port_extra):
    """A wire-format model: ``ports`` maps VM name -> list of groups (or a dict of port fields
    with a ``security_groups`` key). Members of each group are its ports' fixed IPs, plus
    ``members`` (group -> extra addresses)."""
    devices = {}
    mem = {sg: {"IPv4": [], "IPv6": []} for sg in groups}
    for vm, spec in ports.items():
        node = lab.node(vm)
        spec = {"security_groups": spec} if isinstance(spec, list) else dict(spec)
        port = {"device": node.tap, "mac_address": node.mac,
                "fixed_ips": list(node.ipv4) + list(node.ipv6), "port_security_enabled": True}
        port.update(port_extra.get(vm, {}))
        port.update(spec)
        devices[f"port-{vm}"] = port
        for sg in port["security_groups"]:
            mem[sg]["IPv4"].extend(node.ipv4)
            mem[sg]["IPv6"].extend(node.ipv6)
    for sg, extra in (members or {}).items():
        for ip in extra:
            mem[sg]["IPv6" if ":" in ip else "IPv4"].append(ip)
    return {"security_groups": copy.deepcopy(groups), "sg_member_ips": mem, "devices": devices}


def flush_conntrack(lab):
    subprocess.run(["ip", "netns", "exec", lab.host_ns, "conntrack", "-F"],
                   capture_output=True, timeout=5)


def nft_handles(lab):
    """Every rule handle of fwsg's tables in the lab's host namespace (text of ``nft -a``)."""
    out = []
    for fam in ("bridge", "inet"):
        r = subprocess.run(["ip", "netns", "exec", lab.host_ns, "nft", "-a", "list", "table",
                            fam, "fwsg"], capture_output=True, text=True, timeout=5)
        out.append(r.stdout)
    return "".join(out)
