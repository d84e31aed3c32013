"""Sub-commands of the ``fwsg`` CLI, one module each.

Each module defines ``register(subparsers)`` (adds its parser and sets ``func``) and the
function it sets, ``run(args) -> int``. ``fwsg.cli`` imports the modules listed in ``COMMANDS``.
"""

COMMANDS = ("apply", "flush", "show", "demo", "probe", "place", "publish", "agent")
