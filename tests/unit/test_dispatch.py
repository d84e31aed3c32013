"""Dispatch by destination address (pure): one owner -> its number; several with one profile
-> the lowest of their numbers; several profiles -> AMBIGUOUS (dropped); overlapping prefixes
cut into disjoint pieces."""

import netaddr

from fwsg.dispatch import AMBIGUOUS, prefix_map, receiver
from fwsg.portnum import MAX_PORT_ID


def test_receiver():
    assert receiver(set()) is None
    assert receiver({("pa", 7)}) == 7
    assert receiver({("pa", 7), ("pa", 3)}) == 3
    assert receiver({("pa", 7), ("pb", 3)}) == AMBIGUOUS
    assert AMBIGUOUS > MAX_PORT_ID   # no port ever has it


def test_overlapping_prefixes_are_cut_and_judged_by_every_owner():
    m = prefix_map({"192.0.2.64/28": {("pa", 1)}, "192.0.2.72/29": {("pb", 2)},
                    "198.51.100.0/24": {("pa", 1)}, "203.0.113.0/25": set()})
    assert m == {"192.0.2.64/29": 1, "192.0.2.72/29": AMBIGUOUS, "198.51.100.0/24": 1}
    # the pieces are disjoint (an interval map refuses overlaps) and cover every owned address
    nets = [netaddr.IPNetwork(k) for k in m]
    assert sum(n.size for n in nets) == netaddr.IPSet(nets).size


def test_same_profile_pieces_merge_and_ipv6():
    assert prefix_map({"2001:db8::/64": {("pa", 1)}, "2001:db8::/65": {("pa", 1)}}) == \
        {"2001:db8::/64": 1}
    assert prefix_map({"192.0.2.0/25": {("pa", 1)}, "192.0.2.128/25": {("pa", 1)}}) == \
        {"192.0.2.0/24": 1}
    # two ports of one profile: the overlap goes to the lower number
    assert prefix_map({"192.0.2.0/24": {("pa", 5)}, "192.0.2.0/25": {("pa", 2)}}) == \
        {"192.0.2.0/25": 2, "192.0.2.128/25": 5}
