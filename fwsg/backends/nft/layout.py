"""The nft layout of the bridged mode as data: every fixed object fwsg keeps in its two tables,
the rules every filtered port shares, and the derived names (with their inverses). The
compiler builds from it (:mod:`fwsg.backends.nft.desired`), ``fwsg show`` reads the kernel's
state through it (:mod:`fwsg.backends.nft.describe`); nothing else spells a name of the layout.
No I/O here.

``table bridge fwsg``
  ``prerouting`` (-200): the mark's high half := the sending port's number (``port-src``);
  ports with port security go through ``antispoof``. ``forward`` (-200): the mark := the
  receiving port's number (``port-dst``).
``table inet fwsg``
  ``egress-pre`` (prerouting 0, after conntrack): ``@egress`` dispatches the high half to the
  sender's egress chain. ``ingress-fwd`` (forward 0): ``@ingress`` dispatches the low half to
  the receiver's ingress chain; what is routed into the bridge (no receiver tag) first gets
  the receiver's number by destination address (data maps ``@ingress4``/``@ingress6``, and
  ``@ingress4n``/``@ingress6n`` for address-pair prefixes). ``ingress-out`` (output 0): the
  hypervisor's own traffic to a VM's address gets the same number, then ``@ingress``; its
  traffic to any other address leaves the chain first, its mark untouched. ``@ingress`` is the
  only verdict map ingress dispatch walks (nf_tables validates every verdict-map element
  reachable from a base chain, once per reference, on every commit that adds a rule), and it
  is referenced once per base chain. An address whose owners' profiles differ maps to
  :data:`fwsg.dispatch.AMBIGUOUS`, which ``@ingress`` drops.
  Before dispatching, each of the three checks jumps to the shared fixed chains a filtered
  port has (``@filtered``: ``fixed-state``, conntrack state, unless in ``@stateless``;
  ``fixed-e`` / ``fixed-i``: DHCP, RA, ND), and after it drops what a filtered port's chain did not accept
  (``@filtered drop``): a port's chain (its profile) holds only the jumps to its groups'
  chains and its own rules. The validation walk of a rule change visits every profile chain
  once per hook (three times): two rules fewer in each of them is 16 % of that commit
  (``docs/design.md``).

Conntrack zones (one per network, ports without ``network_id``: zone 0): ``bridge
prerouting`` also tags frames from outside (no port tag) with the receiving port's number,
found by destination MAC (``@mac-dst``); ``zone-pre`` (inet prerouting -300, before
conntrack) sets the zone from the mark (``ct zone set meta mark map @zone-mark``: either
half), untagged packets (routed) from the destination address (``@zone4``/``@zone6``);
``zone-out`` (output -300) from the destination address. The three are data maps (``typeof
... : ct zone``), not verdict maps: the validation walk of a rule change never visits them
(``scripts/bench_zones``, 500 ports in 20 networks, one rule added: 0.76 -> 0.63 ms, its
commit 0.54 -> 0.40 ms, medians against the verdict maps in the same run; see
docs/design.md). ``bridge forward`` drops a frame tagged by destination MAC that leaves
through another filtered port than the MAC's (wrong zone).
"""


from fwsg import naming
from fwsg.dispatch import AMBIGUOUS
from fwsg.model import EGRESS, INGRESS
from fwsg.portnum import MAX_PORT_ID  # noqa: F401 - numbers fit the mark's 16 bits
from fwsg.ruleset import ChainDef, SetDef

# Hooks. The bridge chains run before br_netfilter hands the frame to the inet hooks (bridge
# priority 0); the egress check runs before the ingress check.
BRIDGE_PRE = "filter hook prerouting priority -200"
BRIDGE_FWD = "filter hook forward priority -200"
INET_PRE_EGRESS = "filter hook prerouting priority 0"
INET_FWD_INGRESS = "filter hook forward priority 0"
INET_OUT_INGRESS = "filter hook output priority 0"
INET_PRE_ZONE = "filter hook prerouting priority -300"   # before conntrack (-200)
INET_OUT_ZONE = "filter hook output priority -300"

# Keys of the fixed sets and maps.
EGRESS_MAP = ("inet", "egress")      # mark (sender << 16) -> jump profile-e
INGRESS_MAP = ("inet", "ingress")    # mark (receiver) -> jump profile-i
INGRESS4 = ("inet", "ingress4")      # host address -> receiver's mark (routed, output)
INGRESS6 = ("inet", "ingress6")
PORT_SRC = ("bridge", "port-src")    # "tap" -> mark (number << 16)
PORT_DST = ("bridge", "port-dst")    # "tap" -> mark (number)
SECURED = ("bridge", "secured")      # taps with port security
MACS = ("bridge", "macs")            # "tap" . mac
ZONE_MARK = ("inet", "zone-mark")   # mark (either half) -> ct zone
ZONE4 = ("inet", "zone4")            # host address -> ct zone (routed, output)
ZONE6 = ("inet", "zone6")
MAC_DST = ("bridge", "mac-dst")      # MAC of a zoned port -> mark (number), frames from outside
STATELESS = ("inet", "stateless")    # marks (both halves) of filtered ports with a stateless group
FILTERED = ("inet", "filtered")      # marks (both halves) of every filtered port
ZONE_VALUE = "ct zone"               # the value type of the zone maps (declared with typeof)
ZONE_TYPEOF = {"mark": "meta mark", "ipv4_addr": "ip daddr", "ipv6_addr": "ip6 daddr"}
SPOOF_SETS = {(4, False): "spoof4", (4, True): "spoof4n", (6, False): "spoof6", (6, True): "spoof6n"}

FIXED_SETS = (
    SetDef("inet", "egress", "mark", "verdict"),
    SetDef("inet", "ingress", "mark", "verdict"),
    SetDef("inet", "ingress4", "ipv4_addr", "mark"),
    SetDef("inet", "ingress6", "ipv6_addr", "mark"),
    SetDef("bridge", "port-src", "ifname", "mark"),
    SetDef("bridge", "port-dst", "ifname", "mark"),
    SetDef("bridge", "secured", "ifname"),
    SetDef("bridge", "macs", "ifname . ether_addr"),
    SetDef("bridge", "spoof4", "ifname . ether_addr . ipv4_addr"),
    SetDef("bridge", "spoof6", "ifname . ether_addr . ipv6_addr"),
    SetDef("inet", "zone-mark", "mark", ZONE_VALUE),
    SetDef("inet", "zone4", "ipv4_addr", ZONE_VALUE),
    SetDef("inet", "zone6", "ipv6_addr", ZONE_VALUE),
    SetDef("bridge", "mac-dst", "ether_addr", "mark"),
    SetDef("inet", "stateless", "mark"),
    SetDef("inet", "filtered", "mark"),
)


# Fixed per-port rules live once in shared chains (no anonymous set per port: libnftables
# fetches every set, anonymous ones included, before each transaction).
STATE_RULES = ("ct state invalid drop", "ct state established,related accept")
STATE_CHAIN = "fixed-state"   # STATE_RULES, for filtered ports without a stateless group
EGRESS_FIXED = (
    "meta nfproto ipv4 udp sport 67 udp dport 68 drop",     # DHCP server from a VM
    "meta nfproto ipv6 udp sport 547 udp dport 546 drop",   # DHCPv6 server from a VM
    "icmpv6 type nd-router-advert drop",                    # RA from a VM
    "meta nfproto ipv4 udp sport 68 udp dport 67 accept",   # DHCP client
    "meta nfproto ipv6 udp sport 546 udp dport 547 accept",  # DHCPv6 client
    "meta l4proto ipv6-icmp accept",                        # ND, DAD, MLD, ping6 out
)
INGRESS_FIXED = (
    "icmpv6 type { mld-listener-query, nd-neighbor-solicit, nd-neighbor-advert } accept",
    "meta nfproto ipv4 udp sport 67 udp dport 68 accept",   # DHCP replies
    "meta nfproto ipv6 udp sport 547 udp dport 546 accept",  # DHCPv6 replies
)


def judge_rules(mask, vmap):
    """The rules of a base chain that judge the port whose number the mark's ``mask`` half
    carries: the fixed chains of a filtered port (the state rules unless ``@stateless``), its
    profile through ``vmap``, then the drop of what its profile did not accept."""
    direction = "e" if vmap == "@egress" else "i"
    return (f"meta mark & {mask} @filtered meta mark & {mask} != @stateless jump {STATE_CHAIN}",
            f"meta mark & {mask} @filtered jump fixed-{direction}",
            f"meta mark & {mask} vmap {vmap}",
            f"meta mark & {mask} @filtered drop")


def dispatch_chains(prefix_families):
    """The base chains judging traffic to a VM: by the receiver's tag (bridged), else by
    destination address (sent or routed by the hypervisor): the address's receiver number
    (host addresses, then the interval maps ``ingress4n``/``ingress6n`` of address-pair
    prefixes for the families in ``prefix_families``: they exist only while some port has
    such a prefix) becomes the mark, then ``@ingress`` dispatches it, once per chain."""
    maps = []   # (l3 keyword, map) in the order an address is looked up
    for fam, ipk in ((4, "ip"), (6, "ip6")):
        maps.append((ipk, f"@ingress{fam}"))
        if fam in prefix_families:
            maps.append((ipk, f"@ingress{fam}n"))
    judge = judge_rules("0x0000ffff", "@ingress")
    # routed into the bridge: no receiver tag yet; a host address wins over a prefix
    fwd = tuple(f"meta mark & 0x0000ffff == 0x0 meta mark set {ipk} daddr map {m}"
                for ipk, m in maps) + judge
    # the hypervisor's own traffic: only traffic to a VM's address is marked and judged (the
    # mark it already carries may be anything); a prefix first, so a host address overrides it
    out = tuple(f"{ipk} daddr != " + f" {ipk} daddr != ".join(m for k, m in maps if k == ipk)
                + " return" for ipk in ("ip", "ip6"))
    out += tuple(f"meta mark set {ipk} daddr map {m}"
                 for ipk, m in sorted(maps, key=lambda km: (km[0], not km[1].endswith("n"))))
    return (ChainDef("inet", "ingress-fwd", fwd, INET_FWD_INGRESS),
            ChainDef("inet", "ingress-out", out + judge, INET_OUT_INGRESS))


BASE_CHAINS = (
    ChainDef("inet", "egress-pre", judge_rules("0xffff0000", "@egress"), INET_PRE_EGRESS),
    *dispatch_chains(()),
    ChainDef("bridge", "prerouting", ("meta mark set iifname map @port-src",
                                      "meta mark & 0xffff0000 == 0x0 "
                                      "meta mark set ether daddr map @mac-dst",
                                      "iifname @secured jump antispoof"), BRIDGE_PRE),
    # a frame from outside tagged by destination MAC reaches no filtered port but the one
    # owning that MAC (a copy flooded to another network's ports would be judged in the wrong
    # zone); unfiltered ports (an uplink, hybrid mode's veth to the per-port bridge) pass it on
    ChainDef("bridge", "forward", ("meta mark & 0xffff0000 == 0x0 meta mark != 0x0 "
                                   "oifname @secured oifname . ether daddr != @macs drop",
                                   "meta mark set oifname map @port-dst"), BRIDGE_FWD),
    ChainDef("inet", "zone-pre", ("ct zone set meta mark map @zone-mark",
                                  "meta mark 0x0 ct zone set ip daddr map @zone4",
                                  "meta mark 0x0 ct zone set ip6 daddr map @zone6"),
             INET_PRE_ZONE),
    ChainDef("inet", "zone-out", ("ct zone set ip daddr map @zone4",
                                  "ct zone set ip6 daddr map @zone6"), INET_OUT_ZONE),
)

# Frames anti-spoofing lets through besides the port's own addresses (before the final drop).
ANTISPOOF_TAIL = (
    # DHCP discover/request before the VM has an address
    "ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 return",
    # ARP probe (RFC 5227): sender IP 0.0.0.0, sender MAC must be the port's
    "ether type arp arp htype 1 arp ptype ip arp saddr ip 0.0.0.0 iifname . arp saddr ether @macs "
    "return",
    # DAD and MLD from the unspecified address
    "ether type ip6 ip6 saddr :: icmpv6 type { nd-neighbor-solicit, mld-listener-report, "
    "mld2-listener-report } return",
    "drop",
)
ANTISPOOF = ("bridge", "antispoof")


def fixed_chain(direction):
    """Name of the shared chain holding the rules every filtered port has in ``direction``
    besides the state rules (:data:`STATE_CHAIN`)."""
    return f"fixed-{'e' if direction == EGRESS else 'i'}"


def fixed_chains():
    """Every fixed chain: the base chains, the state rules' chain and the two chains of
    fixed rules."""
    return [*BASE_CHAINS, ChainDef("inet", STATE_CHAIN, STATE_RULES),
            ChainDef("inet", fixed_chain(EGRESS), EGRESS_FIXED),
            ChainDef("inet", fixed_chain(INGRESS), INGRESS_FIXED)]


def antispoof_chain(present):
    """The anti-spoofing chain, given which of the SPOOF_SETS exist (``present``: a set of
    their names): the address checks use only existing sets."""
    rules = ["iifname . ether saddr != @macs drop"]
    for fam in (4, 6):
        ipk = "ip" if fam == 4 else "ip6"
        for pfx in (False, True):
            name = SPOOF_SETS[(fam, pfx)]
            if name not in present:
                continue
            rules.append(f"ether type {ipk} iifname . ether saddr . {ipk} saddr @{name} return")
            if fam == 4:
                rules.append(f"ether type arp arp htype 1 arp ptype ip "
                             f"iifname . arp saddr ether . arp saddr ip @{name} return")
    return ChainDef(*ANTISPOOF, tuple(rules) + ANTISPOOF_TAIL)


def spoof_type(name):
    """The key type of one of the SPOOF_SETS."""
    return "ifname . ether_addr . " + ("ipv4_addr" if name.startswith("spoof4") else "ipv6_addr")


# -- derived names (never user text) and their inverses -------------------------------------

def short_hash(text, n=None):
    """A stable, name-safe digest of a user id (see :mod:`fwsg.naming`)."""
    return naming.short_hash(text, n)


def mark(v):
    """A mark value as nft prints it."""
    return f"0x{v:08x}"


def src_mark(number):
    """The mark (and ``egress`` key) of a sending port."""
    return mark(number << 16)


def dst_mark(number):
    """The mark (and ``ingress`` key) of a receiving port."""
    return mark(number)


def zone_value(zone):
    """A zone map's value for conntrack zone ``zone`` (1..65535), as nft prints it."""
    return str(zone)


def zone_of_value(text):
    """The zone a zone map's value sets (``5``; ``jump zone-5`` from the layout before the
    data maps, so an upgraded host keeps its zone numbers), or None."""
    if isinstance(text, str) and text.startswith("jump zone-"):
        text = text[10:]
    if isinstance(text, str) and text.isdigit():
        return int(text)
    return None


AMBIGUOUS_ENTRY = (dst_mark(AMBIGUOUS), "drop")   # @ingress: an address whose owners differ


def port_number(src_mark_text):
    """The port number a ``port-src`` value carries (inverse of :func:`src_mark`)."""
    return int(src_mark_text, 16) >> 16


def quote_ifname(name):
    """An interface name as a set element (validated by the model: no quotes possible)."""
    return f'"{name}"'


def unquote_ifname(text):
    return text.strip('"')


_SUFFIX = {EGRESS: "e", INGRESS: "i"}


class Names:
    """Derived object names for groups, their member sets and port profiles."""

    @staticmethod
    def group(sg):
        return "g" + short_hash(sg)

    @classmethod
    def group_chain(cls, sg, direction):
        return f"{cls.group(sg)}-{_SUFFIX[direction]}"

    @classmethod
    def member_set(cls, sg, family, prefixes=False):
        return f"{cls.group(sg)}-m{family}{'n' if prefixes else ''}"

    @classmethod
    def port_set(cls, sg, direction):
        """The set of a group chain's single-port rules (``<group>-pi``/``-pe``)."""
        return f"{cls.group(sg)}-p{_SUFFIX[direction]}"

    @staticmethod
    def profile(egress_rules, ingress_rules):
        """A profile's name: a hash of its two chains' content."""
        return "p" + short_hash("\n".join(egress_rules) + "\0" + "\n".join(ingress_rules))

    @staticmethod
    def profile_chain(profile, direction):
        return f"{profile}-{_SUFFIX[direction]}"

    @staticmethod
    def jump(chain):
        """A verdict-map value: jump to ``chain``."""
        return f"jump {chain}"


def group_of_chain(key):
    """The group name (``g<hash>``) a chain key belongs to, or None for other chains."""
    family, name = key
    if family == "inet" and name.startswith("g") and name[-2:] in ("-i", "-e"):
        return name[:-2]
    return None


def profile_of_verdict(value):
    """The profile a dispatch-map value jumps to (``jump p<hash>-e`` -> ``p<hash>``), or None."""
    if value and value.startswith("jump p") and value[-2:] in ("-i", "-e"):
        return value[5:-2]
    return None
