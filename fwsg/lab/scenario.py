"""Seeded generator of wire-format models, for tests and benchmarks.

N ports on this host, G groups of R rules, M members cluster-wide (IPv4 and IPv6, documentation
and benchmark ranges), every port in the default group plus 1-3 others. Deterministic for a seed.
No I/O here.
"""

import random

PROTOS = ["tcp", "udp", "icmp", None, "sctp"]


def member_v4(i):
    """The i-th IPv4 member address (198.18.0.0/15, the benchmarking range, then 203.0.113/24)."""
    return f"198.{18 + (i >> 16 & 1)}.{i >> 8 & 255}.{i & 255}"


def member_v6(i):
    return f"2001:db8:1::{i >> 16 & 0xffff:x}:{i & 0xffff:x}"


def generate(ports=10, groups=5, rules=6, members=100, seed=0, v6_share=0.2):
    """A wire-format dict. Port i has device ``tap<i>`` and address 192.0.2.x/2001:db8::x
    (for i < 250) or from 203.0.113/24 and 198.51.100/24 ranges."""
    rnd = random.Random(seed)
    gids = ["default"] + [f"sg-{g}" for g in range(1, groups)]
    sgs = {}
    for gid in gids:
        rl = []
        for r in range(rules):
            fam = "IPv6" if rnd.random() < 0.3 else "IPv4"
            direction = "ingress" if r % 3 else "egress"
            proto = rnd.choice(PROTOS)
            rule = {"direction": direction, "ethertype": fam}
            if proto:
                rule["protocol"] = proto
            if proto in ("tcp", "udp", "sctp"):
                lo = rnd.randrange(1, 60000)
                rule["port_range_min"] = lo
                rule["port_range_max"] = lo + rnd.choice([0, 0, 0, 10, 100])
            elif proto == "icmp":
                rule["port_range_min"] = rnd.choice([0, 3, 8, 11])
            kind = rnd.random()
            if kind < 0.4:
                rule["remote_group_id"] = rnd.choice(gids)
            elif kind < 0.7:
                rule["remote_ip_prefix"] = ("203.0.113.0/24" if fam == "IPv4" else "2001:db8:f::/48")
            rl.append(rule)
        sgs[gid] = rl
    mem = {gid: {"IPv4": [], "IPv6": []} for gid in gids}
    for i in range(members):
        gid = gids[i % len(gids)] if i % 4 else "default"
        if rnd.random() < v6_share:
            mem[gid]["IPv6"].append(member_v6(i))
        else:
            mem[gid]["IPv4"].append(member_v4(i))
    devices = {}
    for p in range(ports):
        extra = rnd.sample(gids[1:], min(len(gids) - 1, rnd.randint(1, 3))) if len(gids) > 1 else []
        v4 = f"192.0.2.{p + 1}" if p < 250 else f"203.0.{113 if p < 500 else 114}.{p % 250 + 1}"
        devices[f"port-{p}"] = {
            "device": f"tap{p}",
            "mac_address": f"fa:16:3e:{p >> 16 & 255:02x}:{p >> 8 & 255:02x}:{p & 255:02x}",
            "fixed_ips": [v4, f"2001:db8::{p + 1:x}"],
            "security_groups": ["default"] + extra,
            "port_security_enabled": True,
        }
    return {"security_groups": sgs, "sg_member_ips": mem, "devices": devices}
