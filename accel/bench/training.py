"""Training section: tokens/s of one optimizer step (forward, backward, AdamW) per backend.

accel rows run `value_and_grad` of the Llama loss and `AdamW.update` on each backend eagerly,
and the whole step compiled as one graph (`accel.train.compiled_step`: forward, backward and
the AdamW update with the step count as a tensor, so one trace serves every step); torch gets a
compiled row per graph compiler (generated code, inductor). The reference row is
Hugging Face LlamaForCausalLM trained by torch autograd and `torch.optim.AdamW` on the same
weights and batches. float32 throughout.
"""
from __future__ import annotations

import time

import numpy as np

import accel
from accel.bench import hf_reference
from accel.bench.machine import wait
from accel.bench.model_rows import graph_compilers, has_graph_compiler, host_params, using_compiler
from accel.bench.timing import Case
from accel.autodiff.optim import AdamW
from accel.train.compiled_step import StepConfig, compile_train_step, eager_train_step


def _batch(config, batch: int, seq: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    windows = np.random.default_rng(seed + 2).integers(0, config.vocab_size, (batch, seq + 1), dtype=np.int64)
    return windows[:, :-1], windows[:, 1:]


def accel_train_case(config, host, backend, mode: str, settings, x_host, y_host,
                     compiler: str | None = None) -> Case:
    from accel.models.llama import causal_lm_loss

    state = {"params": {k: accel.from_numpy(v, backend) for k, v in host.items()}, "i": 0}
    optimizer = AdamW(lr=1e-4, weight_decay=0.1)
    state["opt"] = optimizer.init(state["params"])
    if mode == "compiled":
        run_step = compile_train_step(causal_lm_loss(config), StepConfig(optimizer=optimizer), backend=backend)
    else:
        run_step = eager_train_step(causal_lm_loss(config), StepConfig(optimizer=optimizer))
    x, y = accel.from_numpy(x_host, backend), accel.from_numpy(y_host, backend)

    def step() -> float:
        start = time.perf_counter()
        with using_compiler(backend, compiler):
            loss, state["params"], state["opt"] = run_step(state["params"], state["opt"], (x, y), state["i"])
        state["i"] += 1
        wait(state["params"]["lm_head.weight"])
        float(loss)
        return time.perf_counter() - start

    key = f"train/{backend.spec}/{mode}" + (f"/{compiler}" if compiler else "")
    budget = settings.row_budget_s * (settings.inductor_budget_factor if compiler == "inductor" else 1)
    return Case(key, step, key, budget)


def torch_train_case(config, host, settings, x_host, y_host) -> Case | str:
    why = hf_reference.available()
    if why:
        return why
    import torch
    import torch.nn.functional as F

    model = hf_reference.HFModel(config, host, "float32").model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    x, y = torch.from_numpy(x_host), torch.from_numpy(y_host)

    def step() -> float:
        start = time.perf_counter()
        logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
        return time.perf_counter() - start

    return Case("train/HF transformers (torch autograd)", step,
                "train/hf", settings.row_budget_s)


def build_train_cases(backends, settings) -> tuple[list[dict], list[Case]]:
    from accel.models import LlamaConfig

    config = LlamaConfig(model_type="llama", rms_norm_eps=1e-5, initializer_range=0.02, **settings.train_model)
    host = host_params(config, settings.seed)
    x, y = _batch(config, settings.train_batch, settings.train_seq, settings.seed)
    rows, cases = [], []
    reference = torch_train_case(config, host, settings, x, y) if settings.hf else "not asked for (--no-hf)"
    rows.append({"name": "HF transformers (torch autograd)", "backend": "torch:cpu", "mode": "reference",
                 **({"case": reference} if isinstance(reference, Case) else {"skipped": reference})})
    for backend in backends:
        for mode in settings.modes:
            if mode == "compiled" and not has_graph_compiler(backend) and not settings.interpreter_rows:
                continue
            for compiler in graph_compilers(backend, settings) if mode == "compiled" else (None,):
                runner = ("graph compiler" if has_graph_compiler(backend) else "graph interpreter") \
                    if mode == "compiled" else "eager dispatch"
                row = {"name": f"{backend.spec} {mode}" + (f" ({compiler})" if compiler else ""),
                       "backend": backend.spec, "mode": mode,
                       "runner": runner + (f": {compiler}" if compiler else "")}
                row["case"] = accel_train_case(config, host, backend, mode, settings, x, y, compiler)
                rows.append(row)
    cases = [r["case"] for r in rows if "case" in r]
    tokens = settings.train_batch * settings.train_seq
    for r in rows:
        r["tokens_per_step"] = tokens
    return rows, cases, config


def summarise_train(rows: list[dict]) -> list[dict]:
    out = []
    ref = None
    for r in rows:
        entry = {k: v for k, v in r.items() if k != "case"}
        if "case" in r:
            s = r["case"].summary()
            entry.update({k: v for k, v in s.items()})
            if "median_s" in s:
                entry["tokens_per_s"] = r["tokens_per_step"] / s["median_s"]
        if r["mode"] == "reference":
            ref = entry.get("tokens_per_s")
        out.append(entry)
    for entry in out:
        if ref and entry.get("tokens_per_s"):
            entry["ratio_to_reference"] = entry["tokens_per_s"] / ref
    return out
