"""fwsg: security groups to nftables, applied atomically in-process."""

__version__ = "0.1.0"

__all__ = ["Firewall", "Model", "__version__"]


def __getattr__(name):
    # Lazy: importing fwsg must stay cheap and must not need root or libnftables.
    if name == "Firewall":
        from fwsg.firewall import Firewall

        return Firewall
    if name == "Model":
        from fwsg.model import Model

        return Model
    raise AttributeError(name)
