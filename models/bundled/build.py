"""Rebuild the bundled model: `python -m accel.models.bundled.build [--seed N]`.

Trains a small byte-level BPE tokenizer on corpus.txt (next to this file) and writes a seeded
random Llama (config.json, model.safetensors, tokenizer.json) into this directory. The training
issue replaces the random weights with trained ones; this script stays the way to start over.
"""
from __future__ import annotations

import argparse
import json
import os

from accel.io.safetensors import save_safetensors
from accel.io.tokenizer import train_byte_level_bpe
from accel.models import LlamaConfig, bundled_path, init_params

VOCAB_SIZE = 512

CONFIG = LlamaConfig(
    model_type="llama", vocab_size=VOCAB_SIZE, hidden_size=128, intermediate_size=256,
    num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
    rope_theta=10000.0, max_position_embeddings=512, tie_word_embeddings=False,
    initializer_range=0.02, bos_token_id=0, eos_token_id=(1,), torch_dtype="float32",
)


def build(out_dir: str, seed: int = 0) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "corpus.txt"), encoding="utf-8") as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    tokenizer = train_byte_level_bpe(lines, VOCAB_SIZE, special_tokens=("<s>", "</s>"), bos="<s>")
    assert tokenizer.token_to_id("<s>") == CONFIG.bos_token_id and tokenizer.token_to_id("</s>") == 1
    os.makedirs(out_dir, exist_ok=True)
    tokenizer.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(CONFIG.to_dict(), f, indent=2, sort_keys=True)
        f.write("\n")
    params = init_params(CONFIG, seed=seed, backend="numpy")
    save_safetensors(os.path.join(out_dir, "model.safetensors"), params,
                     {"format": "pt", "accel": f"seeded random llama, seed {seed}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=bundled_path())
    args = parser.parse_args()
    build(args.out, args.seed)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
