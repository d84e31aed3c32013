"""The lab itself, with no firewall loaded: every probe passes where it should and fails where
it must, and teardown leaves nothing behind."""

import os
import subprocess
import threading

import pytest

from fwsg.lab import Lab, LabError, LabUsageError, Unsupported, lab_namespaces, ra_body

NOWHERE4 = "203.0.113.250"
NOWHERE6 = "2001:db8:ffff::250"


def netns_list():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=5)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


# ------------------------------------------------------------------------------ topology


def test_names_and_nodes(lab):
    assert lab.host_ns == f"fwsg-{lab.name}-host"
    assert lab.ns("vm1") == f"fwsg-{lab.name}-vm1"
    assert set(lab.namespaces) <= netns_list()
    vm1 = lab.node("vm1")
    assert (vm1.name, vm1.tap, vm1.mac) == ("vm1", "tap-vm1", "fa:16:3e:00:00:11")
    assert vm1.ipv4 == ["192.0.2.11"] and vm1.ipv6 == ["2001:db8::11"]
    assert vm1.link_local == "fe80::f816:3eff:fe00:11"
    assert lab.node("out").tap == "up-out"
    assert lab.node("host").ipv4 == ["192.0.2.1"]


def test_topology_in_kernel(lab):
    links = lab.ip("host", "-o", "link", "show", "master", "br0")
    for tap in ("tap-vm1", "tap-vm2", "up-out"):
        assert tap in links
    eth0 = lab.ip("vm1", "addr", "show", "dev", "eth0")
    assert "fa:16:3e:00:00:11" in eth0 and "192.0.2.11/24" in eth0
    assert "fe80::f816:3eff:fe00:11/64" in eth0 and "tentative" not in eth0
    assert "default via 192.0.2.1" in lab.ip("vm1", "route")
    assert "default via 2001:db8::1" in lab.ip("vm1", "-6", "route")
    r = lab.exec("host", ["sysctl", "-n", "net.bridge.bridge-nf-call-iptables",
                          "net.bridge.bridge-nf-call-ip6tables"])
    assert r.stdout.split() == ["1", "1"]


def test_br_netfilter_off(lab_factory, add_std_nodes):
    lab = add_std_nodes(lab_factory(br_netfilter=False), names=("vm1",))
    with lab:
        r = lab.exec("host", ["sysctl", "-n", "net.bridge.bridge-nf-call-iptables"])
        assert r.stdout.strip() == "0"


def test_validation():
    with pytest.raises(LabUsageError):
        Lab("Bad_Name")
    lab = Lab("val")
    with pytest.raises(LabUsageError):
        lab.add_vm("vm1", tap="a-name-way-too-long")
    with pytest.raises(LabUsageError):
        lab.add_vm("host")
    with pytest.raises(LabUsageError):
        lab.add_vm("vm1", mac="01:00:5e:00:00:01")
    with pytest.raises(LabUsageError):
        lab.add_vm("vm1", ipv4=["2001:db8::1/64"])
    lab.add_vm("vm1")
    with pytest.raises(LabUsageError):
        lab.add_vm("vm2", tap="tap-vm1")


# ------------------------------------------------------------------------------ probes pass


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("src,dst", [("vm1", "vm2"), ("vm2", "vm1"), ("vm1", "out"),
                                     ("out", "vm2"), ("vm1", "host"), ("host", "vm2")])
def test_probes_pass(lab, family, src, dst):
    assert lab.tcp_connect(src, dst, port=80, family=family)
    assert lab.udp_exchange(src, dst, port=53, family=family)
    assert lab.udp_unreachable(src, dst, port=9, family=family)
    assert lab.ping(src, lab.node(dst).addr(family))
    assert lab.ping(src, dst, family=family)


def test_link_local(lab):
    assert lab.ping("vm1", lab.node("vm2").link_local + "%eth0")
    assert lab.ping("out", lab.node("vm1").link_local)  # scope defaults to the node's iface
    assert lab.tcp_connect("vm1", "vm2", port=80, dst_ip=lab.node("vm2").link_local)
    assert lab.udp_exchange("vm2", "vm1", port=53, dst_ip=lab.node("vm1").link_local)
    host_ll = lab.node("host").link_local
    assert host_ll in lab.ip("host", "-6", "addr", "show", "dev", "br0")
    assert lab.ping("vm1", host_ll) and lab.ping("host", lab.node("vm1").link_local)


def test_netns_context(lab):
    import socket
    with lab.netns("vm1"):
        assert socket.if_nametoindex("eth0") > 0
    with pytest.raises(OSError):
        socket.if_nametoindex("tap-vm1")  # back in our own namespace


def test_ping_tool_agrees(lab):
    assert lab.ping_tool("vm1", "192.0.2.12")
    assert lab.ping_tool("vm1", "2001:db8::99")
    assert not lab.ping_tool("vm1", NOWHERE4, timeout=1)


def test_udp_reaches_dhcp_style(lab):
    # DHCP client -> server: broadcast from port 68 to 67
    assert lab.udp_reaches("vm1", "out", port=67, sport=68, dst_ip="255.255.255.255",
                           broadcast=True)
    # DHCPv6 client -> All_DHCP_Relay_Agents_and_Servers, from the link-local address
    assert lab.udp_reaches("vm1", "out", port=547, sport=546, dst_ip="ff02::1:2", family=6,
                           src_ip=lab.node("vm1").link_local)
    # a client without an address: source 0.0.0.0 (raw frame), as a real DHCP discover
    with lab.sniff("out") as s:
        assert lab.udp_reaches("vm1", "out", port=67, sport=68, src_ip="0.0.0.0",
                               dst_ip="255.255.255.255", broadcast=True)
        assert s.seen(lambda f: f.src_ip == "0.0.0.0" and f.dport == 67 and f.sport == 68,
                      1.0)
    # server reply direction (unicast), as a spoofing VM would send it
    assert lab.udp_reaches("vm2", "vm1", port=68, sport=67)
    # nobody on that address: not seen
    assert not lab.udp_reaches("vm1", "out", port=67, dst_ip=NOWHERE4, timeout=0.3)


def test_spoofed_source_and_extra_address(lab):
    # without a firewall, a spoofed source from the same subnet still gets through both ways
    lab.add_address("vm1", "192.0.2.50/24")
    lab.add_address("vm1", "2001:db8::50/64")
    assert "192.0.2.50" in lab.node("vm1").ipv4
    assert lab.tcp_connect("vm1", "vm2", port=80, src_ip="192.0.2.50")
    assert lab.udp_exchange("vm1", "vm2", port=53, family=6, src_ip="2001:db8::50")
    assert lab.tcp_connect("vm2", "vm1", port=80, dst_ip="192.0.2.50")
    lab.del_address("vm1", "192.0.2.50/24")
    assert not lab.tcp_connect("vm2", "vm1", port=80, dst_ip="192.0.2.50", timeout=0.3)


def test_set_mac(lab):
    lab.set_mac("vm1", "fa:16:3e:00:00:77")
    assert "fa:16:3e:00:00:77" in lab.ip("vm1", "link", "show", "eth0")
    assert lab.node("vm1").link_local == "fe80::f816:3eff:fe00:77"
    assert lab.ping("vm2", "192.0.2.11")
    assert lab.ping("vm2", "fe80::f816:3eff:fe00:77%eth0")
    with lab.sniff("vm2") as s:
        assert lab.ping("vm1", "192.0.2.12")
        assert s.seen(lambda f: f.src_mac == "fa:16:3e:00:00:77" and f.icmp_type == 8, 1.0)


# ------------------------------------------------------------------------------ probes fail


@pytest.mark.parametrize("family", [4, 6])
def test_probes_fail_to_nowhere(lab, family):
    nowhere = NOWHERE4 if family == 4 else NOWHERE6
    for probe in (lab.tcp_connect, lab.udp_exchange):
        assert not probe("vm1", "vm2", port=80, family=family, dst_ip=nowhere, timeout=0.5)
    assert not lab.ping("vm1", nowhere, timeout=0.5)
    assert not lab.udp_unreachable("vm1", "vm2", family=family, dst_ip=nowhere, timeout=0.5)
    # and the same probes still pass to a real peer (a probe that always fails proves nothing)
    assert lab.tcp_connect("vm1", "vm2", port=80, family=family)
    assert lab.ping("vm1", "vm2", family=family)


@pytest.mark.parametrize("family", [4, 6])
def test_probes_fail_listener_on_other_node(lab, family):
    # listener in vm2, but the packets go to out's address: refused / unanswered
    wrong = lab.node("out").addr(family)
    assert not lab.tcp_connect("vm1", "vm2", port=80, family=family, dst_ip=wrong, timeout=0.5)
    assert not lab.udp_exchange("vm1", "vm2", port=53, family=family, dst_ip=wrong, timeout=0.5)
    assert not lab.udp_reaches("vm1", "vm2", port=53, family=family, dst_ip=wrong, timeout=0.3)


def test_unreachable_is_false_when_listener_exists(lab):
    from fwsg.lab import traffic
    import socket
    s = traffic.ns_socket(lab.ns("vm2"), socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("0.0.0.0", 5353))
        assert not lab.udp_unreachable("vm1", "vm2", port=5353, timeout=0.3)
    finally:
        s.close()
    assert lab.udp_unreachable("vm1", "vm2", port=5353)


def test_blocked_by_a_filter_in_a_node(lab):
    """The probes report a drop as False (a drop rule inside vm2's own namespace)."""
    lab.exec("vm2", ["nft", "-f", "-"], input=(
        "table inet labtest { chain in { type filter hook input priority 0; policy accept;"
        " tcp dport 81 drop; udp dport 54 drop; icmp type echo-request drop;"
        " icmpv6 type echo-request drop; }; }\n"))
    assert not lab.tcp_connect("vm1", "vm2", port=81, timeout=0.3)
    assert lab.tcp_connect("vm1", "vm2", port=80)
    assert not lab.udp_exchange("vm1", "vm2", port=54, family=6, timeout=0.3)
    assert not lab.ping("vm1", "vm2", timeout=0.3)
    assert not lab.ping("vm1", "vm2", family=6, timeout=0.3)


# ------------------------------------------------------------------------------ long-lived


@pytest.mark.parametrize("family", [4, 6])
def test_open_tcp_stays_alive(lab, family):
    conn = lab.open_tcp("vm1", "vm2", port=2222, family=family)
    try:
        for _ in range(5):
            assert conn.alive(timeout=1.0)
        # the listener is gone once accepted: the port can be probed again
        assert lab.tcp_connect("vm1", "vm2", port=2222, family=family)
        assert conn.alive()
    finally:
        conn.close()
    assert not conn.alive()


def test_open_tcp_fails_cleanly(lab):
    with pytest.raises(LabError):
        lab.open_tcp("vm1", "vm2", port=2222, dst_ip=NOWHERE4, timeout=0.3)


# ------------------------------------------------------------------------------ L2 / raw


def test_arp_probe_and_spoof(lab):
    assert lab.arp_probe("vm1", "192.0.2.12")
    assert lab.arp_probe("vm1", "192.0.2.1")
    assert not lab.arp_probe("vm1", NOWHERE4, timeout=0.3)
    # spoofed sender, seen as such by the others (no firewall)
    with lab.sniff("out") as s:
        assert lab.arp_probe("vm1", "192.0.2.12", sender_ip="192.0.2.77",
                             sender_mac="fa:16:3e:00:00:66")
        assert s.seen(lambda f: f.arp_op == 1 and f.arp_sender_ip == "192.0.2.77"
                      and f.src_mac == "fa:16:3e:00:00:66", 1.0)


def test_send_frame_and_sniff(lab):
    frame = (bytes.fromhex("ffffffffffff") + bytes.fromhex("fa163e000011") + b"\x88\xb5"
             + b"fwsg-lab-test".ljust(46, b"\0"))
    with lab.sniff("out") as s, lab.sniff("host", "tap-vm1") as t:
        lab.send_frame("vm1", frame)
        assert s.seen(lambda f: f.ethertype == 0x88B5 and b"fwsg-lab-test" in f.raw, 1.0)
        assert t.seen(lambda f: f.ethertype == 0x88B5, 1.0)
    assert s.frames(lambda f: f.ethertype == 0x88B5)


def test_router_advertisement_is_seen(lab):
    with lab.sniff("out") as s:
        lab.send_icmpv6("vm1", "ff02::1", icmp_type=134,
                        payload=ra_body(src_mac="fa:16:3e:00:00:11"))
        assert s.seen(lambda f: f.icmp_type == 134 and f.hop_limit == 255
                      and f.src_ip == "fe80::f816:3eff:fe00:11" and f.dst_ip == "ff02::1", 1.0)
    # accept_ra is off in the lab: the RA changed nothing in out's routes
    assert "2001:db8:ffff::" not in lab.ip("out", "-6", "route")


@pytest.mark.kernel_feature("sctp")
def test_sctp(lab):
    ok, why = lab.sctp_supported()
    if not ok:
        with pytest.raises(Unsupported):
            lab.sctp_connect("vm1", "vm2")
        pytest.skip(why)
    assert lab.sctp_connect("vm1", "vm2", port=5000)
    assert lab.sctp_connect("vm1", "vm2", port=5000, family=6)
    assert not lab.sctp_connect("vm1", "vm2", dst_ip=NOWHERE4, timeout=0.3)


# ------------------------------------------------------------------------------ matrix, speed


def test_matrix(lab):
    probes = []
    expect = []
    for fam in (4, 6):
        for src, dst in [("vm1", "vm2"), ("vm2", "out"), ("out", "vm1"), ("vm1", "host")]:
            probes += [("tcp_connect", src, dst, {"port": 80, "family": fam}),
                       ("udp_exchange", src, dst, {"port": 53, "family": fam}),
                       ("udp_unreachable", src, dst, {"family": fam}),
                       ("ping", src, dst, {"family": fam})]
            expect += [True] * 4
        probes.append(("tcp_connect", "vm1", "vm2",
                       {"port": 80, "family": fam, "dst_ip": NOWHERE4 if fam == 4 else NOWHERE6,
                        "timeout": 0.5}))
        expect.append(False)
    probes.append(lambda: lab.ping("vm1", NOWHERE4, timeout=0.5))
    expect.append(False)
    assert lab.matrix(probes) == expect


def test_matrix_runs_independent_probes_concurrently(lab):
    # four probes that can only finish when all four are running at the same time: a matrix
    # that ran them one after another would break the barrier (behaviour, not a stopwatch)
    barrier = threading.Barrier(4, timeout=10)

    def together():
        barrier.wait()
        return lab.ping("vm1", "vm2")

    assert lab.matrix([together] * 4, workers=4) == [True] * 4
    # probes listening on the same node, protocol and port are serialised, and still all pass
    same = [("tcp_connect", "vm1", "vm2", {"port": 81}), ("tcp_connect", "out", "vm2", {"port": 81})]
    assert lab.matrix(same) == [True, True]


# ------------------------------------------------------------------------------ teardown


def test_teardown_removes_everything(lab_factory, add_std_nodes):
    lab = add_std_nodes(lab_factory())
    with lab:
        names = set(lab.namespaces)
        assert names <= netns_list()
        conn = lab.open_tcp("vm1", "vm2")
        lab.sniff("out").start()
        assert conn.alive()
    assert not names & netns_list()
    assert lab_namespaces(lab.name) == []
    assert not os.path.exists(f"/run/fwsg-lab/{lab.name}.json")


def test_teardown_after_exception(lab_factory, add_std_nodes):
    lab = add_std_nodes(lab_factory())
    with pytest.raises(RuntimeError, match="boom"):
        with lab:
            names = set(lab.namespaces)
            raise RuntimeError("boom")
    assert not names & netns_list()


def test_teardown_after_keyboard_interrupt(lab_factory, add_std_nodes):
    lab = add_std_nodes(lab_factory())
    with pytest.raises(KeyboardInterrupt):
        with lab:
            names = set(lab.namespaces)
            raise KeyboardInterrupt
    assert not names & netns_list()


def test_failed_up_cleans_up(lab_factory, add_std_nodes):
    lab = add_std_nodes(lab_factory())
    lab.add_vm("vm3", ipv4=["192.0.2.11/24"])  # fine for the kernel...
    lab._nodes["vm3"].tap = "up-out"  # ...but a duplicate tap makes the host batch fail
    with pytest.raises(LabError):
        lab.up()
    assert not set(lab.namespaces) & netns_list()


def test_stale_lab_is_replaced(lab_factory, add_std_nodes, tmp_path):
    lab = add_std_nodes(lab_factory(), names=("vm1",))
    # a crashed run: namespaces left behind (SIGKILL'd process)
    name = lab.name
    code = (f"import os; from fwsg.lab import Lab; lab=Lab({name!r}); "
            f"lab.add_vm('vm1'); lab.add_vm('gone'); lab.up(); os._exit(0)")
    subprocess.run([os.sys.executable, "-c", code], check=True, timeout=30)
    assert f"fwsg-{name}-gone" in netns_list()
    with lab:
        assert f"fwsg-{name}-gone" not in netns_list()  # removed, though not declared now
        assert lab.ping("vm1", "host")
    assert not {f"fwsg-{name}-host", f"fwsg-{name}-vm1"} & netns_list()


def test_dead_labs_are_swept(lab_factory, add_std_nodes):
    other = lab_factory()  # a different name: swept because its process died
    code = (f"import os; from fwsg.lab import Lab; lab=Lab({other.name!r}); "
            f"lab.add_vm('vm1'); lab.up(); os._exit(0)")
    subprocess.run([os.sys.executable, "-c", code], check=True, timeout=30)
    assert f"fwsg-{other.name}-vm1" in netns_list()
    with add_std_nodes(lab_factory(), names=("vm1",)):
        assert f"fwsg-{other.name}-vm1" not in netns_list()
        assert f"fwsg-{other.name}-host" not in netns_list()


def test_same_name_in_use_is_refused(lab_factory, add_std_nodes):
    a = add_std_nodes(lab_factory(), names=("vm1",))
    b = add_std_nodes(lab_factory(name=a.name), names=("vm1",))
    with a:
        with pytest.raises(LabError, match="another process"):
            b.up()
        assert a.ping("vm1", "host")  # b's failure left a alone
    assert not set(a.namespaces) & netns_list()


def test_detach_keeps_the_lab(lab_factory, add_std_nodes):
    from fwsg.lab import cleanup_stale, sweep_dead_labs
    lab = add_std_nodes(lab_factory(), names=("vm1",))
    lab.up()
    try:
        lab.detach()
        assert set(lab.namespaces) <= netns_list()
        sweep_dead_labs()
        assert set(lab.namespaces) <= netns_list()  # kept on purpose: not swept
        r = subprocess.run(["ip", "netns", "exec", lab.ns("vm1"), "ping", "-c1", "-W1",
                            "192.0.2.1"], capture_output=True, timeout=5)
        assert r.returncode == 0
    finally:
        cleanup_stale(lab.name)
    assert not set(lab.namespaces) & netns_list()


def test_two_labs_coexist(lab_factory, add_std_nodes):
    a = add_std_nodes(lab_factory())
    b = add_std_nodes(lab_factory())
    with a, b:
        assert not set(a.namespaces) & set(b.namespaces)
        assert a.tcp_connect("vm1", "vm2") and b.tcp_connect("vm1", "vm2")
        # same addresses, separate bridges: a's vm1 is not b's
        with b.sniff("vm2") as s:
            assert a.ping("vm1", "192.0.2.12")
            assert not s.seen(lambda f: f.icmp_type == 8, 0.2)
    assert not (set(a.namespaces) | set(b.namespaces)) & netns_list()


def test_probes_need_up():
    lab = Lab("notup")
    lab.add_vm("vm1")
    with pytest.raises(LabError):
        lab.ping("vm1", "192.0.2.1")
