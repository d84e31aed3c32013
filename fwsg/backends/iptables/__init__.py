"""The iptables backend: the same model as iptables/ip6tables rules, ebtables ARP checks and
ipset members, diffed and applied incrementally (``Firewall(backend="iptables")``). Implements
:class:`fwsg.backends.base.Backend`; see docs/iptables.md.

Modules: ``names`` (derived, bounded names), ``rules`` (model rules -> rule text),
``state`` (chains, dispatch rules, sets), ``desired`` (Model -> State, change by change),
``plan`` (diff and the restore texts), ``tools`` (legacy or nft, detected), ``kernel``
(restore, save, ipset netlink), ``iptc`` / ``ebnl`` / ``nfdel`` (libiptc, ebtables'
additions and nf_tables deletions in-process), ``switch`` (leftovers of the other backend), ``show``.
"""

from fwsg.backends.iptables import desired as _desired
from fwsg.backends.iptables import plan as _plan
from fwsg.backends.iptables.kernel import Kernel
from fwsg.backends.iptables.tools import detect


class IptablesBackend:
    """Kernel access for one namespace. ``variant``: ``legacy``, ``nft`` or None (detected)."""

    name = "iptables"
    tracks_conntrack = True

    def __init__(self, netns=None, variant=None):
        from fwsg.backends.nft.host import ConntrackCount

        self.netns = netns
        self.tools = detect(netns, variant)
        self.kernel = Kernel(netns, self.tools)
        self._ct = ConntrackCount(netns)
        self._host_ready = False

    @property
    def variant(self):
        return self.tools.variant

    # -- host ---------------------------------------------------------------------------------
    def prepare_host(self, mode="bridge"):
        """Once: bridged frames must reach iptables (br_netfilter, bridge-nf-call-ip{,6}tables
        on), and what the nft backend left here is removed; notices of what was changed."""
        if self._host_ready:
            return []
        from fwsg.backends.iptables.switch import remove_nft_state
        from fwsg.backends.nft.host import prepare_host

        notices = prepare_host(self.netns, mode) + remove_nft_state(self.netns)
        self._host_ready = True
        return notices

    def conntrack_in_use(self):
        return self._ct.in_use()

    # -- desired state, diff (pure) -----------------------------------------------------------
    def desired(self, port_ids=None, group_names=None):
        """An empty desired state; ``port_ids`` (device -> conntrack zone, see port_ids) keeps
        the zones the kernel already uses. ``group_names`` is not needed: chain and set names
        are derived from the ids alone (a collision is refused, see desired._member_sets)."""
        return _desired.Desired(port_ids)

    def drift(self, desired, current, deep=False):
        """What diff cannot see from digests: with ``deep`` (reconcile), an iptables chain
        whose digest comment and rule count are right but whose rules, as the save tool
        printed them, are not those fwsg wrote (a rule edited in place, the comment kept) is
        marked changed in ``current``, so the plan rewrites it. Dispatch rules and set
        members are compared one by one by diff itself, hooks by position, ebtables chains by
        content when read (kernel.parse). Returns (current, {}, [])."""
        if deep and current.bodies:
            from fwsg.backends.iptables.state import same_rule

            for key, chain in desired.st.chains.items():
                body = current.bodies.get(key)
                if body is None or current.chains.get(key) != chain.digest:
                    continue   # absent or already different: diff rewrites it anyway
                want = chain.printed()
                if len(body) != len(want) or not all(
                        a == b or same_rule(a, b) for a, b in zip(body, want)):
                    current.chains[key] = "?"
        return current, {}, []

    def generation(self):
        """None: iptables has no generation a fresh process could trust, so a fresh Firewall
        always reads fwsg's chains and sets back."""
        return None

    def read_port_ids(self):
        """device -> conntrack zone, reading only the raw table (IPv4)."""
        from fwsg.backends.iptables.state import State

        st = State()
        self.kernel.parse(st, 4, "raw", self.kernel.run([self.tools.save(4), "-t", "raw"]))
        return dict(st.zones)

    def port_ids(self, current):
        """device -> conntrack zone in ``current`` (this backend numbers zones, not ports)."""
        return dict(current.zones)

    def diff(self, desired, current, pending=None):
        return _plan.diff(desired.st, current, pending)

    def empty_plan(self):
        return _plan.Plan()

    check_model = staticmethod(_desired.Desired.check_model)

    # -- kernel -------------------------------------------------------------------------------
    def read(self):
        return self.kernel.read()

    def commit(self, plan):
        if not plan:
            return None
        self.kernel.commit(plan)
        if not plan.texts():
            return "ipset-netlink"
        if self.kernel.last_path == "netlink":   # iptables-nft: deletions only (nfdel)
            return "ipset-netlink+nf_tables-netlink"
        if self.kernel.last_path == "libiptc":
            eb = {"netlink": "+ebtables-netlink", "restore": "+ebtables-restore"}.get(
                self.kernel.last_eb, "")
            return f"ipset-netlink+libiptc{eb}"
        return f"ipset-netlink+iptables-{self.variant}-restore"

    def flush(self):
        return self.kernel.flush(self.kernel.read())

    def describe(self, state=None, names=None):
        """A summary of ``state`` (read back when None) for ``fwsg show``."""
        from fwsg.backends.iptables.show import summary

        return summary(self, self.read() if state is None else state, names)

    def describe_tools(self):
        return self.tools.describe()

    def close(self):
        self.kernel.close()
