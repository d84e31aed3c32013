"""Selects the hot-path implementation: the compiled ``fwsg._fast`` or its pure-Python twin.

``FWSG_NO_EXTENSIONS=1`` forces the twin. ``FWSG_REQUIRE_EXTENSIONS=1`` makes a missing compiled
module an import error (used by the compiled test run). ``COMPILED`` says which one loaded.
Both modules define exactly the names in ``__all__``.
"""

import os

__all__ = ["COMPILED", "ConntrackTable", "FlowJudge", "NetlinkWriter", "NftContext",
           "addr_change", "addr_in", "diff_delta", "dicts_key", "dicts_match", "json_key",
           "diff_keys", "diff_map", "diff_map_keys", "diff_packed", "merge_packed", "pack_addrs",
           "packed_contains", "render_elements", "unpack_addrs"]

if os.environ.get("FWSG_NO_EXTENSIONS"):
    from fwsg import _fast_py as impl
else:
    try:
        from fwsg import _fast as impl
    except ImportError:
        if os.environ.get("FWSG_REQUIRE_EXTENSIONS"):
            raise
        from fwsg import _fast_py as impl

COMPILED = impl.COMPILED
ConntrackTable = impl.ConntrackTable
FlowJudge = impl.FlowJudge
NetlinkWriter = impl.NetlinkWriter
NftContext = impl.NftContext
addr_change = impl.addr_change
addr_in = impl.addr_in
diff_delta = impl.diff_delta
dicts_key = impl.dicts_key
dicts_match = impl.dicts_match
json_key = impl.json_key
diff_keys = impl.diff_keys
diff_map = impl.diff_map
diff_map_keys = impl.diff_map_keys
diff_packed = impl.diff_packed
merge_packed = impl.merge_packed
pack_addrs = impl.pack_addrs
packed_contains = impl.packed_contains
render_elements = impl.render_elements
unpack_addrs = impl.unpack_addrs
