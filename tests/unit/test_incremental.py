"""The incremental API (Neutron FirewallDriver names) against the fake kernel: any sequence of
calls leaves exactly the state a fresh apply of the resulting model leaves; each call outside a
defer block is one transaction holding only its change; a refused transaction changes nothing."""

import copy
import errno

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fwsg.backends.nft.layout import Names
from fwsg.errors import KernelError, ValidationError
from fwsg.firewall import Firewall
from fwsg.lab.scenario import generate


def fresh():
    return Firewall(backend="fake")


def kernel_view(fw):
    rs = fw.backend.read()
    chains = {k: c.digest for k, c in rs.chains.items() if not k[1].endswith("-t")}
    ingress = rs.elements[("inet", "ingress")]
    # port numbers depend on the order ports came in: address dispatch compares by the
    # verdict its receiver number leads to
    # the mark sets compare by the devices their marks stand for
    by_mark = {m: ("e", d) for d, m in rs.elements[("bridge", "port-src")].items()}
    by_mark.update({m: ("i", d) for d, m in rs.elements[("bridge", "port-dst")].items()})
    elems = {k: (len(v) if k[1] in ("egress", "ingress", "port-src", "port-dst") else
                 {by_mark[m] for m in v} if k[1] in ("stateless", "filtered") else
                 {a: ingress[n] for a, n in v.items()} if k[1].startswith("ingress") else v)
             for k, v in rs.elements.items()}
    return rs.sets, chains, elems


def same_as_fresh(fw):
    model = fw.model
    other = fresh()
    other.apply(model)
    assert kernel_view(fw) == kernel_view(other)
    assert not fw.plan(model)


BASE = generate(ports=4, groups=3, rules=4, members=20, seed=7)


def test_member_delta_is_one_element_transaction():
    fw = fresh()
    fw.apply(BASE)
    n = fw.backend.commits
    r = fw.add_security_group_members("sg-1", ["203.0.113.77"])
    assert fw.backend.commits == n + 1
    key = Names.member_set("sg-1", 4)
    if ("inet", key) in fw.backend.sets:
        assert r.summary["elements_added"] == 1 and r.batch_bytes < 80
    r = fw.add_security_group_members("sg-1", ["203.0.113.77"])   # already there
    assert not r.changed and fw.backend.commits == n + 1
    fw.remove_security_group_members("sg-1", ["203.0.113.77"])
    same_as_fresh(fw)


def test_full_member_list_form_commits_only_the_difference():
    fw = fresh()
    fw.apply(BASE)
    n = fw.backend.commits
    members = copy.deepcopy(BASE["sg_member_ips"]["default"])
    gone = members["IPv4"][0]
    members["IPv4"] = members["IPv4"][1:] + ["203.0.113.8"]
    r = fw.update_security_group_members("default", members)
    # one transaction holding exactly the one address added and the one removed
    assert fw.backend.commits == n + 1
    assert (r.summary["elements_added"], r.summary["elements_removed"]) == (1, 1)
    kernel = fw.backend.read().elements[("inet", Names.member_set("default", 4))]
    assert "203.0.113.8" in kernel and gone not in kernel
    assert set(fw.model.members["default"][4]) == set(members["IPv4"])
    # the same list again changes nothing and makes no kernel call
    assert not fw.update_security_group_members("default", members).changed
    assert fw.backend.commits == n + 1
    same_as_fresh(fw)


def test_defer_apply_coalesces_into_one_transaction():
    fw = fresh()
    fw.apply(BASE)
    n = fw.backend.commits
    with fw.defer_apply():
        fw.add_security_group_members("default", ["203.0.113.9"])
        fw.update_security_group_rules("sg-2", [{"direction": "ingress", "ethertype": "IPv4",
                                                 "protocol": "tcp", "port_range_min": 22}])
        fw.remove_port_filter("port-1")
        assert fw.backend.commits == n
    assert fw.backend.commits == n + 1
    same_as_fresh(fw)


def test_exception_in_defer_block_takes_changes_back():
    fw = fresh()
    fw.apply(BASE)
    before = kernel_view(fw)
    with pytest.raises(RuntimeError):
        with fw.defer_apply():
            fw.remove_port_filter("port-0")
            raise RuntimeError("agent crashed mid-update")
    assert kernel_view(fw) == before
    assert "port-0" in fw.model.ports
    assert not fw.plan(fw.model)


def test_refused_transaction_leaves_memory_equal_to_kernel():
    fw = fresh()
    fw.apply(BASE)
    before = kernel_view(fw)
    fw.backend.fail_next(1, errno.ENOBUFS)
    with pytest.raises(KernelError) as e:
        fw.update_security_group_rules("default", [])
    assert e.value.errno == errno.ENOBUFS
    assert kernel_view(fw) == before
    assert fw.model.groups["default"] != ()    # the refused change is not in memory
    assert not fw.plan(generate(ports=4, groups=3, rules=4, members=20, seed=7))
    fw.update_security_group_rules("default", [])  # and it can be done afterwards
    assert fw.model.groups["default"] == ()
    same_as_fresh(fw)


CALLS = {
    "add members": lambda fw: fw.add_security_group_members("sg-1", ["203.0.113.61"]),
    "remove members": lambda fw: fw.remove_security_group_members(
        "default", BASE["sg_member_ips"]["default"]["IPv4"][:2]),
    "full member list": lambda fw: fw.update_security_group_members(
        "default", {"IPv4": ["203.0.113.62"], "IPv6": []}),
    "rules": lambda fw: fw.update_security_group_rules(
        "sg-2", [{"direction": "ingress", "ethertype": "IPv4", "protocol": "udp",
                  "port_range_min": 53}]),
    "new port": lambda fw: fw.prepare_port_filter(
        {"id": "p-new", "device": "tap-new", "mac_address": "fa:16:3e:00:09:01",
         "fixed_ips": ["203.0.113.63"], "security_groups": ["sg-1"]}),
    "port removed": lambda fw: fw.remove_port_filter("port-1"),
    "whole model": lambda fw: fw.apply(generate(ports=3, groups=2, rules=2, members=9, seed=3)),
}


@pytest.mark.parametrize("call", CALLS, ids=list(CALLS))
def test_every_call_refused_by_the_kernel_changes_nothing_and_can_be_retried(call):
    fw = fresh()
    fw.apply(BASE)
    before_kernel, before_model = kernel_view(fw), fw.model.to_wire()
    fw.backend.fail_next(1, errno.EPERM)
    with pytest.raises(KernelError):
        CALLS[call](fw)
    assert kernel_view(fw) == before_kernel
    assert fw.model.to_wire() == before_model
    assert CALLS[call](fw).changed                # the retry goes through whole
    same_as_fresh(fw)


def test_bad_input_to_incremental_calls_names_the_field():
    fw = fresh()
    fw.apply(BASE)
    with pytest.raises(ValidationError, match=r"^sg_member_ips.default\[0\]: '10.0.0.300'"):
        fw.add_security_group_members("default", ["10.0.0.300"])
    with pytest.raises(ValidationError, match=r"port_range_min"):
        fw.update_security_group_rules("default", [{"direction": "ingress", "ethertype": "IPv4",
                                                    "protocol": "tcp", "port_range_min": 9,
                                                    "port_range_max": 1}])
    with pytest.raises(ValidationError, match="is also the device"):
        fw.prepare_port_filter({"id": "new", "device": "tap0", "mac_address": "fa:16:3e:00:09:09"})
    same_as_fresh(fw)


def test_reconcile_repairs_drift():
    fw = fresh()
    fw.apply(BASE)
    be = fw.backend
    key = next(k for k in be.sets if k[1].endswith("-m4") and be.elements[k])
    victim = next(iter(be.elements[key]))
    be.elements[key].discard(victim)                      # element deleted by someone
    be.chains[("inet", "egress-pre")][1].clear()          # chain flushed by someone
    r = fw.reconcile()
    text = "\n".join(r.repaired)
    assert "1 element(s) restored" in text and "egress-pre restored" in text
    assert victim in be.elements[key]
    assert not fw.reconcile().changed
    del be.chains[("inet", "egress-pre")]                 # whole table deleted
    be.tables.discard("inet")
    for k in [k for k in be.sets if k[0] == "inet"]:
        del be.sets[k], be.elements[k]
    for k in [k for k in be.chains if k[0] == "inet"]:
        del be.chains[k]
    r = fw.reconcile()
    assert any("table inet fwsg re-created" in x for x in r.repaired)
    same_as_fresh(fw)


ips = st.integers(0, 60).map(lambda i: f"203.0.113.{i}")
groups = st.sampled_from(["default", "sg-1", "sg-2", "sg-9"])
rules = st.lists(st.fixed_dictionaries({
    "direction": st.sampled_from(["ingress", "egress"]),
    "ethertype": st.just("IPv4"),
    "protocol": st.sampled_from(["tcp", "udp", None]),
    "remote_group_id": st.sampled_from(["default", "sg-1", "sg-2", None]),
}).map(lambda r: {k: v for k, v in r.items() if v is not None}), max_size=3)
ops = st.one_of(
    st.tuples(st.just("add"), groups, st.lists(ips, max_size=4)),
    st.tuples(st.just("remove"), groups, st.lists(ips, max_size=4)),
    st.tuples(st.just("full"), groups, st.lists(ips, max_size=6)),
    st.tuples(st.just("rules"), groups, rules),
    st.tuples(st.just("port"), st.integers(0, 6), st.lists(groups, min_size=1, max_size=2, unique=True)),
    st.tuples(st.just("unport"), st.integers(0, 6), st.just(None)),
    st.tuples(st.just("prefix"), groups, st.sampled_from(["198.51.100.0/24", "198.51.100.128/25"])),
)


@settings(max_examples=int(__import__("os").environ.get("FWSG_HYPOTHESIS_EXAMPLES", 60)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=12), st.booleans())
def test_any_call_sequence_equals_fresh_apply(seq, deferred):
    fw = fresh()
    fw.apply(BASE)
    for g in ("sg-9",):
        fw.update_security_group_rules(g, [])

    def run():
        for op, a, b in seq:
            if op == "add":
                fw.add_security_group_members(a, b)
            elif op == "remove":
                fw.remove_security_group_members(a, b)
            elif op == "full":
                fw.update_security_group_members(a, {"IPv4": b})
            elif op == "rules":
                fw.update_security_group_rules(a, b)
            elif op == "port":
                fw.update_port_filter({"id": f"port-{a}", "device": f"tap{a}",
                                       "mac_address": f"fa:16:3e:00:00:{a:02x}",
                                       "fixed_ips": [f"192.0.2.{a + 1}"], "security_groups": b,
                                       "allowed_address_pairs": [{"ip_address": "198.51.100.0/28"}]
                                       if a % 2 else []})
            elif op == "unport":
                fw.remove_port_filter(f"port-{a}")
            elif op == "prefix":
                fw.add_security_group_members(a, [b])
    if deferred:
        with fw.defer_apply():
            run()
    else:
        run()
    same_as_fresh(fw)


def test_two_ports_swapping_taps_in_one_apply():
    """Each tap keeps exactly one owner: no tap is left without filtering or anti-spoofing."""
    base = generate(ports=3, groups=2, rules=2, members=5, seed=3)
    fw = fresh()
    fw.apply(base)
    swapped = copy.deepcopy(base)
    d = swapped["devices"]
    d["port-0"]["device"], d["port-1"]["device"] = d["port-1"]["device"], d["port-0"]["device"]
    fw.apply(swapped)
    same_as_fresh(fw)
    rs = fw.backend.read()
    for tap in ("tap0", "tap1", "tap2"):
        assert f'"{tap}"' in rs.elements[("bridge", "secured")]
        assert f'"{tap}"' in rs.elements[("bridge", "port-src")]
    numbers = list(rs.elements[("bridge", "port-src")].values())
    assert len(numbers) == len(set(numbers)) == 3


def test_incremental_call_before_any_model_is_refused():
    fw = fresh()
    with pytest.raises(Exception, match="no model applied yet"):
        fw.add_security_group_members("sg-1", ["192.0.2.1"])
    assert fw.backend.commits == 0


def test_port_update_cannot_mix_stateful_and_stateless():
    doc = copy.deepcopy(BASE)
    doc["security_groups"]["sl"] = [{"direction": "ingress", "ethertype": "IPv4", "stateful": False}]
    fw = fresh()
    fw.apply(doc)
    port = dict(doc["devices"]["port-0"], id="port-0", security_groups=["default", "sl"])
    with pytest.raises(ValidationError, match="mixes stateful and stateless"):
        fw.update_port_filter(port)
    same_as_fresh(fw)


def test_member_update_validates_every_family_before_changing_any():
    fw = fresh()
    fw.apply(BASE)
    before = kernel_view(fw)
    with pytest.raises(ValidationError, match=r"IPv6\[0\]: 'bogus'"):
        fw.update_security_group_members("default", {"IPv4": ["203.0.113.9"], "IPv6": ["bogus"]})
    fw.add_security_group_members("sg-1", [])  # an unrelated call commits nothing left over
    assert kernel_view(fw) == before


def test_apply_inside_defer_waits_for_the_block():
    fw = fresh()
    fw.apply(BASE)
    smaller = copy.deepcopy(BASE)
    del smaller["devices"]["port-2"]
    n = fw.backend.commits
    with pytest.raises(RuntimeError):
        with fw.defer_apply():
            assert fw.apply(smaller) is None
            assert fw.backend.commits == n
            raise RuntimeError("abort")
    assert fw.backend.commits == n
    assert "port-2" in fw.model.ports
