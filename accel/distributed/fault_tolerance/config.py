"""Options of fault-tolerant training, in one frozen record that the launcher passes to every
replica (as environment variables) and that training.json keeps.

The timeouts are the failure model's knobs (docs/fault-tolerance.md): a replica that stops
heartbeating for `heartbeat_timeout_s` leaves the quorum; a collective that has not finished
after `timeout_s` fails the step on the survivors, who redo it with the next quorum.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from accel.train.errors import TrainConfigError

BATCH_POLICIES = ("constant", "shrink")
_ENV = "ACCEL_FT_"


@dataclass(frozen=True)
class FaultToleranceConfig:
    replicas: int = 2                  # replica groups the launcher starts
    min_replicas: int = 1              # fewer live replicas than this: steps are not committed
    batch_policy: str = "constant"     # constant: survivors take more micro-batches; shrink: G·n/N
    timeout_s: float = 10.0            # a collective, a should_commit or a state transfer
    quorum_timeout_s: float = 60.0     # waiting for a quorum to form
    heartbeat_timeout_s: float = 2.0   # lighthouse drops a replica silent for this long
    join_timeout_s: float = 1.0        # lighthouse waits this long for stragglers to a new quorum
    max_restarts: int = 10             # torchrun restarts of one replica before it gives up
    lighthouse: str = ""               # http://host:port; empty: the launcher starts one
    spare_device: str = ""             # backend spec a rank moves to after a DeviceError

    def __post_init__(self) -> None:
        if self.batch_policy not in BATCH_POLICIES:
            raise TrainConfigError(f"--ft-batch-policy must be one of {', '.join(BATCH_POLICIES)}, "
                                   f"got {self.batch_policy!r}",
                                   hint="constant keeps the global batch when replicas drop out; "
                                        "shrink scales it with the quorum")
        if self.replicas < 1 or not 1 <= self.min_replicas <= self.replicas:
            raise TrainConfigError(
                f"fault tolerance needs 1 <= --ft-min-replicas ({self.min_replicas}) <= replicas "
                f"({self.replicas})", hint="start at least as many replicas as the quorum needs")
        for name in ("timeout_s", "quorum_timeout_s", "heartbeat_timeout_s", "join_timeout_s"):
            if getattr(self, name) <= 0:
                raise TrainConfigError(f"fault tolerance: {name} must be positive, got {getattr(self, name)}",
                                       hint="timeouts are seconds > 0")

    def to_env(self) -> dict[str, str]:
        """The config as ACCEL_FT_* variables, so each torchrun-started replica reads the same."""
        return {_ENV + f.name.upper(): str(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_env(cls, env=os.environ, **overrides) -> "FaultToleranceConfig":
        values = {}
        for f in dataclasses.fields(cls):
            raw = env.get(_ENV + f.name.upper())
            if raw is not None:
                values[f.name] = type(f.default)(raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if not values.get("lighthouse"):
            values["lighthouse"] = env.get("TORCHFT_LIGHTHOUSE", "")
        return cls(**values)
