"""Helpers shared by the sub-commands: reading a model, printing JSON, common options."""

import argparse
import json
import os
import sys

from fwsg.errors import UserError, printable, short_repr


def add_netns(parser):
    parser.add_argument("--netns", metavar="NS", default=None,
                        help="the network namespace to manage (default: this one)")


BACKEND_CHOICES = ("nft", "iptables", "iptables-legacy", "iptables-nft")


def add_backend(parser):
    parser.add_argument("--backend", default="nft", choices=BACKEND_CHOICES + ("fake",),
                        metavar="{" + ",".join(BACKEND_CHOICES) + "}",
                        help="nft: nftables sets and chains (default); iptables: iptables/"
                        "ip6tables chains, ebtables ARP checks and ipsets, with the variant the "
                        "host uses (iptables-legacy or iptables-nft, detected; name one to force "
                        "it, or set FWSG_IPTABLES)")


def add_wait(parser):
    parser.add_argument("--wait", metavar="SECONDS", nargs="?", type=_seconds, const=None,
                        default=0.0, help="when another fwsg is changing the same namespace, "
                        "wait for it (for ever, or at most SECONDS) instead of failing at once")


def _seconds(text):
    try:
        v = float(text)
    except ValueError:
        v = -1
    if not 0 <= v <= 86400:
        raise argparse.ArgumentTypeError(f"{printable(text, 40)!r} is not a number of seconds "
                                         "(0-86400)")
    return v


MAX_INPUT = int(os.environ.get("FWSG_MAX_INPUT", 512 << 20))  # bytes of one document
MAX_DIGITS = 40  # longer integer literals are kept as text (then refused by the field's check)


def read_json(path, what="model"):
    """Parse a JSON document from a path or '-' (stdin); UserError naming the file if bad.
    Reads at most MAX_INPUT bytes (``/dev/zero`` is refused, not read forever); refuses an
    object holding one key twice (the last would silently win) at any depth."""
    name = "stdin" if path == "-" else printable(path, 80)
    try:
        if path == "-":
            if sys.stdin is None or sys.stdin.closed:
                raise UserError(f"stdin: cannot read {what}: standard input is closed")
            data = sys.stdin.buffer.read(MAX_INPUT + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_INPUT + 1)
    except OSError as e:
        raise UserError(f"{name}: cannot read {what}: {e.strerror or e}") from None
    except ValueError as e:  # a closed or detached stream
        raise UserError(f"{name}: cannot read {what}: {e}") from None
    if len(data) > MAX_INPUT:
        raise UserError(f"{name}: {what} is larger than {MAX_INPUT} bytes (FWSG_MAX_INPUT)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{name}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_int=_bounded_int,
                          parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise UserError(f"{name}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise UserError(f"{name}: invalid JSON: nested too deeply") from None
    except UserError as e:
        raise UserError(f"{name}: {e}") from None


class HugeNumber(str):
    """An integer literal too long to be any valid value: kept as text so that the field's own
    check refuses it by name."""

    def __repr__(self):
        return f"<integer of {len(self)} digits>"


def _bounded_int(text):
    return int(text) if len(text) <= MAX_DIGITS else HugeNumber(text)


def _no_constant(text):
    raise UserError(f"invalid JSON: {text} is not a JSON value")


def _unique_keys(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise UserError(f"invalid JSON: key {short_repr(key, 60)} appears twice in one object")
        out[key] = value
    return out


def print_json(obj):
    json.dump(obj, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
