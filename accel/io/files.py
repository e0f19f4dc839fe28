"""File-system helpers shared by everything that writes files atomically (checkpoints, safetensors)."""
from __future__ import annotations

import os


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read the umask is to set it: put it straight back
    os.umask(mask)
    return mask


def give_default_mode(path: str, directory: bool = False) -> None:
    """The permissions `open()`/`mkdir()` would have given `path` under this process's umask:
    `tempfile.mkstemp`/`mkdtemp` make 0600/0700, but a checkpoint is an ordinary file."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())
