"""The conntrack table twins (libnetfilter_conntrack vs pyroute2) read the same flows from a
real namespace and delete them alike."""

import pytest

from fwsg import _fast_py
from fwsg.firewall import Firewall
from fwsg.netns import entered
from tests.netns.fwlab import ALL_EGRESS, build_lab, model, rule

try:
    from fwsg import _fast as _fast_c
except ImportError:  # pragma: no cover
    _fast_c = None


@pytest.mark.skipif(_fast_c is None, reason="fwsg._fast not built")
def test_dump_and_delete_twins(lab_factory):
    lab = build_lab(lab_factory())
    with lab:
        fw = Firewall(netns=lab.host_ns, conntrack=False)
        fw.apply(model(lab, {"o": ALL_EGRESS + [rule("ingress"), rule("ingress", "IPv6")]},
                       {"vm1": ["o"], "vm2": ["o"]}))
        conns = [lab.open_tcp("vm1", "vm2", port=2222), lab.open_tcp("vm1", "vm2", port=2223, family=6)]
        assert lab.udp_exchange("vm1", "vm2", port=53)
        assert lab.ping("vm1", "192.0.2.12") and lab.ping("vm1", "2001:db8::12")
        try:
            with entered(lab.host_ns):
                c, p = _fast_c.ConntrackTable(), _fast_py.ConntrackTable()
                flows = sorted(c.dump(), key=repr)
                assert flows == sorted(p.dump(), key=repr)
                kinds = {(f[0], f[1]) for f in flows}
                assert {(4, 6), (6, 6), (4, 17), (4, 1), (6, 58)} <= kinds
                tcp4 = [f for f in flows if f[:2] == (4, 6) and f[5] == 2222]
                assert c.delete(tcp4) == 1
                tcp6 = [f for f in flows if f[:2] == (6, 6) and f[5] == 2223]
                assert p.delete(tcp6) == 1
                left = c.dump()
                assert not [f for f in left if f in tcp4 + tcp6]
                c.close()
        finally:
            for conn in conns:
                conn.close()


def _tracked():
    return {(f[2], f[3], f[4], f[5]) for f in _fast_py.ConntrackTable().dump() if f[1] == 6}


@pytest.fixture(params=["compiled", "pure"])
def twin(request):
    """The conntrack twin under test: the compiled module or the pure-Python one."""
    if request.param == "compiled" and _fast_c is None:
        pytest.skip("fwsg._fast not built")
    return _fast_c if request.param == "compiled" else _fast_py


def _sweep_with(impl, ns, desired, gone):
    """conntrack.sweep with ``impl``'s ConntrackTable and FlowJudge; the flows it killed."""
    from fwsg import conntrack, fast

    orig = fast.ConntrackTable, fast.FlowJudge
    fast.ConntrackTable, fast.FlowJudge = impl.ConntrackTable, impl.FlowJudge
    try:
        return conntrack.sweep(ns, desired, (), gone)
    finally:
        fast.ConntrackTable, fast.FlowJudge = orig


def test_sweep_cuts_exactly_the_flows_that_lost_their_rule(twin, bare_namespaces):
    """A member leaves a group that a port admits by remote group: its flows to that port are
    deleted, in batches, while its flows elsewhere and other members' flows stay; the compiled
    sweep and the pyroute2 twin leave the same table (flows inserted by each twin's track)."""
    impl, ns = twin, bare_namespaces[0]
    fw = Firewall(netns=ns)
    doc = {"security_groups": {
               "db": [rule("ingress", protocol="tcp", ports=5432, remote_group_id="web"),
                      rule("ingress", "IPv6", protocol="tcp", ports=5432,
                           remote_group_id="web")],
               "web": list(ALL_EGRESS)},
           "sg_member_ips": {"web": {"IPv4": ["198.51.100.7", "198.51.100.8"],
                                     "IPv6": ["2001:db8:5::7"]}},
           "devices": {"p1": {"device": "tapdb", "mac_address": "fa:16:3e:00:00:01",
                              "fixed_ips": ["192.0.2.1", "2001:db8::1"],
                              "security_groups": ["db"]}}}
    fw.apply(doc)
    doomed = {("198.51.100.7", "192.0.2.1", 20000 + i, 5432) for i in range(700)}
    doomed |= {("2001:db8:5::7", "2001:db8::1", 30000 + i, 5432) for i in range(50)}
    spared = {("198.51.100.8", "192.0.2.1", 20000 + i, 5432) for i in range(50)}
    spared |= {("198.51.100.7", "203.0.113.5", 20000 + i, 5432) for i in range(50)}
    with entered(ns):
        table = impl.ConntrackTable()
        assert table.track([(6 if ":" in f[0] else 4, 6) + f for f in doomed | spared]) \
            == len(doomed | spared)
        assert _tracked() == doomed | spared
    fw.conntrack = False
    fw.remove_security_group_members("web", ["198.51.100.7", "2001:db8:5::7"])
    killed = _sweep_with(impl, ns, fw._desired, {"198.51.100.7", "2001:db8:5::7"})
    with entered(ns):
        assert _tracked() == spared
    assert killed == len(doomed)


def _tracked_zones():
    return {(f[2], f[3], f[4], f[5], f[9]) for f in _fast_py.ConntrackTable().dump() if f[1] == 6}


def test_zones_track_sweep_and_delete_alike(twin, bare_namespaces):
    """Two networks with the same addresses: identical flows in their two zones (inserted by
    each twin's track); a member removal in network a sweeps only zone a's flows, a delete
    names the flow's zone and removes only that entry; both twins dump the zones alike."""
    from tests.netns.test_zones import model as two_networks

    impl, ns = twin, bare_namespaces[0]
    fw = Firewall(netns=ns)
    fw.apply(two_networks())
    za, zb = fw._desired.port_zone["port-a1"], fw._desired.port_zone["port-b1"]
    base = {("192.0.2.11", "192.0.2.12", 20000 + i, 80) for i in range(300)}
    with entered(ns):
        table = impl.ConntrackTable()
        flows = [(4, 6) + f + (z,) for f in base for z in (za, zb)]
        assert table.track(flows) == len(flows)
        assert _tracked_zones() == {f + (z,) for f in base for z in (za, zb)}
        if _fast_c is not None:
            assert sorted(_fast_c.ConntrackTable().dump(), key=repr) == \
                sorted(_fast_py.ConntrackTable().dump(), key=repr)
    fw.conntrack = False
    fw.remove_security_group_members("cl-a", ["192.0.2.11"])
    killed = _sweep_with(impl, ns, fw._desired, {"192.0.2.11"})
    assert killed == len(base)
    with entered(ns):
        assert _tracked_zones() == {f + (zb,) for f in base}
        one = next(f for f in impl.ConntrackTable().dump() if f[1] == 6)
        assert impl.ConntrackTable().delete([one[:9] + (za,)]) == 0   # not in zone a
        assert impl.ConntrackTable().delete([one]) == 1
        assert len(_tracked_zones()) == len(base) - 1
