"""Resource probe: what a node and its guests use, over a rolling window.

``Probe(root).prime()`` then ``Probe.document()`` gives the node's stats document (schema
``fwsg.probe/1``, documented in docs/placement.md) that placement reads. Reading only: the probe
never changes the host, and a metric it cannot read is reported as unavailable with the reason.
"""

from fwsg.probe.readers import DEFAULT_CGROUP_PATTERNS, Unavailable, ruleset_size
from fwsg.probe.sampler import SCHEMA, Probe
from fwsg.probe.window import Window, percentile

__all__ = ["DEFAULT_CGROUP_PATTERNS", "Probe", "SCHEMA", "Unavailable", "Window", "percentile",
           "ruleset_size"]
