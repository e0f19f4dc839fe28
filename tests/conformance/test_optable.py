"""docs/ops.md is generated from the backends' capabilities; it must not go stale."""
import os

from accel.conformance import optable

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "ops.md")


def test_docs_ops_md_is_current_for_the_backends_installed_here():
    with open(DOC) as f:
        text = f.read()
    problems = optable.stale_columns(text, optable.installed_backends())
    assert not problems, ("docs/ops.md is stale; regenerate it with "
                          "`python -m accel.conformance.optable > docs/ops.md`:\n" + "\n".join(problems))
    assert "numpy" in optable.parse(text), "the reference backend's column is missing"


def test_every_op_has_a_row_and_the_reference_runs_every_primitive_natively():
    import accel
    from accel import ops

    table = optable.parse(optable.render([accel.reference_backend()]))["numpy"]
    assert set(table) == {op.name for op in ops.ALL_OPS}
    assert all(table[op.name] == "native" for op in ops.PRIMITIVES)
    assert {table[op.name] for op in ops.COMPOSITES} <= {"native", "decomposed"}


def test_a_stale_cell_is_reported():
    import accel

    backends = [accel.reference_backend()]
    text = optable.render(backends).replace("| matmul | primitive | native |", "| matmul | primitive | host fallback |")
    problems = optable.stale_columns(text, backends)
    assert problems and "matmul" in problems[0]
