"""Errors of the lab tooling (namespaces, probes, demo, benchmarks).

Deliberately outside :mod:`fwsg.errors`: the product's hierarchy describes what the firewall
refuses; these describe a test bench that could not be built or driven. The CLI glue of the
tooling (``fwsg demo``) maps them to exit codes through ``exit_code``.
"""


class LabError(Exception):
    """The lab could not do what was asked (namespace missing, command failed)."""

    exit_code = 1


class LabUsageError(LabError, ValueError):
    """A lab was asked something malformed (bad lab or node name, address, MAC, probe)."""

    exit_code = 2


class Unsupported(LabError):
    """The kernel lacks a feature a probe needs (e.g. SCTP); ``str()`` says which and why."""


class PeerError(LabError):
    """A benchmark peer (``scripts/bench --peer neutron``) could not be installed or run;
    ``str()`` is one line naming the step that failed."""
