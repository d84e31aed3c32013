"""A group's member list of one family, packed: the host addresses as sorted, unique
big-endian records (4 or 16 bytes each) and the prefixes as sorted canonical text.

It reads as the tuple of canonical text (hosts in numeric order, then prefixes), rendered on
first use only; equality, hashing and differences work on the packed form, so comparing or
diffing two lists of 100,000 addresses is a memory compare, not 100,000 string compares.
No I/O here.
"""

from collections.abc import MutableSet, Sequence

from fwsg import fast


class Members(Sequence):
    """Immutable; ``packed`` and ``prefixes`` are the whole state."""

    __slots__ = ("family", "packed", "prefixes", "_text")

    def __init__(self, family, packed=b"", prefixes=()):
        self.family = family
        self.packed = packed
        self.prefixes = tuple(prefixes)
        self._text = None

    @classmethod
    def of(cls, family, members):
        """From canonical text (hosts and prefixes, any order, any collection)."""
        hosts = [m for m in members if "/" not in m]
        packed, _ = fast.pack_addrs(hosts, family)
        return cls(family, packed, sorted(m for m in members if "/" in m))

    @property
    def width(self):
        return 4 if self.family == 4 else 16

    def text(self):
        """The tuple of canonical text (cached)."""
        if self._text is None:
            self._text = tuple(fast.unpack_addrs(self.packed, self.family)) + self.prefixes
        return self._text

    def hosts_count(self):
        return len(self.packed) // self.width

    def delta(self, old):
        """(added, removed): canonical text of what this list has that ``old`` (Members of the
        same family) has not, and the reverse. O(n) over packed records."""
        add_p, rem_p = fast.diff_packed(self.packed, old.packed, self.width)
        added = fast.unpack_addrs(add_p, self.family)
        removed = fast.unpack_addrs(rem_p, self.family)
        mine, theirs = set(self.prefixes), set(old.prefixes)
        return added + sorted(mine - theirs), removed + sorted(theirs - mine)

    def __len__(self):
        return len(self.packed) // self.width + len(self.prefixes)

    def __getitem__(self, i):
        if type(i) is slice and self._text is None:  # a slice of the records: nothing rendered
            start, stop, step = i.indices(len(self))
            if step == 1:
                n, w = self.hosts_count(), self.width
                stop = max(stop, start)
                return Members(self.family, self.packed[min(start, n) * w:min(stop, n) * w],
                               self.prefixes[max(start - n, 0):max(stop - n, 0)])
        return self.text()[i]

    def __iter__(self):
        return iter(self.text())

    def __contains__(self, item):
        return item in self.text()

    def __eq__(self, other):
        if isinstance(other, Members):
            return (self.family == other.family and self.packed == other.packed
                    and self.prefixes == other.prefixes)
        if isinstance(other, (tuple, list)):
            return self.text() == tuple(other)
        return NotImplemented

    def __hash__(self):  # equal to the tuple it reads as, so hashed alike
        return hash(self.text())

    def __repr__(self):
        return f"Members({self.family}, {len(self)} addresses)"


_addr_in = fast.addr_in
_addr_change = fast.addr_change


class AddrSet(MutableSet):
    """A mutable set of canonical member texts of one family, kept packed: the host addresses
    as one sorted bytes string of fixed-width records (shared, never copied, with the Members
    or AddrSet it was made from) plus two small overlays of records added and removed since,
    and any other text (prefixes) as a plain set. Texts are produced only when iterated.

    Membership, ``add`` and ``discard`` cost O(log n) (a binary search in the packed records);
    the overlays are folded into the packed records once they outgrow an eighth of them.
    Comparing, diffing and copying two AddrSets work on the packed records. Host texts are
    compared as addresses (the model's members are canonical). No I/O here."""

    __slots__ = ("family", "width", "_base", "_plus", "_minus", "extra")
    __hash__ = None

    def __init__(self, family, packed=b"", extra=()):
        self.family = family
        self.width = 4 if family == 4 else 16
        self._base = packed          # sorted unique records
        self._plus = set()           # records not in _base
        self._minus = set()          # records of _base removed
        self.extra = set(extra)      # texts that are not host addresses of the family

    @classmethod
    def of(cls, family, members):
        """From canonical texts (any iterable), a Members or an AddrSet of ``family`` (those
        two share their packed records, nothing is rendered)."""
        if type(members) is AddrSet and members.family == family:
            return members.copy()
        if type(members) is Members and members.family == family:
            return cls(family, members.packed, members.prefixes)
        items = members if isinstance(members, list) else list(members)
        packed, rejects = fast.pack_addrs(items, family)
        return cls(family, packed, (r for _, r in rejects))

    def __contains__(self, item):
        found = _addr_in(item, self.family, self._base, self._plus, self._minus)
        return item in self.extra if found < 0 else found == 1

    def add(self, item):
        self.change(item, True)

    def discard(self, item):
        self.change(item, False)

    def change(self, item, adding):
        """Add (``adding``) or discard one member; True when the set changed (so a caller
        needs no membership test first). A host address is one compiled call (an overlay
        record taken back or recorded); the overlays are folded in once they outgrow an
        eighth of the records."""
        found = _addr_change(item, self.family, self._base, self._plus, self._minus, adding)
        if found < 0:
            if (item in self.extra) == adding:
                return False
            (self.extra.add if adding else self.extra.discard)(item)
            return True
        if found and len(self._plus) + len(self._minus) > 1024 \
                and len(self._plus) + len(self._minus) > 1024 + len(self._base) // (8 * self.width):
            self.packed()
        return found == 1

    def packed(self):
        """The host addresses as sorted packed records (the overlays folded in first)."""
        if self._minus:
            self._base, _ = fast.diff_packed(self._base, b"".join(sorted(self._minus)),
                                             self.width)
            self._minus = set()
        if self._plus:
            self._base = fast.merge_packed(self._base, b"".join(sorted(self._plus)), self.width)
            self._plus = set()
        return self._base

    def hosts(self):
        """An AddrSet of the host addresses only (shares the packed records)."""
        return AddrSet(self.family, self.packed())

    def copy(self):
        """An independent AddrSet with the same members (shares the packed records)."""
        return AddrSet(self.family, self.packed(), self.extra)

    def members(self):
        """The members as an immutable Members (shares the packed records)."""
        return Members(self.family, self.packed(), sorted(self.extra))

    def diff(self, old):
        """(added, removed) against ``old`` (an AddrSet of the same family): Members of what
        this set has that ``old`` has not, and the reverse, compared packed."""
        add_p, rem_p = fast.diff_packed(self.packed(), old.packed(), self.width)
        return (Members(self.family, add_p, sorted(self.extra - old.extra)),
                Members(self.family, rem_p, sorted(old.extra - self.extra)))

    def update(self, items):
        """Add every member of ``items`` (texts, a Members or an AddrSet; the last two are
        merged packed)."""
        packed, extra = self._bulk(items, True)
        if packed is None:
            return
        if not self._base and not self._plus:
            self._minus = set()
            self._base = packed
        else:
            self._base = fast.merge_packed(self.packed(), packed, self.width)
        self.extra.update(extra)

    def difference_update(self, items):
        """Remove every member of ``items`` (texts, a Members or an AddrSet)."""
        packed, extra = self._bulk(items, False)
        if packed is None:
            return
        self._base, _ = fast.diff_packed(self.packed(), packed, self.width)
        self.extra.difference_update(extra)

    def _bulk(self, items, add):
        """(packed records, extra texts) of ``items`` for a packed merge or difference; or
        (None, None) once ``items`` were applied one by one (a plan's few texts, or items
        that do not pack)."""
        if type(items) is tuple and len(items) <= 64:  # a plan's few texts, as fast as it gets
            for m in items:
                self.change(m, add)
            return None, None
        other = _packed_of(items, self.family)
        if other is None:
            for m in items:
                if add:
                    self.add(m)
                else:
                    self.discard(m)
            return None, None
        return other

    def __bool__(self):
        return bool(self.extra or self._plus or len(self._base) // self.width > len(self._minus))

    def __len__(self):
        return (len(self._base) // self.width - len(self._minus) + len(self._plus)
                + len(self.extra))

    def __iter__(self):
        yield from fast.unpack_addrs(self.packed(), self.family)
        yield from list(self.extra)

    def __eq__(self, other):
        if isinstance(other, AddrSet):
            return (self.family == other.family and len(self) == len(other)
                    and self.packed() == other.packed() and self.extra == other.extra)
        if isinstance(other, Members) and other.family == self.family:
            return self.packed() == other.packed and self.extra == set(other.prefixes)
        return MutableSet.__eq__(self, other)

    def __ior__(self, items):
        self.update(items)
        return self

    def __isub__(self, items):
        self.difference_update(items)
        return self

    @classmethod
    def _from_iterable(cls, it):  # the set operators' results: plain sets of text
        return set(it)

    def __repr__(self):
        return f"AddrSet({self.family}, {len(self)} members)"


def _packed_of(items, family):
    """(packed records, other texts) of a Members or AddrSet of ``family``, or of a big
    collection of texts (packed here); None for a few texts (taken one by one)."""
    kind = type(items)
    if kind is list or kind is tuple:  # the incremental calls' few texts: no ABC checks
        if len(items) <= 64:
            return None
    elif kind is AddrSet and items.family == family:
        return items.packed(), items.extra
    elif kind is Members and items.family == family:
        return items.packed, items.prefixes
    if kind in (list, tuple, set, frozenset) and len(items) > 64:
        packed, rejects = fast.pack_addrs(list(items), family)
        return packed, [r for _, r in rejects]
    return None


def new_elements(sdef):
    """An empty element container for ``sdef`` (a fwsg.ruleset.SetDef): a dict for a map, an
    AddrSet for a plain (non-interval) set of IPv4 or IPv6 addresses, else a set."""
    if sdef.is_map:
        return {}
    if not sdef.interval and sdef.key_type in ("ipv4_addr", "ipv6_addr"):
        return AddrSet(4 if sdef.key_type == "ipv4_addr" else 6)
    return set()
