"""The ``fwsg`` command: argument parsing and the mapping of errors to exit codes.

Exit codes: 0 success, 2 bad input or usage, 1 the kernel (or environment) refused.
User errors print one line on stderr, never a traceback.
"""

import argparse
import importlib
import sys

from fwsg import __version__
from fwsg.commands import COMMANDS
from fwsg.errors import MAX_LINE, FwsgError, printable


class _Parser(argparse.ArgumentParser):
    """argparse with the house rule for bad input: one line on stderr naming the option, exit 2
    (no usage block; ``--help`` still prints the full text)."""

    def error(self, message):
        line = printable(one_line(f"{self.prog}: {message} (see '{self.prog} --help')"), MAX_LINE)
        self.exit(2, f"{line}\n")


def build_parser():
    """Return the full argument parser (all sub-commands registered)."""
    parser = _Parser(
        prog="fwsg",
        description="Security groups (OpenStack Neutron semantics) to nftables, "
        "applied atomically in-process; resource probe and HA placement.",
        epilog="Run 'fwsg COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"fwsg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"fwsg.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"fwsg.commands.{name}":
                continue  # command not built yet
            raise
        mod.register(sub)
    return parser


def one_line(message):
    """``message`` as one line. libnftables reports each refused command as "Error: reason"
    followed by the command and a caret line; libnftables 1.0.6 quotes the batch's first line
    there whatever command failed, so only the reasons (in order, repeats dropped) are kept."""
    lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    if "Error: " not in lines[0]:
        return "; ".join(lines)
    head, _, first = lines[0].partition("Error: ")
    reasons = [first] + [ln.partition("Error: ")[2] for ln in lines[1:] if "Error: " in ln]
    reasons = list(dict.fromkeys(r for r in reasons if r))
    return head + "; ".join(reasons)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except FwsgError as e:
        print(f"fwsg: {printable(one_line(str(e)), MAX_LINE)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("fwsg: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
