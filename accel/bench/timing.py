"""Interleaved measurement: every repetition runs every case once, in the same order.

On a shared, noisy machine a slow minute then hits every case alike instead of whichever case
happened to run during it; the median over repetitions is what the tables show. A case's first
call is a warm-up (compiles, allocates caches) and is not counted; a case whose warm-up fails or
takes longer than its group's budget is skipped with the reason, and so is the rest of its group
(the same model's other measurements).
"""
from __future__ import annotations

import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from accel.core.errors import AccelError


@dataclass
class Case:
    """One measured thing. `run()` returns the seconds of one repetition (it times itself, so
    set-up such as building inputs stays outside the figure)."""

    key: str
    run: Callable[[], float]
    group: str = ""
    budget_s: float = float("inf")
    samples: list[float] = field(default_factory=list)
    warmup_s: float | None = None
    skipped: str | None = None

    def summary(self) -> dict:
        out: dict = {"warmup_s": self.warmup_s}
        if self.skipped:
            out["skipped"] = self.skipped
        if self.samples:
            out.update(median_s=statistics.median(self.samples), min_s=min(self.samples),
                       max_s=max(self.samples), samples_s=list(self.samples))
        return out


def interleave(cases: list[Case], repeats: int, label: str = "bench", progress: bool = True) -> list[Case]:
    """Warm every case up, then run `repeats` rounds of all cases; returns the cases, filled in."""
    bar = _bar(len(cases) * (repeats + 1), label) if progress else None
    failed_groups: dict[str, str] = {}
    for case in cases:
        if case.group in failed_groups:
            case.skipped = failed_groups[case.group]
        else:
            _warm_up(case)
            if case.skipped and case.group:
                failed_groups[case.group] = f"skipped with {case.key.rsplit('/', 1)[-1]}: {case.skipped}"
        _tick(bar, case.key)
    for _ in range(repeats):
        for case in cases:
            if not case.skipped:
                try:
                    case.samples.append(_within_budget(case))
                except AccelError as error:  # an error on a later call is reported, not hidden
                    case.skipped = f"failed: {str(error).splitlines()[0]}"
                    case.samples.clear()
            _tick(bar, case.key)
    if bar is not None:
        bar.close()
    return cases


def _warm_up(case: Case) -> None:
    start = time.perf_counter()
    try:
        _within_budget(case)
    except AccelError as error:
        case.skipped = f"failed: {str(error).splitlines()[0]}"
        return
    except MemoryError:
        case.skipped = "out of memory"
        return
    case.warmup_s = time.perf_counter() - start
    if case.warmup_s > case.budget_s:
        case.skipped = f"too slow: one warm-up took {case.warmup_s:.1f} s (budget {case.budget_s:.0f} s)"


class _BudgetExceeded(Exception):
    pass


def _within_budget(case: Case) -> float:
    """case.run(), interrupted (between ops: a native call finishes first) past the case's budget."""
    if case.budget_s == float("inf") or not hasattr(signal, "setitimer"):
        return case.run()

    def alarm(signum, frame):
        raise _BudgetExceeded()

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, case.budget_s)
    try:
        return case.run()
    except _BudgetExceeded:
        raise AccelError(f"over the budget of {case.budget_s:g} s for one call",
                         hint="raise --row-budget or use a smaller model") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _bar(total: int, label: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit="run", file=sys.stderr, dynamic_ncols=True, leave=True, mininterval=1.0)


def _tick(bar, key: str) -> None:
    if bar is not None:
        bar.set_postfix_str(key, refresh=False)
        bar.update(1)


def best_of(fn: Callable[[], float], repeats: int) -> float:
    """The fastest of `repeats` timed runs (for hardware peaks: the machine can do at least this)."""
    return min(fn() for _ in range(repeats))
