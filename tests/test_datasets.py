"""Tests of the hand-written IDX reader and the MNIST loader (no keras needed)."""

from __future__ import annotations

import gzip
import hashlib
import struct
import sys

import numpy as np
import pytest

from ir_bridge.datasets import MnistSplit, load, read_idx, verify_md5
from ir_bridge.datasets import mnist as mnist_mod
from ir_bridge.errors import InvalidModelError

_CODES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode ``arr`` as IDX, independently of the reader under test."""
    kind = arr.dtype.str[1:]
    header = bytes([0, 0, _CODES[kind], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(">" + kind).tobytes()


def write_idx(path, arr: np.ndarray, gz: bool = False):
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    # The developer's own MNIST dir must not leak into tests of the default.
    monkeypatch.delenv(mnist_mod.ENV_VAR, raising=False)


# --- bundled data -------------------------------------------------------------------


def test_bundled_files_read():
    images = read_idx(mnist_mod.BUNDLED_DIR / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(mnist_mod.BUNDLED_DIR / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert np.bincount(labels, minlength=10).min() > 800  # every digit well represented


def test_bundled_md5_passes():
    assert sorted(verify_md5(mnist_mod.BUNDLED_DIR)) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]


def test_default_load():
    split = load()
    assert isinstance(split, MnistSplit)
    assert split.x_train.shape == (8000, 28, 28, 1) and split.x_test.shape == (2000, 28, 28, 1)
    assert split.y_train.shape == (8000,) and split.y_test.shape == (2000,)
    assert split.x_train.dtype == np.float32 and split.y_train.dtype == np.int64
    for x in (split.x_train, split.x_test):
        assert x.min() == 0.0 and x.max() == 1.0
    for y in (split.y_train, split.y_test):
        assert set(np.unique(y)) == set(range(10))
    assert "bundled" in split.source and "8000" in split.source


def test_n_train():
    split = load(n_train=9000)
    assert len(split.x_train) == 9000 and len(split.x_test) == 1000
    with pytest.raises(ValueError):
        load(n_train=10000)


def test_no_keras_imported():
    # The loader must stay usable without keras; a fresh interpreter proves nothing
    # imported it as a side effect of this module.
    import subprocess

    code = "import sys, ir_bridge.datasets; ir_bridge.datasets.load(); print('keras' in sys.modules or 'tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- the reader on hand-made files --------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize(
    "arr",
    [
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-128, -1, 0, 1, 127], dtype=np.int8),
        np.array([[-32768, 300], [7, 32767]], dtype=np.int16),
        np.array([-(2**31), 2**31 - 1, 123456789], dtype=np.int32),
        np.array([[1.5, -0.25, np.inf]], dtype=np.float32),
        np.array([np.pi, -1e300, 5e-324], dtype=np.float64),
        np.zeros((0, 5), dtype=np.uint8),
    ],
    ids=["u1", "i1", "i2", "i4", "f4", "f8", "empty"],
)
def test_round_trip(tmp_path, arr, gz):
    # A misleading suffix proves gzip is detected by magic bytes, not by name.
    out = read_idx(write_idx(tmp_path / ("data.bin" if gz else "data.gz"), arr, gz=gz))
    assert out.dtype == arr.dtype and out.dtype.isnative
    assert out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


def _bad(tmp_path, data: bytes, match: str, gz: bool = False):
    path = tmp_path / "bad-idx"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(InvalidModelError, match=match) as info:
        read_idx(path)
    assert str(path) in str(info.value)


GOOD = idx_bytes(np.arange(12, dtype=np.int16).reshape(3, 4))


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_truncated_payload(tmp_path, gz):
    _bad(tmp_path, GOOD[:-1], "truncated", gz=gz)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_trailing_data(tmp_path, gz):
    _bad(tmp_path, GOOD + b"\x00", "trailing", gz=gz)


def test_truncated_header(tmp_path):
    _bad(tmp_path, b"\x00\x00", "truncated")
    _bad(tmp_path, GOOD[:6], "truncated")  # inside the dimensions
    _bad(tmp_path, b"", "truncated")


def test_bad_magic(tmp_path):
    _bad(tmp_path, b"\x01" + GOOD[1:], "magic")
    _bad(tmp_path, b"PK\x03\x04" + GOOD[4:], "magic")


def test_bad_dtype_code(tmp_path):
    _bad(tmp_path, GOOD[:2] + b"\x0a" + GOOD[3:], "dtype code 0x0A")


def test_bad_ndims(tmp_path):
    _bad(tmp_path, GOOD[:3] + b"\x00", "dimensions")


def test_header_declares_more_than_present(tmp_path):
    header = bytes([0, 0, 0x08, 2]) + struct.pack(">2I", 100, 100)
    _bad(tmp_path, header + b"\x00" * 50, "truncated")


def test_absurd_declared_size(tmp_path):
    # 4 dims of 2**32-1 each: must be refused from the header alone, before any allocation.
    header = bytes([0, 0, 0x0E, 4]) + struct.pack(">4I", *[2**32 - 1] * 4)
    _bad(tmp_path, header, "limit")


def test_corrupt_gzip(tmp_path):
    blob = bytearray(gzip.compress(GOOD))
    blob[len(blob) // 2] ^= 0xFF
    blob[-5] ^= 0xFF  # also break the length/CRC trailer, so corruption cannot go unnoticed
    _bad(tmp_path, bytes(blob), "cannot read")
    _bad(tmp_path, gzip.compress(GOOD)[:-6], "cannot read")  # gzip stream cut short
    _bad(tmp_path, b"\x1f\x8bjunk", "cannot read")  # gzip magic, then not gzip


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_large_declared_size_under_cap(tmp_path, gz):
    # 2**30 doubles (8 GiB) is under the element cap; a short file must still fail fast
    # rather than allocate the declared size first.
    header = bytes([0, 0, 0x0E, 1]) + struct.pack(">I", 2**30)
    _bad(tmp_path, header + b"\x00" * 64, "truncated", gz=gz)


def test_missing_file(tmp_path):
    with pytest.raises(InvalidModelError, match="not found"):
        read_idx(tmp_path / "nope")


# --- MD5SUMS ------------------------------------------------------------------------


def test_md5_mismatch(tmp_path):
    (tmp_path / "f").write_bytes(b"hello")
    (tmp_path / "MD5SUMS").write_text(f"{hashlib.md5(b'hello').hexdigest()}  f\n")
    assert verify_md5(tmp_path) == ["f"]
    (tmp_path / "MD5SUMS").write_text(f"{'0' * 32} *f\n")
    with pytest.raises(InvalidModelError, match="MD5 mismatch"):
        verify_md5(tmp_path)
    (tmp_path / "MD5SUMS").write_text("garbage\n")
    with pytest.raises(InvalidModelError, match="malformed"):
        verify_md5(tmp_path)
    (tmp_path / "MD5SUMS").write_text(f"{'0' * 32}  gone\n")
    with pytest.raises(InvalidModelError, match="missing"):
        verify_md5(tmp_path)


def test_no_md5sums_is_fine(tmp_path):
    assert verify_md5(tmp_path) == []


# --- data_dir and the environment variable ------------------------------------------


def fake_mnist(directory, n_train=50, n_test=20, gz=True, train=True, seed=0):
    rng = np.random.default_rng(seed)
    sfx = ".gz" if gz else ""
    parts = [("t10k", n_test)] + ([("train", n_train)] if train else [])
    arrays = {}
    for prefix, n in parts:
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(directory / f"{prefix}-images-idx3-ubyte{sfx}", x, gz=gz)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{sfx}", y, gz=gz)
        arrays[prefix] = (x, y)
    return arrays


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_data_dir_full_split(tmp_path, gz):
    arrays = fake_mnist(tmp_path, gz=gz)
    split = load(tmp_path)
    assert split.x_train.shape == (50, 28, 28, 1) and split.x_test.shape == (20, 28, 28, 1)
    np.testing.assert_array_equal(split.x_train[..., 0], arrays["train"][0] / np.float32(255))
    np.testing.assert_array_equal(split.y_train, arrays["train"][1])
    np.testing.assert_array_equal(split.y_test, arrays["t10k"][1])
    assert split.y_test.dtype == np.int64 and split.x_test.dtype == np.float32
    assert str(tmp_path) in split.source and "standard" in split.source


def test_data_dir_t10k_only(tmp_path):
    arrays = fake_mnist(tmp_path, n_test=30, train=False)
    split = load(tmp_path, n_train=25)
    assert len(split.x_train) == 25 and len(split.x_test) == 5
    np.testing.assert_array_equal(split.y_test, arrays["t10k"][1][25:])


def test_env_var(tmp_path, monkeypatch):
    fake_mnist(tmp_path)
    monkeypatch.setenv(mnist_mod.ENV_VAR, str(tmp_path))
    split = load()
    assert len(split.x_train) == 50 and mnist_mod.ENV_VAR in split.source
    # An explicit data_dir wins over the environment.
    other = tmp_path / "other"
    other.mkdir()
    fake_mnist(other, n_train=7, n_test=3)
    assert len(load(other).x_train) == 7


def test_data_dir_md5_checked(tmp_path):
    fake_mnist(tmp_path)
    (tmp_path / "MD5SUMS").write_text(f"{'0' * 32}  t10k-labels-idx1-ubyte.gz\n")
    with pytest.raises(InvalidModelError, match="MD5 mismatch"):
        load(tmp_path)


def test_missing_files(tmp_path):
    with pytest.raises(InvalidModelError, match="t10k-images-idx3-ubyte") as info:
        load(tmp_path)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(InvalidModelError, match="does not exist"):
        load(tmp_path / "nope")


def test_half_train_pair(tmp_path):
    fake_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(InvalidModelError, match="train-labels-idx1-ubyte"):
        load(tmp_path)


def test_wrong_image_shape_and_label_count(tmp_path):
    fake_mnist(tmp_path, train=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(19, np.uint8), gz=True)
    with pytest.raises(InvalidModelError, match="19 labels for 20 images"):
        load(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((20, 28, 27), np.uint8), gz=True)
    with pytest.raises(InvalidModelError, match="28, 28"):
        load(tmp_path)
