"""The flow judge (compiled and twin) says what the reference policy says, for every kind of
match fwsg emits; and it never reads a group's members one by one."""

import random

import pytest

from fwsg import _fast_py
from fwsg.backends.nft.desired import Desired
from fwsg.model import Model
from fwsg.policy import Packet, PortIndex, flow_tables
from fwsg.lab.scenario import generate

try:
    from fwsg import _fast as _fast_c
except ImportError:  # pragma: no cover - only in a pure build
    _fast_c = None

JUDGES = [_fast_py.FlowJudge] + ([_fast_c.FlowJudge] if _fast_c is not None else [])


def _model():
    doc = generate(ports=12, groups=5, rules=10, members=60, seed=7)
    sgs = doc["security_groups"]
    sgs["sg-1"] += [
        {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 80,
         "port_range_max": 90, "source_port_range_min": 1000, "source_port_range_max": 2000},
        {"direction": "ingress", "ethertype": "IPv4", "protocol": "icmp", "port_range_min": 8,
         "port_range_max": 0},
        {"direction": "egress", "ethertype": "IPv4", "protocol": "udp",
         "remote_ip_prefix": "198.51.100.0/25"},
        {"direction": "ingress", "ethertype": "IPv6", "protocol": "tcp", "port_range_min": 443,
         "remote_group_id": "sg-2"},
        {"direction": "ingress", "ethertype": "IPv4", "protocol": 47, "remote_group_id": "sg-3"},
    ]
    doc["sg_member_ips"]["sg-2"]["IPv6"] += ["2001:db8:7::/60", "2001:db8::3"]
    doc["sg_member_ips"]["sg-3"]["IPv4"] += ["198.51.100.64/27", "192.0.2.5"]
    doc["devices"]["port-3"]["port_security_enabled"] = False
    doc["devices"]["port-4"]["allowed_address_pairs"] = [{"ip_address": "198.51.100.128/26"}]
    doc["devices"]["port-5"]["security_group_rules"] = [
        {"direction": "ingress", "ethertype": "IPv4", "protocol": "udp", "port_range_min": 53}]
    return Model.from_wire(doc)


def _flows(model, n, seed):
    rnd = random.Random(seed)
    v4 = [ip for p in model.ports.values() for ip in p.fixed_ips if ":" not in ip]
    v6 = [ip for p in model.ports.values() for ip in p.fixed_ips if ":" in ip]
    v4 += ["198.51.100.70", "198.51.100.130", "198.51.100.1", "203.0.113.9", "192.0.2.200"]
    v6 += ["2001:db8:7::5", "2001:db8:f::1", "fe80::1"]
    v4 += [m for ms in model.members.values() for m in ms[4] if "/" not in m][:20]
    v6 += [m for ms in model.members.values() for m in ms[6] if "/" not in m][:20]
    out = []
    for _ in range(n):
        fam = rnd.choice((4, 6))
        pool = v4 if fam == 4 else v6
        proto = rnd.choice((6, 17, 132, 47, 1 if fam == 4 else 58))
        sport = dport = itype = icode = None
        if proto in (6, 17, 132):
            sport = rnd.choice((68, 67, 546, 547, 1500, 40000, rnd.randrange(65536)))
            dport = rnd.choice((67, 68, 546, 547, 22, 53, 80, 85, 443, rnd.randrange(65536)))
        elif proto in (1, 58):
            itype = rnd.choice((0, 3, 8, 11, 128, 130, 134, 135))
            icode = rnd.choice((0, 1))
        out.append((fam, proto, rnd.choice(pool), rnd.choice(pool), sport, dport, itype, icode,
                    None, 0))
    return out


@pytest.mark.parametrize("judge_cls", JUDGES)
def test_judge_agrees_with_reference_policy(judge_cls):
    model = _model()
    judge = judge_cls(flow_tables(Desired().load(model)))
    index = PortIndex(model)
    flows = _flows(model, 4000, seed=3)
    verdicts = [judge.allowed(f) for f in flows]
    expected = [index.flow_allowed(Packet(*f[:8])) for f in flows]
    assert verdicts == expected
    assert 200 < sum(verdicts) < len(flows) - 200  # both verdicts well exercised


def test_twins_agree_and_members_are_shared_not_copied():
    model = _model()
    d = Desired().load(model)
    tables = flow_tables(d)
    for members, _nets in tables[4]:
        assert any(members is s for s in d.members.values()) or not members
    judges = [cls(tables) for cls in JUDGES]
    flows = _flows(model, 2000, seed=11)
    results = [[j.allowed(f) for f in flows] for j in judges]
    assert all(r == results[0] for r in results)
    # a member removed from the live set changes the verdict without rebuilding the tables
    d.remove_members("sg-3", 4, ["192.0.2.5"])
    gre = (4, 47, "192.0.2.5", next(ip for ip in model.ports["port-0"].fixed_ips if "." in ip),
           None, None, None, None, None, 0)
    assert [j.allowed(gre) for j in judges] == [PortIndex(_model_without(model)).flow_allowed(
        Packet(*gre[:8]))] * len(judges)


def _model_without(model):
    members = {sg: dict(f) for sg, f in model.members.items()}
    members["sg-3"][4] = tuple(m for m in members["sg-3"][4] if m != "192.0.2.5")
    return model.replace(members=members)
