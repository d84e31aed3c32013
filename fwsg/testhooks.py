"""Points where a test may stop a process on purpose (to show what a crash or a race does).

``FWSG_TEST_HOOKS="before-commit=sleep:0.3,after-commit=kill"``: at ``point("before-commit")``
sleep 0.3 s; at ``point("after-commit")`` die at once with SIGKILL (no cleanup, like a crash).
Points: ``before-commit``, ``between-steps`` (a commit in steps, after the first),
``after-commit`` (before the conntrack sweep).
Read once at import; unset (always, outside tests) every point is a dictionary miss.
"""

import os
import signal
import time


def _parse(text):
    hooks = {}
    for item in filter(None, (text or "").split(",")):
        name, _, action = item.partition("=")
        hooks[name.strip()] = action.strip()
    return hooks


_HOOKS = _parse(os.environ.get("FWSG_TEST_HOOKS"))


def point(name):
    """Run the action a test attached to ``name`` (none: nothing)."""
    action = _HOOKS.get(name) if _HOOKS else None
    if not action:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action.startswith("sleep:"):
        time.sleep(float(action[6:]))
