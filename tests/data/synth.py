"""Tiny synthetic MNIST / CIFAR-10 files for the vglab.data tests."""

import gzip
import struct
from pathlib import Path

import numpy as np

TINY = {"mnist": (20, 10), "cifar10": (20, 10)}  # (n_train, n_test)


def idx(array: np.ndarray) -> bytes:
    """`array` (uint8) encoded as an IDX file."""
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def cifar_records(labels: np.ndarray, rng) -> bytes:
    pixels = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    return np.concatenate([labels.astype(np.uint8)[:, None], pixels], axis=1).tobytes()


def tiny_files() -> dict[str, bytes]:
    """Decompressed contents of a tiny MNIST and CIFAR-10, keyed by path under a data dir."""
    rng = np.random.default_rng(0)
    files = {}
    for prefix, n in (("train", 20), ("t10k", 10)):
        files[f"mnist/{prefix}-images-idx3-ubyte.gz"] = idx(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        files[f"mnist/{prefix}-labels-idx1-ubyte.gz"] = idx(np.arange(n, dtype=np.uint8) % 10)
    for name, n in [(f"data_batch_{i}.bin", 4) for i in range(1, 6)] + [("test_batch.bin", 10)]:
        files[f"cifar10/cifar-10-batches-bin/{name}"] = cifar_records(np.arange(n) % 10, rng)
    return files


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Write `files` under `root`, gzip-compressing the .gz ones."""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(data, mtime=0) if rel.endswith(".gz") else data)
    return root


def files_under(root: Path) -> list[Path]:
    """Every non-folder entry under `root` (for "nothing was left behind" checks)."""
    return sorted(p for p in root.rglob("*") if not p.is_dir()) if root.exists() else []
