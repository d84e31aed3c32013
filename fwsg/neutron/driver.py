"""The Neutron agent firewall driver: Neutron's ``FirewallDriver`` calls mapped onto
:class:`fwsg.firewall.Firewall`.

Neutron's agent (``SecurityGroupAgentRpc``) builds the driver with no arguments or with
``integration_bridge=``, wraps each batch of calls in ``defer_apply()`` and reads ``ports``.
Every ``defer_apply`` block (or single call outside one) is one fwsg transaction, committed when
the block ends, also when the block raised (as Neutron's own drivers apply what they
accumulated); a kernel refusal takes the whole block back, in the kernel and in ``ports``.

Port dicts are Neutron's (``security_group_info_for_devices``): ``device`` is the agent's
handle for the port. With the Linux bridge agent it is the tap itself; with the Open vSwitch
agent (hybrid plugging) it is the port id and the tap is ``tap`` + its first 11 characters.
``naming`` chooses (``auto``: a ``device`` that cannot be an interface name, i.e. longer than
15 characters, is a port id). Nothing here imports Neutron; no I/O happens before the first
transaction.
"""

import contextlib
import logging
import threading
from collections.abc import Mapping

from fwsg.errors import ValidationError
from fwsg.firewall import Firewall
from fwsg.model import parse_members, parse_rule

LOG = logging.getLogger(__name__)

NAMINGS = ("auto", "direct", "hybrid")
TAP_PREFIX = "tap"
IFNAME_MAX = 15       # Linux interface names: 15 characters
HYBRID_ID_CHARS = 11  # os-vif/Nova: tap + the first 11 characters of the port id
_NO_MEMBERS = {"IPv4": [], "IPv6": []}


def tap_name(device, naming="auto"):
    """The tap interface of a Neutron ``device``: the device itself (``direct``), or ``tap`` +
    its first 11 characters (``hybrid``); ``auto`` picks hybrid for a device longer than an
    interface name can be. Raises ValidationError for a device that is not a non-empty string."""
    if not isinstance(device, str) or not device:
        raise ValidationError("port.device", f"{device!r} is not a device name or port id")
    if naming not in NAMINGS:
        raise ValidationError("naming", f"{naming!r} is not one of {', '.join(NAMINGS)}")
    if naming == "hybrid" or (naming == "auto" and len(device) > IFNAME_MAX):
        return TAP_PREFIX + device[:HYBRID_ID_CHARS]
    return device


def _rule(raw):
    """A Neutron rule dict as fwsg reads it: a remote address group is a remote group whose
    members arrive in ``sg_member_ips`` like a security group's."""
    if isinstance(raw, Mapping) and raw.get("remote_address_group_id") \
            and not raw.get("remote_group_id"):
        raw = dict(raw, remote_group_id=raw["remote_address_group_id"])
    return raw


def _rules(rules):
    return [_rule(r) for r in rules] if isinstance(rules, (list, tuple)) else rules


def _remote_ids(rules):
    if not isinstance(rules, (list, tuple)):
        return set()
    return {r["remote_group_id"] for r in rules
            if isinstance(r, Mapping) and isinstance(r.get("remote_group_id"), str)}


def _flat_members(members):
    """``{"IPv4": [...], "IPv6": [...]}`` with ``[ip, mac]`` pairs reduced to the ip (fwsg's
    sets hold addresses; the bulk parser takes plain strings at C speed)."""
    if not isinstance(members, Mapping):
        return members
    out = {}
    for key in ("IPv4", "IPv6"):
        if key in members:
            ips = members[key]
            out[key] = [m[0] if isinstance(m, (list, tuple)) and m else m for m in ips] \
                if isinstance(ips, (list, tuple)) else ips
    return out


class FwsgFirewallDriver:
    """Neutron's ``FirewallDriver`` contract, implemented with fwsg (``firewall_driver = fwsg``).

    ``integration_bridge`` is accepted and unused (the filter sits on the taps);
    ``namespace`` is the network namespace to manage (None: the agent's own), as
    ``IptablesFirewallDriver`` takes it. ``naming`` (``auto``/``direct``/``hybrid``) maps
    ``device`` to the tap; ``backend``/``conntrack`` are :class:`fwsg.firewall.Firewall`'s
    (``backend="fake"`` for tests)."""

    # The Open vSwitch agent reads these: plug VMs through a per-port Linux bridge (qbr…),
    # and keep installing its own ARP-spoofing flows (fwsg checks ARP on the tap as well).
    OVS_HYBRID_PLUG_REQUIRED = True
    provides_arp_spoofing_protection = False
    naming = "auto"

    def __init__(self, integration_bridge=None, namespace=None, *, naming=None, backend="nft",
                 conntrack=None):
        if naming is not None:
            if naming not in NAMINGS:
                raise ValidationError("naming", f"{naming!r} is not one of {', '.join(NAMINGS)}")
            self.naming = naming
        self.integration_bridge = integration_bridge
        self.namespace = namespace
        self.firewall = Firewall(netns=namespace, backend=backend, conntrack=conntrack)
        self.trusted_ports = []
        self._ports = {}        # device -> the agent's port dict, as given
        self._port_remote = {}  # device -> remote group ids of its own (server-added) rules
        self._groups = {}       # group id -> remote group ids its rules reference
        self._member_ids = set()
        self._lock = threading.RLock()
        self._depth = 0
        self._owner = None      # the thread whose block is open
        self._block = None
        self._saved = None
        self._started = False   # fwsg holds the agent's state (the first port call starts it)
        self._starting = False
        self._boot_rules = {}   # before the start: group id -> rules, members (validated)
        self._boot_members = {}

    # -- what the agent reads -----------------------------------------------------------------
    @property
    def ports(self):
        """device -> port dict of every port this driver handles (filtered or with port
        security off), as the agent gave it."""
        return dict(self._ports)

    # -- deferral: one transaction per block ---------------------------------------------------
    def filter_defer_apply_on(self):
        """Start (or nest) a block; the outermost block's changes are one transaction."""
        self._lock.acquire()
        self._depth += 1
        if self._depth > 1:
            return
        self._owner = threading.get_ident()
        self._saved = (dict(self._ports), dict(self._port_remote), dict(self._groups),
                       set(self._member_ids), list(self.trusted_ports))
        self._block = self.firewall.defer_apply()
        self._block.__enter__()

    def filter_defer_apply_off(self):
        """End a block; the outermost commits it. If the kernel refuses, nothing of the block
        stays (kernel, fwsg's state and ``ports`` as before) and the error is raised."""
        if self._depth == 0 or self._owner != threading.get_ident():
            return  # unbalanced: no block of this thread is open (and it holds no lock)
        try:
            self._depth -= 1
            if self._depth:
                return
            block, self._block, self._owner = self._block, None, None
            try:
                self._prune()
            except BaseException as e:
                self._restore()
                block.__exit__(type(e), e, e.__traceback__)  # takes the block back, re-raises
                raise
            try:
                block.__exit__(None, None, None)
            except BaseException:
                self._restore()
                raise
            self._saved = None
            if self._starting:
                self._starting = False
                self._boot_rules, self._boot_members = {}, {}
            result = self.firewall.last_result
            if result is not None and result.notices:
                for notice in result.notices:
                    LOG.info("fwsg: %s", notice)
                result.notices.clear()
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def defer_apply(self):
        """Every call inside is committed as one transaction when the block ends."""
        self.filter_defer_apply_on()
        try:
            yield
        finally:
            self.filter_defer_apply_off()

    def _restore(self):
        (self._ports, self._port_remote, self._groups, self._member_ids,
         self.trusted_ports) = self._saved
        self._saved = None
        if self._starting:
            self._started = self._starting = False

    def _one(self, fn, *args):
        """Run one call as its own block (nothing changes while its arguments are invalid)."""
        with self.defer_apply():
            return fn(*args)

    # -- ports ---------------------------------------------------------------------------------
    def prepare_port_filter(self, port):
        """Start filtering ``port`` (a Neutron port dict)."""
        self._one(self._set_port, port)

    def update_port_filter(self, port):
        """Replace a port's filter (groups, addresses, rules, port security). A port not yet
        filtered starts being filtered, as with Neutron's openvswitch driver."""
        self._one(self._set_port, port)

    def apply_port_filter(self, port):
        """Nothing to do: prepare_port_filter already filters the port."""

    def remove_port_filter(self, port):
        """Stop filtering a port (its dict, or its device) and cut its connections."""
        self._one(self._remove_port, port)

    def _device(self, port):
        if not isinstance(port, Mapping):
            raise ValidationError("port", f"{_short(port)} is not a port (an object with a "
                                  "device)")
        device = port.get("device")
        tap_name(device)  # a non-empty string
        return device

    def _start(self):
        """The first port call: fwsg's state becomes what the agent said so far (groups and
        members, no ports yet), replacing whatever an earlier run left in the kernel, in this
        block's one transaction. Until then nothing reaches the kernel, so an agent that
        restarts and first removes or refreshes something does not unfilter every port."""
        self.firewall.apply({"security_groups": self._boot_rules,
                             "sg_member_ips": self._boot_members, "devices": {}})
        self._started = self._starting = True
        self._groups.update({sg: _remote_ids(r) for sg, r in self._boot_rules.items()})
        self._member_ids.update(self._boot_members)

    def _set_port(self, port):
        device = self._device(port)
        raw = self._fwsg_port(device, port)
        if not self._started:
            self._start()
        for sg in raw["security_groups"] if isinstance(raw["security_groups"], list) else ():
            if isinstance(sg, str) and sg not in self._groups:
                # a group whose rules have not arrived allows nothing yet
                self.firewall.update_security_group_rules(sg, [])
                self._groups[sg] = set()
        self.firewall.update_port_filter(raw)
        self._ports[device] = port
        self._port_remote[device] = _remote_ids(raw["security_group_rules"])

    def _fwsg_port(self, device, port):
        """The port in fwsg's wire format; its fwsg id is the agent's ``device``."""
        get = port.get
        return {"id": device, "device": tap_name(device, self.naming),
                "mac_address": get("mac_address"), "fixed_ips": get("fixed_ips") or [],
                "allowed_address_pairs": get("allowed_address_pairs") or [],
                "security_groups": get("security_groups") or [],
                "port_security_enabled": get("port_security_enabled", True),
                "security_group_rules": _rules(get("security_group_rules") or []),
                "network_id": get("network_id")}

    def _remove_port(self, port):
        device = port if isinstance(port, str) else self._device(port)
        if device not in self._ports:
            LOG.info("fwsg: remove_port_filter for %r, which is not filtered", device)
            return
        self.firewall.remove_port_filter(device)
        del self._ports[device]
        self._port_remote.pop(device, None)

    # -- groups --------------------------------------------------------------------------------
    def update_security_group_rules(self, sg_id, sg_rules):
        """Set a group's rules (Neutron rule dicts)."""
        self._one(self._set_rules, sg_id, sg_rules)

    def _set_rules(self, sg_id, sg_rules):
        rules = _rules(sg_rules)
        if not self._started:
            _check_id(sg_id)
            if not isinstance(rules, (list, tuple)):
                raise ValidationError(f"security_groups.{sg_id}", f"{_short(rules)} is not a list")
            for i, r in enumerate(rules):
                parse_rule(f"security_groups.{sg_id}[{i}]", r)
            self._boot_rules[sg_id] = list(rules)
            return
        self.firewall.update_security_group_rules(sg_id, rules)
        self._groups[sg_id] = _remote_ids(rules)

    def update_security_group_members(self, sg_id, sg_members):
        """Set the members of a security group or address group: ``{"IPv4": [...], "IPv6":
        [...]}`` of addresses, prefixes or ``[ip, mac]`` pairs; only the difference reaches the
        kernel, and connections that lose their rule are cut."""
        self._one(self._set_members, sg_id, sg_members)

    def _set_members(self, sg_id, sg_members):
        members = _flat_members(sg_members)
        if not self._started:
            _check_id(sg_id)
            parse_members(f"sg_member_ips.{sg_id}", members)
            self._boot_members[sg_id] = members
            return
        self.firewall.update_security_group_members(sg_id, members)
        self._member_ids.add(sg_id)

    def security_group_updated(self, action_type, sec_group_ids, device_ids=None):
        """Logged only: the agent follows with the new rules/members and port updates, and fwsg
        applies those as they come (there is no per-port state to refresh)."""
        LOG.debug("fwsg: %s updated for groups %s, devices %s", action_type,
                  sorted(sec_group_ids or ()), sorted(device_ids or ()))

    def _prune(self):
        """Forget groups no port uses any more and members no used rule references (as
        Neutron's iptables driver does at the end of a block)."""
        if not self._started:
            return
        used = set()
        remote = set()
        for device, port in self._ports.items():
            sgs = port.get("security_groups") or ()
            used.update(sg for sg in sgs if isinstance(sg, str))
            remote |= self._port_remote.get(device, set())
        for sg in used:
            remote |= self._groups.get(sg, set())
        for sg in [g for g in self._groups if g not in used]:
            self.firewall.remove_security_group(sg)
            del self._groups[sg]
        for sg in [g for g in self._member_ids if g not in remote]:
            self.firewall.update_security_group_members(sg, _NO_MEMBERS)
            self._member_ids.discard(sg)

    # -- trusted ports -------------------------------------------------------------------------
    def process_trusted_ports(self, port_ids):
        """Ports Neutron does not filter (DHCP, routers: no security groups). fwsg filters only
        the taps of ports it was given, so these pass unfiltered; recorded for
        ``trusted_ports``. Never touches the kernel."""
        for pid in port_ids or ():
            if pid not in self.trusted_ports:
                self.trusted_ports.append(pid)

    def remove_trusted_ports(self, port_ids):
        for pid in port_ids or ():
            if pid in self.trusted_ports:
                self.trusted_ports.remove(pid)


class FwsgHybridFirewallDriver(FwsgFirewallDriver):
    """The driver with ``device`` always a port id (tap = ``tap`` + its first 11 characters),
    as ``iptables_hybrid`` reads it (``firewall_driver = fwsg_hybrid``)."""

    naming = "hybrid"


def _check_id(sg_id):
    if not isinstance(sg_id, str) or not sg_id or len(sg_id) > 255:
        raise ValidationError("security_group_id", f"{sg_id!r} is not a valid id")


def _short(v):
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


