"""`accel export`: the Llama prefill/decode steps as ONNX models that pass onnx.checker, run in
ONNX Runtime and agree with the reference backend (logits and the updated KV caches)."""
import numpy as np
import pytest

import accel
from accel.models import LlamaConfig, LlamaModel

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from accel.cli.export import export_step, verify  # noqa: E402
from accel.cli.main import main  # noqa: E402

CONFIG = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, initializer_range=0.2,
                     max_position_embeddings=128)


@pytest.fixture(scope="module")
def model():
    return LlamaModel.random(CONFIG, seed=5, backend="numpy")


@pytest.mark.parametrize("step", ["prefill", "decode"])
def test_exported_step_checks_runs_and_matches_the_reference(model, step):
    proto = export_step(model, step, prefill_len=7, max_seq=32)
    onnx.checker.check_model(proto, full_check=True)
    inputs = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    t = 7 if step == "prefill" else 1
    assert inputs["input_ids"] == [1, t] and inputs["positions"] == [t]
    assert inputs["past_key.0"] == [1, 2, 32, 8] and len(inputs) == 2 + 2 * CONFIG.num_hidden_layers
    outputs = [o.name for o in proto.graph.output]
    assert outputs[0] == "logits" and set(outputs[1:]) == {f"present_{kv}.{i}" for kv in ("key", "value") for i in range(2)}
    assert len(proto.graph.initializer) >= len(model.params)  # the weights travel in the file
    assert {"Attention", "RMSNormalization"} <= {n.op_type for n in proto.graph.node}
    assert verify(model, proto, step, batch=1, prefill_len=7, max_seq=32) < 1e-4


def test_unfused_export_uses_primitives_only(model):
    proto = export_step(model, "decode", prefill_len=3, max_seq=16, fused=False)
    kinds = {n.op_type for n in proto.graph.node}
    assert not kinds & {"Attention", "RMSNormalization", "Softmax"}
    assert verify(model, proto, "decode", batch=1, prefill_len=3, max_seq=16) < 1e-4


def test_cli_writes_both_steps_for_the_bundled_model(tmp_path, capsys):
    out = tmp_path / "llama.onnx"
    assert main(["export", "--format", "onnx", "--out", str(out), "--prefill-len", "5", "--max-seq", "64"]) == 0
    text = capsys.readouterr().out
    for step in ("prefill", "decode"):
        path = tmp_path / f"llama_{step}.onnx"
        onnx.checker.check_model(str(path))
        assert f"wrote {path}" in text
    assert text.count("onnxruntime vs numpy: max |difference|") == 2
