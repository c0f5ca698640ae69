"""A new user's setting for the tests of your own model and data (test_own_model_and_data.py,
test_new_user.py): models a spec names as files (`model = "factories.py:NAME"`), tiny own
datasets (`write_models` / `write_npz`), and the `fresh` fixture: an empty working directory
with one worker."""

import os
from pathlib import Path

import numpy as np
import pytest
from experiments_helpers import vglab_cache  # noqa: F401


@pytest.fixture(scope="module")
def one_core():
    """One worker (training in this process), as `vglab.run` chooses on a one-core machine: the
    process's CPU affinity is one core (a run's numbers do not depend on the worker count)."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(old)})
    yield
    os.sched_setaffinity(0, old)


@pytest.fixture
def fresh(tmp_path, monkeypatch, vglab_cache, one_core):  # noqa: F811
    """An empty working directory (the models and data live elsewhere, under `tmp_path`)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work

# A module beside the factory file: the factory imports it as a script would.
HELPERS = '''
import jax
import jax.numpy as jnp


def pair(in_shape, n_classes, phi, width=8, depth=2):
    """A plain (init_fn, apply_fn) MLP whose hidden nonlinearity is `phi`."""
    (n_in,) = in_shape
    sizes = [n_in] + [width] * depth + [n_classes]

    def init(key):
        keys = jax.random.split(key, len(sizes) - 1)
        return [{"w": jax.random.normal(k, (a, b)) / a ** 0.5, "b": jnp.zeros(b)}
                for k, a, b in zip(keys, sizes, sizes[1:])]

    def apply(params, x):
        for p in params[:-1]:
            x = phi(x @ p["w"] + p["b"])
        return x @ params[-1]["w"] + params[-1]["b"]

    return init, apply
'''

FACTORIES = '''
import jax
from flax import linen

import vglab
from helpers_beside import pair


def sigmoid_own(in_shape, n_classes, activation="sigmoid"):  # takes activation, with its own default
    return pair(in_shape, n_classes, vglab.nn.activation(activation))


def tanh_fixed(in_shape, n_classes):  # no activation argument: always tanh
    return pair(in_shape, n_classes, vglab.nn.activation("tanh"))


def plain_sigmoid(in_shape, n_classes):  # jax.nn.sigmoid: invisible to vglab
    return pair(in_shape, n_classes, jax.nn.sigmoid)


class CNN(linen.Module):
    n_classes: int

    @linen.compact
    def __call__(self, x):
        x = jax.nn.soft_sign(linen.Conv(4, (3, 3))(x))
        return linen.Dense(self.n_classes)(x.reshape((x.shape[0], -1)))


def linen_cnn(in_shape, n_classes):  # takes images (N, H, W, C)
    return vglab.nn.flax_linen(CNN(n_classes), in_shape)
'''


def write_models(folder: Path) -> Path:
    """`folder/factories.py` (importing `folder/helpers_beside.py`); returns the factory file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "helpers_beside.py").write_text(HELPERS)
    (folder / "factories.py").write_text(FACTORIES)
    return folder / "factories.py"


def arrays(n_classes: int, n: int = 240, d: int = 6, seed: int = 0):
    """(x_train, y_train, x_test, y_test): float features whose first coordinate tells the class."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[:, 0] += 2.0 * y
    cut = n * 3 // 4
    return x[:cut], y[:cut], x[cut:], y[cut:]


def write_npz(path: Path, n_classes: int) -> Path:
    x_tr, y_tr, x_te, y_te = arrays(n_classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    return path
