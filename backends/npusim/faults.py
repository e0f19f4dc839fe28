"""Seeded fault injection: the simulated device fails at the Nth kernel launch, or at each launch
with probability p, raising `accel.DeviceError` as a real device error would surface. For testing
what resilience code (retries, checkpoint/resume) does when hardware misbehaves."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accel.core.errors import DeviceError


@dataclass(frozen=True)
class FaultPlan:
    at: int | None = None        # fail the Nth launch (1-based) after the plan is set
    rate: float = 0.0            # or fail each launch with this probability
    seed: int = 0                # the draws for `rate` come from Philox(seed): reproducible

    @property
    def active(self) -> bool:
        return self.at is not None or self.rate > 0.0


class FaultInjector:
    def __init__(self, device: str, plan: FaultPlan = FaultPlan()):
        self.device = device
        self.set_plan(plan)

    def set_plan(self, plan: FaultPlan) -> None:
        if plan.at is not None and plan.at < 1:
            raise DeviceError(f"{self.device}: fault_at must be >= 1, got {plan.at}",
                              hint="count launches from 1, or pass None to disable")
        if not 0.0 <= plan.rate <= 1.0:
            raise DeviceError(f"{self.device}: fault_rate must lie in [0, 1], got {plan.rate}",
                              hint="a probability per kernel launch, e.g. 0.001")
        self.plan = plan
        self.launches = 0
        self.injected = 0
        self._rng = np.random.Generator(np.random.Philox(int(plan.seed)))

    def check(self, what: str) -> None:
        """Called before each kernel launch; raises DeviceError when the plan says so."""
        self.launches += 1
        plan = self.plan
        hit = self.launches == plan.at or (plan.rate > 0.0 and self._rng.random() < plan.rate)
        if hit:
            self.injected += 1
            raise DeviceError(
                f"{self.device}: device fault (injected) at kernel launch #{self.launches}: {what}",
                hint=f"this fault was injected on purpose (fault_at={plan.at}, fault_rate={plan.rate}, "
                     f"seed={plan.seed}); turn it off with backend.configure(fault_at=None, fault_rate=0) "
                     f"or unset ACCEL_NPUSIM_FAULT_AT / ACCEL_NPUSIM_FAULT_RATE")
