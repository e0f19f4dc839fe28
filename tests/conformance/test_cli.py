"""`accel conformance`: reports, the matrix, the closing line and the exit status."""
import json
import re

import pytest

from accel.cli.main import main

CLOSING = re.compile(r"^\d+ passed, \d+ failed, \d+ skipped$")


def test_numpy_passes_and_writes_both_reports(tmp_path, capsys):
    js, md = tmp_path / "c.json", tmp_path / "c.md"
    code = main(["conformance", "--backend", "numpy", "--op", "softmax", "--op", "add", "--dtype", "float32",
                 "--dtype", "bfloat16", "--json", str(js), "--markdown", str(md), "--no-progress"])
    out = capsys.readouterr().out.rstrip().splitlines()
    assert code == 0
    assert CLOSING.match(out[-1]) and out[-1].endswith("0 failed, 0 skipped"), out[-1]
    assert any(line.startswith("softmax") and "✓" in line for line in out)
    report = json.loads(js.read_text())
    rows = report["rows"]
    assert rows and {r["op"] for r in rows} == {"softmax", "add"} and {r["dtype"] for r in rows} == {"float32", "bfloat16"}
    for key in ("backend", "op", "params", "dtype", "shapes", "seed", "status", "nmse", "max_abs", "max_rel",
                "scaled_max", "worst_index", "worst_actual", "worst_expected", "thresholds"):
        assert key in rows[0], key
    assert report["summary"]["failed"] == 0 and report["summary"]["passed"] == len(rows)
    text = md.read_text()
    assert text.startswith("# accel conformance report: `numpy`") and "| softmax |" in text


def test_failures_give_exit_status_1_and_an_xfail_list_is_strict(tmp_path, capsys):
    import accel
    from broken_backend import Broken

    accel.register_backend(Broken)
    code = main(["conformance", "--backend", Broken.name, "--op", "softmax", "--dtype", "float32", "--no-progress"])
    out = capsys.readouterr().out.rstrip().splitlines()
    assert code == 1 and CLOSING.match(out[-1]) and not out[-1].startswith("0 passed")
    assert any("FAIL softmax[float32]" in line and "values=large" in line for line in out)

    # listing the failures makes the run pass; listing a passing case makes it fail (XPASS)
    known = tmp_path / "known.toml"
    known.write_text('[[xfail]]\nop = "softmax"\ncase = "*large*"\nreason = "naive softmax overflows"\n')
    code = main(["conformance", "--backend", Broken.name, "--op", "softmax", "--dtype", "float32",
                 "--expectations", str(known), "--no-progress"])
    out = capsys.readouterr().out.rstrip().splitlines()
    assert code == 0, "\n".join(out[-15:])
    known.write_text('[[xfail]]\nop = "softmax"\ncase = "shape=(5, 7)*"\nreason = "wrongly listed"\n')
    code = main(["conformance", "--backend", "numpy", "--op", "softmax", "--dtype", "float32",
                 "--expectations", str(known), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1 and "XPASS softmax[float32] shape=(5, 7)" in out


def test_against_compares_two_backends(capsys):
    code = main(["conformance", "--backend", "numpy", "--against", "numpy", "--op", "matmul", "--dtype", "float32",
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "against the backend numpy" in out


def test_bad_expectations_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[xfail]]\nop = "softmax"\n')
    code = main(["conformance", "--backend", "numpy", "--op", "add", "--expectations", str(bad)])
    err = capsys.readouterr().err
    assert code == 1 and "needs an op and a reason" in err and "HINT:" in err


@pytest.mark.parametrize("argv", [["conformance", "--backend", "no_such_chip"],
                                  ["conformance", "--backend", "numpy", "--op", "no_such_op"]])
def test_bad_names_exit_1_with_a_hint(argv, capsys):
    assert main(argv) == 1
    assert "HINT:" in capsys.readouterr().err


def test_onnx_oracle_section(capsys, monkeypatch):
    pytest.importorskip("onnx")
    from accel.conformance import onnx_oracle

    # the CLI wiring only: a slice of ONNX's cases (test_onnx_oracle.py runs them all)
    some = tuple(c for c in onnx_oracle.onnx_cases() if c.model.graph.node[0].op_type in ("Softmax", "Add"))
    monkeypatch.setattr(onnx_oracle, "onnx_cases", lambda: some)
    code = main(["conformance", "--backend", "numpy", "--op", "add", "--dtype", "float32", "--onnx", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "ONNX cases ran for" in out and "Softmax" in out
