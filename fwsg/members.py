"""A group's member list of one family, packed: the host addresses as sorted, unique
big-endian records (4 or 16 bytes each) and the prefixes as sorted canonical text.

It reads as the tuple of canonical text (hosts in numeric order, then prefixes), rendered on
first use only; equality, hashing and differences work on the packed form, so comparing or
diffing two lists of 100,000 addresses is a memory compare, not 100,000 string compares.
No I/O here.
"""

from collections.abc import Sequence

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
