"""The CNN presets train through `vglab.nn.networks.conv`, whose gradient is written out
(see its docstring: XLA CPU runs autodiff's transposed convolutions slowly inside the
training scan). It must equal autodiff's gradient of the plain convolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from vglab.nn.networks import conv


def _plain(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("shape, kernel", [((3, 7, 5, 4), (3, 3, 4, 2)), ((2, 4, 4, 2), (2, 2, 2, 3))])
def test_conv_gradient_equals_autodiff(shape, kernel):
    kx, kw, kg = jax.random.split(jax.random.PRNGKey(0), 3)
    x, w = jax.random.normal(kx, shape), jax.random.normal(kw, kernel)
    np.testing.assert_allclose(conv(x, w), _plain(x, w), rtol=1e-6, atol=1e-6)  # two programs (precision differs)
    loss = lambda f: (lambda x, w: jnp.sum(jnp.tanh(f(x, w)) * jax.random.normal(kg, _plain(x, w).shape)))  # noqa: E731
    mine, ref = jax.jit(jax.grad(loss(conv), (0, 1)))(x, w), jax.jit(jax.grad(loss(_plain), (0, 1)))(x, w)
    for a, b in zip(mine, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # and under the engine's double vmap (members x seeds)
    xs, ws = jnp.stack([x, 2 * x]), jnp.stack([w, -w])
    g = jax.jit(jax.vmap(jax.grad(loss(conv), 1)))(xs, ws)
    np.testing.assert_allclose(g, jax.jit(jax.vmap(jax.grad(loss(_plain), 1)))(xs, ws), rtol=1e-5, atol=1e-5)


def test_cnn_units_are_single_runs_on_cpu():
    from vglab.experiments.spec import load_spec

    spec = load_spec("cnn-large-params", dataset="mnist")
    units = spec.units(one_run_inputs=("images",))
    assert len(units) == len(spec.expand()) and all(len(u.runs) == 1 for u in units)
    assert len({u.id for u in units}) == len(units)
    assert len(spec.units()) == len(spec.seeds)  # otherwise one unit per seed
