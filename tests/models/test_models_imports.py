"""docs/architecture.md: `models/` sees accel only. Parse every file there and check each import."""
from __future__ import annotations

import ast
import pathlib
import sys

MODELS = pathlib.Path(__file__).resolve().parents[2] / "models"


def imported_roots(path: pathlib.Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_models_import_only_accel_and_the_standard_library():
    files = sorted(MODELS.rglob("*.py"))
    assert len(files) >= 5, f"expected the model sources under {MODELS}"
    allowed = set(sys.stdlib_module_names) | {"accel", "__future__"}
    offenders = {str(f.relative_to(MODELS)): sorted(imported_roots(f) - allowed) for f in files}
    assert {f: bad for f, bad in offenders.items() if bad} == {}


def test_the_check_would_catch_an_offender(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import numpy as np\nfrom torch import nn\nfrom . import llama\nimport os.path\n")
    assert imported_roots(bad) == {"numpy", "torch", "os"}
