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
