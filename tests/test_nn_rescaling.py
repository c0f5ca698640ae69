"""The rescaling identity (vglab.nn.rescaling): the α-network with parameters θ at x equals
the standard network with θ̂ = (W, b/α, α W_out, b_out) at x/α, forward and backward, for the
built-in MLPs, the CNN and the paper's CNNs (max-pools included).

Tolerances. The identity is exact in real arithmetic; in floating point the two programs
round differently (z/α inside the activation against x/α, b/α and α W_out outside it: each
a relative 2^-24 ≈ 6e-8 in float32), and the network carries these differences to the
logits and gradients. In the ordered or near-critical phase (Glorot, the study's
N(0, std=0.05)) they stayed below 1.2e-6 of each tensor's largest entry (measured over the
cases below), so float32 is checked at 1e-5. In the chaotic phase (N(0, std=1) at width 8:
σ_w² = 8) a perturbation grows layer by layer — that is what chaotic means — and the 20-layer
MLP's float32 gradients differed by 1.6e-3, so there the identity is checked in float64,
where it holds to 4e-13.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vglab.nn import init, networks, rescaling

NETWORKS = {
    "mlp 20x8": lambda: networks.mlp(20, 8, 12),
    "mlp 2x16": lambda: networks.mlp(2, 16, 12),
    "cnn": lambda: networks.cnn(1, 8, (8, 8, 1)),  # max-pools after conv2 and conv4: 8 -> 4 -> 2
    "paper_cnn(parameters)": lambda: networks.paper_cnn("parameters", (8, 8, 1)),  # three pools: 8 -> 1
}


def _loss(net, params, x, y, alpha):
    """Mean cross-entropy of the logits against labels y."""
    logp = jax.nn.log_softmax(net.apply(params, x, alpha))
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def _setup(net, weights, biases, dtype=np.float32):
    """Parameters and a small random batch, as NumPy arrays (the comparisons run in NumPy: no
    eager JAX op to compile per tensor shape)."""
    params = net.init(jax.random.PRNGKey(0), init.parse(weights), init.parse(biases))
    params = jax.tree.map(lambda a: np.asarray(a, dtype), params)
    rng = np.random.default_rng(1)
    x = rng.uniform(-1.0, 1.0, (16,) + net.in_shape).astype(dtype)
    y = rng.integers(0, 10, 16).astype(np.int32)
    return params, x, y


def _rel_err(a, b) -> float:
    """max |a - b| relative to max |a| (per tensor)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


@functools.partial(jax.jit, static_argnums=0)
def _logits_and_grads(net, params, x, y, alpha):
    """One compiled program per network (and dtype): α is traced, so the α-network and its
    twin (α = 1) share it."""
    return net.apply(params, x, alpha), jax.grad(lambda p: _loss(net, p, x, y, alpha))(params)


def _check_identity(net, params, x, y, alpha, tol):
    twin = rescaling.twin_params(net, params, alpha)
    xt = rescaling.twin_inputs(x, alpha)
    logits, grads = _logits_and_grads(net, params, x, y, alpha)
    logits_twin, grads_twin = _logits_and_grads(net, twin, xt, y, 1.0)
    assert _rel_err(logits, logits_twin) < tol
    mapped = rescaling.grads_from_twin(net, grads_twin, alpha)
    for layer in net.layer_names:
        for k in ("w", "b"):
            assert np.max(np.abs(grads[layer][k])) > 0, (layer, k)  # nothing vacuous
            assert _rel_err(grads[layer][k], mapped[layer][k]) < tol, (layer, k)


@pytest.mark.parametrize("weights, biases", [("glorot_uniform", "normal(std=0.1)"),
                                             ("normal(std=0.05)", "normal(std=0.05)")])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_rescaled_network_is_its_twin_float32(name, weights, biases):
    net = NETWORKS[name]()
    params, x, y = _setup(net, weights, biases)
    for alpha in (0.5, 2.0, 5.0):
        _check_identity(net, params, x, y, alpha, tol=1e-5)


@pytest.mark.parametrize("name", ["mlp 20x8", "cnn"])
def test_rescaled_network_is_its_twin_float64_even_when_chaotic(name):
    net = NETWORKS[name]()
    with jax.enable_x64(True):
        params, x, y = _setup(net, "normal(std=1)", "normal(std=1)", np.float64)
        for alpha in (0.3, 5.0):
            _check_identity(net, params, x, y, alpha, tol=1e-10)


def test_bad_input_is_named():
    net = networks.mlp(2, 8, 12)
    params, _, _ = _setup(net, "glorot_uniform", "zeros")
    with pytest.raises(ValueError, match="alpha must be > 0"):
        rescaling.twin_params(net, params, 0.0)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        rescaling.twin_inputs(np.ones(3), -1.0)
    del params["dense2"]
    with pytest.raises(ValueError, match=r"layer\(s\) \['dense2'\].*network.init"):
        rescaling.twin_params(net, params, 2.0)
