"""``scripts/bench --peer neutron``: OpenStack Neutron's own agent code and its
``IptablesFirewallDriver`` (ipset on), measured on the bench's scenario beside fwsg.

Neutron is installed from the package index (pinned below) into a virtualenv of its own, never
into fwsg's and never as a test dependency; ``fwsg/lab/peer_neutron.py`` (standard library and
Neutron only) drives it there, in a network namespace of its own, and prints its timings.
What exactly it runs is written in that file's docstring. Not a test: no assertion on time.
"""

import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

NEUTRON = "neutron==28.0.2"   # 2025.2; installs on Python 3.11
DEFAULT_VENV = pathlib.Path(os.environ.get("XDG_CACHE_HOME", "/root/.cache")) / "fwsg" / \
    f"peer-{NEUTRON.replace('==', '-')}"
# (fwsg row, Neutron step, what, target ratio fwsg/Neutron)
STEPS = (("full_apply_parse", "initial", "initial apply, all ports", 1 / 20),
         ("member_add_big", "member", "one member added to the big group", 1 / 1000),
         ("rule_add", "rule", "one rule added to the group every port uses", None),
         ("port_add", "port", "one port added", None))


def ensure_venv(venv, log):
    """The peer virtualenv with Neutron installed (created on first use); its python."""
    venv = pathlib.Path(venv)
    py = venv / "bin" / "python"
    version = NEUTRON.split("==")[1]
    probe = [str(py), "-c", "from importlib import metadata; print(metadata.version('neutron'))"]
    if py.exists() and subprocess.run(probe, capture_output=True, text=True).stdout.strip() \
            == version:
        return py
    log(f"== peer: installing {NEUTRON} into {venv} (a few minutes, once)")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", NEUTRON], check=True)
    return py


def run_neutron(doc, venv, repeat, log, netns=None, steps="all"):
    """Neutron's timings (a dict) on the wire-format scenario ``doc``, in a namespace of its
    own (removed afterwards) or in ``netns`` (left as Neutron made it: its rules stay).
    ``steps``: ``all``, or ``initial`` (the initial apply only)."""
    py = ensure_venv(venv, log)
    script = pathlib.Path(__file__).with_name("peer_neutron.py")
    ns = netns or f"fwsg-peer-{os.getpid()}"
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="fwsg-peer-") as f:
        json.dump(doc, f)
        f.flush()
        if netns is None:
            subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            log(f"== peer: Neutron's agent code + IptablesFirewallDriver (ipset) in {ns}")
            out = subprocess.run(["ip", "netns", "exec", ns, str(py), str(script), f.name,
                                  str(repeat), steps], capture_output=True, text=True)
        finally:
            if netns is None:
                subprocess.run(["ip", "netns", "del", ns], check=False)
    if out.returncode != 0:
        raise RuntimeError("the Neutron peer failed: " + out.stderr.strip()[-500:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def fwsg_cold_ms(doc, netns, n=3):
    """fwsg's cold start on ``doc`` in ``netns``, as row 1b measures it (tables flushed, a new
    Firewall, the wire dict parsed and applied): the ``n`` times in ms; leaves it flushed."""
    import time

    from fwsg.firewall import Firewall
    from fwsg.netns import entered

    out = []
    with entered(netns):
        for _ in range(n):
            Firewall().flush()
            t = time.perf_counter()
            Firewall().apply(doc)
            out.append((time.perf_counter() - t) * 1000)
        Firewall().flush()
    return out


def neutron_rows(bench, doc, venv=DEFAULT_VENV, repeat=1, netns=None):
    """Adds the peer rows to ``bench`` (a fwsg.lab.bench.Bench, after its own run). With
    ``netns`` (the bench's namespace), fwsg's initial apply is timed again right before and
    right after Neutron's (3 + 3 cold starts of the same dict), so both initial-apply figures
    come from the same minutes of a shared machine; the other rows are the bench's own."""
    before = fwsg_cold_ms(doc, netns) if netns else []
    peer = run_neutron(doc, venv, repeat, bench.say)
    after = fwsg_cold_ms(doc, netns) if netns else []
    bench.data["peer_neutron"] = peer
    members = sum(len(v) for fams in doc["sg_member_ips"].values() for v in fams.values())
    if "error" in peer:
        bench.row("peer_error", f"11. Neutron {peer['neutron']} iptables+ipset, {members} "
                  "members", float("nan"), note=peer["error"])
        return
    mine_of = {key: bench.data.get(key, {}).get("fwsg_ms") for key, *_ in STEPS}
    if before:
        mine_of["full_apply_parse"] = statistics.median(before + after)
        bench.data["peer_fwsg_initial_ms"] = {"before": before, "after": after}
    for key, step, what, target in STEPS:
        mine = mine_of[key]
        if mine is None or step not in peer:
            continue
        ratio = peer[step] / mine
        note = f"{ratio:.0f}x faster"
        if key == "full_apply_parse" and before:
            note += "; fwsg: median of 3 cold starts just before and 3 just after Neutron's"
        bench.row(f"peer_{step}", f"11. {what} ({members} members, both)", mine, peer[step],
                  f"Neutron {peer['neutron']} iptables+ipset",
                  f">= {1 / target:.0f}x faster" if target else "",
                  (mine <= target * peer[step]) if target else None, note)
    bench.say(f"   Neutron reached {peer['iptables_rules']} iptables rules and "
              f"{peer['ipset_entries']} ipset entries; steps median of {peer['repeat']}")
