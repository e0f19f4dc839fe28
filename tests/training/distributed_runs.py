"""Run `accel train` on N real processes joined by gloo on 127.0.0.1, for the data-parallel and
elastic tests. The ranks are forked from the test process (torch and accel already imported,
so a rank starts in milliseconds, not seconds); each gets torchrun's environment (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and runs the same CLI entry point torchrun
would. One test launches through torchrun itself (test_train_data_parallel.py)."""
from __future__ import annotations

import json
import multiprocessing
import os
import socket
import sys

from tests.training.test_train import CORPUS

# the micro preset: a step takes milliseconds; the tokenizer is made once per session
COMMON = ["--model-config", "micro", "--data", CORPUS, "--seq-len", "32", "--lr", "3e-3", "--warmup", "5",
          "--eval-every", "0", "--no-progress"]


def tokenizer_dir(path) -> list[str]:
    """A 300-token byte-level BPE trained on the corpus, saved as a model directory would hold
    it; returns the --tokenizer arguments."""
    from accel.cli.train import _tokenizer_config
    from accel.io.tokenizer import Tokenizer, train_byte_level_bpe

    with open(CORPUS, encoding="utf-8") as f:
        text = f.read()
    vocab = train_byte_level_bpe([p for p in text.split("\n\n") if p.strip()], 300)
    tok = Tokenizer(vocab, bos_id=vocab.token_to_id("<s>"), eos_ids=[vocab.token_to_id("</s>")])
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(vocab.to_str())
    with open(os.path.join(path, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        f.write(_tokenizer_config(tok))
    return ["--tokenizer", str(path)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, argv: list[str], env: dict) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "OMP_NUM_THREADS": "1", **env})
    from accel.cli.main import main

    try:
        code = main(argv)
    except BaseException as exc:   # a crash must fail the test, not hang it
        print(f"rank {rank}: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 3
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_ranks(world: int, argv: list[str], env: dict | None = None, timeout: float = 120.0,
              extra: dict[int, list[str]] | None = None) -> list[int]:
    """Exit codes of `accel train *argv` on `world` ranks (one process, in-process, for world 1);
    `extra` appends arguments on some ranks only (a broken deployment)."""
    if world == 1:
        from accel.cli.main import main

        return [main(["train", *argv])]
    import accel
    import accel.distributed  # noqa: F401  (imported once here, inherited by every forked rank)

    accel.get_backend("numpy")   # loads every backend class (torch, jax...) before the fork
    ctx = multiprocessing.get_context("fork")
    port = free_port()
    procs = [ctx.Process(target=_rank, args=(r, world, port, ["train", *argv, *(extra or {}).get(r, [])], env or {})) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    codes = []
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
        codes.append(p.exitcode)
    return codes


def summary(out) -> dict:
    with open(os.path.join(out, "training.json")) as f:
        return json.load(f)
