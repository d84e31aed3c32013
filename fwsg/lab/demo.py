"""The demo: a lab in network namespaces, the example model applied, and a verdict matrix of
real packets next to what the model says.

The lab: a hypervisor namespace with bridge br0 (192.0.2.1, 2001:db8::1), three VMs on taps
(tap-vm1..3; 192.0.2.11-13, 2001:db8::11-13) and an unfiltered outside host (192.0.2.99).
"""

import json
import pathlib
import sys
import time
from dataclasses import dataclass

from fwsg.lab.errors import LabUsageError
from fwsg.model import Model
from fwsg.policy import Packet, PortIndex

# The example model ships inside the package (fwsg/data), so an installed wheel can run the demo.
DEFAULT_MODEL = pathlib.Path(__file__).resolve().parent.parent / "data" / "demo-model.json"

NODES = {
    "vm1": dict(mac="fa:16:3e:00:00:11", ipv4=["192.0.2.11/24"], ipv6=["2001:db8::11/64"],
                tap="tap-vm1"),
    "vm2": dict(mac="fa:16:3e:00:00:12", ipv4=["192.0.2.12/24"], ipv6=["2001:db8::12/64"],
                tap="tap-vm2"),
    "vm3": dict(mac="fa:16:3e:00:00:13", ipv4=["192.0.2.13/24"], ipv6=["2001:db8::13/64"],
                tap="tap-vm3"),
    "out": dict(mac="fa:16:3e:00:00:99", ipv4=["192.0.2.99/24"], ipv6=["2001:db8::99/64"],
                tap="up-out"),
}


@dataclass(frozen=True)
class Service:
    label: str
    kind: str          # tcp | udp | ping
    port: int = 0
    family: int = 4

    def probe(self, src, dst, timeout):
        if self.kind == "ping":
            return ("ping", src, dst, {"family": self.family, "timeout": timeout})
        fn = "tcp_connect" if self.kind == "tcp" else "udp_exchange"
        return (fn, src, dst, {"port": self.port, "family": self.family, "timeout": timeout})

    def packet(self, src_ip, dst_ip):
        if self.kind == "ping":
            proto = 1 if self.family == 4 else 58
            return Packet(self.family, proto, src_ip, dst_ip, icmp_type=8 if proto == 1 else 128)
        proto = 6 if self.kind == "tcp" else 17
        return Packet(self.family, proto, src_ip, dst_ip, sport=40000, dport=self.port)


SERVICES = (
    Service("tcp/80", "tcp", 80), Service("tcp/80 v6", "tcp", 80, 6),
    Service("tcp/5432", "tcp", 5432), Service("tcp/22", "tcp", 22),
    Service("ping", "ping"), Service("udp/53", "udp", 53),
)


def add_nodes(lab, names=tuple(NODES)):
    """Declare the demo's nodes (VMs vm1-vm3, the outside host ``out``) on a Lab."""
    for node in names:
        (lab.add_outside if node == "out" else lab.add_vm)(node, **NODES[node])
    return lab


def build_lab(name):
    """The demo's lab (not yet up)."""
    from fwsg.lab.topology import Lab

    return add_nodes(Lab(name))


def expected(model, lab, service, src, dst):
    """What the model says for ``service`` from node ``src`` to node ``dst``."""
    index = PortIndex(model)
    return index.flow_allowed(service.packet(lab.node(src).addr(service.family),
                                             lab.node(dst).addr(service.family)))


def run(model_path=None, name="demo", keep=False, timeout=0.5, as_json=False, out=sys.stdout,
        log=sys.stderr, backend="nft"):
    """Build the lab, apply the model, probe every pair and service; return (ok, report)."""
    from fwsg.firewall import Firewall

    path = pathlib.Path(model_path) if model_path else DEFAULT_MODEL
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise LabUsageError(f"{path}: cannot read model: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise LabUsageError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    model = Model.from_wire(doc)
    lab = build_lab(name)
    t0 = time.monotonic()
    print(f"== building lab '{name}': namespace {lab.host_ns} with bridge br0, "
          f"3 VMs and an outside host", file=log)
    lab.up()
    try:
        fw = Firewall(netns=lab.host_ns, backend=backend)
        print(f"== applying {path.name} in {lab.host_ns} ({backend} backend)", file=log)
        result = fw.apply(model)
        for n in result.notices:
            print(f"   notice: {n}", file=log)
        c = result.counts
        print(f"   {len(model.ports)} ports, {c['chains']} chains, {c['rules']} rules, "
              f"{c['sets']} sets, {c['maps']} maps, {c['elements']} elements; "
              f"committed in {result.timings_ms['commit']} ms", file=log)
        nodes = list(NODES)
        probes, keys = [], []
        for svc in SERVICES:
            for src in nodes:
                for dst in nodes:
                    if src != dst:
                        probes.append(svc.probe(src, dst, timeout))
                        keys.append((svc, src, dst))
        print(f"== probing {len(probes)} flows with real packets", file=log)
        measured = lab.matrix(probes)
        rows = []
        for (svc, src, dst), got in zip(keys, measured):
            rows.append({"service": svc.label, "from": src, "to": dst,
                         "expected": expected(model, lab, svc, src, dst), "measured": bool(got)})
        ok = all(r["expected"] == r["measured"] for r in rows)
        report = {"lab": name, "namespace": lab.host_ns, "model": str(path), "ok": ok,
                  "apply": result.as_dict(), "flows": rows,
                  "seconds": round(time.monotonic() - t0, 2)}
        if as_json:
            json.dump(report, out, indent=2)
            out.write("\n")
        else:
            print_matrix(rows, nodes, out)
        if keep:
            from fwsg import statefile

            statefile.save(lab.host_ns, fw.names())
            lab.detach()
            print(f"== lab kept. Try: ip netns exec {lab.ns('vm1')} ping 192.0.2.12 ; "
                  f"fwsg show --netns {lab.host_ns} ; remove it with: fwsg demo --down "
                  f"--name {name}", file=log)
        return ok, report
    finally:
        if not keep:
            lab.down()
            print("== lab removed", file=log)


def print_matrix(rows, nodes, out):
    """One block per service: rows are senders, columns receivers; 'pass'/'drop' as measured,
    '!' marking a cell where the packets disagree with the model."""
    by = {(r["service"], r["from"], r["to"]): r for r in rows}
    width = 7
    for svc in SERVICES:
        out.write(f"\n{svc.label:<12}" + "".join(f"{'to ' + n:>{width + 2}}" for n in nodes) + "\n")
        for src in nodes:
            cells = []
            for dst in nodes:
                r = by.get((svc.label, src, dst))
                if r is None:
                    cells.append("-")
                else:
                    word = "pass" if r["measured"] else "drop"
                    cells.append(word + ("" if r["measured"] == r["expected"] else "!"))
            out.write(f"  from {src:<5}" + "".join(f"{c:>{width + 2}}" for c in cells) + "\n")
    agree = sum(r["measured"] == r["expected"] for r in rows)
    passed = sum(r["measured"] for r in rows)
    out.write(f"\n{len(rows)} flows probed: {passed} pass, {len(rows) - passed} drop; "
              f"{agree}/{len(rows)} as the model says"
              + ("" if agree == len(rows) else "  ('!' marks a disagreement)") + "\n")


def down(name):
    """Remove a lab kept with --keep."""
    from fwsg.lab.topology import cleanup_stale

    return cleanup_stale(name)
