"""The Hugging Face reference: `transformers` LlamaForCausalLM on torch (CPU, or CUDA when the
run benchmarks a CUDA backend), holding the same weights as the accel rows.

Timing uses `generate` itself, greedy, exactly `new_tokens` tokens (no end-of-sequence stop),
with a streamer that timestamps every token: the first new token closes the prefill, the rest
are decode steps. The accel rows time their own `generate` the same way.
"""
from __future__ import annotations

import time

import numpy as np


def available() -> str | None:
    """None when transformers and torch import; else why not."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as error:
        return f"transformers/torch not installed ({error.name}); pip install 'accel-layer[dev]'"
    return None


class HFModel:
    def __init__(self, config, host_params: dict[str, np.ndarray], dtype: str, device: str = "cpu"):
        import torch
        import transformers

        hf_config = transformers.LlamaConfig(**{**config.to_dict(), "torch_dtype": None})
        model = transformers.LlamaForCausalLM(hf_config)
        state = {k: torch.from_numpy(v) for k, v in host_params.items()}
        model.load_state_dict(state, strict=True)
        self.torch = torch
        self.dtype = getattr(torch, dtype)
        self.device = device
        self.model = model.to(device=device, dtype=self.dtype).eval()
        self.model.generation_config.eos_token_id = None
        self.model.generation_config.pad_token_id = 0
        self.attn = getattr(self.model.config, "_attn_implementation", "?")

    def generate(self, prompt: np.ndarray, new_tokens: int) -> tuple[float, float, list[list[int]]]:
        """(prefill seconds, decode seconds of new_tokens-1 steps, the new ids) of one greedy generate."""
        ids = self.torch.from_numpy(prompt).to(self.device)
        stamps = _Stamps(self.torch, self.device)
        with self.torch.inference_mode():
            start = time.perf_counter()
            out = self.model.generate(ids, attention_mask=self.torch.ones_like(ids), max_new_tokens=new_tokens,
                                min_new_tokens=new_tokens, do_sample=False, streamer=stamps)
        if len(stamps.times) != new_tokens + 1:  # the prompt, then one put per new token
            raise RuntimeError(f"HF generate streamed {len(stamps.times) - 1} tokens, expected {new_tokens}")
        new_ids = out[:, ids.shape[1]:].tolist()
        return stamps.times[1] - start, stamps.times[-1] - stamps.times[1], new_ids


class _Stamps:
    """A transformers streamer (put/end) that only records when each put arrives."""

    def __init__(self, torch, device):
        self.times: list[float] = []
        self.sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def put(self, value) -> None:
        self.sync()
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass
