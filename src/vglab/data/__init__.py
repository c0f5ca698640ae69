"""vglab.data: the datasets (digits, MNIST, CIFAR-10), where they come from, and the
preprocessing that makes them training-ready.

    >>> from vglab.data import prepare
    >>> arrays = prepare("digits", "mlp")   # scaled to [-1, 1], PCA keeping 95 % variance

- `sources.py`: `load(name)` -> uint8 `Dataset`; lookup (data_dir, $VGLAB_DATA, cache),
  readers for IDX and CIFAR-10 binary files, `fetch` and `info` for the CLI.
- `download.py`: checksum-verified downloads and safe archive extraction.
- `preprocess.py`: `prepare(name, kind)` -> float32 `Arrays`, with a disk-cached PCA.
- `files.py`: atomic writes (data cache, results, report) and the cache folder.
- `own.py`: your own data, an .npz file or arrays from Python (`save_arrays`), validated.
"""

from .errors import DataError
from .files import default_cache_dir
from .own import save_arrays
from .preprocess import Arrays, prepare
from .sources import DATASETS, Dataset, fetch, info, load

__all__ = ["load", "prepare", "fetch", "info", "save_arrays", "DATASETS", "Dataset", "Arrays", "DataError",
           "default_cache_dir"]
