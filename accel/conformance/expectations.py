"""Per-backend known failures: `accel/conformance/expectations/<backend>.toml`.

    [[xfail]]
    op = "cast"                       # required
    dtype = "float8_e4m3fn"           # optional (default: every dtype)
    case = "*to=float8_e4m3fn*"       # optional glob over the case label incl. layout=...
    device = "cuda"                   # optional (default: every device)
    reason = "why it fails, and what would fix it"   # required

An entry is strict: a case it matches that passes is reported as XPASS and fails the run, so
the file never outlives the bug. A vendor keeps its own reviewed file next to its plugin and names
it in the backend class (`known_failures = ...`, a path): `accel conformance` and
`pytest -p accel.testing` then use it; `--expectations FILE` (CLI) or `--accel-expectations FILE`
(pytest) override it for one run.
"""
from __future__ import annotations

import fnmatch
import os
import tomllib
from dataclasses import dataclass

from accel.core.errors import AccelError

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "expectations")


@dataclass(frozen=True)
class Expected:
    op: str
    reason: str
    dtype: str = "*"
    case: str = "*"
    device: str = "*"

    def matches(self, device: str, row) -> bool:
        label = row.case if row.layout == "contiguous" else f"{row.case} layout={row.layout}"
        return (self.op == row.op and fnmatch.fnmatchcase(row.dtype, self.dtype)
                and fnmatch.fnmatchcase(label, self.case) and fnmatch.fnmatchcase(device, self.device))


class Expectations:
    def __init__(self, entries: tuple[Expected, ...] = (), source: str = ""):
        self.entries = entries
        self.source = source

    @classmethod
    def load(cls, path: str) -> "Expectations":
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise AccelError(f"cannot read expectations file {path}: {exc}",
                             hint="fix the TOML (see accel/conformance/expectations.py for the format)") from exc
        entries = []
        for i, item in enumerate(data.get("xfail", [])):
            if "op" not in item or not item.get("reason"):
                raise AccelError(f"{path}: xfail entry {i + 1} needs an op and a reason, got {item!r}",
                                 hint="every known failure says which op and why")
            unknown = set(item) - {"op", "reason", "dtype", "case", "device"}
            if unknown:
                raise AccelError(f"{path}: xfail entry {i + 1} has unknown keys {sorted(unknown)}",
                                 hint="keys: op, dtype, case, device, reason")
            entries.append(Expected(**item))
        return cls(tuple(entries), path)

    @classmethod
    def for_backend(cls, backend) -> "Expectations":
        """The backend's own file (`Backend.known_failures`), else accel's file for its name."""
        path = backend.known_failures or os.path.join(HERE, f"{backend.name}.toml")
        if backend.known_failures and not os.path.isfile(path):
            raise AccelError(f"{backend.name}: its known_failures file {path} does not exist",
                             hint="fix the path in the backend class (relative paths are not resolved)")
        return cls.load(path) if os.path.isfile(path) else cls((), "")

    def match(self, backend, row) -> Expected | None:
        for entry in self.entries:
            if entry.matches(backend.device, row):
                return entry
        return None
