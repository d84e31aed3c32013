"""The key layout of fwsg's data in etcd (documented in docs/sync.md). Pure: no I/O.

Under a prefix P (default ``/fwsg``), one small key per frequent event::

    P/groups/<sg>/rules                  JSON list of the group's rules (wire format)
    P/groups/<sg>/members/<address>      JSON: the member as in sg_member_ips ("ip" or [ip, mac])
    P/hosts/<host>/ports/<port>          JSON: the port as in devices (device, mac, groups, ...)
    P/cluster                            JSON: the placement cluster document
    P/stats/<node>                       JSON: a node's probe document, under the node's lease

Ids and addresses are percent-encoded in keys (``/`` -> ``%2F``), so any id is one key segment.
"""

import urllib.parse

from fwsg.errors import ValidationError

DEFAULT_PREFIX = "/fwsg"
_SAFE = ":.@-_~"


def enc(s):
    """One key segment for an id or an address."""
    return urllib.parse.quote(s, safe=_SAFE)


def dec(s):
    return urllib.parse.unquote(s)


class Layout:
    """Key builders and the parser for one prefix."""

    def __init__(self, prefix=DEFAULT_PREFIX):
        prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.prefix = prefix

    def groups(self):
        return f"{self.prefix}/groups/"

    def group(self, sg):
        """Prefix of everything of one group (its rules and members): what a host watches."""
        return f"{self.prefix}/groups/{enc(sg)}/"

    def rules(self, sg):
        return f"{self.prefix}/groups/{enc(sg)}/rules"

    def members(self, sg):
        return f"{self.prefix}/groups/{enc(sg)}/members/"

    def member(self, sg, address):
        return f"{self.prefix}/groups/{enc(sg)}/members/{enc(address)}"

    def ports(self, host):
        return f"{self.prefix}/hosts/{enc(host)}/ports/"

    def port(self, host, pid):
        return f"{self.prefix}/hosts/{enc(host)}/ports/{enc(pid)}"

    def hosts(self):
        return f"{self.prefix}/hosts/"

    def cluster(self):
        return f"{self.prefix}/cluster"

    def stats(self, node=None):
        return f"{self.prefix}/stats/" + (enc(node) if node is not None else "")

    def parse(self, key):
        """What ``key`` is: ("rules", sg), ("member", sg, address), ("port", host, pid),
        ("cluster",), ("stats", node), or None for a key outside the layout."""
        if not key.startswith(self.prefix + "/"):
            return None
        parts = key[len(self.prefix) + 1:].split("/")
        if parts[0] == "groups" and len(parts) == 3 and parts[2] == "rules":
            return ("rules", dec(parts[1]))
        if parts[0] == "groups" and len(parts) == 4 and parts[2] == "members" and parts[3]:
            return ("member", dec(parts[1]), dec(parts[3]))
        if parts[0] == "hosts" and len(parts) == 4 and parts[2] == "ports" and parts[3]:
            return ("port", dec(parts[1]), dec(parts[3]))
        if parts == ["cluster"]:
            return ("cluster",)
        if parts[0] == "stats" and len(parts) == 2 and parts[1]:
            return ("stats", dec(parts[1]))
        return None


def check_name(what, value):
    """An id usable in the layout (non-empty text, at most 255 characters)."""
    if not isinstance(value, str) or not value or len(value) > 255 or "\0" in value:
        raise ValidationError(what, f"{value!r} is not a valid name")
    return value
