"""MNIST from IDX files, read by hand so the dataset needs neither keras nor a download.

The 10,000-image MNIST test set ships with the package in ``ir_bridge/data/mnist/``; by
default :func:`load` splits it 8000/2000 into train and held-out test. A directory with the
full MNIST files (given as ``data_dir`` or via ``IR_BRIDGE_MNIST_DIR``) gives the standard
60k/10k split instead.

IDX format (big-endian): two zero bytes, a dtype code, the number of dimensions, one uint32
per dimension, then the payload in C order.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ir_bridge.errors import InvalidModelError

#: Environment variable naming a directory of MNIST IDX files to use instead of the bundle.
ENV_VAR = "IR_BRIDGE_MNIST_DIR"

#: The bundled t10k files (and their MD5SUMS).
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "data" / "mnist"

# IDX dtype code -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# A hostile header could declare dimensions whose product is astronomically large; refuse
# before allocating. MNIST train images are 47M elements, far below this.
MAX_ELEMENTS = 2**31
# IDX allows up to 255 dimensions; nothing real uses more than a handful.
MAX_DIMS = 16

_GZIP_MAGIC = b"\x1f\x8b"

_TRAIN_IMAGES = "train-images-idx3-ubyte"
_TRAIN_LABELS = "train-labels-idx1-ubyte"
_TEST_IMAGES = "t10k-images-idx3-ubyte"
_TEST_LABELS = "t10k-labels-idx1-ubyte"


@dataclass(frozen=True, eq=False)
class MnistSplit:
    """A train/test split: images float32 in [0, 1] shaped (N, 28, 28, 1), labels int64.

    ``source`` says in words where the data came from and how it was split.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


def _read_exact(f, n: int, path: Path, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise InvalidModelError(
            f"{path}: truncated IDX file: expected {n} bytes of {what}, got {len(data)}"
        )
    return data


def read_idx(path) -> np.ndarray:
    """Read one IDX file, plain or gzipped (detected by its magic bytes, not its suffix).

    Takes a path; returns an array with the file's shape and a native-endian dtype
    (uint8, int8, int16, int32, float32 or float64). Raises ``InvalidModelError`` naming
    the file if the header is malformed or the payload size differs from the header's.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == _GZIP_MAGIC
        # Stream through gzip rather than decompressing everything up front, so reading
        # stops after the declared (capped) payload plus one byte, whatever the stream holds.
        opener = gzip.open if compressed else open
        with opener(path, "rb") as f:
            magic = _read_exact(f, 4, path, "magic number")
            if magic[0] != 0 or magic[1] != 0:
                raise InvalidModelError(
                    f"{path}: not an IDX file: magic must start with two zero bytes, "
                    f"got {magic[:2].hex()}"
                )
            code, ndims = magic[2], magic[3]
            if code not in _IDX_DTYPES:
                known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
                raise InvalidModelError(
                    f"{path}: unknown IDX dtype code 0x{code:02X} (expected one of {known})"
                )
            if not 1 <= ndims <= MAX_DIMS:
                raise InvalidModelError(
                    f"{path}: IDX header declares {ndims} dimensions (expected 1..{MAX_DIMS})"
                )
            shape = tuple(
                int(d) for d in np.frombuffer(_read_exact(f, 4 * ndims, path, "dimensions"), ">u4")
            )
            count = 1
            for d in shape:
                count *= d  # Python ints: no overflow however big the header claims
            if count > MAX_ELEMENTS:
                raise InvalidModelError(
                    f"{path}: IDX header declares shape {shape} = {count} elements, "
                    f"more than the limit of {MAX_ELEMENTS}"
                )
            dtype = _IDX_DTYPES[code]
            nbytes = count * dtype.itemsize
            if not compressed:
                # Check the size on disk before reading, so a short file whose header
                # claims gigabytes fails without first allocating a buffer that large.
                size, expected = os.fstat(f.fileno()).st_size, 4 + 4 * ndims + nbytes
                if size != expected:
                    problem = "truncated" if size < expected else "trailing data in"
                    raise InvalidModelError(
                        f"{path}: {problem} IDX file: header declares {dtype.name} data of "
                        f"shape {shape}, so {expected} bytes in all, but the file has {size}"
                    )
            payload = _read_exact(f, nbytes, path, f"{dtype.name} data of shape {shape}")
            if f.read(1):
                raise InvalidModelError(
                    f"{path}: IDX file has trailing data after the {count} elements of shape "
                    f"{shape} its header declares"
                )
    except InvalidModelError:
        raise
    except FileNotFoundError as e:
        raise InvalidModelError(f"{path}: IDX file not found") from e
    except (OSError, EOFError, zlib.error) as e:
        # gzip raises these for corrupt or truncated compressed streams.
        raise InvalidModelError(f"{path}: cannot read IDX file: {e}") from e
    return np.frombuffer(payload, dtype).astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_md5(directory) -> list[str]:
    """Check the files listed in ``directory/MD5SUMS`` (``md5sum`` format), if it exists.

    Takes a directory; returns the names of the files verified (empty when there is no
    MD5SUMS). Raises ``InvalidModelError`` for a malformed MD5SUMS line, a listed file
    that is missing, or a checksum mismatch.
    """
    directory = Path(directory)
    sums = directory / "MD5SUMS"
    if not sums.is_file():
        return []
    checked = []
    for lineno, line in enumerate(sums.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or len(parts[0]) != 32:
            raise InvalidModelError(f"{sums}:{lineno}: malformed line {line!r}")
        expected, name = parts[0].lower(), parts[1].strip().lstrip("*")  # '*' = md5sum binary mode
        target = directory / name
        if not target.is_file():
            raise InvalidModelError(f"{sums}:{lineno}: listed file {target} is missing")
        actual = _md5(target)
        if actual != expected:
            raise InvalidModelError(
                f"{target}: MD5 mismatch: expected {expected} (from {sums}), got {actual}"
            )
        checked.append(name)
    return checked


def _find(directory: Path, base: str) -> Path | None:
    for name in (base, base + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _images(path: Path) -> np.ndarray:
    raw = read_idx(path)
    if raw.dtype != np.uint8 or raw.ndim != 3 or raw.shape[1:] != (28, 28):
        raise InvalidModelError(
            f"{path}: expected MNIST images as ubyte of shape (N, 28, 28), "
            f"got {raw.dtype} of shape {raw.shape}"
        )
    return (raw.astype(np.float32) / np.float32(255.0))[..., np.newaxis]


def _labels(path: Path, n_images: int) -> np.ndarray:
    raw = read_idx(path)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise InvalidModelError(
            f"{path}: expected MNIST labels as 1-d ubyte, got {raw.dtype} of shape {raw.shape}"
        )
    if raw.shape[0] != n_images:
        raise InvalidModelError(f"{path}: {raw.shape[0]} labels for {n_images} images")
    if raw.size and raw.max() > 9:
        raise InvalidModelError(f"{path}: label {int(raw.max())} is not a digit 0-9")
    return raw.astype(np.int64)


def _pair(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    x = _images(images)
    return x, _labels(labels, x.shape[0])


def load(data_dir=None, n_train: int = 8000) -> MnistSplit:
    """Load MNIST as an :class:`MnistSplit`.

    ``data_dir`` (or, when it is None, the ``IR_BRIDGE_MNIST_DIR`` environment variable)
    names a directory of IDX files, plain or ``.gz``. With train and t10k files there, the
    standard 60k/10k split is used and ``n_train`` is ignored; with only t10k files, or with
    neither given (the bundled t10k set), the first ``n_train`` images train and the rest
    test. An MD5SUMS file in the directory is checked. Raises ``InvalidModelError`` for
    missing or malformed files.
    """
    if data_dir is None:
        data_dir = os.environ.get(ENV_VAR) or None
        origin = f"${ENV_VAR}={data_dir}" if data_dir else None
    else:
        origin = str(data_dir)
    directory = Path(data_dir) if data_dir is not None else BUNDLED_DIR
    if origin is None:
        origin = f"bundled {directory}"
    if not directory.is_dir():
        raise InvalidModelError(f"{directory}: MNIST data directory does not exist")
    verify_md5(directory)

    test_images, test_labels = _find(directory, _TEST_IMAGES), _find(directory, _TEST_LABELS)
    train_images, train_labels = _find(directory, _TRAIN_IMAGES), _find(directory, _TRAIN_LABELS)
    if test_images is None or test_labels is None:
        raise InvalidModelError(
            f"{directory}: no MNIST data: expected {_TEST_IMAGES}[.gz] and {_TEST_LABELS}[.gz], "
            f"optionally with {_TRAIN_IMAGES}[.gz] and {_TRAIN_LABELS}[.gz] for the full split"
        )
    if (train_images is None) != (train_labels is None):
        have, missing = (
            (train_images, _TRAIN_LABELS) if train_labels is None else (train_labels, _TRAIN_IMAGES)
        )
        raise InvalidModelError(f"{directory}: found {have.name} but not {missing}[.gz]")

    x_test, y_test = _pair(test_images, test_labels)
    if train_images is not None:
        x_train, y_train = _pair(train_images, train_labels)
        return MnistSplit(
            x_train, y_train, x_test, y_test,
            source=f"MNIST from {origin}: standard split, "
            f"{len(x_train)} train ({train_images.name}) / {len(x_test)} test ({test_images.name})",
        )

    n = len(x_test)
    if not 0 < n_train < n:
        raise ValueError(f"n_train must be between 1 and {n - 1} for {n} t10k images, got {n_train}")
    return MnistSplit(
        x_test[:n_train], y_test[:n_train], x_test[n_train:], y_test[n_train:],
        source=f"MNIST t10k from {origin}: first {n_train} train / last {n - n_train} test",
    )
