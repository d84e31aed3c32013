"""Model -> desired Ruleset for the bridged mode (VM taps on a Linux bridge).

Pure function, no I/O. Layout (see README "Design"):

``table bridge fwsg``
  prerouting (-200): tag the frame with the source port's number (``meta mark``, bits 16-31)
  from ``iifname``; anti-spoofing for ports with port security (MAC, IPv4, IPv6, ARP).
  forward (-200): set the mark to the destination port's number (bits 0-15) from ``oifname``.
``table inet fwsg``
  egress check (prerouting 0, after conntrack): ``meta mark & 0xffff0000 vmap @egress`` -> the
  port's egress chain; covers VM->VM, VM->outside and VM->hypervisor alike.
  ingress check (forward 0): ``meta mark & 0xffff vmap @ingress`` -> the port's ingress chain;
  (output 0): ``ip daddr vmap @ingress4`` / ``ip6 daddr vmap @ingress6`` for traffic the host
  itself sends to a VM.
  Port chains ``jump`` to a shared chain of fixed rules (conntrack state, DHCP, ND), then to one
  shared chain per group, then drop; remote groups are named member sets (hash sets for hosts,
  a small interval set only while a group has prefix members).

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
# Fixed per-port rules live once in shared chains (no anonymous set per port: libnftables
# fetches every set, anonymous ones included, before each transaction).
STATE_RULES = ("ct state invalid drop", "ct state established,related accept")

# Fixed objects. Priorities: the bridge chains run before br_netfilter hands the frame to the
# inet hooks (bridge priority 0); the egress check runs before the ingress check.
BRIDGE_PRE = "filter hook prerouting priority -200"
BRIDGE_FWD = "filter hook forward priority -200"
INET_PRE_EGRESS = "filter hook prerouting priority 0"
INET_FWD_INGRESS = "filter hook forward priority 0"
INET_OUT_INGRESS = "filter hook output priority 0"


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

    @classmethod
    def member_set(cls, sg, family, prefixes=False):
        return f"{cls.group(sg)}-m{family}{'n' if prefixes else ''}"


def render_rule(rule, members_of, verdict="accept"):
    """nft text for one Rule (a list: a remote group with prefixes needs two rules).

    ``members_of(sg, family)`` returns (hosts, has_prefixes) of a group: whether its prefix
    set exists."""
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
    _, has_prefixes = members_of(rule.remote_group, fam)
    if has_prefixes:
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


def fixed_chain(direction, stateful):
    """Name of the shared chain holding the rules every filtered port has in ``direction``."""
    return f"fixed-{'e' if direction == EGRESS else 'i'}-{'sf' if stateful else 'sl'}"


def fixed_rules(direction, stateful):
    """The rules every filtered port has, before its groups' rules."""
    out = list(STATE_RULES) if stateful else []
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


def subsumed_by_fixed(rule):
    """True when the fixed rules every port has already decide every packet ``rule`` matches
    (Neutron's per-port DHCP reply rules, for instance): such a rule adds nothing."""
    def within(lo, hi, port):
        return lo is not None and lo == port and (hi is None or hi == port)

    if rule.protocol == 17:
        pairs = {(INGRESS, 4): (67, 68), (INGRESS, 6): (547, 546),
                 (EGRESS, 4): (68, 67), (EGRESS, 6): (546, 547)}
        sport, dport = pairs[(rule.direction, rule.family)]
        return within(rule.sport_min, rule.sport_max, sport) and within(
            rule.port_min, rule.port_max, dport)
    if rule.protocol == ICMP6 and rule.direction == EGRESS:
        return True  # every ICMPv6 leaves a VM but RA, which is dropped before any rule
    if rule.protocol == ICMP6 and rule.direction == INGRESS:
        return rule.icmp_type in (130, 135, 136)
    return False


class Pending:
    """What changed in the desired state since the last commit: chain and set keys touched,
    net element deltas of sets, keys of maps whose entries changed."""

    def __init__(self):
        self.chains = set()
        self.sets = set()
        self.elems = {}   # key -> (added set, removed set), net since the last commit
        self.maps = {}    # key -> set of map keys touched

    def __bool__(self):
        return bool(self.chains or self.sets or self.elems or self.maps)

    def add(self, key, e):
        added, removed = self.elems.setdefault(key, (set(), set()))
        if e in removed:
            removed.discard(e)
        else:
            added.add(e)

    def remove(self, key, e):
        added, removed = self.elems.setdefault(key, (set(), set()))
        if e in added:
            added.discard(e)
        else:
            removed.add(e)

    def touch_map(self, key, k):
        self.maps.setdefault(key, set()).add(k)


SPOOF_SETS = {(4, False): "spoof4", (4, True): "spoof4n", (6, False): "spoof6", (6, True): "spoof6n"}


class Desired:
    """The desired Ruleset for a model, kept current change by change.

    Every mutator updates ``rs`` and records in ``pending`` exactly what it touched, so a commit
    can be computed from the change alone (O(change), not O(model)). ``load(model)`` from empty
    gives the same Ruleset as any sequence of changes that ends in that model. No I/O here.
    """

    def __init__(self, port_ids=None):
        self.rs = Ruleset()
        self.pending = Pending()
        self.groups = {}        # sg -> tuple of Rule
        self.members = {}       # (sg, family) -> set of canonical hosts and prefixes
        self.prefix_members = {}  # (sg, family) -> the prefixes among them
        self.loaded_members = {}  # (sg, family) -> the member tuple of the last model loaded
        self.ports = {}         # pid -> Port
        self.ids = {}           # device -> port number
        self.reserved = dict(port_ids or {})  # numbers the kernel already uses, by device
        self.refs = {}          # (sg, family) -> set of owners ("g", sg) / ("p", pid)
        self.prefixed = set()   # (sg, family) whose prefix set exists
        self.addr_owners = {}   # ip -> set of port ids (ingress4/6 dispatch)
        self.profile_of = {}    # port id -> profile (shared port chains) name
        self.profile_refs = {}  # profile name -> port ids using it
        self._fixed()

    def clear_pending(self):
        """Forget what was recorded as touched (after a commit or a rollback)."""
        self.pending = Pending()

    def counts(self):
        """Sizes of the desired Ruleset: chains, rules, sets, maps, elements."""
        return self.rs.counts()

    # -- fixed objects ------------------------------------------------------------------
    def _fixed(self):
        for sd in (SetDef("inet", "egress", "mark", "verdict"),
                   SetDef("inet", "ingress", "mark", "verdict"),
                   SetDef("inet", "ingress4", "ipv4_addr", "verdict"),
                   SetDef("inet", "ingress6", "ipv6_addr", "verdict"),
                   SetDef("bridge", "port-src", "ifname", "mark"),
                   SetDef("bridge", "port-dst", "ifname", "mark"),
                   SetDef("bridge", "secured", "ifname"),
                   SetDef("bridge", "macs", "ifname . ether_addr"),
                   SetDef("bridge", "spoof4", "ifname . ether_addr . ipv4_addr"),
                   SetDef("bridge", "spoof6", "ifname . ether_addr . ipv6_addr")):
            self._declare(sd)
        for c in (
            ChainDef("inet", "egress-pre", ("meta mark & 0xffff0000 vmap @egress",), INET_PRE_EGRESS),
            ChainDef("inet", "ingress-fwd", (
                "meta mark & 0x0000ffff vmap @ingress",
                # routed by the hypervisor into the bridge: no port tag, dispatch by address
                "meta mark & 0x0000ffff == 0x0 ip daddr vmap @ingress4",
                "meta mark & 0x0000ffff == 0x0 ip6 daddr vmap @ingress6"),
                     INET_FWD_INGRESS),
            ChainDef("inet", "ingress-out", ("ip daddr vmap @ingress4", "ip6 daddr vmap @ingress6"),
                     INET_OUT_INGRESS),
            ChainDef("bridge", "prerouting", ("meta mark set iifname map @port-src",
                                              "iifname @secured jump antispoof"), BRIDGE_PRE),
            ChainDef("bridge", "forward", ("meta mark set oifname map @port-dst",), BRIDGE_FWD),
        ):
            self._chain(c.key, c)
        for direction in (EGRESS, INGRESS):
            for stateful in (True, False):
                name = fixed_chain(direction, stateful)
                self._chain(("inet", name), ChainDef("inet", name,
                                                     tuple(fixed_rules(direction, stateful))))
        self._antispoof()

    def _antispoof(self):
        rules = ["iifname . ether saddr != @macs drop"]
        for fam in (4, 6):
            ipk = "ip" if fam == 4 else "ip6"
            for pfx in (False, True):
                name = SPOOF_SETS[(fam, pfx)]
                if ("bridge", name) not in self.rs.sets:
                    continue
                rules.append(f"ether type {ipk} iifname . ether saddr . {ipk} saddr @{name} return")
                if fam == 4:
                    rules.append(f"ether type arp arp htype 1 arp ptype ip "
                                 f"iifname . arp saddr ether . arp saddr ip @{name} return")
        rules += [
            # DHCP discover/request before the VM has an address
            "ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 return",
            # ARP probe (RFC 5227): sender IP 0.0.0.0, sender MAC must be the port's
            "ether type arp arp htype 1 arp ptype ip arp saddr ip 0.0.0.0 "
            "iifname . arp saddr ether @macs return",
            # DAD and MLD from the unspecified address
            "ether type ip6 ip6 saddr :: icmpv6 type { nd-neighbor-solicit, mld-listener-report, "
            "mld2-listener-report } return",
            "drop",
        ]
        self._chain(("bridge", "antispoof"), ChainDef("bridge", "antispoof", tuple(rules)))

    # -- primitives that record what they touch ------------------------------------------
    def _declare(self, sd):
        if self.rs.sets.get(sd.key) != sd:
            self.rs.add_set(sd)
            self.pending.sets.add(sd.key)
            self.pending.elems.pop(sd.key, None)
            self.pending.maps.pop(sd.key, None)

    def _undeclare(self, key):
        if key in self.rs.sets:
            del self.rs.sets[key]
            del self.rs.elements[key]
            self.pending.sets.add(key)
            self.pending.elems.pop(key, None)
            self.pending.maps.pop(key, None)

    def _chain(self, key, cdef):
        if self.rs.chains.get(key) != cdef:
            if cdef is None:
                self.rs.chains.pop(key, None)
            else:
                self.rs.chains[key] = cdef
            self.pending.chains.add(key)

    def _elem_add(self, key, e):
        s = self.rs.elements[key]
        if e not in s:
            s.add(e)
            self.pending.add(key, e)

    def _elem_del(self, key, e):
        s = self.rs.elements[key]
        if e in s:
            s.discard(e)
            self.pending.remove(key, e)

    def _map_set(self, key, k, v):
        m = self.rs.elements[key]
        if m.get(k) != v:
            if v is None:
                m.pop(k, None)
            else:
                m[k] = v
            self.pending.touch_map(key, k)

    # -- groups and members -------------------------------------------------------------
    def members_of(self, sg, fam):
        """The canonical members (hosts and prefixes) of a group, one family (a set)."""
        return self.members.get((sg, fam), set())

    def split_members(self, sg, fam):
        """(hosts, merged prefixes) of a group's members of one family."""
        mem = self.members.get((sg, fam), ())
        prefixes = self.prefix_members.get((sg, fam), ())
        hosts = [m for m in mem if m not in prefixes] if prefixes else mem
        return hosts, ([str(n) for n in netaddr.cidr_merge(prefixes)] if prefixes else [])

    def _has_prefixes(self, sg, fam):
        return (sg, fam) in self.prefixed

    def _render(self, rules):
        out = []
        for r in rules:
            out.extend(render_rule(r, lambda sg, fam: ((), self._has_prefixes(sg, fam))))
        return out

    def _set_refs(self, owner, rules):
        """Record which member sets ``owner``'s rules reference; create/remove sets."""
        wanted = {(r.remote_group, r.family) for r in rules if r.remote_group is not None}
        for ref, owners in list(self.refs.items()):
            if owner in owners and ref not in wanted:
                owners.discard(owner)
                if not owners:
                    del self.refs[ref]
                    self._member_sets(*ref)
        for ref in wanted:
            if ref not in self.refs:
                self.refs[ref] = {owner}
                self._member_sets(*ref)
            else:
                self.refs[ref].add(owner)

    def _member_sets(self, sg, fam):
        """Make the member sets of (sg, fam) exist iff referenced, with the right elements."""
        host_key = ("inet", Names.member_set(sg, fam))
        pfx_key = ("inet", Names.member_set(sg, fam, True))
        atype = "ipv4_addr" if fam == 4 else "ipv6_addr"
        if (sg, fam) not in self.refs:
            self._undeclare(host_key)
            self._undeclare(pfx_key)
            self.prefixed.discard((sg, fam))
            return
        hosts, prefixes = self.split_members(sg, fam)
        if host_key not in self.rs.sets:
            self._declare(SetDef("inet", host_key[1], atype))
        self._sync_elements(host_key, hosts)
        had = (sg, fam) in self.prefixed
        if prefixes:
            if pfx_key not in self.rs.sets:
                self._declare(SetDef("inet", pfx_key[1], atype, interval=True))
            self._sync_elements(pfx_key, prefixes)
            self.prefixed.add((sg, fam))
        else:
            self._undeclare(pfx_key)
            self.prefixed.discard((sg, fam))
        if had != bool(prefixes):  # rules referencing the group gain/lose their prefix twin
            for kind, owner in list(self.refs.get((sg, fam), ())):
                if kind == "g":
                    self._group_chains(owner)
                else:
                    self._port_profile(owner)

    def _sync_elements(self, key, wanted):
        have = self.rs.elements[key]
        wanted = set(wanted)
        for e in [e for e in have if e not in wanted]:
            self._elem_del(key, e)
        for e in wanted:
            self._elem_add(key, e)

    def _group_chains(self, sg):
        g = Names.group(sg)
        rules = self.groups.get(sg)
        for direction, suffix in ((INGRESS, "i"), (EGRESS, "e")):
            key = ("inet", f"{g}-{suffix}")
            if rules is None:
                self._chain(key, None)
            else:
                body = _dedupe(self._render(r for r in rules if r.direction == direction))
                self._chain(key, ChainDef("inet", key[1], body))

    def set_group(self, sg, rules):
        """Set (or, with None, remove) a group's rules."""
        old = self.groups.get(sg)
        if rules is None:
            self.groups.pop(sg, None)
            self._set_refs(("g", sg), ())
        else:
            self.groups[sg] = tuple(rules)
            self._set_refs(("g", sg), rules)
        self._group_chains(sg)
        if is_stateless(old or ()) != is_stateless(rules or ()):
            self.refresh_ports_of_group(sg)

    def set_members(self, sg, fam, members):
        """Replace the members (canonical hosts/prefixes) of one group and family."""
        self.loaded_members.pop((sg, fam), None)
        self.members[(sg, fam)] = set(members)
        self.prefix_members[(sg, fam)] = {m for m in self.members[(sg, fam)] if is_prefix(m)}
        if (sg, fam) in self.refs:
            self._member_sets(sg, fam)

    def add_members(self, sg, fam, members):
        """Add canonical members; touches only set elements unless the first prefix arrives."""
        cur = self.members.setdefault((sg, fam), set())
        self.loaded_members.pop((sg, fam), None)
        new = [m for m in members if m not in cur]
        cur.update(new)
        pfx = [m for m in new if is_prefix(m)]
        if pfx:
            self.prefix_members.setdefault((sg, fam), set()).update(pfx)
        if (sg, fam) not in self.refs or not new:
            return
        if pfx:
            self._member_sets(sg, fam)
            return
        key = ("inet", Names.member_set(sg, fam))
        for m in new:
            self._elem_add(key, m)

    def remove_members(self, sg, fam, members):
        cur = self.members.get((sg, fam))
        if not cur:
            return
        gone = [m for m in members if m in cur]
        self.loaded_members.pop((sg, fam), None)
        cur.difference_update(gone)
        pfx = [m for m in gone if is_prefix(m)]
        if pfx:
            self.prefix_members.get((sg, fam), set()).difference_update(pfx)
        if (sg, fam) not in self.refs or not gone:
            return
        if pfx:
            self._member_sets(sg, fam)
            return
        key = ("inet", Names.member_set(sg, fam))
        for m in gone:
            self._elem_del(key, m)

    # -- ports --------------------------------------------------------------------------
    def _allocate(self, device):
        if device in self.ids:
            return self.ids[device]
        used = set(self.ids.values())
        n = self.reserved.get(device)
        if n is None or n in used:
            reserved_other = {v for d, v in self.reserved.items() if d != device}
            n = 1
            while n in used or n in reserved_other:
                n += 1
            if n > MAX_PORT_ID:
                raise ValueError(f"more than {MAX_PORT_ID} filtered ports")
        self.ids[device] = n
        return n

    def _profile_rules(self, port):
        """(egress rules, ingress rules) of a filtered port's chains."""
        stateful = self._stateful(port)
        out = []
        for direction, suffix in ((EGRESS, "e"), (INGRESS, "i")):
            rules = [f"jump {fixed_chain(direction, stateful)}"]
            rules += [f"jump {Names.group(sg)}-{suffix}" for sg in port.security_groups]
            rules += self._render(r for r in port.rules
                                  if r.direction == direction and not subsumed_by_fixed(r))
            rules.append("drop")
            out.append(_dedupe(rules))
        return out

    def _port_profile(self, pid):
        """Point the port's dispatch entries at the chains of its profile (ports whose chains
        would be identical share them); create and remove profile chains by use."""
        port = self.ports.get(pid)
        old = self.profile_of.pop(pid, None)
        new = None
        if port is not None and port.port_security:
            egress, ingress = self._profile_rules(port)
            new = "p" + short_hash("\n".join(egress) + "\0" + "\n".join(ingress))
            if new not in self.profile_refs:
                self.profile_refs[new] = set()
                self._chain(("inet", f"{new}-e"), ChainDef("inet", f"{new}-e", egress))
                self._chain(("inet", f"{new}-i"), ChainDef("inet", f"{new}-i", ingress))
            self.profile_refs[new].add(pid)
            self.profile_of[pid] = new
            n = self.ids[port.device]
            self._map_set(("inet", "egress"), mark(n << 16), f"jump {new}-e")
            self._map_set(("inet", "ingress"), mark(n), f"jump {new}-i")
            for ip in host_addresses(port):
                self._dispatch_addr(ip)
        if old is not None and old != new:
            refs = self.profile_refs.get(old, set())
            refs.discard(pid)
            if not refs:
                self.profile_refs.pop(old, None)
                self._chain(("inet", f"{old}-e"), None)
                self._chain(("inet", f"{old}-i"), None)

    def _stateful(self, port):
        for sg in port.security_groups:
            rules = self.groups.get(sg, ())
            if rules and not all(r.stateful for r in rules):
                return False
        return True

    def _port_elements(self, port, n):
        """(set key, element) pairs and (map key, key, value) triples a filtered port adds
        besides its dispatch entries."""
        dev = quote_ifname(port.device)
        elems = [(("bridge", "secured"), dev), (("bridge", "macs"), f"{dev} . {port.mac}")]
        for fam in (4, 6):
            prefixes = {}  # mac -> prefixes: merged, an interval set refuses overlaps
            for ip, mac in port.addresses(fam):
                elems.append((("bridge", "macs"), f"{dev} . {mac}"))
                if is_prefix(ip):
                    prefixes.setdefault(mac, []).append(ip)
                else:
                    elems.append((("bridge", SPOOF_SETS[(fam, False)]), f"{dev} . {mac} . {ip}"))
            for mac, nets in sorted(prefixes.items()):
                for net in netaddr.cidr_merge(nets):
                    elems.append((("bridge", SPOOF_SETS[(fam, True)]), f"{dev} . {mac} . {net}"))
        maps = [(("bridge", "port-src"), dev, mark(n << 16)),
                (("bridge", "port-dst"), dev, mark(n))]
        return elems, maps

    def set_port(self, port):
        """Add or replace a port (a model.Port)."""
        if port.id in self.ports:
            self.remove_port(port.id, _keep_number=self.ports[port.id].device == port.device)
        self.ports[port.id] = port
        if not port.port_security:
            self.ids.pop(port.device, None)
            return
        n = self._allocate(port.device)
        self._set_refs(("p", port.id), port.rules)
        elems, maps = self._port_elements(port, n)
        for key, e in elems:
            if key not in self.rs.sets:  # first prefix address pair: its interval set
                self._declare(SetDef("bridge", key[1], _spoof_type(key[1]), interval=True))
                self._antispoof()
            self._elem_add(key, e)
        for key, k, v in maps:
            self._map_set(key, k, v)
        for ip in host_addresses(port):
            self.addr_owners.setdefault(ip, set()).add(port.id)
        self._port_profile(port.id)

    def remove_port(self, pid, _keep_number=False):
        """Remove a port and everything it owns."""
        port = self.ports.pop(pid, None)
        if port is None or not port.port_security:
            return
        n = self.ids[port.device]
        elems, maps = self._port_elements(port, n)
        for key, e in elems:
            self._elem_del(key, e)
        for key, k, _ in maps:
            self._map_set(key, k, None)
        self._map_set(("inet", "egress"), mark(n << 16), None)
        self._map_set(("inet", "ingress"), mark(n), None)
        self._port_profile(pid)
        for ip in host_addresses(port):
            self.addr_owners.get(ip, set()).discard(pid)
            self._dispatch_addr(ip)
        self._set_refs(("p", pid), ())
        if not _keep_number:
            del self.ids[port.device]
            self.reserved.pop(port.device, None)
        for fam in (4, 6):  # the last prefix address pair gone: its interval set goes too
            key = ("bridge", SPOOF_SETS[(fam, True)])
            if key in self.rs.sets and not self.rs.elements[key]:
                self._undeclare(key)
                self._antispoof()

    def _dispatch_addr(self, ip):
        key = ("inet", "ingress6" if ":" in ip else "ingress4")
        owners = [p for p in self.addr_owners.get(ip, ()) if p in self.profile_of]
        if not self.addr_owners.get(ip):
            self.addr_owners.pop(ip, None)
        # an address on two ports cannot select one port: left to the bridge path
        self._map_set(key, ip, f"jump {self.profile_of[owners[0]]}-i" if len(owners) == 1 else None)

    def refresh_ports_of_group(self, sg):
        """Re-derive the profiles of the ports whose statefulness depends on ``sg``."""
        for pid, port in self.ports.items():
            if sg in port.security_groups:
                self._port_profile(pid)

    # -- whole models -------------------------------------------------------------------
    def load(self, model):
        """Make the desired state equal to ``model`` (a Model), touching only what differs."""
        model = Model.from_wire(model)
        devices = {p.device for p in model.ports.values()}
        self.reserved = {d: n for d, n in self.reserved.items() if d in devices}
        # Ports that go away or move to another device leave first, so that no device is ever
        # held by two ports at once (a swap of two taps would otherwise share numbers).
        for pid in [p for p in self.ports if p not in model.ports
                    or model.ports[p].device != self.ports[p].device]:
            self.remove_port(pid)
        for sg, fams in model.members.items():
            for fam, ips in fams.items():
                if self.loaded_members.get((sg, fam)) == ips:
                    continue  # the same tuple as last loaded (compared without hashing)
                if set(ips) != self.members.get((sg, fam), set()):
                    self.set_members(sg, fam, ips)
                self.loaded_members[(sg, fam)] = ips
        for (sg, fam) in [k for k in self.members if k[0] not in model.members]:
            self.set_members(sg, fam, ())
            self.loaded_members.pop((sg, fam), None)
        for sg, rules in model.groups.items():
            if self.groups.get(sg) != rules:
                self.set_group(sg, rules)
        for sg in [g for g in self.groups if g not in model.groups]:
            self.set_group(sg, None)
        for pid in sorted(model.ports, key=lambda k: model.ports[k].device):
            if self.ports.get(pid) != model.ports[pid]:
                self.set_port(model.ports[pid])
        return self

    def meta(self):
        """Names record for display: derived names -> user ids."""
        ports = {}
        for pid, p in self.ports.items():
            if p.port_security:
                ports[pid] = {"device": p.device, "filtered": True, "number": self.ids[p.device],
                              "profile": self.profile_of.get(pid),
                              "groups": list(p.security_groups)}
            else:
                ports[pid] = {"device": p.device, "filtered": False}
        groups = {sg: {"name": Names.group(sg), "rules": len(r)} for sg, r in self.groups.items()}
        return {"ports": ports, "groups": groups, "port_ids": dict(self.ids)}


def host_addresses(port):
    """The host addresses a port may use (fixed IPs, host address pairs, link-locals): traffic
    the hypervisor sends or routes to them is dispatched to the port's ingress."""
    return sorted({ip for fam in (4, 6) for ip, _ in port.addresses(fam) if not is_prefix(ip)})


def is_stateless(rules):
    return bool(rules) and not all(r.stateful for r in rules)


def _spoof_type(name):
    return "ifname . ether_addr . " + ("ipv4_addr" if name.startswith("spoof4") else "ipv6_addr")


def port_ids(current):
    """device -> port number, as a Ruleset read back from the kernel holds them (the values of
    the ``port-src`` map), so a restarted agent keeps every port's number."""
    ids = {}
    for key, val in current.elements.get(("bridge", "port-src"), {}).items():
        try:
            ids[key.strip('"')] = int(val, 16) >> 16
        except ValueError:
            continue
    return ids


def compile_model(model, port_ids=None):
    """Compile a Model into the desired Ruleset. ``port_ids`` (device -> number) keeps the
    numbers of ports already in the kernel stable. Pure: no I/O."""
    d = Desired(port_ids).load(Model.from_wire(model))
    d.rs.meta = d.meta()
    return d.rs
