"""Rolling windows of samples and their statistics (latest, mean, percentile).

Pure: no I/O here. The percentile itself is :func:`fwsg.quantities.percentile`.
"""

from __future__ import annotations

from collections import deque

from fwsg.quantities import percentile


class Window:
    """The samples of one metric over the last ``seconds`` (at most ``seconds / interval`` + 1).

    Invariant: timestamps are kept in arrival order; samples older than ``seconds`` before the
    newest are dropped on every :meth:`add`.
    """

    def __init__(self, seconds=1200.0, interval=10.0):
        self.seconds = float(seconds)
        self._samples = deque(maxlen=max(int(seconds / interval) + 1, 1))

    def add(self, t, value):
        """Record ``value`` (a number) taken at time ``t`` (seconds)."""
        self._samples.append((t, float(value)))
        while self._samples and self._samples[0][0] < t - self.seconds:
            self._samples.popleft()

    def __len__(self):
        return len(self._samples)

    def summary(self, q=95):
        """``{"latest", "mean", "p<q>"}`` of the samples in the window; None when empty."""
        if not self._samples:
            return None
        vals = [v for _, v in self._samples]
        key = f"p{q:g}"
        return {"latest": _round(vals[-1]), "mean": _round(sum(vals) / len(vals)),
                key: _round(percentile(vals, q))}


def _round(v):
    r = round(v, 4)
    return int(r) if r == int(r) and abs(r) < 2**53 else r
