"""Prometheus metrics of the agent (prometheus_client, one private registry)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)


class Metrics:
    """Every metric the agent exports; ``serve(port)`` starts the HTTP endpoint."""

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.events = Counter("fwsg_agent_events", "store events received", ["kind"], registry=r)
        self.transactions = Counter("fwsg_agent_transactions", "kernel transactions committed",
                                    registry=r)
        self.commit = Histogram("fwsg_agent_commit_seconds", "time to apply one coalesced "
                                "batch (Firewall calls and kernel commit)", buckets=_BUCKETS,
                                registry=r)
        self.lag = Histogram("fwsg_agent_event_to_commit_seconds", "from an event's arrival "
                             "from etcd to its commit in the kernel", buckets=_BUCKETS,
                             registry=r)
        self.skipped = Counter("fwsg_agent_skipped_keys", "malformed values skipped", registry=r)
        self.reconnects = Counter("fwsg_agent_reconnects", "reconnections to etcd", registry=r)
        self.resyncs = Counter("fwsg_agent_full_resyncs", "full resyncs (start, compaction, "
                               "SIGHUP, after an error)", registry=r)
        self.errors = Counter("fwsg_agent_errors", "failed commits and store errors", registry=r)
        self.connected = Gauge("fwsg_agent_connected", "1 while the agent follows the store",
                               registry=r)
        self.revision = Gauge("fwsg_agent_revision", "store revision applied", registry=r)
        self.ports = Gauge("fwsg_agent_ports", "ports of this host", registry=r)
        self.groups = Gauge("fwsg_agent_groups_watched", "groups watched (the closure)",
                            registry=r)
        self.members = Gauge("fwsg_agent_members", "member addresses held (all groups)",
                             registry=r)

    def serve(self, port, addr="127.0.0.1"):
        start_http_server(port, addr=addr, registry=self.registry)
