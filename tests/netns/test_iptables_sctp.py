"""SCTP filtering with raw INIT packets (test_sctp.py) against the iptables backend, both
variants: the allowed port passes, other ports, a bad checksum and UDP to the port do not."""

import pytest

from fwsg.firewall import Firewall
from tests.netns import test_sctp as sctp
from tests.netns.fwlab import ALL_EGRESS, model, rule, running_lab


@pytest.fixture(scope="module", params=("legacy", "nft"))
def fwlab(request):
    with running_lab(f"isc{request.param[0]}") as (lab, _):
        fw = Firewall(netns=lab.host_ns, backend=f"iptables-{request.param}")
        groups = {"s": [rule("ingress", protocol="sctp", ports=5000),
                        rule("ingress", "IPv6", protocol="sctp", ports=5000)] + ALL_EGRESS,
                  "open": ALL_EGRESS}
        fw.apply(model(lab, groups, {"vm1": ["open"], "vm2": ["s"]}))
        try:
            yield lab, fw
        finally:
            fw.flush()


test_sctp_init_allowed_port_passes_others_do_not = \
    sctp.test_sctp_init_allowed_port_passes_others_do_not
test_sctp_without_a_rule_is_dropped_and_udp_5000_too = \
    sctp.test_sctp_without_a_rule_is_dropped_and_udp_5000_too
