"""etcd v3 through its JSON gateway (``/v3/...``), on top of the etcd3gw client.

etcd3gw gives the HTTP session (TLS, client certificates), API-path discovery and the unary
calls. Ranges, transactions and watch streams are read here because the agent needs what
etcd3gw's helpers drop: the header revision of a read, paging at one revision, and a watch
stream's ``compact_revision`` / cancellation / end (see docs/sync.md).

Several endpoints: a call that cannot connect moves to the next endpoint. ``user``/``password``:
an auth token is fetched and sent with every call (fetched again when etcd rejects it).
Errors: :class:`StoreUnavailable` (no endpoint answers), :class:`Compacted` (a watch or read
asked for a revision etcd no longer has).
"""

import base64
import json
import threading

import requests

from fwsg.errors import FwsgError

PAGE = 10000         # keys per range request (responses stay a few MB)
TXN_OPS = 128        # etcd's default --max-txn-ops
TXN_BYTES = 1 << 20  # well under etcd's default --max-request-bytes (1.5 MiB)


class StoreUnavailable(FwsgError):
    """No etcd endpoint answered (or it refused the call)."""

    exit_code = 1


class Compacted(FwsgError):
    """The requested revision was compacted away; ``revision`` is the oldest one left."""

    exit_code = 1

    def __init__(self, revision):
        self.revision = revision
        super().__init__(f"revision compacted (oldest available {revision})")


def b64(s):
    return base64.b64encode(s if isinstance(s, bytes) else s.encode()).decode()


def unb64(s):
    return base64.b64decode(s) if s else b""


def prefix_end(prefix):
    """The range end covering every key that starts with ``prefix`` (bytes)."""
    p = bytearray(prefix.encode() if isinstance(prefix, str) else prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return b"\0"


class EtcdStore:
    """A connection to one etcd cluster (one or more ``endpoints`` "host:port")."""

    def __init__(self, endpoints, *, tls=False, ca=None, cert=None, key=None, user=None,
                 password=None, timeout=5.0):
        import etcd3gw  # noqa: F401  (the dependency this module builds on)

        self.endpoints = list(endpoints)
        self.scheme = "https" if (tls or ca or cert) else "http"
        self.ca, self.cert, self.key = ca, cert, key
        self.user, self.password = user, password
        self.timeout = timeout
        self._i = 0
        self._lock = threading.Lock()
        self._token = None
        self._client = None

    # -- plumbing ----------------------------------------------------------------------------
    def client(self):
        """The etcd3gw client of the current endpoint."""
        with self._lock:
            if self._client is None:
                import etcd3gw

                host, _, port = self.endpoints[self._i].rpartition(":")
                self._client = etcd3gw.client(
                    host=host.strip("[]"), port=int(port), protocol=self.scheme,
                    ca_cert=self.ca, cert_cert=self.cert, cert_key=self.key,
                    timeout=self.timeout, api_path="/v3/")
                # the endpoints are explicit: no proxy from the environment, and no
                # REQUESTS_CA_BUNDLE overriding --ca (requests lets it win over session.verify)
                self._client.session.trust_env = False
                if self._token:
                    self._client.session.headers["Authorization"] = self._token
            return self._client

    def _next_endpoint(self):
        with self._lock:
            if self._client is not None:
                self._client.session.close()
            self._client = None
            self._i = (self._i + 1) % len(self.endpoints)

    def _authenticate(self, c):
        r = c.session.post(c.get_url("/auth/authenticate"),
                           json={"name": self.user, "password": self.password},
                           timeout=self.timeout)
        if r.status_code != 200:
            raise StoreUnavailable(f"etcd refused user {self.user!r}: {_message(r)}")
        self._token = r.json()["token"]
        c.session.headers["Authorization"] = self._token

    def call(self, path, body, timeout=None):
        """POST ``body`` to ``/v3/<path>``; the decoded JSON reply. Tries every endpoint once.
        ``timeout``: seconds for this call (default: the store's)."""
        last = None
        timeout = timeout or self.timeout
        for _ in range(len(self.endpoints)):
            c = self.client()
            try:
                if self.user and not self._token:
                    self._authenticate(c)
                r = c.session.post(c.get_url(path), data=json.dumps(body), timeout=timeout)
                if r.status_code == 401 and self.user:
                    self._authenticate(c)
                    r = c.session.post(c.get_url(path), data=json.dumps(body), timeout=timeout)
            except requests.RequestException as e:
                last = e
                self._next_endpoint()
                continue
            if r.status_code != 200:
                msg = _message(r)
                if "compacted" in msg:
                    raise Compacted(0)
                raise StoreUnavailable(f"etcd {self.endpoints[self._i]}: {msg}")
            return r.json()
        raise StoreUnavailable(f"etcd unreachable ({', '.join(self.endpoints)}): "
                               f"{_short_exc(last)}")

    # -- reads and writes --------------------------------------------------------------------
    def revision(self, timeout=None):
        """The store's current revision."""
        return int(self.call("kv/range", {"key": b64("\0"), "limit": 1, "count_only": True},
                             timeout=timeout)["header"]["revision"])

    def range(self, prefix, revision=None):
        """Every (key, value bytes) under ``prefix`` at one revision: (revision, list).
        Paged; every page is read at the revision of the first."""
        out = []
        start = prefix.encode()
        end = b64(prefix_end(prefix))
        rev = revision
        while True:
            body = {"key": b64(start), "range_end": end, "limit": PAGE, "serializable": True}
            if rev:
                body["revision"] = rev
            r = self.call("kv/range", body)
            if rev is None:
                rev = int(r["header"]["revision"])
            kvs = r.get("kvs", [])
            for kv in kvs:
                out.append((unb64(kv["key"]).decode("utf-8", "replace"), unb64(kv.get("value"))))
            if not r.get("more"):
                return rev, out
            start = unb64(kvs[-1]["key"]) + b"\0"

    def get(self, key):
        """The value of one key (bytes) or None."""
        r = self.call("kv/range", {"key": b64(key)})
        kvs = r.get("kvs")
        return unb64(kvs[0].get("value")) if kvs else None

    def put(self, key, value, lease=None):
        body = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = lease
        return int(self.call("kv/put", body)["header"]["revision"])

    def delete(self, key):
        return int(self.call("kv/deleterange", {"key": b64(key)})["header"]["revision"])

    def txn(self, ops):
        """Apply ``ops`` (("put", key, value) or ("delete", key)) in transactions of bounded
        size (at most TXN_OPS operations and ~TXN_BYTES each); the number of transactions."""
        batches, cur, size = [], [], 0
        for op in ops:
            if op[0] == "put":
                req = {"request_put": {"key": b64(op[1]), "value": b64(op[2])}}
            else:
                req = {"request_delete_range": {"key": b64(op[1])}}
            n = len(op[1]) + (len(op[2]) if op[0] == "put" else 0)
            if cur and (len(cur) >= TXN_OPS or size + n > TXN_BYTES):
                batches.append(cur)
                cur, size = [], 0
            cur.append(req)
            size += n
        if cur:
            batches.append(cur)
        for b in batches:
            self.call("kv/txn", {"success": b})
        return len(batches)

    def compact(self, revision):
        self.call("kv/compaction", {"revision": revision, "physical": True})

    def lease_grant(self, ttl):
        return int(self.call("lease/grant", {"TTL": ttl})["ID"])

    def lease_keepalive(self, lease):
        """Refresh a lease; its remaining TTL, or -1 when it has expired."""
        r = self.call("lease/keepalive", {"ID": lease})
        return int(r.get("result", {}).get("TTL", -1))

    def lease_revoke(self, lease):
        self.call("kv/lease/revoke", {"ID": lease})

    # -- watches -----------------------------------------------------------------------------
    def watch(self, prefix, start_revision, on_events, on_end):
        """Watch every key under ``prefix`` from ``start_revision`` on, in a daemon thread.
        ``on_events(events, header_revision)`` gets lists of (key, value bytes or None for a
        delete, mod_revision); ``on_end(error)`` is called once when the stream ends (an
        exception: Compacted, StoreUnavailable). Returns the Watch (``cancel()``)."""
        return Watch(self, prefix, start_revision, on_events, on_end)


class Watch:
    """One watch stream (one HTTP connection and one thread). See :meth:`EtcdStore.watch`."""

    def __init__(self, store, prefix, start_revision, on_events, on_end):
        self.store, self.prefix = store, prefix
        self._cancelled = False
        self._resp = None
        self._on_events, self._on_end = on_events, on_end
        self._create = {"create_request": {"key": b64(prefix), "range_end": b64(prefix_end(prefix)),
                                           "start_revision": start_revision}}
        self.thread = threading.Thread(target=self._run, name=f"watch {prefix}", daemon=True)
        self.thread.start()

    def _run(self):
        err = None
        try:
            c = self.store.client()
            self._resp = c.session.post(c.get_url("watch"), data=json.dumps(self._create),
                                        stream=True, timeout=(self.store.timeout, None))
            if self._cancelled:
                return
            if self._resp.status_code != 200:
                raise StoreUnavailable(f"watch {self.prefix}: {_message(self._resp)}")
            for line in self._resp.iter_lines():
                if self._cancelled:
                    return
                if not line.strip():
                    continue
                msg = json.loads(line)
                if "error" in msg:
                    raise StoreUnavailable(f"watch {self.prefix}: {msg['error'].get('message')}")
                res = msg.get("result", {})
                if int(res.get("compact_revision", 0) or 0):
                    raise Compacted(int(res["compact_revision"]))
                if res.get("canceled"):
                    raise StoreUnavailable(f"watch {self.prefix} cancelled by etcd: "
                                           f"{res.get('cancel_reason', '')}")
                evs = res.get("events")
                if evs:
                    out = []
                    for ev in evs:
                        kv = ev["kv"]
                        key = unb64(kv["key"]).decode("utf-8", "replace")
                        val = None if ev.get("type") == "DELETE" else unb64(kv.get("value"))
                        out.append((key, val, int(kv.get("mod_revision", 0))))
                    self._on_events(out, int(res["header"].get("revision", 0)))
            err = StoreUnavailable(f"watch {self.prefix}: stream ended")
        except (requests.RequestException, ValueError, OSError) as e:
            err = StoreUnavailable(f"watch {self.prefix}: {_short_exc(e)}")
        except FwsgError as e:
            err = e
        finally:
            if not self._cancelled:
                self._on_end(err)

    def cancel(self):
        """Stop the stream (its thread ends soon after); no callback follows."""
        self._cancelled = True
        r = self._resp
        if r is not None:
            try:
                r.raw._fp.fp.raw._sock.shutdown(2)
            except Exception:  # noqa: BLE001 - best effort: the connection may be gone already
                pass
            try:
                r.close()
            except Exception:  # noqa: BLE001
                pass


def _message(r):
    try:
        j = r.json()
        return j.get("error") or j.get("message") or r.text.strip()
    except ValueError:
        return f"HTTP {r.status_code} {r.reason}"


def _short_exc(e):
    s = str(e)
    return s if len(s) < 160 else s[:157] + "..."
