"""Benchmark rows for conntrack cleanup (``scripts/bench``, section 9): one member removed from
the big group while 1k / 10k / 50k of its flows lose their rule (to two ports that admit it by
that group only), at two member counts, beside one ``conntrack -D`` process deleting the same
flows. Runs inside the bench's namespace. Not
a test: no assertion on time.
"""

import statistics
import subprocess
import time

from fwsg import fast
from fwsg.model import Model


def _victim_flows(fw, member, n):
    """``n`` TCP flows from ``member`` (a member of ``default``) to port 22 of the ports that
    admit it only while it is a member (judged by the model before and after)."""
    from fwsg.policy import flow_tables

    def allowed(flows):
        judge = fast.FlowJudge(flow_tables(fw._desired))
        return [judge.allowed(f + (None, None)) for f in flows]

    probes = [(4, 6, member, next(ip for ip in p.fixed_ips if ":" not in ip), 40000, 22)
              for p in fw.model.ports.values() if p.port_security]
    before = allowed(probes)
    fw.remove_security_group_members("default", [member])
    after = allowed(probes)
    fw.add_security_group_members("default", [member])
    dsts = [p[3] for p, b, a in zip(probes, before, after) if b and not a]
    if not dsts or -(-n // len(dsts)) > 60000:
        raise ValueError(f"{n} flows need more ports admitting {member} by group only")
    per = -(-n // len(dsts))
    return [(4, 6, member, d, 1024 + i, 22) for d in dsts for i in range(per)][:n]


def conntrack_rows(bench, scenario, sizes=(10000, 100000), flows=(1000, 10000, 50000),
                   repeat=5):
    """Adds the rows to ``bench`` (a fwsg.lab.bench.Bench)."""
    from fwsg.firewall import Firewall

    a = bench.a
    table = fast.ConntrackTable()
    try:
        for members in sizes:
            doc = scenario(a.ports, a.groups, a.rules, members, a.seed)
            # two more ports that admit tcp 22 from group ``default`` and nothing else (the
            # scenario's ``default`` group admits everything on ingress)
            doc["security_groups"]["ct-db"] = [
                {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                 "port_range_min": 22, "port_range_max": 22, "remote_group_id": "default"}]
            for k in range(2):
                doc["devices"][f"ct-{k}"] = {
                    "device": f"tapct{k}", "mac_address": f"fa:16:3e:fe:00:{k + 1:02x}",
                    "fixed_ips": [f"198.51.100.{200 + k}"], "security_groups": ["ct-db"]}
            model = Model.from_wire(doc)
            member = model.members_of("default", 4)[-1]
            Firewall().flush()
            fw = Firewall()
            fw.apply(model)
            for n in flows:
                victims = _victim_flows(fw, member, n)
                ours, theirs, cut = [], [], 0
                for _ in range(repeat):
                    subprocess.run(["conntrack", "-F"], capture_output=True)
                    table.track(victims)
                    t = time.perf_counter()
                    r = fw.remove_security_group_members("default", [member])
                    ours.append(time.perf_counter() - t)
                    cut = r.conntrack_killed
                    fw.add_security_group_members("default", [member])
                    table.track(victims)
                    t = time.perf_counter()
                    subprocess.run(["conntrack", "-D", "-s", member], capture_output=True)
                    theirs.append(time.perf_counter() - t)
                target = {1000: 40, 10000: 150, 50000: 600}.get(n)
                mine = statistics.median(ours) * 1000
                bench.row(f"ct_{members}_{n}",
                          f"9. member removed, {n} flows cut ({members} members)", mine,
                          statistics.median(theirs) * 1000, "one conntrack -D, same flows",
                          f"<= {target} ms" if target else "",
                          mine <= target if target else None, f"{cut} cut")
        subprocess.run(["conntrack", "-F"], capture_output=True)
    finally:
        table.close()
