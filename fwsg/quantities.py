"""Numeric helpers shared by the resource probe and the placement planner: percentiles of
samples and byte counts for humans.

Pure: no I/O here. Percentiles are computed on numbers, never on their text (the 2021 Proxmox
patch sorted strings, so 9 ranked above 100).
"""

from __future__ import annotations

import math


def percentile(values, q):
    """The ``q``-th percentile (0..100) of ``values`` by linear interpolation between closest ranks.

    Method: sort numerically; rank h = (n - 1) * q / 100; result = v[floor(h)] + (h - floor(h)) *
    (v[floor(h) + 1] - v[floor(h)]) (Hyndman & Fan type 7, numpy's default). Raises ValueError on
    an empty input, a non-number or q outside 0..100.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    vals = sorted(float(v) for v in values)  # float(): strings of digits would sort wrongly
    if not vals:
        raise ValueError("percentile of no values")
    h = (len(vals) - 1) * q / 100.0
    lo = math.floor(h)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (h - lo) * (vals[hi] - vals[lo])


def fmt_bytes(n):
    """A byte count for humans: ``3.1 GiB``, ``512 MiB``, ``0 B``."""
    n = float(n)
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            v = n / scale
            return f"{v:.1f} {unit}".replace(".0 ", " ")
    return f"{n:.0f} B"
