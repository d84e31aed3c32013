"""The iptables backend: the same model as iptables/ip6tables rules, ebtables ARP checks and
ipset members, diffed and applied incrementally (``Firewall(backend="iptables")``).

Modules: ``names`` (derived, bounded names), ``rules`` (model rules -> rule text),
``state`` (chains, dispatch rules, sets), ``desired`` (Model -> State, change by change),
``plan`` (diff and the restore texts), ``tools`` (legacy or nft, detected), ``kernel``
(restore, save, ipset netlink).
"""

from fwsg.backends.iptables import desired as _desired
from fwsg.backends.iptables.kernel import Kernel
from fwsg.backends.iptables.plan import diff
from fwsg.backends.iptables.tools import detect


class IptablesBackend:
    """Kernel access for one namespace. ``variant``: ``legacy``, ``nft`` or None (detected)."""

    name = "iptables"

    def __init__(self, netns=None, variant=None):
        self.netns = netns
        self.tools = detect(netns, variant)
        self.kernel = Kernel(netns, self.tools)

    @property
    def variant(self):
        return self.tools.variant

    def describe(self):
        return self.tools.describe()

    # the desired-state side (pure)
    def new_desired(self, current):
        """An empty desired state that keeps the conntrack zones ``current`` uses."""
        return _desired.Desired(current.zones)

    diff = staticmethod(diff)
    check_model = staticmethod(_desired.Desired.check_model)

    # the kernel side
    def prepare_host(self):
        """Before the first commit: remove what the nft backend left here; notices."""
        from fwsg.backends.iptables.switch import remove_nft_state

        return remove_nft_state(self.netns)

    def read(self):
        return self.kernel.read()

    def commit(self, plan):
        if not plan:
            return None
        self.kernel.commit(plan)
        return f"ipset-netlink+iptables-{self.variant}-restore" if plan.texts() else "ipset-netlink"

    def flush(self):
        return self.kernel.flush(self.kernel.read())

    def close(self):
        self.kernel.close()
