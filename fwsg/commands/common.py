"""Helpers shared by the sub-commands: reading a model, printing JSON, common options."""

import json
import sys

from fwsg.errors import UserError


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


def read_json(path, what="model"):
    """Parse a JSON document from a path or '-' (stdin); UserError naming the file if bad."""
    name = "stdin" if path == "-" else path
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except OSError as e:
        raise UserError(f"{name}: cannot read {what}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{name}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{name}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise UserError(f"{name}: invalid JSON: nested too deeply") from None


def print_json(obj):
    json.dump(obj, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
