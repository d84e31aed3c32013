"""The security-group model: groups, rules, ports and members, parsed from Neutron's grouped
wire format (``security_group_info_for_devices``) and validated.

Everything here is frozen and canonical: addresses and prefixes in one textual form, MACs
lower-case with colons, protocols as numbers. Parsing does no I/O. Bad input raises
:class:`fwsg.errors.ValidationError` naming the path and the value.
"""

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from types import MappingProxyType
from typing import NamedTuple, Optional, Tuple

import netaddr

from fwsg import fast
from fwsg.addr import (canonical_ip, canonical_member, canonical_network, eui64_link_local,
                       family_of, is_prefix)
from fwsg.errors import ValidationError, short_repr
from fwsg.members import Members

INGRESS, EGRESS = "ingress", "egress"
IPV4, IPV6 = "IPv4", "IPv6"
FAMILY = {IPV4: 4, IPV6: 6}

PROTOCOLS = {
    "icmp": 1, "igmp": 2, "ipip": 4, "tcp": 6, "egp": 8, "udp": 17, "ipv6-encap": 41,
    "ipv6-route": 43, "ipv6-frag": 44, "rsvp": 46, "gre": 47, "esp": 50, "ah": 51,
    "icmpv6": 58, "ipv6-icmp": 58, "ipv6-nonxt": 59, "ipv6-opts": 60, "dccp": 33,
    "ospf": 89, "pgm": 113, "vrrp": 112, "l2tp": 115, "sctp": 132, "udplite": 136,
}
PORT_PROTOCOLS = frozenset({6, 17, 33, 132, 136})  # tcp udp dccp sctp udplite
ICMP4, ICMP6 = 1, 58

# Linux accepts more, but these are what hypervisors use, and they are safe inside nft quotes.
_MAC_FAST = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")   # fullmatch only
_IFNAME = re.compile(r"[A-Za-z0-9_.@+=-]{1,15}")                  # fullmatch only
_INT_TEXT = re.compile(r"-?[0-9]{1,10}")                          # ASCII digits only


def _fail(path, msg):
    raise ValidationError(path, msg)


def validate_ifname(path, name):
    """Return ``name`` if it is a valid Linux interface name (<= 15 safe chars)."""
    if not isinstance(name, str) or not _IFNAME.fullmatch(name) or name in (".", ".."):
        _fail(path, f"{_short(name)} is not a valid interface name (1-15 of A-Z a-z 0-9 _ . @ + = -)")
    return name


def canonical_mac(path, value):
    """Return the MAC as ``aa:bb:cc:dd:ee:ff``; raise ValidationError otherwise."""
    if not isinstance(value, str) or not value.isascii() or not value.isprintable() \
            or value != value.strip():
        _fail(path, f"{_short(value)} is not a MAC address")
    if len(value) == 17 and _MAC_FAST.match(value):
        return value.lower()
    try:
        eui = netaddr.EUI(value, version=48)
    except (netaddr.AddrFormatError, TypeError, ValueError):
        _fail(path, f"{_short(value)} is not a MAC address")
    eui.dialect = netaddr.mac_unix_expanded
    return str(eui)


def _int(path, value, lo, hi):
    if isinstance(value, bool) or value is None:
        _fail(path, f"{_short(value)} is not an integer")
    if isinstance(value, str) and _INT_TEXT.fullmatch(value):
        value = int(value)
    if not isinstance(value, int):
        _fail(path, f"{_short(value)} is not an integer")
    if not lo <= value <= hi:
        _fail(path, f"{_short(value)} is out of range {lo}..{hi}")
    return value


@dataclass(frozen=True, order=True)
class Rule:
    """One allow rule, canonical. ``src``/``dst`` are prefixes matched on the packet's source and
    destination; ``remote_group`` matches the remote side (source on ingress, destination on
    egress) against that group's members."""

    direction: str
    ethertype: str
    protocol: Optional[int] = None
    port_min: Optional[int] = None
    port_max: Optional[int] = None
    sport_min: Optional[int] = None
    sport_max: Optional[int] = None
    icmp_type: Optional[int] = None
    icmp_code: Optional[int] = None
    src: Optional[str] = None
    dst: Optional[str] = None
    remote_group: Optional[str] = None
    stateful: bool = True

    @property
    def family(self):
        return FAMILY[self.ethertype]

    def __hash__(self):
        """The fields' hash, computed once per rule (a rule change compares whole rule lists
        as sets); never pickled with it (string hashes differ between processes)."""
        try:
            return self.__dict__["_hash"]
        except KeyError:
            h = hash((self.direction, self.ethertype, self.protocol, self.port_min,
                      self.port_max, self.sport_min, self.sport_max, self.icmp_type,
                      self.icmp_code, self.src, self.dst, self.remote_group, self.stateful))
            object.__setattr__(self, "_hash", h)
            return h

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}


_RULE_KEYS = ("direction", "ethertype", "protocol", "port_range_min", "port_range_max",
              "source_port_range_min", "source_port_range_max", "remote_ip_prefix",
              "source_ip_prefix", "dest_ip_prefix", "remote_group_id", "stateful")
_rule_cache = {}


def parse_rule(path, raw):
    """Parse one wire-format rule dict into a :class:`Rule` (the variants are listed in the README, "The wire format").
    Rules seen before (an agent gets a group's whole rule list on every change) come from a
    bounded cache; errors are never cached (they name ``path``)."""
    try:
        # with the types: True == 1 and 1.0 == 1, but only one of each is valid input
        if type(raw) is dict or isinstance(raw, Mapping):   # a dict: no ABC check
            vals = tuple(map(raw.get, _RULE_KEYS))
            key = (vals, tuple(map(type, vals)))
        else:
            key = None
        hash(key)
    except TypeError:
        key = None
    if key is not None and key in _rule_cache:
        return _rule_cache[key]
    rule = _parse_rule(path, raw)
    if key is not None:
        if len(_rule_cache) > 65536:
            _rule_cache.clear()
        _rule_cache[key] = rule
    return rule


_rules_cache = {}
_recent_rules = {}   # path -> [(key, rules)]: the last few lists parsed at that path, newest first
_RECENT = 4


def _rule_list(path, raw):
    """Parse a list of rule dicts into a tuple of :class:`Rule`; a list seen before (equal dict
    by dict, the values' types included: :func:`fwsg.fast.dicts_key`, a few microseconds where
    its ``repr`` cost tens) comes from a bounded cache; errors are never cached. The last few
    lists of each ``path`` (a group's rules going back and forth) are compared first, without
    building, hashing and looking up the new list's key (:func:`fwsg.fast.dicts_match`)."""
    recent = _recent_rules.get(path)
    if recent is not None:
        try:
            for key, rules in recent:
                if fast.dicts_match(raw, key):
                    return rules
        except Exception:  # noqa: BLE001 - a hostile value: the ordinary way decides
            pass
    key = fast.dicts_key(raw)
    if key is not None:
        try:
            rules = _rules_cache.get(key)
        except Exception:  # noqa: BLE001 - an unhashable or hostile value: no key, no cache
            key = rules = None
        if rules is not None:
            _remember(path, key, rules)
            return rules
    rules = tuple(parse_rule(f"{path}[{i}]", r) for i, r in enumerate(_list(path, raw)))
    if key is not None:
        if len(_rules_cache) > 4096:
            _rules_cache.clear()
        _rules_cache[key] = rules
        _remember(path, key, rules)
    return rules


def _remember(path, key, rules):
    """Put (``key``, ``rules``) first among ``path``'s recent lists (bounded)."""
    recent = _recent_rules.get(path)
    if recent is None:
        if len(_recent_rules) > 4096:
            _recent_rules.clear()
        recent = _recent_rules[path] = []
    recent.insert(0, (key, rules))
    del recent[_RECENT:]


def _parse_rule(path, raw):
    if type(raw) is not dict and not isinstance(raw, Mapping):
        _fail(path, f"{_short(raw)} is not an object")
    direction = raw.get("direction")
    if direction not in (INGRESS, EGRESS):
        _fail(f"{path}.direction", f"{_short(direction)} is not 'ingress' or 'egress'")
    ethertype = raw.get("ethertype", IPV4)
    if not isinstance(ethertype, str) or ethertype not in FAMILY:
        _fail(f"{path}.ethertype", f"{_short(ethertype)} is not 'IPv4' or 'IPv6'")
    fam = FAMILY[ethertype]

    proto = raw.get("protocol")
    if proto in (None, "", "any", "ANY"):
        proto = None
    elif isinstance(proto, str) and proto.lower() in PROTOCOLS:
        proto = PROTOCOLS[proto.lower()]
    elif isinstance(proto, (int, str)) and not isinstance(proto, bool):
        try:
            proto = _int(f"{path}.protocol", proto, 0, 255)
        except ValidationError:
            _fail(f"{path}.protocol", f"{_short(raw.get('protocol'))} is not a known protocol")
    else:
        _fail(f"{path}.protocol", f"{_short(proto)} is not a known protocol")
    if proto == ICMP4 and fam == 6:
        proto = ICMP6  # Neutron: 'icmp' on an IPv6 rule means ICMPv6
    if proto == ICMP6 and fam == 4:
        _fail(f"{path}.protocol", f"{_short(raw.get('protocol'))} (ICMPv6) does not fit ethertype IPv4")

    def opt_int(key, lo, hi):
        v = raw.get(key)
        return None if v is None else _int(f"{path}.{key}", v, lo, hi)

    pmin, pmax = opt_int("port_range_min", 0, 65535), opt_int("port_range_max", 0, 65535)
    smin, smax = opt_int("source_port_range_min", 0, 65535), opt_int("source_port_range_max", 0, 65535)
    icmp_type = icmp_code = None
    if proto in (ICMP4, ICMP6):
        # For ICMP, port_range_min/max are type/code (Neutron puts them in source_port_* too).
        t, c = (pmin, pmax) if pmin is not None or pmax is not None else (smin, smax)
        if c is not None and t is None:
            _fail(f"{path}.port_range_max", f"ICMP code {c} given without an ICMP type")
        if t is not None and t > 255:
            _fail(f"{path}.port_range_min", f"ICMP type {t} is out of range 0..255")
        if c is not None and c > 255:
            _fail(f"{path}.port_range_max", f"ICMP code {c} is out of range 0..255")
        icmp_type, icmp_code = t, c
        pmin = pmax = smin = smax = None
    else:
        for lo_key, hi_key, lo, hi in (("port_range_min", "port_range_max", pmin, pmax),
                                       ("source_port_range_min", "source_port_range_max", smin, smax)):
            if lo is None and hi is None:
                continue
            if proto not in PORT_PROTOCOLS:
                _fail(f"{path}.{lo_key}", f"ports need protocol tcp, udp, sctp, dccp or udplite, "
                      f"not {_short(raw.get('protocol'))}")
            if lo is None:
                _fail(f"{path}.{hi_key}", f"{hi} given without {lo_key}")
            if hi is not None and lo > hi:
                _fail(f"{path}.{lo_key}", f"port range min {lo} > max {hi}")
        if pmin is not None and pmax is None:
            pmax = pmin
        if smin is not None and smax is None:
            smax = smin

    def prefix(key):
        v = raw.get(key)
        if v is None:
            return None
        net = canonical_network(f"{path}.{key}", v)
        if family_of(net) != fam:
            _fail(f"{path}.{key}", f"{_short(v)} is not an {ethertype} prefix (ethertype is {ethertype})")
        return net

    remote = prefix("remote_ip_prefix")
    src, dst = prefix("source_ip_prefix"), prefix("dest_ip_prefix")
    if remote is not None:
        if direction == INGRESS:
            src = src or remote
        else:
            dst = dst or remote
    rgroup = raw.get("remote_group_id")
    if rgroup is not None:
        if not isinstance(rgroup, str) or not rgroup:
            _fail(f"{path}.remote_group_id", f"{_short(rgroup)} is not a group id")
        if (src if direction == INGRESS else dst) is not None:
            _fail(f"{path}.remote_group_id", "remote_group_id and a remote prefix are exclusive")
    stateful = raw.get("stateful", True)
    if not isinstance(stateful, bool):
        _fail(f"{path}.stateful", f"{_short(stateful)} is not true or false")

    def drop_any(net):  # 0.0.0.0/0 and ::/0 match everything of the family
        return None if net is not None and net.endswith("/0") else net

    return Rule(direction, ethertype, proto, pmin, pmax, smin, smax, icmp_type, icmp_code,
                drop_any(src), drop_any(dst), rgroup, stateful)


@dataclass(frozen=True)
class AddressPair:
    """An allowed address pair: a host address or prefix, and the MAC it may use."""

    ip: str
    mac: str


@dataclass(frozen=True)
class Port:
    """One VM port (a tap on the hypervisor)."""

    id: str
    device: str
    mac: str
    fixed_ips: Tuple[str, ...] = ()
    allowed_address_pairs: Tuple[AddressPair, ...] = ()
    security_groups: Tuple[str, ...] = ()
    port_security: bool = True
    rules: Tuple[Rule, ...] = ()
    network_id: Optional[str] = None

    def addresses(self, family):
        """Host addresses and prefixes (with their MAC) this port may send from, for 4 or 6:
        fixed IPs, allowed address pairs and, for IPv6, the EUI-64 link-local of each MAC. A
        tuple, derived once per Port (a Port never changes)."""
        memo = self.__dict__.get("_addresses")
        if memo is None:
            memo = (self._addresses(4), self._addresses(6))
            object.__setattr__(self, "_addresses", memo)   # derived, not a field
        return memo[family == 6]

    def _addresses(self, family):
        out = []
        for ip in self.fixed_ips:
            if (":" in ip) == (family == 6):
                out.append((ip, self.mac))
        for pair in self.allowed_address_pairs:
            if (":" in pair.ip) == (family == 6):
                out.append((pair.ip, pair.mac))
        if family == 6:
            for mac in sorted({self.mac} | {p.mac for p in self.allowed_address_pairs}):
                out.append((eui64_link_local(mac), mac))
        return tuple(out)


_port_cache = {}


def parse_port(path, port_id, raw, groups):
    """Parse one ``devices`` entry into a :class:`Port`. An entry seen before (an agent gets
    every port again in each full reply) comes from a bounded cache keyed by its value with
    the values' types (:func:`fwsg.fast.json_key`: True and 1 apart; a value of another kind
    has no key and is parsed); its groups are checked against ``groups`` each time; errors
    are never cached (they name ``path``)."""
    key = None
    if type(raw) is dict and type(port_id) is str and (flat := fast.json_key(raw)) is not None:
        key = (port_id, flat)
        port = _port_cache.get(key)
        if port is not None and all(sg in groups for sg in port.security_groups):
            return port
    port = _parse_port(path, port_id, raw, groups)
    if key is not None:
        if len(_port_cache) > 65536:
            _port_cache.clear()
        _port_cache[key] = port
    return port


def _parse_port(path, port_id, raw, groups):
    if type(raw) is not dict and not isinstance(raw, Mapping):
        _fail(path, f"{_short(raw)} is not an object")
    if "device" not in raw:
        _fail(f"{path}.device", "missing (the tap interface name)")
    device = validate_ifname(f"{path}.device", raw["device"])
    if "mac_address" not in raw:
        _fail(f"{path}.mac_address", "missing")
    mac = canonical_mac(f"{path}.mac_address", raw["mac_address"])
    if int(mac[:2], 16) & 1:
        _fail(f"{path}.mac_address", f"{_short(raw['mac_address'])} is a multicast address")
    fixed = []
    for i, ip in enumerate(_list(f"{path}.fixed_ips", raw.get("fixed_ips", []))):
        # Neutron's port form {"ip_address": ..., "subnet_id": ...} (a str: no ABC check)
        if type(ip) is not str and isinstance(ip, Mapping):
            ip = ip.get("ip_address")
        fixed.append(usable_host(f"{path}.fixed_ips[{i}]", canonical_ip(f"{path}.fixed_ips[{i}]", ip)))
    pairs = []
    for i, p in enumerate(_list(f"{path}.allowed_address_pairs", raw.get("allowed_address_pairs", []))):
        ppath = f"{path}.allowed_address_pairs[{i}]"
        if not isinstance(p, Mapping) or "ip_address" not in p:
            _fail(ppath, f"{_short(p)} needs an ip_address")
        ip = canonical_member(f"{ppath}.ip_address", p["ip_address"])
        if "/" not in ip:
            usable_host(f"{ppath}.ip_address", ip)
        pmac = canonical_mac(f"{ppath}.mac_address", p["mac_address"]) if p.get("mac_address") else mac
        pairs.append(AddressPair(ip, pmac))
    sgs = []
    for i, sg in enumerate(_list(f"{path}.security_groups", raw.get("security_groups", []))):
        if not isinstance(sg, str) or sg not in groups:
            _fail(f"{path}.security_groups[{i}]", f"{_short(sg)} is not in security_groups")
        if sg not in sgs:
            sgs.append(sg)
    psec = raw.get("port_security_enabled", True)
    if not isinstance(psec, bool):
        _fail(f"{path}.port_security_enabled", f"{_short(psec)} is not true or false")
    rules = tuple(parse_rule(f"{path}.security_group_rules[{i}]", r)
                  for i, r in enumerate(_list(f"{path}.security_group_rules",
                                              raw.get("security_group_rules", []))))
    net = raw.get("network_id")
    return Port(port_id, device, mac, tuple(fixed), tuple(pairs), tuple(sgs), psec, rules,
                net if isinstance(net, str) else None)


@dataclass(frozen=True)
class Model:
    """A validated model: groups (id -> rules), members (id -> {4: (...), 6: (...)}), ports."""

    groups: Mapping[str, Tuple[Rule, ...]] = field(default_factory=dict)
    members: Mapping[str, Mapping[int, Tuple[str, ...]]] = field(default_factory=dict)
    ports: Mapping[str, Port] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("groups", "members", "ports"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        self._check()

    def _check(self):
        stateful = {sg: self.group_stateful(sg) for sg, rules in self.groups.items() if rules}
        if len(set(stateful.values())) < 2 and \
                len({p.device for p in self.ports.values()}) == len(self.ports):
            return  # no two devices alike, no port can mix: nothing to name
        devices = {}
        for pid, port in self.ports.items():
            other = devices.setdefault(port.device, pid)
            if other != pid:
                _fail(f"devices.{pid}.device", f"{_short(port.device)} is also the device of port {_short(other)}")
            if port.port_security:
                # a group without rules says nothing about statefulness: it mixes with either
                kinds = {stateful[sg] for sg in port.security_groups if sg in stateful}
                if len(kinds) > 1:
                    _fail(f"devices.{pid}.security_groups",
                          "mixes stateful and stateless groups (Neutron forbids this)")

    def group_stateful(self, sg):
        """A group is stateless when its rules say ``stateful: false``; empty groups are stateful."""
        rules = self.groups.get(sg, ())
        return all(r.stateful for r in rules) if rules else True

    def port_stateful(self, port):
        return all(self.group_stateful(sg) for sg in port.security_groups)

    def members_of(self, sg, family):
        return self.members.get(sg, {}).get(family, ())

    @classmethod
    def from_wire(cls, doc):
        """Parse Neutron's grouped reply (a dict) into a Model; raise ValidationError if bad."""
        if isinstance(doc, Model):
            return doc
        if not isinstance(doc, Mapping):
            _fail("", f"the model must be a JSON object, not {type(doc).__name__}")
        if not any(k in doc for k in ("security_groups", "sg_member_ips", "devices")):
            _fail("", "the model has none of security_groups, sg_member_ips, devices (an empty "
                  "model is written {\"devices\": {}})")
        raw_groups = doc.get("security_groups", {})
        if not isinstance(raw_groups, Mapping):
            _fail("security_groups", "must be an object: group id -> list of rules")
        groups = {}
        for sg, rules in raw_groups.items():
            _group_id("security_groups", sg)
            groups[sg] = _rule_list(f"security_groups.{sg}", rules)
        members = {}
        raw_members = doc.get("sg_member_ips", {})
        if not isinstance(raw_members, Mapping):
            _fail("sg_member_ips", "must be an object: group id -> {IPv4: [...], IPv6: [...]}")
        for sg, fams in raw_members.items():
            _group_id("sg_member_ips", sg)
            members[sg] = parse_members(f"sg_member_ips.{sg}", fams)
        raw_devices = doc.get("devices", {})
        if not isinstance(raw_devices, Mapping):
            _fail("devices", "must be an object: port id -> port")
        ports = {}
        for pid, raw in raw_devices.items():
            _group_id("devices", pid)
            ports[pid] = parse_port(f"devices.{pid}", pid, raw, raw_groups)
        return cls(groups, members, ports)

    def to_wire(self):
        """The model in the wire format (canonical), such that from_wire(to_wire()) == self."""
        return {
            "security_groups": {sg: [rule_to_wire(r) for r in rules]
                                for sg, rules in self.groups.items()},
            "sg_member_ips": {sg: {f"IPv{f}": list(ips) for f, ips in fams.items()}
                              for sg, fams in self.members.items()},
            "devices": {pid: port_to_wire(p) for pid, p in self.ports.items()},
        }

    def replace(self, groups=None, members=None, ports=None):
        """A new Model with some parts replaced (the others shared)."""
        return Model(self.groups if groups is None else groups,
                     self.members if members is None else members,
                     self.ports if ports is None else ports)


def parse_members(path, fams):
    """Parse ``{"IPv4": [...], "IPv6": [...]}`` (bare IPs, prefixes or [ip, mac] pairs) into
    ``{4: Members, 6: Members}``: canonical, de-duplicated, packed (hosts in numeric order, then
    prefixes). Host addresses are parsed in bulk (C speed with the compiled module); prefixes,
    unusual spellings, unusual MACs and errors go through the careful path, whose errors name
    the item."""
    if not isinstance(fams, Mapping):
        _fail(path, f"{_short(fams)} is not an object with IPv4/IPv6 lists")
    out = {4: Members(4), 6: Members(6)}
    for key, ips in fams.items():
        if key not in FAMILY:
            continue  # unknown keys are ignored
        fam = FAMILY[key]
        packed, rejects = fast.pack_addrs(_list(f"{path}.{key}", ips), fam, True)
        hosts, prefixes = [], set()
        for i, m in rejects:
            if isinstance(m, (list, tuple)):
                if not m:
                    _fail(f"{path}.{key}[{i}]", "empty member entry")
                if len(m) > 1 and m[1] is not None:
                    canonical_mac(f"{path}.{key}[{i}][1]", m[1])
                m = m[0]
            if not isinstance(m, str):
                _fail(f"{path}.{key}[{i}]", f"{_short(m)} is not an IP address")
            ip = canonical_member(f"{path}.{key}[{i}]", m)
            if (":" in ip) != (fam == 6):
                _fail(f"{path}.{key}[{i}]", f"{_short(m)} is not an {key} address")
            (prefixes.add if "/" in ip else hosts.append)(ip)
        if hosts:  # unusual spellings of host addresses: merged in numeric order
            packed, _ = fast.pack_addrs(fast.unpack_addrs(packed, fam) + hosts, fam)
        out[fam] = Members(fam, packed, sorted(prefixes))
    return out


def member_order(members, fam):
    """Canonical members (a collection) as parse_members gives them (Members: hosts in
    numeric order, then prefixes)."""
    return Members.of(fam, members)


def rule_to_wire(r):
    d = {"direction": r.direction, "ethertype": r.ethertype}
    if r.protocol is not None:
        d["protocol"] = r.protocol
    if r.icmp_type is not None:
        d["port_range_min"] = r.icmp_type
        if r.icmp_code is not None:
            d["port_range_max"] = r.icmp_code
    if r.port_min is not None:
        d["port_range_min"], d["port_range_max"] = r.port_min, r.port_max
    if r.sport_min is not None:
        d["source_port_range_min"], d["source_port_range_max"] = r.sport_min, r.sport_max
    if r.src is not None:
        d["source_ip_prefix"] = r.src
    if r.dst is not None:
        d["dest_ip_prefix"] = r.dst
    if r.remote_group is not None:
        d["remote_group_id"] = r.remote_group
    if not r.stateful:
        d["stateful"] = False
    return d


def port_to_wire(p):
    return {
        "device": p.device, "mac_address": p.mac, "fixed_ips": list(p.fixed_ips),
        "allowed_address_pairs": [{"ip_address": a.ip, "mac_address": a.mac}
                                  for a in p.allowed_address_pairs],
        "security_groups": list(p.security_groups), "port_security_enabled": p.port_security,
        "security_group_rules": [rule_to_wire(r) for r in p.rules],
        **({"network_id": p.network_id} if p.network_id else {}),
    }


def usable_host(path, ip):
    """Return ``ip`` (a canonical host address) if a port may own it: not unspecified,
    loopback, multicast or the IPv4 broadcast address (classified as the ``ipaddress`` module
    does, from the address's bytes)."""
    if ":" in ip:
        raw = socket.inet_pton(socket.AF_INET6, ip)
        kind = ("the unspecified address" if raw == _V6_ZERO else "a loopback address"
                if raw == _V6_LOOPBACK else "a multicast address" if raw[0] == 0xff else None)
    else:
        raw = socket.inet_pton(socket.AF_INET, ip)
        kind = ("the unspecified address" if raw == _V4_ZERO else "a loopback address"
                if raw[0] == 127 else "a multicast address" if 224 <= raw[0] <= 239
                else "the broadcast address" if raw == _V4_BROADCAST else None)
    if kind is not None:
        _fail(path, f"{_short(ip)} is {kind}, not a port's address")
    return ip


_V4_ZERO, _V4_BROADCAST = bytes(4), b"\xff" * 4
_V6_ZERO, _V6_LOOPBACK = bytes(16), bytes(15) + b"\x01"


def _group_id(path, key):
    if not isinstance(key, str) or not key or len(key) > 255:
        _fail(path, f"{_short(key)} is not a valid id (1-255 characters)")


def _list(path, value):
    if not isinstance(value, (list, tuple)):
        _fail(path, f"{_short(value)} is not a list")
    return value


def _short(v):
    return short_repr(v, 60)


# -- pieces of a model, for incremental calls (an agent's updates between full syncs) --------

def check_id(path, value):
    """Return ``value`` if it is a valid id (a non-empty string of at most 255 characters)."""
    if not isinstance(value, str) or not value or len(value) > 255:
        _fail(path, f"{_short(value)} is not a valid id")
    return value


def parse_rules(sg, rules):
    """A group's rule list (wire format) -> a tuple of :class:`Rule`."""
    return _rule_list(f"security_groups.{sg}", rules)


def parse_device(raw, groups):
    """One port in the wire format with its ``id`` -> a :class:`Port` (its groups must be in
    ``groups``)."""
    if not isinstance(raw, Mapping):
        _fail("port", f"{_short(raw)} is not an object")
    pid = check_id("port.id", raw.get("id"))
    return parse_port(f"devices.{pid}", pid, raw, groups)


def members_by_family(path, ips):
    """A list of addresses of either family (bare IPs, prefixes or [ip, mac] pairs) ->
    ``{family: [canonical member, ...]}`` for the families present."""
    out = {4: [], 6: []}
    for i, ip in enumerate(_list(path, ips)):
        if isinstance(ip, (list, tuple)) and ip:
            ip = ip[0]
        m = canonical_member(f"{path}[{i}]", ip)
        out[6 if ":" in m else 4].append(m)
    return {f: v for f, v in out.items() if v}


def pack_member_list(sg, members):
    """A group's full member list in Neutron's form (``{"IPv4": [...], "IPv6": [...]}``) ->
    ``{family: (packed hosts, set of prefixes)}`` for the families given: host addresses
    sorted, de-duplicated and packed (C speed with the compiled hot path), prefixes canonical.
    Every family is validated before any is returned."""
    if not isinstance(members, Mapping):
        _fail(f"sg_member_ips.{sg}", f"{_short(members)} is not an object with IPv4/IPv6 lists")
    out = {}
    for key, fam in ((IPV4, 4), (IPV6, 6)):
        if key not in members:
            continue
        path = f"sg_member_ips.{sg}.{key}"
        packed, rejects = fast.pack_addrs(_list(path, members[key]), fam)
        prefixes, extra = set(), []
        for i, item in rejects:  # the slow path: prefixes, unusual forms, errors
            m = item[0] if isinstance(item, (list, tuple)) and item else item
            c = canonical_member(f"{path}[{i}]", m)
            if (":" in c) != (fam == 6):
                _fail(f"{path}[{i}]", f"{_short(m)} is not an {key} address")
            (prefixes.add if is_prefix(c) else extra.append)(c)
        if extra:
            packed, _ = fast.pack_addrs(fast.unpack_addrs(packed, fam) + extra, fam)
        out[fam] = (packed, prefixes)
    return out


def host_addresses(port):
    """The host addresses a port may use (fixed IPs, host address pairs, link-locals), sorted:
    traffic the hypervisor sends or routes to them is the port's ingress. A tuple, derived
    once per Port (a Port never changes)."""
    memo = port.__dict__.get("_hosts")
    if memo is None:
        memo = tuple(sorted({ip for fam in (4, 6) for ip, _ in port.addresses(fam)
                             if not is_prefix(ip)}))
        object.__setattr__(port, "_hosts", memo)   # derived, not a field
    return memo


def is_stateless(rules):
    """A group is stateless when it has rules and one of them says ``stateful: false``."""
    return bool(rules) and not all(map(_STATEFUL, rules))


_STATEFUL = attrgetter("stateful")


class RuleFacts(NamedTuple):
    """What a rule change asks of a tuple of Rules: ``rules`` as a frozenset, ``stateless``
    (:func:`is_stateless`) and ``refs``, the (remote group, family) pairs its rules match."""

    rules: frozenset
    stateless: bool
    refs: frozenset


_FACTS = {}   # id(rules) -> (rules, RuleFacts), see rule_facts


def rule_facts(rules):
    """The :class:`RuleFacts` of a tuple of Rules, computed once per tuple: a group's rule
    lists come back again and again (the parse cache gives the same tuple for an equal list),
    so a rule change compares cached sets instead of hashing every rule. No I/O here."""
    hit = _FACTS.get(id(rules))
    if hit is not None and hit[0] is rules:
        return hit[1]
    seq = rules if type(rules) is tuple else tuple(rules)
    facts = RuleFacts(frozenset(seq), is_stateless(seq),
                      frozenset((r.remote_group, r.family) for r in seq
                                if r.remote_group is not None))
    if seq is rules:   # a list may change under its id: only tuples are remembered
        if len(_FACTS) >= 256:
            _FACTS.clear()
        _FACTS[id(rules)] = (rules, facts)
    return facts
