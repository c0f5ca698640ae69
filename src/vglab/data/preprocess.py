"""Turn a loaded dataset into the float arrays a network trains on.

Pixels are scaled to [-1, 1]. For MLPs (`kind="mlp"`) images are flattened and projected
on the principal components that keep `variance` of the training variance: the PCA is
fitted on the training split only (the test split must not leak into it) and cached on
disk under `<cache>/pca/`, so only the first run pays for it (so is a `train_size` subset,
under `<cache>/subset/`). For CNNs (`kind="cnn"`) images keep their shape as float32
(N, H, W, C), gray images getting C = 1.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from .errors import DataError
from .files import default_cache_dir, save_npz
from .sources import Dataset, load

KINDS = ("mlp", "cnn")
PCA_FORMAT = 1  # bump when the fitting changes, so old cache files are not reused
ROWS = 4096  # rows per chunk: bounds the float64 temporaries (CIFAR rows are 3072 wide)


@dataclass(frozen=True, eq=False)
class Arrays:
    """Training-ready arrays: float32 inputs, int32 labels."""

    name: str
    x_train: np.ndarray  # (N, n_components) for mlp, (N, H, W, C) for cnn
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    n_components: int | None  # None for cnn
    kind: str


@dataclass(frozen=True, eq=False)
class PCA:
    """A fitted PCA: `components` rows are orthonormal, by decreasing variance."""

    mean: np.ndarray  # (D,) float64
    components: np.ndarray  # (k, D) float64
    explained_variance_ratio: np.ndarray  # (k,)

    @property
    def n_components(self) -> int:
        return len(self.components)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Project rows of `x` (N, D) on the components: float32 (N, k)."""
        comps_t = self.components.T.astype(np.float32)
        # (x - mean) @ W as x @ W - mean @ W: no centered copy of x, twice as fast.
        return x.astype(np.float32, copy=False) @ comps_t - (self.mean @ self.components.T).astype(np.float32)


def scale(images: np.ndarray, pixel_max: int | None) -> np.ndarray:
    """uint8 pixels 0..pixel_max to float32 in [-1, 1] (x / pixel_max * 2 - 1); float
    inputs (an own dataset's features, `pixel_max` None) as float32, unchanged.

    A lookup table keeps the end points exact (0 -> -1, pixel_max -> 1) and is faster
    than float arithmetic over the whole array.
    """
    if pixel_max is None:
        return np.asarray(images, np.float32)
    table = (np.arange(256, dtype=np.float64) / pixel_max * 2 - 1).astype(np.float32)
    return table[images]


def fit_pca(x: np.ndarray, variance: float) -> PCA:
    """Fit a PCA on the rows of `x` keeping the fewest components that explain more
    than `variance` of the variance (scikit-learn's rule for a float n_components).

    Eigendecomposition of the covariance matrix, as scikit-learn's
    `svd_solver="covariance_eigh"`: exact, deterministic and fast when N >> D, with the
    covariance accumulated in float64 chunks so no float64 copy of `x` is needed.
    """
    if not 0 < variance <= 1:
        raise ValueError(f"variance must be in (0, 1], got {variance}")
    n, d = x.shape
    mean = np.zeros(d)
    for i in range(0, n, ROWS):
        mean += x[i:i + ROWS].sum(0, dtype=np.float64)
    mean /= n
    cov = np.zeros((d, d))
    for i in range(0, n, ROWS):
        centered = x[i:i + ROWS].astype(np.float64) - mean
        cov += centered.T @ centered
    eigval, eigvec = np.linalg.eigh(cov / (n - 1))
    eigval, eigvec = np.clip(eigval[::-1], 0, None), eigvec[:, ::-1]  # decreasing order
    ratio = eigval / eigval.sum()
    k = min(int(np.searchsorted(np.cumsum(ratio), variance, side="right")) + 1, d)
    components = np.ascontiguousarray(eigvec[:, :k].T)
    # Eigenvectors are defined up to sign; make each one's largest entry positive (as
    # scikit-learn does) so the projection is the same on every machine and BLAS.
    rows = np.arange(k)
    components *= np.sign(components[rows, np.abs(components).argmax(1)])[:, None]
    return PCA(mean, components, ratio[:k])


def _fingerprint(ds: Dataset) -> str:
    """What the PCA depends on: the training images (all of them; SHA-256 runs at
    ~1 GB/s, cheap next to loading) and the pixel scale."""
    h = hashlib.sha256(f"{PCA_FORMAT}|{ds.x_train.shape}|{ds.pixel_max}|".encode())
    h.update(np.ascontiguousarray(ds.x_train).data)
    return h.hexdigest()[:16]


def train_pca(ds: Dataset, variance: float = 0.95, cache_dir: str | os.PathLike | None = None) -> PCA:
    """The PCA of `ds`'s scaled, flattened training split: read from
    `<cache_dir>/pca/` when present, else fitted and written there (atomically)."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = root / "pca" / f"{ds.name}-var{variance:g}-{_fingerprint(ds)}.npz"
    d = int(np.prod(ds.x_train.shape[1:]))
    pca = _read_cache(path, "PCA", lambda f: PCA(f["mean"], f["components"], f["explained_variance_ratio"]))
    if pca is not None and pca.mean.shape == (d,) and pca.components.shape[1:] == (d,):
        return pca
    pca = fit_pca(scale(ds.x_train, ds.pixel_max).reshape(len(ds.x_train), d), variance)
    save_npz(path, "PCA", mean=pca.mean, components=pca.components,
                    explained_variance_ratio=pca.explained_variance_ratio)
    return pca


def _read_cache(path: Path, what: str, read):
    """`read(npz)` of the cache file `path`, or None when it is missing or damaged (only a cache miss)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return read(f)
    except FileNotFoundError:
        return None
    except Exception as e:
        warnings.warn(f"ignoring unreadable {what} cache {path} ({e}); computing it again", stacklevel=3)
        return None


def stratified_subset(labels: np.ndarray, size: int, seed: int = 0,
                      cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Sorted indices of a fixed, seeded subset of `size` rows with the class
    proportions of `labels` (sorted, so the subset keeps the canonical order).

    Drawn by scikit-learn once, then read from `<cache_dir>/subset/` (keyed by the labels,
    `size`, `seed` and scikit-learn's version): importing scikit-learn cost ~2 s of CPU in
    every process that drew a subset, the driver and each worker of a sweep alike."""
    n, n_classes = len(labels), len(np.unique(labels))
    if size == n:
        return np.arange(n)
    if not n_classes <= size < n:
        raise ValueError(f"train_size must be between {n_classes} (one per class) and {n}, got {size}")
    h = hashlib.sha256(f"{size}|{seed}|{metadata.version('scikit-learn')}|{labels.dtype}|".encode())
    h.update(np.ascontiguousarray(labels).data)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = root / "subset" / f"{h.hexdigest()[:16]}.npz"
    keep = _read_cache(path, "training subset", lambda f: f["keep"])
    if keep is not None and keep.shape == (size,):
        return keep
    from sklearn.model_selection import train_test_split  # here: importing scikit-learn takes ~2 s

    keep, _ = train_test_split(np.arange(n), train_size=size, stratify=labels, random_state=seed)
    keep = np.sort(keep)
    save_npz(path, "training subset", keep=keep)
    return keep


def prepare(
    name: str,
    kind: str = "mlp",
    data_dir: str | os.PathLike | None = None,
    variance: float | None | str = "auto",
    train_size: int | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> Arrays:
    """Load dataset `name` (a built-in name or an own .npz) and make it training-ready for
    `kind` ("mlp": flat features, or "cnn": images).

    `variance`: the PCA that MLPs see keeps this fraction of the training variance; "auto"
    is 0.95 for images (the reference study's inputs) and no PCA for an own dataset's float
    features; None (or 0) is no PCA. `train_size` keeps a fixed, `seed`ed, stratified subset
    of the training split; the PCA is still fitted on the whole training split, so its
    cache is shared.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of: {', '.join(KINDS)}")
    ds = load(name, data_dir, download=download)
    if variance == "auto":
        variance = 0.95 if ds.pixel_max is not None else None
    keep = slice(None) if train_size is None else stratified_subset(ds.y_train, train_size, seed, cache_dir)
    x_train, x_test = scale(ds.x_train[keep], ds.pixel_max), scale(ds.x_test, ds.pixel_max)
    n_components = None
    if kind == "mlp":
        x_train, x_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
        if variance:
            pca = train_pca(ds, variance, cache_dir)
            x_train, x_test = pca.transform(x_train), pca.transform(x_test)
            n_components = pca.n_components
    elif x_train.ndim == 2:
        raise DataError(f"dataset {name!r} holds flat features {x_train.shape[1:]}; a CNN needs images "
                        "(N, H, W) or (N, H, W, C): use an MLP or your own model with input = 'features'")
    elif x_train.ndim == 3:  # gray: add the channel axis, NHWC
        x_train, x_test = x_train[..., None], x_test[..., None]
    return Arrays(name, x_train, ds.y_train[keep].astype(np.int32), x_test,
                  ds.y_test.astype(np.int32), ds.n_classes, n_components, kind)
