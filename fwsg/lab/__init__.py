"""Test and demonstration tooling, kept apart from the product: a lab of network namespaces
(:mod:`fwsg.lab.topology`) with real-packet probes (:mod:`fwsg.lab.traffic`), the demo
(:mod:`fwsg.lab.demo`), the hot-path benchmark (:mod:`fwsg.lab.bench`) and the generator of
benchmark and test models (:mod:`fwsg.lab.scenario`). Its errors (:mod:`fwsg.lab.errors`) are its
own. Nothing in the product imports this package.

``from fwsg.lab import Lab, netns_available`` is the usual entry point.
"""

from fwsg.lab.errors import LabError, LabUsageError, Unsupported
from fwsg.lab.topology import (Lab, Node, cleanup_stale, lab_namespaces, netns_available,
                               sweep_dead_labs)
from fwsg.lab.traffic import link_local_of, ra_body

__all__ = ["Lab", "Node", "LabError", "LabUsageError", "Unsupported", "link_local_of", "ra_body",
           "netns_available", "lab_namespaces", "cleanup_stale", "sweep_dead_labs"]
