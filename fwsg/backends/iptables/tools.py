"""Which iptables the host runs: ``iptables-legacy`` or ``iptables-nft`` (the nf_tables
compatibility layer), and the matching ebtables. Auto-detected per namespace, overridable.
"""

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from fwsg.errors import EnvironmentProblem, UserError
from fwsg.netns import entered

VARIANTS = ("legacy", "nft")
ENV = "FWSG_IPTABLES"  # legacy | nft: overrides the detection


@dataclass(frozen=True)
class Tools:
    """The binaries of one variant (called by name, never through the host's alternatives)."""

    variant: str

    def restore(self, fam):
        return {4: f"iptables-{self.variant}-restore", 6: f"ip6tables-{self.variant}-restore",
                "eb": self.eb("restore")}[fam]

    def save(self, fam):
        return {4: f"iptables-{self.variant}-save", 6: f"ip6tables-{self.variant}-save",
                "eb": self.eb("save")}[fam]

    @staticmethod
    def eb(what):
        """ebtables: ebtables-nft (shipped by Debian's iptables package) whatever the iptables
        variant - it coexists with iptables-legacy, while kernels built without the legacy
        ebtables tables (as here) refuse ebtables-legacy; ebtables-legacy only without it."""
        name = f"ebtables-nft-{what}"
        return name if shutil.which(name) else f"ebtables-legacy-{what}"

    def describe(self):
        eb = self.eb("restore").rsplit("-", 1)[0]
        return f"iptables-{self.variant} (+ {eb}, ipset netlink)"


def _rules(binary, netns):
    with entered(netns):
        try:
            out = subprocess.run([binary], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return -1
    return sum(1 for line in out.splitlines() if line.startswith("-A "))


def detect(netns=None, variant=None):
    """The Tools to use: ``variant`` if given, else $FWSG_IPTABLES, else the variant whose
    tables already hold rules in the namespace (more rules wins, as Debian's iptables-wrapper
    decides), else the host's default ``iptables``."""
    variant = variant or os.environ.get(ENV) or None
    if variant is not None:
        if variant not in VARIANTS:
            raise UserError(f"iptables variant: {variant!r} is not one of {', '.join(VARIANTS)}")
        tools = Tools(variant)
        if not shutil.which(tools.restore(4)):
            raise EnvironmentProblem(f"{tools.restore(4)} not found (Debian package iptables)")
        return tools
    counts = {v: _rules(f"iptables-{v}-save", netns) + _rules(f"ip6tables-{v}-save", netns)
              for v in VARIANTS if shutil.which(f"iptables-{v}-save")}
    if not counts:
        raise EnvironmentProblem("neither iptables-legacy nor iptables-nft is installed "
                                 "(Debian package iptables)")
    best = max(counts.values())
    winners = [v for v, n in counts.items() if n == best]
    if len(winners) == 1 and best > 0:
        return Tools(winners[0])
    try:
        out = subprocess.run(["iptables", "-V"], capture_output=True, text=True).stdout
    except OSError:
        out = ""
    default = "nft" if re.search(r"nf_tables", out) else "legacy"
    return Tools(default if default in counts else winners[0])
