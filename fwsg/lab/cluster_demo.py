"""``fwsg demo --cluster``: the demo model on two hypervisors fed from etcd.

A private etcd on loopback; two hypervisor namespaces (labs ``<name>a`` and ``<name>b``) joined
by an uplink, an agent process on each; hv-a runs vm1 (web) and vm2 (db, admin) and the
unfiltered outside host, hv-b runs vm3 (client). The demo model is published into etcd, the
verdict matrix is probed with real packets across the hosts, then one member put in etcd is
timed until packets pass on the other host. Everything started is removed afterwards.
"""

import concurrent.futures
import copy
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from fwsg.lab.demo import DEFAULT_MODEL, NODES, SERVICES, expected, print_matrix

PLACEMENT = {"vm1": "a", "vm2": "a", "out": "a", "vm3": "b"}
HOSTS = {"a": "hv-a", "b": "hv-b"}
PORT_HOST = {"port-web": "a", "port-db": "a", "port-client": "b"}


class _Nodes:
    """Node lookup across both labs (what fwsg.demo.expected needs)."""

    def __init__(self, labs):
        self.labs = labs

    def node(self, name):
        return self.labs[PLACEMENT[name]].node(name)

    def ns(self, name):
        return self.labs[PLACEMENT[name]].ns(name)


def _probe(nodes, svc, src, dst, timeout):
    from fwsg.lab import traffic

    s, d = nodes.node(src), nodes.node(dst)
    ip = d.addr(svc.family)
    if svc.kind == "ping":
        return traffic.ping(nodes.ns(src), ip, timeout=timeout)
    fn = traffic.tcp_connect if svc.kind == "tcp" else traffic.udp_exchange
    return fn(nodes.ns(src), nodes.ns(dst), ip, svc.port, timeout=timeout, src_if=s.iface,
              dst_if=d.iface)


def matrix(nodes, timeout):
    """Every service between every pair of nodes, probed concurrently (one listener per
    destination, service at a time)."""
    names = list(NODES)
    keys = [(svc, a, b) for svc in SERVICES for a in names for b in names if a != b]
    groups = {}
    for i, (svc, a, b) in enumerate(keys):
        groups.setdefault((b, svc.kind, svc.port) if svc.kind != "ping" else ("p", i), []).append(i)
    results = [None] * len(keys)

    def run(items):
        for i in items:
            svc, a, b = keys[i]
            results[i] = bool(_probe(nodes, svc, a, b, timeout))

    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        for f in [ex.submit(run, items) for items in groups.values()]:
            f.result()
    return keys, results


def run(name="demo", timeout=0.5, out=sys.stdout, log=sys.stderr):
    """Run the cluster demo; returns True when every flow is as the model says."""
    from fwsg.lab import Lab
    from fwsg.model import Model
    from fwsg.sync.layout import Layout
    from fwsg.sync.publish import publish
    from fwsg.sync.server import EtcdServer
    from fwsg.sync.store import EtcdStore

    doc = json.loads(DEFAULT_MODEL.read_text())
    model = Model.from_wire(doc)
    labs = {"a": Lab(f"{name}a", "192.0.2.1/24", "2001:db8::1/64"),
            "b": Lab(f"{name}b", "192.0.2.2/24", "2001:db8::2/64", host_mac="00:00:5e:00:53:02")}
    for node, h in PLACEMENT.items():
        (labs[h].add_outside if node == "out" else labs[h].add_vm)(node, **NODES[node])
    server = EtcdServer(name="fwsg-demo")
    agents = []
    tmp = tempfile.mkdtemp(prefix="fwsg-cluster-demo-")
    try:
        print(f"== private etcd on {server.endpoint}", file=log)
        server.start()
        print(f"== two hypervisors: {labs['a'].host_ns} (vm1, vm2, out) and "
              f"{labs['b'].host_ns} (vm3), joined by an uplink", file=log)
        for lab in labs.values():
            lab.up()
        a, b = labs["a"].host_ns, labs["b"].host_ns
        for cmd in (["ip", "-n", a, "link", "add", "uplink", "type", "veth", "peer", "name",
                     "uplink", "netns", b],
                    ["ip", "-n", a, "link", "set", "uplink", "master", "br0", "up"],
                    ["ip", "-n", b, "link", "set", "uplink", "master", "br0", "up"]):
            subprocess.run(cmd, check=True, capture_output=True, timeout=10)
        store, layout = EtcdStore([server.endpoint]), Layout()
        for h in ("a", "b"):
            part = copy.deepcopy(doc)
            part["devices"] = {p: v for p, v in doc["devices"].items() if PORT_HOST[p] == h}
            publish(store, layout, part, host=HOSTS[h])
        print(f"== published {DEFAULT_MODEL.name} into etcd; starting an agent per host", file=log)
        for h in ("a", "b"):
            agents.append(subprocess.Popen(
                [sys.executable, "-m", "fwsg", "agent", "--source", server.url, "--host",
                 HOSTS[h], "--netns", labs[h].host_ns, "--status-file",
                 os.path.join(tmp, f"{h}.json")],
                stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, f"{h}.log"), "wb")))
        _wait_applied(labs, tmp)
        nodes = _Nodes(labs)
        print("== probing every flow with real packets (across hosts)", file=log)
        keys, measured = matrix(nodes, timeout)
        rows = [{"service": svc.label, "from": s, "to": d, "measured": got,
                 "expected": expected(model, nodes, svc, s, d)}
                for (svc, s, d), got in zip(keys, measured)]
        print_matrix(rows, list(NODES), out)
        ok = all(r["expected"] == r["measured"] for r in rows)
        # vm3 (client, on hv-b) -> vm2:5432 (db on hv-a) needs vm3 in sg-web: one put
        print("\n== put vm3's address into sg-web's members in etcd; timing until "
              "vm3 -> vm2 tcp/5432 passes on hv-a", file=log)
        t0 = time.monotonic()
        store.put(layout.member("sg-web", "192.0.2.13"), json.dumps("192.0.2.13"))
        passed = None
        from fwsg.lab import traffic

        while time.monotonic() - t0 < 10:
            if traffic.tcp_connect(nodes.ns("vm3"), nodes.ns("vm2"), "192.0.2.12", 5432,
                                   timeout=0.01):
                passed = time.monotonic() - t0
                break
        out.write(f"\nput -> packets passing on the other host: "
                  + (f"{passed * 1000:.0f} ms\n" if passed is not None else "not within 10 s\n"))
        return ok and passed is not None
    finally:
        for p in agents:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait(10)
        server.close()
        for lab in labs.values():
            lab.down()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        print("== agents, etcd and labs removed", file=log)


def _wait_applied(labs, tmp, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = 0
        for h in labs:
            try:
                with open(os.path.join(tmp, f"{h}.json")) as f:
                    st = json.load(f)
                done += bool(st.get("connected") and st.get("transactions"))
            except (OSError, ValueError):
                pass
        if done == len(labs):
            return
        time.sleep(0.05)
    from fwsg.errors import EnvironmentProblem

    raise EnvironmentProblem(f"the agents did not apply the model within {timeout:g} s "
                             f"(logs in {tmp})")
