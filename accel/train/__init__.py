"""Training on any backend: a model-agnostic loop (`train`), its config, reproducible token
batches and atomic, portable checkpoints. Autograd is `accel.value_and_grad`; the optimizer is
`accel.autodiff.optim`. `accel train` (accel/cli/train.py) wires these to the Llama model."""
from accel.train.checkpoints import find_checkpoint, load_checkpoint, save_checkpoint
from accel.train.data import TokenData
from accel.train.loop import TrainConfig, TrainResult, evaluate, make_loss, train

__all__ = ["TrainConfig", "TrainResult", "TokenData", "train", "evaluate", "make_loss",
           "save_checkpoint", "load_checkpoint", "find_checkpoint"]
