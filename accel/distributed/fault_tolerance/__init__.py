"""Fault-tolerant training on torchft (docs/fault-tolerance.md): the lighthouse, a Manager per
replica group, the state that heals a restarted replica from a live peer, spare-device failover,
the one-machine launcher and the job's failure record.

Modules import torch/torchft only when used, so `accel train --help` stays fast."""
from accel.distributed.fault_tolerance.config import FaultToleranceConfig

__all__ = ["FaultToleranceConfig"]
