"""HA placement: where the guests of failed nodes restart.

Filters (the hard constraints of one admission rule, :mod:`fwsg.placement.admission`, each
rejection explained), then a pluggable scorer, then a deterministic tie-break by node name;
every decision updates the projected node usage before the next, and the default strategy then
repairs what is left over and relieves the hottest node (moving guests it placed, and at most
``max_migrations`` live migrations of running guests, listed in the plan). Everything here is pure (no I/O)
except :func:`load_cluster`, which reads a file.

    >>> from fwsg.placement import load_cluster, plan_recovery
    >>> plan = plan_recovery(load_cluster("examples/cluster.json"), failed=["pve2"])
"""

from fwsg.placement.filters import FILTERS, Limits
from fwsg.placement.model import AffinityRule, Cluster, ClusterNode, Guest, Group, Stat, parse_cluster
from fwsg.placement.planner import NodeLoad, Placement, RecoveryPlan, plan_recovery
from fwsg.placement.rebalance import MAX_MIGRATIONS, Migration
from fwsg.placement.scorers import DEFAULT_STRATEGY, STRATEGIES
from fwsg.placement.verify import violations

__all__ = [
    "Cluster", "DEFAULT_STRATEGY", "FILTERS", "Group", "Guest", "Limits", "ClusterNode", "MAX_MIGRATIONS",
    "Migration", "NodeLoad", "Placement", "RecoveryPlan", "AffinityRule", "STRATEGIES", "Stat", "load_cluster", "parse_cluster",
    "plan_recovery", "violations",
]


def load_cluster(path, *, peak_key="p95"):
    """Read and validate the cluster document at ``path`` (JSON).

    Raises UserError when the file cannot be read or is not JSON, ValidationError for bad fields.
    """
    import json

    from fwsg.errors import UserError, ValidationError

    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ValidationError(str(path), f"not valid JSON: {e}") from None
    return parse_cluster(doc, peak_key=peak_key)
