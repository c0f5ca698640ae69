"""Small generated problems for engine tests (no dataset files needed)."""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Arrays:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int = 10


def blobs(n_train=256, n_test=64, dim=12, seed=0) -> Arrays:
    """A learnable 10-class problem: labels from a random linear map of Gaussian inputs."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(dim, 10))
    x = (rng.normal(size=(n_train + n_test, dim)) / np.sqrt(dim)).astype(np.float32)
    y = (x @ w).argmax(1).astype(np.int32)
    return Arrays(x[:n_train], y[:n_train], x[n_train:], y[n_train:])
