"""Model -> the desired iptables/ipset state, kept current change by change. No I/O here.

Layout (per family, iptables and ip6tables; see docs/iptables.md):

- mangle ``fwsg-egress`` (from FORWARD and INPUT) -> ``fwsg-e-addr`` (one rule per port and
  (address, MAC) pair: ``-s ADDR -m physdev --physdev-in TAP -m mac --mac-source MAC`` -> the
  port's egress profile), then ``fwsg-e-port`` (the rest of a port's traffic -> ``fwsg-unspec``:
  DHCP discovery, DAD, else drop). No chain per port. The egress profile ``fwsg-p<hash>-e``
  jumps to the fixed chain (state, DHCP, RA), to each group's egress chain, holds the port's
  own rules, then drops.
- filter ``fwsg-ingress`` (from FORWARD and OUTPUT) -> ``fwsg-in-port`` (``--physdev-out TAP``
  -> the port's ingress profile), ``fwsg-in-from`` (frames from a port, its egress already
  checked: accepted, as Neutron does), ``fwsg-in-addr`` (routed or host-sent traffic to a
  port's address -> its ingress profile).
- raw ``fwsg-zone`` (from PREROUTING and OUTPUT): a port's network's conntrack zone.
- ebtables nat ``fwsg-arp`` (from PREROUTING): ``-i TAP`` -> the port's MAC and ARP checks.
- ipsets ``fwsg-<hash>-v4|v6`` (``hash:net``): a group's members, for remote-group rules.

Every mutator records in ``pending`` what it touched, so a commit costs O(change). Member
changes touch only set elements, never a chain.
"""

from fwsg.backends.base import MemberBook, load_model
from fwsg.backends.iptables import names, rules as R
from fwsg.backends.iptables.state import Chain, SetSpec, State, eb_chain_name, size_for
from fwsg.backends.nft.rules import subsumed_by_fixed  # same fixed rules, same semantics
from fwsg.errors import ValidationError
from fwsg.model import EGRESS, INGRESS, Model, host_addresses, is_stateless

FAMS = (4, 6)
# dispatch chains (rule order free): (table, name)
IN_PORT, IN_FROM, IN_ADDR = "fwsg-in-port", "fwsg-in-from", "fwsg-in-addr"
BAGS = (("mangle", names.E_ADDR), ("mangle", names.E_PORT), ("filter", IN_PORT),
        ("filter", IN_FROM), ("filter", IN_ADDR), ("raw", names.ZONE))
# Dispatch chains keyed by device are split in buckets by the first BUCKET_PREFIX characters
# of the device name (``-m physdev --physdev-in tap1+ -j fwsg-e-addr-<hash>``): a packet scans
# ~ports/buckets rules instead of one per port, and deleting a port's rule by its text
# (iptables-nft compares it with every rule of the chain) looks at one bucket only. A bucket
# is only a pre-filter: each rule in it still names its exact device.
BUCKETED = (names.E_ADDR, names.E_PORT, IN_PORT, IN_FROM, names.ARP)
BUCKET_PREFIX = 4


def bucket(dispatch, device):
    """(bucket chain, the jump rule into it) of ``device``'s rules in dispatch chain
    ``dispatch`` (written as ``iptables-save`` prints it)."""
    key = device[:BUCKET_PREFIX]
    chain = names.bucket_chain(dispatch, key)
    if dispatch == IN_PORT:  # physdev-out needs --physdev-is-bridged where OUTPUT reaches it
        return chain, f"-m physdev --physdev-out {key}+ --physdev-is-bridged -j {chain}"
    if dispatch == names.ARP:
        return chain, f"-i {key}+ -j {chain}"
    return chain, f"-m physdev --physdev-in {key}+ -j {chain}"


def bucket_rules(st, fam, table, dispatch):
    """Every rule of dispatch chain ``dispatch`` of a State, from all its buckets."""
    prefix = dispatch + "-"
    return [r for (f, t, n), rules in st.bags.items()
            if (f, t) == (fam, table) and n.startswith(prefix) for r in rules]


class Pending:
    """What changed since the last commit: chain keys, bag rule deltas, set keys, element
    deltas (net)."""

    def __init__(self):
        self.chains = set()
        self.bags = {}    # key -> (added, removed)
        self.sets = set()
        self.elems = {}   # set name -> (added, removed)

    def __bool__(self):
        return bool(self.chains or self.bags or self.sets or self.elems)

    @staticmethod
    def _delta(store, key, e, add):
        added, removed = store.setdefault(key, (set(), set()))
        (mine, other) = (added, removed) if add else (removed, added)
        if e in other:
            other.discard(e)
        else:
            mine.add(e)


class Desired(MemberBook):
    """The desired state for a model. Same mutators as the nft backend's Desired: ``load``,
    ``set_group``, ``set_members``, ``add_members``, ``remove_members``, ``set_port``,
    ``remove_port``; ``st`` is the State, ``pending`` what changed."""

    def __init__(self, zones=None):
        self.st = State()
        self.pending = Pending()
        self.groups = {}
        self.members = {}          # (sg, fam) -> set of canonical hosts and prefixes
        self.prefix_members = {}   # (sg, fam) -> the prefixes among them
        self.loaded_members = {}
        self.ports = {}
        self.refs = {}             # (sg, fam) -> owners ("g", sg) / ("p", pid)
        self.profile_of = {}       # pid -> profile digest
        self.profile_refs = {}     # profile digest -> pids
        self.arp_of = {}           # pid -> ebtables chain name
        self.addr_owners = {}      # ip -> pids
        self.zone_of = {}          # network id -> zone
        self.reserved_zones = dict(zones or {})  # device -> zone found in the kernel
        self.set_owner = {}        # set name -> (sg, fam): names must not collide
        self._names = None         # the names record, cached (see names)
        # the exact dispatch rules each port owns, to take them back
        self._dispatched, self._in_port_rule, self._zone_rule = {}, {}, {}
        self._egress_rules = {}    # (pid, fam) -> its rules in fwsg-e-addr
        self._arp_rule, self._addr_rule = {}, {}
        self._fixed()

    @property
    def rs(self):
        return self.st

    @property
    def names(self):
        """Group id -> derived name (what Firewall keeps in the names record)."""
        if self._names is None:   # asked for on every commit: rebuilt when groups come or go
            self._names = _GroupNames({sg: names.group_chain(sg, INGRESS)[:-2]
                                       for sg in self.groups})
        return self._names

    def clear_pending(self):
        self.pending = Pending()

    def counts(self):
        return self.st.counts()

    # -- primitives ----------------------------------------------------------------------
    def _chain(self, key, chain):
        if self.st.chains.get(key) != chain:
            if chain is None:
                self.st.chains.pop(key, None)
            else:
                self.st.chains[key] = chain
            self.pending.chains.add(key)

    def _bag(self, key, rule, present):
        bag = self.st.bags.setdefault(key, set())
        if (rule in bag) != present:
            (bag.add if present else bag.discard)(rule)
            Pending._delta(self.pending.bags, key, rule, present)

    def _dispatch(self, key, device, rule, present):
        """Add or remove a device's rule in dispatch chain ``key``: into its bucket, which is
        created (with the jump into it) for its first rule and removed with its last."""
        fam, table, dispatch = key
        if dispatch not in BUCKETED:
            self._bag(key, rule, present)
            return
        chain, jump = bucket(dispatch, device)
        bkey = (fam, table, chain)
        if present:
            self._bag(key, jump, True)
            self._bag(bkey, rule, True)
            return
        self._bag(bkey, rule, False)
        if not self.st.bags.get(bkey):
            self.st.bags.pop(bkey, None)
            self._bag(key, jump, False)

    def _elem(self, name, e, present):
        s = self.st.elements[name]
        if (e in s) != present:
            (s.add if present else s.discard)(e)
            Pending._delta(self.pending.elems, name, e, present)

    def _fixed(self):
        for fam in FAMS:
            for table, name in BAGS:
                self.st.bags[(fam, table, name)] = set()
            self._chain((fam, "mangle", names.UNSPEC), Chain(tuple(R.unspec_rules(fam)), "DROP"))
            self._chain((fam, "mangle", names.EGRESS),
                        Chain((f"-j {names.E_ADDR}", f"-j {names.E_PORT}")))
            self._chain((fam, "filter", names.INGRESS),
                        Chain((f"-j {IN_PORT}", f"-j {IN_FROM}", f"-j {IN_ADDR}")))
            for direction in (EGRESS, INGRESS):
                table = names.TABLE_OF[direction]
                for stateful in (True, False):
                    self._chain((fam, table, names.fixed_chain(direction, stateful)),
                                Chain(tuple(R.fixed_rules(direction, stateful, fam))))
        self.st.bags[("eb", "nat", names.ARP)] = set()
        self.st.hooks = set(names.HOOKS)

    # -- groups and members --------------------------------------------------------------
    def members_of(self, sg, fam):
        return self.members.get((sg, fam), set())

    def _member_sets(self, sg, fam):
        """The member set of (sg, fam) exists iff a rule references it, with its members."""
        name = names.member_set(sg, fam)
        owner = self.set_owner.get(name)
        if owner is not None and owner != (sg, fam):
            raise ValidationError(f"security_groups.{sg}",
                                  f"set name {name} collides with group {owner[0]!r}")
        if (sg, fam) not in self.refs:
            if name in self.st.sets:
                del self.st.sets[name]
                del self.st.elements[name]
                self.pending.sets.add(name)
                self.pending.elems.pop(name, None)
            self.set_owner.pop(name, None)
            return
        self.set_owner[name] = (sg, fam)
        members = {e for m in self.members.get((sg, fam), ()) for e in _entries(m)}
        if name not in self.st.sets:
            self.st.sets[name] = SetSpec(fam, size_for(len(members)))
            self.st.elements[name] = set(members)
            self.pending.sets.add(name)
            self.pending.elems.pop(name, None)
            return
        self._grow(name, len(members))
        have = self.st.elements[name]
        for e in [e for e in have if e not in members]:
            self._elem(name, e, False)
        for e in members:
            if e not in have:
                self._elem(name, e, True)

    def _grow(self, name, n):
        spec = self.st.sets[name]
        if not spec.fits(n):
            self.st.sets[name] = SetSpec(spec.family, size_for(n))
            self.pending.sets.add(name)

    def _group_chains(self, sg):
        rules = self.groups.get(sg)
        for fam in FAMS:
            for direction in (EGRESS, INGRESS):
                key = (fam, names.TABLE_OF[direction], names.group_chain(sg, direction))
                if rules is None:
                    self._chain(key, None)
                else:
                    body = _dedupe(R.render(r) for r in rules
                                   if r.direction == direction and r.family == fam)
                    self._chain(key, Chain(body))

    def set_group(self, sg, rules):
        """Set (or, with None, remove) a group's rules."""
        self.check_rules(f"security_groups.{sg}", rules or ())
        old = self.groups.get(sg)
        if (old is None) != (rules is None):
            self._names = None
        if rules is None:
            self.groups.pop(sg, None)
            self._set_refs(("g", sg), ())
        else:
            self.groups[sg] = tuple(rules)
            self._set_refs(("g", sg), rules)
        self._group_chains(sg)
        if is_stateless(old or ()) != is_stateless(rules or ()):
            for pid, port in self.ports.items():
                if sg in port.security_groups:
                    self._port_chains(pid)

    def set_members(self, sg, fam, members):
        self._book_set(sg, fam, members)
        if (sg, fam) in self.refs:
            self._member_sets(sg, fam)

    def add_members(self, sg, fam, members):
        cur, new, _pfx = self._book_add(sg, fam, members)
        if (sg, fam) in self.refs and new:
            name = names.member_set(sg, fam)
            self._grow(name, len(cur))
            for m in new:
                for e in _entries(m):
                    self._elem(name, e, True)

    def remove_members(self, sg, fam, members):
        booked = self._book_remove(sg, fam, members)
        if booked is None:
            return
        cur, gone, _pfx = booked
        if (sg, fam) in self.refs:
            name = names.member_set(sg, fam)
            for m in gone:
                for e in _entries(m):
                    if not _still_needed(e, cur):
                        self._elem(name, e, False)

    # -- ports ---------------------------------------------------------------------------
    def _stateful(self, port):
        return not any(is_stateless(self.groups.get(sg, ())) for sg in port.security_groups)

    def _profile_chains(self, port):
        """{(fam, direction): Chain} of a filtered port's profile."""
        stateful = self._stateful(port)
        out = {}
        for fam in FAMS:
            for direction in (EGRESS, INGRESS):
                body = [f"-j {names.fixed_chain(direction, stateful)}"]
                body += [f"-j {names.group_chain(sg, direction)}" for sg in port.security_groups]
                body += [R.render(r) for r in port.rules if r.direction == direction
                         and r.family == fam and not subsumed_by_fixed(r)]
                out[(fam, direction)] = Chain(_dedupe(body), "DROP")
        return out

    def _port_chains(self, pid):
        """(Re)derive the port's profile and ARP chains and its dispatch rules."""
        port = self.ports.get(pid)
        old_profile = self.profile_of.pop(pid, None)
        self._port_dispatch(pid, False)
        new_profile = None
        if port is not None and port.port_security:
            chains = self._profile_chains(port)
            new_profile = names.digest("\0".join(
                f"{k}{c.digest}" for k, c in sorted(chains.items())))
            if new_profile not in self.profile_refs:
                self.profile_refs[new_profile] = set()
                for (fam, direction), chain in chains.items():
                    self._chain((fam, names.TABLE_OF[direction],
                                 names.profile_chain(new_profile, direction)), chain)
            self.profile_refs[new_profile].add(pid)
            self.profile_of[pid] = new_profile
            arp = Chain(tuple(R.arp_rules(port)), "DROP")
            arp_name = eb_chain_name(pid, arp)
            old_arp = self.arp_of.get(pid)
            if old_arp != arp_name:
                if old_arp is not None:
                    self._chain(("eb", "nat", old_arp), None)
                self._chain(("eb", "nat", arp_name), arp)
                self.arp_of[pid] = arp_name
            self._port_dispatch(pid, True)
        else:
            arp_name = self.arp_of.pop(pid, None)
            if arp_name is not None:
                self._chain(("eb", "nat", arp_name), None)
        if old_profile is not None and old_profile != new_profile:
            refs = self.profile_refs.get(old_profile, set())
            refs.discard(pid)
            if not refs:
                self.profile_refs.pop(old_profile, None)
                for fam in FAMS:
                    for direction in (EGRESS, INGRESS):
                        self._chain((fam, names.TABLE_OF[direction],
                                     names.profile_chain(old_profile, direction)), None)

    def _port_dispatch(self, pid, present):
        """Add or remove the port's rules in the dispatch chains."""
        port = self.ports.get(pid) if present else self._dispatched.pop(pid, None)
        if port is None:
            return
        if present:
            self._dispatched[pid] = port
        dev = port.device
        profile = self.profile_of.get(pid) if present else None
        zone = self.zone_of.get(port.network_id) if port.network_id else None
        for fam in FAMS:
            pin = names.profile_chain(profile, INGRESS) if present else None
            if present:
                self._egress_rules[(pid, fam)] = R.egress_rules(
                    port, fam, dev, names.profile_chain(profile, EGRESS))
            rules = [((fam, "mangle", names.E_ADDR), r)
                     for r in (self._egress_rules[(pid, fam)] if present
                               else self._egress_rules.pop((pid, fam), ()))]
            rules += [((fam, "mangle", names.E_PORT),
                       f"-m physdev --physdev-in {dev} -j {names.UNSPEC}"),
                      ((fam, "filter", IN_FROM),
                       f"-m physdev --physdev-in {dev} --physdev-is-bridged -j ACCEPT")]
            if present:
                rules.append(((fam, "filter", IN_PORT),
                              f"-m physdev --physdev-out {dev} --physdev-is-bridged -j {pin}"))
            else:
                rules.append(((fam, "filter", IN_PORT), self._in_port_rule.pop((pid, fam))))
            if zone is not None or (not present and (pid, fam) in self._zone_rule):
                rules.append(((fam, "raw", names.ZONE),
                              f"-m physdev --physdev-in {dev} -j CT --zone {zone}" if present
                              else self._zone_rule.pop((pid, fam))))
            for key, rule in rules:
                self._dispatch(key, dev, rule, present)
                if present and key[2] == IN_PORT:
                    self._in_port_rule[(pid, fam)] = rule
                if present and key[2] == names.ZONE:
                    self._zone_rule[(pid, fam)] = rule
        if present:
            self._arp_rule[pid] = f"-i {dev} -j {self.arp_of[pid]}"
            self._dispatch(("eb", "nat", names.ARP), dev, self._arp_rule[pid], True)
        else:
            rule = self._arp_rule.pop(pid, None)
            if rule is not None:
                self._dispatch(("eb", "nat", names.ARP), dev, rule, False)
        for ip in host_addresses(port):
            owners = self.addr_owners.setdefault(ip, set())
            (owners.add if present else owners.discard)(pid)
            self._dispatch_addr(ip)

    def _dispatch_addr(self, ip):
        """Traffic routed or sent by the host to a port's address takes the port's ingress
        profile (and its network's conntrack zone); an address two ports claim selects none."""
        fam = 6 if ":" in ip else 4
        host = f"{ip}/{32 if fam == 4 else 128}"
        owners = [p for p in self.addr_owners.get(ip, ()) if p in self.profile_of]
        if not self.addr_owners.get(ip):
            self.addr_owners.pop(ip, None)
        old = self._addr_rule.pop(ip, None)
        new = None
        if len(owners) == 1:
            port = self.ports[owners[0]]
            prof = names.profile_chain(self.profile_of[owners[0]], INGRESS)
            zone = self.zone_of.get(port.network_id) if port.network_id else None
            new = (f"-d {host} -j {prof}",
                   f"-d {host} -j CT --zone {zone}" if zone is not None else None)
        if old == new:
            if new is not None:
                self._addr_rule[ip] = new
            return
        if old is not None:
            self._bag((fam, "filter", IN_ADDR), old[0], False)
            if old[1]:
                self._bag((fam, "raw", names.ZONE), old[1], False)
        if new is not None:
            self._addr_rule[ip] = new
            self._bag((fam, "filter", IN_ADDR), new[0], True)
            if new[1]:
                self._bag((fam, "raw", names.ZONE), new[1], True)

    def _zone(self, port):
        """The conntrack zone of the port's network (Neutron: one zone per network), kept
        stable across restarts from what the kernel holds."""
        net = port.network_id
        if net is None:
            return
        if net in self.zone_of:
            return
        used = set(self.zone_of.values())
        z = self.reserved_zones.get(port.device)
        if z is None or z in used:
            z = 1
            reserved = set(self.reserved_zones.values())
            while z in used or z in reserved:
                z += 1
        self.zone_of[net] = z

    def set_port(self, port):
        """Add or replace a port (a model.Port)."""
        self.check_port(port)
        if port.id in self.ports:
            self.remove_port(port.id)
        self.ports[port.id] = port
        if not port.port_security:
            return
        self._zone(port)
        self._set_refs(("p", port.id), port.rules)
        self._port_chains(port.id)

    def remove_port(self, pid):
        port = self.ports.pop(pid, None)
        if port is None:
            return
        self._port_chains(pid)
        self._set_refs(("p", pid), ())
        if port.network_id and not any(p.network_id == port.network_id
                                       for p in self.ports.values()):
            self.zone_of.pop(port.network_id, None)

    # -- what iptables cannot say ------------------------------------------------------
    @staticmethod
    def check_rules(path, rules):
        for i, r in enumerate(rules):
            R.check(f"{path}[{i}]", r)

    @classmethod
    def check_port(cls, port):
        """ValidationError for a port the iptables backend cannot filter exactly: '+' in a
        device name is a wildcard to physdev and ebtables (it would match other taps)."""
        if "+" in port.device:
            raise ValidationError(f"devices.{port.id}.device", f"{port.device!r}: '+' is a "
                                  "wildcard to iptables' physdev match and ebtables")
        cls.check_rules(f"devices.{port.id}.security_group_rules", port.rules)

    @classmethod
    def check_model(cls, model):
        for sg, rules in model.groups.items():
            cls.check_rules(f"security_groups.{sg}", rules)
        for port in model.ports.values():
            cls.check_port(port)

    # -- whole models --------------------------------------------------------------------
    def load(self, model):
        """Make the desired state equal to ``model``, touching only what differs. A model the
        backend cannot express raises ValidationError before anything changes."""
        model = Model.from_wire(model)
        self.check_model(model)
        return load_model(self, model)

    def meta(self):
        ports = {pid: {"device": p.device, "filtered": p.port_security,
                       "profile": self.profile_of.get(pid), "groups": list(p.security_groups)}
                 for pid, p in self.ports.items()}
        groups = {sg: {"name": names.group_chain(sg, INGRESS)[:-2],
                       "chain": names.group_chain(sg, INGRESS)[:-2], "rules": len(r)}
                  for sg, r in self.groups.items()}
        return {"ports": ports, "groups": groups}


class _GroupNames:
    """The shape Firewall reads the names record from (``names.groups.by_key``)."""

    def __init__(self, by_key):
        self.by_key = by_key
        self.groups = self


_HALVES = {"0.0.0.0/0": ("0.0.0.0/1", "128.0.0.0/1"), "::/0": ("::/1", "8000::/1")}


def _entries(member):
    """The ipset entries of a member: hash:net cannot hold a /0, its two halves stand in."""
    return _HALVES.get(member, (member,))


def _still_needed(entry, remaining):
    return entry in remaining or any(entry in _HALVES[z] for z in _HALVES if z in remaining)


def _dedupe(items):
    seen, out = set(), []
    for r in items:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return tuple(out)
