"""The three datasets: where their files are, how they are read, how they are fetched.

`load(name)` returns a `Dataset` of uint8 images and int64 labels, train and test, in
canonical order. Files are looked for, in this order, under

1. the `data_dir` argument (`--data-dir`),
2. `$VGLAB_DATA`,
3. the user cache (`$VGLAB_CACHE`, else `~/.cache/vglab`),

each laid out as `<dir>/mnist/*.gz` and `<dir>/cifar10/cifar-10-batches-bin/*.bin`;
if none holds them they are downloaded, checksum-verified, into the cache. Every file
is checked when read (IDX header, CIFAR record size and count, checksum), so a corrupt
copy fails loudly instead of being trained on.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import shutil
import struct
import tempfile
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .download import download, extract_tar, progress_bar, verify
from .errors import DataError
from .files import default_cache_dir, save_npz

# Where downloads come from. Module-level so tests (and users behind a proxy or with a
# local mirror) can point them elsewhere; `fetch(..., urls=...)` overrides them per call.
MNIST_MIRRORS = [
    "http://yann.lecun.com/exdb/mnist/",  # the official home; often rate-limited
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]
CIFAR10_URLS = ["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"]
CIFAR10_ARCHIVE_MD5 = "md5:c32a1d4ab5d03f1284b67883e8d87530"  # the published one

DIGITS = tuple(str(d) for d in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
CIFAR10_RECORD = 1 + 3 * 32 * 32  # label byte, then the R, G and B planes


@dataclass(frozen=True)
class Source:
    """What a dataset is and which files make it up (one entry of `DATASETS`)."""

    name: str
    description: str
    folder: str | None  # relative to a data dir; None: embedded in scikit-learn
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    checksums: dict[str, str]  # file -> "algo:hex"; MNIST: of the decompressed bytes
    image_shape: tuple[int, ...]
    n_train: int
    n_test: int
    pixel_max: int
    classes: tuple[str, ...]

    @property
    def files(self) -> tuple[str, ...]:
        return self.train_files + self.test_files


DATASETS: dict[str, Source] = {
    "digits": Source(
        "digits", "scikit-learn's bundled 8x8 handwritten digits (embedded, no download)",
        None, (), (), {}, (8, 8), 1437, 360, 16, DIGITS),
    "mnist": Source(
        "mnist", "MNIST handwritten digits, 28x28 gray (IDX files)", "mnist",
        ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
        {  # the published MD5s of the decompressed files
            "train-images-idx3-ubyte.gz": "md5:6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte.gz": "md5:a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte.gz": "md5:2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte.gz": "md5:27ae3e4e09519cfbb04c329615203637",
        },
        (28, 28), 60_000, 10_000, 255, DIGITS),
    "cifar10": Source(
        "cifar10", "CIFAR-10 tiny color images, 32x32x3 (binary version)",
        "cifar10/cifar-10-batches-bin",
        tuple(f"data_batch_{i}.bin" for i in range(1, 6)), ("test_batch.bin",),
        {  # SHA-256 of the files cifar-10-binary.tar.gz (whose MD5 is published) holds
            "data_batch_1.bin": "sha256:cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
            "data_batch_2.bin": "sha256:a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
            "data_batch_3.bin": "sha256:bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
            "data_batch_4.bin": "sha256:014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
            "data_batch_5.bin": "sha256:755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
            "test_batch.bin": "sha256:8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
        },
        (32, 32, 3), 50_000, 10_000, 255, CIFAR10_CLASSES),
}


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset: uint8 images (N, H, W) or (N, H, W, 3), int64 labels; an own
    dataset (`vglab.data.own`) may instead hold float features (N, D) or float images,
    with `pixel_max` None (used as they are).

    The arrays are read-only because `load` shares them between callers.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    pixel_max: int | None
    classes: tuple[str, ...]
    source: str = ""  # the folder (or file) it was read from

    @property
    def n_classes(self) -> int:
        return len(self.classes)


# ----------------------------------------------------------------------------- lookup


def get_source(name: str) -> Source:
    """The `Source` called `name`, or a DataError listing the valid names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}") from None


def search_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The folders `load` looks in for `name`, in order, each with where it came from."""
    if (folder := get_source(name).folder) is None:
        return []  # embedded in scikit-learn
    roots = []
    if data_dir is not None:
        roots.append(("--data-dir", Path(data_dir).expanduser()))
    if env := os.environ.get("VGLAB_DATA"):
        roots.append(("$VGLAB_DATA", Path(env).expanduser()))
    roots.append(("cache", default_cache_dir()))
    return [(origin, root / folder) for origin, root in roots]


def locate(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first search folder that holds every file of `name`, or None."""
    found = _locate(name, data_dir)
    return found[1] if found else None


def _locate(name, data_dir) -> tuple[str, Path] | None:
    source = get_source(name)
    for origin, folder in search_dirs(name, data_dir):
        if all((folder / f).is_file() for f in source.files):
            return origin, folder.resolve()
    return None


def _missing(name: str, data_dir, why: str) -> DataError:
    searched = "\n".join(f"  {folder}  ({origin})" for origin, folder in search_dirs(name, data_dir))
    return DataError(
        f"dataset {name!r} not found; searched:\n{searched}\n{why}\n"
        f"To fix: run `vglab data fetch {name}` (downloads into {default_cache_dir()}), "
        f"or point --data-dir or $VGLAB_DATA at a folder holding {get_source(name).folder}/ "
        "(e.g. ../shared/data).")


# ----------------------------------------------------------------------------- readers


def _fix(path: Path, dataset: str) -> str:
    return (f"Delete {path.name} and run `vglab data fetch {dataset}`, "
            "or point --data-dir / $VGLAB_DATA at a good copy.")


def read_idx(path: str | os.PathLike, expected: str | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzip-compressed if it ends in .gz).

    The header (magic 00 00 08 ndim, then ndim big-endian uint32 sizes) must match the
    file's length exactly; `expected` ("md5:...") is checked on the decompressed bytes.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: not a complete gzip file ({e}). {_fix(path, 'mnist')}") from e
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or raw[3] == 0:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex() or 'empty'}, "
                        f"expected 000008 followed by the number of dimensions). {_fix(path, 'mnist')}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header. {_fix(path, 'mnist')}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) != header + int(np.prod(dims)):
        raise DataError(f"{path}: the header announces shape {dims}, {header + int(np.prod(dims))} bytes, "
                        f"but the file holds {len(raw)} (truncated or corrupt). {_fix(path, 'mnist')}")
    if expected and (problem := verify(raw, expected)):
        raise DataError(f"{path}: checksum mismatch ({problem}); the file is corrupt or not the "
                        f"official one. {_fix(path, 'mnist')}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def read_cifar_batch(path: str | os.PathLike, expected: str | None = None,
                     n_records: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 binary batch: images (N, 32, 32, 3) uint8 HWC, labels (N,) int64.

    Each 3073-byte record is a label byte then the R, G, B planes (32x32 row-major each).
    """
    path = Path(path)
    raw = path.read_bytes()
    if not raw or len(raw) % CIFAR10_RECORD:
        raise DataError(f"{path}: {len(raw)} bytes is not a whole number of {CIFAR10_RECORD}-byte "
                        f"CIFAR-10 records (truncated, or not a binary batch). {_fix(path, 'cifar10')}")
    n = len(raw) // CIFAR10_RECORD
    if n_records is not None and n != n_records:
        raise DataError(f"{path}: holds {n} records, expected {n_records}. {_fix(path, 'cifar10')}")
    if expected and (problem := verify(raw, expected)):
        raise DataError(f"{path}: checksum mismatch ({problem}); the file is corrupt or not the "
                        f"official one. {_fix(path, 'cifar10')}")
    records = np.frombuffer(raw, np.uint8).reshape(n, CIFAR10_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CIFAR10_CLASSES):
        raise DataError(f"{path}: label {labels.max()} out of range 0..9. {_fix(path, 'cifar10')}")
    # The file stores channel planes (CHW); the rest of vglab wants HWC.
    images = np.ascontiguousarray(records[:, 1:].reshape(n, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


def _read_mnist(folder: Path, source: Source) -> tuple[np.ndarray, ...]:
    arrays = []
    for files, n in ((source.train_files, source.n_train), (source.test_files, source.n_test)):
        images_file, labels_file = (folder / f for f in files)
        images = read_idx(images_file, source.checksums.get(images_file.name))
        labels = read_idx(labels_file, source.checksums.get(labels_file.name))
        if images.shape != (n, *source.image_shape):
            raise DataError(f"{images_file}: holds images of shape {images.shape}, expected "
                            f"{(n, *source.image_shape)}. {_fix(images_file, 'mnist')}")
        if labels.shape != (n,):
            raise DataError(f"{labels_file}: holds labels of shape {labels.shape}, expected ({n},). "
                            f"{_fix(labels_file, 'mnist')}")
        if labels.max() >= len(source.classes):
            raise DataError(f"{labels_file}: label {labels.max()} out of range 0..9. "
                            f"{_fix(labels_file, 'mnist')}")
        arrays += [images, labels.astype(np.int64)]
    return tuple(arrays)


def _read_cifar10(folder: Path, source: Source) -> tuple[np.ndarray, ...]:
    arrays = []
    for files, n in ((source.train_files, source.n_train), (source.test_files, source.n_test)):
        batches = [read_cifar_batch(folder / f, source.checksums.get(f), n // len(files)) for f in files]
        arrays += [np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])]
    return tuple(arrays)


def _frozen(*arrays: np.ndarray) -> list[np.ndarray]:
    for a in arrays:
        a.flags.writeable = False
    return list(arrays)


DIGITS_SPLIT = ("x_train", "y_train", "x_test", "y_test")


@functools.lru_cache(maxsize=1)
def _load_digits() -> Dataset:
    """scikit-learn's digits, split 80/20 stratified. The split is cached in
    `<cache>/digits/` (keyed by scikit-learn's version and the bundled file), so the
    worker processes that train on digits do not import scikit-learn (~2 s each)."""
    from importlib import metadata

    src = _digits_file()
    stat = src.stat()
    path = default_cache_dir() / "digits" / f"split-{metadata.version('scikit-learn')}-{stat.st_size}-{stat.st_mtime_ns}.npz"
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = [f[k] for k in DIGITS_SPLIT]
    except Exception as e:  # a missing or damaged cache file is only a cache miss
        if not isinstance(e, FileNotFoundError):
            warnings.warn(f"ignoring unreadable digits cache {path} ({e})", stacklevel=2)
        arrays = _split_digits()
        save_npz(path, "digits", **dict(zip(DIGITS_SPLIT, arrays)))
    return Dataset("digits", *_frozen(*arrays), 16, DIGITS, str(src))


def _split_digits() -> list[np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.uint8)  # integer counts 0..16 stored as float
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, random_state=0, stratify=labels)
    return [x_train, y_train, x_test, y_test]


def _digits_file() -> Path:
    # find_spec locates scikit-learn without importing it (seconds): `vglab data info` stays fast.
    sklearn_dir = importlib.util.find_spec("sklearn").submodule_search_locations[0]
    return Path(sklearn_dir) / "datasets" / "data" / "digits.csv.gz"


@functools.lru_cache(maxsize=4)
def _load_folder(name: str, folder: Path, stamp: tuple) -> Dataset:
    # `stamp` (sizes and mtimes) is only part of the cache key: a file replaced on disk
    # (e.g. by `vglab data fetch`) is read again.
    source = DATASETS[name]
    read = _read_mnist if name == "mnist" else _read_cifar10
    return Dataset(name, *_frozen(*read(folder, source)), source.pixel_max, source.classes, str(folder))


def load(name: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> Dataset:
    """Load dataset `name` ("digits", "mnist" or "cifar10", or the path of an own .npz,
    see `vglab.data.own`); repeated calls are cached.

    Looks in `data_dir`, `$VGLAB_DATA`, then the user cache; if the files are in none of
    them and `download` is true, fetches them into the cache first.
    """
    from . import own

    if own.is_path(name):
        arrays = own.load_npz(name)
        classes = own.check_arrays(arrays, str(name))
        x_train = arrays["x_train"]
        return Dataset(Path(name).stem, x_train, arrays["y_train"].astype(np.int64), arrays["x_test"],
                       arrays["y_test"].astype(np.int64), 255 if x_train.dtype == np.uint8 else None, classes,
                       str(Path(name).expanduser().resolve()))
    source = get_source(name)
    if source.folder is None:
        return _load_digits()
    folder = locate(name, data_dir)
    if folder is None:
        if not download:
            raise _missing(name, data_dir, "Downloading is off (download=False).")
        try:
            folder = fetch(name)
        except DataError as e:
            raise _missing(name, data_dir, f"The download failed: {e}") from e
    stamp = tuple((f, (s := (folder / f).stat()).st_size, s.st_mtime_ns) for f in source.files)
    return _load_folder(name, folder, stamp)


# ----------------------------------------------------------------------------- fetch / info


def _bad_files(folder: Path, source: Source) -> dict[str, str]:
    """file -> what is wrong with it, for every file of `source` that is missing or corrupt."""
    bad = {}
    for f in source.files:
        path = folder / f
        try:
            if not path.is_file():
                bad[f] = "missing"
            elif problem := verify(path, source.checksums[f], gunzip=f.endswith(".gz")):
                bad[f] = f"checksum mismatch ({problem})"
        except DataError as e:
            bad[f] = str(e)
    return bad


def fetch(name: str, cache_dir: str | os.PathLike | None = None, quiet: bool = False,
          urls: Sequence[str] | None = None) -> Path:
    """Make sure dataset `name` is in the cache, downloading what is missing or corrupt.

    Returns the dataset's folder (for digits: scikit-learn's bundled file). `cache_dir`
    defaults to `default_cache_dir()`; `urls` overrides the mirror list (MNIST: base URLs
    the file names are appended to; CIFAR-10: archive URLs); `quiet` hides the progress bar.
    """
    source = get_source(name)
    if source.folder is None:
        return _digits_file()
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = folder / source.folder
    bad = _bad_files(folder, source)
    if not bad:
        return folder
    with progress_bar(quiet) as progress:
        if name == "mnist":
            for f in bad:  # the .gz files are independent: fetch only the bad ones
                bases = urls if urls is not None else MNIST_MIRRORS
                download([b.rstrip("/") + "/" + f for b in bases], folder / f,
                         source.checksums[f], gunzip=True, progress=progress)
        else:
            _fetch_archive(folder, source, urls if urls is not None else CIFAR10_URLS, progress)
    return folder


def _fetch_archive(folder: Path, source: Source, urls: Sequence[str], progress) -> None:
    """Download the CIFAR-10 archive, unpack it beside `folder` and swap it into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=folder.parent))  # never trusted: hidden name
    try:
        archive = download(urls, work / "cifar-10-binary.tar.gz", CIFAR10_ARCHIVE_MD5, progress=progress)
        extract_tar(archive, work / "unpacked")
        unpacked = work / "unpacked" / folder.name
        if missing := [f for f in source.files if not (unpacked / f).is_file()]:
            raise DataError(f"{archive.name} lacks {folder.name}/{', '.join(missing)}")
        if folder.exists():  # an old, incomplete or corrupt copy: move it out of the way
            os.replace(folder, work / "old")
        os.replace(unpacked, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def info(data_dir: str | os.PathLike | None = None, verify_checksums: bool = True) -> list[dict]:
    """One row per dataset: where it was found (or 'missing'), sizes, checksum status.

    Keys: name, description, status ('embedded' | 'ok' | 'corrupt' | 'missing' |
    'unverified'), path, found_in ('--data-dir' | '$VGLAB_DATA' | 'cache' |
    'scikit-learn' | None), n_train, n_test, image_shape, bytes (on disk), verified (bool or
    None when not checked), problems (list of str), searched (folders looked in).
    """
    rows = []
    for name, source in DATASETS.items():
        row = dict(name=name, description=source.description, status="missing", path=None, found_in=None,
                   n_train=source.n_train, n_test=source.n_test, image_shape=source.image_shape,
                   bytes=0, verified=None, problems=[],
                   searched=[str(f) for _, f in search_dirs(name, data_dir)])
        if source.folder is None:
            path = _digits_file()
            row.update(status="embedded", path=str(path), found_in="scikit-learn",
                       bytes=path.stat().st_size)
        elif (found := _locate(name, data_dir)) is None:
            row["problems"] = [f"not found; run `vglab data fetch {name}`"]
        else:
            origin, folder = found
            row.update(path=str(folder), found_in=origin,
                       bytes=sum((folder / f).stat().st_size for f in source.files))
            if verify_checksums:
                bad = _bad_files(folder, source)
                row.update(verified=not bad, status="corrupt" if bad else "ok",
                           problems=[f"{f}: {why}" for f, why in bad.items()])
            else:
                row["status"] = "unverified"
        rows.append(row)
    return rows
