"""The hook ``fwsg place --source etcd://...`` calls: the cluster document from the store."""

from fwsg.errors import UserError


def cluster_and_failed(url, failed):
    """(cluster document with live stats, failed nodes) for ``url``; ``auto`` in ``failed``
    stands for the nodes whose stats lease has expired."""
    from fwsg.sync.layout import Layout
    from fwsg.sync.stats import cluster_from_store
    from fwsg.sync.url import open_store, parse_source

    spec = parse_source(url)
    if spec.kind != "etcd":
        raise UserError(f"--source: {url!r} is not an etcd:// URL")
    doc, expired = cluster_from_store(open_store(spec), Layout(spec.prefix))
    out = []
    for f in failed:
        for n in (expired if f == "auto" else [f]):
            if n not in out:
                out.append(n)
    if not out:
        raise UserError("--failed auto: every node's stats are live (no lease has expired)")
    return doc, out
