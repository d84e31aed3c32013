"""The node probe: samples every metric, keeps rolling windows, builds the stats document.

Reads only (``/proc``, ``/sys``, netlink, fwsg's own nft tables); never changes the host. A metric
that cannot be read is reported under ``unavailable`` with the reason; the probe never fails
because of one.
"""

from __future__ import annotations

import socket
import time

from fwsg.probe import readers
from fwsg.probe.readers import DEFAULT_CGROUP_PATTERNS, Unavailable
from fwsg.probe.window import Window

SCHEMA = "fwsg.probe/1"

UNITS = {"cpu": "cores", "memory": "bytes", "pressure": "%", "conntrack": "entries", "ruleset": "count"}


class Probe:
    """Samples one node. ``root`` is the filesystem root to read ``proc``/``sys`` under (tests
    use a fake tree; bridges and nft are then only read if given explicitly)."""

    def __init__(self, root="/", *, window=1200.0, interval=10.0, percentile=95.0,
                 cgroup_patterns=DEFAULT_CGROUP_PATTERNS, node=None, clock=time.monotonic,
                 wall=time.time, bridges=None, ruleset=None):
        self.root = root
        self.window = float(window)
        self.interval = float(interval)
        self.percentile = float(percentile)
        self.patterns = tuple(cgroup_patterns)
        self.clock = clock
        self.wall = wall
        local = root in ("/", "")
        self._bridges = bridges or (readers.bridges if local else None)
        self._ruleset = ruleset or (readers.ruleset_size if local else None)
        self.node = node or self._hostname()
        self._windows = {}
        self._guest_windows = {}
        self._guest_paths = {}
        self._prev_cpu = None
        self._prev_guest = {}
        self.unavailable = {}
        self.networks = []
        self.capacity = {}
        self.samples = 0

    def _hostname(self):
        try:
            return readers._read(self.root, "proc/sys/kernel/hostname").strip() or socket.gethostname()
        except Unavailable:
            return socket.gethostname()

    def _put(self, name, t, value):
        w = self._windows.get(name)
        if w is None:
            w = self._windows[name] = Window(self.window, self.interval)
        w.add(t, value)

    def _try(self, key, fn):
        try:
            value = fn()
        except Unavailable as e:
            self.unavailable[key] = str(e)
            return None
        self.unavailable.pop(key, None)
        return value

    def sample(self):
        """Take one sample of every metric; return {metric: value} of what this sample measured.

        CPU (node and guests) is a rate: it needs a previous sample, so the first call yields
        none (``unavailable`` says so).
        """
        t = self.clock()
        got = {}
        cpu = self._try("cpu", lambda: readers.cpu_times(self.root))
        if cpu is not None:
            busy, total, ncpu = cpu
            self.capacity["cores"] = ncpu
            if self._prev_cpu is not None and total > self._prev_cpu[1]:
                got["cpu"] = ncpu * (busy - self._prev_cpu[0]) / (total - self._prev_cpu[1])
            elif self._prev_cpu is None:
                self.unavailable["cpu"] = "needs two samples (rate)"
            self._prev_cpu = (busy, total)
        mem = self._try("memory", lambda: readers.meminfo(self.root))
        if mem is not None:
            self.capacity["memory"] = mem["total"]
            for k in ("used", "available", "total"):
                got[f"memory.{k}"] = mem[k]
        psi = self._try("pressure", lambda: readers.pressure(self.root))
        for k, v in (psi or {}).items():
            got[f"pressure.{k}.avg10"] = v
        ct = self._try("conntrack", lambda: readers.conntrack(self.root))
        if ct is not None:
            got["conntrack.count"], got["conntrack.max"] = ct
        if self._ruleset is None:
            self.unavailable["ruleset"] = "not read under a fake root"
        else:
            rs = self._try("ruleset", self._ruleset)
            for k in ("ports", "elements", "chains", "rules"):
                if rs is not None:
                    got[f"ruleset.{k}"] = rs[k]
        if self._bridges is None:
            self.unavailable["networks"] = "not read under a fake root"
        else:
            nets = self._try("networks", self._bridges)
            if nets is not None:
                self.networks = list(nets)
        for name, v in got.items():
            self._put(name, t, v)
        got["guests"] = self._sample_guests(t)
        self.samples += 1
        return got

    def _sample_guests(self, t):
        found = readers.guest_cgroups(self.root, self.patterns)
        if not found:
            self.unavailable["guests"] = "no guest cgroup matches " + ", ".join(self.patterns)
        else:
            self.unavailable.pop("guests", None)
        out = {}
        for name, (path, usage, mem) in found.items():
            self._guest_paths[name] = path
            wins = self._guest_windows.setdefault(name, {})
            vals = {}
            prev = self._prev_guest.get(name)
            if usage is not None:
                if prev is not None and t > prev[0] and usage >= prev[1]:
                    vals["cpu"] = (usage - prev[1]) / ((t - prev[0]) * 1e6)
                self._prev_guest[name] = (t, usage)
            if mem is not None:
                vals["memory"] = mem
            for k, v in vals.items():
                wins.setdefault(k, Window(self.window, self.interval)).add(t, v)
            out[name] = vals
        for gone in set(self._guest_windows) - set(found):  # guest stopped: forget it
            self._guest_windows.pop(gone, None)
            self._guest_paths.pop(gone, None)
            self._prev_guest.pop(gone, None)
        return out

    def prime(self, delay=0.5, sleep=time.sleep):
        """Take two samples ``delay`` seconds apart so rates (cpu) are real from the start."""
        self.sample()
        sleep(delay)
        return self.sample()

    def document(self):
        """The node's stats document (schema ``fwsg.probe/1``, see docs/placement.md)."""
        q = self.percentile
        metrics = {}
        for name in sorted(self._windows):
            summary = self._windows[name].summary(q)
            if summary is not None:
                metrics[name] = {"unit": UNITS[name.split(".")[0]], **summary}
        guests = {}
        for name in sorted(self._guest_windows):
            gm = {}
            for k, w in sorted(self._guest_windows[name].items()):
                s = w.summary(q)
                if s is not None:
                    gm[k] = {"unit": UNITS[k], **s}
            guests[name] = {"cgroup": self._guest_paths.get(name), "metrics": gm}
        unavailable = dict(sorted(self.unavailable.items()))
        if "cpu" in metrics:
            unavailable.pop("cpu", None)
        return {
            "schema": SCHEMA,
            "node": self.node,
            "time": round(self.wall(), 3),
            "window": {"seconds": self.window, "interval": self.interval, "samples": self.samples,
                       "percentile": q},
            "capacity": dict(self.capacity),
            "metrics": metrics,
            "networks": list(self.networks),
            "guests": guests,
            "unavailable": unavailable,
        }
