"""Diff and transaction semantics against the in-memory fake kernel."""

import copy
import errno

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fwsg.errors import KernelError
from fwsg.firewall import Firewall
from fwsg.backends.nft.layout import Names
from fwsg.ops import AddElements, DeleteElements
from fwsg.plan import Plan
from fwsg.lab.scenario import generate


def fresh():
    return Firewall(backend="fake")


def test_second_apply_changes_nothing(demo_model):
    fw = fresh()
    assert fw.apply(demo_model).changed
    handles = fw.backend.read().meta["handles"]
    r = fw.apply(demo_model)
    assert not r.changed and fw.backend.commits == 1
    # a new Firewall on the same kernel reads back and finds nothing to do either
    fw2 = fresh()
    fw2.backend = fw.backend
    assert not fw2.plan(demo_model)
    assert fw.backend.read().meta["handles"] == handles


def test_member_change_touches_only_elements(demo_model):
    fw = fresh()
    fw.apply(demo_model)
    doc = copy.deepcopy(demo_model)
    doc["sg_member_ips"]["sg-web"]["IPv4"].append("192.0.2.44")
    plan = fw.plan(doc)
    assert plan.lines() == [f"add element inet fwsg {_set(fw, 'sg-web', 4)} {{ 192.0.2.44 }}"]
    fw.apply(doc)
    doc["sg_member_ips"]["sg-web"]["IPv4"].remove("192.0.2.11")
    plan = fw.plan(doc)
    assert plan.lines() == [f"delete element inet fwsg {_set(fw, 'sg-web', 4)} {{ 192.0.2.11 }}"]


def _set(fw, sg, fam):
    from fwsg.backends.nft.layout import Names

    return Names.member_set(sg, fam)


def test_rule_removal_changes_only_that_chain(demo_model):
    fw = fresh()
    fw.apply(demo_model)
    doc = copy.deepcopy(demo_model)
    doc["security_groups"]["sg-admin"].pop(0)   # tcp 22 from a prefix: a rule of its own
    lines = fresh_reading(fw).plan(doc).lines()
    flushed = [c for c in lines if c.startswith("flush chain")]
    assert len(flushed) == 1 and flushed[0].endswith("-i")
    assert all(c.startswith(("flush chain", "add rule")) for c in lines)
    fw.apply(doc)         # this Firewall's mirror knows them: rule by rule
    lines = fw.backend.last_plan.lines()
    assert [c.split(" rule ")[0] for c in lines] == ["delete", "replace"]
    assert len({c.split()[4] for c in lines}) == 1 and lines[0].split()[4].endswith("-i")
    assert not fw.plan(doc)


def test_a_single_port_rule_is_an_element_of_its_groups_port_set(demo_model):
    """Adding or removing a rule that matches one port of one protocol (no remote side) is
    one map element: no chain changes, whether or not the rule handles are known."""
    fw = fresh()
    fw.apply(demo_model)
    group = Names.group("sg-web")
    doc = copy.deepcopy(demo_model)
    doc["security_groups"]["sg-web"].append(
        {"direction": "ingress", "ethertype": "IPv6", "protocol": "udp",
         "port_range_min": 8443, "port_range_max": 8443})
    doc["security_groups"]["sg-web"].pop(0)   # tcp 80 from 0.0.0.0/0
    for plan in (fresh_reading(fw).plan(doc), fw.plan(doc)):
        assert plan.lines() == [f"add element inet fwsg {group}-pi {{ ipv6 . udp . 8443 }}",
                                f"delete element inet fwsg {group}-pi {{ ipv4 . tcp . 80 }}"]
    fw.apply(doc)
    assert fw.backend.elements[("inet", f"{group}-pi")] == {"ipv6 . tcp . 80",
                                                          "ipv6 . udp . 8443"}
    assert not fw.plan(doc)


def fresh_reading(fw):
    """A Firewall that has only read ``fw``'s kernel back (no rule handles known)."""
    other = fresh()
    other.backend = fw.backend
    return other


def test_port_removal_deletes_its_objects_in_a_valid_order(demo_model):
    fw = fresh()
    fw.apply(demo_model)
    doc = copy.deepcopy(demo_model)
    del doc["devices"]["port-client"]
    fw.apply(doc)  # the fake refuses deleting chains still referenced
    chains = {k[1] for k in fw.backend.chains}
    ports = fw.names()["ports"]  # port-client gone from meta
    assert "port-client" not in ports
    profiles = {v["profile"] for v in ports.values() if v.get("filtered")}
    assert {c[:-2] for c in chains if c.startswith("p") and c != "prerouting"} == profiles


def test_failed_transaction_leaves_state_unchanged(demo_model):
    fw = fresh()
    fw.apply(demo_model)
    before = fw.backend.dump()
    egress, ingress4 = (fw.backend.sets[("inet", n)] for n in ("egress", "ingress4"))
    bad = Plan([AddElements(egress, (("0x00090000", "jump p-nonexistent"),)),
                DeleteElements(ingress4, ("203.0.113.250",))])
    with pytest.raises(KernelError) as e:
        fw.backend.commit(bad)
    assert e.value.errno == errno.ENOENT
    assert fw.backend.dump() == before


def test_kernel_refusal_resyncs_from_kernel(demo_model):
    fw = fresh()
    fw.apply(demo_model)
    # someone deletes a chain's rules behind fwsg's back; a refused apply must not leave
    # fwsg believing its own in-memory state
    fw.backend.chains[("inet", "egress-pre")][1].clear()
    fw._current = None
    assert "flush chain inet fwsg egress-pre" in str(fw.plan(demo_model))


models = st.builds(generate, ports=st.integers(0, 6), groups=st.integers(1, 4),
                   rules=st.integers(0, 4), members=st.integers(0, 30), seed=st.integers(0, 10**6))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=models, b=models)
def test_incremental_equals_fresh(a, b):
    """Applying B after A leaves exactly the state that applying B to an empty kernel leaves
    (port numbers aside), and then nothing is left to do."""
    inc = fresh()
    inc.apply(a)
    inc.apply(b)
    assert not inc.plan(b)
    full = fresh()
    full.apply(b)
    ri, rf = inc.backend.read(), full.backend.read()
    assert ri.sets == rf.sets
    assert {k: c.digest for k, c in ri.chains.items() if not k[1].endswith("-t")} == \
        {k: c.digest for k, c in rf.chains.items() if not k[1].endswith("-t")}
    for k in ri.sets:
        if k[1] in ("egress", "ingress", "port-src", "port-dst"):
            assert len(ri.elements[k]) == len(rf.elements[k])
        else:
            assert ri.elements[k] == rf.elements[k], k


def test_a_redeclared_map_is_replaced_in_place_when_its_users_change_too():
    """A map re-declared while every chain using it changes (a layout change): no table
    rebuild; the plan flushes the users before it drops the map, re-declares it, then refills
    them. A user that keeps its rules (someone else re-declared the map): the table is rebuilt."""
    from fwsg.backends.nft.drift import declarations_differ
    from fwsg.ops import CreateSet, DeleteSet, FillChain, FlushChain
    from fwsg.plan import diff
    from fwsg.ruleset import ChainDef, Ruleset, SetDef

    def ruleset(value_type, rule):
        rs = Ruleset(tables=frozenset({"inet"}))
        rs.add_set(SetDef("inet", "zm", "mark", value_type))
        rs.add_chain(ChainDef("inet", "pre", (rule,), "filter hook prerouting priority -300"))
        rs.add_chain(ChainDef("inet", "other", ("meta mark 0x1 drop",)))
        return rs

    old = ruleset("verdict", "meta mark vmap @zm")
    new = ruleset("ct zone", "ct zone set meta mark map @zm")
    assert declarations_differ(new, old) == {}
    ops = list(diff(new, old).ops)
    kinds = [type(op) for op in ops]
    assert kinds == [FlushChain, DeleteSet, CreateSet, FillChain]
    assert ops[0].name == "pre" and ops[3].chain.name == "pre"
    kept = ruleset("ct zone", "meta mark vmap @zm")   # the user keeps its rules
    assert declarations_differ(kept, old) == {"inet": "set zm was re-declared"}
