"""Publish a wire-format model into the etcd layout, writing only the keys that differ.

The model is validated first (bad input: ValidationError naming the field, nothing written).
It is authoritative for the groups it names (their rules and members: member keys it does not
list are deleted) and, with ``host``, for that host's ports (port keys it does not list are
deleted). Other groups and hosts are left alone. Values are the canonical wire form
(``Model.to_wire``), so publishing the same model twice writes nothing.

Order of the writes: rules and new members, then ports, then deletions; each step in etcd
transactions of bounded size. A port therefore never arrives before the groups it names.
"""

import json
from dataclasses import dataclass

from fwsg.errors import UserError
from fwsg.model import Model


def dumps(obj):
    """The one JSON encoding of values (compact, sorted keys): equal values, equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


@dataclass
class PublishResult:
    puts: int
    deletes: int
    unchanged: int
    transactions: int

    def as_dict(self):
        return dict(self.__dict__)


def desired_keys(layout, model, host=None):
    """key -> value (str) for ``model`` (a Model) in ``layout``. Pure."""
    wire = model.to_wire()
    out = {}
    for sg, rules in wire["security_groups"].items():
        out[layout.rules(sg)] = dumps(rules)
    for sg, fams in wire["sg_member_ips"].items():
        for ips in fams.values():
            for ip in ips:
                out[layout.member(sg, ip)] = dumps(ip)
    if wire["devices"]:
        if host is None:
            raise UserError("--host is required to publish a model with devices (ports live "
                            "under their host)")
        for pid, port in wire["devices"].items():
            out[layout.port(host, pid)] = dumps(port)
    return out


def publish(store, layout, model, host=None):
    """Make the store hold ``model`` (a Model or wire dict); a PublishResult."""
    model = Model.from_wire(model)
    want = desired_keys(layout, model, host)
    names = set(model.groups) | set(model.members)
    have = {}
    _, kvs = store.range(layout.groups())
    for k, v in kvs:
        what = layout.parse(k)
        if what and what[0] in ("rules", "member") and what[1] in names:
            have[k] = v
    if host is not None:
        _, kvs = store.range(layout.ports(host))
        have.update(kvs)
    puts = [(k, v) for k, v in want.items() if have.get(k) != v.encode()]
    first = [("put", k, v) for k, v in puts if "/hosts/" not in k[len(layout.prefix):]]
    ports = [("put", k, v) for k, v in puts if "/hosts/" in k[len(layout.prefix):]]
    member_keys = {layout.members(sg) for sg in model.members}
    dels = []
    for k in have:
        if k in want:
            continue
        what = layout.parse(k)
        if what is None:
            continue
        if what[0] == "member" and layout.members(what[1]) not in member_keys:
            continue  # the model says nothing about this group's members
        if what[0] == "rules" and what[1] not in model.groups:
            continue
        dels.append(("delete", k))
    txns = store.txn(first) + store.txn(ports) + store.txn(dels)
    return PublishResult(puts=len(puts), deletes=len(dels),
                         unchanged=len(want) - len(puts), transactions=txns)
