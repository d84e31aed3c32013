"""Dispatch by destination address (pure): one owner -> its profile; several with one profile
-> it; several profiles -> drop; overlapping prefixes cut into disjoint pieces."""

import netaddr

from fwsg.dispatch import DROP, prefix_map, verdict


def test_verdict():
    assert verdict(set()) is None
    assert verdict({"pa"}) == "jump pa-i"
    assert verdict({"pa", "pb"}) == DROP


def test_overlapping_prefixes_are_cut_and_judged_by_every_owner():
    m = prefix_map({"192.0.2.64/28": {"pa"}, "192.0.2.72/29": {"pb"},
                    "198.51.100.0/24": {"pa"}, "203.0.113.0/25": set()})
    assert m == {"192.0.2.64/29": "jump pa-i", "192.0.2.72/29": DROP,
                 "198.51.100.0/24": "jump pa-i"}
    # the pieces are disjoint (an interval map refuses overlaps) and cover every owned address
    nets = [netaddr.IPNetwork(k) for k in m]
    assert sum(n.size for n in nets) == netaddr.IPSet(nets).size


def test_same_profile_pieces_merge_and_ipv6():
    assert prefix_map({"2001:db8::/64": {"pa"}, "2001:db8::/65": {"pa"}}) == \
        {"2001:db8::/64": "jump pa-i"}
    assert prefix_map({"192.0.2.0/25": {"pa"}, "192.0.2.128/25": {"pa"}}) == \
        {"192.0.2.0/24": "jump pa-i"}
