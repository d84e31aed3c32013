"""The library entry point: ``Firewall(netns, mode, backend)`` with ``plan``, ``apply``, ``flush``.

Desired state is computed first (compile), then diffed against the current state (the last
committed one, or the kernel's when unknown) and committed as one atomic transaction; conntrack
entries that lost their rule are removed afterwards.
"""

import os
import time
from dataclasses import dataclass, field

from fwsg.backends import make_backend
from fwsg.compile import compile_model
from fwsg.errors import EnvironmentProblem, KernelError, UserError
from fwsg.model import Model
from fwsg.netns import check, entered
from fwsg.plan import diff

MODES = ("bridge",)
_BR_SYSCTLS = ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables")


@dataclass
class ApplyResult:
    """What one apply did: the plan's summary, sizes, timings (ms) and notices."""

    changed: bool
    summary: dict
    counts: dict
    batch_bytes: int
    timings_ms: dict
    conntrack_killed: int = 0
    notices: list = field(default_factory=list)

    def as_dict(self):
        return {"changed": self.changed, "summary": self.summary, "counts": self.counts,
                "batch_bytes": self.batch_bytes, "timings_ms": self.timings_ms,
                "conntrack_killed": self.conntrack_killed, "notices": self.notices}


class Firewall:
    """Keeps fwsg's tables in one namespace equal to a model.

    ``netns``: a named namespace (``ip netns``) or None for the caller's. ``mode``: ``bridge``
    (VM taps on a Linux bridge). ``backend``: ``nft`` or ``fake``. ``conntrack``: remove entries
    that lost their rule after each apply.
    """

    def __init__(self, netns=None, mode="bridge", backend="nft", conntrack=None):
        if mode not in MODES:
            raise UserError(f"--mode: {mode!r} is not one of {', '.join(MODES)}")
        self.netns = check(netns)
        self.mode = mode
        self.backend = make_backend(backend, self.netns)
        self.conntrack = (backend == "nft") if conntrack is None else conntrack
        self._current = None   # Ruleset last committed (None: read from the kernel first)
        self.model = None      # Model last committed
        self.notices = []
        self._sysctl_checked = False

    # -- state ------------------------------------------------------------------------------
    def current(self):
        """The current state: the last committed one, or the kernel's."""
        if self._current is None:
            self._current = self.backend.read()
        return self._current

    def _port_ids(self, current):
        ids = {}
        for key, val in current.elements.get(("bridge", "port-src"), {}).items():
            try:
                ids[key.strip('"')] = int(val, 16) >> 16
            except ValueError:
                continue
        return ids

    def desired(self, model):
        """The compiled Ruleset for ``model``, keeping the port numbers already in use."""
        return compile_model(model, self._port_ids(self.current()))

    def plan(self, model):
        """The Plan that ``apply(model)`` would commit (``str(plan)`` is the nft batch)."""
        model = Model.from_wire(model)
        return diff(self.desired(model), self.current())

    # -- changes ----------------------------------------------------------------------------
    def apply(self, model):
        """Make the kernel equal to ``model`` in one atomic transaction; an ApplyResult.

        On refusal (KernelError) the kernel is unchanged and so is this object's state."""
        t0 = time.perf_counter()
        model = Model.from_wire(model)
        t1 = time.perf_counter()
        current = self.current()
        desired = compile_model(model, self._port_ids(current))
        t2 = time.perf_counter()
        plan = diff(desired, current)
        t3 = time.perf_counter()
        notices = self._ensure_sysctls() if self.mode == "bridge" else []
        try:
            self.backend.commit(plan)
        except KernelError:
            self._current = None  # re-read: the kernel is the truth after a refusal
            raise
        t4 = time.perf_counter()
        gone = _gone_addresses(current, desired)
        self._current = desired
        self.model = model
        killed = 0
        s = plan.summary
        if self.conntrack and plan and (s["elements_removed"] or s["chains_changed"]
                                        or s["chains_removed"]):
            from fwsg.conntrack import sweep

            killed = sweep(self.netns, model, gone)
        t5 = time.perf_counter()
        return ApplyResult(
            changed=bool(plan), summary=plan.summary, counts=desired.counts(),
            batch_bytes=plan.size,
            timings_ms={"parse": _ms(t0, t1), "compile": _ms(t1, t2), "diff": _ms(t2, t3),
                        "commit": _ms(t3, t4), "conntrack": _ms(t4, t5), "total": _ms(t0, t5)},
            conntrack_killed=killed, notices=notices)

    def flush(self):
        """Remove fwsg's tables (and nothing else); the families removed."""
        removed = self.backend.flush()
        self._current = None
        self.model = None
        return removed

    def _ensure_sysctls(self):
        """Bridged frames must reach the inet hooks: turn bridge-nf-call-ip{,6}tables on in the
        managed namespace; say so when it was off."""
        if self._sysctl_checked or self.backend.name != "nft":
            return []
        notices = []
        with entered(self.netns):
            for name in _BR_SYSCTLS:
                path = f"/proc/sys/net/bridge/{name}"
                if not os.path.exists(path):
                    os.system("modprobe br_netfilter >/dev/null 2>&1")
                try:
                    with open(path) as f:
                        val = f.read().strip()
                    if val != "1":
                        with open(path, "w") as f:
                            f.write("1\n")
                        notices.append(f"set net.bridge.{name}=1 in "
                                       f"{self.netns or 'this namespace'} (was {val})")
                except OSError as e:
                    raise EnvironmentProblem(f"cannot enable net.bridge.{name}: {e} "
                                             "(is br_netfilter available?)") from None
        self._sysctl_checked = True
        self.notices.extend(notices)
        return notices


def _gone_addresses(current, desired):
    gone = set()
    for name in ("ingress4", "ingress6"):
        old = current.elements.get(("inet", name), {})
        new = desired.elements.get(("inet", name), {})
        gone.update(k for k in old if k not in new)
    return gone


def _ms(a, b):
    return round((b - a) * 1000, 3)
