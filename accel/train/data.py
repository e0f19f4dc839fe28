"""Training data: a text file tokenized once, split into train / held-out tokens, and batches
drawn reproducibly from (seed, step, micro-step).

Each batch comes from its own counter-based generator (numpy's Philox keyed by the seed and
the batch's position), so batch k is the same on every backend and after any resume: the data
position in a checkpoint is simply the step count.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np

from accel.core.errors import ModelError


@dataclass(frozen=True)
class TokenData:
    train: np.ndarray          # int64 token ids
    val: np.ndarray
    source: str                # the text file
    sha256: str                # of the text, recorded in checkpoints

    @classmethod
    def from_text_file(cls, path: str, tokenizer, val_fraction: float = 0.1) -> "TokenData":
        """Documents are separated by blank lines; each is encoded with the tokenizer's special
        tokens (bos first, as at generation time) and followed by eos, then all are joined.
        The last `val_fraction` of the tokens is held out."""
        if not os.path.isfile(path):
            raise ModelError(f"training data not found: {path}", hint="pass --data PATH to a UTF-8 text file")
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError as exc:
            raise ModelError(f"{path} is not UTF-8 text: {exc}", hint="convert the file to UTF-8") from None
        eos = list(tokenizer.eos_ids[:1])
        docs = [d.strip() for d in text.split("\n\n") if d.strip()]
        ids = np.asarray([i for d in docs for i in tokenizer.encode(d) + eos], dtype=np.int64)
        n_val = int(len(ids) * val_fraction)
        train, val = (ids[:-n_val], ids[-n_val:]) if n_val else (ids, ids[:0])
        return cls(train, val, os.path.abspath(path), hashlib.sha256(text.encode("utf-8")).hexdigest())

    def check(self, seq_len: int) -> None:
        for name, part in (("training", self.train), ("held-out", self.val)):
            if len(part) < seq_len + 1:
                raise ModelError(f"{self.source}: the {name} split has {len(part)} tokens, fewer than "
                                 f"--seq-len + 1 = {seq_len + 1}",
                                 hint="use a shorter --seq-len or a longer text file")

    def batch(self, split: str, batch_size: int, seq_len: int, seed: int, *position: int) -> np.ndarray:
        """(batch_size, seq_len + 1) windows: inputs are [:, :-1], targets [:, 1:]."""
        tokens = self.train if split == "train" else self.val
        rng = np.random.Generator(np.random.Philox(key=_key(seed, split, *position)))
        starts = rng.integers(0, len(tokens) - seq_len, batch_size)
        return np.stack([tokens[s:s + seq_len + 1] for s in starts])


def _key(seed: int, split: str, *position: int) -> int:
    """A 64-bit Philox key from the seed, the split and the batch's position (step, micro)."""
    digest = hashlib.blake2b(repr((int(seed), split, *map(int, position))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")
