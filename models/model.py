"""LlamaModel: weights + config + a static KV cache, with `forward` and `generate`.

The math is `llama.forward`; this class only keeps state (the cache, the tokenizer) and turns
Python lists into tensors. Generation prefills the prompt once, then decodes one token per step
with the same shapes every step (the cache is allocated up front, gpt-fast style).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import accel
from accel import ops
from accel.core.errors import ModelError
from accel.io.sampling import Sampler
from accel.core.tensor import Tensor

from . import llama
from .config import LlamaConfig
from .kv_cache import KVCache

CACHE_ROUND = 64  # cache lengths are rounded up so that nearby requests reuse one (compiled) shape


@dataclass(frozen=True)
class GenerationStats:
    prompt_tokens: int
    new_tokens: int
    prefill_s: float
    decode_s: float
    seed: int | None

    @property
    def decode_tokens_per_s(self) -> float:
        steps = self.new_tokens - 1  # the first new token comes out of the prefill
        return steps / self.decode_s if steps > 0 and self.decode_s > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        total = self.prefill_s + self.decode_s
        return self.new_tokens / total if total > 0 else 0.0


class LlamaModel:
    def __init__(self, config: LlamaConfig, params: dict[str, Tensor], backend=None, tokenizer=None):
        self.config = config
        self.params = params
        first = params["model.embed_tokens.weight"]
        self.backend = first.backend if backend is None else accel.get_backend(backend)
        self.dtype = first.dtype
        self.tokenizer = tokenizer
        self.cache: KVCache | None = None
        self.last_generation: GenerationStats | None = None
        self._step = llama.forward  # or its compiled form, after compile()
        # One KV cache per model: calls that use it (forward, generate) take turns, so two
        # threads generating on one model get their own right answers, one after the other.
        self._lock = threading.RLock()

    @classmethod
    def random(cls, config: LlamaConfig, seed: int = 0, backend=None, dtype=accel.float32, **kw) -> "LlamaModel":
        backend = accel.get_backend(backend)
        return cls(config, llama.init_params(config, seed, backend, dtype), backend, **kw)

    def parameters(self) -> dict[str, Tensor]:
        return self.params

    def compile(self, enabled: bool = True) -> "LlamaModel":
        """Run every forward (prefill and decode steps) as one compiled graph per input shape.

        The static KV cache gives every decode step the same shape, so decoding compiles once;
        each new prompt length (and batch size) traces once more. `self.compiled.stats` counts
        the traces. On a backend without a graph compiler the graph interpreter runs the graph.
        """
        self._step = accel.compile(llama.forward, backend=self.backend) if enabled else llama.forward
        return self

    @property
    def compiled(self):
        """The compiled forward (an `accel.graph.compile` function), or None when running eagerly."""
        return None if self._step is llama.forward else self._step

    def __repr__(self) -> str:
        c = self.config
        mode = "compiled" if self.compiled is not None else "eager"
        return (f"<LlamaModel {c.model_type} {c.num_parameters() / 1e6:.2f}M params, {c.num_hidden_layers} layers, "
                f"{self.dtype.name} on {self.backend.spec}, {mode}>")

    # --- cache ----------------------------------------------------------------------------
    def setup_cache(self, batch: int, max_seq: int) -> KVCache:
        """Allocate (or keep) a cache for `batch` sequences of up to `max_seq` positions."""
        if self.cache is None or self.cache.batch != batch or self.cache.max_seq < max_seq:
            size = -(-max_seq // CACHE_ROUND) * CACHE_ROUND
            self.cache = KVCache.for_config(self.config, batch, size, self.dtype, self.backend)
        return self.cache

    # --- forward --------------------------------------------------------------------------
    def _as_tensor(self, input_ids) -> Tensor:
        """Token ids as given (list, accel Tensor, numpy array, anything with __dlpack__ or
        __array__ such as a torch tensor) as an integer tensor on the model's backend."""
        if isinstance(input_ids, Tensor):
            ids = input_ids.to(self.backend)
        elif isinstance(input_ids, (list, tuple)):
            rows = list(input_ids)
            if rows and not isinstance(rows[0], (list, tuple)):
                rows = [rows]
            if not rows or not rows[0] or any(len(r) != len(rows[0]) for r in rows):
                raise ModelError("input ids must be a non-empty list of ints, or of equal-length lists",
                                 hint="pad prompts to one length or run them one at a time")
            try:
                ids = accel.tensor(rows, dtype=accel.int64, backend=self.backend)
            except (TypeError, ValueError, OverflowError) as exc:
                raise ModelError(f"input ids must be ints, got {rows[0][:8]!r}... ({exc})",
                                 hint="pass token ids from the tokenizer (model.tokenizer.encode)") from None
        elif hasattr(input_ids, "__dlpack__"):
            ids = accel.from_dlpack(input_ids, backend=self.backend)
        elif hasattr(input_ids, "__array__"):
            ids = accel.tensor(input_ids, backend=self.backend)
        else:
            raise ModelError(f"input ids must be a list, an accel Tensor or an array, got "
                             f"{type(input_ids).__name__}", hint="e.g. model.tokenizer.encode(text)")
        if ids.dtype.kind != "i":
            raise ModelError(f"input ids must be integers, got {ids.dtype.name}", hint="cast them to int64")
        return ids

    def _ids(self, input_ids) -> Tensor:
        ids = self._as_tensor(input_ids)
        if ids.ndim == 1:
            ids = ops.unsqueeze(ids, 0)
        if ids.ndim != 2:
            raise ModelError(f"input ids must be (batch, tokens), got shape {list(ids.shape)}",
                             hint="pass a list of ids or a 2-d int tensor")
        return ids

    def forward(self, input_ids, start_pos: int = 0, last_only: bool = False) -> Tensor:
        """Logits (B, T, V) for ids (B, T) (list, tensor or array) at positions start_pos..start_pos+T-1
        ((B, 1, V), the last position's, when `last_only`).

        The KV cache remembers them: call with start_pos=0 for a new prompt, then with
        start_pos=previous length to extend it one or more tokens at a time.
        """
        with self._lock:
            return self._forward(self._ids(input_ids), start_pos, last_only)

    def _forward(self, ids: Tensor, start_pos: int, last_only: bool) -> Tensor:
        b, t = ids.shape
        end = start_pos + t
        self.config.check_sequence(end)
        if start_pos < 0:
            raise ModelError(f"start_pos must be >= 0, got {start_pos}", hint="positions count from 0")
        if start_pos > 0 and (self.cache is None or self.cache.batch != b):
            raise ModelError(f"forward(start_pos={start_pos}) continues a sequence, but the cache holds "
                             f"{'none' if self.cache is None else f'a batch of {self.cache.batch}'}",
                             hint="run the prompt with start_pos=0 first, with the same batch size")
        # A new prompt may (re)allocate the cache; a continuation must find its tokens in it.
        cache = self.setup_cache(b, end) if start_pos == 0 else self.cache
        if end > cache.max_seq:
            raise ModelError(f"positions up to {end} do not fit the KV cache of {cache.max_seq}",
                             hint="restart with start_pos=0 (the cache grows for a new prompt) or call "
                                  "setup_cache(batch, max_seq) with room for the whole sequence first")
        # Made on the host, not with arange: an op whose attributes change every step would
        # make a per-op compiling backend (jax) compile again for every position.
        positions = accel.tensor(list(range(start_pos, end)), dtype=accel.int64, backend=self.backend)
        return self._step(self.params, self.config, ids, positions, cache, last_only)

    __call__ = forward

    # --- generation -----------------------------------------------------------------------
    def eos_ids(self) -> set[int]:
        found = set(self.config.eos_token_id)
        if self.tokenizer is not None:
            found.update(self.tokenizer.eos_ids)
        return found

    def generate(self, prompt_ids, max_new_tokens: int, temperature: float = 0.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None, stream: Callable | None = None,
                 stop_at_eos: bool = True):
        """New token ids after `prompt_ids`: a list of ints, equal-length lists for a batch, or
        a 1-d (one prompt) / 2-d (a batch) integer tensor or array (accel, numpy, torch, ...).

        Safe to call from several threads: calls on one model take turns (they share its KV
        cache); load one model per thread to generate in parallel (docs/errors.md).

        temperature 0 is greedy; otherwise tokens are sampled on the host from Philox(seed), the
        same on every backend. `stream` is called with each new id (a list of ids for a batch)
        as soon as it exists. A sequence stops after an end-of-sequence id unless stop_at_eos is
        False. Returns a list of ids (a list of lists for a batch).
        """
        if isinstance(prompt_ids, (list, tuple)):
            single = not (len(prompt_ids) and isinstance(prompt_ids[0], (list, tuple)))
            rows = [list(prompt_ids)] if single else [list(r) for r in prompt_ids]
        else:  # a tensor or array: 1-d is one prompt, 2-d a batch
            ids = self._as_tensor(prompt_ids)
            single = ids.ndim == 1
            rows = ids.tolist()
            rows = [rows] if single else rows
        if max_new_tokens < 0:
            raise ModelError(f"max_new_tokens must be >= 0, got {max_new_tokens}", hint="ask for 0 or more tokens")
        sampler = Sampler(temperature, top_k, top_p, seed)
        self.config.check_sequence(len(rows[0]) + max_new_tokens)
        if max_new_tokens == 0:
            return [] if single else [[] for _ in rows]
        with self._lock, self.backend.inference():  # inference: e.g. torch.inference_mode
            self.setup_cache(len(rows), len(rows[0]) + max_new_tokens)
            return self._generate(rows, single, max_new_tokens, sampler, stream, stop_at_eos)

    def _generate(self, rows: list[list[int]], single: bool, max_new_tokens: int, sampler: Sampler,
                  stream: Callable | None, stop_at_eos: bool):
        """Prefill, then one decode step per new token, timed into `last_generation`."""
        t = len(rows[0])
        eos = self.eos_ids() if stop_at_eos else set()
        out: list[list[int]] = [[] for _ in rows]
        done = [False] * len(rows)
        start = time.perf_counter()
        logits = self.forward(rows, 0, last_only=True)                   # (B, 1, V)
        step_ids = sampler(logits[:, -1])                                # (B,)
        prefill_s = time.perf_counter() - start
        start = time.perf_counter()
        for step in range(max_new_tokens):
            for i, tok in enumerate(step_ids):
                if not done[i]:
                    out[i].append(tok)
                    done[i] = tok in eos
            if stream is not None:
                stream(step_ids[0] if single else list(step_ids))
            if all(done) or step == max_new_tokens - 1:
                break
            logits = self.forward([[tok] for tok in step_ids], t + step)  # (B, 1, V)
            step_ids = sampler(logits[:, -1])
        self.backend.synchronize()
        self.last_generation = GenerationStats(t, max(len(o) for o in out), prefill_s,
                                               time.perf_counter() - start,
                                               None if sampler.greedy else sampler.seed)
        return out[0] if single else out

    def generate_text(self, prompt: str, max_new_tokens: int, stream: Callable[[str], None] | None = None,
                      **sampling) -> str:
        """Encode `prompt`, generate, and decode the new tokens (streaming text pieces if asked)."""
        if self.tokenizer is None:
            raise ModelError("this model has no tokenizer", hint="put tokenizer.json in the model directory")
        ids = self.tokenizer.encode(prompt)
        decoder = self.tokenizer.stream(ids)
        pieces: list[str] = []

        def on_token(token_id: int) -> None:
            piece = decoder.push(token_id)
            if piece:
                pieces.append(piece)
                if stream is not None:
                    stream(piece)

        self.generate(ids, max_new_tokens, stream=on_token, **sampling)
        tail = decoder.flush()
        if tail:
            pieces.append(tail)
            if stream is not None:
                stream(tail)
        return "".join(pieces)

