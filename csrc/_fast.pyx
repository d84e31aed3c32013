# cython: language_level=3
"""fwsg's hot path, compiled. Twin of fwsg/_fast_py.py: same names, same signatures, same results.

- NftContext: one long-lived libnftables context; ``run`` commits a batch in-process with the
  GIL released and raises KernelError with the library's error text on refusal.
- diff_keys / diff_map / render_elements: the set, map and chain-key diff and the rendering
  of element lists for a batch.
"""

from libc.stdlib cimport free
from libc.string cimport strdup

from fwsg.errors import KernelError

cimport libnftables as L

COMPILED = True


cdef class NftContext:
    """A libnftables context bound to the network namespace current at construction."""

    cdef L.nft_ctx *ctx
    cdef unsigned int base_flags

    def __cinit__(self):
        self.ctx = L.nft_ctx_new(L.NFT_CTX_DEFAULT)
        if self.ctx == NULL:
            raise KernelError("libnftables: nft_ctx_new failed")
        L.nft_ctx_buffer_output(self.ctx)
        L.nft_ctx_buffer_error(self.ctx)
        self.base_flags = L.nft_ctx_output_get_flags(self.ctx)

    def __dealloc__(self):
        if self.ctx != NULL:
            L.nft_ctx_free(self.ctx)
            self.ctx = NULL

    def close(self):
        """Free the context (idempotent)."""
        if self.ctx != NULL:
            with nogil:
                L.nft_ctx_free(self.ctx)
            self.ctx = NULL

    def run(self, text, bint json_output=False):
        """Run ``text`` (nft syntax, one atomic transaction) and return the library's output.

        Raises KernelError carrying the library's error text when the batch is refused; the
        kernel is then unchanged.
        """
        if self.ctx == NULL:
            raise KernelError("libnftables context is closed")
        cdef bytes data = text.encode() if isinstance(text, str) else bytes(text)
        cdef char *buf = strdup(data)
        cdef int rc
        cdef unsigned int flags = self.base_flags | (L.NFT_CTX_OUTPUT_JSON if json_output else 0)
        L.nft_ctx_output_set_flags(self.ctx, flags)
        try:
            with nogil:
                rc = L.nft_run_cmd_from_buffer(self.ctx, buf)
        finally:
            free(buf)
        out = (L.nft_ctx_get_output_buffer(self.ctx) or b"").decode("utf-8", "replace")
        err = (L.nft_ctx_get_error_buffer(self.ctx) or b"").decode("utf-8", "replace")
        if rc != 0:
            raise KernelError("nftables refused the batch: " + (err.strip() or "error %d" % rc))
        return out


def diff_keys(desired, current):
    """Return (added, removed): sorted lists of the keys in ``desired`` not in ``current`` and
    the reverse. Both arguments are sets (or iterables) of str. Pure: no I/O."""
    cdef set d = desired if type(desired) is set else set(desired)
    cdef set c = current if type(current) is set else set(current)
    cdef list added = [k for k in d if k not in c]
    cdef list removed = [k for k in c if k not in d]
    added.sort()
    removed.sort()
    return added, removed


def diff_map(dict desired, dict current):
    """Return (added, changed, removed) for two maps key -> value (str -> str).

    ``added`` and ``changed`` are sorted lists of (key, new value); ``removed`` a sorted list of
    keys. Pure: no I/O."""
    cdef list added = []
    cdef list changed = []
    cdef list removed = []
    cdef object k, v, old
    for k, v in desired.items():
        old = current.get(k)
        if old is None:
            added.append((k, v))
        elif old != v:
            changed.append((k, v))
    for k in current:
        if k not in desired:
            removed.append(k)
    added.sort()
    changed.sort()
    removed.sort()
    return added, changed, removed


def render_elements(keys):
    """Render element keys (or (key, value) pairs) as the inside of an nft ``{ ... }`` list."""
    cdef list parts = []
    cdef object k
    for k in keys:
        if type(k) is tuple:
            parts.append(k[0] + " : " + k[1])
        else:
            parts.append(k)
    return ", ".join(parts)


def diff_delta(pending_added, pending_removed, set current):
    """(added, removed) for a recorded delta against ``current`` (a set): the pending additions
    not yet in it and the pending removals still in it, each sorted. O(delta), no I/O."""
    cdef list added = [e for e in pending_added if e not in current]
    cdef list removed = [e for e in pending_removed if e in current]
    added.sort()
    removed.sort()
    return added, removed


def diff_map_keys(dict desired, dict current, keys):
    """diff_map restricted to ``keys``: (added, changed, removed) for those keys only."""
    cdef list added = []
    cdef list changed = []
    cdef list removed = []
    cdef object k, v, old
    for k in keys:
        v = desired.get(k)
        old = current.get(k)
        if v is None:
            if old is not None:
                removed.append(k)
        elif old is None:
            added.append((k, v))
        elif old != v:
            changed.append((k, v))
    added.sort()
    changed.sort()
    removed.sort()
    return added, changed, removed
