"""Your own data: an .npz file (or arrays from Python) with x_train, y_train, x_test, y_test.

    dataset = "path/to/data.npz"        # in a spec
    vglab.run(spec, data=(x_train, y_train, x_test, y_test))

Inputs are either uint8 images, (N, H, W) or (N, H, W, C), scaled to [-1, 1] like the
built-in datasets (MLPs see them flattened and, by default, projected on the PCA that
keeps 95 % of the training variance), or float features (N, D), used as they are
(PCA only when asked for). Labels are integers 0..C-1; C is the number of names in an
optional `classes` array, else the largest label + 1. Every problem is reported with the
array and the fix, before anything is trained.

Arrays from Python are written once to `<cache>/arrays/<sha256>.npz` (atomically) and
used by that path, so worker processes read them like any file and a changed array is
a different dataset.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path

import numpy as np

from .errors import DataError

KEYS = ("x_train", "y_train", "x_test", "y_test")


def is_path(name: str) -> bool:
    """Whether a dataset name is a file (an .npz) rather than a built-in dataset."""
    return str(name).endswith(".npz") or os.sep in str(name) or "/" in str(name)


ARRAYS_FOLDER = "arrays"  # <cache>/arrays/<sha256[:24]>.npz: arrays given from Python (`save_arrays`)


def dataset_name(dataset: str) -> str:
    """A dataset's short name, for its default results folder (`vglab-results/<name>/...`)
    and the runs table: a built-in's name, an .npz file's stem (as a plain folder name),
    or `arrays-<8 hex digits of its hash>` for arrays given from Python. (The path itself
    made `vglab-results/<absolute path>`, which is the file, not a folder under the root.)"""
    if not is_path(dataset):
        return str(dataset)
    p = Path(str(dataset))
    if _saved_arrays(p):
        return f"arrays-{p.stem[:8]}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", p.stem).strip(".-") or "data"


def dataset_column(dataset: str) -> str:
    """What the runs table's `dataset` column holds: the dataset's name or .npz path, and
    for arrays given from Python their short name (their cache path means nothing to you)."""
    return dataset_name(dataset) if is_path(dataset) and _saved_arrays(Path(str(dataset))) else str(dataset)


def _saved_arrays(p: Path) -> bool:
    return p.parent.name == ARRAYS_FOLDER and re.fullmatch(r"[0-9a-f]{24}", p.stem) is not None


def check_arrays(arrays: dict, where: str) -> tuple[str, ...]:
    """Validate the four arrays (and optional `classes`); returns the class names."""
    missing = [k for k in KEYS if k not in arrays]
    if missing:
        raise DataError(f"{where}: missing {', '.join(missing)}; an own dataset holds the arrays "
                        f"{', '.join(KEYS)} (and optionally classes)")
    x_tr, y_tr, x_te, y_te = (np.asarray(arrays[k]) for k in KEYS)
    for k, x in (("x_train", x_tr), ("x_test", x_te)):
        if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
            raise DataError(f"{where}: {k} has dtype {x.dtype}; give uint8 images or float features")
        if x.ndim not in (2, 3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
            raise DataError(f"{where}: {k} is shaped {x.shape}; give features (N, D) or images (N, H, W) / "
                            "(N, H, W, C) with C = 1 or 3")
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise DataError(f"{where}: {k} holds NaN or infinite values ({int((~np.isfinite(x)).sum())} entries); "
                            "remove or impute them")
        if len(x) == 0:
            raise DataError(f"{where}: {k} is empty")
    if x_tr.dtype != x_te.dtype or x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(f"{where}: x_train {x_tr.dtype}{x_tr.shape[1:]} and x_test {x_te.dtype}{x_te.shape[1:]} "
                        "differ in dtype or example shape; give both splits in the same form")
    for (xk, x), (yk, y) in ((("x_train", x_tr), ("y_train", y_tr)), (("x_test", x_te), ("y_test", y_te))):
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{where}: {yk} is shaped {y.shape} for {len(x)} examples in {xk}; give one integer "
                            "label per example, shaped (N,)")
        if not (np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating)
                                                       and np.array_equal(y, np.round(y)))):
            raise DataError(f"{where}: {yk} has dtype {y.dtype}; labels are the integers 0..C-1 (class indices, "
                            "not one-hot vectors or names)")
    labels = np.concatenate([y_tr, y_te]).astype(np.int64)
    if "classes" in arrays:
        classes = tuple(str(c) for c in np.asarray(arrays["classes"]).ravel())
    else:
        classes = tuple(str(c) for c in range(int(labels.max()) + 1 if labels.size else 0))
    bad = labels[(labels < 0) | (labels >= len(classes))]
    if bad.size:
        raise DataError(f"{where}: labels {sorted(set(bad.tolist()))[:5]} are outside 0..{len(classes) - 1} "
                        f"({len(classes)} classes); labels must be class indices 0..C-1")
    if len(classes) < 2:
        raise DataError(f"{where}: the labels name {len(classes)} class; a classifier needs at least 2")
    return classes


def read_npz(path) -> dict:
    """The arrays of an own-data .npz, validated (no pickled objects are read)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"dataset file {path} not found; give the path of an .npz holding {', '.join(KEYS)}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # not an npz, truncated, or pickled objects
        raise DataError(f"cannot read {path} as an .npz of arrays ({type(e).__name__}: {e}); save it with "
                        "numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)") from None
    check_arrays(arrays, str(path))
    return arrays


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, stamp: tuple) -> dict:
    arrays = read_npz(path)
    for a in arrays.values():
        a.setflags(write=False)
    return arrays


def load_npz(path) -> dict:
    """`read_npz`, cached per process while the file is unchanged."""
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        return read_npz(p)  # raises the error that names the file
    st = p.stat()
    return _read_cached(str(p), (st.st_size, st.st_mtime_ns))


def fingerprint(path) -> str:
    """SHA-256 (16 hex digits) of an own-data file: part of its runs' identity."""
    h = hashlib.sha256()
    with open(Path(path).expanduser(), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def save_arrays(x_train, y_train, x_test, y_test, classes=None, cache_dir=None) -> Path:
    """Validate arrays from Python and store them as `<cache>/arrays/<sha256>.npz` (once);
    returns the path, to use as a dataset."""
    from .files import default_cache_dir, save_npz

    arrays = {"x_train": np.asarray(x_train), "y_train": np.asarray(y_train), "x_test": np.asarray(x_test),
              "y_test": np.asarray(y_test)}
    if classes is not None:
        arrays["classes"] = np.asarray([str(c) for c in classes])
    check_arrays(arrays, "data")
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype}|{a.shape}|".encode())
        h.update(a.data if a.dtype.kind != "U" else "\0".join(a.tolist()).encode())
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = root / ARRAYS_FOLDER / f"{h.hexdigest()[:24]}.npz"
    if not path.exists():
        save_npz(path, "dataset", **arrays)
    if not path.exists():
        raise DataError(f"could not store the arrays in {path.parent}; set $VGLAB_CACHE to a writable folder "
                        "or save them with numpy.savez and give the file's path as dataset")
    return path
