"""Thread-pool hygiene for processes that run several native libraries side by side.

`accel bench` and `accel demo` run numpy (OpenBLAS), torch (OpenMP), jax (XLA) and ONNX Runtime
in one process. Their worker threads busy-wait ("spin") after each parallel region by default; on
a machine with few cores the spinning threads of one library starve the next library's workers,
and ops that take 0.1 ms take 7 ms (measured: a torch training step went from 0.03 s to 2 s next
to numpy on 2 cores). Idle OpenMP threads sleep with OMP_WAIT_POLICY=PASSIVE, which OpenMP reads
once, when torch is first imported; the onnxruntime backend turns spinning off per session.
OpenBLAS (numpy's matmul) has no such switch at run time, and next to XLA or ONNX Runtime pools
its threads stalled a 50 ms training step to 2 s: it is limited to one thread (threadpoolctl).
"""
from __future__ import annotations

import os
import sys


def quiet_thread_pools() -> str:
    """Let idle OpenMP threads sleep and run OpenBLAS on one thread (unless the user chose
    otherwise through the environment); returns a line saying what holds, for reports."""
    said = []
    if "OMP_WAIT_POLICY" in os.environ:
        said.append(f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} (user)")
    elif "torch" in sys.modules:
        said.append("OpenMP wait policy default (torch was imported first)")
    else:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        said.append("OMP_WAIT_POLICY=PASSIVE")
    if "OPENBLAS_NUM_THREADS" in os.environ:
        said.append(f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']} (user)")
    else:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="blas")
        said.append("numpy BLAS 1 thread")
    return ", ".join(said)
