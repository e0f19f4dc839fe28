"""safetensors checkpoints: streaming load onto any backend, atomic save. No pickle anywhere.

The format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length N,
N bytes of JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`,
then the raw little-endian data, offsets counted from the end of the header.

Loading reads one tensor at a time into memory of its own (cast on the host when another dtype
is asked for) and hands it to the backend, so the process never holds two full copies of the
weights (peak within 1.3x of their size: benchmarks/load_memory.py) and the loaded model does
not depend on the file afterwards: truncating or rewriting model.safetensors while the model
runs changes nothing.

`mmap=True` is the zero-copy option: the file is mapped copy-on-write and a host backend (numpy,
torch:cpu) keeps views of the mapping, so loading costs no copy. Its risk: the weights stay
backed by the file, so if the file is truncated later the next read of a weight kills the process
with SIGBUS, and if it is rewritten in place the running model silently changes (pages not yet
read come from the new bytes). Use it only for files nobody modifies while the model lives.
`safetensors`' own numpy loader is not used because it lacks bfloat16.
"""
from __future__ import annotations

import json
import math
import mmap
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import numpy as np

from accel.core import dtypes as dt
from accel.core.errors import ModelError
from accel.core.tensor import Tensor
from accel.io.files import give_default_mode

# safetensors dtype codes <-> accel dtypes (the ones accel holds; others are reported, not guessed)
TO_ACCEL: dict[str, dt.DType] = {
    "F64": dt.float64, "F32": dt.float32, "F16": dt.float16, "BF16": dt.bfloat16,
    "F8_E4M3": dt.float8_e4m3fn, "F8_E5M2": dt.float8_e5m2,
    "I8": dt.int8, "I32": dt.int32, "I64": dt.int64, "BOOL": dt.bool_,
}
FROM_ACCEL: dict[dt.DType, str] = {v: k for k, v in TO_ACCEL.items()}
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors library refuses larger headers too
_PAGE = mmap.PAGESIZE
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies: its file and absolute byte range, dtype code and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: str
    begin: int
    end: int

    @property
    def accel_dtype(self) -> dt.DType:
        found = TO_ACCEL.get(self.dtype)
        if found is None:
            raise ModelError(
                f"{self.file}: tensor {self.name!r} has dtype {self.dtype!r}, which accel does not hold",
                hint=f"accel reads {', '.join(TO_ACCEL)}; convert the checkpoint "
                     "(e.g. with safetensors + torch) to one of them")
        return found

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


# --- reading headers ------------------------------------------------------------------------
def _bad(path: str, what: str, hint: str) -> ModelError:
    return ModelError(f"{path}: {what}", hint=hint)


_REWRITE = "re-download or re-save the file; it may be truncated or not a safetensors file"


def read_header(path: str) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and validate one .safetensors file's header: ({name: TensorInfo}, metadata)."""
    if not os.path.isfile(path):
        raise ModelError(f"safetensors file not found: {path}",
                         hint="check the path; a model directory needs model.safetensors or "
                              f"{INDEX_NAME} with its shards")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _bad(path, f"only {size} bytes, too short for a safetensors header", _REWRITE)
        n = int.from_bytes(head, "little")
        if n > _MAX_HEADER or 8 + n > size:
            raise _bad(path, f"header length {n} points past the end of the file ({size} bytes)", _REWRITE)
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"header is not valid JSON ({exc})", _REWRITE) from None
    if not isinstance(header, dict):
        raise _bad(path, f"header is a JSON {type(header).__name__}, not an object", _REWRITE)
    data_start, data_len = 8 + n, size - 8 - n
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise _bad(path, "__metadata__ is not a JSON object", _REWRITE)
    infos = {}
    spans = []
    for name, entry in header.items():
        try:
            code, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
            ok = isinstance(code, str) and all(isinstance(d, int) and d >= 0 for d in shape) \
                and isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise _bad(path, f"header entry for {name!r} is malformed: {entry!r}",
                       "each entry needs dtype, shape and data_offsets [begin, end]; " + _REWRITE)
        if end > data_len:
            raise _bad(path, f"tensor {name!r} ends at byte {end} of the data section but the file "
                             f"holds only {data_len} data bytes (truncated?)", _REWRITE)
        known = TO_ACCEL.get(code)
        if known is not None and end - begin != math.prod(shape) * known.itemsize:
            raise _bad(path, f"tensor {name!r}: {code} {list(shape)} needs "
                             f"{math.prod(shape) * known.itemsize} bytes, the header gives {end - begin}",
                       _REWRITE)
        infos[name] = TensorInfo(name, code, shape, path, data_start + begin, data_start + end)
        if end > begin:
            spans.append((begin, end, name))
    spans.sort()
    for (_, end, first), (begin, _, second) in zip(spans, spans[1:]):
        if begin < end:  # two tensors sharing bytes: writing one would change the other
            raise _bad(path, f"tensors {first!r} and {second!r} overlap in the data section "
                             f"({first!r} ends at byte {end}, {second!r} starts at {begin})",
                       "each tensor needs its own bytes (the safetensors library refuses this file "
                       "too); " + _REWRITE)
    return infos, {str(k): str(v) for k, v in metadata.items()}


def read_index(path: str) -> dict[str, TensorInfo]:
    """Every tensor of a checkpoint: a .safetensors file, a sharded index json, or a directory
    holding model.safetensors or model.safetensors.index.json."""
    if os.path.isdir(path):
        index = os.path.join(path, INDEX_NAME)
        single = os.path.join(path, SINGLE_NAME)
        if os.path.isfile(single):
            path = single
        elif os.path.isfile(index):
            path = index
        else:
            others = sorted(f for f in os.listdir(path) if f.endswith((".bin", ".pt", ".pth", ".safetensors")))
            raise ModelError(
                f"no {SINGLE_NAME} or {INDEX_NAME} in {path}" + (f" (found: {', '.join(others)})" if others else ""),
                hint="accel loads safetensors only (no pickle); convert .bin/.pt weights with "
                     "transformers' save_pretrained(..., safe_serialization=True)")
    if path.endswith(".json"):
        return _read_sharded(path)
    return read_header(path)[0]


def _read_sharded(index_path: str) -> dict[str, TensorInfo]:
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except FileNotFoundError:
        raise ModelError(f"index file not found: {index_path}", hint="check the path") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise _bad(index_path, f"not a valid safetensors index ({exc!r})",
                   "it must be JSON with a weight_map {tensor name: shard file}") from None
    folder = os.path.dirname(index_path)
    infos: dict[str, TensorInfo] = {}
    for shard in set(weight_map.values()):
        if not isinstance(shard, str) or not shard or os.path.isabs(shard) \
                or ".." in shard.replace("\\", "/").split("/"):
            raise _bad(index_path, f"shard path {shard!r} leaves the model directory",
                       "an index names its shards by file name inside the model directory "
                       "(e.g. model-00001-of-00002.safetensors); this one may be malicious")
    for shard in sorted(set(weight_map.values())):
        found, _ = read_header(os.path.join(folder, shard))
        for name, info in found.items():
            if weight_map.get(name) == shard:
                infos[name] = info
    missing = sorted(set(weight_map) - set(infos))
    if missing:
        raise _bad(index_path, f"{len(missing)} tensors listed in the index are not in their shards: "
                               f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}",
                   "re-download the missing or damaged shards")
    return infos


def read_metadata(path: str) -> dict[str, str]:
    """The `__metadata__` string map of a .safetensors file."""
    return read_header(path)[1]


# --- streaming load -------------------------------------------------------------------------
class _MappedFile:
    """A copy-on-write mapping of one file, giving numpy views of its tensors."""

    def __init__(self, path: str):
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if size else None

    def view(self, info: TensorInfo) -> np.ndarray:
        np_dtype = info.accel_dtype.numpy  # safetensors is little-endian, as every host we run on
        count = math.prod(info.shape)
        if count == 0:
            return np.empty(info.shape, dtype=info.accel_dtype.numpy)
        return np.frombuffer(self.map, dtype=np_dtype, count=count, offset=info.begin).reshape(info.shape)

    def release(self, info: TensorInfo) -> None:
        """Drop this tensor's pages from the process; views stay valid (they re-read the file)."""
        if self.map is None or info.end == info.begin or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = info.begin - info.begin % _PAGE
        self.map.madvise(mmap.MADV_DONTNEED, start, min(info.end, len(self.map)) - start)

    def close(self) -> None:
        if self.map is not None:
            try:
                self.map.close()
            except BufferError:
                pass  # a backend kept views (numpy: zero copy); the mapping lives as long as they do


def _host_cast(array: np.ndarray, dtype: dt.DType) -> np.ndarray:
    if array.dtype != np.float32 and (dtype in dt.LOW_PRECISION or array.dtype.itemsize < 4):
        array = array.astype(np.float32)  # ml_dtypes rounds exactly (RNE) from float32
    return array.astype(dtype.numpy)


class _ReadFile:
    """Reads each tensor into a new host array of its own (the default load)."""

    def __init__(self, path: str):
        self.file = open(path, "rb")

    def view(self, info: TensorInfo) -> np.ndarray:
        raw = np.empty(info.nbytes, dtype=np.uint8)
        self.file.seek(info.begin)
        got = self.file.readinto(memoryview(raw))
        if got != info.nbytes:
            raise ModelError(f"{info.file}: tensor {info.name!r} needs {info.nbytes} bytes at offset "
                             f"{info.begin}, the file gave {got} (changed or truncated while loading?)",
                             hint=_REWRITE)
        return raw.view(info.accel_dtype.numpy).reshape(info.shape)

    def release(self, info: TensorInfo) -> None:
        pass

    def close(self) -> None:
        self.file.close()


def load_tensors(infos: Iterable[TensorInfo], backend=None, dtype=None,
                 on_tensor: Callable[[TensorInfo], None] | None = None,
                 mmap: bool = False) -> dict[str, Tensor]:
    """Stream tensors into `backend`, one at a time. `dtype` casts floating tensors (integer and
    bool tensors keep theirs); None keeps each tensor's stored dtype. Each tensor gets memory of
    its own; `mmap=True` maps the file instead (zero copy on host backends; see the module doc
    for its risk)."""
    from accel.core.registry import get_backend

    target = get_backend(backend)
    dtype = None if dtype is None else dt.as_dtype(dtype)
    by_file: dict[str, list[TensorInfo]] = defaultdict(list)
    for info in infos:
        info.accel_dtype  # fail before loading anything when a dtype is foreign
        by_file[info.file].append(info)
    out: dict[str, Tensor] = {}
    for path, group in by_file.items():
        mapped = _MappedFile(path) if mmap else _ReadFile(path)
        try:
            for info in sorted(group, key=lambda i: i.begin):
                host = mapped.view(info)
                if dtype is not None and host.dtype.kind == "f" and host.dtype != dtype.numpy:
                    host = _host_cast(host, dtype)
                out[info.name] = Tensor(target.from_numpy(host), target)
                del host
                mapped.release(info)
                if on_tensor is not None:
                    on_tensor(info)
        finally:
            mapped.close()
    return out


def load_safetensors(path: str, backend=None, dtype=None, mmap: bool = False) -> dict[str, Tensor]:
    """All tensors of a checkpoint (file, sharded index or model directory) on `backend`."""
    return load_tensors(read_index(path).values(), backend, dtype, mmap=mmap)


# --- atomic save ----------------------------------------------------------------------------
def _describe(name: str, value) -> tuple[str, tuple[int, ...], int]:
    if isinstance(value, Tensor):
        d = value.dtype
    elif isinstance(value, np.ndarray):
        d = dt.from_numpy_dtype(value.dtype)
    else:
        raise ModelError(f"save_safetensors: {name!r} is a {type(value).__name__}, not a tensor",
                         hint="pass accel.Tensor or numpy arrays")
    code = FROM_ACCEL.get(d)
    if code is None:
        raise ModelError(f"save_safetensors: {name!r} has dtype {d.name}, which safetensors lacks",
                         hint="cast it first")
    return code, tuple(value.shape), math.prod(value.shape) * d.itemsize


def save_safetensors(path: str, tensors: Mapping[str, object], metadata: Mapping[str, str] | None = None) -> None:
    """Write `tensors` ({name: accel.Tensor or numpy array}) to `path` atomically.

    The file appears complete or not at all: it is written to a temporary file in the same
    directory, fsynced, then renamed over `path`. Tensors are copied to the host one at a time.
    Readable by the `safetensors` library and by Hugging Face transformers.
    """
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ModelError("save_safetensors: metadata must map str to str",
                         hint="encode other values with json.dumps")
    for name in tensors:
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ModelError(f"save_safetensors: invalid tensor name {name!r}", hint="use non-empty strings")
    described = {name: _describe(name, value) for name, value in tensors.items()}
    # Larger elements first, then by name (as the safetensors library orders them): each tensor
    # starts at a multiple of its element size, so memory-mapped views are aligned.
    order = sorted(tensors, key=lambda n: (-TO_ACCEL[described[n][0]].itemsize, n))
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name in order:
        code, shape, nbytes = described[name]
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        give_default_mode(tmp)
        with os.fdopen(fd, "wb") as f:
            f.write(len(blob).to_bytes(8, "little"))
            f.write(blob)
            for name in order:
                value = tensors[name]
                host = value.numpy() if isinstance(value, Tensor) else value
                host = np.ascontiguousarray(host)
                if host.dtype.byteorder == ">":
                    host = host.astype(host.dtype.newbyteorder("<"))
                if host.size:
                    f.write(host.reshape(-1).view(np.uint8).data)
                del host
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
