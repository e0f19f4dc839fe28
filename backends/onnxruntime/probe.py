"""Regenerate `support.py`: which ops and dtypes ONNX Runtime's CPU provider runs.

    python -m accel.backends.onnxruntime.probe            # rewrite the table
    python -m accel.backends.onnxruntime.probe --check    # print it, write nothing

For every op with an ONNX lowering and every dtype its declaration accepts, one small call is
run as a single-node session and compared with the numpy reference backend on the same inputs
(NaN positions exact, values within a loose 1e-2 relative tolerance: this only sorts "runs
and agrees" from "has no kernel" or "disagrees"; the conformance suite judges accuracy). A
pair that raises or disagrees is left out of the table, so the dispatcher decomposes or falls
back for it, counted, instead of trusting it.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import accel
from accel.core import dtypes as dt


def _samples(op, dtype, ref):
    """(args, attrs) of a small call of `op` whose first input has `dtype` (numpy tensors),
    shaped by the op's conformance case family (so a new op of a known family needs nothing here)."""
    rng = np.random.default_rng(0)

    def t(shape, d=dtype, low=-2.0, high=2.0):
        if d is dt.bool_:
            return accel.from_numpy(rng.random(shape) > 0.5, ref)
        if d.is_integer:
            return accel.from_numpy(rng.integers(-5, 6, shape).astype(d.numpy), ref)
        return accel.from_numpy(rng.uniform(low, high, shape).astype(np.float32).astype(d.numpy), ref)

    def idx(values):
        return accel.from_numpy(np.asarray(values, np.int64), ref)

    case = op.cases or {}
    family = case.get("family")
    low, high = case.get("domain") or (-2.0, 2.0)
    if family in ("unary", "softmax", "cast"):
        return (t((2, 3), low=max(low, -3.0), high=min(high, 3.0)),), {}
    if family == "binary":
        rlow, rhigh = case.get("rhs_domain") or (-2.0, 2.0)
        return (t((2, 3), low=max(low, -3.0), high=min(high, 3.0)), t((2, 3), low=rlow, high=rhigh)), {}
    if family in ("compare", "logical"):
        return tuple(t((2, 3)) for _ in op.inputs), {}
    if family == "matmul":
        return (t((2, 3)), t((3, 4))), {}
    if family == "where":
        return (t((2, 3), dt.bool_), t((2, 3)), t((2, 3))), {}
    if family in ("reduce", "argmax"):
        return (t((2, 3)),), {"axis": 1, "keepdims": False}
    if family == "reshape":
        return (t((2, 3)),), {"shape": (3, 2)}
    if family == "permute":
        return (t((2, 3)),), {"axes": (1, 0)}
    if family == "broadcast":
        return (t((1, 3)),), {"shape": (2, 3)}
    if family == "concat":
        return ([t((2, 3)), t((1, 3))],), {"axis": 0}
    if family == "slice":
        return (t((4, 3)),), {"axes": (0,), "starts": (1,), "stops": (4,), "steps": (2,)}
    if family == "gather":
        return (t((4, 3)), idx([3, 0, 1])), {"axis": 0}
    if family == "embedding":
        return (t((5, 3)), idx([[4, 0], [1, 1]])), {}
    if family == "index_copy":
        return (t((4, 3)), idx([2, 0]), t((2, 3))), {"axis": 0}
    if family == "index_add":
        return (t((4, 3)), idx([2, 0, 2]), t((3, 3))), {"axis": 0}
    if family == "norm":
        return (t((2, 4)), t((4,)), *((t((4,)),) if case.get("bias") else ())), {}
    if family == "linear":
        return (t((2, 3)), t((4, 3)), t((4,))), {}
    if family == "attention":
        mask = accel.from_numpy(np.tril(np.ones((3, 5), bool), 2), ref)
        return (t((1, 4, 3, 8)), t((1, 2, 5, 8)), t((1, 2, 5, 8)), mask), {}
    return None


def _agrees(got: np.ndarray, want: np.ndarray) -> bool:
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape or got.dtype != want.dtype:
        return False
    if want.dtype.kind in "iub":
        return bool(np.array_equal(got, want))
    g, w = got.astype(np.float64), want.astype(np.float64)
    if not np.array_equal(np.isnan(g), np.isnan(w)):
        return False
    finite = ~np.isnan(w)
    # about one ulp of float8 / half types; float32/64 must be as accurate as the format allows
    loose = {1: 0.25, 2: 2e-2, 4: 1e-5, 8: 1e-12}[want.dtype.itemsize]
    return bool(np.allclose(g[finite], w[finite], rtol=loose, atol=loose))


def probe_table(verbose: bool = True) -> dict[str, tuple[str, ...]]:
    from accel.backends.onnxruntime.backend import OnnxRuntimeBackend, _kernel
    from accel.export.onnx import LOWERINGS

    ref = accel.get_backend("numpy")
    backend = OnnxRuntimeBackend("cpu")
    table: dict[str, tuple[str, ...]] = {}
    for op in sorted(LOWERINGS, key=lambda o: o.name):
        if not op.inputs:  # creation: host (numpy) eagerly, initializers in graphs
            table[op.name] = tuple(d.name for d in dt.ALL_DTYPES)
            continue
        kernel = _kernel(backend, op)
        ok = []
        for dtype in op.dtypes:
            sample = _samples(op, dtype, ref)
            if sample is None:
                continue
            args, attrs = op.bind(sample[0], sample[1])
            targets = dt.ALL_DTYPES if "dtype" in op.attrs else (None,)  # a cast: every target
            good = True
            for target in targets:
                call_attrs = dict(attrs, dtype=target) if target is not None else dict(attrs)
                try:
                    p_args, p_attrs = op.prepare(args, call_attrs) if op.prepare else (args, call_attrs)
                    want = op(*p_args, **p_attrs).numpy()
                    natives = [[a.data for a in x] if isinstance(x, list) else
                               (None if x is None else x.data) for x in p_args]
                    got = kernel(*natives, **{k: v for k, v in p_attrs.items() if k != "backend"})
                    if not _agrees(got, want):
                        raise AssertionError("disagrees with the reference")
                except Exception as exc:
                    good = False
                    if verbose:
                        print(f"  {op.name} {dtype.name}{'->' + target.name if target else ''}: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}", file=sys.stderr)
                    break
            if good:
                ok.append(dtype.name)
        table[op.name] = tuple(ok)
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="print the table, write nothing")
    args = parser.parse_args(argv)
    table = probe_table()
    import onnxruntime

    lines = [f'"""Generated by `python -m accel.backends.onnxruntime.probe` (onnxruntime '
             f'{onnxruntime.__version__}, CPU provider): do not edit by hand."""',
             "CPU_OP_DTYPES: dict[str, tuple[str, ...]] = {"]
    lines += [f"    {name!r}: ({', '.join(repr(d) for d in dts)}{',' if len(dts) == 1 else ''}),"
              for name, dts in sorted(table.items())]
    lines.append("}")
    text = "\n".join(lines) + "\n"
    if args.check:
        print(text)
        return 0
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "support.py")
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
