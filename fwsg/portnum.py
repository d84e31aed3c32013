"""Port numbers: the 16-bit tag each filtered port's frames carry in the packet mark.

A device keeps its number while it exists (numbers the kernel already uses are reserved for
their devices, so a fresh process changes no mark). A new device gets the smallest number that
is neither in use nor reserved for another device. Every operation is O(log n): the free
numbers below the high-water mark live in a heap (stale entries are dropped lazily). No I/O.
"""

import heapq

from fwsg.errors import ValidationError

MAX_PORT_ID = 0xFFFE  # the mark holds a port's number in 16 bits (see the nft layout); 0xFFFF
# is no port's: fwsg.dispatch.AMBIGUOUS


class PortNumbers:
    """device -> number. ``ids`` (a dict, read it only) holds the assigned numbers."""

    def __init__(self, reserved=None):
        self.ids = {}                          # device -> assigned number
        self.reserved = {}                     # device -> number the kernel already uses
        self._owner = {}                       # number -> device assigned it
        self._reserving = {}                   # number -> devices reserving it
        self._free = []                        # heap: free numbers below _next (maybe stale)
        self._next = 1                         # every number >= _next was never handed out
        for dev, n in (reserved or {}).items():
            self.reserve(dev, n)

    def reserve(self, device, n):
        """Keep ``n`` for ``device`` (the kernel's number for it)."""
        self.reserved[device] = n
        self._reserving.setdefault(n, set()).add(device)

    def keep_reserved(self, devices):
        """Drop the reservations of devices not in ``devices``."""
        for dev in [d for d in self.reserved if d not in devices]:
            self._unreserve(dev)

    def assign(self, device):
        """The number of ``device``, assigning one if it has none."""
        n = self.ids.get(device)
        if n is not None:
            return n
        n = self.reserved.get(device)
        if n is None or n in self._owner:
            n = self._smallest_free(device)
        self.ids[device] = n
        self._owner[n] = device
        return n

    def release(self, device, drop_reservation=False):
        """Free the number of ``device`` (and, with ``drop_reservation``, its reservation)."""
        n = self.ids.pop(device, None)
        if n is not None:
            del self._owner[n]
            heapq.heappush(self._free, n)
        if drop_reservation:
            self._unreserve(device)

    def _unreserve(self, device):
        n = self.reserved.pop(device, None)
        if n is None:
            return
        holders = self._reserving.get(n, set())
        holders.discard(device)
        if not holders:
            self._reserving.pop(n, None)
        heapq.heappush(self._free, n)

    def _taken(self, n, device):
        return n in self._owner or bool(self._reserving.get(n, set()) - {device})

    def _smallest_free(self, device):
        while self._free:
            n = heapq.heappop(self._free)
            if n < self._next and not self._taken(n, device):
                return n
        while self._taken(self._next, device):
            self._next += 1
        n = self._next
        if n > MAX_PORT_ID:
            raise ValidationError("devices", f"more than {MAX_PORT_ID} filtered ports")
        self._next += 1
        return n
