"""The small record fwsg keeps next to the kernel: which derived names belong to which user ids
(nft never holds user strings). One JSON file per namespace under /run/fwsg.

Writers replace the record atomically (a temporary file of their own, fsync, rename), under the
namespace's lock (see :mod:`fwsg.nslock`); readers see the old record or the new one, never a
mix. A record that is not what fwsg writes is reported as :class:`CorruptRecord`. A writer
tells its own record from one replaced, edited or removed since by :func:`identity`.
"""

import contextlib
import json
import os
import tempfile

from fwsg.errors import UserError, printable

STATE_DIR = os.environ.get("FWSG_STATE_DIR", "/run/fwsg")
MAX_RECORD = 64 << 20  # bytes


class CorruptRecord(UserError):
    """The names record exists but is not what fwsg writes (the next apply rewrites it)."""


@contextlib.contextmanager
def kept_in(directory):
    """Within the block, names records of this process are read and written under
    ``directory`` instead of the host's (a benchmark or lab that enters a namespace of its own
    with ``netns=None`` would otherwise share the host namespace's record, ``_default``)."""
    global STATE_DIR
    was, STATE_DIR = STATE_DIR, directory
    try:
        yield directory
    finally:
        STATE_DIR = was


def path_for(netns):
    return os.path.join(STATE_DIR, f"{netns or '_default'}.json")


def save(netns, meta):
    """Write the names record atomically (unique temporary file, fsync, rename) and return its
    :func:`identity` as written; failures are ignored (the record is for display and for
    keeping derived names stable) and return None."""
    target = path_for(netns)
    try:
        os.makedirs(STATE_DIR, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=STATE_DIR, prefix=f".{netns or '_default'}.",
                                   suffix=".tmp")
    except OSError:
        return None
    _prune()
    try:
        with os.fdopen(fd, "w") as f:
            # dumps (the C encoder) then one write: json.dump streams through the Python one
            f.write(json.dumps({"ports": meta.get("ports", {}), "groups": meta.get("groups", {})}))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return None
    return identity(netns)


def identity(netns):
    """(inode, size, modification time in ns) of the record of ``netns``, None if there is
    none: a record replaced, rewritten or removed since shows another identity (one stat)."""
    try:
        st = os.stat(path_for(netns))
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _prune():
    """Remove the records of named namespaces that no longer exist (labs, tests, deleted
    hypervisor namespaces); nothing else."""
    try:
        names = os.listdir(STATE_DIR)
    except OSError:
        return
    for name in names:
        ns = name[:-5] if name.endswith(".json") else None
        if ns and ns != "_default" and not os.path.exists(f"/run/netns/{ns}"):
            try:
                os.unlink(os.path.join(STATE_DIR, name))
            except OSError:
                pass


def load(netns, strict=False):
    """The record of ``netns`` (``{"ports": {...}, "groups": {...}}``); ``{}`` when there is
    none. A record that is not valid JSON of that shape: CorruptRecord with ``strict``, else
    ``{}``."""
    path = path_for(netns)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_RECORD + 1)
    except OSError:
        return {}
    try:
        if len(data) > MAX_RECORD:
            raise ValueError(f"larger than {MAX_RECORD} bytes")
        doc = json.loads(data.decode("utf-8"))
        _check_shape(doc)
    except (ValueError, RecursionError) as e:
        if strict:
            raise CorruptRecord(f"{path}: the names record is corrupt ({printable(str(e), 80)}); "
                                "'fwsg apply' rewrites it, 'fwsg flush' removes it") from None
        return {}
    return doc


def _check_shape(doc):
    if not isinstance(doc, dict):
        raise ValueError("not an object")
    for part in ("ports", "groups"):
        val = doc.get(part, {})
        if not isinstance(val, dict) or not all(isinstance(v, dict) for v in val.values()):
            raise ValueError(f"{part} is not an object of objects")
    for rec in doc.get("ports", {}).values():
        if not isinstance(rec.get("device", ""), str) or not isinstance(rec.get("groups", []), list):
            raise ValueError("a port entry has the wrong shape")
    for rec in doc.get("groups", {}).values():
        if not isinstance(rec.get("name", ""), str):
            raise ValueError("a group entry has the wrong shape")


def group_names(netns):
    """Group id -> derived name as last recorded for ``netns`` (empty if none or corrupt)."""
    return {sg: rec["name"] for sg, rec in load(netns).get("groups", {}).items()
            if isinstance(rec.get("name"), str)}


def remove(netns):
    try:
        os.unlink(path_for(netns))
    except OSError:
        pass
