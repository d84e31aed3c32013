"""The packet-path benchmark (``scripts/bench --packet``): what a firewall costs each packet,
UDP between two VMs on the same bridge, against no firewall at all, measured in the same run.
Not a test: no assertion on time; the target is printed next to the numbers.

Scenario: the hot-path benchmark's (500 ports, 50 groups of 20 rules, M members, see
:func:`fwsg.lab.bench.scenario`), in which the two VMs that carry traffic, ``port-248`` (the
sender, 192.0.2.249) and ``port-249`` (the receiver, 192.0.2.250), are in group ``pkt`` only:
the scenario's ``default`` rules without those that would admit the test flows anyway, then
ingress UDP 5001 from remote group ``default`` (the big group, 85-94 % of M; the sender is one of
its members), so a packet that is judged by the rules ends in a lookup in the biggest set.
The other 498 ports exist only in the rules (set/map entries, iptables rules); they have no
devices. The VMs are in the middle of the port list (an iptables driver that walks a list of
ports finds them after ~250 others).

Lab (one per firewall, all up at once, plus one without a firewall): a host namespace with the
bridge ``brqnet-1`` (Neutron's Linux bridge name for network ``net-1``) and two VM namespaces
on veths named as the ports' devices (``tap248``, ``tap249``), ``br_netfilter`` on, except in
the lab without a firewall (a plain bridge).

What one run measures: a sender thread in the sender VM pushes N prebuilt IPv4/UDP packets
through a raw socket with ``sendmmsg`` (1024 per call, through ctypes: no compiled helper).
The whole path (sender's IP output, the veth, the bridge and every netfilter hook on it, the
receiver's veth and UDP delivery into a bound socket that never reads) runs in softirq on the
sender's CPU and is charged to the sender thread (this kernel has no IRQ time accounting), so
the cost of a packet is (the sender thread's CPU time + whatever ksoftirqd ran meanwhile) / N.
Three kinds of traffic:

- ``established``: one flow whose reply has been seen (conntrack: established), the common case;
- ``unreplied``: one flow never answered, so every packet is judged by the rules again (conntrack
  state new): the port's rules and the lookup in the big set on every packet;
- ``new flows``: every packet from another source port, so each one creates a conntrack entry and
  is judged by the rules (the table is flushed before and after each run).

Rounds: every lab runs every kind once per round, in a rotated order, paired with a run of the
plain bridge of the same kind: the two runs go slice by slice in turn (``--packet-parts``
slices, the first of each pair alternating), so both meet the same load on a shared machine.
A firewall's sample in a round is the median over the slices of (its cost - the plain
bridge's slice next to it); a row is the median sample over the rounds, its interquartile
range in the note. Flatness: the largest member count of each fwsg backend minus the
smallest, round by round (both measured in every round); within noise when the interquartile
range of those differences holds 0, and the row fails only when the whole range lies above 0
(the larger size costs more beyond noise).

Sanity, per lab before the rounds: 1,000 packets of the admitted flow all reach the receiver's
UDP stack (its ``/proc/net/snmp`` counters, the sockets drained); 1,000 to UDP 5002, which no
rule admits, arrive without a firewall and never with one; for fwsg, with the sender removed
from ``default``, the admitted flow is dropped too; for Neutron, its rule that admits the flow
by its ipset of ``default`` counted them (the packets really consult the big set).

Neutron (``--peer neutron``): OpenStack Neutron's real ``IptablesFirewallDriver`` (ipset on),
unmodified, driven by ``fwsg/lab/peer_neutron.py`` exactly as for the control-plane rows
(``SecurityGroupAgentRpc.setup_port_filters`` over every port of the same scenario, the agent
named ``neutron-linuxbridge-agent``; see that file), run inside the host namespace of its own
lab, initial apply only; its rules match the lab's real devices (``--physdev-out tap249``...).
Its ipsets have ipset's default limit of 65,536 entries ("Hash is full" at 100k members), so
Neutron is measured only up to ``--peer-max-members`` (50,000).
"""

import ctypes
import ipaddress
import os
import socket
import statistics
import struct
import subprocess
import time

from fwsg.lab.bench import Bench, scenario
from fwsg.lab.topology import Lab
from fwsg.netns import entered

SENDER, RECEIVER = "port-248", "port-249"
GROUP = "pkt"
ADMITTED, DENIED = 5001, 5002        # UDP destination ports: one the rules admit, one they do not
SPORT_EST, SPORT_UNREPLIED = 40001, 40002
NEW_SPORTS = 20000                   # first source port of the new-flows packets
BRIDGE = "brqnet-1"                  # ('brq' + network_id)[:14], as Neutron names it
PAYLOAD = 32
BATCH = 1024                         # messages per sendmmsg (UIO_MAXIOV)
KINDS = ("established", "unreplied", "new flows")


def _admits_test_flow(rule, src):
    """True if ``rule`` would admit UDP 5001/5002 from ``src`` without the big set deciding."""
    if rule.get("direction") != "ingress" or rule.get("ethertype") != "IPv4":
        return False
    if rule.get("protocol") not in (None, "udp", "17"):
        return False
    lo, hi = rule.get("port_range_min"), rule.get("port_range_max")
    if lo is not None and not (lo <= DENIED and (hi if hi is not None else lo) >= ADMITTED):
        return False
    prefix = rule.get("remote_ip_prefix")
    if prefix and ipaddress.ip_address(src) not in ipaddress.ip_network(prefix):
        return False
    return rule.get("remote_group_id") in (None, "default")


def packet_scenario(members, ports=500, groups=50, rules=20, seed=1):
    """The benchmark scenario (wire dict) with the two VMs in group ``pkt`` (see the module
    docstring): UDP 5001 admitted from ``default``'s members only, UDP 5002 by nothing."""
    doc = scenario(ports, groups, rules, members, seed)
    snd, rcv = doc["devices"][SENDER], doc["devices"][RECEIVER]
    src = snd["fixed_ips"][0]
    own = [r for r in doc["security_groups"]["default"] if not _admits_test_flow(r, src)]
    doc["security_groups"][GROUP] = own + [
        {"direction": "egress", "ethertype": "IPv4", "protocol": "udp",
         "port_range_min": ADMITTED, "port_range_max": DENIED},
        {"direction": "ingress", "ethertype": "IPv4", "protocol": "udp",
         "port_range_min": ADMITTED, "port_range_max": ADMITTED, "remote_group_id": "default"}]
    snd["security_groups"] = rcv["security_groups"] = [GROUP]
    doc["sg_member_ips"]["default"]["IPv4"].append(src)
    doc["sg_member_ips"].setdefault(GROUP, {"IPv4": [], "IPv6": []})
    return doc


# ------------------------------------------------------------------ sending

class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_Iovec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
_libc.sendmmsg.restype = ctypes.c_int


def udp_packet(src, dst, sport, dport):
    """An IPv4/UDP packet for a raw IPPROTO_RAW socket (the kernel fills length, id and the IP
    checksum; UDP checksum 0: none)."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0x4000, 64, socket.IPPROTO_UDP, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip + struct.pack("!HHHH", sport, dport, 8 + PAYLOAD, 0) + b"\x00" * PAYLOAD


class Burst:
    """``count`` prebuilt packets (``packets`` distinct ones, repeated) sent by ``sendmmsg`` on a
    raw socket; keeps every buffer alive as long as it lives."""

    def __init__(self, sock, dst, packets, count):
        self.sock, self.count = sock, count
        self.bufs = [ctypes.create_string_buffer(p, len(p)) for p in packets]
        self.name = ctypes.create_string_buffer(
            struct.pack("=HH4s8x", socket.AF_INET, 0, socket.inet_aton(dst)), 16)
        n = len(packets) if len(packets) > 1 else BATCH
        self.iov = (_Iovec * len(self.bufs))()
        for i, b in enumerate(self.bufs):
            self.iov[i].iov_base, self.iov[i].iov_len = ctypes.addressof(b), len(packets[i])
        self.msgs = (_Mmsghdr * n)()
        for i in range(n):
            h = self.msgs[i].msg_hdr
            h.msg_name, h.msg_namelen = ctypes.addressof(self.name), 16
            h.msg_iov = ctypes.pointer(self.iov[i % len(self.bufs)])
            h.msg_iovlen = 1
        self.n = n

    def send(self, count=None, start=0):
        """Send ``count`` packets (all ``count`` of the burst by default), the first being
        packet number ``start`` of the burst's cycle; raises OSError if the kernel refuses one."""
        base, size, fd = ctypes.addressof(self.msgs), ctypes.sizeof(_Mmsghdr), self.sock.fileno()
        count = self.count if count is None else count
        sent = 0
        while sent < count:
            at = (start + sent) % self.n
            k = min(BATCH, count - sent, self.n - at)
            r = _libc.sendmmsg(fd, base + at * size, k, 0)
            if r <= 0:
                e = ctypes.get_errno()
                raise OSError(e, f"sendmmsg: {os.strerror(e)}")
            sent += r


def _ksoftirqd_pids():
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().startswith("ksoftirqd/"):
                        out.append(int(pid))
            except OSError:
                pass
    return out


def _ran_ns(pids):
    """Nanoseconds the tasks ``pids`` have run (scheduler's exact sum)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


# ------------------------------------------------------------------ labs

class PacketLab:
    """One lab (plain bridge or with a firewall): namespaces, sockets and bursts.

    ``setup(lab, doc)`` installs the firewall (None: none). ``label`` names it in the rows."""

    def __init__(self, name, label, doc, setup=None, members=None, fwsg=False):
        self.label, self.doc, self.setup, self.members, self.is_fwsg = label, doc, setup, \
            members, fwsg
        snd, rcv = doc["devices"][SENDER], doc["devices"][RECEIVER]
        self.src, self.dst = snd["fixed_ips"][0], rcv["fixed_ips"][0]
        self.lab = Lab(name, host_ipv4=None, host_ipv6=None, br_netfilter=setup is not None,
                       bridge=BRIDGE)
        self.lab.add_vm("snd", mac=snd["mac_address"], ipv4=[self.src + "/24"],
                        tap=snd["device"])
        self.lab.add_vm("rcv", mac=rcv["mac_address"], ipv4=[self.dst + "/24"],
                        tap=rcv["device"])
        self.socks = []
        self.fw = None
        self.info = {}

    def up(self, n, n_new):
        self.lab.up()
        with entered(self.lab.ns("rcv")):
            self.rx = [self._sock(socket.SOCK_DGRAM, ("0.0.0.0", p)) for p in (ADMITTED, DENIED)]
        with entered(self.lab.ns("snd")):
            self.raw = self._sock(socket.SOCK_RAW, None, socket.IPPROTO_RAW)
            self.est_rx = self._sock(socket.SOCK_DGRAM, ("0.0.0.0", SPORT_EST))
        for s in self.rx:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        pk = lambda sport, dport: udp_packet(self.src, self.dst, sport, dport)  # noqa: E731
        self.bursts = {
            "established": Burst(self.raw, self.dst, [pk(SPORT_EST, ADMITTED)], n),
            "unreplied": Burst(self.raw, self.dst, [pk(SPORT_UNREPLIED, ADMITTED)], n),
            "new flows": Burst(self.raw, self.dst,
                               [pk(NEW_SPORTS + i, ADMITTED) for i in range(n_new)], n_new)}
        if self.setup:
            self.setup(self)

    def _sock(self, kind, bind, proto=0):
        s = socket.socket(socket.AF_INET, kind, proto)
        self.socks.append(s)
        if bind:
            s.bind(bind)
        return s

    def arrived(self):
        """Datagrams that reached the receiver's UDP stack so far (read, or dropped for a
        full buffer). The sockets are drained first: a datagram counts as delivered only
        once it is read."""
        for s in self.rx:
            try:
                while True:
                    s.recv(64, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
        out = subprocess.run(["ip", "netns", "exec", self.lab.ns("rcv"), "cat",
                              "/proc/net/snmp"], capture_output=True, text=True, check=True)
        head, vals = [line.split()[1:] for line in out.stdout.splitlines()
                      if line.startswith("Udp:")][:2]
        row = dict(zip(head, map(int, vals)))
        return row["InDatagrams"] + row["InErrors"]

    def count(self, sport, dport, n=1000):
        """How many of ``n`` packets from ``sport`` to ``dport`` arrived (sent 100 at a time,
        so that a softirq deferred to ksoftirqd cannot overflow a backlog queue)."""
        before = self.arrived()
        burst = Burst(self.raw, self.dst, [udp_packet(self.src, self.dst, sport, dport)],
                      min(n, 100))
        for _ in range(n // burst.count):
            burst.send()
            time.sleep(0.002)
        time.sleep(0.05)
        return self.arrived() - before

    def conntrack_flush(self):
        if self.setup:
            subprocess.run(["ip", "netns", "exec", self.lab.host_ns, "conntrack", "-F"],
                           capture_output=True)

    def handshake(self):
        """Make the established flow established: one packet out, one reply back."""
        Burst(self.raw, self.dst, [udp_packet(self.src, self.dst, SPORT_EST, ADMITTED)],
              1).send()
        time.sleep(0.005)
        self.rx[0].sendto(b"r", (self.src, SPORT_EST))
        self.est_rx.settimeout(1.0)
        try:
            self.est_rx.recv(64)
            return True
        except OSError:
            return False

    def warm(self):
        """Resolve the neighbours (ARP) before anything is timed."""
        for _ in range(20):
            if self.count(30000, ADMITTED, 1) == 1:
                return True
            time.sleep(0.05)
        return False

    def sanity(self):
        """Counts of the admitted and the denied flow (and, for fwsg, of the admitted flow
        from a sender that is no longer a member)."""
        s = {"warm": self.warm(), "admitted": self.count(30001, ADMITTED),
             "denied": self.count(30002, DENIED), "sent": 1000}
        if self.is_fwsg:
            self.fw.remove_security_group_members("default", [self.src])
            s["not_member"] = self.count(30003, ADMITTED)
            self.fw.add_security_group_members("default", [self.src])
            s["member_again"] = self.count(30004, ADMITTED)
        elif self.setup is not None:   # Neutron: its ipset rule for the flow counted them
            s["set_rule_packets"] = self._set_rule_packets()
        self.conntrack_flush()
        self.info["sanity"] = s
        return s

    def _set_rule_packets(self):
        """Packets counted by Neutron's rule admitting UDP 5001 by its ipset of ``default``."""
        out = subprocess.run(["ip", "netns", "exec", self.lab.host_ns, "iptables-save", "-c"],
                             capture_output=True, text=True).stdout
        return sum(int(line[1:].split(":")[0]) for line in out.splitlines()
                   if f"--dport {ADMITTED} -m set --match-set" in line and " src " in line + " ")

    def sanity_ok(self):
        s = self.info.get("sanity", {})
        if not s.get("warm") or s.get("admitted") != s.get("sent"):
            return False
        if self.setup is None:
            return s.get("denied") == s.get("sent")   # without a firewall it arrives
        ok = s.get("denied") == 0
        if self.is_fwsg:
            ok = ok and s.get("not_member") == 0 and s.get("member_again") == s.get("sent")
        else:
            ok = ok and s.get("set_rule_packets", 0) >= s.get("sent")
        return ok

    def begin(self, kind):
        """Ready a run of ``kind`` (the established flow answered once, the conntrack table
        flushed for new flows); the receiver's count so far."""
        if kind == "established" and self.setup and not self.handshake():
            raise RuntimeError(f"{self.label}: the established flow got no reply")
        if kind == "new flows":
            self.conntrack_flush()
        return self.arrived()

    def send_slice(self, kind, count, start, pids):
        """Send ``count`` packets of ``kind`` (from packet number ``start`` of its burst):
        (CPU microseconds per packet, the ksoftirqd share of it)."""
        k0 = _ran_ns(pids)
        c0 = time.thread_time_ns()
        self.bursts[kind].send(count, start)
        cpu = time.thread_time_ns() - c0
        k = _ran_ns(pids) - k0
        return (cpu + k) / count / 1000, k / count / 1000

    def end(self, kind, before, sent):
        """The fraction of ``sent`` packets that arrived since ``before`` (see :meth:`begin`);
        flushes the new flows' conntrack entries."""
        got = self.arrived() - before
        if kind == "new flows":
            self.conntrack_flush()
        return got / sent

    def down(self):
        for s in self.socks:
            s.close()
        self.lab.down()


def _fwsg_setup(backend):
    def setup(pl):
        from fwsg.firewall import Firewall

        pl.fw = Firewall(netns=pl.lab.host_ns, backend=backend)
        t = time.perf_counter()
        pl.fw.apply(pl.doc)
        pl.info["apply_ms"] = (time.perf_counter() - t) * 1000
    return setup


def _neutron_setup(pl, log):
    from fwsg.lab.peer import DEFAULT_VENV, run_neutron, scenario_file

    path = scenario_file(pl.doc)
    try:
        peer = run_neutron(path, DEFAULT_VENV, 1, log, netns=pl.lab.host_ns, steps="initial")
    finally:
        os.unlink(path)
    if "error" in peer:
        raise RuntimeError(f"Neutron refused {pl.members} members: {peer['error']}")
    pl.info["peer"] = peer


# ------------------------------------------------------------------ the bench

class PacketBench(Bench):
    """The packet-path rows (µs per packet); ``run()`` builds the labs, measures, removes them."""

    unit = "us"

    def run(self):
        a = self.a
        members = [int(m) for m in a.packet_members.split(",")]
        backends = [b for b in a.packet_backends.split(",") if b]
        n, n_new, rounds = a.packet_count, a.packet_new, a.packet_rounds
        tag = f"pk{os.getpid() % 100000}"
        labs = []
        docs = {m: packet_scenario(m, a.ports, a.groups, a.rules, a.seed) for m in members}
        labs.append(PacketLab(f"{tag}-none", "no firewall", docs[members[0]]))
        for be in backends:
            for m in members:
                labs.append(PacketLab(f"{tag}-{be[:9]}-{len(labs)}", f"fwsg {be}", docs[m],
                                      _fwsg_setup(be), m, fwsg=True))
        if a.peer == "neutron":
            for m in members:
                if m <= a.peer_max_members:
                    labs.append(PacketLab(f"{tag}-neutron-{len(labs)}", "Neutron", docs[m],
                                          lambda pl: _neutron_setup(pl, self.say), m))
        self.data["packet"] = {"count": n, "new_flows": n_new, "rounds": rounds,
                               "labs": {}, "unit": "microseconds of CPU per packet"}
        try:
            for pl in labs:
                self.say(f"== packet lab: {pl.label}"
                         + (f", {pl.members} members" if pl.members else ""))
                pl.up(n, n_new)
                pl.sanity()
                self.data["packet"].setdefault("sanity", {})[
                    pl.label + (f" {pl.members}" if pl.members else "")] = dict(
                    pl.info["sanity"], ok=pl.sanity_ok())
                self.say(f"   sanity {'ok' if pl.sanity_ok() else 'FAILED'}: {pl.info['sanity']}"
                         + (f"; apply {pl.info['apply_ms']:.0f} ms" if 'apply_ms' in pl.info
                            else ""))
            self.measure(labs, rounds)
        finally:
            for pl in labs:
                pl.down()

    def measure(self, labs, rounds):
        """Every lab runs every kind once per round (labs in a rotated order), paired slice by
        slice with the plain bridge (lab 0, see :func:`_paired_run`). Rows: the median sample
        over the rounds, with its interquartile range in the note; the last member count of
        each fwsg backend is compared with the first round by round (see :func:`_flatness`)."""
        pids = _ksoftirqd_pids()
        parts = max(1, self.a.packet_parts)
        cost = {(i, k): [] for i in range(len(labs)) for k in KINDS}
        diff = {(i, k): [] for i in range(len(labs)) for k in KINDS}
        soft = {(i, k): [] for i in range(len(labs)) for k in KINDS}
        got = {(i, k): [] for i in range(len(labs)) for k in KINDS}
        plain = labs[0]
        for r in range(rounds):
            self.say(f"== packet round {r + 1}/{rounds}")
            order = list(range(1, len(labs)))
            order = order[r % len(order):] + order[:r % len(order)]
            for i in order:
                for k in KINDS:
                    pair = _paired_run(plain, labs[i], k, parts, pids)
                    cost[0, k].append(pair["plain"])
                    got[0, k].append(pair["plain_got"])
                    cost[i, k].append(pair["cost"])
                    diff[i, k].append(pair["diff"])
                    soft[i, k].append(pair["soft"])
                    got[i, k].append(pair["got"])
        self.data["packet"]["parts"] = parts
        for k in KINDS:
            key = k.replace(" ", "_")
            self.row(f"packet_none_{key}", f"12. {k}: no firewall (plain bridge), CPU per packet",
                     statistics.median(cost[0, k]),
                     note=f"{_spread(cost[0, k], 'runs')}; " + _delivery(got[0, k]))
            fwsg_rows = {}
            for i, pl in enumerate(labs[1:], start=1):
                self.data["packet"]["labs"].setdefault(f"{pl.label} {pl.members}", {
                    "label": pl.label, "members": pl.members, **pl.info})[k] = {
                    "cost_us": statistics.median(diff[i, k]), "samples_us": diff[i, k],
                    "total_us": cost[i, k], "ksoftirqd_us": statistics.median(soft[i, k]),
                    "delivered": got[i, k]}
                if pl.label.startswith("fwsg"):
                    fwsg_rows.setdefault(pl.label, []).append(i)
            for label, idx in fwsg_rows.items():
                for j, i in enumerate(idx):
                    pl = labs[i]
                    peer = self._peer(labs, diff, k, pl.members)
                    last = j == len(idx) - 1 and j > 0
                    note = ("" if pl.sanity_ok() else "SANITY FAILED; ") + _spread(diff[i, k])
                    met = None
                    if last:
                        met, flat_note = _flatness(diff[idx[0], k], diff[i, k],
                                                   labs[idx[0]].members)
                        note += "; " + flat_note
                        self.data["packet"]["labs"][f"{pl.label} {pl.members}"][k]["flat"] = met
                    self.row(f"packet_{label.split()[-1]}_{pl.members}_{key}",
                             f"12. {k}: {label}, {pl.members} members, over no firewall",
                             statistics.median(diff[i, k]), peer,
                             "Neutron driver, same members" if peer else "",
                             "no rise past noise" if last else "", met,
                             note + "; " + _delivery(got[i, k]))
            for i, pl in enumerate(labs):
                if pl.label == "Neutron":
                    self.row(f"packet_neutron_{pl.members}_{key}",
                             f"12. {k}: Neutron iptables+ipset, {pl.members} members, "
                             "over no firewall", statistics.median(diff[i, k]),
                             note=("" if pl.sanity_ok() else "SANITY FAILED; ")
                             + _spread(diff[i, k]) + "; " + _delivery(got[i, k]))

    @staticmethod
    def _peer(labs, diff, k, members):
        for i, pl in enumerate(labs):
            if pl.label == "Neutron" and pl.members == members:
                return statistics.median(diff[i, k])
        return None


def _paired_run(plain, lab, kind, parts, pids):
    """One run of ``kind`` through ``lab`` and through the plain bridge, slice by slice in
    turn (the first of each pair alternating), so both meet the same load: the medians over
    the slices of the firewall's cost, the plain bridge's, their difference and the ksoftirqd
    share, and the fractions delivered."""
    n = lab.bursts[kind].count
    step = max(1, n // parts)
    before = (plain.begin(kind), lab.begin(kind))
    rows = []
    for j in range(parts):
        turn = (plain, lab) if j % 2 == 0 else (lab, plain)
        out = {id(x): x.send_slice(kind, step, j * step, pids) for x in turn}
        (b, _), (c, s) = out[id(plain)], out[id(lab)]
        rows.append((c - b, c, b, s))
    med = [statistics.median(col) for col in zip(*rows)]
    return {"diff": med[0], "cost": med[1], "plain": med[2], "soft": med[3],
            "plain_got": plain.end(kind, before[0], step * parts),
            "got": lab.end(kind, before[1], step * parts)}


def _quartiles(xs):
    """(first quartile, median, third quartile) of ``xs`` (at least one value)."""
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def _spread(xs, what="rounds"):
    q1, _, q3 = _quartiles(xs)
    return f"IQR {q1:.2f}..{q3:.2f} over {len(xs)} {what}"


def _flatness(first, last, first_members):
    """(flat, note) from the per-round differences last - first (both measured in every
    round): within noise when their interquartile range holds 0; flat unless the larger size
    costs more beyond noise (the whole range above 0)."""
    d = [b - a for a, b in zip(first, last)]
    q1, med, q3 = _quartiles(d)
    verdict = "within noise" if q1 <= 0 <= q3 else \
        "above it beyond noise" if q1 > 0 else "below it beyond noise (no growth)"
    return q1 <= 0, (f"minus {first_members} members: {med:+.2f} us (IQR {q1:+.2f}..{q3:+.2f}"
                     f" over {len(d)} rounds): {verdict}")


def _delivery(fractions):
    lo = min(fractions)
    return "all delivered" if lo >= 1 else f"delivered >= {lo:.1%}"
