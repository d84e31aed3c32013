"""The one exception hierarchy of fwsg.

Every error fwsg raises on purpose derives from :class:`FwsgError`. The CLI maps them to exit
codes: :class:`UserError` (bad input, bad usage) -> 2, :class:`KernelError` -> 1.
"""


class FwsgError(Exception):
    """Base of every error fwsg raises on purpose."""

    exit_code = 1


class UserError(FwsgError):
    """The caller's input or usage is wrong; nothing was changed."""

    exit_code = 2


class ValidationError(UserError):
    """A model/document field is invalid. ``path`` names the field, e.g. ``devices.p1.fixed_ips[0]``."""

    def __init__(self, path, message):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class KernelError(FwsgError):
    """The kernel (or libnftables / netlink) refused an operation; the kernel state is unchanged."""

    exit_code = 1


class EnvironmentProblem(FwsgError):
    """A prerequisite is missing (no root, no netns, library not found)."""

    exit_code = 1
