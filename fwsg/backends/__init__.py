"""Kernel backends behind one interface (:mod:`fwsg.backends.base`).

``nft`` (libnftables and netlink in-process, :mod:`fwsg.backends.nft`) is the default;
``fake`` keeps the state in memory with the kernel's atomic semantics, for unit tests.
"""

from fwsg.errors import UserError

BACKENDS = ("nft", "fake")


def make_backend(name, netns=None):
    """A backend instance by name, for ``netns`` (None: the caller's namespace)."""
    if name == "nft":
        from fwsg.backends.nft import NftBackend

        return NftBackend(netns)
    if name == "fake":
        from fwsg.backends.fake import FakeBackend

        return FakeBackend(netns)
    raise UserError(f"backend: {name!r} is not one of {', '.join(BACKENDS)}")
