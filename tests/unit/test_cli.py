"""The command line: exit codes, one-line errors, dry runs (fake backend; no kernel)."""

import json

import pytest

from fwsg.cli import main


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_help_teaches(capsys):
    with pytest.raises(SystemExit) as e:
        main(["apply", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--dry-run" in out and "examples:" in out and "exit status" in out


def test_dry_run_prints_batch(capsys, tmp_path, demo_model):
    f = tmp_path / "m.json"
    f.write_text(json.dumps(demo_model))
    rc, out, _ = run(capsys, "apply", str(f), "--backend", "fake", "--dry-run")
    assert rc == 0
    assert out.startswith("add table bridge fwsg\nadd table inet fwsg\n")


def test_apply_json(capsys, tmp_path, demo_model):
    f = tmp_path / "m.json"
    f.write_text(json.dumps(demo_model))
    rc, out, _ = run(capsys, "apply", str(f), "--backend", "fake", "--json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["changed"] is True and doc["counts"]["rules"] > 0


@pytest.mark.parametrize("content,fragment", [
    ("{", "invalid JSON at line 1"),
    ("[]", "must be a JSON object"),
    ('{"devices": {"p": {"device": "tap1", "mac_address": "fa:16:3e:00:00:01", '
     '"fixed_ips": ["192.0.2.300"]}}}', "devices.p.fixed_ips[0]: '192.0.2.300' is not an IP"),
    ('{"devices": {"p": {"device": "bad name!", "mac_address": "fa:16:3e:00:00:01"}}}',
     "devices.p.device: 'bad name!' is not a valid interface name"),
])
def test_bad_input_exits_2_with_one_line(capsys, tmp_path, content, fragment):
    f = tmp_path / "m.json"
    f.write_text(content)
    rc, out, err = run(capsys, "apply", str(f), "--backend", "fake")
    assert rc == 2
    assert fragment in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_file_and_bad_netns(capsys):
    rc, _, err = run(capsys, "apply", "/nonexistent/model.json", "--backend", "fake")
    assert rc == 2 and "cannot read model" in err
    rc, _, err = run(capsys, "apply", "-", "--netns", "no such ns")
    assert rc == 2 and "--netns" in err


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["apply"])
    assert e.value.code == 2


def test_demo_reports_the_labs_own_errors_in_one_line(capsys):
    """The lab's errors are not fwsg's (fwsg.lab.errors), yet the demo's CLI glue gives them
    the same treatment: one line, exit 2 for bad usage, no traceback, nothing built."""
    from fwsg.errors import FwsgError
    from fwsg.lab import LabError

    assert not issubclass(LabError, FwsgError)
    rc, out, err = run(capsys, "demo", "--model", "/nonexistent/model.json", "--name", "t0")
    assert rc == 2 and out == ""
    assert err == "fwsg demo: /nonexistent/model.json: cannot read model: No such file or directory\n"
