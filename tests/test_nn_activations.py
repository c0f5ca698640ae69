"""Activations, their derivatives and the rescaled activation g(z) = alpha * phi(z / alpha).

Every derivative is checked three ways in float64: against jax.grad of `fn`, against a
central finite difference, and against the textbook formula written here in NumPy.
The network-level check proves that autodiff through a rescaled MLP (alpha traced under
vmap) gives the true gradient of the loss.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from vglab.nn import activations, networks
from vglab.nn.activations import rescaled


@pytest.fixture
def x64():
    """float64 inside the test only; the flag is restored afterwards."""
    with jax.enable_x64(True):
        yield


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# name -> (phi, phi') written independently of the package, in NumPy.
TEXTBOOK = {
    "tanh": (np.tanh, lambda z: 1.0 / np.cosh(z) ** 2),
    "sigmoid": (_sigmoid, lambda z: _sigmoid(z) * (1.0 - _sigmoid(z))),
    "arctan": (np.arctan, lambda z: 1.0 / (1.0 + z**2)),
    "softsign": (lambda z: z / (1.0 + np.abs(z)), lambda z: 1.0 / (1.0 + np.abs(z)) ** 2),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(float)),
}
# log phi'(z) in forms that stay exact in float64 far into the tails (s(1-s) does not: 1 - s rounds).
LOG_TEXTBOOK = {
    "tanh": lambda z: np.log(4.0) - 2.0 * np.logaddexp(z, -z),  # sech^2 z = 4 / (e^z + e^-z)^2
    "sigmoid": lambda z: -np.logaddexp(0.0, -z) - np.logaddexp(0.0, z),  # log s(z) + log s(-z)
    "arctan": lambda z: -np.log1p(z**2),
    "softsign": lambda z: -2.0 * np.log1p(np.abs(z)),
}
ALPHAS = (0.5, 1.0, 2.0, 5.0)
H = 1e-6  # finite-difference step (float64)


def _grid():
    # 60 points, none at 0: relu (no derivative at 0) and softsign (a kink in phi'' at 0, where a
    # central difference is only first-order accurate) are checked a step away from their kinks.
    return np.linspace(-6.0, 6.0, 60)


def _central_difference(f, z, h=H):
    return (np.asarray(f(jnp.asarray(z + h))) - np.asarray(f(jnp.asarray(z - h)))) / (2 * h)


def _autodiff(f, z):
    return np.asarray(jax.vmap(jax.grad(f))(jnp.asarray(z)))


def test_registry_is_the_five_activations():
    assert set(activations.ACTIVATIONS) == set(TEXTBOOK)
    assert {n for n, a in activations.ACTIVATIONS.items() if a.sigmoid_type} == {"tanh", "sigmoid", "arctan", "softsign"}


@pytest.mark.parametrize("name", sorted(TEXTBOOK))
def test_derivative_equals_autodiff_finite_difference_and_textbook(name, x64):
    act = activations.get(name)
    phi_np, dphi_np = TEXTBOOK[name]
    z = _grid()
    zj = jnp.asarray(z)
    assert zj.dtype == jnp.float64
    np.testing.assert_allclose(act.fn(zj), phi_np(z), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(act(zj), phi_np(z), rtol=1e-12, atol=1e-14)
    deriv = np.asarray(act.deriv(zj))
    np.testing.assert_allclose(deriv, dphi_np(z), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(deriv, _autodiff(act.fn, z), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(deriv, _central_difference(act.fn, z), rtol=1e-7, atol=1e-8)
    with np.errstate(divide="ignore"):  # relu: log 0 = -inf
        np.testing.assert_allclose(act.log_deriv(zj), np.log(dphi_np(z)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "arctan", "softsign"])
def test_log_derivative_stays_exact_in_float32_tails(name):
    """Where phi' itself underflows in float32, log phi' is still right (float64 reference)."""
    z = _grid() * 10.0  # out to |z| = 60 (the grid's shape: the eager kernels are already compiled)
    with jax.enable_x64(True):
        ref = np.asarray(activations.get(name).log_deriv(jnp.asarray(z)))
        np.testing.assert_allclose(ref, LOG_TEXTBOOK[name](z), rtol=1e-12)
    got = np.asarray(activations.get(name).log_deriv(jnp.asarray(z, jnp.float32)))
    assert got.dtype == np.float32 and np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(TEXTBOOK))
def test_rescaled_value_and_derivative(name, x64):
    phi_np, dphi_np = TEXTBOOK[name]
    for alpha in ALPHAS:
        g = rescaled(activations.get(name), alpha)
        z = _grid() * alpha  # same points of phi's argument z / alpha for every alpha
        zj = jnp.asarray(z)
        np.testing.assert_allclose(g.fn(zj), alpha * phi_np(z / alpha), rtol=1e-12, atol=1e-14)
        deriv = np.asarray(g.deriv(zj))
        np.testing.assert_allclose(deriv, dphi_np(z / alpha), rtol=1e-12, atol=1e-14)  # g'(z) = phi'(z/alpha)
        np.testing.assert_allclose(deriv, _autodiff(g.fn, z), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(deriv, _central_difference(g.fn, z), rtol=1e-7, atol=1e-8)
        with np.errstate(divide="ignore"):
            np.testing.assert_allclose(g.log_deriv(zj), np.log(dphi_np(z / alpha)), rtol=1e-12, atol=1e-12)
        assert g.sigmoid_type == activations.get(name).sigmoid_type


def test_rescaled_alpha_one_is_the_plain_activation(x64):
    z = jnp.asarray(_grid())
    for name in TEXTBOOK:
        phi = activations.get(name)
        np.testing.assert_array_equal(rescaled(phi, 1.0).fn(z), phi.fn(z))


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "arctan", "softsign"])
def test_rescaled_with_traced_alpha_under_vmap_matches_loop(name, x64):
    phi = activations.get(name)
    z = jnp.asarray(_grid())
    alphas = jnp.asarray(ALPHAS)

    def grads(alpha):  # alpha is a tracer here
        g = rescaled(phi, alpha)
        return jax.vmap(jax.grad(g.fn))(z), g.deriv(z), g.fn(z)

    vm_grad, vm_deriv, vm_fn = jax.jit(jax.vmap(grads))(alphas)
    for i, a in enumerate(ALPHAS):
        g = rescaled(phi, a)
        np.testing.assert_allclose(vm_grad[i], _autodiff(g.fn, np.asarray(z)), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(vm_deriv[i], g.deriv(z), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(vm_fn[i], g.fn(z), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(vm_grad[i], vm_deriv[i], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, -0.5, float("nan"), np.float32(-2.0), jnp.asarray(-1.0), np.array([1.0, 0.0])])
def test_nonpositive_concrete_alpha_raises(bad):
    with pytest.raises(ValueError, match="alpha"):
        rescaled(activations.get("tanh"), bad)


def test_network_apply_rejects_nonpositive_concrete_alpha():
    net = networks.mlp(1, 4, 3)
    params = _numpy_params(net, 0, 1.0, 0.0)
    x = jnp.ones((2, 3))
    for bad in (0.0, -1.0):  # for tanh, alpha=-1 would silently equal alpha=1
        with pytest.raises(ValueError, match="alpha"):
            net.apply(params, x, alpha=bad)


def test_unknown_activation_lists_choices():
    with pytest.raises(ValueError) as e:
        activations.get("gelu")
    for name in TEXTBOOK:
        assert name in str(e.value)


# ---- the whole rescaled network --------------------------------------------------------------

def _numpy_params(net, seed, w_std, b_std):
    """Parameters drawn with NumPy (the init code is tested elsewhere; this keeps these tests
    free of XLA compiles of the random number generator)."""
    rng = np.random.default_rng(seed)
    return {layer.name: {"w": jnp.asarray(rng.normal(0.0, w_std, layer.w_shape)),
                         "b": jnp.asarray(rng.normal(0.0, b_std, layer.b_shape))} for layer in net.layers}


def _xent(logits, y):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


@pytest.mark.parametrize("act", ["tanh", "sigmoid"])
def test_rescaled_mlp_forward_matches_numpy(act, x64):
    net = networks.mlp(3, 4, 5, n_out=3, activation=act)
    params = _numpy_params(net, 1, 1.5, 0.5)
    x = np.random.default_rng(0).standard_normal((6, 5))
    phi_np = TEXTBOOK[act][0]
    apply = jax.jit(net.apply)
    for alpha in ALPHAS:
        h = x
        for name in ("dense1", "dense2", "dense3"):
            h = alpha * phi_np((h @ np.asarray(params[name]["w"]) + np.asarray(params[name]["b"])) / alpha)
        want = h @ np.asarray(params["out"]["w"]) + np.asarray(params["out"]["b"])
        np.testing.assert_allclose(apply(params, jnp.asarray(x), alpha), want, rtol=1e-12, atol=1e-12)


def test_rescaled_mlp_gradient_with_traced_alpha_matches_finite_differences(x64):
    """d loss / d params by autodiff, alpha traced under vmap, equals central differences
    in every coordinate, for every alpha."""
    net = networks.mlp(3, 4, 5, n_out=3, activation="tanh")
    params = _numpy_params(net, 2, 1.0, 0.3)
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((6, 5)))
    y = jnp.asarray(rng.integers(0, 3, 6))
    theta, unravel = ravel_pytree(params)
    assert theta.dtype == jnp.float64 and theta.size == net.n_params

    def loss(flat, alpha):
        return _xent(net.apply(unravel(flat), x, alpha=alpha), y)

    h = 1e-6
    eye = jnp.eye(theta.size) * h

    @jax.jit
    def both(alphas):
        auto = jax.vmap(lambda a: ravel_pytree(jax.grad(lambda p: _xent(net.apply(p, x, alpha=a), y))(params))[0])(alphas)
        per_alpha = jax.vmap(lambda d, a: loss(theta + d, a), in_axes=(0, None))
        fd = jax.vmap(lambda a: (per_alpha(eye, a) - per_alpha(-eye, a)) / (2 * h))(alphas)
        return auto, fd

    auto, fd = both(jnp.asarray(ALPHAS))

    assert auto.shape == fd.shape == (len(ALPHAS), theta.size)
    np.testing.assert_allclose(auto, fd, rtol=1e-6, atol=1e-8)
    # alpha really changes the gradient (so the check above is not one gradient four times)
    assert not np.allclose(auto[0], auto[-1], rtol=1e-3)
