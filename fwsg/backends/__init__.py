"""Kernel backends behind one interface (:mod:`fwsg.backends.base`).

``nft`` (libnftables and netlink in-process, :mod:`fwsg.backends.nft`) is the default;
``iptables`` (:mod:`fwsg.backends.iptables`: iptables/ip6tables chains, ebtables ARP checks,
ipset members; ``iptables-legacy`` / ``iptables-nft`` force a variant, else it is detected);
``fake`` keeps the state in memory with the kernel's atomic semantics, for unit tests.
"""

from fwsg.errors import UserError

BACKENDS = ("nft", "iptables", "iptables-legacy", "iptables-nft", "fake")


def make_backend(name, netns=None):
    """A backend instance by name, for ``netns`` (None: the caller's namespace)."""
    if name == "nft":
        from fwsg.backends.nft import NftBackend

        return NftBackend(netns)
    if name in ("iptables", "iptables-legacy", "iptables-nft"):
        from fwsg.backends.iptables import IptablesBackend

        return IptablesBackend(netns, name.partition("-")[2] or None)
    if name == "fake":
        from fwsg.backends.fake import FakeBackend

        return FakeBackend(netns)
    raise UserError(f"backend: {name!r} is not one of {', '.join(BACKENDS)}")
