"""`accel export`: write a Llama model's prefill and decode steps as ONNX models.

    accel export --model DIR --format onnx --out model.onnx                # both steps
    accel export --model DIR --format onnx --out decode.onnx --step decode

Each step is traced with `accel.graph.compile`'s tracer from `llama.forward` with a static KV cache,
so the file has static shapes (what ATC, MagicMind and TensorRT like best): inputs `input_ids`
(B, T) int64, `positions` (T,) int64 and `past_key.{i}` / `past_value.{i}` (B, Hkv, S, D);
outputs `logits` (B, T, V) and `present_key.{i}` / `present_value.{i}`, the caches after this
step's tokens were written at `positions` (feed them back as the next step's past). Weights are
initializers. Fused ONNX operators (Attention, RMSNormalization, ...) are used where ONNX
Runtime runs them in the model's dtype, the decompositions elsewhere; `--no-fused` exports
primitives only. The file passes `onnx.checker`; unless `--no-verify`, it is run in ONNX Runtime
on random tokens and compared with the reference backend.
"""
from __future__ import annotations

import os
import sys
import tempfile

from accel.core.errors import AccelError, ModelError

STEPS = ("prefill", "decode")


def register(sub) -> None:
    p = sub.add_parser("export", help="write the model's prefill/decode steps as ONNX")
    p.add_argument("--model", default=None, help="model directory (default: the bundled model)")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="output format")
    p.add_argument("--out", required=True, help="output file; without --step, FILE gets "
                                                "_prefill/_decode before its extension")
    p.add_argument("--step", choices=STEPS, help="export one step only")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prefill-len", type=int, default=16, help="prompt length of the prefill graph")
    p.add_argument("--max-seq", type=int, default=128, help="KV cache length")
    p.add_argument("--dtype", default=None, help="cast weights (float32, float16, bfloat16)")
    p.add_argument("--no-fused", action="store_true", help="decompose every composite")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime check")
    p.set_defaults(run=run)


def export_step(model, step: str, *, batch: int = 1, prefill_len: int = 16, max_seq: int = 128,
                fused: bool = True):
    """The ONNX ModelProto of one step of `model` (a LlamaModel on any backend)."""
    import accel
    from accel import ops
    from accel.export import onnx as onnx_export
    from accel.graph.compile import trace
    from accel.graph.ir import bind_inputs
    from accel.models import KVCache, forward
    from accel.graph.trace import lower

    if step not in STEPS:
        raise ModelError(f"unknown step {step!r}", hint=f"use one of {', '.join(STEPS)}")
    config, backend = model.config, model.backend
    if batch < 1 or max_seq < 1:
        raise ModelError(f"--batch {batch} and --max-seq {max_seq} must both be >= 1",
                         hint="e.g. --batch 1 --max-seq 128")
    t = prefill_len if step == "prefill" else 1
    if t < 1 or t > max_seq:
        raise ModelError(f"the {step} length {t} must lie in [1, max_seq={max_seq}]",
                         hint="raise --max-seq or lower --prefill-len")
    cache = KVCache.for_config(config, batch, max_seq, model.dtype, backend)
    ids = ops.zeros((batch, t), accel.int64, backend)
    start = 0 if step == "prefill" else prefill_len % max_seq
    positions = ops.arange(start, start + t, dtype=accel.int64, backend=backend)
    graph, tensors = trace(forward, model.params, config, ids, positions, cache)
    graph = _named(graph)
    by_id = {id(x): i for i, x in enumerate(tensors)}
    frozen = {by_id[id(p)]: p.data for p in model.params.values()}
    frozen[by_id[id(cache.positions)]] = cache.positions.data
    names = {by_id[id(ids)]: "input_ids", by_id[id(positions)]: "positions"}
    for i, (k, v) in enumerate(zip(cache.k, cache.v)):
        names[by_id[id(k)]] = f"past_key.{i}"
        names[by_id[id(v)]] = f"past_value.{i}"
    input_names = [names[p] for p in range(len(tensors)) if p not in frozen]
    output_names = ["logits"] + [names[p].replace("past_", "present_") for p, _ in graph.mutations]
    graph = bind_inputs(graph, frozen)
    allowed = _ort_allows(backend) if fused else (lambda op, dtype: False)
    graph = lower(graph, onnx_export.export_policy(allowed), backend)
    model_proto = onnx_export.graph_to_onnx(
        graph, input_names=input_names, output_names=output_names,
        doc=f"accel export: {config.model_type} {step} step, batch {batch}, tokens {t}, "
            f"KV cache {max_seq}, {model.dtype.name}")
    onnx_export.check(model_proto)
    return model_proto


def _named(graph):
    from dataclasses import replace

    return replace(graph, name="llama_step")


def _ort_allows(backend):
    """Fused ONNX operators only where ONNX Runtime's CPU provider runs them (its support table)."""
    import accel

    try:  # found through the entry point, like any backend: accel/ names no concrete one
        ort_cpu = accel.get_backend("onnxruntime:cpu")
    except accel.AccelError:  # onnxruntime absent: trust the ONNX standard
        return lambda op, dtype: True
    return lambda op, dtype: dtype is None or ort_cpu.supports(op, dtype)


def verify(model, model_proto, step: str, *, batch: int, prefill_len: int, max_seq: int) -> float:
    """Run the exported step in ONNX Runtime and on the reference backend: max |logit diff|."""
    import numpy as np

    import accel
    from accel import ops
    from accel.models import KVCache, forward

    ref = accel.reference_backend()
    params = {k: v.to(ref) for k, v in model.params.items()}
    rng = np.random.default_rng(0)
    t = prefill_len if step == "prefill" else 1
    start = 0 if step == "prefill" else prefill_len % max_seq
    ids = rng.integers(0, model.config.vocab_size, (batch, t)).astype(np.int64)
    cache = KVCache.for_config(model.config, batch, max_seq, model.dtype, ref)
    if step == "decode":  # a cache with history, so attention reads earlier positions
        for layer in range(model.config.num_hidden_layers):
            for buf in (cache.k[layer], cache.v[layer]):
                buf.data = (rng.standard_normal(buf.shape) * 0.5).astype(buf.dtype.numpy)
    feeds = {"input_ids": ids, "positions": np.arange(start, start + t, dtype=np.int64)}
    for i in range(model.config.num_hidden_layers):
        feeds[f"past_key.{i}"] = np.array(cache.k[i].numpy())
        feeds[f"past_value.{i}"] = np.array(cache.v[i].numpy())
    session = accel.get_backend("onnxruntime:cpu").new_session(
        model_proto, [accel.as_dtype(model.dtype)] * len(model_proto.graph.output))
    got = session(*[feeds[i.name] for i in session.session.get_inputs()])
    want = forward(params, model.config, accel.from_numpy(ids, ref),
                   accel.from_numpy(feeds["positions"], ref), cache)
    expected = {"logits": want}
    for i in range(model.config.num_hidden_layers):
        expected[f"present_key.{i}"], expected[f"present_value.{i}"] = cache.k[i], cache.v[i]
    return max(float(np.max(np.abs(np.asarray(g, np.float64) - np.asarray(expected[name].numpy(), np.float64))))
               for name, g in zip(session.output_names, got))


_WRITABLE_HINT = "pass --out a file path in a folder you can write to (it is created if missing)"


def _require_writable(out: str) -> None:
    """Refuse an --out that cannot be written (a directory, a read-only or impossible folder)."""
    if os.path.isdir(out):
        raise AccelError(f"--out {out} is a directory", hint="name a file, e.g. --out model.onnx")
    folder = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except (FileExistsError, NotADirectoryError):
        raise AccelError(f"cannot write {out}: part of its folder path {folder} is a file",
                         hint=_WRITABLE_HINT) from None
    except OSError as exc:
        raise AccelError(f"cannot write {out}: {exc.strerror or exc} ({folder})", hint=_WRITABLE_HINT) from None


def run(args) -> int:
    import onnx

    import accel
    from accel.models import bundled_path, load_pretrained

    path = args.model or bundled_path()
    steps = [args.step] if args.step else list(STEPS)
    stem, ext = os.path.splitext(args.out)
    outs = {step: args.out if args.step else f"{stem}_{step}{ext or '.onnx'}" for step in steps}
    for out in outs.values():  # before the minutes of tracing, not after
        _require_writable(out)
    model = load_pretrained(path, backend=accel.reference_backend(), dtype=args.dtype)
    for step in steps:
        out = outs[step]
        proto = export_step(model, step, batch=args.batch, prefill_len=args.prefill_len,
                            max_seq=args.max_seq, fused=not args.no_fused)
        large = proto.ByteSize() > 2 ** 31 - 1024  # protobuf's 2 GB limit: weights go beside it
        try:
            onnx.save_model(proto, out, save_as_external_data=large,
                            location=os.path.basename(out) + ".data" if large else None)
        except OSError as exc:
            raise AccelError(f"cannot write {out}: {exc.strerror or exc}", hint=_WRITABLE_HINT) from None
        ops_used = sorted({n.op_type for n in proto.graph.node})
        print(f"wrote {out}: {step} step, {len(proto.graph.node)} ONNX nodes, opset "
              f"{proto.opset_import[0].version}, ops {', '.join(ops_used)}")
        if not args.no_verify:
            try:
                diff = verify(model, proto, step, batch=args.batch, prefill_len=args.prefill_len,
                              max_seq=args.max_seq)
            except ImportError:
                print("  (onnxruntime is not installed: not verified)")
                continue
            print(f"  onnxruntime vs {accel.reference_backend().spec}: max |difference| {diff:.3g} "
                  f"(logits and caches)")
            tolerance = 1e-3 if model.dtype.itemsize >= 4 else 5e-2
            if not diff <= tolerance:
                print("accel: error: the exported model disagrees with the reference backend",
                      file=sys.stderr)
                return 1
    return 0


__all__ = ["export_step", "verify", "register", "run"]
