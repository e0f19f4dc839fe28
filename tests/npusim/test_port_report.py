"""`accel port-report` and accel/porting.py: per-op coverage and time, model accuracy, renderings."""
import json

import numpy as np
import pytest

import accel
import accel.models as models
from accel import ops
from accel.cli.main import main
from accel.porting.report import OpProfiler, port_report

BUNDLED = models.bundled_path()


@pytest.fixture(scope="module")
def report():
    return port_report(BUNDLED, "npusim:ascend910b", new_tokens=4)


def test_report_on_the_default_chip(report):
    assert report.ok and report.clock == "simulated" and report.backend == "npusim:ascend910b"
    rows = {r.op: r for r in report.ops}
    assert {"linear", "attention", "rms_norm", "rope", "matmul", "argmax"} <= set(rows)
    attention = rows["attention"]
    assert attention.kind == "composite" and attention.decomposed == attention.calls == 4 * 4
    assert attention.own_time == 0.0 and attention.total_time > 0
    assert "kernel lacks float32" in attention.note
    assert rows["linear"].native == rows["linear"].calls and rows["linear"].note == ""
    own = sum(r.own_time for r in report.ops)
    assert own + report.outside_ops_time == pytest.approx(report.total_time)
    assert sum(r.share for r in report.ops) <= 1.0 + 1e-9
    check = report.check
    assert check.greedy_matches == check.greedy_tokens == 4 and check.first_divergence is None
    assert check.max_logit_deviation < 1e-4 and check.reference == "numpy"


def test_renderings(report, tmp_path):
    data = json.loads(report.to_json())
    assert data["backend"] == "npusim:ascend910b" and data["check"]["greedy_agreement"] == 1.0
    assert {"op", "calls", "native", "decomposed", "fallback", "downcast", "share", "how"} <= set(data["ops"][0])
    assert data["counters"]["h2d_bytes"] > 0
    md = report.to_markdown()
    assert md.startswith("# Port report") and "| op | kind |" in md and "| attention |" in md
    text = report.to_text()
    assert "simulated time" in text and "greedy tokens agree 4/4" in text


def test_any_backend_gets_a_wall_clock_report():
    report = port_report(BUNDLED, "numpy", new_tokens=2)
    assert report.ok and report.clock == "wall" and report.check.max_logit_deviation == 0.0
    assert report.total_time > 0


def test_profiler_nests_composites_over_their_primitives(minimal):
    x = accel.from_numpy(np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32), backend=minimal)
    with OpProfiler(minimal) as p:
        ops.softmax(x)
    soft = p.timings["softmax"]
    children = sum(t.own for name, t in p.timings.items() if name != "softmax")
    assert soft.calls == 1 and soft.own == 0.0 and soft.total == pytest.approx(children)
    assert {"max", "sub", "exp", "sum", "div"} <= set(p.timings)


def test_cli_prints_the_report_and_writes_json_and_markdown(tmp_path, capsys):
    code = main(["port-report", "--backend", "npusim:minimal", "--new-tokens", "2", "--set", "dtype_policy=fallback",
                 "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md")])
    out = capsys.readouterr().out
    accel.get_backend("npusim:minimal").configure(dtype_policy="error")   # shared instance: restore
    assert code == 0
    assert "host fallback" in out and "argmax" in out and "kernel lacks float32" in out
    assert json.loads((tmp_path / "r.json").read_text())["backend"] == "npusim:minimal"
    assert (tmp_path / "r.md").read_text().startswith("# Port report")


def test_cli_reports_where_the_port_breaks(capsys):
    code = main(["port-report", "--backend", "npusim:minimal", "--dtype", "bfloat16", "--new-tokens", "2"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAILED" in out and "failed 1" in out and "dtype_policy" in out
