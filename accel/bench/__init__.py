"""`accel bench`: backends side by side, against the native libraries, Hugging Face and the roofline.

Four sections, each measured interleaved (every repetition runs every row once, so drift on a
noisy machine hits all rows alike) and summarised by the median:

    roofline   this machine's memory bandwidth (a large copy) and float32 matmul peak
    ops        µs of dispatch overhead per op: accel eager minus the backend's own kernel call
    model      prefill / decode tokens/s of a ~100M-parameter Llama, eager and compiled, per
               backend and dtype, with each row's ratio to Hugging Face `generate` and its share
               of the roofline bound
    train      training tokens/s per backend (value_and_grad + AdamW) against torch autograd

`run(settings)` returns the results as one JSON-able dict; `report` writes JSON, Markdown and
PNG charts. The CLI is `accel bench` (accel/cli/bench.py).
"""
from accel.bench.settings import BenchSettings


__all__ = ["BenchSettings"]
