"""Training data: a text file tokenized once, split into train / held-out tokens, and windows
drawn reproducibly per sample.

Sample n (a global counter over the whole run, accel/train/batching.py) is the window starting
where numpy's counter-based Philox generator keyed by (seed, split, n) puts it. Nothing depends
on the rank, the micro-batch or the backend, so the data is the same on any number of ranks,
after any resume and after a resize; the data cursor in a checkpoint is the count of consumed
samples.
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
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return cls(*_hold_out(ids, val_fraction), os.path.abspath(path), digest)

    @classmethod
    def from_ids(cls, ids, source: str, val_fraction: float = 0.1) -> "TokenData":
        """Token ids already joined as `from_text_file` joins documents (e.g. a sampled corpus,
        accel.models.corpus); the last `val_fraction` is held out, the hash is of the ids."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if ids.ndim != 1:
            raise ModelError(f"{source}: token ids must be one flat sequence, got shape {list(ids.shape)}",
                             hint="join the documents (bos ... eos) into one 1-d array")
        return cls(*_hold_out(ids, val_fraction), source, hashlib.sha256(ids.tobytes()).hexdigest())

    def check(self, seq_len: int) -> None:
        for name, part in (("training", self.train), ("held-out", self.val)):
            if len(part) < seq_len + 1:
                raise ModelError(f"{self.source}: the {name} split has {len(part)} tokens, fewer than "
                                 f"--seq-len + 1 = {seq_len + 1}",
                                 hint="use a shorter --seq-len or a longer text file")

    def windows(self, split: str, sample_ids, seq_len: int, seed: int) -> np.ndarray:
        """(len(sample_ids), seq_len + 1) windows: inputs are [:, :-1], targets [:, 1:]."""
        tokens = self.train if split == "train" else self.val
        return np.stack([tokens[s:s + seq_len + 1] for s in
                         (sample_start(seed, split, n, len(tokens) - seq_len) for n in sample_ids)])


def _hold_out(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, val): the last `val_fraction` of the tokens is held out."""
    n_val = int(len(ids) * val_fraction)
    return (ids[:-n_val], ids[-n_val:]) if n_val else (ids, ids[:0])


def sample_start(seed: int, split: str, sample_id: int, high: int) -> int:
    """Where sample `sample_id` starts: a per-sample generator, so no sample depends on another."""
    digest = hashlib.blake2b(repr((int(seed), split, int(sample_id))).encode(), digest_size=8).digest()
    rng = np.random.Generator(np.random.Philox(key=int.from_bytes(digest, "little")))
    return int(rng.integers(0, high))
