"""Training on any backend and any number of ranks: a model-agnostic loop (`train`), its config,
the one-step `Trainer` (local gradients → reducer → replicated or ZeRO-1 AdamW), the batch plan
over ranks, per-sample reproducible data and atomic, world-size-independent checkpoints.
Autograd is `accel.value_and_grad`; the optimizer is `accel.autodiff.optim`. `accel train`
(accel/cli/train.py) wires these to the Llama model."""
from accel.train.batching import BatchPlan, plan_batches
from accel.train.checkpoints import find_checkpoint, load_checkpoint, save_checkpoint
from accel.train.data import TokenData
from accel.train.errors import DivergenceError, TrainConfigError
from accel.train.loop import TrainConfig, TrainResult, evaluate, make_loss, train
from accel.train.trainer import StepReport, Trainer, TrainState

__all__ = ["TrainConfig", "TrainResult", "TokenData", "train", "evaluate", "make_loss",
           "save_checkpoint", "load_checkpoint", "find_checkpoint", "BatchPlan", "plan_batches",
           "Trainer", "TrainState", "StepReport", "TrainConfigError", "DivergenceError"]
