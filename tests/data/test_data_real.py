"""The real MNIST and CIFAR-10 from $VGLAB_DATA or ../shared/data (the repo root's
sibling); skipped where neither holds them (as the README says)."""

import os
import time
from pathlib import Path

import numpy as np
import pytest

from vglab.data import info, load, prepare
from vglab.data import preprocess as pp
from vglab.data.download import checksum

pytestmark = pytest.mark.slow

# Read at import: the data tests' autouse fixture unsets $VGLAB_DATA while each test runs.
CANDIDATES = [Path(p) for p in [os.environ.get("VGLAB_DATA")] if p] + [
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data"]

# The published MD5s of the decompressed MNIST files (independent of vglab's table).
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}


def needs(*folders: str) -> Path:
    """The first candidate folder that holds every one of `folders` (mnist/, cifar10/)."""
    for data in CANDIDATES:
        if all((data / f).is_dir() for f in folders):
            return data
    pytest.skip(f"needs {' and '.join(f + '/' for f in folders)} in one folder: $VGLAB_DATA or ../shared/data "
                f"(looked in {', '.join(map(str, CANDIDATES))})")


def test_mnist_loads_and_matches_the_published_md5s():
    data = needs("mnist")
    for name, md5 in MNIST_MD5.items():
        assert checksum(data / "mnist" / name, "md5", gunzip=True) == md5
    ds = load("mnist", data, download=False)
    assert ds.x_train.shape == (60000, 28, 28) and ds.x_test.shape == (10000, 28, 28)
    assert ds.x_train.dtype == np.uint8 and ds.x_train.max() == 255
    assert ds.y_train[:5].tolist() == [5, 0, 4, 1, 9]  # the canonical first labels
    assert np.bincount(ds.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_cifar10_loads_with_the_known_channel_means():
    data = needs("cifar10")
    ds = load("cifar10", data, download=False)
    assert ds.x_train.shape == (50000, 32, 32, 3) and ds.x_test.shape == (10000, 32, 32, 3)
    assert np.bincount(ds.y_train).tolist() == [5000] * 10
    mean = ds.x_train.reshape(-1, 3).mean(0) / 255
    np.testing.assert_allclose(mean, [0.4914, 0.4822, 0.4465], atol=1e-3)


def test_mnist_pca_keeps_150_to_160_components_and_is_cached(cache_dir, monkeypatch):
    data = needs("mnist")
    start = time.perf_counter()
    first = prepare("mnist", "mlp", data, download=False)
    fit_seconds = time.perf_counter() - start
    assert 150 <= first.n_components <= 160 and first.x_train.shape == (60000, first.n_components)

    def refit(*args):
        raise AssertionError("the PCA was fitted again instead of read from the cache")

    monkeypatch.setattr(pp, "fit_pca", refit)
    start = time.perf_counter()
    second = prepare("mnist", "mlp", data, download=False)
    print(f"prepare('mnist', 'mlp'): {fit_seconds:.2f} s, cached {time.perf_counter() - start:.2f} s")
    np.testing.assert_array_equal(first.x_test, second.x_test)


def test_info_verifies_the_shared_copies():
    data = needs("mnist", "cifar10")
    rows = {row["name"]: row for row in info(data)}
    assert rows["mnist"]["status"] == rows["cifar10"]["status"] == "ok"
    assert rows["mnist"]["verified"] and rows["cifar10"]["verified"]
