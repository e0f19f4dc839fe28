"""`accel bench` end to end on the reference backend (small settings), and the op-overhead
capture that finds which kernels an accel call ran."""
from __future__ import annotations

import json

import numpy as np
import pytest

import accel
from accel import ops
from accel.bench import op_overhead, timing
from accel.cli.main import main


def test_capture_finds_the_kernel_and_replays_it():
    numpy = accel.get_backend("numpy")
    x = accel.from_numpy(np.arange(6, dtype=np.float32).reshape(2, 3), numpy)
    recorded = op_overhead.capture(lambda: ops.add(x, 0.5))
    assert [r[3] for r in recorded] == ["add"]
    np.testing.assert_array_equal(op_overhead.native_call(recorded)(), np.arange(6).reshape(2, 3) + 0.5)


def test_capture_of_a_decomposed_composite_replays_its_primitives():
    numpy = accel.get_backend("numpy")
    host = np.random.default_rng(0).standard_normal((3, 5))
    x = accel.from_numpy(host.astype(np.float32), numpy)
    recorded = op_overhead.capture(lambda: ops.softmax(x, -1))
    assert len(recorded) > 1 and "softmax" not in [r[3] for r in recorded]  # numpy has no fused softmax
    e = np.exp(host - host.max(-1, keepdims=True))
    np.testing.assert_allclose(op_overhead.native_call(recorded)(), e / e.sum(-1, keepdims=True), rtol=1e-6)


def test_interleave_runs_rounds_in_order_and_skips_a_failing_group():
    order = []

    def case(key, group="", fail=False):
        def run():
            order.append(key)
            if fail:
                raise accel.AccelError("boom", hint="none")
            return 1.0
        return timing.Case(key, run, group)

    cases = [case("a"), case("b1", "g", fail=True), case("b2", "g"), case("c")]
    timing.interleave(cases, 2, progress=False)
    assert order == ["a", "b1", "c", "a", "c", "a", "c"]  # warm-ups, then two rounds; group g stopped
    assert cases[0].samples == [1.0, 1.0] and cases[3].samples == [1.0, 1.0]
    assert cases[1].skipped.startswith("failed: boom") and "b1" in cases[2].skipped


def test_accel_bench_quick_writes_json_markdown_and_charts(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "results"
    assert main(["bench", "--quick", "--backend", "numpy", "--repeats", "1", "--no-progress", "--out", str(out)]) == 0
    data = json.loads((out / "bench.json").read_text())
    assert set(data) >= {"machine", "roofline", "ops", "model", "train", "goals"}
    assert data["roofline"]["devices"]["host"]["bandwidth_gbs"] > 0
    rows = {r["name"]: r for r in data["model"]["rows"]}
    eager = rows["numpy float32 eager"]["results"]
    assert all(eager[m]["tokens_per_s"] > 0 for m in data["model"]["measurements"])
    if "HF transformers float32" in rows and "skipped" not in rows["HF transformers float32"]:
        # same weights, same greedy decoding: float32 numpy and transformers agree token for token
        assert rows["numpy float32 eager"]["same_tokens_as_hf"] == 1.0
        assert eager["decode-b1"]["ratio_to_hf"] > 0
    assert rows["numpy float32 compiled"]["skipped"].startswith("no graph compiler")
    add = [r for r in data["ops"] if r["op"] == "add" and r["size"] == "tiny"][0]
    assert add["kernels"] == ["add"] and add["accel_us"] > 0 and add["native_us"] > 0
    assert any(r["mode"] == "eager" and r.get("tokens_per_s", 0) > 0 for r in data["train"]["rows"])
    for chart in ("model_prefill.png", "model_decode.png", "op_overhead.png", "train.png"):
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "bench.md").read_text()
    assert "## Model" in markdown and "## Goals" in markdown and "numpy float32 eager" in markdown
    assert "## Model" in capsys.readouterr().out


def test_bench_rejects_bad_arguments(tmp_path, capsys):
    assert main(["bench", "--quick", "--repeats", "0", "--out", str(tmp_path)]) == 1
    assert "--repeats must be >= 1" in capsys.readouterr().err
    assert main(["bench", "--quick", "--backend", "nosuch", "--out", str(tmp_path)]) == 1
    assert "unknown backend 'nosuch'" in capsys.readouterr().err
    assert main(["bench", "--quick", "--decode-tokens", "1", "--out", str(tmp_path)]) == 1
    assert "--decode-tokens must be >= 2" in capsys.readouterr().err


def test_a_case_past_its_budget_is_interrupted_and_skipped():
    import time

    def slow():
        for _ in range(200):  # Python between sleeps, so the alarm lands
            time.sleep(0.01)
        return 1.0

    cases = [timing.Case("slow", slow, "g", budget_s=0.2), timing.Case("next", lambda: 1.0, "g", budget_s=0.2)]
    timing.interleave(cases, 1, progress=False)
    assert cases[0].skipped == "failed: over the budget of 0.2 s for one call"
    assert "over the budget" in cases[1].skipped and not cases[1].samples
