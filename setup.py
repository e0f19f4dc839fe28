"""Finds every package under the three source roots; everything else is in pyproject.toml.

`backends/` and `models/` install as `accel.backends` and `accel.models` (the package-dir mapping
in pyproject.toml), which `[tool.setuptools.packages.find]` cannot express, so the walk is here.
"""
from setuptools import find_packages, setup

ROOTS = {"accel": "accel", "accel.backends": "backends", "accel.models": "models"}


def packages() -> list[str]:
    found = set()
    for name, folder in ROOTS.items():
        found.add(name)
        found.update(f"{name}.{sub}" for sub in find_packages(folder))
    return sorted(found)


setup(packages=packages())
