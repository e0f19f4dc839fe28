"""Meta-tests: every op is fully declared (reference, dtypes, cases); every composite's
decomposition matches its reference; and the suite notices a wrong kernel when there is one."""
import numpy as np
import pytest

import accel
from accel import ops
from accel.conformance.generators import FAMILIES, case_dtypes, cases_for, stable_seed
from accel.conformance.runner import run_suite
from broken_backend import Broken, PrimitivesOnly


@pytest.mark.parametrize("op", ops.ALL_OPS, ids=lambda op: op.name)
def test_op_is_fully_declared(op):
    assert callable(op.reference), f"{op.name} has no numpy reference"
    assert op.dtypes, f"{op.name} declares no dtypes"
    assert op.cases and op.cases.get("family") in FAMILIES, f"{op.name}: unknown case family {op.cases!r}"
    for dtype in case_dtypes(op):
        cases = list(cases_for(op, dtype, quick=True))
        assert cases, f"{op.name}[{dtype.name}] generates no case"
        for case in cases:
            assert case.seed == stable_seed(case.base_id)


@pytest.mark.parametrize("op", ops.COMPOSITES, ids=lambda op: op.name)
def test_composite_has_a_decomposition(op):
    assert callable(op.decompose)


def test_case_families_cover_the_edge_cases_of_conformance_md():
    labels = " | ".join(c.id for op in (ops.add, ops.exp, ops.sum, ops.softmax, ops.attention, ops.cross_entropy)
                        for c in cases_for(op, accel.float16))
    for needle in ("shape=()", "shape=(1,)", "shape=(0,)", "(5, 7)", "shape=(273,)", "shape=(1025,)",
                   "((3, 4), (3, 1))", "((3, 4), (1, 4))", "((3, 1), (1, 4))", "(2, 4096)",
                   "layout=transposed", "layout=strided", "values=special", "values=subnormal",
                   "values=large", "large(±60000)", "mask=TS", "targets=some-ignored", "targets=all-ignored"):
        assert needle in labels, needle


def test_seeds_are_stable_and_distinct():
    assert stable_seed("add[float32] shapes=((), ())") == stable_seed("add[float32] shapes=((), ())")
    a = [c.seed for c in cases_for(ops.add, accel.float32)]
    assert len(set(a)) > 10
    x1 = next(cases_for(ops.exp, accel.float32)).inputs[0]
    x2 = next(cases_for(ops.exp, accel.float32)).inputs[0]
    np.testing.assert_array_equal(x1, x2)


def test_inputs_are_rounded_to_the_dtype_under_test():
    case = next(c for c in cases_for(ops.exp, accel.bfloat16) if c.inputs[0].size)
    assert case.inputs[0].dtype == accel.bfloat16.numpy


# --- decompositions against the references ----------------------------------------------------
@pytest.fixture(scope="module")
def primitives_only():
    accel.register_backend(PrimitivesOnly)
    return accel.get_backend(PrimitivesOnly.name)


@pytest.mark.parametrize("op", ops.COMPOSITES, ids=lambda op: op.name)
def test_decomposition_matches_reference(primitives_only, op):
    assert op not in primitives_only.kernels
    result = run_suite(primitives_only, op_names=[op.name], quick=True)
    assert result.rows
    assert {r.path for r in result.rows} == {"decomposed"}
    bad = [f"{r.id}: {r.reason}" for r in result.rows if r.status != "pass"]
    assert not bad, "\n".join(bad[:20])


# --- the suite catches wrong kernels -------------------------------------------------------------
@pytest.fixture(scope="module")
def broken():
    accel.register_backend(Broken)
    return accel.get_backend(Broken.name)


@pytest.mark.parametrize("op,dtype,needle", [
    (ops.matmul, "float16", "shapes=((2, 256), (256, 3))"),
    (ops.softmax, "float32", "values=large"),
    (ops.cast, "float32", "to=float8_e4m3fn values=overflow"),
    (ops.exp, "float32", "layout=strided"),
])
def test_suite_rejects_wrong_kernels(broken, op, dtype, needle):
    result = run_suite(broken, op_names=[op.name], dtype_names=[dtype], quick=True)
    failed = [r.id for r in result.rows if r.status == "fail"]
    assert any(needle in f for f in failed), f"the suite missed the bug; failures: {failed}"


def test_ci_sampling_keeps_every_op_dtype_and_the_edge_cases():
    for op in ops.ALL_OPS:
        for dtype in case_dtypes(op):
            full = [c.id for c in cases_for(op, dtype, quick=True)]
            sampled = [c.id for c in cases_for(op, dtype, quick=True, sample=True)]
            assert sampled and set(sampled) <= set(full), (op.name, dtype.name)
            for needle in ("values=special", "values=subnormal", "layout="):
                assert [i for i in full if needle in i] == [i for i in sampled if needle in i]
