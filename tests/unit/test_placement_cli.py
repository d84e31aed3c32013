"""``fwsg place``: exit codes, JSON, one-line errors."""

import json
import os

from fwsg.cli import main

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "cluster.json")


def test_text_plan_and_exit_3_when_a_guest_is_unplaced(capsys):
    rc = main(["place", EXAMPLE, "--failed", "pve2"])
    out = capsys.readouterr().out
    assert rc == 3
    assert "vm-160 cannot be placed:" in out
    assert "  pve1: 32 cores < 40 guest cores" in out
    assert "Projected load (p95):" in out


def test_json_plan(capsys):
    rc = main(["place", EXAMPLE, "--failed", "pve3", "--strategy", "bestfit", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert doc["strategy"] == "bestfit" and doc["failed"] == ["pve3"] and doc["unplaced"] == 0
    assert [p["guest"] for p in doc["placements"]] == ["vm-150"]
    assert {n["name"] for n in doc["nodes"]} == {"pve1", "pve2", "pve3", "pve4", "pve5"}


def test_unknown_node_is_a_one_line_error(capsys):
    rc = main(["place", EXAMPLE, "--failed", "nope"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("fwsg: failed: unknown node 'nope'") and err.count("\n") == 1


def test_bad_document_names_the_field(tmp_path, capsys):
    doc = json.load(open(EXAMPLE))
    doc["guests"]["vm-101"]["memory"] = -4
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    assert main(["place", str(path), "--failed", "pve2"]) == 2
    assert capsys.readouterr().err == "fwsg: guests.vm-101.memory: -4 must be >= 0\n"


def test_missing_file_and_bad_json_and_bad_threshold(tmp_path, capsys):
    assert main(["place", str(tmp_path / "none.json"), "--failed", "x"]) == 2
    assert "cannot read" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    assert main(["place", str(bad), "--failed", "x"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["place", EXAMPLE, "--failed", "pve2", "--threshold", "150"]) == 2
    assert capsys.readouterr().err == "fwsg: --threshold: 150 must be in (0, 100]\n"


def test_stats_file_feeds_usage(tmp_path, capsys):
    stats = {"schema": "fwsg.probe/1", "node": "pve4",
             "metrics": {"cpu": {"latest": 63, "mean": 63, "p95": 63}}}
    path = tmp_path / "pve4.json"
    path.write_text(json.dumps(stats))
    main(["place", EXAMPLE, "--failed", "pve2", "--stats", str(path), "--json"])
    doc = json.loads(capsys.readouterr().out)
    pve4 = [n for n in doc["nodes"] if n["name"] == "pve4"][0]
    assert pve4["cpu"]["before"] == 63 and pve4["placed"] == []  # pve4 full: nothing goes there
