# cython: language_level=3
"""fwsg's hot path, compiled. Twin of fwsg/_fast_py.py: same names, same signatures, same results.

- NftContext: one long-lived libnftables context; ``run`` commits a batch in-process with the
  GIL released and raises KernelError with the library's error text on refusal.
- diff_keys / diff_map / render_elements: the set, map and chain-key diff and the rendering
  of element lists for a batch.
"""

cimport cython
from libc.stdlib cimport free
from libc.string cimport strdup

from fwsg.errors import KernelError, errno_in

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

    def run(self, text, bint json_output=False, bint echo=False):
        """Run ``text`` (nft syntax, one atomic transaction) and return the library's output;
        with ``echo`` the output lists the objects the transaction created, with handles.

        Raises KernelError carrying the library's error text when the batch is refused; the
        kernel is then unchanged.
        """
        if self.ctx == NULL:
            raise KernelError("libnftables context is closed")
        cdef bytes data = text.encode() if isinstance(text, str) else bytes(text)
        cdef char *buf = strdup(data)
        cdef int rc
        cdef unsigned int flags = self.base_flags | (L.NFT_CTX_OUTPUT_JSON if json_output else 0)
        if echo:
            flags |= L.NFT_CTX_OUTPUT_ECHO | L.NFT_CTX_OUTPUT_HANDLE
        L.nft_ctx_output_set_flags(self.ctx, flags)
        try:
            with nogil:
                rc = L.nft_run_cmd_from_buffer(self.ctx, buf)
        finally:
            free(buf)
        out = (L.nft_ctx_get_output_buffer(self.ctx) or b"").decode("utf-8", "replace")
        err = (L.nft_ctx_get_error_buffer(self.ctx) or b"").decode("utf-8", "replace")
        if rc != 0:
            raise KernelError("nftables refused the batch: " + (err.strip() or "error %d" % rc),
                              errno_in(err))
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


def dicts_key(seq):
    """A hashable key telling a list of plain dicts apart from any list that is not equal to
    it item by item: per dict its length, then each key, value and the value's type (so
    ``True`` and ``1`` differ), in order. None when ``seq`` is not a list of dicts. The key
    hashes only when every value does. Pure: no I/O."""
    if type(seq) is not list:
        return None
    cdef list out = []
    cdef object d, k, v
    for d in <list>seq:
        if type(d) is not dict:
            return None
        out.append(len(<dict>d))
        for k, v in (<dict>d).items():
            out.append(k)
            out.append(v)
            out.append(type(v))
    return tuple(out)


@cython.boundscheck(False)
@cython.wraparound(False)
def dicts_match(seq, key):
    """``dicts_key(seq) == key`` for a ``key`` from :func:`dicts_key`, without building
    ``seq``'s key: the lengths first, then item by item (identity, else ``==``: as tuples
    compare). A comparison that raises propagates. Pure: no I/O."""
    if type(seq) is not list or type(key) is not tuple:
        return False
    cdef tuple k = <tuple>key
    cdef Py_ssize_t n = 0, i = 0
    cdef object d, kk, v
    for d in <list>seq:
        if type(d) is not dict:
            return False
        n += 1 + 3 * len(<dict>d)
    if n != len(k):
        return False
    for d in <list>seq:
        if i >= n or type(d) is not dict:   # a comparison changed the list under us
            return False
        if not (len(<dict>d) == k[i]):
            return False
        i += 1
        for kk, v in (<dict>d).items():
            if i + 3 > n:                   # (or a dict): never read past the key
                return False
            if not (kk is k[i] or kk == k[i]) or not (v is k[i + 1] or v == k[i + 1]) \
                    or not (type(v) is k[i + 2] or type(v) == k[i + 2]):
                return False
            i += 3
    return True
cdef int _json_flat(object v, list out, int depth) except -1:
    """Append the flat form of ``v`` to ``out``; 0 when ``v`` has none (another type, a key
    that is not a str, deeper than 8)."""
    cdef object t = type(v)
    cdef object k, x
    if t is str or t is int or t is bool or t is float or v is None:
        out.append(v)
        out.append(t)
        return 1
    if depth >= 8:
        return 0
    if t is dict:
        out.append(dict)
        out.append(len(<dict>v))
        for k, x in (<dict>v).items():
            if type(k) is not str:
                return 0
            out.append(k)
            if not _json_flat(x, out, depth + 1):
                return 0
        return 1
    if t is list:
        out.append(list)
        out.append(len(<list>v))
        for x in <list>v:
            if not _json_flat(x, out, depth + 1):
                return 0
        return 1
    return 0


def json_key(value):
    """A hashable key telling a JSON value (dicts with str keys, lists, str, int, float, bool,
    None; at most 8 levels deep) apart from every value not equal to it with the same types
    (``True`` and ``1`` differ, so do ``[]`` and ``{}``); None for any other value. Pure: no
    I/O."""
    cdef list out = []
    if not _json_flat(value, out, 0):
        return None
    return tuple(out)


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


# ---- packed address lists: bulk member updates at C speed ----------------------------------

from libc.stdint cimport int32_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, qsort
from libc.string cimport memcmp, memcpy, strlen
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

cdef extern from "arpa/inet.h" nogil:
    int inet_pton(int af, const char *src, void *dst)
    const char *inet_ntop(int af, const void *src, char *dst, unsigned int size)
    uint32_t ntohl(uint32_t)
    uint32_t htonl(uint32_t)

cdef extern from "sys/socket.h":
    int AF_INET
    int AF_INET6

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object o, Py_ssize_t *size) except NULL


cdef int _cmp16(const void *a, const void *b) noexcept nogil:
    return memcmp(a, b, 16)


cdef void _radix32(uint32_t *a, uint32_t *tmp, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef size_t count[256]
    cdef size_t pos, c
    cdef int shift, b
    cdef uint32_t *src = a
    cdef uint32_t *dst = tmp
    cdef uint32_t *sw
    for shift in range(0, 32, 8):
        for b in range(256):
            count[b] = 0
        for i in range(n):
            count[(src[i] >> shift) & 255] += 1
        pos = 0
        for b in range(256):
            c = count[b]
            count[b] = pos
            pos += c
        for i in range(n):
            b = (src[i] >> shift) & 255
            dst[count[b]] = src[i]
            count[b] += 1
        sw = src
        src = dst
        dst = sw
    # four passes: the sorted data is back in ``a``


cdef int _cmp32(const void *a, const void *b) noexcept nogil:
    cdef uint32_t x = (<const uint32_t *>a)[0], y = (<const uint32_t *>b)[0]
    return (x > y) - (x < y)


cdef void _sort32(uint32_t *v, uint32_t *tmp, Py_ssize_t k) noexcept nogil:
    """Sort ``v[0:k]`` (``tmp``: room for ``k`` more). A list sent again in order costs one
    pass; one with a few values out of place (a member changed in a sorted reply) one pass
    that keeps the ascending run in ``v`` and moves those few to ``tmp``, sorts them and
    merges them back; anything else a radix sort."""
    cdef Py_ssize_t i, kept = 0, side = 0, limit = k // 16 + 16, j, w
    cdef uint32_t x
    for i in range(k):
        x = v[i]
        if kept == 0 or x >= v[kept - 1]:
            v[kept] = x
            kept += 1
        elif kept == 1 or x >= v[kept - 2]:  # the run's last value is the one out of place
            tmp[side] = v[kept - 1]
            side += 1
            v[kept - 1] = x
        else:
            tmp[side] = x
            side += 1
        if side > limit:  # not nearly sorted: everything back in v, radix sort
            memcpy(v + kept, tmp, side * 4)   # fills v[kept:i + 1], the values taken out
            _radix32(v, tmp, k)
            return
    if side == 0:
        return
    qsort(tmp, side, 4, _cmp32)
    i, j, w = kept - 1, side - 1, k - 1   # merge from the back into v[0:k]
    while j >= 0:
        if i >= 0 and v[i] > tmp[j]:
            v[w] = v[i]
            i -= 1
        else:
            v[w] = tmp[j]
            j -= 1
        w -= 1


cdef const char *_utf8(object item, Py_ssize_t *size) except? NULL:
    """The UTF-8 text of ``item`` and its length, or NULL when it is not a str (or one with
    lone surrogates, which is no address or MAC either)."""
    if type(item) is not str:
        return NULL
    try:
        return PyUnicode_AsUTF8AndSize(item, size)
    except UnicodeError:
        return NULL


cdef bint _plain_mac(object m):
    """``m`` is a MAC written aa:bb:cc:dd:ee:ff (hex digits of either case)."""
    cdef Py_ssize_t ln, i
    cdef char c
    cdef const char *s = _utf8(m, &ln)
    if s == NULL or ln != 17:
        return False
    for i in range(17):
        c = s[i]
        if i % 3 == 2:
            if c != c':':
                return False
        elif not ((c'0' <= c <= c'9') or (c'a' <= c <= c'f') or (c'A' <= c <= c'F')):
            return False
    return True


cdef inline bint _dotted_quad(const char *s, Py_ssize_t ln, uint32_t *out) noexcept nogil:
    """Parse ``s`` (``ln`` bytes) as four decimal octets 0-255 of one to three digits without
    leading zeros, separated by dots and nothing else; the address in host order in ``out``.
    Every text it accepts, inet_pton(AF_INET) accepts with the same value (the caller asks
    inet_pton about the rest), at a fraction of its cost."""
    cdef Py_ssize_t i = 0
    cdef uint32_t v = 0, octet
    cdef int part, digits
    cdef unsigned char c
    if ln < 7 or ln > 15:
        return False
    for part in range(4):
        if part:
            if i >= ln or s[i] != c'.':
                return False
            i += 1
        octet = 0
        digits = 0
        while i < ln and digits < 4:
            c = <unsigned char>s[i] - 48  # '0'
            if c > 9:
                break
            if digits and octet == 0:
                return False  # a leading zero
            octet = octet * 10 + c
            digits += 1
            i += 1
        if digits == 0 or digits > 3 or octet > 255:
            return False
        v = (v << 8) | octet
    if i != ln:
        return False
    out[0] = v
    return True


def pack_addrs(seq, int family, bint check_macs=False):
    """(packed, rejects): the host addresses of ``seq`` (str, or [ip, mac] pairs) of one family
    as sorted, de-duplicated big-endian records (4 or 16 bytes each), and the (index, item)
    pairs that are not plain host addresses of that family (prefixes, bad values) for the
    caller's slow path; with ``check_macs`` also the pairs whose MAC is neither null nor
    written aa:bb:cc:dd:ee:ff. No I/O."""
    cdef int af = AF_INET if family == 4 else AF_INET6
    cdef Py_ssize_t width = 4 if family == 4 else 16
    cdef Py_ssize_t n = len(seq)
    cdef Py_ssize_t i, k = 0, m, ln
    cdef const char *s
    cdef list rejects = []
    cdef list items = seq if type(seq) is list else list(seq)
    cdef bytes out
    cdef unsigned char *buf
    cdef uint32_t *v
    cdef uint32_t *tmp
    cdef object item
    cdef bint four = family == 4
    cdef bytearray work = bytearray(max(1, n) * width * (2 if family == 4 else 1))
    buf = <unsigned char *>(<char *>work)
    v = <uint32_t *>buf
    for i in range(n):
        item = items[i]
        if type(item) is not str:
            if type(item) is list or type(item) is tuple:
                if check_macs and len(item) > 1 and item[1] is not None \
                        and not _plain_mac(item[1]):
                    rejects.append((i, item))
                    continue
                item = item[0] if len(item) else None
            if type(item) is not str:
                rejects.append((i, items[i]))
                continue
        s = _utf8(item, &ln)
        if s == NULL:  # lone surrogates: not an address
            rejects.append((i, items[i]))
            continue
        if four:
            if _dotted_quad(s, ln, v + k):  # host order, as the sort below wants
                k += 1
                continue
            if <Py_ssize_t>strlen(s) != ln or inet_pton(af, s, v + k) != 1:
                rejects.append((i, items[i]))
                continue
            v[k] = ntohl(v[k])
        elif <Py_ssize_t>strlen(s) != ln or inet_pton(af, s, buf + k * width) != 1:
            rejects.append((i, items[i]))
            continue
        k += 1
    if four:
        tmp = <uint32_t *>(buf + n * 4)
        _sort32(v, tmp, k)
        m = 0
        for i in range(k):
            if m == 0 or v[i] != v[m - 1]:
                v[m] = v[i]
                m += 1
        for i in range(m):
            v[i] = htonl(v[i])
    else:
        m = 1
        for i in range(1, k):  # already sorted? skip the sort
            if memcmp(buf + i * 16, buf + (i - 1) * 16, 16) < 0:
                m = 0
                break
        if not m:
            qsort(buf, k, 16, _cmp16)
        m = 0
        for i in range(k):
            if m == 0 or memcmp(buf + i * 16, buf + (m - 1) * 16, 16) != 0:
                if m != i:
                    memcpy(buf + m * 16, buf + i * 16, 16)
                m += 1
    out = PyBytes_FromStringAndSize(<char *>buf, m * width)
    return out, rejects


def diff_packed(bytes new, bytes old, int width):
    """(added, removed) between two sorted de-duplicated packed lists (records of ``width``
    bytes): records only in ``new``, records only in ``old``; both packed and sorted (``new``
    itself, not a copy, when ``old`` is empty, and ``old`` itself when ``new`` is). No I/O."""
    if not old or not new:
        return new, old
    cdef Py_ssize_t na = len(new) // width, nb = len(old) // width
    cdef Py_ssize_t i = 0, j = 0, ka = 0, kr = 0
    cdef const unsigned char *a = <const unsigned char *>PyBytes_AS_STRING(new)
    cdef const unsigned char *b = <const unsigned char *>PyBytes_AS_STRING(old)
    cdef bytearray add = bytearray(na * width)
    cdef bytearray rem = bytearray(nb * width)
    cdef unsigned char *pa = <unsigned char *>(<char *>add) if na else NULL
    cdef unsigned char *pr = <unsigned char *>(<char *>rem) if nb else NULL
    cdef int c
    with nogil:
        while i < na and j < nb:
            c = memcmp(a + i * width, b + j * width, width)
            if c == 0:
                i += 1
                j += 1
            elif c < 0:
                memcpy(pa + ka * width, a + i * width, width)
                ka += 1
                i += 1
            else:
                memcpy(pr + kr * width, b + j * width, width)
                kr += 1
                j += 1
        while i < na:
            memcpy(pa + ka * width, a + i * width, width)
            ka += 1
            i += 1
        while j < nb:
            memcpy(pr + kr * width, b + j * width, width)
            kr += 1
            j += 1
    return bytes(add[:ka * width]), bytes(rem[:kr * width])


cdef bint _bsearch(const unsigned char *p, Py_ssize_t n, const unsigned char *r,
                   int width) noexcept nogil:
    cdef Py_ssize_t lo = 0, hi = n, mid
    cdef int c
    while lo < hi:
        mid = (lo + hi) >> 1
        c = memcmp(p + mid * width, r, width)
        if c == 0:
            return True
        if c < 0:
            lo = mid + 1
        else:
            hi = mid
    return False


def merge_packed(bytes a, bytes b, int width):
    """The sorted de-duplicated union of two sorted de-duplicated packed lists (records of
    ``width`` bytes); ``a`` itself when ``b`` is empty. No I/O."""
    cdef Py_ssize_t na = len(a) // width, nb = len(b) // width
    if nb == 0:
        return a
    if na == 0:
        return b
    cdef Py_ssize_t i = 0, j = 0, k = 0
    cdef const unsigned char *pa = <const unsigned char *>PyBytes_AS_STRING(a)
    cdef const unsigned char *pb = <const unsigned char *>PyBytes_AS_STRING(b)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, (na + nb) * width)
    cdef unsigned char *po = <unsigned char *>PyBytes_AS_STRING(out)
    cdef int c
    with nogil:
        while i < na and j < nb:
            c = memcmp(pa + i * width, pb + j * width, width)
            if c <= 0:
                memcpy(po + k * width, pa + i * width, width)
                i += 1
                if c == 0:
                    j += 1
            else:
                memcpy(po + k * width, pb + j * width, width)
                j += 1
            k += 1
        if i < na:
            memcpy(po + k * width, pa + i * width, (na - i) * width)
            k += na - i
        if j < nb:
            memcpy(po + k * width, pb + j * width, (nb - j) * width)
            k += nb - j
    if k == na + nb:
        return out
    return out[:k * width]


def packed_contains(bytes packed, bytes record, int width):
    """True when ``record`` (``width`` bytes) is one of the records of ``packed`` (sorted,
    de-duplicated): a binary search, O(log n). No I/O."""
    if len(record) != width:
        return False
    return _bsearch(<const unsigned char *>PyBytes_AS_STRING(packed), len(packed) // width,
                    <const unsigned char *>PyBytes_AS_STRING(record), width)


cdef bint _record_of(object item, int family, unsigned char *rec):
    """The record of ``item`` in ``rec`` (big-endian, 4 or 16 bytes): False when ``item`` is
    not the text of a host address of ``family``."""
    cdef Py_ssize_t size
    cdef uint32_t v
    cdef const char *text = _utf8(item, &size)
    if text == NULL:
        return False
    if family == 4:
        if _dotted_quad(text, size, &v):
            v = htonl(v)
            memcpy(rec, &v, 4)
            return True
        return <Py_ssize_t>strlen(text) == size and inet_pton(AF_INET, text, rec) == 1
    return <Py_ssize_t>strlen(text) == size and inet_pton(AF_INET6, text, rec) == 1


def addr_in(item, int family, bytes packed, set plus, set minus):
    """Whether ``item`` is a member of a packed address set: -1 when it is not the text of a
    host address of ``family`` (the caller looks elsewhere), else 1 when its record is in
    ``plus`` or in ``packed`` (sorted records) and not in ``minus`` (sets of records), else 0.
    No I/O."""
    cdef unsigned char rec[16]
    cdef int width = 4 if family == 4 else 16
    if not _record_of(item, family, rec):
        return -1
    if plus or minus:
        key = PyBytes_FromStringAndSize(<char *>rec, width)
        if key in plus:
            return 1
        if key in minus:
            return 0
    return 1 if _bsearch(<const unsigned char *>PyBytes_AS_STRING(packed), len(packed) // width,
                         rec, width) else 0


def addr_change(item, int family, bytes packed, set plus, set minus, bint adding):
    """Add (``adding``) or remove one member of a packed address set (``packed``: sorted
    records; ``plus``: records added since, not in ``packed``; ``minus``: records of
    ``packed`` removed since): -1 when ``item`` is not the text of a host address of
    ``family`` (nothing changed, the caller looks elsewhere), 0 when the set already was so,
    1 when it changed (a record taken back from one overlay or recorded in the other).
    No I/O."""
    cdef unsigned char rec[16]
    cdef int width = 4 if family == 4 else 16
    cdef bint in_base
    if not _record_of(item, family, rec):
        return -1
    key = PyBytes_FromStringAndSize(<char *>rec, width)
    if key in plus:
        if adding:
            return 0
        plus.discard(key)
        return 1
    in_base = _bsearch(<const unsigned char *>PyBytes_AS_STRING(packed), len(packed) // width,
                       rec, width)
    if in_base and key not in minus:  # a member
        if adding:
            return 0
        minus.add(key)
        return 1
    if not adding:
        return 0
    if in_base:
        minus.discard(key)
    else:
        plus.add(key)
    return 1


def unpack_addrs(bytes packed, int family):
    """The canonical text of every record of a packed list (inet_ntop), in order. No I/O."""
    cdef int af = AF_INET if family == 4 else AF_INET6
    cdef Py_ssize_t width = 4 if family == 4 else 16
    cdef Py_ssize_t n = len(packed) // width, i
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(packed)
    cdef char text[64]
    cdef list out = [None] * n
    for i in range(n):
        inet_ntop(af, p + i * width, text, 64)
        out[i] = text.decode("ascii")
    return out


# ---- direct element batches: set elements without libnftables' cache refill ------------------

cimport netlink as N
cimport nftexpr as X
from posix.time cimport timespec
from libc.errno cimport errno
from libc.string cimport memset, strerror

cdef extern from "poll.h" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    enum:
        POLLIN

cdef extern from "sys/socket.h" nogil:
    int setsockopt(int sockfd, int level, int optname, const void *optval, unsigned int optlen)
    ctypedef struct iovec_t "struct iovec":
        void *iov_base
        size_t iov_len
    ctypedef struct msghdr_t "struct msghdr":
        void *msg_name
        unsigned int msg_namelen
        iovec_t *msg_iov
        size_t msg_iovlen
        int msg_flags
    ssize_t recvmsg(int sockfd, msghdr_t *msg, int flags)
    enum:
        SOL_SOCKET
        SO_SNDBUFFORCE
        SO_RCVBUFFORCE
        MSG_DONTWAIT
        MSG_TRUNC

cdef extern from "linux/netlink.h" nogil:
    struct sockaddr_nl:
        unsigned short nl_family

cdef extern from "errno.h" nogil:
    enum:
        EAGAIN
        ENOSPC
        EINVAL

cdef extern from *:
    """
    #include <errno.h>
    static inline void fwsg_errno_set(int e) { errno = e; }
    """
    void errno_set "fwsg_errno_set"(int e) nogil

cdef enum:
    _PAGE = 4 * 1024 * 1024
    _OVERRUN = 1024 * 1024   # room for the message that crosses the page end (see commit)
    _PER_MSG = 256           # elements per message: < 20 KB each
    _MAX_ELEMENTS = 40000    # per batch: callers (plan.netlink_ops) stay below it
    _NFPROTO_INET = 1
    _NFPROTO_BRIDGE = 7

_FAMILIES = {"inet": _NFPROTO_INET, "bridge": _NFPROTO_BRIDGE}


cdef class NetlinkWriter:
    """Commits changes to fwsg's tables as one nf_tables netlink batch built with libnftnl:
    tables, set and map declarations, chains (base chains too) and their rules as expressions,
    set/map elements of the types fwsg uses. Atomic like any nft transaction, without
    libnftables' parsing and cache refill (which grows with the number of chains in the
    ruleset). Bound to the network namespace current at construction."""

    cdef N.mnl_socket *nl
    cdef unsigned int portid
    cdef unsigned int seq
    cdef unsigned int set_id   # NFTA_SET_ID of the sets a batch declares
    cdef bint _echo_next
    cdef bint _settled             # the last batch was answered to its end: nothing is left
    cdef unsigned int _rule_seq    # sequence number of the last NEWRULE message built
    cdef N.nlmsghdr *_last         # the last message built into the current batch
    cdef public object generation   # generation made by the last commit (echo), or None

    def __cinit__(self):
        cdef int size = 16 * 1024 * 1024
        self.generation = None
        self._echo_next = False
        self._settled = False
        self.nl = N.mnl_socket_open(N.NETLINK_NETFILTER)
        if self.nl == NULL:
            raise KernelError("netlink: cannot open a netfilter socket")
        if N.mnl_socket_bind(self.nl, 0, N.MNL_SOCKET_AUTOPID) < 0:
            N.mnl_socket_close(self.nl)
            self.nl = NULL
            raise KernelError("netlink: cannot bind the netfilter socket")
        self.portid = N.mnl_socket_get_portid(self.nl)
        setsockopt(N.mnl_socket_get_fd(self.nl), SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(int))
        setsockopt(N.mnl_socket_get_fd(self.nl), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(int))
        self.seq = 1

    def __dealloc__(self):
        if self.nl != NULL:
            N.mnl_socket_close(self.nl)
            self.nl = NULL

    def close(self):
        """Close the socket (idempotent)."""
        if self.nl != NULL:
            N.mnl_socket_close(self.nl)
            self.nl = NULL

    cdef N.nlmsghdr *_hdr(self, N.nftnl_batch *b, int msg_type, int fam, int flags):
        if self._echo_next:  # the kernel reports the generation to the first message's sender
            flags |= N.NLM_F_ECHO
            self._echo_next = False
        cdef N.nlmsghdr *nlh = N.nftnl_nlmsg_build_hdr(<char *>N.nftnl_batch_buffer(b), msg_type,
                                                       fam, flags, self.seq)
        self.seq += 1
        self._last = nlh
        return nlh

    def commit(self, ops, genid=None, bint echo=False):
        """Commit ``ops`` as one atomic batch, in order. Each op is a tuple:
        ("chain", family, name) creates a chain; ("rule", family, chain, verdict, target,
        comment[, before, replace]) adds a rule whose only statement is ``verdict`` ("jump" to
        ``target`` or "drop"), with ``comment`` or None; ("xrule", family, chain, text, exprs,
        comment[, before, replace]) adds a rule of matches (``exprs`` from
        fwsg.backends.nft.matches, ``text`` its nft text): appended at the chain's end, or
        inserted before the rule whose handle is ``before``, or replacing the rule whose handle
        is ``replace``; ("delrule", family, chain, handle) deletes one rule by handle;
        ("flush", family, chain) removes a chain's rules;
        ("delchain", family, chain) deletes an empty chain; ("chain", family, name, hooknum,
        priority, policy, text) creates a base chain of type filter; ("table", family, text) and
        ("deltable", family, text) create and delete fwsg's table; ("set", family, name, flags,
        key_type, key_len, data_type, data_len, userdata, field_lens, text) declares a set or
        map (``data_type`` None for a set; ``field_lens`` bytes for a concatenated interval
        key, else None); ("delset", family, name, text) deletes one (``text``: the nft statement,
        for the twin); ("elem", add, family, set, texts,
        keys, width, values) adds/deletes elements: ``keys`` packed records of ``width`` bytes
        or a list of bytes, ``values`` None or a list (bytes of a map value, the chain name
        of a jump, or an int verdict code: 0 drop), ``texts`` their nft text. ``family`` is
        "inet" or "bridge".

        ``genid``: the nf_tables generation the batch was made against; the kernel refuses the
        whole batch (errno ERESTART) when anyone committed anything since. ``echo``: the
        kernel reports the handle of every rule created and the generation the batch made
        (``self.generation``, else None). Returns a list with, per op, the new rule's handle
        (int) for "rule"/"xrule" (None when not echoed) and None for the other kinds. Raises
        KernelError (nothing changed) when the kernel refuses, ValueError (nothing sent) for
        ops it cannot encode or a batch larger than one page."""
        if self.nl == NULL:
            raise KernelError("netlink socket is closed")
        self.generation = None
        cdef N.nftnl_batch *b = N.nftnl_batch_alloc(_PAGE, _OVERRUN)
        if b == NULL:
            raise MemoryError()
        cdef int nmsgs = 0
        cdef N.iovec iov
        cdef N.nlmsghdr *begin
        cdef Py_ssize_t total = 0
        for op in ops:    # a loop, not a generator: a rule change sends two or three ops
            if op[0] == "elem":
                total += len(op[4])
        if total > _MAX_ELEMENTS:
            N.nftnl_batch_free(b)
            raise ValueError(f"{total} elements in one batch; at most {_MAX_ELEMENTS}")
        cdef unsigned int first_seq = self.seq
        cdef list seqs = [None] * len(ops)   # message sequence number of each rule op
        cdef dict handles = {}
        self._echo_next = echo               # the first message asks for the generation
        self._last = NULL
        try:
            begin = N.nftnl_batch_begin(<char *>N.nftnl_batch_buffer(b), self.seq)
            if genid is not None:
                N.mnl_attr_put_u32(begin, 1, htonl(<uint32_t>genid))  # NFNL_BATCH_GENID
            self.seq += 1
            N.nftnl_batch_update(b)
            for i, op in enumerate(ops):
                kind = op[0]
                if kind == "elem":
                    nmsgs += self._elements(b, op)  # advances the batch itself, per message
                    continue
                if kind == "rule":
                    self._rule(b, op, echo)
                    seqs[i] = self._rule_seq
                elif kind == "xrule":
                    nmsgs += self._xrule(b, op, echo)   # anonymous sets it declares first
                    seqs[i] = self._rule_seq
                elif kind in ("chain", "flush", "delchain", "delrule"):
                    self._chain(b, kind, op)
                elif kind in ("table", "deltable"):
                    self._table(b, kind, op)
                elif kind == "set":
                    self._set(b, op)
                elif kind == "delset":
                    self._delset(b, op)
                else:
                    raise ValueError(f"unknown netlink op {kind!r}")
                nmsgs += 1
                if N.nftnl_batch_update(b) < 0:
                    raise ValueError("netlink: batch too large for one page")
            if self._last != NULL:
                # only the last message asks for an acknowledgement: the kernel answers a
                # batch while it is sent, failures always, in order, so that one ack ends it
                # (one answer per message cost a read each: ~6,000 for a 50k-member start)
                self._last.nlmsg_flags |= N.NLM_F_ACK
            N.nftnl_batch_end(<char *>N.nftnl_batch_buffer(b), self.seq)
            self.seq += 1
            N.nftnl_batch_update(b)
            if N.nftnl_batch_iovec_len(b) > 1:
                raise ValueError("netlink: batch too large for one page")
            if nmsgs:
                N.nftnl_batch_iovec(b, &iov, 1)
                self._talk(iov.iov_base, iov.iov_len, self._last.nlmsg_seq, first_seq,
                           self.seq, handles)
        finally:
            N.nftnl_batch_free(b)
        return [None if q is None else handles.get(q) for q in seqs]

    cdef _chain(self, N.nftnl_batch *b, str kind, tuple op):
        cdef int fam = _FAMILIES[op[1]]
        cdef bytes name = op[2].encode()
        cdef N.nftnl_chain *c
        cdef N.nftnl_rule *r
        cdef N.nlmsghdr *nlh
        if kind == "flush" or kind == "delrule":
            r = N.nftnl_rule_alloc()
            N.nftnl_rule_set_str(r, N.NFTNL_RULE_TABLE, b"fwsg")
            N.nftnl_rule_set_str(r, N.NFTNL_RULE_CHAIN, name)
            if kind == "delrule":
                N.nftnl_rule_set_u64(r, N.NFTNL_RULE_HANDLE, <uint64_t>op[3])
            nlh = self._hdr(b, N.NFT_MSG_DELRULE, fam, 0)
            N.nftnl_rule_nlmsg_build_payload(nlh, r)
            N.nftnl_rule_free(r)
            return
        c = N.nftnl_chain_alloc()
        N.nftnl_chain_set_str(c, N.NFTNL_CHAIN_TABLE, b"fwsg")
        N.nftnl_chain_set_str(c, N.NFTNL_CHAIN_NAME, name)
        if kind == "chain" and len(op) > 3:   # a base chain: hook, priority, policy
            N.nftnl_chain_set_u32(c, N.NFTNL_CHAIN_HOOKNUM, <uint32_t>op[3])
            N.nftnl_chain_set_s32(c, N.NFTNL_CHAIN_PRIO, <int32_t>op[4])
            N.nftnl_chain_set_str(c, N.NFTNL_CHAIN_TYPE, b"filter")
            N.nftnl_chain_set_u32(c, N.NFTNL_CHAIN_POLICY, <uint32_t>op[5])
        if kind == "chain":
            nlh = self._hdr(b, N.NFT_MSG_NEWCHAIN, fam, N.NLM_F_CREATE)
        else:
            nlh = self._hdr(b, N.NFT_MSG_DELCHAIN, fam, 0)
        N.nftnl_chain_nlmsg_build_payload(nlh, c)
        N.nftnl_chain_free(c)

    cdef _table(self, N.nftnl_batch *b, str kind, tuple op):
        cdef int fam = _FAMILIES[op[1]]
        cdef N.nftnl_table *t = N.nftnl_table_alloc()
        cdef N.nlmsghdr *nlh
        if t == NULL:
            raise MemoryError()
        N.nftnl_table_set_str(t, N.NFTNL_TABLE_NAME, b"fwsg")
        if kind == "table":
            N.nftnl_table_set_u32(t, N.NFTNL_TABLE_FLAGS, 0)
            nlh = self._hdr(b, N.NFT_MSG_NEWTABLE, fam, N.NLM_F_CREATE)
        else:
            nlh = self._hdr(b, N.NFT_MSG_DELTABLE, fam, 0)
        N.nftnl_table_nlmsg_build_payload(nlh, t)
        N.nftnl_table_free(t)

    cdef _set(self, N.nftnl_batch *b, tuple op):
        _, family, name, flags, key_type, key_len, data_type, data_len, udata, fields, _t = op
        self._declare(b, family, name.encode(), flags, key_type, key_len, data_type, data_len,
                      udata, fields, 0)

    cdef unsigned int _declare(self, N.nftnl_batch *b, str family, bytes name, uint32_t flags,
                               uint32_t key_type, uint32_t key_len, object data_type,
                               object data_len, bytes udata, object fields,
                               uint32_t size) except 0:
        """One NEWSET message; returns the set's NFTA_SET_ID."""
        cdef int fam = _FAMILIES[family]
        cdef N.nftnl_set *s = N.nftnl_set_alloc()
        cdef N.nlmsghdr *nlh
        cdef bytes fl
        if s == NULL:
            raise MemoryError()
        self.set_id += 1
        try:
            N.nftnl_set_set_str(s, N.NFTNL_SET_TABLE, b"fwsg")
            N.nftnl_set_set_str(s, N.NFTNL_SET_NAME, name)
            N.nftnl_set_set_u32(s, N.NFTNL_SET_FLAGS, flags)
            N.nftnl_set_set_u32(s, N.NFTNL_SET_KEY_TYPE, key_type)
            N.nftnl_set_set_u32(s, N.NFTNL_SET_KEY_LEN, key_len)
            if data_type is not None:
                N.nftnl_set_set_u32(s, N.NFTNL_SET_DATA_TYPE, <uint32_t>data_type)
                N.nftnl_set_set_u32(s, N.NFTNL_SET_DATA_LEN, <uint32_t>data_len)
            N.nftnl_set_set_u32(s, N.NFTNL_SET_ID, self.set_id)
            if size:
                N.nftnl_set_set_u32(s, N.NFTNL_SET_DESC_SIZE, size)
            if fields is not None:
                fl = fields
                N.nftnl_set_set_data(s, N.NFTNL_SET_DESC_CONCAT, <const char *>fl, len(fl))
            N.nftnl_set_set_data(s, N.NFTNL_SET_USERDATA, <const char *>udata, len(udata))
            nlh = self._hdr(b, N.NFT_MSG_NEWSET, fam, N.NLM_F_CREATE)
            N.nftnl_set_nlmsg_build_payload(nlh, s)
        finally:
            N.nftnl_set_free(s)
        return self.set_id

    cdef _delset(self, N.nftnl_batch *b, tuple op):
        cdef int fam = _FAMILIES[op[1]]
        cdef bytes name = op[2].encode()
        cdef N.nftnl_set *s = N.nftnl_set_alloc()
        cdef N.nlmsghdr *nlh
        if s == NULL:
            raise MemoryError()
        N.nftnl_set_set_str(s, N.NFTNL_SET_TABLE, b"fwsg")
        N.nftnl_set_set_str(s, N.NFTNL_SET_NAME, name)
        nlh = self._hdr(b, N.NFT_MSG_DELSET, fam, 0)
        N.nftnl_set_nlmsg_build_payload(nlh, s)
        N.nftnl_set_free(s)

    cdef unsigned int _anonymous(self, N.nftnl_batch *b, str family, tuple ex) except 0:
        """An anonymous constant set and its elements (two messages); returns its set id.
        ``ex``: ("anonlookup", sreg, key_type, key_len, userdata, keys)."""
        cdef list keys = list(ex[5])
        cdef unsigned int sid = self._declare(b, family, b"__set%d", 3, ex[2], ex[3], None,
                                              None, ex[4], None, len(keys))
        cdef N.nftnl_set *s = N.nftnl_set_alloc()
        cdef N.nlmsghdr *nlh
        if s == NULL:
            raise MemoryError()
        N.nftnl_batch_update(b)
        try:
            N.nftnl_set_set_str(s, N.NFTNL_SET_TABLE, b"fwsg")
            N.nftnl_set_set_str(s, N.NFTNL_SET_NAME, b"__set%d")
            N.nftnl_set_set_u32(s, N.NFTNL_SET_ID, sid)
            self._fill(s, 0, len(keys), False, NULL, 0, keys, None)
            nlh = self._hdr(b, N.NFT_MSG_NEWSETELEM, _FAMILIES[family], N.NLM_F_CREATE)
            N.nftnl_set_elems_nlmsg_build_payload(nlh, s)
        finally:
            N.nftnl_set_free(s)
        N.nftnl_batch_update(b)
        return sid

    cdef _rule(self, N.nftnl_batch *b, tuple op, bint echo):
        _, family, chain, verdict, target, comment = op[:6]
        cdef int fam = _FAMILIES[family]
        cdef bytes chain_b = chain.encode()
        cdef bytes target_b
        cdef bytes comment_b
        cdef N.nftnl_rule *r = N.nftnl_rule_alloc()
        cdef N.nftnl_expr *e = N.nftnl_expr_alloc(b"immediate")
        cdef N.nftnl_udata_buf *ud = NULL
        cdef N.nlmsghdr *nlh
        try:
            N.nftnl_rule_set_str(r, N.NFTNL_RULE_TABLE, b"fwsg")
            N.nftnl_rule_set_str(r, N.NFTNL_RULE_CHAIN, chain_b)
            N.nftnl_expr_set_u32(e, N.NFTNL_EXPR_IMM_DREG, N.NFT_REG_VERDICT)
            if verdict == "jump":
                target_b = target.encode()
                N.nftnl_expr_set_u32(e, N.NFTNL_EXPR_IMM_VERDICT, <uint32_t>N.NFT_JUMP)
                N.nftnl_expr_set_str(e, N.NFTNL_EXPR_IMM_CHAIN, target_b)
            elif verdict == "drop":
                N.nftnl_expr_set_u32(e, N.NFTNL_EXPR_IMM_VERDICT, N.NF_DROP)
            else:
                raise ValueError(f"unsupported verdict {verdict!r}")
            N.nftnl_rule_add_expr(r, e)
            e = NULL
            if comment is not None:
                comment_b = comment.encode()
                ud = N.nftnl_udata_buf_alloc(256)
                if not N.nftnl_udata_put_strz(ud, N.NFTNL_UDATA_RULE_COMMENT, comment_b):
                    raise ValueError("comment too long")
                N.nftnl_rule_set_data(r, N.NFTNL_RULE_USERDATA, N.nftnl_udata_buf_data(ud),
                                      N.nftnl_udata_buf_len(ud))
            self._newrule(b, r, fam, op, echo)
        finally:
            if ud != NULL:
                N.nftnl_udata_buf_free(ud)
            N.nftnl_rule_free(r)

    cdef _newrule(self, N.nftnl_batch *b, N.nftnl_rule *r, int fam, tuple op, bint echo):
        """The NEWRULE message of rule ``r``: appended, or with ``op[6]`` (a handle) inserted
        before that rule, or with ``op[7]`` replacing it; echoed (its handle reported) with
        ``echo``. Its sequence number goes to ``self._rule_seq``."""
        cdef object before = op[6] if len(op) > 6 else None
        cdef object replace = op[7] if len(op) > 7 else None
        cdef int flags
        if replace is not None:
            N.nftnl_rule_set_u64(r, N.NFTNL_RULE_HANDLE, <uint64_t>replace)
            flags = N.NLM_F_REPLACE
        elif before is not None:  # without NLM_F_APPEND: before the rule at POSITION
            N.nftnl_rule_set_u64(r, N.NFTNL_RULE_POSITION, <uint64_t>before)
            flags = N.NLM_F_CREATE
        else:
            flags = N.NLM_F_CREATE | N.NLM_F_APPEND
        if echo:
            flags |= N.NLM_F_ECHO
        self._rule_seq = self.seq
        N.nftnl_rule_nlmsg_build_payload(self._hdr(b, N.NFT_MSG_NEWRULE, fam, flags), r)

    cdef int _xrule(self, N.nftnl_batch *b, tuple op, bint echo) except -1:
        """Append a rule built from expressions (fwsg.backends.nft.matches); returns the
        messages it added besides the rule (anonymous sets). Expressions: ("meta", key[,
        dreg]), ("metaset", key, sreg), ("ct", key, dreg), ("ctset", key, sreg), ("imm", dreg,
        data), ("cmp", op, data[, sreg]), ("payload", base, offset, length[, dreg]),
        ("bitwise", mask, xor[, reg]), ("lookup", set name[, sreg, dreg, flags]) (dreg -1:
        none), ("anonlookup", sreg, key_type, key_len, userdata, keys) (an anonymous
        constant set declared in the same batch), ("verdict", code[, chain]); registers
        default to 1."""
        _, family, chain, _text, exprs, comment = op[:6]
        cdef int fam = _FAMILIES[family]
        cdef bytes chain_b = chain.encode()
        cdef bytes data, data2, comment_b
        cdef N.nftnl_rule *r = N.nftnl_rule_alloc()
        cdef N.nftnl_expr *e = NULL
        cdef N.nftnl_udata_buf *ud = NULL
        cdef N.nlmsghdr *nlh
        cdef int extra = 0, n
        cdef unsigned int sid
        try:
            N.nftnl_rule_set_str(r, N.NFTNL_RULE_TABLE, b"fwsg")
            N.nftnl_rule_set_str(r, N.NFTNL_RULE_CHAIN, chain_b)
            for ex in exprs:
                kind = ex[0]
                n = len(ex)
                if kind == "meta":
                    e = N.nftnl_expr_alloc(b"meta")
                    N.nftnl_expr_set_u32(e, X.NFTNL_EXPR_META_KEY, ex[1])
                    N.nftnl_expr_set_u32(e, X.NFTNL_EXPR_META_DREG, ex[2] if n > 2 else 1)
                elif kind == "metaset":
                    e = N.nftnl_expr_alloc(b"meta")
                    N.nftnl_expr_set_u32(e, X.NFTNL_EXPR_META_KEY, ex[1])
                    N.nftnl_expr_set_u32(e, X.NFTNL_EXPR_META_SREG, ex[2])
                elif kind == "ct":
                    e = N.nftnl_expr_alloc(b"ct")
                    N.nftnl_expr_set_u32(e, X.NFTNL_EXPR_CT_KEY, ex[1])
                    N.nftnl_expr_set_u32(e, X.NFTNL_EXPR_CT_DREG, ex[2])
                elif kind == "ctset":
                    e = N.nftnl_expr_alloc(b"ct")
                    N.nftnl_expr_set_u32(e, X.NFTNL_EXPR_CT_KEY, ex[1])
                    N.nftnl_expr_set_u32(e, X.NFTNL_EXPR_CT_SREG, ex[2])
                elif kind == "imm":
                    data = ex[2]
                    e = N.nftnl_expr_alloc(b"immediate")
                    N.nftnl_expr_set_u32(e, N.NFTNL_EXPR_IMM_DREG, ex[1])
                    X.nftnl_expr_set(e, X.NFTNL_EXPR_IMM_DATA, <const char *>data, len(data))
                elif kind == "cmp":
                    data = ex[2]
                    e = N.nftnl_expr_alloc(b"cmp")
                    N.nftnl_expr_set_u32(e, X.NFTNL_EXPR_CMP_SREG, ex[3] if n > 3 else 1)
                    N.nftnl_expr_set_u32(e, X.NFTNL_EXPR_CMP_OP, ex[1])
                    X.nftnl_expr_set(e, X.NFTNL_EXPR_CMP_DATA, <const char *>data, len(data))
                elif kind == "payload":
                    e = N.nftnl_expr_alloc(b"payload")
                    N.nftnl_expr_set_u32(e, X.NFTNL_EXPR_PAYLOAD_DREG, ex[4] if n > 4 else 1)
                    N.nftnl_expr_set_u32(e, X.NFTNL_EXPR_PAYLOAD_BASE, ex[1])
                    N.nftnl_expr_set_u32(e, X.NFTNL_EXPR_PAYLOAD_OFFSET, ex[2])
                    N.nftnl_expr_set_u32(e, X.NFTNL_EXPR_PAYLOAD_LEN, ex[3])
                elif kind == "bitwise":
                    data, data2 = ex[1], ex[2]
                    e = N.nftnl_expr_alloc(b"bitwise")
                    N.nftnl_expr_set_u32(e, X.NFTNL_EXPR_BITWISE_SREG, ex[3] if n > 3 else 1)
                    N.nftnl_expr_set_u32(e, X.NFTNL_EXPR_BITWISE_DREG, ex[3] if n > 3 else 1)
                    N.nftnl_expr_set_u32(e, X.NFTNL_EXPR_BITWISE_LEN, len(data))
                    X.nftnl_expr_set(e, X.NFTNL_EXPR_BITWISE_MASK, <const char *>data, len(data))
                    X.nftnl_expr_set(e, X.NFTNL_EXPR_BITWISE_XOR, <const char *>data2,
                                     len(data2))
                elif kind == "lookup":
                    data = ex[1].encode()
                    e = N.nftnl_expr_alloc(b"lookup")
                    N.nftnl_expr_set_u32(e, X.NFTNL_EXPR_LOOKUP_SREG, ex[2] if n > 2 else 1)
                    N.nftnl_expr_set_str(e, X.NFTNL_EXPR_LOOKUP_SET, data)
                    if n > 3 and ex[3] >= 0:
                        N.nftnl_expr_set_u32(e, X.NFTNL_EXPR_LOOKUP_DREG, ex[3])
                    if n > 4 and ex[4]:
                        N.nftnl_expr_set_u32(e, X.NFTNL_EXPR_LOOKUP_FLAGS, ex[4])
                elif kind == "anonlookup":
                    sid = self._anonymous(b, family, ex)
                    extra += 2
                    e = N.nftnl_expr_alloc(b"lookup")
                    N.nftnl_expr_set_u32(e, X.NFTNL_EXPR_LOOKUP_SREG, ex[1])
                    N.nftnl_expr_set_str(e, X.NFTNL_EXPR_LOOKUP_SET, b"__set%d")
                    N.nftnl_expr_set_u32(e, X.NFTNL_EXPR_LOOKUP_SET_ID, sid)
                elif kind == "verdict":
                    e = N.nftnl_expr_alloc(b"immediate")
                    N.nftnl_expr_set_u32(e, N.NFTNL_EXPR_IMM_DREG, N.NFT_REG_VERDICT)
                    N.nftnl_expr_set_u32(e, N.NFTNL_EXPR_IMM_VERDICT, <uint32_t><int>ex[1])
                    if n > 2:
                        data = ex[2].encode()
                        N.nftnl_expr_set_str(e, N.NFTNL_EXPR_IMM_CHAIN, data)
                else:
                    raise ValueError(f"unknown expression {kind!r}")
                if e == NULL:
                    raise MemoryError()
                N.nftnl_rule_add_expr(r, e)   # owned by the rule from here on
                e = NULL
            if comment is not None:
                comment_b = comment.encode()
                ud = N.nftnl_udata_buf_alloc(256)
                if not N.nftnl_udata_put_strz(ud, N.NFTNL_UDATA_RULE_COMMENT, comment_b):
                    raise ValueError("comment too long")
                N.nftnl_rule_set_data(r, N.NFTNL_RULE_USERDATA, N.nftnl_udata_buf_data(ud),
                                      N.nftnl_udata_buf_len(ud))
            self._newrule(b, r, fam, op, echo)
        finally:
            if e != NULL:
                X.nftnl_expr_free(e)
            if ud != NULL:
                N.nftnl_udata_buf_free(ud)
            N.nftnl_rule_free(r)
        return extra

    cdef int _elements(self, N.nftnl_batch *b, tuple op) except -1:
        _, add, family, name, texts, keys, width, values = op
        cdef int fam = _FAMILIES[family]
        cdef bytes name_b = name.encode()
        cdef const unsigned char *p = NULL
        cdef Py_ssize_t n, i, end, w = width
        cdef int nmsgs = 0
        cdef N.nftnl_set *s
        cdef N.nlmsghdr *nlh
        cdef bint packed = type(keys) is bytes
        if packed:
            p = <const unsigned char *>PyBytes_AS_STRING(keys)
            n = len(keys) // w
        else:
            n = len(keys)
        i = 0
        while i < n:
            end = min(n, i + _PER_MSG)
            s = N.nftnl_set_alloc()
            if s == NULL:
                raise MemoryError()
            N.nftnl_set_set_str(s, N.NFTNL_SET_TABLE, b"fwsg")
            N.nftnl_set_set_str(s, N.NFTNL_SET_NAME, name_b)
            try:
                self._fill(s, i, end, packed, p, w, keys, values)
            except BaseException:
                N.nftnl_set_free(s)
                raise
            nlh = self._hdr(b, N.NFT_MSG_NEWSETELEM if add else N.NFT_MSG_DELSETELEM, fam,
                            N.NLM_F_CREATE if add else 0)
            N.nftnl_set_elems_nlmsg_build_payload(nlh, s)
            N.nftnl_set_free(s)
            if N.nftnl_batch_update(b) < 0:
                raise ValueError("netlink: batch too large for one page")
            nmsgs += 1
            i = end
        return nmsgs

    cdef _fill(self, N.nftnl_set *s, Py_ssize_t i, Py_ssize_t end, bint packed,
               const unsigned char *p, Py_ssize_t w, object keys, object values):
        cdef Py_ssize_t j
        cdef N.nftnl_set_elem *e
        cdef bytes kb, chain_b
        cdef int jump = N.NFT_JUMP
        cdef int code
        cdef object v
        for j in range(i, end):
            e = N.nftnl_set_elem_alloc()
            if e == NULL:
                raise MemoryError()
            N.nftnl_set_elem_add(s, e)  # owned by the set from here on
            if packed:
                N.nftnl_set_elem_set(e, N.NFTNL_SET_ELEM_KEY, p + j * w, w)
            else:
                kb = keys[j]
                N.nftnl_set_elem_set(e, N.NFTNL_SET_ELEM_KEY, <const char *>kb, len(kb))
            if values is not None:
                v = values[j]
                if type(v) is str:
                    chain_b = v.encode()
                    N.nftnl_set_elem_set(e, N.NFTNL_SET_ELEM_VERDICT, &jump, sizeof(int))
                    N.nftnl_set_elem_set_str(e, N.NFTNL_SET_ELEM_CHAIN, chain_b)
                elif type(v) is int:
                    if v != 0:
                        raise ValueError(f"unsupported verdict code {v}")
                    code = v
                    N.nftnl_set_elem_set(e, N.NFTNL_SET_ELEM_VERDICT, &code, sizeof(int))
                else:
                    kb = v
                    N.nftnl_set_elem_set(e, N.NFTNL_SET_ELEM_DATA, <const char *>kb, len(kb))

    cdef _talk(self, void *data, size_t length, unsigned int last_seq, unsigned int first_seq,
               unsigned int end_seq, dict handles):
        """Send one batch and read its answers, matched by sequence number, until the answer
        to its last message (the only one that asks for an acknowledgement; a failed message
        is answered whatever it asked); leftovers of an earlier batch that failed are drained
        first and never counted. The kernel handles a batch inside the send, so after a failure whatever
        is not queued yet never comes. Echoed rules put their handle in ``handles`` (sequence
        number -> handle), an echoed generation goes to ``self.generation``. A refusal of the
        batch itself (its begin message: a stale generation) ends it at once."""
        cdef ssize_t ret
        cdef char buf[65536]
        cdef int first_error = 0, left, rc
        cdef bint done = False
        cdef N.nlmsghdr *nlh
        cdef N.nlmsgerr *err
        cdef pollfd pfd
        pfd.fd = N.mnl_socket_get_fd(self.nl)
        pfd.events = POLLIN
        with nogil:
            # leftovers come only from a batch not answered to its end (a failure): the kernel
            # sends a batch's echoes before its answers, so after the last answer none remain
            if not self._settled:
                while _recv_now(pfd.fd, buf, sizeof(buf)) > 0:
                    pass
            self._settled = False
            ret = N.mnl_socket_sendto(self.nl, data, length)
        if ret < 0:
            raise KernelError("netlink: send failed: " + strerror(errno).decode())
        while not done:
            # the kernel answers inside the send: the answers are queued already, read
            # without a poll first (one system call less per answer); wait only for none
            with nogil:
                ret = _recv_now(pfd.fd, buf, sizeof(buf))
                if ret < 0 and errno == EAGAIN and not first_error:
                    rc = poll(&pfd, 1, 5000)
                    ret = _recv_now(pfd.fd, buf, sizeof(buf)) if rc > 0 else -1
            if ret <= 0:
                if first_error:
                    break     # the kernel stopped at the failure: no later answer will come
                raise KernelError("netlink: no answer from the kernel to a batch")
            left = <int>ret
            nlh = <N.nlmsghdr *>buf
            while N.mnl_nlmsg_ok(nlh, left):
                if first_seq <= nlh.nlmsg_seq < end_seq:
                    if nlh.nlmsg_type == N.NLMSG_ERROR:
                        err = <N.nlmsgerr *>N.mnl_nlmsg_get_payload(nlh)
                        if err.error != 0 and first_error == 0:
                            first_error = -err.error
                        if nlh.nlmsg_seq == last_seq or \
                                (err.error != 0 and nlh.nlmsg_seq == first_seq):
                            done = True   # the last answer, or the batch refused whole
                    elif nlh.nlmsg_type == _NEWRULE_MSG:
                        _echoed(nlh, 3, 8, handles)       # NFTA_RULE_HANDLE, be64
                    elif nlh.nlmsg_type == _NEWGEN_MSG:
                        gen = {}
                        _echoed(nlh, 1, 4, gen)           # NFTA_GEN_ID, be32
                        if gen:
                            self.generation = gen[nlh.nlmsg_seq]
                nlh = N.mnl_nlmsg_next(nlh, &left)
        if first_error:
            self.generation = None
            handles.clear()
            raise KernelError("nftables refused the batch: " + strerror(first_error).decode(),
                              first_error)
        self._settled = True


cdef ssize_t _recv_now(int fd, char *buf, size_t size) noexcept nogil:
    """One netlink message batch from ``fd`` if one is queued (else -1, errno EAGAIN), as
    mnl_socket_recvfrom reads it: a truncated one is an error (ENOSPC)."""
    cdef sockaddr_nl addr
    cdef iovec_t iov
    cdef msghdr_t msg
    memset(&msg, 0, sizeof(msg))
    iov.iov_base = buf
    iov.iov_len = size
    msg.msg_name = &addr
    msg.msg_namelen = sizeof(addr)
    msg.msg_iov = &iov
    msg.msg_iovlen = 1
    cdef ssize_t ret = recvmsg(fd, &msg, MSG_DONTWAIT)
    if ret < 0:
        return ret
    if msg.msg_flags & MSG_TRUNC:
        errno_set(ENOSPC)
        return -1
    if msg.msg_namelen != sizeof(addr):
        errno_set(EINVAL)
        return -1
    return ret


cdef enum:
    _NEWRULE_MSG = (10 << 8) | 6    # NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWRULE
    _NEWGEN_MSG = (10 << 8) | 15    # NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWGEN


cdef int _echoed(N.nlmsghdr *nlh, int attr, int width, dict out) except -1:
    """The big-endian integer attribute ``attr`` (``width`` bytes) of an echoed nf_tables
    message into ``out[seq]``, if present."""
    cdef const unsigned char *p = <const unsigned char *>nlh + 16 + 4  # header, nfgenmsg
    cdef const unsigned char *end = <const unsigned char *>nlh + nlh.nlmsg_len
    cdef uint16_t alen, atype
    cdef uint64_t v
    cdef int i
    while p + 4 <= end:
        alen = (<const uint16_t *>p)[0]
        atype = (<const uint16_t *>p)[1] & 0x3fff
        if alen < 4 or p + alen > end:
            return 0
        if atype == attr and alen >= 4 + width:
            v = 0
            for i in range(width):
                v = (v << 8) | p[4 + i]
            out[nlh.nlmsg_seq] = v
            return 0
        p += (alen + 3) & ~3
    return 0


# ---- conntrack table: dump and delete at C speed (libnetfilter_conntrack) -------------------

cimport conntrack as C
from libc.stdint cimport uint8_t

cdef extern from "arpa/inet.h" nogil:
    uint16_t ntohs(uint16_t)
    uint16_t htons(uint16_t)

_PORT_PROTOS = frozenset((6, 17, 33, 132, 136))


cdef int _ct_collect(C.nf_conntrack_msg_type type, C.nf_conntrack *ct, void *data) noexcept with gil:
    try:
        return _ct_collect_one(ct, <list>data)
    except BaseException as e:  # recorded: dump() raises it, never a silently short dump
        (<list>data).append(e)
        return -1  # NFCT_CB_FAILURE: stop


cdef int _ct_collect_one(C.nf_conntrack *ct, list out) except -2:
    cdef uint8_t l3 = C.nfct_get_attr_u8(ct, C.ATTR_ORIG_L3PROTO)
    cdef uint8_t l4 = C.nfct_get_attr_u8(ct, C.ATTR_ORIG_L4PROTO)
    cdef char text[64]
    cdef uint32_t a4
    cdef object src, dst, sport = None, dport = None, itype = None, icode = None, iid = None
    if l3 == AF_INET:
        a4 = C.nfct_get_attr_u32(ct, C.ATTR_ORIG_IPV4_SRC)
        inet_ntop(AF_INET, &a4, text, 64)
        src = text.decode("ascii")
        a4 = C.nfct_get_attr_u32(ct, C.ATTR_ORIG_IPV4_DST)
        inet_ntop(AF_INET, &a4, text, 64)
        dst = text.decode("ascii")
        fam = 4
    elif l3 == AF_INET6:
        inet_ntop(AF_INET6, C.nfct_get_attr(ct, C.ATTR_ORIG_IPV6_SRC), text, 64)
        src = text.decode("ascii")
        inet_ntop(AF_INET6, C.nfct_get_attr(ct, C.ATTR_ORIG_IPV6_DST), text, 64)
        dst = text.decode("ascii")
        fam = 6
    else:
        return C.NFCT_CB_CONTINUE
    if l4 in _PORT_PROTOS:
        sport = ntohs(C.nfct_get_attr_u16(ct, C.ATTR_ORIG_PORT_SRC))
        dport = ntohs(C.nfct_get_attr_u16(ct, C.ATTR_ORIG_PORT_DST))
    elif l4 == 1 or l4 == 58:
        itype = C.nfct_get_attr_u8(ct, C.ATTR_ICMP_TYPE)
        icode = C.nfct_get_attr_u8(ct, C.ATTR_ICMP_CODE)
        iid = ntohs(C.nfct_get_attr_u16(ct, C.ATTR_ICMP_ID))
    zone = C.nfct_get_attr_u16(ct, C.ATTR_ZONE) if C.nfct_attr_is_set(ct, C.ATTR_ZONE) > 0 else 0
    out.append((fam, l4, src, dst, sport, dport, itype, icode, iid, zone))
    return C.NFCT_CB_CONTINUE


cdef class ConntrackTable:
    """The conntrack table of the network namespace current at construction: ``dump()`` lists
    every flow's original tuple, ``delete(flows)`` removes flows. A flow is (family, l4 proto,
    src, dst, sport, dport, icmp type, icmp code, icmp id, zone), None where not applicable."""

    cdef C.nfct_handle *h

    def __cinit__(self):
        self.h = C.nfct_open(C.CONNTRACK, 0)
        if self.h == NULL:
            raise KernelError("conntrack: cannot open a ctnetlink handle: " + strerror(errno).decode())

    def __dealloc__(self):
        if self.h != NULL:
            C.nfct_close(self.h)
            self.h = NULL

    def close(self):
        """Close (idempotent)."""
        if self.h != NULL:
            C.nfct_close(self.h)
            self.h = NULL

    def dump(self):
        """Every flow of both families (a list of flow tuples)."""
        cdef list out = []
        cdef uint32_t family = 0
        C.nfct_callback_register(self.h, C.NFCT_T_ALL, _ct_collect, <void *>out)
        rc = C.nfct_query(self.h, C.NFCT_Q_DUMP, &family)
        failed = [x for x in out if isinstance(x, BaseException)]
        if failed:
            raise KernelError(f"conntrack: dump failed: {failed[0]!r}")
        if rc < 0:
            raise KernelError("conntrack: dump failed: " + strerror(errno).decode())
        return out

    def sweep(self, FlowJudge judge, look, gone, zones=None):
        """Delete, in one pass over the table, the flows ``judge`` no longer allows and those
        of an address in ``gone``; with ``look`` (a set of addresses, canonical text) only
        flows involving one of them or of ``gone`` are judged, and only their families dumped.
        With ``zones`` (conntrack zone -> (FlowJudge or None, addresses gone)), a flow of a
        zone listed there is judged by that judge and gone set instead (None: not judged),
        a flow of another zone by ``judge`` (may be None) and ``gone``. Deletions name the
        flow's zone and are sent in batches while the dump goes on. Returns (judged,
        deleted)."""
        cdef _Sweep sw = _Sweep()
        cdef uint32_t family = 0
        sw.judge = judge
        sw.gone = {_pack_text(a) for a in gone}
        all_gone = set(sw.gone)
        if zones is not None:
            sw.zones = {}
            for z, (zj, zg) in zones.items():
                packed = {_pack_text(a) for a in zg}
                sw.zones[int(z)] = (zj, packed)
                all_gone |= packed
        if look is not None:
            sw.look = {_pack_text(a) for a in look} | all_gone
            fams = {len(a) for a in sw.look}
            if not fams:
                return 0, 0
            if len(fams) == 1:
                family = AF_INET if fams == {4} else AF_INET6
        sw.deletes = _Batch()
        sw.deletes.open(C.IPCTNL_MSG_CT_DELETE, 0)
        C.nfct_callback_register(self.h, C.NFCT_T_ALL, _sweep_cb, <void *>sw)
        rc = C.nfct_query(self.h, C.NFCT_Q_DUMP, &family)
        if sw.error is not None:
            raise KernelError(f"conntrack: sweep failed: {sw.error!r}")
        if rc < 0:
            raise KernelError("conntrack: dump failed: " + strerror(errno).decode())
        sw.deletes.flush()
        return sw.judged, sw.deletes.done

    def track(self, flows, int timeout=600):
        """Insert TCP/UDP flows (family, l4 proto, src, dst, sport, dport[, zone]), TCP ones
        as established, with ``timeout`` seconds to live, in batches; returns how many the
        kernel took (for tests and benchmarks)."""
        cdef _Batch b = _Batch()
        cdef C.nf_conntrack *ct
        cdef bytes a, z
        b.open(C.IPCTNL_MSG_CT_NEW, N.NLM_F_CREATE | 0x200)   # NLM_F_EXCL
        for flow in flows:
            fam, l4, src, dst, sport, dport = flow[:6]
            zone = flow[6] if len(flow) > 6 else 0
            ct = C.nfct_new()
            if ct == NULL:
                raise MemoryError()
            try:
                af = AF_INET if fam == 4 else AF_INET6
                a = socket_pton(af, src)
                z = socket_pton(af, dst)
                C.nfct_set_attr_u8(ct, C.ATTR_ORIG_L3PROTO, af)
                C.nfct_set_attr(ct, C.ATTR_ORIG_IPV4_SRC if fam == 4 else C.ATTR_ORIG_IPV6_SRC,
                                <const char *>a)
                C.nfct_set_attr(ct, C.ATTR_ORIG_IPV4_DST if fam == 4 else C.ATTR_ORIG_IPV6_DST,
                                <const char *>z)
                C.nfct_set_attr_u8(ct, C.ATTR_ORIG_L4PROTO, l4)
                C.nfct_set_attr_u16(ct, C.ATTR_ORIG_PORT_SRC, htons(sport))
                C.nfct_set_attr_u16(ct, C.ATTR_ORIG_PORT_DST, htons(dport))
                C.nfct_setobjopt(ct, C.NFCT_SOPT_SETUP_REPLY)
                C.nfct_set_attr_u32(ct, C.ATTR_TIMEOUT, timeout)
                if l4 == 6:
                    C.nfct_set_attr_u8(ct, C.ATTR_TCP_STATE, 3)   # established
                if zone:
                    C.nfct_set_attr_u16(ct, C.ATTR_ZONE, zone)
                b.queue(ct, af)
            finally:
                C.nfct_destroy(ct)
        b.flush()
        return b.done

    def delete(self, flows):
        """Delete flows (tuples as dump() gives); returns how many the kernel removed (a flow
        already gone is not an error)."""
        cdef int n = 0
        cdef C.nf_conntrack *ct
        cdef bytes a, b
        for fam, l4, src, dst, sport, dport, itype, icode, iid, zone in flows:
            ct = C.nfct_new()
            try:
                if fam == 4:
                    a = socket_pton(AF_INET, src)
                    b = socket_pton(AF_INET, dst)
                    C.nfct_set_attr_u8(ct, C.ATTR_ORIG_L3PROTO, AF_INET)
                    C.nfct_set_attr(ct, C.ATTR_ORIG_IPV4_SRC, <const char *>a)
                    C.nfct_set_attr(ct, C.ATTR_ORIG_IPV4_DST, <const char *>b)
                else:
                    a = socket_pton(AF_INET6, src)
                    b = socket_pton(AF_INET6, dst)
                    C.nfct_set_attr_u8(ct, C.ATTR_ORIG_L3PROTO, AF_INET6)
                    C.nfct_set_attr(ct, C.ATTR_ORIG_IPV6_SRC, <const char *>a)
                    C.nfct_set_attr(ct, C.ATTR_ORIG_IPV6_DST, <const char *>b)
                C.nfct_set_attr_u8(ct, C.ATTR_ORIG_L4PROTO, l4)
                if sport is not None:
                    C.nfct_set_attr_u16(ct, C.ATTR_ORIG_PORT_SRC, htons(sport))
                    C.nfct_set_attr_u16(ct, C.ATTR_ORIG_PORT_DST, htons(dport))
                if itype is not None:
                    C.nfct_set_attr_u8(ct, C.ATTR_ICMP_TYPE, itype)
                    C.nfct_set_attr_u8(ct, C.ATTR_ICMP_CODE, icode)
                    C.nfct_set_attr_u16(ct, C.ATTR_ICMP_ID, htons(iid))
                if zone:
                    C.nfct_set_attr_u16(ct, C.ATTR_ZONE, zone)
                if C.nfct_query(self.h, C.NFCT_Q_DESTROY, ct) == 0:
                    n += 1
            finally:
                C.nfct_destroy(ct)
        return n


def _pack_text(str text):
    return socket_pton(AF_INET6 if ":" in text else AF_INET, text)


def socket_pton(int af, str text):
    cdef char buf[16]
    if inet_pton(af, text.encode("ascii"), buf) != 1:
        raise ValueError(text)
    return buf[:4] if af == AF_INET else buf[:16]


# ---- flow judge: which tracked flows the policy still allows, O(1) in the group sizes ------

cdef struct _Net:
    int fam            # 0: none; 4 or 6
    int plen
    unsigned char a[16]

cdef struct _Rule:
    int fam, proto, pmin, pmax, smin, smax, itype, icode, group, direction
    _Net src
    _Net dst


cdef int _set_net(_Net *n, object spec) except -1:
    n.fam = 0
    if spec is None:
        return 0
    cdef bytes packed = spec[0]
    if len(packed) not in (4, 16):
        raise ValueError("a network is 4 or 16 bytes")
    n.fam = 4 if len(packed) == 4 else 6
    n.plen = spec[1]
    memcpy(n.a, <const char *>packed, len(packed))
    return 0


cdef inline bint _in_net(const unsigned char *a, int fam, const _Net *n) noexcept nogil:
    cdef int bits = n.plen, i = 0
    if n.fam != fam:
        return False
    while bits >= 8:
        if a[i] != n.a[i]:
            return False
        i += 1
        bits -= 8
    if bits:
        return ((a[i] ^ n.a[i]) & (0xff << (8 - bits)) & 0xff) == 0
    return True


cdef class FlowJudge:
    """The policy flattened by ``policy.flow_tables``: ``allowed(flow)`` says whether a
    tracked flow's original direction passes the sender's egress and the receiver's ingress.
    Address ownership is a hash lookup, remote groups a set lookup (their prefixes are
    scanned, and they are few): the cost of a flow does not grow with the groups' sizes. No
    I/O here."""

    cdef _Rule *rules
    cdef int nrules
    cdef list ports       # (port security, egress ranges, ingress ranges)
    cdef dict hosts       # packed -> port index
    cdef _Net *pnets
    cdef int *pnet_port
    cdef int npnets
    cdef list gsets       # group index -> member set (canonical text)
    cdef list gnets       # group index -> bytes holding _Net records

    def __cinit__(self, tables):
        rules, ports, hosts, prefixes, groups = tables
        cdef int i
        cdef _Rule *r
        self.nrules = len(rules)
        self.rules = <_Rule *>malloc(max(1, self.nrules) * sizeof(_Rule))
        self.pnets = <_Net *>malloc(max(1, len(prefixes)) * sizeof(_Net))
        self.pnet_port = <int *>malloc(max(1, len(prefixes)) * sizeof(int))
        if self.rules == NULL or self.pnets == NULL or self.pnet_port == NULL:
            raise MemoryError()
        for i, row in enumerate(rules):
            r = &self.rules[i]
            (r.direction, r.fam, r.proto, r.pmin, r.pmax, r.smin, r.smax, r.itype, r.icode,
             src, dst, r.group) = row
            _set_net(&r.src, src)
            _set_net(&r.dst, dst)
        self.npnets = len(prefixes)
        for i, (packed, plen, idx) in enumerate(prefixes):
            _set_net(&self.pnets[i], (packed, plen))
            self.pnet_port[i] = idx
        self.ports = list(ports)
        self.hosts = dict(hosts)
        self.gsets = [g[0] for g in groups]
        self.gnets = []
        cdef _Net tmp
        for _members, nets in groups:
            chunk = bytearray()
            for spec in nets:
                _set_net(&tmp, spec)
                chunk += (<char *>&tmp)[:sizeof(_Net)]
            self.gnets.append(bytes(chunk))

    def __dealloc__(self):
        free(self.rules)
        free(self.pnets)
        free(self.pnet_port)

    cdef int _port_of(self, bytes packed, const unsigned char *a, int fam) except -2:
        cdef object idx = self.hosts.get(packed)
        cdef int i
        if idx is not None:
            return idx
        for i in range(self.npnets):
            if _in_net(a, fam, &self.pnets[i]):
                return self.pnet_port[i]
        return -1

    cdef int _member(self, int g, const unsigned char *a, int fam) except -1:
        cdef char text[64]
        cdef bytes nets = self.gnets[g]
        cdef const _Net *n = <const _Net *>PyBytes_AS_STRING(nets)
        cdef Py_ssize_t i, k = len(nets) // sizeof(_Net)
        inet_ntop(AF_INET if fam == 4 else AF_INET6, a, text, 64)
        if text.decode("ascii") in self.gsets[g]:
            return 1
        for i in range(k):
            if _in_net(a, fam, &n[i]):
                return 1
        return 0

    cdef int _matches(self, const _Rule *r, int fam, int proto, const unsigned char *src,
                      const unsigned char *dst, int sport, int dport, int itype,
                      int icode) except -1:
        if r.fam != fam:
            return 0
        if r.src.fam and not _in_net(src, fam, &r.src):
            return 0
        if r.dst.fam and not _in_net(dst, fam, &r.dst):
            return 0
        if r.proto >= 0 and r.proto != proto:
            return 0
        if r.itype >= 0 and r.itype != itype:
            return 0
        if r.icode >= 0 and r.icode != icode:
            return 0
        if r.pmin >= 0 and not (dport >= 0 and r.pmin <= dport <= r.pmax):
            return 0
        if r.smin >= 0 and not (sport >= 0 and r.smin <= sport <= r.smax):
            return 0
        if r.group >= 0:
            return self._member(r.group, src if r.direction == 1 else dst, fam)
        return 1

    cdef int _allows(self, int port, int direction, int fam, int proto,
                     const unsigned char *src, const unsigned char *dst, int sport, int dport,
                     int itype, int icode) except -1:
        psec, egress, ingress = self.ports[port]
        if not psec:
            return 1
        cdef bint udp = proto == 17
        if direction == 0:
            if udp and ((sport == 67 and dport == 68) or (sport == 547 and dport == 546)):
                return 0
            if proto == 58 and itype == 134:
                return 0
            if udp and ((sport == 68 and dport == 67) or (sport == 546 and dport == 547)):
                return 1
            if proto == 58:
                return 1
        else:
            if proto == 58 and (itype == 130 or itype == 135 or itype == 136):
                return 1
            if udp and ((sport == 67 and dport == 68) or (sport == 547 and dport == 546)):
                return 1
        cdef int start, end, i
        for start, end in (egress if direction == 0 else ingress):
            for i in range(start, end):
                if self._matches(&self.rules[i], fam, proto, src, dst, sport, dport, itype,
                                 icode):
                    return 1
        return 0

    cdef int _flow_allowed(self, int fam, int proto, bytes src_b, bytes dst_b, int sport,
                           int dport, int itype, int icode) except -1:
        cdef const unsigned char *src = <const unsigned char *>PyBytes_AS_STRING(src_b)
        cdef const unsigned char *dst = <const unsigned char *>PyBytes_AS_STRING(dst_b)
        cdef int sp = self._port_of(src_b, src, fam)
        cdef int dp = self._port_of(dst_b, dst, fam)
        if sp >= 0 and not self._allows(sp, 0, fam, proto, src, dst, sport, dport, itype, icode):
            return 0
        if dp >= 0 and not self._allows(dp, 1, fam, proto, src, dst, sport, dport, itype, icode):
            return 0
        return 1

    cdef int _owned(self, bytes src_b, bytes dst_b, int fam) except -1:
        """1 when either end belongs to a port (otherwise no rule of fwsg applies)."""
        return (self._port_of(src_b, <const unsigned char *>PyBytes_AS_STRING(src_b), fam) >= 0
                or self._port_of(dst_b, <const unsigned char *>PyBytes_AS_STRING(dst_b), fam) >= 0)

    def allowed(self, flow):
        """True when the model still allows ``flow`` (a tuple as ConntrackTable.dump gives)."""
        fam, proto, src, dst, sport, dport, itype, icode = flow[:8]
        af = AF_INET if fam == 4 else AF_INET6
        return bool(self._flow_allowed(fam, proto, socket_pton(af, src), socket_pton(af, dst),
                                       -1 if sport is None else sport,
                                       -1 if dport is None else dport,
                                       -1 if itype is None else itype,
                                       -1 if icode is None else icode))


# ---- sweep: dump, judge and delete in one pass, deletions sent in batches as found ----------

cdef enum:
    _DEL_BUF = 256 * 1024
    _DEL_BATCH = 512     # deletions per send


cdef class _Batch:
    """Conntrack requests of one type (delete or create) sent in batches on a netlink socket
    of their own; ``done`` counts the requests the kernel accepted (a flow already gone or
    already there is not an error)."""
    cdef N.mnl_socket *nl
    cdef char *buf
    cdef size_t used
    cdef int pending
    cdef int msg_type
    cdef int flags
    cdef unsigned int seq
    cdef public int done

    def __cinit__(self):
        self.buf = <char *>malloc(_DEL_BUF)
        if self.buf == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.buf)
        if self.nl != NULL:
            N.mnl_socket_close(self.nl)

    cdef int open(self, int msg_type, int flags) except -1:
        cdef int size = 8 * 1024 * 1024
        self.msg_type = msg_type
        self.flags = flags
        self.nl = N.mnl_socket_open(N.NETLINK_NETFILTER)
        if self.nl == NULL or N.mnl_socket_bind(self.nl, 0, N.MNL_SOCKET_AUTOPID) < 0:
            raise KernelError("conntrack: cannot open a netlink socket: " + strerror(errno).decode())
        setsockopt(N.mnl_socket_get_fd(self.nl), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(int))
        self.seq = 1
        return 0

    cdef int queue(self, C.nf_conntrack *ct, int l3) except -1:
        """Append one request built from ``ct`` (for a deletion the dumped entry itself: tuple,
        zone and id, so a newer flow reusing the tuple is never hit); send when full."""
        cdef N.nlmsghdr *nlh
        cdef C.nfgenmsg *nfh
        if self.used + 4096 > _DEL_BUF:
            self.flush()
        nlh = <N.nlmsghdr *>C.mnl_nlmsg_put_header(self.buf + self.used)
        nlh.nlmsg_type = (C.NFNL_SUBSYS_CTNETLINK << 8) | self.msg_type
        nlh.nlmsg_flags = 1 | N.NLM_F_ACK | self.flags   # NLM_F_REQUEST
        nlh.nlmsg_seq = self.seq
        self.seq += 1
        nfh = <C.nfgenmsg *>C.mnl_nlmsg_put_extra_header(nlh, sizeof(C.nfgenmsg))
        nfh.nfgen_family = l3
        nfh.version = C.NFNETLINK_V0
        nfh.res_id = 0
        if C.nfct_nlmsg_build(nlh, ct) < 0:
            raise KernelError("conntrack: cannot build a request")
        self.used += nlh.nlmsg_len
        self.pending += 1
        if self.pending >= _DEL_BATCH:
            self.flush()
        return 0

    cdef int flush(self) except -1:
        """Send the queued requests and count the kernel's answers."""
        cdef ssize_t ret
        cdef char rbuf[65536]
        cdef int left, answers = 0, err
        cdef N.nlmsghdr *nlh
        if not self.pending:
            return 0
        with nogil:
            ret = N.mnl_socket_sendto(self.nl, self.buf, self.used)
        if ret < 0:
            raise KernelError("conntrack: send failed: " + strerror(errno).decode())
        while answers < self.pending:
            with nogil:
                ret = N.mnl_socket_recvfrom(self.nl, rbuf, sizeof(rbuf))
            if ret <= 0:
                raise KernelError("conntrack: no answer to a batch: " + strerror(errno).decode())
            left = <int>ret
            nlh = <N.nlmsghdr *>rbuf
            while N.mnl_nlmsg_ok(nlh, left):
                if nlh.nlmsg_type == N.NLMSG_ERROR:
                    answers += 1
                    err = (<N.nlmsgerr *>N.mnl_nlmsg_get_payload(nlh)).error
                    if err == 0:
                        self.done += 1
                nlh = N.mnl_nlmsg_next(nlh, &left)
        self.used = 0
        self.pending = 0
        return 0


cdef class _Sweep:
    cdef FlowJudge judge
    cdef object look      # None or set of packed addresses
    cdef set gone         # packed addresses
    cdef object zones     # None or dict zone -> (FlowJudge or None, set of packed addresses)
    cdef _Batch deletes
    cdef public int judged
    cdef public object error


cdef int _sweep_cb(C.nf_conntrack_msg_type type, C.nf_conntrack *ct, void *data) noexcept with gil:
    cdef _Sweep sw = <_Sweep>data
    try:
        return _sweep_one(sw, ct)
    except BaseException as e:  # recorded: sweep() raises it
        sw.error = e
        return -1


cdef int _sweep_one(_Sweep sw, C.nf_conntrack *ct) except -2:
    cdef uint8_t l3 = C.nfct_get_attr_u8(ct, C.ATTR_ORIG_L3PROTO)
    cdef uint8_t l4 = C.nfct_get_attr_u8(ct, C.ATTR_ORIG_L4PROTO)
    cdef int fam, sport = -1, dport = -1, itype = -1, icode = -1
    cdef bytes src, dst
    if l3 == AF_INET:
        src = PyBytes_FromStringAndSize(<const char *>C.nfct_get_attr(ct, C.ATTR_ORIG_IPV4_SRC), 4)
        dst = PyBytes_FromStringAndSize(<const char *>C.nfct_get_attr(ct, C.ATTR_ORIG_IPV4_DST), 4)
        fam = 4
    elif l3 == AF_INET6:
        src = PyBytes_FromStringAndSize(<const char *>C.nfct_get_attr(ct, C.ATTR_ORIG_IPV6_SRC), 16)
        dst = PyBytes_FromStringAndSize(<const char *>C.nfct_get_attr(ct, C.ATTR_ORIG_IPV6_DST), 16)
        fam = 6
    else:
        return C.NFCT_CB_CONTINUE
    if sw.look is not None and src not in sw.look and dst not in sw.look:
        return C.NFCT_CB_CONTINUE
    cdef FlowJudge judge = sw.judge
    cdef set gone = sw.gone
    if sw.zones is not None:
        zone = C.nfct_get_attr_u16(ct, C.ATTR_ZONE) if C.nfct_attr_is_set(ct, C.ATTR_ZONE) > 0 else 0
        entry = sw.zones.get(zone)
        if entry is not None:
            judge, gone = entry
    sw.judged += 1
    if src in gone or dst in gone:
        sw.deletes.queue(ct, l3)
        return C.NFCT_CB_CONTINUE
    if judge is None or not judge._owned(src, dst, fam):
        return C.NFCT_CB_CONTINUE
    if l4 == 6 or l4 == 17 or l4 == 33 or l4 == 132 or l4 == 136:
        sport = ntohs(C.nfct_get_attr_u16(ct, C.ATTR_ORIG_PORT_SRC))
        dport = ntohs(C.nfct_get_attr_u16(ct, C.ATTR_ORIG_PORT_DST))
    elif l4 == 1 or l4 == 58:
        itype = C.nfct_get_attr_u8(ct, C.ATTR_ICMP_TYPE)
        icode = C.nfct_get_attr_u8(ct, C.ATTR_ICMP_CODE)
    if not judge._flow_allowed(fam, l4, src, dst, sport, dport, itype, icode):
        sw.deletes.queue(ct, l3)
    return C.NFCT_CB_CONTINUE
