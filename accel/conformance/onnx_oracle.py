"""ONNX's own node test cases as an external oracle.

`onnx.backend.test.case.node.collect_testcases()` builds ONNX's reference cases at run time
(inputs, attributes and expected outputs from ONNX's own numpy implementations). Every case whose
operator has an accel counterpart runs through accel on a backend and is compared with ONNX's
expected outputs at rtol 1e-3 / atol 1e-7 (the ONNX backend test defaults). `ADAPTERS` maps each
ONNX operator to accel, translating attribute conventions in one place; a case whose semantics
accel does not declare is skipped with the reason (`python -m accel.conformance.onnx_oracle`
prints the mapping, the counts and the reasons).
"""
from __future__ import annotations

import argparse
import functools
import sys
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

import accel
from accel import ops
from accel.core import dtypes as dt
from accel.core.errors import AccelError, UnsupportedError

RTOL, ATOL = 1e-3, 1e-7


class Skip(Exception):
    """The ONNX case uses semantics accel does not declare."""


@dataclass(frozen=True)
class OracleRow:
    name: str
    onnx_op: str
    accel_op: str
    status: str          # pass, fail, skip, unsupported
    reason: str = ""


# --- reading ONNX cases ----------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def onnx_cases() -> tuple:
    """Single-node ONNX test cases (the expanded function variants are graphs of many nodes)."""
    import onnx.backend.test.case.node as node_cases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        found = node_cases.collect_testcases()
    return tuple(c for c in found if c.kind == "node" and len(c.model.graph.node) == 1)


def _array(value):
    from onnx import TensorProto, numpy_helper

    if isinstance(value, TensorProto):
        return numpy_helper.to_array(value)
    return np.asarray(value)


def _attrs(node) -> dict:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _opset(case) -> int:
    return max((o.version for o in case.model.opset_import if o.domain in ("", "ai.onnx")), default=0)


# --- conversions ---------------------------------------------------------------------------------
def _accel_dtype(array: np.ndarray):
    try:
        return accel.as_dtype(array.dtype)
    except AccelError:
        raise Skip(f"dtype {array.dtype} is not an accel dtype") from None


def _onnx_type_to_accel(elem_type: int):
    from onnx import helper

    np_type = helper.tensor_dtype_to_np_dtype(elem_type)
    try:
        return accel.as_dtype(np_type)
    except AccelError:
        raise Skip(f"ONNX type {elem_type} ({np_type}) is not an accel dtype") from None


class Call:
    """Helpers for one case: inputs as backend tensors, attributes with defaults."""

    def __init__(self, backend, node, inputs: list, attrs: dict, opset: int):
        self.backend, self.node, self.inputs, self.attrs, self.opset = backend, node, inputs, attrs, opset

    def t(self, i: int):
        x = self.inputs[i]
        if x is None:
            return None
        _accel_dtype(x)
        return accel.from_numpy(np.array(x, order="C"), backend=self.backend)

    def ints(self, i: int):
        x = self.inputs[i] if i < len(self.inputs) else None
        return None if x is None else [int(v) for v in np.asarray(x).reshape(-1)]

    def attr(self, name: str, default=None):
        return self.attrs.get(name, default)


def _unary(op):
    return lambda c: [op(c.t(0))]


def _binary(op, *, float_only=False):
    def run(c):
        if float_only and not all(np.asarray(x).dtype.kind == "f" or _accel_dtype(x).is_floating for x in c.inputs):
            raise Skip(f"{c.node.op_type} on integers: ONNX keeps the integer type, accel's {op.name} gives floats")
        if len({np.asarray(x).dtype for x in c.inputs}) > 1 and op is ops.pow:
            if not _accel_dtype(c.inputs[0]).is_floating:
                raise Skip("Pow with an integer base: ONNX keeps the base's type, accel promotes")
        return [op(c.t(0), c.t(1))]
    return run


def _variadic(op):
    def run(c):
        if len(c.inputs) < 2:
            raise Skip(f"{c.node.op_type} with one input is an identity; accel's {op.name} takes two")
        out = c.t(0)
        for i in range(1, len(c.inputs)):
            out = op(out, c.t(i))
        return [out]
    return run


def _cast(c):
    target = _onnx_type_to_accel(c.attr("to"))
    source = _accel_dtype(c.inputs[0])
    saturate = bool(c.attr("saturate", 1)) if target in dt.FLOAT8_DTYPES else False
    if source.is_floating and not target.is_floating and target is not accel.bool_:
        raise Skip("float to integer: ONNX leaves out-of-range and NaN undefined")
    return [ops.cast(c.t(0), target, saturate=saturate)]


def _range(c):
    start, limit, delta = (np.asarray(x).item() for x in c.inputs)
    dtype = _accel_dtype(c.inputs[0])
    return [ops.arange(start, limit, delta, dtype=dtype, backend=c.backend)]


def _reduce(op):
    def run(c):
        keep = bool(c.attr("keepdims", 1))
        axes = c.attr("axes")
        if axes is None and len(c.inputs) > 1:
            axes = c.ints(1)
        if not axes:
            if c.attr("noop_with_empty_axes", 0):
                raise Skip("noop_with_empty_axes=1 (an identity) has no accel counterpart")
            axes = None
        x = c.t(0)
        if x.dtype not in op.dtypes:
            raise Skip(f"{c.node.op_type} on {x.dtype.name}: accel's {op.name} declares "
                       f"{', '.join(d.name for d in op.dtypes)} and refuses the rest")
        if axes is not None and any(x.shape[a] == 0 for a in axes) and op is not ops.sum:
            raise Skip("reducing an empty axis: ONNX defines an identity value, accel rejects it")
        if axes is None and x.size == 0 and op is not ops.sum:
            raise Skip("reducing an empty tensor: ONNX defines an identity value, accel rejects it")
        return [op(x, tuple(axes) if axes is not None else None, keep)]
    return run


def _argmax(c):
    if c.attr("select_last_index", 0):
        raise Skip("select_last_index=1: accel's argmax returns the first maximum")
    return [ops.argmax(c.t(0), c.attr("axis", 0), bool(c.attr("keepdims", 1)))]


def _reshape(c):
    x = c.t(0)
    shape = c.ints(1)
    if not c.attr("allowzero", 0):  # ONNX: a 0 copies the input's dim
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return [ops.reshape(x, tuple(shape))]


def _transpose(c):
    x = c.t(0)
    perm = c.attr("perm") or list(reversed(range(x.ndim)))
    return [ops.permute(x, tuple(perm))]


def _expand(c):
    x = c.t(0)
    target = np.broadcast_shapes(x.shape, tuple(c.ints(1)))  # ONNX Expand broadcasts both ways
    return [ops.broadcast_to(x, target)]


def _concat(c):
    return [ops.concat([c.t(i) for i in range(len(c.inputs))], c.attr("axis"))]


def _slice(c):
    x = c.t(0)
    starts, ends = c.ints(1), c.ints(2)
    axes = c.ints(3) or list(range(len(starts)))
    steps = c.ints(4) or [1] * len(starts)
    if any(s < 0 for s in steps):
        raise Skip("negative slice steps: accel's slice takes positive steps (reverse with gather)")
    return [ops.slice(x, tuple(axes), tuple(starts), tuple(ends), tuple(steps))]


def _gather(c):
    idx = np.asarray(c.inputs[1])
    axis = c.attr("axis", 0)
    if (idx < 0).any():
        raise Skip("negative indices: accel's gather takes indices in [0, n)")
    return [ops.gather(c.t(0), c.t(1), axis)]


def _gemm(c):
    if c.attr("alpha", 1.0) != 1.0 or c.attr("beta", 1.0) != 1.0:
        raise Skip("Gemm with alpha or beta != 1 (accel's linear is x @ W.T + b)")
    a, b = c.t(0), c.t(1)
    if c.attr("transA", 0):
        a = ops.permute(a, (1, 0))
    weight = b if c.attr("transB", 0) else ops.permute(b, (1, 0))       # linear wants (N, K)
    bias = np.asarray(c.inputs[2]) if len(c.inputs) > 2 and c.inputs[2] is not None else None
    if bias is not None and bias.shape not in ((weight.shape[0],), (1, weight.shape[0])):
        raise Skip("Gemm with a C that is not a per-output bias")
    if bias is not None:
        bias = accel.from_numpy(np.array(bias.reshape(-1), order="C"), backend=c.backend)
    return [ops.linear(a, weight, bias)]


def _softmax(op):
    def run(c):
        if c.opset < 13:
            raise Skip("opset < 13 Softmax flattens to 2-d first; accel normalises one axis")
        return [op(c.t(0), c.attr("axis", -1))]
    return run


def _gelu(c):
    return [ops.gelu(c.t(0), c.attr("approximate", "none"))]


def _norm(op):
    def run(c):
        x = c.t(0)
        axis = c.attr("axis", -1)
        if axis % max(x.ndim, 1) != x.ndim - 1:
            raise Skip(f"normalising axes {axis}.. : accel's {op.name} normalises the last axis only")
        if c.attr("stash_type", 1) != 1:
            raise Skip("stash_type other than float32")
        eps = c.attr("epsilon", 1e-5)
        if op is ops.layer_norm:
            bias = c.t(2) if len(c.inputs) > 2 else None
            return [ops.layer_norm(x, c.t(1), bias, eps)]
        return [ops.rms_norm(x, c.t(1), eps)]
    return run


def _rope(c):
    if c.attr("interleaved", 0):
        raise Skip("interleaved rotary embedding: accel's rope is the rotate-half (Llama) convention")
    x = np.asarray(c.inputs[0])
    cos_cache, sin_cache = np.asarray(c.inputs[1]), np.asarray(c.inputs[2])
    positions = c.inputs[3] if len(c.inputs) > 3 else None
    head = x.shape[-1] if x.ndim == 4 else x.shape[-1] // c.attr("num_heads", 1)
    if c.attr("rotary_embedding_dim", 0) not in (0, head):
        raise Skip("partial rotary_embedding_dim: accel's rope rotates the whole head dim")
    if positions is not None:
        cos_cache, sin_cache = cos_cache[np.asarray(positions)], sin_cache[np.asarray(positions)]  # (B, S, D/2)
    cos = np.concatenate([cos_cache, cos_cache], -1)
    sin = np.concatenate([sin_cache, sin_cache], -1)
    b = accel.from_numpy
    if x.ndim == 4:                                    # (B, H, S, D), as accel's
        return [ops.rope(c.t(0), b(cos[:, None], backend=c.backend), b(sin[:, None], backend=c.backend))]
    bsz, seq, hidden = x.shape                         # 3-d: (B, S, H*D)
    heads = hidden // head
    xt = ops.permute(ops.reshape(c.t(0), (bsz, seq, heads, head)), (0, 2, 1, 3))
    out = ops.rope(xt, b(cos[:, None], backend=c.backend), b(sin[:, None], backend=c.backend))
    return [ops.reshape(ops.permute(out, (0, 2, 1, 3)), (bsz, seq, hidden))]


def _attention(c):
    q, k, v = (np.asarray(c.inputs[i]) for i in range(3))
    if q.ndim != 4:
        raise Skip("3-d packed-head attention: accel's attention takes (B, H, T, D)")
    if len(c.inputs) > 4 and any(x is not None for x in c.inputs[4:]):
        raise Skip("past_key/past_value inputs: accel uses a static KV cache instead")
    if c.attr("softcap", 0.0) or c.attr("qk_matmul_output_mode", 0):
        raise Skip("softcap / qk_matmul_output_mode: not part of accel's attention")
    extra = sorted(set(c.attrs) - {"is_causal", "scale", "q_num_heads", "kv_num_heads", "softcap",
                                   "qk_matmul_output_mode"})
    if extra:
        raise Skip(f"attention attributes accel does not declare ({', '.join(extra)}: sliding windows)")
    if len(c.node.output) > 1 and any(c.node.output[1:]):
        raise Skip("extra outputs (present key/value, qk matmul)")
    mask = c.inputs[3] if len(c.inputs) > 3 else None
    if mask is not None and np.asarray(mask).dtype != np.bool_:
        raise Skip("an additive float mask: accel's attention takes a bool mask")
    return [ops.attention(c.t(0), c.t(1), c.t(2), c.t(3) if mask is not None else None,
                          bool(c.attr("is_causal", 0)), c.attr("scale"))]


def _cross_entropy(c):
    if len(c.inputs) > 2 and c.inputs[2] is not None:
        raise Skip("per-class weights: accel's cross_entropy has none")
    scores = c.t(0)
    if scores.ndim > 2:                               # ONNX (N, C, d1, ...) -> accel (N, d1, ..., C)
        scores = ops.permute(scores, (0, *range(2, scores.ndim), 1))
    ignore = c.attr("ignore_index")
    return [ops.cross_entropy(scores, c.t(1), -100 if ignore is None else ignore, c.attr("reduction", "mean"))]


def _logical(op):
    return _unary(op) if len(op.inputs) == 1 else _binary(op)


def _float_binary(op):
    return _binary(op, float_only=all(d.is_floating for d in op.dtypes))


# How an ONNX case runs through accel, by the op's case family; the ONNX operator name is the
# op's own (`op.onnx`), so the mapping is declared once, with the op.
_BY_FAMILY = {
    "unary": _unary, "binary": _float_binary, "compare": _binary, "logical": _logical,
    "where": lambda op: lambda c: [ops.where(c.t(0), c.t(1), c.t(2))],
    "cast": lambda op: _cast, "arange": lambda op: _range, "reduce": _reduce,
    "argmax": lambda op: _argmax, "reshape": lambda op: _reshape, "permute": lambda op: _transpose,
    "broadcast": lambda op: _expand, "concat": lambda op: _concat, "slice": lambda op: _slice,
    "gather": lambda op: _gather, "matmul": lambda op: lambda c: [ops.matmul(c.t(0), c.t(1))],
    "linear": lambda op: _gemm, "softmax": _softmax, "norm": _norm, "rope": lambda op: _rope,
    "attention": lambda op: _attention, "cross_entropy": lambda op: _cross_entropy,
}
# Where ONNX's operator differs from the family's usual shape (Max/Min take any number of
# inputs; Gelu names its approximation differently).
_SPECIAL = {ops.maximum: _variadic, ops.minimum: _variadic, ops.gelu: lambda op: _gelu}


def _adapters() -> dict:
    """ONNX operator -> (accel op, adapter): every op with an ONNX name and a way to run its cases."""
    out = {}
    for op in ops.ALL_OPS:
        make = _SPECIAL.get(op) or _BY_FAMILY.get((op.cases or {}).get("family"))
        if op.onnx and make is not None:
            out[op.onnx] = (op, make(op))
    return out


ADAPTERS = _adapters()


# --- running and comparing -----------------------------------------------------------------------
def rtol_for(dtype) -> float:
    """1e-3, or the output format's own elementwise rtol where that is coarser: ONNX's expected
    bfloat16/float8 outputs are themselves rounded, and one bfloat16 ulp is 3.9e-3 relative
    (measured: test_attention_4d_causal_bf16 gives 0.5 where ONNX has 0.498046875, one ulp)."""
    from accel.conformance.tolerances import ELEMENTWISE

    return max(RTOL, ELEMENTWISE.get(dtype.name, (0.0, 0.0))[0])


def compare(actual: np.ndarray, expected: np.ndarray) -> str:
    """'' when `actual` matches ONNX's expected output at rtol 1e-3 / atol 1e-7, else why not."""
    rtol = rtol_for(_accel_dtype(expected))
    if actual.shape != expected.shape:
        return f"shape {list(actual.shape)} != ONNX's {list(expected.shape)}"
    if expected.dtype.kind in "biu" or actual.dtype.kind in "biu":
        bad = actual.astype(np.float64) != expected.astype(np.float64)
        return f"{int(bad.sum())} of {bad.size} elements differ" if bad.any() else ""
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    if (np.isnan(a) != np.isnan(e)).any():
        return "NaN positions differ"
    finite = ~np.isnan(e)
    with np.errstate(invalid="ignore"):
        bad = finite & ~((a == e) | (np.abs(a - e) <= ATOL + rtol * np.abs(e)))
    if bad.any():
        i = np.unravel_index(int(np.argmax(bad)), bad.shape)
        return f"{int(bad.sum())} of {bad.size} elements outside rtol {rtol}/atol {ATOL} (at {tuple(int(j) for j in i)}: {a[i]} vs {e[i]})"
    return ""


def run_case(backend, case) -> OracleRow:
    node = case.model.graph.node[0]
    accel_op, adapter = ADAPTERS[node.op_type]
    inputs, outputs = case.data_sets[0]
    by_name = {vi.name: _array(x) for vi, x in zip(case.model.graph.input, inputs)}
    args = [by_name.get(name) if name else None for name in node.input]
    while args and args[-1] is None:
        args.pop()
    expected = [_array(x) for x in outputs]
    try:
        call = Call(backend, node, args, _attrs(node), _opset(case))
        with np.errstate(all="ignore"):
            got = adapter(call)
        for e in expected[: len(got)]:
            _accel_dtype(e)
    except Skip as why:
        return OracleRow(case.name, node.op_type, accel_op.name, "skip", str(why))
    except UnsupportedError as exc:
        return OracleRow(case.name, node.op_type, accel_op.name, "unsupported", str(exc).split("\n")[0])
    except AccelError as exc:
        return OracleRow(case.name, node.op_type, accel_op.name, "fail", f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    except Exception as exc:  # noqa: BLE001 - a crash is a failure to report, not to stop on
        return OracleRow(case.name, node.op_type, accel_op.name, "fail", f"crash: {type(exc).__name__}: {exc}")
    problems = []
    for i, (out, e) in enumerate(zip(got, expected)):
        actual = accel.asnumpy(out)
        if actual.dtype != e.dtype:
            problems.append(f"output {i} dtype {actual.dtype} != ONNX's {e.dtype}")
            continue
        why = compare(actual, e)
        if why:
            problems.append(f"output {i}: {why}")
    return OracleRow(case.name, node.op_type, accel_op.name, "fail" if problems else "pass", "; ".join(problems))


def run_oracle(backend) -> list[OracleRow]:
    backend = accel.get_backend(backend)
    rows = []
    with accel.strict():
        for case in onnx_cases():
            if case.model.graph.node[0].op_type in ADAPTERS:
                rows.append(run_case(backend, case))
    return rows


def ran_per_op(rows) -> Counter:
    """accel op -> ONNX cases that ran (passed or failed) for it."""
    return Counter(r.accel_op for r in rows if r.status in ("pass", "fail"))


def table(rows) -> str:
    per = defaultdict(Counter)
    for r in rows:
        per[(r.onnx_op, r.accel_op)][r.status] += 1
    lines = [f"{'ONNX op':<26} {'accel op':<15} {'ran':>4} {'pass':>5} {'fail':>5} {'skip':>5} {'unsup':>6}"]
    for (onnx_op, accel_op), c in sorted(per.items()):
        lines.append(f"{onnx_op:<26} {accel_op:<15} {c['pass'] + c['fail']:>4} {c['pass']:>5} {c['fail']:>5} "
                     f"{c['skip']:>5} {c['unsupported']:>6}")
    ran = ran_per_op(rows)
    lines.append(f"{sum(ran.values())} ONNX cases ran for {len(ran)} accel ops; "
                 f"{sum(1 for r in rows if r.status == 'skip')} skipped")
    reasons = Counter((r.onnx_op, r.reason) for r in rows if r.status == "skip")
    if reasons:
        lines += ["", "skipped (semantics accel does not declare):"]
        lines += [f"  {op}: {why} ({n})" for (op, why), n in sorted(reasons.items())]
    bad = [r for r in rows if r.status == "fail"]
    if bad:
        lines += ["", "failures:"] + [f"  {r.name} ({r.onnx_op} -> {r.accel_op}): {r.reason}" for r in bad]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m accel.conformance.onnx_oracle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="numpy")
    args = parser.parse_args(argv)
    rows = run_oracle(args.backend)
    print(table(rows))
    return 1 if any(r.status == "fail" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
