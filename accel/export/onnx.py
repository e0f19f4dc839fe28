"""accel graph -> ONNX model (opset 23), for ONNX Runtime and for vendor toolchains.

Each op that ONNX can express has a lowering here: primitives map to one or a few ONNX nodes,
and some composites to ONNX's own fused operators (Softmax, LayerNormalization,
RMSNormalization, Attention, Gelu). A composite without a lowering (or not wanted: `fused=`) is
expanded into primitives by `accel.graph.trace.lower` before export. ONNX's RotaryEmbedding takes
half-width cos/sin caches, i.e. it assumes the tables are duplicated halves; accel's `rope` accepts
any cos/sin, so rope is exported through its decomposition (Slice/Neg/Concat/Mul/Add).

Numerics follow the reference backend: float16/bfloat16/float8 math runs in float32 between two
Casts (one rounding at the end), and the semantics ONNX does not share are spelled out with extra
nodes (float -> bool truncates first, an attention row with no allowed key gives zeros). Graph
constants become initializers.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from accel.core import dtypes as dt
from accel import ops
from accel.core.errors import AccelError, UnsupportedError
from accel.graph.ir import Graph
from accel.core.spec import TensorSpec

OPSET = 23
IR_VERSION = 10  # what onnxruntime 1.18+ reads; opset 23 needs IR >= 10


def onnx_type(dtype: dt.DType) -> int:
    from onnx import TensorProto as T

    return {dt.float64: T.DOUBLE, dt.float32: T.FLOAT, dt.float16: T.FLOAT16,
            dt.bfloat16: T.BFLOAT16, dt.float8_e4m3fn: T.FLOAT8E4M3FN,
            dt.float8_e5m2: T.FLOAT8E5M2, dt.int8: T.INT8, dt.int32: T.INT32,
            dt.int64: T.INT64, dt.bool_: T.BOOL}[dtype]


class Builder:
    """Collects ONNX nodes and initializers with fresh names."""

    def __init__(self):
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0
        self._ints: dict[tuple, str] = {}

    def fresh(self, hint: str = "t") -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, array, hint: str = "const", name: str | None = None) -> str:
        from onnx import helper

        array = np.asarray(array, order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
        name = name or self.fresh(hint)
        dtype = dt.from_numpy_dtype(array.dtype)
        self.initializers.append(helper.make_tensor(name, onnx_type(dtype), array.shape,
                                                    array.tobytes(), raw=True))
        return name

    def ints(self, values) -> str:
        key = tuple(int(v) for v in values)
        if key not in self._ints:
            self._ints[key] = self.const(np.asarray(key, dtype=np.int64), "ints")
        return self._ints[key]

    def scalar(self, value, dtype: dt.DType) -> str:
        return self.const(np.asarray(value, dtype=np.float32 if dtype.is_floating else dtype.numpy)
                          .astype(dtype.numpy), "scalar")

    def op(self, op_type: str, inputs, outputs: int = 1, **attrs):
        from onnx import helper

        names = [self.fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, ["" if i is None else i for i in inputs], names,
                                           **{k: v for k, v in attrs.items() if v is not None}))
        return names[0] if outputs == 1 else names

    def cast(self, x: str, dtype: dt.DType, **attrs) -> str:
        return self.op("Cast", [x], to=onnx_type(dtype), **attrs)


# --- lowerings: (builder, input names, input specs, attrs, output spec) -> output name ------
Lowering = Callable[[Builder, list, list, dict, TensorSpec], str]
LOWERINGS: dict = {}


def lowering(*op_list):
    def register(fn):
        for op in op_list:
            LOWERINGS[op] = fn
        return fn
    return register


def _low(spec) -> bool:
    return spec is not None and spec.dtype in dt.LOW_PRECISION


def _in_f32(b: Builder, specs: list, names: list, body: Callable[..., str], out_dtype: dt.DType) -> str:
    """Run `body` on float32 copies of low-precision inputs and round the result once."""
    if not any(_low(s) for s in specs):
        return body(*names)
    up = [b.cast(n, dt.float32) if _low(s) else n for n, s in zip(names, specs)]
    y = body(*up)
    if out_dtype in dt.FLOAT8_DTYPES:
        return _to_float8(b, y, out_dtype)
    return b.cast(y, out_dtype) if out_dtype in dt.LOW_PRECISION else y


def _to_float8(b: Builder, x32: str, target: dt.DType) -> str:
    """float32 -> float8 with the reference's overflow rule (e4m3fn: NaN, e5m2: +-inf).

    ONNX Runtime 1.32's Cast gets the edges wrong (e4m3fn: +-480 -> +-448; e5m2: |x| in
    [61440, 65536) -> NaN), so overflow is decided here: past the midpoint above the largest
    finite value (464 for e4m3fn, 61440 for e5m2, ties rounding to the even neighbour)."""
    y = b.cast(x32, target, saturate=0)
    magnitude = b.op("Abs", [x32])
    if target is dt.float8_e4m3fn:
        over = b.op("Greater", [magnitude, b.scalar(464.0, dt.float32)])
        special = b.scalar(np.nan, dt.float16)
    else:
        over = b.op("GreaterOrEqual", [magnitude, b.scalar(61440.0, dt.float32)])
        special = b.op("Where", [b.op("Less", [x32, b.scalar(0.0, dt.float32)]),
                                 b.scalar(-np.inf, dt.float16), b.scalar(np.inf, dt.float16)])
    # the finite result stays in Where's second branch: ONNX Runtime keeps -0.0 only there
    wide = b.op("Where", [over, special, b.cast(y, dt.float16)])
    return b.cast(wide, target, saturate=0)


def _where_float(b: Builder, c: str, x: str, y: str, dtype: dt.DType) -> str:
    """Where that keeps -0.0. ONNX Runtime 1.32 returns +0.0 for a selected -0.0 (from the first
    branch, and from either branch when one is broadcast from a scalar), so the positions whose
    selected value is -0.0 (1/v < 0 at v == 0) get |z| * -1 and the rest z * 1."""
    z = b.op("Where", [c, x, y])
    zero, one = b.scalar(0, dtype), b.scalar(1, dtype)

    def negative_zero(v):
        return b.op("And", [b.op("Equal", [v, zero]), b.op("Less", [b.op("Div", [one, v]), zero])])
    fix = b.op("Or", [b.op("And", [c, negative_zero(x)]),
                      b.op("And", [b.op("Not", [c]), negative_zero(y)])])
    magnitude = b.op("Where", [fix, b.op("Abs", [z]), z])
    return b.op("Mul", [magnitude, b.op("Where", [fix, b.scalar(-1, dtype), one])])


def _nan_if_any(b: Builder, x: str, y: str, axes_name, keep: int, dtype: dt.DType) -> str:
    """y, but NaN where the reduced slice of x holds a NaN (ONNX Runtime's ReduceMax and
    LogSoftmax skip NaN; numpy propagates it)."""
    flags = b.cast(b.op("IsNaN", [x]), dt.int32)
    any_nan = b.cast(b.op("ReduceMax", [flags, axes_name], keepdims=keep), dt.bool_)
    return b.op("Where", [any_nan, b.scalar(np.nan, dtype), y])


# Data movement on dtypes ONNX Runtime's CPU kernels lack, through a wider type that holds every
# value exactly (float8 in float16, bfloat16 in float32, bool in int8), converted back after.
_CARRIER = {dt.float8_e4m3fn: dt.float16, dt.float8_e5m2: dt.float16, dt.bfloat16: dt.float32}


def _carried(b: Builder, specs: list, names: list, positions, body: Callable[..., str],
             out_dtype: dt.DType, carrier: dict = _CARRIER) -> str:
    wide = carrier.get(out_dtype)
    if wide is None:
        return body(*names)
    moved = [b.cast(n, wide) if i in positions and n is not None else n for i, n in enumerate(names)]
    y = body(*moved)
    return b.cast(y, out_dtype, saturate=0 if out_dtype in dt.FLOAT8_DTYPES else None)


def _simple(onnx_op: str, math: bool = True, **fixed) -> Lowering:
    def lower(b, names, specs, attrs, out):
        if math:
            return _in_f32(b, specs, names, lambda *xs: b.op(onnx_op, list(xs), **fixed), out.dtype)
        return b.op(onnx_op, names, **fixed)
    return lower


def _compare(onnx_op: str) -> Lowering:
    def lower(b, names, specs, attrs, out):
        return b.op(onnx_op, [b.cast(x, dt.float32) if _low(sp) else b.cast(x, dt.int32) if sp.dtype is dt.bool_
                              else x for x, sp in zip(names, specs)])
    return lower


# An op whose ONNX operator (`op.onnx`, the one place the name lives) takes the same inputs is
# lowered by its conformance family; ops that need more get an explicit lowering below.
_BY_FAMILY: dict[str, Callable[[str], Lowering]] = {
    "unary": _simple, "binary": _simple, "matmul": _simple, "compare": _compare,
    "logical": lambda onnx_op: _simple(onnx_op, math=False),
}


def _where(b, names, specs, attrs, out):
    work = _CARRIER.get(out.dtype, out.dtype)
    if work.is_floating:
        body = lambda c, x, y: _where_float(b, c, x, y, work)  # noqa: E731
    else:
        body = lambda c, x, y: b.op("Where", [c, x, y])  # noqa: E731
    return _carried(b, specs, names, (1, 2), body, out.dtype, {**_CARRIER, dt.bool_: dt.int8})


LOWERINGS[ops.where] = _where


@lowering(ops.ne)
def _ne(b, names, specs, attrs, out):
    return b.op("Not", [LOWERINGS[ops.eq](b, names, specs, attrs, out)])


@lowering(ops.rsqrt)
def _rsqrt(b, names, specs, attrs, out):
    return _in_f32(b, specs, names, lambda x: b.op("Reciprocal", [b.op("Sqrt", [x])]), out.dtype)


@lowering(ops.full)
def _full(b, names, specs, attrs, out):
    return b.const(np.full(out.shape, attrs["value"], dtype=np.float64 if out.dtype.is_floating
                           else out.dtype.numpy).astype(out.dtype.numpy), "full")


@lowering(ops.arange)
def _arange(b, names, specs, attrs, out):
    host = np.arange(attrs["start"], attrs["stop"], attrs["step"],
                     dtype=np.float64 if out.dtype.is_floating else np.int64)
    return b.const(host.astype(out.dtype.numpy), "arange")


@lowering(ops.cast)
def _cast(b, names, specs, attrs, out):
    (x,), (src,) = names, specs
    target = out.dtype
    if src.dtype.is_floating and target.kind in "ib":
        if _low(src):
            x = b.cast(x, dt.float32)
        # Truncate toward zero before converting (0.5 -> False, -1.7 -> -1).
        x = b.op("Where", [b.op("Less", [x, b.scalar(0, dt.float32 if _low(src) else src.dtype)]),
                           b.op("Ceil", [x]), b.op("Floor", [x])])
        if target is dt.bool_:
            zero = b.scalar(0, dt.float32 if _low(src) else src.dtype)
            return b.op("Not", [b.op("Equal", [x, zero])])
        return b.cast(x, target)
    if target in dt.FLOAT8_DTYPES:
        # ml_dtypes converts float64 through float32 (checked bit for bit); so does this.
        x = x if src.dtype is dt.float32 else b.cast(x, dt.float32)
        if attrs.get("saturate") and src.dtype.is_floating:
            top = 57344.0 if target is dt.float8_e5m2 else 448.0
            x = b.op("Clip", [x, b.scalar(-top, dt.float32), b.scalar(top, dt.float32)])
        return _to_float8(b, x, target)
    return b.cast(x, target)


def _reduce(onnx_op: str) -> Lowering:
    def lower(b, names, specs, attrs, out):
        (x,), (spec,) = names, specs
        axis = attrs.get("axis")
        keep = int(bool(attrs.get("keepdims", False)))
        axes_name = None
        if axis is not None:
            axes = (axis,) if isinstance(axis, int) else tuple(axis)
            if not axes:
                return b.op("Identity", [x])
            axes_name = b.ints([a % max(spec.ndim, 1) for a in axes])
        if spec.ndim == 0:
            return b.op("Identity", [x])
        if spec.dtype is dt.int8:  # no int8 ReduceSum kernel: int32, wrapped back like numpy
            return _carried(b, [spec], [x], (0,), lambda v: b.op(onnx_op, [v, axes_name], keepdims=keep),
                            out.dtype, {dt.int8: dt.int32})
        def body(v):
            y = b.op(onnx_op, [v, axes_name], keepdims=keep)
            if onnx_op == "ReduceMax" and spec.dtype.is_floating:
                y = _nan_if_any(b, v, y, axes_name, keep, dt.float32 if _low(spec) else spec.dtype)
            return y
        return _in_f32(b, [spec], [x], body, out.dtype)
    return lower


for _op in (ops.sum, ops.max, ops.mean):
    LOWERINGS[_op] = _reduce(_op.onnx)


@lowering(ops.argmax)
def _argmax(b, names, specs, attrs, out):
    (x,), (spec,) = names, specs
    if spec.ndim == 0:
        return b.const(np.asarray(0, np.int64), "zero")
    if _low(spec):
        x = b.cast(x, dt.float32)
    axis, keep = attrs["axis"] % spec.ndim, int(bool(attrs["keepdims"]))
    plain = b.op("ArgMax", [x], axis=axis, keepdims=keep, select_last_index=0)
    if not spec.dtype.is_floating:
        return plain
    # NaN counts as the maximum (first NaN wins), as numpy/torch/jax; ONNX leaves it open.
    nan = b.op("IsNaN", [x])
    first_nan = b.op("ArgMax", [b.cast(nan, dt.int32)], axis=axis, keepdims=keep, select_last_index=0)
    any_nan = b.op("ReduceMax", [b.cast(nan, dt.int32), b.ints([axis])], keepdims=keep)
    return b.op("Where", [b.cast(any_nan, dt.bool_), first_nan, plain])


@lowering(ops.reshape)
def _reshape(b, names, specs, attrs, out):
    return b.op("Reshape", [names[0], b.ints(out.shape)], allowzero=1)


@lowering(ops.permute)
def _permute(b, names, specs, attrs, out):
    if not attrs["axes"]:
        return b.op("Identity", [names[0]])
    return b.op("Transpose", [names[0]], perm=list(attrs["axes"]))


@lowering(ops.broadcast_to)
def _broadcast(b, names, specs, attrs, out):
    return _carried(b, specs, names, (0,), lambda x: b.op("Expand", [x, b.ints(attrs["shape"])]), out.dtype)


@lowering(ops.concat)
def _concat(b, names, specs, attrs, out):
    wide = _CARRIER.get(out.dtype)
    xs = [b.cast(n, wide) for n in names[0]] if wide else list(names[0])
    y = b.op("Concat", xs, axis=attrs["axis"])
    return b.cast(y, out.dtype, saturate=0 if out.dtype in dt.FLOAT8_DTYPES else None) if wide else y


@lowering(ops.slice)
def _slice(b, names, specs, attrs, out):
    steps = attrs.get("steps") or (1,) * len(attrs["axes"])
    return _carried(b, specs, names, (0,), lambda x: b.op(
        "Slice", [x, b.ints(attrs["starts"]), b.ints(attrs["stops"]), b.ints(attrs["axes"]), b.ints(steps)]),
        out.dtype)


@lowering(ops.gather)
def _gather(b, names, specs, attrs, out):
    return _carried(b, specs, names, (0,), lambda x, i: b.op("Gather", [x, i], axis=attrs["axis"]), out.dtype)


@lowering(ops.embedding)
def _embedding(b, names, specs, attrs, out):
    return _carried(b, specs, names, (0,), lambda x, i: b.op("Gather", [x, i], axis=0), out.dtype)


def _scatter_indices(b, index: str, values: str, rank: int, axis: int) -> str:
    """A 1-d index along `axis` broadcast to the values' shape (what ScatterElements takes)."""
    shape = [1] * rank
    shape[axis] = -1
    return b.op("Expand", [b.op("Reshape", [index, b.ints(shape)]), b.op("Shape", [values])])


@lowering(ops.index_copy)
def _index_copy(b, names, specs, attrs, out):
    x, index, values = names
    axis = attrs["axis"]
    indices = _scatter_indices(b, index, values, specs[0].ndim, axis)
    return _carried(b, specs, names, (0, 2), lambda xx, _, vv: b.op(
        "ScatterElements", [xx, indices, vv], axis=axis), out.dtype)


@lowering(ops.index_add)
def _index_add(b, names, specs, attrs, out):
    x, index, values = names
    axis = attrs["axis"]
    indices = _scatter_indices(b, index, values, specs[0].ndim, axis)
    return _in_f32(b, specs, names, lambda xx, _, vv: b.op(
        "ScatterElements", [xx, indices, vv], axis=axis, reduction="add"), out.dtype)


def _softmax(onnx_op: str) -> Lowering:
    def lower(b, names, specs, attrs, out):
        def body(x):
            y = b.op(onnx_op, [x], axis=attrs["axis"])
            return _nan_if_any(b, x, y, b.ints([attrs["axis"]]), 1,
                               dt.float32 if _low(specs[0]) else specs[0].dtype)
        return _in_f32(b, specs, names, body, out.dtype)
    return lower


for _op in (ops.softmax, ops.log_softmax):
    LOWERINGS[_op] = _softmax(_op.onnx)


@lowering(ops.silu)
def _silu(b, names, specs, attrs, out):
    return _in_f32(b, specs, names, lambda x: b.op("Mul", [x, b.op("Sigmoid", [x])]), out.dtype)


@lowering(ops.gelu)
def _gelu(b, names, specs, attrs, out):
    return _in_f32(b, specs, names, lambda x: b.op("Gelu", [x], approximate=attrs["approximate"]),
                   out.dtype)


def _ones_like_last(b, x: str, dtype: dt.DType) -> str:
    last = b.op("Slice", [b.op("Shape", [x]), b.ints([-1]), b.ints([2 ** 62])])
    from onnx import helper

    value = helper.make_tensor("value", onnx_type(dtype), [1], np.ones(1, dtype.numpy).tobytes(), raw=True)
    return b.op("ConstantOfShape", [last], value=value)


def _normalized(b, onnx_op: str, x: str, spec, eps, out_dtype: dt.DType) -> str:
    """x normalised over the last axis by `onnx_op` (RMSNormalization, LayerNormalization) with
    unit scale: in float32 for low precision, rounded once to out_dtype, as the decompositions."""
    low = _low(spec)
    work = dt.float32 if low else spec.dtype
    xw = b.cast(x, work) if low else x
    y = b.op(onnx_op, [xw, _ones_like_last(b, xw, work)], axis=-1, epsilon=float(eps), stash_type=1)
    if low:
        y = _to_float8(b, y, out_dtype) if out_dtype in dt.FLOAT8_DTYPES else b.cast(y, out_dtype)
    return y


@lowering(ops.rms_norm)
def _rms_norm(b, names, specs, attrs, out):
    x, weight = names
    # Normalise (in float32 for low precision), round once, then scale, as the decomposition.
    y = _normalized(b, "RMSNormalization", x, specs[0], attrs["eps"], out.dtype)
    if weight is None:
        return y
    return _in_f32(b, [out, specs[1]], [y, weight], lambda p, q: b.op("Mul", [p, q]), out.dtype)


@lowering(ops.layer_norm)
def _layer_norm(b, names, specs, attrs, out):
    x, weight, bias = names
    y = _normalized(b, "LayerNormalization", x, specs[0], attrs["eps"], out.dtype)
    if weight is not None:
        y = _in_f32(b, [out, specs[1]], [y, weight], lambda p, q: b.op("Mul", [p, q]), out.dtype)
    if bias is not None:
        y = _in_f32(b, [out, specs[2]], [y, bias], lambda p, q: b.op("Add", [p, q]), out.dtype)
    return y


@lowering(ops.linear)
def _linear(b, names, specs, attrs, out):
    x, weight, bias = names

    def body(xx, ww, *bb):
        y = b.op("MatMul", [xx, b.op("Transpose", [ww], perm=[1, 0])])
        return b.op("Add", [y, bb[0]]) if bb else y
    present = [(n, s) for n, s in zip(names, specs) if n is not None]
    return _in_f32(b, [s for _, s in present], [n for n, _ in present], body, out.dtype)


@lowering(ops.attention)
def _attention(b, names, specs, attrs, out):
    q, k, v, mask = names

    def allowed_mask(qq, kk):
        allowed = mask
        if attrs.get("causal"):
            t = b.op("Gather", [b.op("Shape", [qq]), b.ints([2])], axis=0)
            s = b.op("Gather", [b.op("Shape", [kk]), b.ints([2])], axis=0)
            zero, one = b.const(np.asarray(0, np.int64)), b.const(np.asarray(1, np.int64))
            rows = b.op("Range", [zero, b.op("Squeeze", [t]), one])
            cols = b.op("Range", [zero, b.op("Squeeze", [s]), one])
            tri = b.op("GreaterOrEqual", [b.op("Unsqueeze", [rows, b.ints([1])]),
                                          b.op("Unsqueeze", [cols, b.ints([0])])])
            allowed = tri if allowed is None else b.op("And", [allowed, tri])
        return allowed

    def body(qq, kk, vv):
        allowed = allowed_mask(qq, kk)
        y = b.op("Attention", [qq, kk, vv] + ([allowed] if allowed is not None else []),
                 scale=None if attrs.get("scale") is None else float(attrs["scale"]))
        if allowed is None:
            return y
        # accel gives zeros for a query row that may attend to nothing (ONNX leaves NaN).
        any_key = b.op("ReduceMax", [b.cast(allowed, dt.int32), b.ints([-1])], keepdims=1)
        zero = b.const(np.zeros((), np.float32 if _low(specs[0]) else specs[0].dtype.numpy), "zero")
        return b.op("Where", [b.cast(any_key, dt.bool_), y, zero])
    return _in_f32(b, specs[:3], [q, k, v], body, out.dtype)


for _op in ops.ALL_OPS:
    _family = (_op.cases or {}).get("family")
    if _op.onnx and _op not in LOWERINGS and _family in _BY_FAMILY:
        LOWERINGS[_op] = _BY_FAMILY[_family](_op.onnx)


def lower_node(b: Builder, op, names: list, specs: list, attrs: dict, out: TensorSpec) -> str:
    fn = LOWERINGS.get(op)
    if fn is None:
        raise UnsupportedError(f"{op.name} has no ONNX lowering",
                               hint="lower the graph with accel.graph.trace.lower so it is expanded first")
    return fn(b, names, specs, attrs, out)


# --- whole graphs ----------------------------------------------------------------------------
def export_policy(allowed: Callable | None = None):
    """Trace lowering policy: keep a composite if it has an ONNX lowering (and `allowed` agrees)."""
    from accel.graph.trace import first_dtype

    def expand(op, args, attrs):
        if op not in LOWERINGS:
            return True
        return allowed is not None and not allowed(op, first_dtype(op, args, attrs))
    return expand


def graph_to_onnx(graph: Graph, *, input_names=None, output_names=None, dynamic: bool = False,
                  doc: str = ""):
    """An ONNX ModelProto computing `graph` (which must be lowered: every node has a lowering).

    `dynamic=True` leaves every dimension symbolic (one model per rank, for eager sessions).
    """
    import onnx
    from onnx import helper

    b = Builder()
    names: dict[int, str] = {}
    input_names = list(input_names or [f"input_{i}" for i in range(len(graph.inputs))])
    for value_id, name in zip(graph.inputs, input_names):
        names[value_id] = name
    for value_id, native in graph.constants.items():
        names[value_id] = b.const(np.asarray(native), "weight")
    for node in graph.nodes:
        if not dynamic and 0 in node.spec.shape:  # an empty result needs no computation (and
            names[node.output] = b.const(np.zeros(node.spec.shape, node.spec.dtype.numpy), "empty")
            continue                              # some ONNX Runtime kernels reject empty inputs)
        if node.op.variadic:
            ins = [[names[r] for r in node.inputs[0]]] + [None if r is None else names[r] for r in node.inputs[1:]]
            in_specs = [[graph.specs[r] for r in node.inputs[0]]] + [
                None if r is None else graph.specs[r] for r in node.inputs[1:]]
        else:
            ins = [None if r is None else names[r] for r in node.inputs]
            in_specs = [None if r is None else graph.specs[r] for r in node.inputs]
        names[node.output] = lower_node(b, node.op, ins, in_specs, dict(node.attrs), node.spec)
    output_names = list(output_names or [f"output_{i}" for i in range(len(graph.results))])
    outputs = []
    for value_id, name in zip(graph.results, output_names):
        src = names[value_id]
        b.nodes.append(helper.make_node("Identity", [src], [name]))
        outputs.append(_value_info(name, graph.specs[value_id], dynamic))
    inputs = [_value_info(n, graph.specs[v], dynamic) for v, n in zip(graph.inputs, input_names)]
    model = helper.make_model(
        helper.make_graph(b.nodes, graph.name, inputs, outputs, initializer=b.initializers, doc_string=doc),
        opset_imports=[helper.make_opsetid("", OPSET)], producer_name="accel")
    model.ir_version = IR_VERSION
    return model


def _value_info(name: str, spec: TensorSpec, dynamic: bool):
    from onnx import helper

    shape = [None] * spec.ndim if dynamic else list(spec.shape)
    return helper.make_tensor_value_info(name, onnx_type(spec.dtype), shape)


def check(model) -> None:
    """onnx.checker with shape inference; raises AccelError naming what is wrong."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=model.ByteSize() < 2 ** 31 - 1)
    except Exception as exc:  # onnx raises its own ValidationError/InferenceError types
        raise AccelError(f"the exported ONNX model {model.graph.name!r} fails onnx.checker: {exc}",
                         hint="this is a bug in accel's ONNX lowering; please report it with the op "
                              "named above") from exc
