"""The one exception hierarchy of fwsg.

Every error fwsg raises on purpose derives from :class:`FwsgError`. The CLI maps them to exit
codes: :class:`UserError` (bad input, bad usage) -> 2, :class:`KernelError` -> 1.
"""


MAX_FIELD = 160   # characters of one user value or path quoted in an error line
MAX_LINE = 400    # characters of one error line


def printable(text, limit=MAX_FIELD):
    """``text`` safe to print on one terminal line: control and other non-printable characters
    escaped (``\\n``, ``\\x1b``), cut to ``limit`` characters with a marker saying how long it
    was. Never raises, whatever ``text`` is (huge integers included)."""
    if not isinstance(text, str):
        try:
            if isinstance(text, int) and not isinstance(text, bool) and text.bit_length() > 256:
                return f"<integer of {text.bit_length()} bits>"
            text = str(text)
        except Exception:  # noqa: BLE001 - a hostile __str__
            return f"<{type(text).__name__}>"
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if len(text) > limit:
        text = f"{text[:limit - 30]}...<{len(text)} characters>"
    return text


def short_repr(value, limit=MAX_FIELD):
    """``repr(value)`` bounded to about ``limit`` characters (safe for huge or nested values);
    a cut string says how long it was."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<integer of {value.bit_length()} bits>"
    if type(value) is str and len(value) > limit:
        return printable(repr(value[:limit - 30]), limit) + f"...<{len(value)} characters>"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - recursion, huge ints inside containers
        text = f"<{type(value).__name__}>"
    return printable(text, limit)


class FwsgError(Exception):
    """Base of every error fwsg raises on purpose."""

    exit_code = 1


class UserError(FwsgError):
    """The caller's input or usage is wrong; nothing was changed."""

    exit_code = 2


class ValidationError(UserError):
    """A model/document field is invalid. ``path`` names the field, e.g. ``devices.p1.fixed_ips[0]``."""

    def __init__(self, path, message):
        self.path = printable(path)
        self.message = printable(message, MAX_LINE)
        super().__init__(f"{self.path}: {self.message}" if path else self.message)


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


class Busy(FwsgError):
    """Another fwsg process (or Firewall) holds the namespace's lock; nothing was changed."""

    exit_code = 1


class EnvironmentProblem(FwsgError):
    """A prerequisite is missing (no root, no netns, library not found)."""

    exit_code = 1
