"""A rule change of a group the kernel already holds, against the fake kernel: once the
kernel has reported the chain's rule handles, the group's chain is edited rule by rule (the
new rule added, the rule carrying the digest replaced; nothing flushed) and ends equal to a
fresh apply; a change after another writer touched the ruleset is refused by generation and
redone rewriting the chain whole (a rule is never deleted by a handle the kernel may have
changed since)."""

import copy

from fwsg.firewall import Firewall
from fwsg.ops import AddRule, DeleteRule, FillChain, FlushChain, ReplaceRule
from fwsg.model import INGRESS, parse_rules

from tests.unit.test_incremental import BASE, same_as_fresh

EXTRA = {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
         "port_range_min": 8443, "port_range_max": 8443, "remote_ip_prefix": "192.0.2.0/24"}


def kinds(fw):
    return [type(op) for op in fw.backend.last_plan.ops]


def chain_key(fw, sg):
    return ("inet", fw._desired.names.group_chain(sg, INGRESS))


def with_extra_rule():
    """A Firewall on the fake kernel that applied BASE and then added EXTRA to the group
    every port uses; the group's rules without EXTRA."""
    fw = Firewall(backend="fake")
    fw.apply(BASE)
    rules = BASE["security_groups"]["default"]
    fw.update_security_group_rules("default", rules + [EXTRA])
    return fw, rules


def test_second_rule_change_edits_the_chain_rule_by_rule():
    fw, rules = with_extra_rule()
    assert kinds(fw) == [AddRule, ReplaceRule]    # the fake reported every handle
    fw.update_security_group_rules("default", rules)
    assert kinds(fw) == [DeleteRule, ReplaceRule]  # the rule gone, the digest moved back
    same_as_fresh(fw)
    fw.update_security_group_rules("default", rules + [EXTRA])
    assert kinds(fw) == [AddRule, ReplaceRule]
    same_as_fresh(fw)
    key = chain_key(fw, "default")
    assert fw.current().meta["rule_handles"][key] == [
        h for h, _ in fw.backend.chains[key][1]]
    first = dict(EXTRA, port_range_min=22, port_range_max=22)
    fw.update_security_group_rules("default", [first] + rules + [EXTRA])   # before the others
    assert kinds(fw) == [AddRule, ReplaceRule] and fw.backend.last_plan.ops[0].before
    same_as_fresh(fw)


def test_another_writer_makes_fwsg_rewrite_the_chain_and_keeps_its_rule_out():
    fw, rules = with_extra_rule()
    key = chain_key(fw, "default")
    foreign = "meta l4proto 6 accept"
    fw.backend.edit_behind_fwsgs_back(*key, foreign, index=0)
    plans, commit = [], fw.backend.commit
    fw.backend.commit = lambda plan: plans.append(plan) or commit(plan)
    fw.update_security_group_rules("default", rules)
    assert [p.guard is not None for p in plans] == [True, False]  # refused by generation,
    assert kinds(fw) == [FlushChain, FillChain]                     # then rewritten whole
    assert foreign not in fw.backend.rules(*key)
    same_as_fresh(fw)
    fw.update_security_group_rules("default", rules + [EXTRA])
    assert kinds(fw) == [AddRule, ReplaceRule]    # the rewrite reported the handles again
    same_as_fresh(fw)


def test_a_refused_rule_edit_changes_nothing_and_is_taken_back():
    fw, rules = with_extra_rule()
    before = fw.backend.dump()
    fw.backend.fail_next(2)
    try:
        fw.update_security_group_rules("default", rules)
    except Exception:  # noqa: BLE001 - the refusal is the point
        pass
    assert fw.backend.dump() == before
    assert fw._desired.groups["default"] == fw.model.groups["default"]
    fw.update_security_group_rules("default", copy.deepcopy(rules))
    same_as_fresh(fw)


def test_a_group_whose_rules_go_back_and_forth_keeps_its_chains_right():
    """The chains kept for a group's last rule tuples follow the prefix state of the groups
    its rules reference: a first prefix member of the remote group gives the rule its prefix
    twin even when the rules come back to a tuple seen before."""
    from fwsg.backends.nft.desired import Desired
    from fwsg.model import Model, parse_rules

    d = Desired().load(Model.from_wire(BASE))
    sg = "default"
    wire = BASE["security_groups"][sg]
    remote = {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
              "port_range_min": 5432, "port_range_max": 5432, "remote_group_id": "sg-1"}
    plain, with_remote = parse_rules(sg, wire), parse_rules(sg, wire + [remote])
    key = ("inet", d.names.group_chain(sg, INGRESS))
    pfx = d.names.member_set("sg-1", 4, True)
    for rules in (with_remote, plain, with_remote):
        d.set_group(sg, rules)
    assert not any(pfx in r for r in d.rs.chains[key].rules)
    d.add_members("sg-1", 4, ["198.51.100.0/28"])        # the first prefix member
    assert any(pfx in r for r in d.rs.chains[key].rules)
    for rules in (plain, with_remote):                    # tuples seen before
        d.set_group(sg, rules)
    assert any(pfx in r for r in d.rs.chains[key].rules)
    d.remove_members("sg-1", 4, ["198.51.100.0/28"])
    assert not any(pfx in r for r in d.rs.chains[key].rules)
    fresh = Desired().load(Model.from_wire(BASE))
    fresh.set_group(sg, with_remote)
    assert d.rs.chains[key] == fresh.rs.chains[key]



def test_a_rule_change_is_planned_as_the_whole_diff_plans_it():
    """A change that touched only chains takes a shorter path through the diff; its plan is
    the one the diff of everything gives (same operations, guard and summary), whether the
    chain is edited by handle or rewritten, a rule added or removed, or the rules emptied."""
    fw, rules = with_extra_rule()
    d = fw._desired
    for new in (rules, rules + [EXTRA], [EXTRA], []):
        before = d.groups["default"]
        d.set_group("default", parse_rules("default", new))
        for handles in (True, False):
            current = copy.deepcopy(fw.current())
            if not handles:
                current.meta.pop("rule_handles", None)
            short = fw.backend.diff(d, current, d.pending)
            whole = fw.backend.diff(d, current)
            assert short.ops and short.ops == whole.ops
            assert short.summary == whole.summary and short.guard == whole.guard
        d.set_group("default", before)
        d.clear_pending()
        fw.update_security_group_rules("default", new)
        same_as_fresh(fw)
