"""The nftables backend: ``NftBackend`` (:mod:`.backend`), the nft text of plans
(:mod:`.render`), the netlink transport and element encodings (:mod:`.netlink`), the JSON
read-back (:mod:`.readback`) and host preparation (:mod:`.host`)."""

from fwsg.backends.nft.backend import NftBackend

__all__ = ["NftBackend"]
