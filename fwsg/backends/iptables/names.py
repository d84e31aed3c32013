"""Names of fwsg's iptables chains, ebtables chains and ipsets.

Every object fwsg owns starts with ``fwsg-``; the rest is derived from a hash of the user's
ids (never user text), so names are bounded (iptables chains <= 28 characters, ipsets <= 31)
and safe in restore files. No I/O here.
"""

import hashlib

PREFIX = "fwsg-"
COMMENT = "fwsg:"          # the digest comment on the last rule of every fwsg chain

# Entry chains, each jumped to from the top of built-in chains (see HOOKS).
EGRESS = "fwsg-egress"     # mangle: from a port (physdev-in): -j E_ADDR, -j E_PORT
E_ADDR = "fwsg-e-addr"     # mangle: a port's (address, MAC) pairs -> its egress profile
E_PORT = "fwsg-e-port"     # mangle: the rest of a port's traffic -> UNSPEC (then DROP)
INGRESS = "fwsg-ingress"   # filter: to a port (physdev-out, or by address) -> its profile
ZONE = "fwsg-zone"         # raw: conntrack zone of a port's network
ARP = "fwsg-arp"           # ebtables nat: MAC and ARP checks of frames from a port
UNSPEC = "fwsg-unspec"     # mangle: what may leave a port from no address (DHCP, DAD)

# (family, table, built-in chain) -> fwsg entry chain jumped to from its first rule.
# family 4/6 are iptables/ip6tables, "eb" is ebtables.
HOOKS = {}
for _fam in (4, 6):
    HOOKS.update({(_fam, "mangle", "FORWARD"): EGRESS, (_fam, "mangle", "INPUT"): EGRESS,
                  (_fam, "filter", "FORWARD"): INGRESS, (_fam, "filter", "OUTPUT"): INGRESS,
                  (_fam, "raw", "PREROUTING"): ZONE, (_fam, "raw", "OUTPUT"): ZONE})
HOOKS[("eb", "nat", "PREROUTING")] = ARP

# Egress chains live in mangle, ingress chains in filter: each direction is its own table
# traversal, so an ACCEPT in a shared group chain ends only that direction's check.
TABLE_OF = {"egress": "mangle", "ingress": "filter"}


def digest(text, n=10):
    """A stable, name-safe digest of ``text``."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def group_chain(sg, direction):
    """The shared chain of one group's rules in one direction (``-i`` / ``-e``)."""
    return f"fwsg-g{digest(sg)}-{direction[0]}"


def fixed_chain(direction, stateful):
    """The shared chain of the rules every filtered port has (state, DHCP, ND, RA)."""
    return f"fwsg-fixed-{direction[0]}-{'sf' if stateful else 'sl'}"


def bucket_chain(dispatch, key):
    """The part of dispatch chain ``dispatch`` holding the rules of devices whose names start
    with ``key`` (see desired.BUCKET_PREFIX)."""
    return f"{dispatch}-{digest(key, 6)}"


def profile_chain(content_digest, direction):
    """A port profile chain (ports whose chains would be equal share it)."""
    return f"fwsg-p{content_digest}-{direction[0]}"


def arp_chain(port_id):
    """The per-port ebtables chain of MAC and ARP checks."""
    return f"fwsg-a{digest(port_id)}"


def member_set(sg, family):
    """The ipset of one group's members of one family (``hash:net``)."""
    return f"fwsg-{digest(sg, 12)}-v{family}"


def temp_set(name):
    """The scratch set a full-list change is built in before it is swapped in."""
    return name + "t"


def is_ours(name):
    return name.startswith(PREFIX)
