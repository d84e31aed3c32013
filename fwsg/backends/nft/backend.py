"""The nftables backend: fwsg's two tables (``bridge fwsg``, ``inet fwsg``) in one network
namespace, through one long-lived libnftables context and one netlink writer.

It only ever names ``bridge fwsg`` and ``inet fwsg``: it never lists, flushes or changes any
other table.
"""

import errno
import json

from fwsg import fast, testhooks
from fwsg.backends.nft import netlink, readback, render
from fwsg.backends.nft.host import ConntrackCount, Generation, prepare_host, require_net_admin
from fwsg.errors import KernelError
from fwsg.netns import entered
from fwsg.ops import FillChain
from fwsg.plan import Plan, diff
from fwsg.ruleset import FAMILIES, TABLE, Ruleset


class NftBackend:
    """Kernel access for one network namespace (None = the caller's). Implements
    :class:`fwsg.backends.base.Backend`."""

    name = "nft"
    tracks_conntrack = True  # the kernel keeps flows: sweep them after a change
    overlaps = True          # commit(plan, during=...) starts work to run beside the kernel's

    def __init__(self, netns=None):
        self.netns = netns
        require_net_admin()
        self._host_ready = False
        self._ct = ConntrackCount(netns)
        self._gen = Generation(netns)
        self.steps = 0  # kernel transactions the last commit made
        with entered(netns):
            self._ctx = fast.NftContext()
            self._writer = fast.NetlinkWriter()

    def close(self):
        """Free the libnftables context, the netlink socket and the conntrack fd."""
        self._ctx.close()
        self._writer.close()
        self._ct.close()
        self._gen.close()

    # -- host ---------------------------------------------------------------------------------
    def prepare_host(self, mode="bridge"):
        """Make the namespace able to filter ``mode`` traffic (bridged frames reach the inet
        hooks: br_netfilter loaded, bridge-nf-call-ip{,6}tables on); the notices of what was
        changed. Done once per backend; EnvironmentProblem when impossible."""
        if self._host_ready:
            return []
        notices = prepare_host(self.netns, mode)
        from fwsg.backends.iptables.switch import remove_iptables_state

        notices += remove_iptables_state(self.netns, self._ctx.run("list tables"))
        self._host_ready = True
        return notices

    def conntrack_in_use(self):
        """False when the namespace's conntrack table is empty: no sweep needed."""
        return self._ct.in_use()

    # -- desired state, diff ------------------------------------------------------------------
    def desired(self, port_ids=None, group_names=None):
        """An empty desired state (a :class:`fwsg.backends.nft.desired.Desired`) for the layout;
        ``port_ids`` keeps the port numbers the kernel already uses, ``group_names`` the
        derived names recorded for group ids (see fwsg.naming)."""
        from fwsg.backends.nft.desired import Desired

        return Desired(port_ids, group_names=group_names)

    def describe(self, state, names=None):
        """A summary of ``state`` (from :meth:`read`) for people: ports, groups, sets."""
        from fwsg.backends.nft.describe import describe

        return describe(state, names)

    def port_ids(self, current):
        """device -> port number, as the kernel holds them (``current`` from :meth:`read`)."""
        from fwsg.backends.nft.desired import port_ids

        return port_ids(current)

    def drift(self, desired, current, deep=False):
        """Drift the digests cannot show (see :mod:`fwsg.backends.nft.drift`): (``current``
        with what differs marked, {family: reason} of tables to rebuild in the transaction
        (:func:`~fwsg.backends.nft.drift.with_rebuild`), report lines). ``deep`` compares
        every rule, base chain and declaration by content (reconcile)."""
        from fwsg.backends.nft import drift

        return drift.inspect(self, desired.rs, current, deep)

    def diff(self, desired, current, pending=None):
        """The Plan (typed operations) turning ``current`` (a Ruleset) into the Ruleset of
        ``desired`` (a Desired); only the keys ``pending`` names when given. Pure."""
        return diff(desired.rs, current, pending, render.render, netlink.editable)

    # -- kernel -------------------------------------------------------------------------------
    def run(self, text, json_output=False):
        """Run nft text in this namespace; KernelError when refused (nothing changed then)."""
        return self._ctx.run(text, json_output)

    def commit(self, plan, during=None):
        """Commit one Plan as one atomic transaction; nothing for an empty plan. A plan whose
        every operation the netlink writer encodes (tables, declarations, chains and rules of
        the forms fwsg emits, elements: :func:`fwsg.backends.nft.netlink.netlink_ops`) goes
        straight to netlink as one batch; anything else through libnftables (the fallback).
        A plan adding many address elements (a cold start) is committed in steps: the
        structure (one netlink batch, or libnftables when something in it does not encode),
        then the elements in bounded netlink batches, each step atomic and never more open
        than the target. Returns which way it went.

        On the netlink path the kernel reports the handles of the rules created
        (``plan.handles``) and the generation the commit made (``plan.after``, see
        :meth:`fwsg.plan.Plan.counted`; None after the other paths). A plan that edits rules
        by handle (``plan.guard``) is refused (KernelError, ERESTART; nothing changed) when
        the kernel's generation is not the guard: inside the batch on the netlink path, just
        before it otherwise.

        ``during``: a callable (it starts work in another thread) called once, just before
        the first step of a commit in steps goes to the kernel (never for one batch): the
        writer's send releases the GIL, so Python work that does not depend on this commit
        overlaps with the kernel's."""
        self.steps = 0
        if not plan:
            return None
        few = plan.summary.get("elements_added", netlink.BULK_THRESHOLD) < netlink.BULK_THRESHOLD
        split = None if few else netlink.split_bulk(plan)  # a small change: no scan for bulk
        if split is None:
            self.steps = 1
            if self._send_traced(plan):
                return "netlink"
            self._check_guard(plan)
            self._ctx.run(str(plan))
            return "libnftables"
        self._check_guard(plan)
        rest, batches = split
        way = "netlink"
        if rest:
            ops = netlink.netlink_ops(rest)
            if during is not None:
                during()
                during = None
            if not self._send(ops):
                self._ctx.run("".join(c + "\n" for c in render.render(rest)))
                way = "libnftables+netlink"
            self.steps += 1
        if during is not None:
            during()
        for batch in batches:
            testhooks.point("between-steps")
            self._writer.commit(batch)
            self.steps += 1
        return way

    def _send_traced(self, plan):
        """Commit ``plan`` as one netlink batch, guarded by ``plan.guard``, learning the
        handles of the rules it creates (echoed when it creates any) into ``plan.handles``
        and the generation it made (``plan.counted``); False (nothing sent) when the writer
        cannot encode it."""
        traced = netlink.netlink_ops_traced(plan)
        if not traced:
            return False
        ops, origin = traced
        echo = False
        for op in ops:
            if op[0] == "xrule" or op[0] == "rule":
                echo = True
                break
        try:
            reported = self._writer.commit(ops, plan.guard, echo=echo)
        except ValueError:
            return False
        plan.counted(self._writer.generation if echo else None)
        handles = plan.handles
        for n, h in zip(origin, reported):
            if type(plan.ops[n]) is FillChain:
                handles.setdefault(n, []).append(h)
            elif h is not None:
                handles[n] = h
        return True

    def _check_guard(self, plan):
        """KernelError (ERESTART) when ``plan`` edits rules by handle and the namespace is
        no longer at the generation it was made against."""
        if plan.guard is not None:
            now = self.generation()
            if now is None or now[1] != plan.guard:
                raise KernelError("nftables refused the batch: the ruleset changed since "
                                  f"generation {plan.guard}", errno.ERESTART)

    def _send(self, ops):
        """Commit ``ops`` through the netlink writer; False (nothing sent) when there are none
        or the writer cannot encode them (a batch larger than its page): libnftables then
        takes the same operations."""
        if not ops:
            return False
        try:
            self._writer.commit(ops)
        except ValueError:
            return False
        return True

    def generation(self):
        """(namespace cookie, nf_tables generation id): the id moves with every transaction
        anyone commits in the namespace; None if unknown."""
        return self._gen.current()

    def read_port_ids(self):
        """device -> port number (and ``.zones``), reading only the small maps that hold them
        (not the whole ruleset)."""
        try:
            out = self._ctx.run(f"list map bridge {TABLE} port-src", json_output=True)
        except KernelError as e:
            if e.errno == errno.ENOENT:
                return {}
            raise
        try:
            items = json.loads(out)["nftables"]
        except (ValueError, KeyError, TypeError):
            return self.port_ids(self.read())
        rs = readback.parse_table("bridge", items)
        try:  # the conntrack zones of the ports' networks (kept across processes)
            zones = json.loads(self._ctx.run(f"list map inet {TABLE} zone-mark",
                                             json_output=True))["nftables"]
            readback.parse_table("inet", zones, rs)
        except KernelError as e:
            if e.errno != errno.ENOENT:
                raise
        except (ValueError, KeyError, TypeError):
            return self.port_ids(self.read())
        return self.port_ids(rs)

    def flush(self):
        """Delete fwsg's tables (those that exist); return the families removed."""
        present = [f for f in FAMILIES if self._table_json(f) is not None]
        if present:
            self._ctx.run("".join(f"delete table {f} {TABLE}\n" for f in present))
        return present

    def _table_json(self, family):
        try:
            out = self._ctx.run(f"list table {family} {TABLE}", json_output=True)
        except KernelError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        try:
            return json.loads(out)["nftables"] if out.strip() else []
        except (ValueError, KeyError, TypeError):
            raise KernelError(f"cannot read table {family} {TABLE}: nftables printed a listing "
                              "that is not JSON (a table flagged 'owner' by another program?)"
                              ) from None

    def read(self):
        """The current state of fwsg's tables as a Ruleset (chains carry the digest found in the
        kernel; a chain whose rules were changed by someone else gets a digest that matches
        nothing)."""
        rs = Ruleset(tables=frozenset())
        rs.meta = {"handles": {}}
        for family in FAMILIES:
            items = self._table_json(family)
            if items is not None:
                readback.parse_table(family, items, rs)
        return rs

    def empty_plan(self):
        return Plan((), {}, render.render)
