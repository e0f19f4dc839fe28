"""Ranks that must agree (model config, data file, dtype) compare a checksum at start."""
from __future__ import annotations

import hashlib
from collections import Counter

from accel.core.errors import DistributedError

DIGEST_BYTES = 16


def checksum(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else bytes(value)
    return hashlib.blake2b(raw, digest_size=DIGEST_BYTES).digest()


def check_agreement(name: str, value: str | bytes) -> None:
    """Every rank passes its own `value` of the thing called `name`; raises DistributedError on
    every rank, naming the ranks whose value differs from the majority (ties: from rank 0's).
    One rank: nothing to compare."""
    from accel.distributed import process_group as pg

    if pg.STATE.info is None or pg.STATE.info.world_size == 1:
        return
    import torch

    from accel.distributed.engine import all_gather_into, run_guarded

    info = pg.STATE.info
    mine = torch.frombuffer(bytearray(checksum(value)), dtype=torch.uint8)
    out = torch.empty(info.world_size * DIGEST_BYTES, dtype=torch.uint8)
    run_guarded(f"check_agreement({name!r})", lambda: all_gather_into(out, mine, pg.STATE.control),
                info.rank, info.world_size, max(pg.STATE.timeout_s, pg.CONTROL_TIMEOUT_MIN_S))
    digests = [bytes(out[r * DIGEST_BYTES:(r + 1) * DIGEST_BYTES].tolist()) for r in range(info.world_size)]
    if len(set(digests)) == 1:
        return
    counts = Counter(digests)
    top = max(counts.values())
    majority = digests[0] if counts[digests[0]] == top else next(d for d in digests if counts[d] == top)
    agree = [r for r, d in enumerate(digests) if d == majority]
    differ = [r for r, d in enumerate(digests) if d != majority]
    raise DistributedError(
        f"ranks disagree on {name}: rank(s) {', '.join(map(str, differ))} differ from rank(s) "
        f"{', '.join(map(str, agree))} (checksums "
        + ", ".join(f"rank {r}: {d.hex()[:12]}" for r, d in enumerate(digests)) + ")",
        hint=f"give every rank the same {name} (same file, same flags, same ACCEL_* environment)")
