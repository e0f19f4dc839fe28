"""FP8 training against bfloat16 on the same model, data and seed: the loss curves side by side.

Both runs are accel's own training loop (accel.train.loop) with float32 master weights and
bfloat16 compute; the FP8 run additionally runs the policy's linears through `ops.fp8_linear`
(forward, input-grad and weight-grad GEMMs in FP8, float32 accumulation). Used by the slow test and `accel bench
--section fp8`; the figure is the relative gap of the smoothed (EMA) loss at the end.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import accel
from accel.core import dtypes as dt

from .linear import Fp8Plan
from .recipes import get_recipe


@dataclass(frozen=True)
class RunResult:
    losses: tuple[float, ...]
    seconds: float

    def smoothed(self, beta: float = 0.98) -> np.ndarray:
        out, avg = [], 0.0
        for i, v in enumerate(self.losses):
            avg = beta * avg + (1 - beta) * v
            out.append(avg / (1 - beta ** (i + 1)))  # bias-corrected EMA
        return np.asarray(out)


def all_blocks_plan(config, recipe: str, exclude: tuple[str, ...] = ()) -> Fp8Plan:
    """Every linear of the transformer blocks in FP8 with `recipe` (the LM head stays out), less
    those whose name contains one of `exclude` (e.g. ("v_proj",), see docs/fp8.md)."""
    from .policy import linear_shapes

    r = get_recipe(recipe)
    return Fp8Plan({n: r for n in linear_shapes(config)
                    if n.startswith("model.layers.") and not any(e in n for e in exclude)})


# The comparison corpus (accel.models.corpus): 700 k tokens sampled from the bundled model, so
# 600 steps of 8 × 65-token windows read about half of it once; 5 % held out.
CORPUS_TOKENS = 700_000
CORPUS_VAL_FRACTION = 0.05


def sampled_data(tokens: int = CORPUS_TOKENS, seed: int = 0, backend="torch:cpu"):
    """TokenData of stories sampled from the bundled model at temperature 1 on `backend` (about
    2 minutes on two CPU cores): fresh text for every window, where models/data/stories.txt
    would be cycled a dozen times in 300 steps (docs/fp8.md, "FP8 training against bfloat16")."""
    import accel.models
    from accel.models.corpus import sample_corpus
    from accel.train.data import TokenData

    model = accel.models.load_pretrained(accel.models.bundled_path(), backend=backend)
    ids = sample_corpus(model, tokens, seed=seed)
    return TokenData.from_ids(ids, f"bundled model, {tokens} sampled tokens, seed {seed}, {backend}",
                              val_fraction=CORPUS_VAL_FRACTION)


def mixed_loss(config):
    """loss(params, inputs, targets): bfloat16 compute from float32 master weights, logits and
    cross-entropy in float32 (as torch autocast does), so a 0.1% loss difference is not lost in
    bfloat16's 0.4% spacing: the loss `accel train --dtype bfloat16` computes (its make_loss
    casts the masters, causal_lm_loss takes the logits to float32)."""
    from accel.models.llama import causal_lm_loss
    from accel.train.loop import make_loss

    return make_loss(causal_lm_loss(config), dt.bfloat16)


def train_run(config, data, steps: int, *, plan: Fp8Plan | None, batch: int = 8, seq: int = 64,
              lr: float = 1e-3, seed: int = 0, backend=None, dtype: str = "bfloat16") -> RunResult:
    """`steps` steps of accel's own training loop (accel.train.loop.train, as `accel train` runs
    it: AdamW with betas (0.9, 0.95) and weight decay 0.1, 20 warmup steps, cosine to 0.1 × lr,
    global-norm clipping at 1.0) from `init_params(config, seed)`, in `dtype` compute with float32
    master weights; `plan` puts its linears in FP8. The comparison is only as good as the
    protocol: with a constant lr, AdamW's default beta2 0.999 and no clipping, the small
    preset's rowwise gap was 14 % in accel and 16.5 % in an independent plain-torch FP8
    (benchmarks/fp8_torch_reference.py), against 0.5 % in that torch model under this loop's
    settings (docs/fp8.md)."""
    from accel.models.llama import causal_lm_loss, init_params
    from accel.train.loop import TrainConfig, train

    backend = accel.get_backend(backend)
    params = init_params(config, seed, backend, dt.float32)
    loss = causal_lm_loss(config)
    cfg = TrainConfig(steps=steps, batch_size=batch, seq_len=seq, lr=lr, seed=seed, dtype=dtype,
                      eval_every=0, spike_factor=0.0)  # every step counts: no skips, no evals
    _, _, result = train(plan.wrap(loss) if plan is not None else loss, params, data, cfg, backend,
                         progress=False)
    return RunResult(tuple(result.losses), result.seconds)


def relative_gap(fp8: RunResult, baseline: RunResult, tail: int = 20) -> float:
    """|EMA(fp8) − EMA(bf16)| / EMA(bf16) averaged over the last `tail` steps."""
    a, b = fp8.smoothed()[-tail:], baseline.smoothed()[-tail:]
    return float(np.mean(np.abs(a - b) / b))
