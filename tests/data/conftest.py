"""Fixtures for the vglab.data tests: an isolated cache and tiny synthetic datasets."""

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
from synth import TINY, tiny_files

from vglab.data import sources


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    """Every data test gets its own cache, no $VGLAB_DATA and no real mirrors, so
    nothing reads or writes ~/.cache and nothing reaches the internet."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("VGLAB_CACHE", str(cache))
    monkeypatch.delenv("VGLAB_DATA", raising=False)
    monkeypatch.setattr(sources, "MNIST_MIRRORS", ["http://127.0.0.1:9/"])  # refused at once
    monkeypatch.setattr(sources, "CIFAR10_URLS", ["http://127.0.0.1:9/cifar-10-binary.tar.gz"])
    return cache


@pytest.fixture
def tiny(monkeypatch) -> dict[str, bytes]:
    """Shrink mnist and cifar10 in DATASETS to the tiny synthetic files (sizes and
    checksums), so readers, lookup and downloads run on them. Returns the files."""
    files = tiny_files()
    for name, (n_train, n_test) in TINY.items():
        source = sources.DATASETS[name]
        algo = "md5" if name == "mnist" else "sha256"
        sums = {rel.rsplit("/", 1)[1]: f"{algo}:{hashlib.new(algo, data).hexdigest()}"
                for rel, data in files.items() if rel.startswith(source.folder + "/")}
        monkeypatch.setitem(sources.DATASETS, name,
                            replace(source, n_train=n_train, n_test=n_test, checksums=sums))
    return files
