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
import shutil
import statistics
import subprocess
import sys
import tempfile

from fwsg.lab.errors import PeerError

NEUTRON = "neutron==28.0.2"   # 2025.2; installs on Python 3.11
DEFAULT_VENV = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) \
    / "fwsg" / f"peer-{NEUTRON.replace('==', '-')}"
# (fwsg row, Neutron step, what, target ratio fwsg/Neutron)
STEPS = (("full_apply_parse", "initial", "initial apply, all ports", 1 / 20),
         ("member_add_big", "member", "one member added to the big group", 1 / 1000),
         ("rule_add", "rule", "one rule added to the group every port uses", None),
         ("port_add", "port", "one port added", None))


def _last_line(text):
    lines = [x.strip() for x in (text or "").splitlines() if x.strip()]
    return lines[-1] if lines else "no output"


def ensure_venv(venv, log):
    """The peer virtualenv with Neutron installed (created on first use); its python. Raises
    PeerError (one line: the step and the installer's last words) when it cannot be made; a
    virtualenv this call created and could not finish is removed again."""
    venv = pathlib.Path(venv)
    py = venv / "bin" / "python"
    version = NEUTRON.split("==")[1]
    probe = [str(py), "-c", "from importlib import metadata; print(metadata.version('neutron'))"]
    if py.exists() and subprocess.run(probe, capture_output=True, text=True).stdout.strip() \
            == version:
        return py
    created = not venv.exists()
    log(f"== peer: installing {NEUTRON} into {venv} (a few minutes, once)")
    for what, cmd in (("creating the virtualenv", [sys.executable, "-m", "venv", str(venv)]),
                      (f"pip install {NEUTRON}",
                       [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        NEUTRON])):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True)
            failed = p.returncode != 0 and _last_line(p.stderr or p.stdout)
        except OSError as e:
            failed = e.strerror or str(e)
        if failed:
            if created:
                shutil.rmtree(venv, ignore_errors=True)
            raise PeerError(f"--peer neutron: {what} in {venv} failed: {failed}")
    return py


def run_neutron(doc_path, venv, repeat, log, netns=None, steps="all"):
    """Neutron's timings (a dict) on the wire-format scenario in ``doc_path``, in a namespace
    of its own (removed afterwards) or in ``netns`` (left as Neutron made it: its rules stay).
    ``steps``: ``all``, or ``initial`` (the initial apply only)."""
    py = ensure_venv(venv, log)
    script = pathlib.Path(__file__).with_name("peer_neutron.py")
    ns = netns or f"fwsg-peer-{os.getpid()}"
    if netns is None:
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        log(f"== peer: Neutron's agent code + IptablesFirewallDriver (ipset) in {ns}")
        out = subprocess.run(["ip", "netns", "exec", ns, str(py), str(script), str(doc_path),
                              str(repeat), steps], capture_output=True, text=True)
    finally:
        if netns is None:
            subprocess.run(["ip", "netns", "del", ns], check=False)
    if out.returncode != 0:
        raise PeerError("the Neutron peer failed: " + _last_line(out.stderr))
    return json.loads(out.stdout.strip().splitlines()[-1])


def scenario_file(doc):
    """``doc`` written to a temporary JSON file (the caller removes it): what both sides read."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="fwsg-peer-",
                                     delete=False) as f:
        json.dump(doc, f)
    return f.name


# the modules a first apply imports on demand: imported before the clock starts, as Neutron's
# modules are imported before its timed call (a module still imported inside the timed call is
# reported as ``imported_during``)
COLD_IMPORTS = ("fwsg.backends.nft.desired", "fwsg.backends.nft.drift", "fwsg.backends.nft.rules",
                "fwsg.backends.iptables.switch", "fwsg.conntrack", "fwsg.dispatch",
                "fwsg.fingerprint", "fwsg.heap", "fwsg.statefile")


def cold_child(path):
    """In a fresh process inside a fresh namespace (``python -m fwsg.lab.peer cold FILE``):
    fwsg's initial apply of the wire-format scenario in ``FILE``, timed as Neutron's is (the
    process started, its modules imported and the reply decoded before the clock starts;
    ``Firewall().apply(doc)``, parse included, on the clock). Prints one JSON object: ``ms``,
    the apply's own phases (``timings_ms``), ``transport`` and ``imported_during``."""
    import importlib
    import time

    from fwsg.firewall import Firewall

    for name in COLD_IMPORTS:
        importlib.import_module(name)
    with open(path) as f:
        doc = json.load(f)
    loaded = set(sys.modules)
    t = time.perf_counter()
    r = Firewall().apply(doc)
    ms = (time.perf_counter() - t) * 1000
    print(json.dumps({"ms": ms, "timings_ms": r.timings_ms, "transport": r.transport,
                      "imported_during": sorted(m for m in set(sys.modules) - loaded
                                                if m.startswith("fwsg"))}))


def fwsg_cold(doc_path, n, log, settle=1.0):
    """``n`` cold starts of fwsg, each a fresh process (:func:`cold_child`) in a fresh
    namespace (removed afterwards), like Neutron's run; the children's JSON objects. Waits
    ``settle`` seconds before each, so the kernel's teardown of the namespace before
    (fwsg's or Neutron's) is not charged to it. The children keep their names records and
    namespace locks in a state directory of their own (``FWSG_STATE_DIR``, removed
    afterwards), never in the host's."""
    import time

    out = []
    state = tempfile.mkdtemp(prefix="fwsg-peer-state-", dir="/run")
    env = dict(os.environ, FWSG_STATE_DIR=state)
    try:
        for i in range(n):
            ns = f"fwsg-peer-cold-{os.getpid()}-{i}"
            time.sleep(settle)
            subprocess.run(["ip", "netns", "add", ns], check=True)
            try:
                p = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m",
                                    "fwsg.lab.peer", "cold", doc_path], capture_output=True,
                                   text=True, env=env)
            finally:
                subprocess.run(["ip", "netns", "del", ns], check=False)
            if p.returncode != 0:
                raise PeerError("fwsg's cold start failed: " + _last_line(p.stderr))
            out.append(json.loads(p.stdout.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(state, ignore_errors=True)
    log(f"   fwsg cold starts (fresh process + namespace): "
        f"{', '.join('%.0f' % c['ms'] for c in out)} ms")
    return out


def neutron_rows(bench, doc, venv=DEFAULT_VENV, repeat=1, fwsg_cold_starts=2, initials=3):
    """Adds the peer rows to ``bench`` (a fwsg.lab.bench.Bench, after its own run).

    The initial apply of both is measured the same way, interleaved, in the same minutes:
    ``fwsg_cold_starts`` of fwsg's (:func:`fwsg_cold`: each a fresh process in a fresh
    namespace), Neutron's full run (initial apply, then its other steps), again fwsg's, then
    ``initials - 1`` more runs of Neutron's initial apply alone (each a fresh process in a
    fresh namespace too), each followed by fwsg's. The row compares the medians (fwsg's row is
    skipped when ``fwsg_cold_starts`` is 0). The other rows are the bench's own fwsg figures
    beside Neutron's full run."""
    path = scenario_file(doc)
    cold, initial = [], []
    try:
        load = os.getloadavg()
        cold += fwsg_cold(path, fwsg_cold_starts, bench.say)
        peer = run_neutron(path, venv, repeat, bench.say)
        if "initial" in peer:
            initial.append(peer["initial"])
            cold += fwsg_cold(path, fwsg_cold_starts, bench.say)
            for _ in range(initials - 1):
                again = run_neutron(path, venv, 1, bench.say, steps="initial")
                initial.append(again.get("initial", float("nan")))
                cold += fwsg_cold(path, fwsg_cold_starts, bench.say)
    finally:
        os.unlink(path)
    bench.data["peer_neutron"] = dict(peer, initial_runs=initial)
    bench.data["peer_loadavg"] = {"before": load, "after": os.getloadavg()}
    members = sum(len(v) for fams in doc["sg_member_ips"].values() for v in fams.values())
    if "error" in peer:
        bench.row("peer_error", f"11. Neutron {peer['neutron']} iptables+ipset, {members} "
                  "members", float("nan"), note=peer["error"])
        return
    mine_of = {key: bench.data.get(key, {}).get("fwsg_ms") for key, *_ in STEPS}
    mine_of["full_apply_parse"] = None
    theirs_of = {step: peer.get(step) for _, step, *_ in STEPS}
    theirs_of["initial"] = statistics.median(initial)
    if cold:
        ms = sorted(c["ms"] for c in cold)
        mine_of["full_apply_parse"] = statistics.median(ms)
        phases = {k: statistics.median(c["timings_ms"].get(k, 0) for c in cold)
                  for k in ("parse", "compile", "diff", "commit", "conntrack")}
        bench.data["peer_fwsg_initial"] = {"runs": cold, "median_phases_ms": phases}
        cold_note = (f"; medians: fwsg of {len(ms)} ({ms[0]:.0f}-{ms[-1]:.0f} ms; "
                     + ", ".join(f"{k} {v:.0f}" for k, v in phases.items())
                     + f"), Neutron of {len(initial)} ("
                     + ", ".join(f"{x:.0f}" for x in initial) + " ms), interleaved; "
                     "each a fresh process in a fresh namespace")
    for key, step, what, target in STEPS:
        mine = mine_of[key]
        theirs = theirs_of[step]
        if mine is None or theirs is None:
            continue
        ratio = theirs / mine
        note = f"{ratio:.0f}x faster"
        if key == "full_apply_parse":
            note += cold_note
        bench.row(f"peer_{step}", f"11. {what} ({members} members, both)", mine, theirs,
                  f"Neutron {peer['neutron']} iptables+ipset",
                  f">= {1 / target:.0f}x faster" if target else "",
                  (mine <= target * theirs) if target else None, note)
    bench.say(f"   Neutron reached {peer['iptables_rules']} iptables rules and "
              f"{peer['ipset_entries']} ipset entries; steps median of {peer['repeat']}")


if __name__ == "__main__":
    if sys.argv[1:2] != ["cold"] or len(sys.argv) != 3:
        sys.exit("usage: python -m fwsg.lab.peer cold SCENARIO.json")
    cold_child(sys.argv[2])
