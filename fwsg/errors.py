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
    """The kernel (or libnftables / netlink) refused an operation; the kernel state is unchanged.

    ``errno`` is the kernel's reason as a number (``errno.ENOENT``: something named does not
    exist, ``errno.EEXIST``: it exists already, ``errno.EBUSY``: still in use), or None when
    unknown. Callers decide by ``errno``, never by the message text."""

    exit_code = 1

    def __init__(self, message, errno=None):
        super().__init__(message)
        self.errno = errno


def errno_in(text):
    """The errno whose standard message (``strerror``) appears in a libnftables error text, or
    None. libnftables reports the kernel's answer only as text; this is the one place that text
    is turned back into a number (the transports use it; nothing else reads messages)."""
    import errno as _errno
    import os

    for code in (_errno.ENOENT, _errno.EEXIST, _errno.EBUSY, _errno.EINVAL, _errno.EPERM,
                 _errno.ENOSPC, _errno.ENOMEM, _errno.EOPNOTSUPP, _errno.ENOBUFS):
        if os.strerror(code) in text:
            return code
    return None


class EnvironmentProblem(FwsgError):
    """A prerequisite is missing (no root, no netns, library not found)."""

    exit_code = 1
