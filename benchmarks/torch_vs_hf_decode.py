"""Eager accel on torch:cpu against Hugging Face transformers: greedy decode speed, same weights.

A random Llama of about 100M parameters is built with transformers (its default attention, SDPA),
saved as safetensors and loaded by `accel.models.load_pretrained(..., backend="torch:cpu")`.
Both generate `--new` tokens greedily after a random `--prompt`-token prompt, never stopping at
EOS; runs alternate (accel, HF, accel, HF, ...) so that load on a shared machine hits both
alike, and the median of `--repeats` is reported. Decode time runs from the first new token
(which comes out of the prefill) to the last, read from each library's streaming callback, so
tok/s = batch * (new - 1) / decode time. Both run under `torch.inference_mode()` (HF's own
`generate` does the same); `--no-inference-mode` runs accel without it. Threads: torch's
default unless `--threads`; on a shared machine `--threads 1` is the steadier figure (OpenMP
threads spin-wait for a busy core). The greedy tokens must agree, or the comparison means nothing.

    .venv/bin/python benchmarks/torch_vs_hf_decode.py --batch 1 8

Superseded by `accel bench` (accel/bench/) when that lands; kept short on purpose.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time

import numpy as np
import torch
import transformers

import accel
import accel.models

CONFIG = dict(vocab_size=32000, hidden_size=640, intermediate_size=1728, num_hidden_layers=12,
              num_attention_heads=10, num_key_value_heads=5, max_position_embeddings=1024,
              rms_norm_eps=1e-5, bos_token_id=None, eos_token_id=None, pad_token_id=None)


class _Clock:
    """A streamer for both libraries: the time each batch of tokens arrived."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, _tokens) -> None:  # HF streamer protocol
        self.times.append(time.perf_counter())

    __call__ = put  # accel's stream callback

    def end(self) -> None:
        pass


def hf_decode(model, ids: np.ndarray, new: int) -> tuple[float, list[list[int]]]:
    clock = _Clock()
    out = model.generate(torch.from_numpy(ids), max_new_tokens=new, min_new_tokens=new, do_sample=False,
                         streamer=clock, pad_token_id=0)
    # HF puts the prompt first, then every new token.
    return clock.times[-1] - clock.times[1], out[:, ids.shape[1]:].tolist()


def accel_decode(model, ids: np.ndarray, new: int) -> tuple[float, list[list[int]]]:
    clock = _Clock()
    out = model.generate(ids.tolist(), new, stream=clock, stop_at_eos=False)
    return clock.times[-1] - clock.times[0], out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-inference-mode", action="store_true", help="run accel without inference_mode")
    parser.add_argument("--profile", action="store_true", help="print accel's top torch ops (one run, batch 1)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM._from_config(transformers.LlamaConfig(**CONFIG), dtype=torch.float32).eval()
    params = sum(p.numel() for p in hf.parameters())
    print(f"Llama {params / 1e6:.1f}M params, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"attention {hf.config._attn_implementation}, prompt {args.prompt}, {args.new} new tokens, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder, safe_serialization=True)
        ours = accel.models.load_pretrained(folder, backend="torch:cpu")
    ours_mode = contextlib.nullcontext if args.no_inference_mode else torch.inference_mode

    for batch in args.batch:
        ids = np.random.default_rng(batch).integers(0, CONFIG["vocab_size"], size=(batch, args.prompt))
        with ours_mode():
            accel_decode(ours, ids, 4)  # warm-up: allocator, the cache, first-call costs
        with torch.inference_mode():
            hf_decode(hf, ids, 4)
        if args.profile and batch == args.batch[0]:
            with ours_mode(), torch.profiler.profile() as prof:
                accel_decode(ours, ids, args.new)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
        times: dict[str, list[float]] = {"accel": [], "hf": []}
        for _ in range(args.repeats):
            with ours_mode():
                seconds, got = accel_decode(ours, ids, args.new)
            times["accel"].append(seconds)
            with torch.inference_mode():
                seconds, ref = hf_decode(hf, ids, args.new)
            times["hf"].append(seconds)
            if got != ref:
                raise SystemExit(f"batch {batch}: greedy tokens differ from Hugging Face:\n{got}\n{ref}")
        rate = {k: batch * (args.new - 1) / statistics.median(v) for k, v in times.items()}
        print(f"batch {batch}: accel {rate['accel']:.1f} tok/s, HF {rate['hf']:.1f} tok/s, "
              f"accel/HF time {rate['hf'] / rate['accel']:.2f}  "
              f"(medians of {args.repeats}; tokens identical)")


if __name__ == "__main__":
    main()
