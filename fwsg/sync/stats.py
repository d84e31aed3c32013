"""Node stats through the store, for placement.

:class:`StatsPublisher` (``fwsg agent --publish-stats``) keeps ``P/stats/<node>`` equal to the
node's probe document, attached to a lease with a TTL of three periods: when the node (or its
agent) dies the lease expires and etcd deletes the key. :func:`cluster_from_store` builds the
cluster document placement reads: ``P/cluster`` with every live node's stats merged in, and the
nodes of the document that have no live stats (lease expired or never published) — what
``fwsg place --failed auto`` plans for.
"""

import json
import logging
import threading

from fwsg.errors import UserError, ValidationError
from fwsg.sync.store import StoreUnavailable

log = logging.getLogger("fwsg.agent")


class StatsPublisher:
    """A thread publishing ``document()`` (default: a fwsg.probe.Probe's) every ``period``
    seconds under a lease of ``ttl`` seconds (default 3 periods, at least 3 s)."""

    def __init__(self, store, layout, node, period=10.0, ttl=None, document=None):
        self.store, self.layout, self.node = store, layout, node
        self.period = float(period)
        self.ttl = int(max(3, round(ttl if ttl is not None else 3 * self.period)))
        self._document = document
        self._probe = None
        self.lease = None
        self.published = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stats", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        """Stop publishing; the key expires with the lease (a stopped node reads as failed)."""
        self._stop.set()
        self._thread.join(5)

    def document(self):
        if self._document is not None:
            return self._document()
        if self._probe is None:
            from fwsg.probe import Probe

            self._probe = Probe(node=self.node, interval=self.period)
            self._probe.prime(0.2)
        else:
            self._probe.sample()
        return self._probe.document()

    def publish_once(self):
        """Refresh the lease (a new one if it expired) and write the document under it."""
        if self.lease is None or self.store.lease_keepalive(self.lease) <= 0:
            self.lease = self.store.lease_grant(self.ttl)
        doc = dict(self.document(), node=self.node)
        self.store.put(self.layout.stats(self.node), json.dumps(doc, sort_keys=True),
                       lease=self.lease)
        self.published += 1

    def _run(self):
        while not self._stop.is_set():
            try:
                self.publish_once()
            except StoreUnavailable as e:
                log.warning("stats not published: %s", e)
                self.lease = None
            except Exception as e:  # noqa: BLE001 - a probe failure must not end the agent
                log.error("stats not published: %s", e)
            self._stop.wait(self.period)


def cluster_from_store(store, layout):
    """(cluster document with live stats merged, sorted names of nodes without live stats)."""
    from fwsg.placement.stats import apply_probe_stats

    raw = store.get(layout.cluster())
    if raw is None:
        raise UserError(f"no cluster document at {layout.cluster()} (fwsg publish --cluster "
                        "CLUSTER.json --to etcd://...)")
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise ValidationError(layout.cluster(), f"not valid JSON: {e}") from None
    _, kvs = store.range(layout.stats())
    live = set()
    for key, value in kvs:
        what = layout.parse(key)
        if not what or what[0] != "stats":
            continue
        try:
            stats = json.loads(value)
            doc = apply_probe_stats(doc, stats, where=key)
            live.add(stats.get("node"))
        except (ValueError, ValidationError) as e:
            log.warning("skipped key %s: %s", key, e)
    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    expired = sorted(n for n in (nodes or {}) if n not in live)
    return doc, expired
