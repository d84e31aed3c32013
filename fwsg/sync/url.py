"""Source URLs: ``file:PATH`` and ``etcd://HOST:PORT[,HOST:PORT...][/PREFIX]``. Pure."""

import urllib.parse
from dataclasses import dataclass, field

from fwsg.errors import UserError
from fwsg.sync.layout import DEFAULT_PREFIX


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source: ``kind`` "file" (``path``) or "etcd" (``endpoints``, ``prefix``, TLS
    and credentials)."""

    kind: str
    path: str = None
    endpoints: tuple = ()
    prefix: str = DEFAULT_PREFIX
    tls: bool = False
    options: dict = field(default_factory=dict)


def parse_source(url, *, ca=None, cert=None, key=None, user=None, password=None):
    """Parse a source URL; UserError (exit 2) naming the value when it is not one.
    ``etcds://`` means TLS; ``etcd://user:password@...`` carries credentials."""
    if not isinstance(url, str) or not url:
        raise UserError(f"--source: {url!r} is not a source URL (file:PATH or etcd://HOST:PORT)")
    if url.startswith("file:"):
        path = url[5:]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise UserError(f"--source: {url!r} names no file")
        return SourceSpec("file", path=path)
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("etcd", "etcds"):
        raise UserError(f"--source: {url!r} is not file:PATH or etcd://HOST:PORT[/PREFIX]")
    netloc = parsed.netloc
    if "@" in netloc:
        cred, netloc = netloc.rsplit("@", 1)
        u, _, p = cred.partition(":")
        user = user or urllib.parse.unquote(u)
        password = password or urllib.parse.unquote(p)
    endpoints = []
    for ep in netloc.split(","):
        host, sep, port = ep.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError(f"--source: endpoint {ep!r} in {url!r} is not HOST:PORT")
        endpoints.append(f"{host}:{int(port)}")
    prefix = parsed.path.rstrip("/") or DEFAULT_PREFIX
    q = urllib.parse.parse_qs(parsed.query)
    ca = ca or q.get("ca", [None])[0]
    cert = cert or q.get("cert", [None])[0]
    key = key or q.get("key", [None])[0]
    if bool(cert) != bool(key):
        raise UserError("--cert and --key go together (a client certificate and its key)")
    tls = parsed.scheme == "etcds" or bool(ca or cert)
    return SourceSpec("etcd", endpoints=tuple(endpoints), prefix=prefix, tls=tls,
                      options={"ca": ca, "cert": cert, "key": key, "user": user,
                               "password": password})


def open_store(spec, timeout=5.0):
    """An EtcdStore for an etcd SourceSpec."""
    from fwsg.sync.store import EtcdStore

    if spec.kind != "etcd":
        raise UserError(f"an etcd:// URL is needed here, not {spec.kind}:")
    return EtcdStore(spec.endpoints, tls=spec.tls, timeout=timeout, **spec.options)
