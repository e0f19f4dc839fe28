"""What one `accel bench` run measures: sections, backends, dtypes, sizes and repetitions."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

SECTIONS = ("roofline", "ops", "model", "train", "distributed", "fp8")
# fp8 runs only when asked (--section fp8): on a CPU its GEMMs are a long float32 emulation
DEFAULT_SECTIONS = tuple(s for s in SECTIONS if s != "fp8")

# ~100M parameters (95.6M): the model size docs/benchmarks.md targets, small enough for a 2-core CPU.
MODEL_FULL = dict(vocab_size=32000, hidden_size=640, intermediate_size=1728, num_hidden_layers=12,
                  num_attention_heads=10, num_key_value_heads=5, max_position_embeddings=1024)
# --quick: the same shape family at ~4M parameters, so the whole run fits in two minutes.
MODEL_QUICK = dict(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
# training: ~9M parameters, batch 8 x 128 tokens (a 100M model trains too slowly on 2 cores
# for five backends times five repetitions)
TRAIN_FULL = dict(vocab_size=8192, hidden_size=256, intermediate_size=688, num_hidden_layers=6,
                  num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=1024)
TRAIN_QUICK = dict(vocab_size=2048, hidden_size=128, intermediate_size=352, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)


@dataclass(frozen=True)
class BenchSettings:
    sections: tuple[str, ...] = DEFAULT_SECTIONS
    backends: tuple[str, ...] = ()          # empty: every available backend (see runner.default_backends)
    dtypes: tuple[str, ...] = ("float32", "bfloat16")
    modes: tuple[str, ...] = ("eager", "compiled")
    repeats: int = 5                        # median of this many interleaved repetitions
    model: dict = field(default_factory=lambda: dict(MODEL_FULL))
    prompt_lengths: tuple[int, ...] = (128, 512)
    decode_batches: tuple[int, ...] = (1, 8)
    decode_prompt: int = 32                 # prompt length before the timed decode steps
    decode_tokens: int = 16                 # new tokens per timed decode (the first comes from prefill)
    graph_compilers: tuple[str, ...] = ("python", "inductor")  # per backend that has several (torch)
    inductor_budget_factor: float = 10.0    # inductor compiles C++ per signature: a longer warm-up budget
    interpreter_rows: bool = False          # also time "compiled" on backends that only interpret graphs
    row_budget_s: float = 60.0              # a row whose warm-up takes longer is skipped (and says so)
    hf: bool = True                         # the Hugging Face transformers reference rows
    train_model: dict = field(default_factory=lambda: dict(TRAIN_FULL))
    train_batch: int = 8
    train_seq: int = 128
    train_repeats: int = 5
    scatter_tokens: int = 1024              # embedding gradient: tokens scattered into the vocabulary
    scatter_dim: int = 128
    op_calls: int = 1000                    # back-to-back calls per timed batch of a tiny op
    roofline_mb: int = 512                  # bytes of the bandwidth test's source array
    matmul_n: int = 4096                    # size of the square float32 matmul for the FLOP peak
    seed: int = 0
    quick: bool = False

    @classmethod
    def quick_run(cls, **overrides) -> "BenchSettings":
        """Under two minutes on two cores: a ~5M model, one prompt length, fewer tokens and
        repetitions, float32 only."""
        base = cls(dtypes=("float32",), repeats=3, model=dict(MODEL_QUICK), prompt_lengths=(128,),
                   decode_tokens=8, row_budget_s=15.0, train_model=dict(TRAIN_QUICK), train_batch=4,
                   train_seq=64, train_repeats=3, scatter_tokens=256, scatter_dim=64, op_calls=300, roofline_mb=128, matmul_n=1024, quick=True)
        return replace(base, **overrides)
