"""Reverse-mode autodiff over accel ops (the tape) and the optimizers that consume its gradients."""
