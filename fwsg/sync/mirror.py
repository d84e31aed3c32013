"""The agent's copy of the store: this host's ports and the groups in their closure.
Decoding of values and the closure are here. Pure: no I/O.

A value that does not decode (not JSON, wrong shape, not an address) raises :class:`Malformed`
naming the key; the caller skips that key and keeps going.
"""

import json
from collections import Counter

from fwsg.addr import canonical_ip, canonical_member
from fwsg.errors import ValidationError


class Malformed(ValueError):
    """A value in the store that the agent cannot use; ``key`` names it."""

    def __init__(self, key, reason):
        self.key, self.reason = key, reason
        super().__init__(f"{key}: {reason}")


def _json(key, value):
    try:
        return json.loads(value)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise Malformed(key, f"not JSON ({str(e)[:60]})") from None


def decode_port(key, value):
    v = _json(key, value)
    if not isinstance(v, dict):
        raise Malformed(key, f"a port must be a JSON object, not {type(v).__name__}")
    sgs = v.get("security_groups", [])
    if not isinstance(sgs, list) or not all(isinstance(s, str) and s for s in sgs):
        raise Malformed(key, "security_groups must be a list of group ids")
    return v


def decode_rules(key, value):
    v = _json(key, value)
    if not isinstance(v, list) or not all(isinstance(r, dict) for r in v):
        raise Malformed(key, "rules must be a JSON list of objects")
    return v


def decode_member(key, value):
    """The canonical address of a member value ("ip", "net/len" or [ip, mac])."""
    if value[:1] == b'"' and value[-1:] == b'"' and b"\\" not in value and b"/" not in value:
        try:  # the common case, a bare host address as a JSON string: no JSON parser
            return canonical_ip(key, value[1:-1].decode("ascii"))
        except (ValidationError, UnicodeDecodeError):
            pass  # the careful path below names the problem
    v = _json(key, value)
    if isinstance(v, list) and v:
        v = v[0]
    try:
        return canonical_member(key, v)
    except ValidationError as e:
        raise Malformed(key, e.message) from None


def remote_groups(rules):
    """The remote_group_id values of a raw rule list (ignoring malformed entries)."""
    out = set()
    for r in rules or ():
        g = r.get("remote_group_id") if isinstance(r, dict) else None
        if isinstance(g, str) and g:
            out.add(g)
    return out


class Mirror:
    """Ports (id -> raw dict), rules (group -> raw list) and members (group -> key -> address,
    with a count per address so two keys naming one address are removed only with the last)."""

    def __init__(self):
        self.ports = {}
        self.rules = {}
        self.members = {}
        self.counts = {}

    def closure(self):
        """The groups this host needs: those its ports use, and those named as remote groups
        by their rules or by the ports' own rules."""
        direct = set()
        extra = set()
        for p in self.ports.values():
            direct.update(p.get("security_groups", ()))
            pr = p.get("security_group_rules")
            if isinstance(pr, list):
                extra |= remote_groups(pr)
        for sg in direct:
            extra |= remote_groups(self.rules.get(sg))
        return direct | extra

    def set_member(self, sg, key, address):
        """Record a member key (address None: deleted). Returns (added, removed) addresses whose
        count crossed zero."""
        keys = self.members.setdefault(sg, {})
        counts = self.counts.setdefault(sg, Counter())
        added = removed = None
        old = keys.pop(key, None)
        if old is not None:
            counts[old] -= 1
            if counts[old] <= 0:
                del counts[old]
                removed = old
        if address is not None:
            keys[key] = address
            counts[address] += 1
            if counts[address] == 1:
                added = address
        if added is not None and added == removed:
            return None, None
        return added, removed

    def drop_group(self, sg):
        self.rules.pop(sg, None)
        self.members.pop(sg, None)
        self.counts.pop(sg, None)

    def member_lists(self, sg):
        """{"IPv4": [...], "IPv6": [...]} of a group (Neutron's form)."""
        out = {"IPv4": [], "IPv6": []}
        for a in self.counts.get(sg, ()):
            out["IPv6" if ":" in a else "IPv4"].append(a)
        return out
