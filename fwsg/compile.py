"""Model -> desired Ruleset for the bridged mode (VM taps on a Linux bridge).

Pure function, no I/O. Layout (see README "Design"):

``table bridge fwsg``
  prerouting (-200): tag the packet with the source port id (``meta mark``, bits 16-31) from
  ``iifname``; anti-spoofing for ports with port security (MAC, IPv4, IPv6, ARP).
  forward (-200): OR the destination port id (bits 0-15) into the mark through a per-port
  tag chain chosen by ``oifname vmap``.
``table inet fwsg``
  egress check (forward 0, input 0): ``meta mark & 0xffff0000 vmap @egress`` -> port chain.
  ingress check (forward 10): ``meta mark & 0xffff vmap @ingress`` -> port chain; (output 10):
  ``ip daddr vmap @ingress4`` / ``ip6 daddr vmap @ingress6`` for traffic the host sends to a VM.
  Port chains hold the fixed part (conntrack state, DHCP, ND) and ``jump`` to shared per-group
  chains; remote groups are named member sets (hash for hosts, interval only for prefixes).

Object names are derived from a hash of the user's ids and never contain user text; interface
names (validated) are the only user strings in the batch, always quoted.
"""

import hashlib

import netaddr

from fwsg.addr import is_prefix
from fwsg.model import EGRESS, ICMP4, ICMP6, INGRESS, Model
from fwsg.ruleset import ChainDef, Ruleset, SetDef

MAX_PORT_ID = 0xFFFF
_L4 = {6: "tcp", 17: "udp", 33: "dccp", 132: "sctp", 136: "udplite"}
CT_STATE = "ct state vmap { invalid : drop, established : accept, related : accept }"

# Fixed objects. Priorities: the bridge chains run before br_netfilter hands the frame to the
# inet hooks (bridge priority 0); the egress check runs before the ingress check.
BRIDGE_PRE = "filter hook prerouting priority -200"
BRIDGE_FWD = "filter hook forward priority -200"
INET_FWD_EGRESS = "filter hook forward priority 0"
INET_FWD_INGRESS = "filter hook forward priority 10"
INET_IN_EGRESS = "filter hook input priority 0"
INET_OUT_INGRESS = "filter hook output priority 10"


def short_hash(text, n=10):
    """A stable, name-safe digest of a user id."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def mark(v):
    return f"0x{v:08x}"


def quote_ifname(name):
    return f'"{name}"'  # names are validated by the model: no quotes or backslashes possible


class Names:
    """Derived object names for groups and ports."""

    @staticmethod
    def group(sg):
        return "g" + short_hash(sg)

    @staticmethod
    def port(pid):
        return "p" + short_hash(pid)

    @classmethod
    def member_set(cls, sg, family, prefixes=False):
        return f"{cls.group(sg)}-m{family}{'n' if prefixes else ''}"


def allocate_ids(model, previous=None):
    """Port number (1..65535) per device for the filtered ports of ``model``; devices already
    in ``previous`` keep their number, new ones take the lowest free numbers."""
    previous = previous or {}
    wanted = sorted(p.device for p in model.ports.values() if p.port_security)
    ids = {d: previous[d] for d in wanted if d in previous}
    used = set(ids.values())
    nxt = 1
    for dev in wanted:
        if dev in ids:
            continue
        while nxt in used:
            nxt += 1
        if nxt > MAX_PORT_ID:
            raise ValueError(f"more than {MAX_PORT_ID} filtered ports")
        ids[dev] = nxt
        used.add(nxt)
    return ids


def render_rule(rule, members_of, verdict="accept"):
    """nft text for one Rule (a list: a remote group with prefixes needs two rules).

    ``members_of(sg, family)`` returns (hosts, prefixes) of a group, used to know whether its
    prefix set exists."""
    fam = rule.family
    ipk = "ip" if fam == 4 else "ip6"
    remote_key = "saddr" if rule.direction == INGRESS else "daddr"
    parts = []
    if rule.src:
        parts.append(f"{ipk} saddr {rule.src}")
    if rule.dst:
        parts.append(f"{ipk} daddr {rule.dst}")
    if not parts and rule.remote_group is None:
        parts.append(f"meta nfproto ipv{fam}")
    l4 = []
    p = rule.protocol
    if p in (ICMP4, ICMP6):
        kw = "icmp" if p == ICMP4 else "icmpv6"
        if rule.icmp_type is None:
            l4.append(f"meta l4proto {p}")
        else:
            l4.append(f"{kw} type {rule.icmp_type}")
            if rule.icmp_code is not None:
                l4.append(f"{kw} code {rule.icmp_code}")
    elif p in _L4 and (rule.port_min is not None or rule.sport_min is not None):
        if rule.sport_min is not None:
            l4.append(f"{_L4[p]} sport {_range(rule.sport_min, rule.sport_max)}")
        if rule.port_min is not None:
            l4.append(f"{_L4[p]} dport {_range(rule.port_min, rule.port_max)}")
    elif p is not None:
        l4.append(f"meta l4proto {p}")
    tail = " ".join(l4 + [verdict])
    if rule.remote_group is None:
        return [" ".join(parts + [tail])]
    out = [" ".join(parts + [f"{ipk} {remote_key} @{Names.member_set(rule.remote_group, fam)}", tail])]
    _, prefixes = members_of(rule.remote_group, fam)
    if prefixes:
        out.append(" ".join(parts + [f"{ipk} {remote_key} "
                                     f"@{Names.member_set(rule.remote_group, fam, True)}", tail]))
    return out


def _range(lo, hi):
    return str(lo) if hi is None or hi == lo else f"{lo}-{hi}"


def _dedupe(rules):
    seen, out = set(), []
    for r in rules:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return tuple(out)


def split_members(members):
    """(hosts, merged prefixes) of a canonical member tuple."""
    hosts = [m for m in members if not is_prefix(m)]
    prefixes = [m for m in members if is_prefix(m)]
    if prefixes:
        prefixes = [str(n) for n in netaddr.cidr_merge(prefixes)]
    return hosts, prefixes


def port_fixed_rules(direction, stateful):
    """The rules every filtered port has, before its groups' rules."""
    out = [CT_STATE] if stateful else []
    if direction == EGRESS:
        out += [
            "meta nfproto ipv4 udp sport 67 udp dport 68 drop",     # DHCP server from a VM
            "meta nfproto ipv6 udp sport 547 udp dport 546 drop",   # DHCPv6 server from a VM
            "icmpv6 type nd-router-advert drop",                    # RA from a VM
            "meta nfproto ipv4 udp sport 68 udp dport 67 accept",   # DHCP client
            "meta nfproto ipv6 udp sport 546 udp dport 547 accept",  # DHCPv6 client
            "meta l4proto ipv6-icmp accept",                        # ND, DAD, MLD, ping6 out
        ]
    else:
        out += [
            "icmpv6 type { mld-listener-query, nd-neighbor-solicit, nd-neighbor-advert } accept",
            "meta nfproto ipv4 udp sport 67 udp dport 68 accept",   # DHCP replies
            "meta nfproto ipv6 udp sport 547 udp dport 546 accept",  # DHCPv6 replies
        ]
    return out


def compile_model(model, port_ids=None):
    """Compile a Model into the desired Ruleset. ``port_ids`` (device -> number) keeps the
    numbers of ports already in the kernel stable. Pure: no I/O."""
    model = Model.from_wire(model)
    ids = allocate_ids(model, port_ids)
    rs = Ruleset()
    split = {}

    def members_of(sg, fam):
        key = (sg, fam)
        if key not in split:
            split[key] = split_members(model.members_of(sg, fam))
        return split[key]

    # Which groups' member sets are referenced, by family.
    referenced = set()
    for rules in list(model.groups.values()) + [p.rules for p in model.ports.values()]:
        for r in rules:
            if r.remote_group is not None:
                referenced.add((r.remote_group, r.family))

    # --- inet: member sets, group chains -------------------------------------------------
    for sg, fam in sorted(referenced):
        hosts, prefixes = members_of(sg, fam)
        atype = "ipv4_addr" if fam == 4 else "ipv6_addr"
        rs.add_set(SetDef("inet", Names.member_set(sg, fam), atype), hosts)
        if prefixes:
            rs.add_set(SetDef("inet", Names.member_set(sg, fam, True), atype, interval=True),
                       prefixes)

    used_groups = sorted({sg for p in model.ports.values() if p.port_security
                          for sg in p.security_groups})
    groups_meta = {}
    for sg in used_groups:
        g = Names.group(sg)
        for direction, suffix in ((INGRESS, "i"), (EGRESS, "e")):
            rules = []
            for r in model.groups[sg]:
                if r.direction == direction:
                    rules.extend(render_rule(r, members_of))
            rs.add_chain(ChainDef("inet", f"{g}-{suffix}", _dedupe(rules)))
        groups_meta[sg] = {"name": g, "rules": len(model.groups[sg]),
                           "members": {f"IPv{f}": len(model.members_of(sg, f)) for f in (4, 6)}}

    # --- per-port chains and dispatch ----------------------------------------------------
    egress_map, ingress_map, ingress4, ingress6 = {}, {}, {}, {}
    src_map, dst_map = {}, {}
    secured, macs = set(), set()
    spoof = {(4, False): set(), (4, True): set(), (6, False): set(), (6, True): set()}
    ports_meta = {}
    dup_addr = set()
    for pid in sorted(model.ports, key=lambda k: model.ports[k].device):
        port = model.ports[pid]
        if not port.port_security:
            ports_meta[pid] = {"device": port.device, "filtered": False}
            continue
        n = ids[port.device]
        pn = Names.port(pid)
        stateful = model.port_stateful(port)
        for direction, suffix in ((INGRESS, "i"), (EGRESS, "e")):
            rules = port_fixed_rules(direction, stateful)
            rules += [f"jump {Names.group(sg)}-{suffix}" for sg in port.security_groups]
            for r in port.rules:
                if r.direction == direction:
                    rules.extend(render_rule(r, members_of))
            rules.append("drop")
            rs.add_chain(ChainDef("inet", f"{pn}-{suffix}", _dedupe(rules)))
        rs.add_chain(ChainDef("bridge", f"{pn}-t", (f"meta mark set meta mark | {mark(n)}",)))
        dev = quote_ifname(port.device)
        egress_map[mark(n << 16)] = f"jump {pn}-e"
        ingress_map[mark(n)] = f"jump {pn}-i"
        src_map[dev] = mark(n << 16)
        dst_map[dev] = f"jump {pn}-t"
        for ip in port.fixed_ips:
            target = ingress6 if ":" in ip else ingress4
            if ip in target:
                dup_addr.add(ip)
            target[ip] = f"jump {pn}-i"
        secured.add(dev)
        for fam in (4, 6):
            for ip, mac in port.addresses(fam):
                macs.add(f"{dev} . {mac}")
                spoof[(fam, is_prefix(ip))].add(f"{dev} . {mac} . {ip}")
        macs.add(f"{dev} . {port.mac}")
        ports_meta[pid] = {"device": port.device, "filtered": True, "number": n, "name": pn,
                           "stateful": stateful, "groups": list(port.security_groups)}
    for ip in dup_addr:  # an address on two ports cannot select one: leave it to the bridge path
        ingress4.pop(ip, None)
        ingress6.pop(ip, None)

    rs.add_set(SetDef("inet", "egress", "mark", "verdict"), egress_map)
    rs.add_set(SetDef("inet", "ingress", "mark", "verdict"), ingress_map)
    rs.add_set(SetDef("inet", "ingress4", "ipv4_addr", "verdict"), ingress4)
    rs.add_set(SetDef("inet", "ingress6", "ipv6_addr", "verdict"), ingress6)
    rs.add_chain(ChainDef("inet", "egress-fwd", ("meta mark & 0xffff0000 vmap @egress",),
                          INET_FWD_EGRESS))
    rs.add_chain(ChainDef("inet", "egress-in", ("meta mark & 0xffff0000 vmap @egress",),
                          INET_IN_EGRESS))
    rs.add_chain(ChainDef("inet", "ingress-fwd", ("meta mark & 0x0000ffff vmap @ingress",),
                          INET_FWD_INGRESS))
    rs.add_chain(ChainDef("inet", "ingress-out", ("ip daddr vmap @ingress4",
                                                  "ip6 daddr vmap @ingress6"), INET_OUT_INGRESS))

    # --- bridge: tagging and anti-spoofing -----------------------------------------------
    rs.add_set(SetDef("bridge", "port-src", "ifname", "mark"), src_map)
    rs.add_set(SetDef("bridge", "port-dst", "ifname", "verdict"), dst_map)
    rs.add_set(SetDef("bridge", "secured", "ifname"), secured)
    rs.add_set(SetDef("bridge", "macs", "ifname . ether_addr"), macs)
    spoof_rules = ["iifname . ether saddr != @macs drop"]
    for fam in (4, 6):
        ipk, atype = ("ip", "ipv4_addr") if fam == 4 else ("ip6", "ipv6_addr")
        etype = "ip" if fam == 4 else "ip6"
        for pfx in (False, True):
            name = f"spoof{fam}{'n' if pfx else ''}"
            if pfx and not spoof[(fam, True)]:
                continue  # interval sets only when some port has a prefix address pair
            rs.add_set(SetDef("bridge", name, f"ifname . ether_addr . {atype}", interval=pfx),
                       spoof[(fam, pfx)])
            spoof_rules.append(f"ether type {etype} iifname . ether saddr . {ipk} saddr @{name} return")
            if fam == 4:
                spoof_rules.append(f"ether type arp arp htype 1 arp ptype ip "
                                   f"iifname . arp saddr ether . arp saddr ip @{name} return")
    spoof_rules += [
        # DHCP discover/request before the VM has an address
        "ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 return",
        # ARP probe (RFC 5227): sender IP 0.0.0.0, sender MAC must be the frame's
        "ether type arp arp htype 1 arp ptype ip arp saddr ip 0.0.0.0 "
        "iifname . arp saddr ether @macs return",
        # DAD and MLD from the unspecified address
        "ether type ip6 ip6 saddr :: icmpv6 type { nd-neighbor-solicit, mld-listener-report, "
        "mld2-listener-report } return",
        "drop",
    ]
    rs.add_chain(ChainDef("bridge", "antispoof", tuple(spoof_rules)))
    rs.add_chain(ChainDef("bridge", "prerouting", (
        "meta mark set iifname map @port-src",
        "iifname @secured jump antispoof",
    ), BRIDGE_PRE))
    rs.add_chain(ChainDef("bridge", "forward", ("oifname vmap @port-dst",), BRIDGE_FWD))
    rs.meta = {"ports": ports_meta, "groups": groups_meta, "port_ids": ids}
    return rs
