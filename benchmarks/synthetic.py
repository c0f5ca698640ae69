"""Synthetic data of a dataset's shape, for benchmarks that must run without data files:
uniform inputs in [-1, 1] (the scaled range), labels a fixed linear map of the inputs so
training makes progress. Has the fields of `vglab.data.Arrays` that training reads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Synthetic:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def synthetic(shape: tuple[int, ...], n_train: int, n_test: int) -> Synthetic:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(n_train + n_test, *shape)).astype(np.float32)
    w = rng.normal(size=(int(np.prod(shape)), 10)).astype(np.float32)
    y = np.argmax(x.reshape(len(x), -1) @ w, 1).astype(np.int32)
    return Synthetic(x[:n_train], y[:n_train], x[n_train:], y[n_train:])
