"""The nft backend's desired state: the Ruleset a model needs in the layout
(:mod:`fwsg.backends.nft.layout`), kept current change by change (:class:`Desired`), and the
record of what each change touched since the last commit (:class:`Pending`). No I/O here.
"""

import netaddr

from fwsg.addr import is_prefix
from fwsg.members import AddrSet
from fwsg import dispatch
from fwsg.backends.nft.layout import (AMBIGUOUS_ENTRY, EGRESS_MAP, FILTERED, FIXED_SETS, INGRESS4,
                                      INGRESS6, INGRESS_MAP, MAC_DST, MACS, PORT_DST, PORT_SRC,
                                      SECURED, SPOOF_SETS, STATELESS,
                                      ZONE4, ZONE6, ZONE_MARK, Names, zone_of_value,
                                      zone_value,
                                      antispoof_chain, dispatch_chains, dst_mark,
                                      fixed_chains, port_number, quote_ifname, spoof_type,
                                      src_mark, unquote_ifname)
from fwsg.backends.nft.rules import (PORT_SET_KEY, port_key, port_set_rule, render_rule,
                                     subsumed_by_fixed)
from fwsg.backends.base import MemberBook, load_model
from fwsg.model import EGRESS, INGRESS, Model, host_addresses, rule_facts
from fwsg import naming
from fwsg.errors import ValidationError, short_repr
from fwsg.naming import GroupNames, NameRegistry
from fwsg.portnum import PortNumbers
from fwsg.ruleset import ChainDef, Ruleset, SetDef


class RegisteredNames(Names):
    """The layout's names, made collision-free (see :mod:`fwsg.naming`): a group id or a
    profile whose short hash another already holds gets a longer one."""

    def __init__(self, group_names=None):
        self.groups = GroupNames()
        self.groups.seed(group_names or {})
        self.profiles = NameRegistry("p")

    def group(self, sg):
        return self.groups.group(sg)

    def group_chain(self, sg, direction):
        return f"{self.group(sg)}-{'i' if direction == INGRESS else 'e'}"

    def member_set(self, sg, family, prefixes=False):
        return self.groups.member_set(sg, family, prefixes)

    def port_set(self, sg, direction):
        return f"{self.group(sg)}-p{'i' if direction == INGRESS else 'e'}"

    def profile(self, egress_rules, ingress_rules):
        return self.profiles.name("\n".join(egress_rules) + "\0" + "\n".join(ingress_rules))

    def release_profile(self, name):
        self.profiles.release(self.profiles.by_name.get(name))


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

    def add_many(self, key, new):
        """``add`` for each element of the set ``new``."""
        added, removed = self.elems.setdefault(key, (set(), set()))
        back = new & removed if removed else None
        if back:
            removed -= back
            new = new - back
        added |= new

    def remove_many(self, key, gone):
        """``remove`` for each element of the set ``gone``."""
        added, removed = self.elems.setdefault(key, (set(), set()))
        back = gone & added if added else None
        if back:
            added -= back
            gone = gone - back
        removed |= gone

    def touch_map(self, key, k):
        self.maps.setdefault(key, set()).add(k)


class Desired(MemberBook):
    """The desired Ruleset for a model, kept current change by change.

    Every mutator updates ``rs`` and records in ``pending`` exactly what it touched, so a commit
    can be computed from the change alone (O(change), not O(model)). ``load(model)`` from empty
    gives the same Ruleset as any sequence of changes that ends in that model. No I/O here.
    """

    def __init__(self, port_ids=None, group_names=None):
        self.rs = Ruleset()
        self.names = RegisteredNames(group_names)  # derived names, injective
        self.pending = Pending()
        self.groups = {}        # sg -> tuple of Rule
        self.stateless = set()  # the groups is_stateless() holds for
        self.members = {}       # (sg, family) -> AddrSet of canonical hosts and prefixes
        self.prefix_members = {}  # (sg, family) -> the prefixes among them
        self.loaded_members = {}  # (sg, family) -> the member tuple of the last model loaded
        self.ports = {}         # pid -> Port
        self.numbers = PortNumbers(port_ids)  # device -> port number (kernel's kept)
        self.ids = self.numbers.ids             # device -> port number (read only)
        self.refs = {}          # (sg, family) -> set of owners ("g", sg) / ("p", pid)
        self.prefixed = set()   # (sg, family) whose prefix set exists
        self.addr_owners = {}   # ip -> set of port ids (ingress4/6 dispatch)
        self.pfx_owners = {}    # address-pair prefix -> set of port ids (ingress4n/6n)
        self.profile_of = {}    # port id -> profile (shared port chains) name
        self.profile_refs = {}  # profile name -> port ids using it
        self.zones = ZoneNumbers(getattr(port_ids, "zones", None))  # network -> conntrack zone
        self.port_zone = {}     # port id -> zone (filtered ports with a network_id)
        self.mac_owners = {}    # MAC -> zoned port ids (frames from outside: @mac-dst)
        self._chain_cache = {}  # see _group_chain
        self._group_memo = {}   # sg -> [(rules, prefix state, sides)], see _group_chains
        self._fixed()

    def clear_pending(self):
        """Forget what was recorded as touched (after a commit or a rollback)."""
        self.pending = Pending()

    def counts(self):
        """Sizes of the desired Ruleset: chains, rules, sets, maps, elements."""
        return self.rs.counts()

    # -- fixed objects ------------------------------------------------------------------
    def _fixed(self):
        for sd in FIXED_SETS:
            self._declare(sd)
        for c in fixed_chains():
            self._chain(c.key, c)
        self._map_set(INGRESS_MAP, *AMBIGUOUS_ENTRY)
        self._antispoof()

    def _antispoof(self):
        present = {name for name in SPOOF_SETS.values() if ("bridge", name) in self.rs.sets}
        chain = antispoof_chain(present)
        self._chain(chain.key, chain)

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
        have = self.rs.chains.get(key)
        if have is not cdef and have != cdef:
            if cdef is None:
                self.rs.chains.pop(key, None)
            else:
                self.rs.chains[key] = cdef
            self.pending.chains.add(key)

    # Element and map-entry deltas are not recorded for a set declared since the last commit
    # (``pending.sets``): the diff compares such a set whole (a cold start declares them all).
    def _elem_add(self, key, e):
        s = self.rs.elements[key]
        if type(s) is AddrSet:
            if s.change(e, True) and key not in self.pending.sets:
                self.pending.add(key, e)
        elif e not in s:
            s.add(e)
            if key not in self.pending.sets:
                self.pending.add(key, e)

    def _elem_del(self, key, e):
        s = self.rs.elements[key]
        if type(s) is AddrSet:
            if s.change(e, False) and key not in self.pending.sets:
                self.pending.remove(key, e)
        elif e in s:
            s.discard(e)
            if key not in self.pending.sets:
                self.pending.remove(key, e)

    def _map_set(self, key, k, v):
        m = self.rs.elements[key]
        if m.get(k) != v:
            if v is None:
                m.pop(k, None)
            else:
                m[k] = v
            if key not in self.pending.sets:
                self.pending.touch_map(key, k)

    # -- groups and members -------------------------------------------------------------
    def members_of(self, sg, fam):
        """The canonical members (hosts and prefixes) of a group, one family (an AddrSet)."""
        return self.members.get((sg, fam)) or AddrSet(fam)

    def split_members(self, sg, fam):
        """(hosts, merged prefixes) of a group's members of one family: the hosts as an
        AddrSet sharing the members' packed records."""
        mem = self.members.get((sg, fam))
        hosts = mem.hosts() if mem is not None else AddrSet(fam)
        prefixes = self.prefix_members.get((sg, fam), ())
        return hosts, ([str(n) for n in netaddr.cidr_merge(prefixes)] if prefixes else [])

    def _has_prefixes(self, sg, fam):
        return (sg, fam) in self.prefixed

    def _render(self, rules):
        out = []
        for r in rules:
            out.extend(render_rule(r, lambda sg, fam: ((), self._has_prefixes(sg, fam)),
                                   names=self.names))
        return out

    def _member_sets(self, sg, fam):
        """Make the member sets of (sg, fam) exist iff referenced, with the right elements."""
        host_key = ("inet", self.names.member_set(sg, fam))
        pfx_key = ("inet", self.names.member_set(sg, fam, True))
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
        """Make the elements of ``key`` equal to ``wanted`` (set operations: a cold start of
        a million members is one union, not a million calls; two AddrSets compare packed, and
        a set declared in this change takes ``wanted``'s packed records as they are)."""
        have = self.rs.elements[key]
        if isinstance(have, AddrSet) and isinstance(wanted, AddrSet):
            if key in self.pending.sets:  # the diff compares this set whole: no delta kept
                self.rs.elements[key] = wanted.copy()
                return
            new, gone = wanted.diff(have)
            if gone:
                have.difference_update(gone)
                self.pending.remove_many(key, set(gone))
            if new:
                have.update(new)
                self.pending.add_many(key, set(new))
            return
        if not isinstance(wanted, (set, frozenset)):
            wanted = set(wanted)
        gone, new = have - wanted, wanted - have
        if gone:
            have -= gone
            self.pending.remove_many(key, gone)
        if new:
            have |= new
            self.pending.add_many(key, new)

    def _group_chains(self, sg):
        """Make the group's two chains and their port sets follow its rules. The last few rule
        tuples a group had (with the prefix state of the groups they reference) keep their
        chains and set elements: a group whose rules go back and forth costs two lookups, no
        rendering, no hashing of its rules."""
        rules = self.groups.get(sg)
        if rules is None:
            self._group_memo.pop(sg, None)
            for direction in (INGRESS, EGRESS):
                self._chain(("inet", self.names.group_chain(sg, direction)), None)
                self._undeclare(("inet", self.names.port_set(sg, direction)))
            return
        refs = (self._refs_of or {}).get(("g", sg))   # a frozenset (rule_facts) or None
        pstate = refs & self.prefixed if refs else frozenset()
        memo = self._group_memo.setdefault(sg, [])
        for held, state, sides in memo:
            if held is rules and state == pstate:
                break
        else:
            sides = tuple(self._group_side(sg, direction, tuple(
                r for r in rules if r.direction == direction)) for direction in (INGRESS, EGRESS))
            memo.insert(0, (rules, pstate, sides))
            del memo[4:]
        for set_key, keys, chain in sides:
            self._port_set(set_key, keys)   # declared before the chain that looks it up
            self._chain(chain.key, chain)

    def _group_side(self, sg, direction, rules):
        """(port set key, its elements, ChainDef) of one direction of a group (``rules``: that
        direction's Rules): the single-port rules are elements of the set, the others rules
        of the chain, after the one rule that looks the set up."""
        set_name = self.names.port_set(sg, direction)
        keyed = {r: port_key(r) for r in rules}
        keys = frozenset(k for k in keyed.values() if k is not None)
        chain = self._group_chain(self.names.group_chain(sg, direction), set_name,
                                  tuple(r for r, k in keyed.items() if k is None))
        return ("inet", set_name), keys, chain

    def _port_set(self, key, keys):
        """Make the port set ``key`` exist with exactly the elements ``keys``."""
        if key not in self.rs.sets:
            self._declare(SetDef("inet", key[1], PORT_SET_KEY))
        if self.rs.elements[key] != keys:
            self._sync_elements(key, keys)

    def _group_chain(self, name, set_name, rules):
        """The ChainDef of one group chain (``rules``: that direction's Rules not in its port
        set ``set_name``), from a bounded cache keyed by the rules and the prefix state of the
        groups they reference (a group whose rules go back and forth is not rendered again;
        its names never change)."""
        key = (name, rules, tuple((r.remote_group, r.family) in self.prefixed
                                  for r in rules if r.remote_group is not None))
        cache = self._chain_cache
        chain = cache.get(key)
        if chain is None:
            if len(cache) >= 4096:
                cache.clear()
            chain = cache[key] = ChainDef("inet", name, (port_set_rule(set_name),)
                                          + _dedupe(self._render(rules)))
        return chain

    def set_group(self, sg, rules):
        """Set (or, with None, remove) a group's rules."""
        old = self.groups.get(sg)
        if (old is None) != (rules is None):
            self.names_epoch += 1   # the names record lists the groups
        if rules is None:
            self.groups.pop(sg, None)
            self._set_refs(("g", sg), ())
        else:
            rules = self.groups[sg] = tuple(rules)
            self._set_refs(("g", sg), rules)
        stateless = rule_facts(rules or ()).stateless
        was = sg in self.stateless
        if stateless:
            self.stateless.add(sg)
        else:
            self.stateless.discard(sg)
        self._group_chains(sg)
        if was != stateless:
            self.refresh_ports_of_group(sg)

    def set_members(self, sg, fam, members):
        """Replace the members (canonical hosts/prefixes) of one group and family."""
        self._book_set(sg, fam, members)
        if (sg, fam) in self.refs:
            self._member_sets(sg, fam)

    def add_members(self, sg, fam, members):
        """Add canonical members; touches only set elements unless the first prefix arrives."""
        _cur, new, pfx = self._book_add(sg, fam, members)
        if (sg, fam) not in self.refs or not new:
            return
        if pfx:
            self._member_sets(sg, fam)
            return
        key = ("inet", self.names.member_set(sg, fam))
        for m in new:
            self._elem_add(key, m)

    def remove_members(self, sg, fam, members):
        booked = self._book_remove(sg, fam, members)
        if booked is None:
            return
        _cur, gone, pfx = booked
        if (sg, fam) not in self.refs or not gone:
            return
        if pfx:
            self._member_sets(sg, fam)
            return
        key = ("inet", self.names.member_set(sg, fam))
        for m in gone:
            self._elem_del(key, m)

    # -- ports --------------------------------------------------------------------------
    def _allocate(self, device):
        return self.numbers.assign(device)

    def _profile_rules(self, port):
        """(egress rules, ingress rules) of a filtered port's chains: its groups' chains and
        its own rules (the fixed rules and the final drop are the base chains')."""
        out = []
        for direction in (EGRESS, INGRESS):
            rules = [Names.jump(self.names.group_chain(sg, direction)) for sg in port.security_groups]
            rules += self._render(r for r in port.rules
                                  if r.direction == direction and not subsumed_by_fixed(r))
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
            new = self.names.profile(egress, ingress)
            if new not in self.profile_refs:
                self.profile_refs[new] = set()
                for direction, rules in ((EGRESS, egress), (INGRESS, ingress)):
                    name = Names.profile_chain(new, direction)
                    self._chain(("inet", name), ChainDef("inet", name, rules))
            self.profile_refs[new].add(pid)
            self.profile_of[pid] = new
            n = self.ids[port.device]
            self._map_set(EGRESS_MAP, src_mark(n), Names.jump(Names.profile_chain(new, EGRESS)))
            self._map_set(INGRESS_MAP, dst_mark(n), Names.jump(Names.profile_chain(new, INGRESS)))
            for ip in host_addresses(port):
                self._dispatch_addr(ip)
            if prefix_pairs(port):
                self._dispatch_prefixes()
        if old is not None and old != new:
            refs = self.profile_refs.get(old, set())
            refs.discard(pid)
            if not refs:
                self.profile_refs.pop(old, None)
                self.names.release_profile(old)
                for direction in (EGRESS, INGRESS):
                    self._chain(("inet", Names.profile_chain(old, direction)), None)

    def _stateful(self, port):
        return self.stateless.isdisjoint(port.security_groups)

    def _judged(self, port, n, present):
        """Put a filtered port's two marks into ``@filtered``, and into ``@stateless`` while
        a group of it is stateless (``present``), or take them out of both (a stateful port,
        most of them, has no ``@stateless`` entry: two elements a port)."""
        stateless = present and not self._stateful(port)
        for m in (src_mark(n), dst_mark(n)):
            (self._elem_add if present else self._elem_del)(FILTERED, m)
            (self._elem_add if stateless else self._elem_del)(STATELESS, m)

    def _port_elements(self, port, n):
        """(set key, element) pairs and (map key, key, value) triples a filtered port adds
        besides its dispatch entries."""
        dev = quote_ifname(port.device)
        elems = [(SECURED, dev), (MACS, f"{dev} . {port.mac}")]
        for fam in (4, 6):
            prefixes = {}  # mac -> prefixes: merged, an interval set refuses overlaps
            for ip, mac in port.addresses(fam):
                elems.append((MACS, f"{dev} . {mac}"))
                if is_prefix(ip):
                    prefixes.setdefault(mac, []).append(ip)
                else:
                    elems.append((("bridge", SPOOF_SETS[(fam, False)]), f"{dev} . {mac} . {ip}"))
            for mac, nets in sorted(prefixes.items()):
                for net in netaddr.cidr_merge(nets):
                    elems.append((("bridge", SPOOF_SETS[(fam, True)]), f"{dev} . {mac} . {net}"))
        maps = [(PORT_SRC, dev, src_mark(n)), (PORT_DST, dev, dst_mark(n))]
        return elems, maps

    def set_port(self, port):
        """Add or replace a port (a model.Port)."""
        if port.id in self.ports:
            self.remove_port(port.id, _keep_number=self.ports[port.id].device == port.device)
        self.ports[port.id] = port
        if not port.port_security:
            self.numbers.release(port.device)
            return
        n = self._allocate(port.device)
        self._set_refs(("p", port.id), port.rules)
        elems, maps = self._port_elements(port, n)
        for key, e in elems:
            if key not in self.rs.sets:  # first prefix address pair: its interval set
                self._declare(SetDef("bridge", key[1], spoof_type(key[1]), interval=True))
                self._antispoof()
            self._elem_add(key, e)
        for key, k, v in maps:
            self._map_set(key, k, v)
        for ip in host_addresses(port):
            self.addr_owners.setdefault(ip, set()).add(port.id)
        for pfx in prefix_pairs(port):
            self.pfx_owners.setdefault(pfx, set()).add(port.id)
        self._port_profile(port.id)
        self._judged(port, n, True)
        self._zone_port(port, n, True)

    def remove_port(self, pid, _keep_number=False):
        """Remove a port and everything it owns."""
        port = self.ports.pop(pid, None)
        if port is None or not port.port_security:
            return
        n = self.ids[port.device]
        self._zone_port(port, n, False)
        self._judged(port, n, False)
        elems, maps = self._port_elements(port, n)
        for key, e in elems:
            self._elem_del(key, e)
        for key, k, _ in maps:
            self._map_set(key, k, None)
        self._map_set(EGRESS_MAP, src_mark(n), None)
        self._map_set(INGRESS_MAP, dst_mark(n), None)
        self._port_profile(pid)
        for ip in host_addresses(port):
            self.addr_owners.get(ip, set()).discard(pid)
            self._dispatch_addr(ip)
        if prefix_pairs(port):
            for pfx in prefix_pairs(port):
                owners = self.pfx_owners.get(pfx, set())
                owners.discard(pid)
                if not owners:
                    self.pfx_owners.pop(pfx, None)
            self._dispatch_prefixes()
        self._set_refs(("p", pid), ())
        if not _keep_number:
            self.numbers.release(port.device, drop_reservation=True)
        for fam in (4, 6):  # the last prefix address pair gone: its interval set goes too
            key = ("bridge", SPOOF_SETS[(fam, True)])
            if key in self.rs.sets and not self.rs.elements[key]:
                self._undeclare(key)
                self._antispoof()

    # -- conntrack zones (one per network) -----------------------------------------------
    def _zone_port(self, port, n, present):
        """Add (``present``) or remove a filtered port's share of the zone maps: its marks,
        MACs and host addresses (its network keeps its zone number while it has ports)."""
        if present:
            if not port.network_id:
                if self.port_zone:  # an address shared with a zoned port: now ambiguous
                    for ip in host_addresses(port):
                        self._zone_addr(ip)
                return
            z = self.zones.assign(port.network_id, port.device, port.id)
            self.port_zone[port.id] = z
            self._map_set(ZONE_MARK, src_mark(n), zone_value(z))
            self._map_set(ZONE_MARK, dst_mark(n), zone_value(z))
        else:
            z = self.port_zone.pop(port.id, None)
            if z is None:
                if self.port_zone:
                    for ip in host_addresses(port):
                        self._zone_addr(ip, gone=port.id)
                return
            self._map_set(ZONE_MARK, src_mark(n), None)
            self._map_set(ZONE_MARK, dst_mark(n), None)
            self.zones.release(port.network_id, port.id)
        for mac in port_macs(port):
            owners = self.mac_owners.setdefault(mac, set())
            (owners.add if present else owners.discard)(port.id)
            self._zone_mac(mac)
        for ip in host_addresses(port):
            self._zone_addr(ip, gone=None if present else port.id)

    def _zone_mac(self, mac):
        """``@mac-dst``: a MAC of exactly one zoned port -> that port's receiver tag (a MAC of
        several: none, such frames stay in zone 0)."""
        owners = self.mac_owners.get(mac)
        if not owners:
            self.mac_owners.pop(mac, None)
        value = None
        if owners and len(owners) == 1:
            (pid,) = owners
            value = dst_mark(self.ids[self.ports[pid].device])
        self._map_set(MAC_DST, mac, value)

    def _zone_addr(self, ip, gone=None):
        """``@zone4``/``@zone6``: an address whose owners are all in one zone -> that zone
        (owners in several zones, or in zone 0: none)."""
        owners = [p for p in self.addr_owners.get(ip, ()) if p != gone]
        zones = {self.port_zone.get(p, 0) for p in owners}
        value = None
        if len(zones) == 1 and 0 not in zones:
            value = zone_value(zones.pop())
        self._map_set(ZONE6 if ":" in ip else ZONE4, ip, value)

    def _owner_keys(self, pids):
        """(ingress profile, port number) of each filtered port in ``pids`` (see
        :func:`fwsg.dispatch.receiver`)."""
        return {(self.profile_of[p], self.ids[self.ports[p].device])
                for p in pids if p in self.profile_of}

    def _dispatch_addr(self, ip):
        key = INGRESS6 if ":" in ip else INGRESS4
        owners = self.addr_owners.get(ip)
        if not owners:
            self.addr_owners.pop(ip, None)
        if owners and len(owners) == 1:   # one owner (the usual case): its own number
            (pid,) = owners
            n = self.ids[self.ports[pid].device] if pid in self.profile_of else None
        else:
            # an address of several ports: the lowest number of one shared profile, or the
            # number @ingress drops (see fwsg.dispatch)
            n = dispatch.receiver(self._owner_keys(owners or ()))
        self._map_set(key, ip, None if n is None else dst_mark(n))

    def _dispatch_prefixes(self):
        """Re-derive the interval maps giving address-pair prefixes their receiver's number
        (see fwsg.dispatch); declared only while some filtered port has a prefix pair."""
        changed = False
        for fam in (4, 6):
            owned = {pfx: self._owner_keys(pids) for pfx, pids in self.pfx_owners.items()
                     if (":" in pfx) == (fam == 6)}
            wanted = {k: dst_mark(n) for k, n in dispatch.prefix_map(owned).items()}
            key = ("inet", f"ingress{fam}n")
            if wanted and key not in self.rs.sets:
                self._declare(SetDef("inet", key[1], f"ipv{fam}_addr", "mark", interval=True))
                changed = True
            if key not in self.rs.sets:
                continue
            for k in [k for k in self.rs.elements[key] if k not in wanted]:
                self._map_set(key, k, None)
            for k, v in wanted.items():
                self._map_set(key, k, v)
            if not wanted:
                self._undeclare(key)
                changed = True
        if changed:
            for c in dispatch_chains({f for f in (4, 6) if ("inet", f"ingress{f}n") in self.rs.sets}):
                self._chain(c.key, c)

    def refresh_ports_of_group(self, sg):
        """Re-derive the ``@stateless`` entries of the ports whose statefulness depends on
        ``sg``."""
        for port in self.ports.values():
            if sg in port.security_groups and port.port_security:
                self._judged(port, self.ids[port.device], True)

    # -- whole models -------------------------------------------------------------------
    def load(self, model):
        """Make the desired state equal to ``model`` (a Model), touching only what differs."""
        model = Model.from_wire(model)
        devices = {p.device for p in model.ports.values()}
        self.numbers.keep_reserved(devices)
        return load_model(self, model)

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
            if pid in self.port_zone:
                ports[pid]["zone"] = self.port_zone[pid]
        groups = {sg: {"name": self.names.group(sg), "rules": len(r)} for sg, r in self.groups.items()}
        for sg, _ in self.refs:  # remote groups with members only: their sets carry names too
            groups.setdefault(sg, {"name": self.names.group(sg), "rules": 0})
        return {"ports": ports, "groups": groups, "port_ids": dict(self.ids)}


class ZoneNumbers:
    """Conntrack zone numbers of networks: 1..65535 (0 is the default zone of ports without a
    network), one per network while it has ports, never two networks on one number. A network
    keeps the number the kernel already gives one of its devices (``seed``: device -> zone,
    read back), else it gets the first free number from a hash of its id: stable across
    processes. No I/O here."""

    def __init__(self, seed=None):
        self.seed = dict(seed or {})
        self.seeded = set(self.seed.values())
        self.of = {}     # network id -> zone
        self.net = {}    # zone -> network id
        self.refs = {}   # network id -> port ids

    def assign(self, network, device, pid):
        z = self.of.get(network)
        if z is None:
            z = self.seed.get(device)
            if z is None or z in self.net or not 1 <= z <= 65535:
                z = 1 + int(naming.short_hash(network, 8), 16) % 65535
                for _ in range(65535):
                    if z not in self.net and z not in self.seeded:
                        break
                    z = z % 65535 + 1
                else:
                    z = next((x for x in range(1, 65536) if x not in self.net), None)
                    if z is None:
                        raise ValidationError(f"network_id {short_repr(network, 60)}",
                                              "more than 65535 networks: no conntrack zone free")
            self.of[network], self.net[z] = z, network
        self.refs.setdefault(network, set()).add(pid)
        return z

    def release(self, network, pid):
        """Drop ``pid`` from its network; True when the network's zone is free again."""
        refs = self.refs.get(network)
        if refs is None:
            return False
        refs.discard(pid)
        if refs:
            return False
        del self.refs[network]
        self.net.pop(self.of.pop(network), None)
        return True


def port_macs(port):
    """The MACs a port receives on (its own and its address pairs')."""
    return sorted({port.mac} | {mac for fam in (4, 6) for _ip, mac in port.addresses(fam)})


def prefix_pairs(port):
    """The address-pair prefixes a port may use (dispatched through the interval maps)."""
    return sorted({p.ip for p in port.allowed_address_pairs if is_prefix(p.ip)})


def _dedupe(rules):
    seen, out = set(), []
    for r in rules:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return tuple(out)


class PortIds(dict):
    """device -> port number, with ``zones``: device -> conntrack zone, as the kernel holds
    them."""

    zones = None


def port_ids(current):
    """device -> port number, as a Ruleset read back from the kernel holds them (the values of
    the ``port-src`` map), so a restarted agent keeps every port's number; ``.zones`` the
    devices' conntrack zones (``zone-mark``), so it keeps every network's zone too."""
    ids = PortIds()
    for key, val in current.elements.get(PORT_SRC, {}).items():
        try:
            ids[unquote_ifname(key)] = port_number(val)
        except ValueError:
            continue
    marks = current.elements.get(ZONE_MARK, {})
    ids.zones = {}
    for dev, n in ids.items():
        val = marks.get(src_mark(n))
        z = zone_of_value(val)
        if z:
            ids.zones[dev] = z
    return ids


def compile_model(model, port_ids=None):
    """Compile a Model into the desired Ruleset. ``port_ids`` (device -> number) keeps the
    numbers of ports already in the kernel stable. Pure: no I/O."""
    d = Desired(port_ids).load(Model.from_wire(model))
    d.rs.meta = d.meta()
    return d.rs
