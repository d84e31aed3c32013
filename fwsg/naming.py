"""Derived object names that never collide.

A name is a short hash of the user's id (or of a chain's content), never user text. Two ids
whose short hashes are equal must not share objects (one group would silently get the other's
rules), so every name in use is registered with the id it stands for: an id whose name is
taken by another gets a longer hash (one hex digit more, up to ``HASH_WIDTH + EXTRA``), and an
id that still collides then is refused. Names of the ids in use are kept in the names record
(:mod:`fwsg.statefile`) and seeded back by a fresh process, so a longer name stays stable.
No I/O here.
"""

import hashlib
import re

from fwsg.errors import ValidationError, short_repr

HASH_WIDTH = 10   # hex digits of a name in the ordinary case
EXTRA = 10        # hex digits a colliding id may add


def short_hash(text, n=None):
    """A stable, name-safe hex digest of ``text`` (``n`` digits, default HASH_WIDTH)."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:HASH_WIDTH if n is None else n]


class NameRegistry:
    """``prefix`` + hash names for keys (ids or contents), injective while the registry lives.
    ``release(key)`` frees a name (the object is gone)."""

    def __init__(self, prefix):
        self.prefix = prefix
        self.by_key = {}
        self.by_name = {}
        self.changes = 0   # moves with every name bound or released (by_key changes only so)

    def name(self, key):
        """The name of ``key``: registered before, or the shortest free hash name."""
        n = self.by_key.get(key)
        if n is not None:
            return n
        for width in range(HASH_WIDTH, HASH_WIDTH + EXTRA + 1):
            n = self.prefix + short_hash(key, width)
            if n not in self.by_name:
                self._bind(key, n)
                return n
        raise ValidationError("", f"{short_repr(key, 60)}: its derived name collides with "
                              f"another id's even at {HASH_WIDTH + EXTRA} hex digits")

    def seed(self, names):
        """Adopt recorded names (key -> name) that are valid hash names of their key and free;
        others are ignored (the ordinary rule names them)."""
        pattern = re.compile(re.escape(self.prefix) + r"[0-9a-f]+")
        for key, n in names.items():
            if not isinstance(key, str) or not isinstance(n, str) or not pattern.fullmatch(n):
                continue
            width = len(n) - len(self.prefix)
            if not HASH_WIDTH <= width <= HASH_WIDTH + EXTRA or n != self.prefix + short_hash(key, width):
                continue
            if key not in self.by_key and n not in self.by_name:
                self._bind(key, n)

    def release(self, key):
        n = self.by_key.pop(key, None)
        if n is not None:
            self.by_name.pop(n, None)
            self.changes += 1

    def _bind(self, key, n):
        self.by_key[key] = n
        self.by_name[n] = key
        self.changes += 1


class GroupNames(NameRegistry):
    """Names of a group's objects: chains ``<name>-i``/``-e``, member sets ``<name>-m4``..."""

    def __init__(self):
        super().__init__("g")

    def group(self, sg):
        return self.name(sg)

    def member_set(self, sg, family, prefixes=False):
        return f"{self.name(sg)}-m{family}{'n' if prefixes else ''}"
