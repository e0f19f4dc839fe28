"""accel.io.safetensors: safetensors written atomically and read by the reference library (and the
other way round), streamed onto a backend, and every way a file can be broken reported clearly."""
from __future__ import annotations

import json
import os

import ml_dtypes
import numpy as np
import pytest

import accel
from accel.io.safetensors import load_safetensors, read_index, read_metadata, save_safetensors

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def sample_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "w.f32": rng.standard_normal((3, 5)).astype(np.float32),
        "w.f64": rng.standard_normal((2,)),
        "w.f16": rng.standard_normal((4, 1)).astype(np.float16),
        "w.bf16": rng.standard_normal((7,)).astype(np.float32).astype(ml_dtypes.bfloat16),
        "w.e4m3": rng.standard_normal((3,)).astype(np.float32).astype(ml_dtypes.float8_e4m3fn),
        "w.e5m2": rng.standard_normal((3,)).astype(np.float32).astype(ml_dtypes.float8_e5m2),
        "i8": np.array([-3, 7], np.int8),
        "i32": np.arange(5, dtype=np.int32),
        "step": np.array(42, np.int64),
        "flags": np.array([True, False]),
        "empty": np.zeros((0, 3), np.float32),
    }


def assert_same(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.asarray(got).tobytes() == np.asarray(want).tobytes()


def test_roundtrip_every_dtype_on_the_backend(tmp_path, backend):
    arrays = sample_arrays()
    path = str(tmp_path / "all.safetensors")
    tensors = {k: accel.from_numpy(v, backend=backend) for k, v in arrays.items()}
    save_safetensors(path, tensors, {"step": "42", "note": "hello"})
    loaded = load_safetensors(path, backend=backend)
    assert set(loaded) == set(arrays)
    for name, want in arrays.items():
        assert loaded[name].backend is backend
        assert_same(loaded[name].numpy(), want)
    assert read_metadata(path) == {"step": "42", "note": "hello"}


def test_files_we_write_are_read_by_the_safetensors_library(tmp_path):
    ml = {np.dtype(ml_dtypes.bfloat16), np.dtype(ml_dtypes.float8_e4m3fn), np.dtype(ml_dtypes.float8_e5m2)}
    arrays = {k: v for k, v in sample_arrays().items() if v.dtype not in ml}
    path = str(tmp_path / "ours.safetensors")
    save_safetensors(path, arrays, {"format": "np"})
    theirs = safetensors_numpy.load_file(path)  # numpy loader: no bfloat16/float8 there
    assert set(theirs) == set(arrays)
    for name, want in arrays.items():
        assert_same(theirs[name], want)


def test_bfloat16_and_float8_we_write_are_read_by_safetensors_torch(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    arrays = sample_arrays()
    path = str(tmp_path / "low.safetensors")
    save_safetensors(path, arrays)
    theirs = load_file(path)
    for name in ("w.bf16", "w.e4m3", "w.e5m2"):
        as_float = theirs[name].to(torch.float32).numpy()
        np.testing.assert_array_equal(as_float, arrays[name].astype(np.float32))


def test_files_from_safetensors_torch_load_here(tmp_path, backend):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    src = {"a": torch.randn(4, 6, dtype=torch.bfloat16), "b": torch.arange(10, dtype=torch.int64),
           "c": torch.randn(3, dtype=torch.float16)}
    path = str(tmp_path / "torch.safetensors")
    save_file(src, path, metadata={"k": "v"})
    loaded = load_safetensors(path, backend=backend)
    np.testing.assert_array_equal(loaded["a"].numpy().astype(np.float32), src["a"].float().numpy())
    np.testing.assert_array_equal(loaded["b"].numpy(), src["b"].numpy())
    assert loaded["a"].dtype is accel.bfloat16 and loaded["c"].dtype is accel.float16
    assert read_metadata(path) == {"k": "v"}


def test_dtype_on_load_casts_floats_only_rounding_to_nearest_even(tmp_path, backend):
    arrays = sample_arrays()
    path = str(tmp_path / "cast.safetensors")
    save_safetensors(path, arrays)
    loaded = load_safetensors(path, backend=backend, dtype="bfloat16")
    assert loaded["w.f32"].dtype is accel.bfloat16
    assert_same(loaded["w.f32"].numpy(), arrays["w.f32"].astype(ml_dtypes.bfloat16))
    assert loaded["step"].dtype is accel.int64 and loaded["flags"].dtype is accel.bool_


def test_numpy_weights_stay_writable_and_never_write_back(tmp_path):
    path = str(tmp_path / "cow.safetensors")
    save_safetensors(path, {"w": np.ones((4, 4), np.float32)})
    first = load_safetensors(path, backend="numpy")["w"]
    first.data[0, 0] = 5.0  # the mapping is copy-on-write: private to this process
    assert load_safetensors(path, backend="numpy")["w"].numpy()[0, 0] == 1.0


def test_save_is_atomic_a_failed_write_leaves_the_old_file(tmp_path):
    path = str(tmp_path / "ckpt.safetensors")
    save_safetensors(path, {"w": np.zeros(3, np.float32)}, {"step": "1"})

    class Exploding(dict):  # the second tensor fails while the file is being written
        def __getitem__(self, name):
            if name == "b":
                raise RuntimeError("disk on fire")
            return dict.__getitem__(self, name)

    with pytest.raises(RuntimeError, match="disk on fire"):
        save_safetensors(path, Exploding(a=np.ones(3, np.float32), b=np.ones(3, np.float32)), {"step": "2"})
    assert read_metadata(path) == {"step": "1"}
    assert sorted(os.listdir(tmp_path)) == ["ckpt.safetensors"]  # no temp file left behind
    assert oct(os.stat(path).st_mode & 0o777) != oct(0o600)


def test_sharded_index_loads_every_shard(tmp_path, backend):
    save_safetensors(str(tmp_path / "part-1.safetensors"), {"a": np.arange(3, dtype=np.float32)})
    save_safetensors(str(tmp_path / "part-2.safetensors"), {"b": np.ones((2, 2), np.float32)})
    with open(tmp_path / "model.safetensors.index.json", "w") as f:
        json.dump({"metadata": {}, "weight_map": {"a": "part-1.safetensors", "b": "part-2.safetensors"}}, f)
    loaded = load_safetensors(str(tmp_path), backend=backend)
    assert sorted(loaded) == ["a", "b"]
    np.testing.assert_array_equal(loaded["b"].numpy(), np.ones((2, 2), np.float32))


# --- broken files: each a ModelError that says what is wrong and what to do ------------------
def _write(path, header: bytes, data: bytes = b"", length: int | None = None):
    with open(path, "wb") as f:
        f.write((len(header) if length is None else length).to_bytes(8, "little") + header + data)


def test_missing_file(tmp_path):
    with pytest.raises(accel.ModelError, match="not found") as info:
        load_safetensors(str(tmp_path / "nope.safetensors"))
    assert info.value.hint


def test_directory_without_weights_names_what_it_found(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(accel.ModelError, match="pytorch_model.bin") as info:
        read_index(str(tmp_path))
    assert "safetensors" in info.value.hint


def test_truncated_file_is_reported_with_the_tensor(tmp_path):
    path = str(tmp_path / "cut.safetensors")
    save_safetensors(path, {"big": np.ones(1000, np.float32)})
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 100)
    with pytest.raises(accel.ModelError, match=r"'big'.*truncated") as info:
        load_safetensors(path)
    assert "re-download" in info.value.hint


def test_header_length_past_end_of_file(tmp_path):
    path = str(tmp_path / "h.safetensors")
    _write(path, b"{}", length=10_000)
    with pytest.raises(accel.ModelError, match="points past the end"):
        load_safetensors(path)


def test_too_short_for_a_header(tmp_path):
    path = str(tmp_path / "tiny.safetensors")
    open(path, "wb").write(b"abc")
    with pytest.raises(accel.ModelError, match="too short"):
        load_safetensors(path)


def test_header_that_is_not_json(tmp_path):
    path = str(tmp_path / "j.safetensors")
    _write(path, b"{not json")
    with pytest.raises(accel.ModelError, match="not valid JSON"):
        load_safetensors(path)


def test_unknown_dtype_names_the_tensor_and_the_dtypes_we_read(tmp_path):
    path = str(tmp_path / "u.safetensors")
    _write(path, json.dumps({"q": {"dtype": "U16", "shape": [2], "data_offsets": [0, 4]}}).encode(), b"\0" * 4)
    with pytest.raises(accel.ModelError, match="'q' has dtype 'U16'") as info:
        load_safetensors(path)
    assert "BF16" in info.value.hint


def test_size_that_contradicts_shape(tmp_path):
    path = str(tmp_path / "s.safetensors")
    _write(path, json.dumps({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode(), b"\0" * 8)
    with pytest.raises(accel.ModelError, match="needs 12 bytes"):
        load_safetensors(path)


def test_metadata_must_be_strings(tmp_path):
    with pytest.raises(accel.ModelError, match="str to str") as info:
        save_safetensors(str(tmp_path / "m.safetensors"), {"w": np.ones(1, np.float32)}, {"step": 3})
    assert "json.dumps" in info.value.hint
