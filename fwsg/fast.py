"""Selects the hot-path implementation: the compiled ``fwsg._fast`` or its pure-Python twin.

``FWSG_NO_EXTENSIONS=1`` forces the twin. ``FWSG_REQUIRE_EXTENSIONS=1`` makes a missing compiled
module an import error (used by the compiled test run). ``COMPILED`` says which one loaded.
"""

import os

if os.environ.get("FWSG_NO_EXTENSIONS"):
    from fwsg._fast_py import COMPILED, NftContext, diff_keys, diff_map, render_elements
else:
    try:
        from fwsg._fast import COMPILED, NftContext, diff_keys, diff_map, render_elements
    except ImportError:
        if os.environ.get("FWSG_REQUIRE_EXTENSIONS"):
            raise
        from fwsg._fast_py import COMPILED, NftContext, diff_keys, diff_map, render_elements

__all__ = ["COMPILED", "NftContext", "diff_keys", "diff_map", "render_elements"]
