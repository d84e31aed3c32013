"""A fingerprint of a whole Ruleset (declarations, chain digests, every element), computed at
C speed for address sets (packed and radix-sorted by the hot path). Two Rulesets with the
same fingerprint hold the same objects. No I/O here.
"""

import hashlib

from fwsg import fast
from fwsg.members import AddrSet

_ADDR = {"ipv4_addr": 4, "ipv6_addr": 6}


def fingerprint(rs):
    """Hex digest of ``rs`` (a Ruleset): O(elements), address sets without sorting text."""
    h = hashlib.sha256()
    h.update(repr(sorted(rs.tables)).encode())
    for key in sorted(rs.chains):
        c = rs.chains[key]
        h.update(f"\0c{key}{c.hook}{c.digest}".encode())
    for key in sorted(rs.sets):
        sd = rs.sets[key]
        h.update(f"\0s{key}{sd}".encode())
        elems = rs.elements.get(key)
        if not elems:
            elems = {} if sd.is_map else ()
        fam = _ADDR.get(sd.key_type)
        if fam and not sd.is_map and not sd.interval:
            if isinstance(elems, AddrSet) and elems.family == fam:
                packed, others = elems.packed(), elems.extra
            else:
                packed, rejects = fast.pack_addrs(list(elems), fam)
                others = [r for _, r in rejects]
            h.update(packed)
            h.update(repr(sorted(str(r) for r in others)).encode())
        elif sd.is_map:
            h.update(repr(sorted(elems.items())).encode())
        else:
            h.update(repr(sorted(elems)).encode())
    return h.hexdigest()


def clone(rs):
    """A copy of ``rs`` whose element containers may be changed independently."""
    from fwsg.ruleset import Ruleset

    out = Ruleset(tables=rs.tables)
    out.sets = dict(rs.sets)
    out.chains = dict(rs.chains)
    out.elements = {k: (dict(v) if isinstance(v, dict) else v.copy())
                    for k, v in rs.elements.items()}
    out.meta = {}
    return out
