"""A host still holding the layout before the slim profiles (each profile chain jumping to
``fixed-{e,i}-{sf,sl}`` first and ending in ``drop``; base chains dispatching with one
``vmap`` rule) is upgraded by one apply of a new process, in one transaction, with live
flows kept and the verdicts unchanged, real packets both ways."""

import copy
import subprocess

from fwsg import fast
from fwsg.firewall import Firewall
from fwsg.netns import entered
from tests.netns.test_zones import NETS, SPORT, model, twolab  # noqa: F401 - fixture

OLD_FIXED = {
    "fixed-e-sf": ("ct state invalid drop", "ct state established,related accept"),
    "fixed-i-sf": ("ct state invalid drop", "ct state established,related accept"),
    "fixed-e-sl": (), "fixed-i-sl": (),
}


def _previous_layout(rs):
    """Compiled Ruleset ``rs`` as the previous layout held it (profile chains named by the
    hash of their old content, as they were)."""
    from fwsg.backends.nft.layout import (EGRESS_FIXED, EGRESS_MAP, FILTERED, INGRESS_FIXED,
                                          INGRESS_MAP, STATELESS, Names)
    from fwsg.ruleset import ChainDef

    old = copy.deepcopy(rs)
    stateless = rs.elements[STATELESS]
    for key in (STATELESS, FILTERED):
        del old.sets[key], old.elements[key]
    for name in ("fixed-state", "fixed-e", "fixed-i"):
        del old.chains[("inet", name)]
    for name, state in OLD_FIXED.items():
        tail = EGRESS_FIXED if name.startswith("fixed-e") else INGRESS_FIXED
        old.chains[("inet", name)] = ChainDef("inet", name, state + tail)
    for (fam, name), chain in rs.chains.items():
        if not (name.startswith("p") and name.endswith("-e")):
            continue
        new = name[:-2]
        marks = [k for k, v in rs.elements[EGRESS_MAP].items() if v == f"jump {new}-e"]
        sf = "sl" if marks[0] in stateless else "sf"
        e = (f"jump fixed-e-{sf}",) + chain.rules + ("drop",)
        i = (f"jump fixed-i-{sf}",) + rs.chains[(fam, new + "-i")].rules + ("drop",)
        prev = Names.profile(e, i)
        for d, rules, key in (("e", e, EGRESS_MAP), ("i", i, INGRESS_MAP)):
            del old.chains[(fam, f"{new}-{d}")]
            old.chains[(fam, f"{prev}-{d}")] = ChainDef(fam, f"{prev}-{d}", rules)
            old.elements[key] = {k: (f"jump {prev}-{d}" if v == f"jump {new}-{d}" else v)
                                 for k, v in old.elements[key].items()}
    for name, mask, vmap in (("egress-pre", "0xffff0000", "@egress"),
                             ("ingress-fwd", "0x0000ffff", "@ingress"),
                             ("ingress-out", "0x0000ffff", "@ingress")):
        c = rs.chains[("inet", name)]
        rules = tuple(r for r in c.rules if "@filtered" not in r)
        assert f"meta mark & {mask} vmap {vmap}" in rules
        old.chains[("inet", name)] = ChainDef("inet", name, rules, c.hook)
    return old


def _listing(lab):
    return subprocess.run(["ip", "netns", "exec", lab.host_ns, "nft", "list", "table", "inet",
                           "fwsg"], capture_output=True, text=True, check=True).stdout


def test_a_host_of_the_previous_profile_layout_is_upgraded_in_one_transaction(twolab):  # noqa: F811
    from fwsg.backends.nft.render import render
    from fwsg.plan import diff

    lab, fw = twolab
    ca = lab.open_tcp("a1", "a2", port=80, sport=SPORT)
    cb = lab.open_tcp("b1", "b2", port=80, sport=SPORT)
    compiled = fw._desired.rs
    with entered(lab.host_ns):
        ctx = fast.NftContext()
        try:
            ctx.run("".join(c + "\n" for c in render(
                diff(_previous_layout(compiled), fw.backend.read()).ops)))
        finally:
            ctx.close()
    listing = _listing(lab)
    assert "jump fixed-i-sf" in listing and "@filtered" not in listing
    assert ca.alive() and cb.alive()            # the previous layout passes the flows
    assert not lab.tcp_connect("a2", "a1", port=80, timeout=0.5)   # and still drops

    fw2 = Firewall(netns=lab.host_ns)
    before = fw2.backend.generation()
    r = fw2.apply(model())
    assert r.changed
    assert fw2.backend.generation()[1] == before[1] + 1     # one transaction
    assert r.summary["tables_added"] == [] and r.summary["sets_added"] == 2   # the two sets
    back = fw2.backend.read()
    assert back.sets == compiled.sets and back.elements == compiled.elements
    assert {k: c.digest for k, c in back.chains.items()} == \
        {k: c.digest for k, c in compiled.chains.items()}
    listing = _listing(lab)
    assert "fixed-i-sf" not in listing and "@filtered drop" in listing
    assert not Firewall(netns=lab.host_ns).apply(model()).changed   # nothing left to upgrade
    # flows live on, new connections the rules allow pass, the others drop
    assert ca.alive() and cb.alive()
    for net in NETS:
        assert lab.tcp_connect(f"{net}1", f"{net}2", port=80)
        assert not lab.tcp_connect(f"{net}2", f"{net}1", port=80, timeout=0.5)
        assert not lab.tcp_connect(f"{net}1", f"{net}2", port=8081, timeout=0.5)
