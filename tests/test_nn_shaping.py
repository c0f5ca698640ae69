"""Kernel-shaped activations (TAT): the parameters vglab solves against the numbers the
`dks` package (DeepMind, v0.1.2) publishes for the same settings, and the transformed
activation's derivatives against autodiff."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vglab.nn import activations, shaping

# dks.base.activation_transform._get_activations_params([name], method="TAT",
#     tat_params={"c_curve_target": tau}, max_curv_func=lambda c: depth * c)  (dks 0.1.2, its own quadrature):
# (input_scale α, input_shift β, output_shift δ, output_scale γ)
PUBLISHED = {
    ("tanh", 20, 0.3): (0.12971202446065797, 0.5378358601740009, -0.4937356967682234, 10.135855049533976),
    ("tanh", 20, 1.0): (0.23997809383359353, -0.5825204681257313, 0.5315318026412974, 5.6788862061496435),
    ("sigmoid", 20, 0.3): (-0.2594240488358532, -1.0756717208200566, -0.2531321515295878, 20.2717101102845),
}
PHI = {"tanh": np.tanh, "sigmoid": lambda z: 1 / (1 + np.exp(-z))}


@pytest.mark.parametrize("key", list(PUBLISHED))
def test_tat_parameters_match_the_dks_package(key):
    name, depth, tau = key
    s = shaping.tat(name, depth, tau)
    assert s.input_scale > 0 and s.label == f"TAT {name} (τ={tau:g}, L={depth})"
    a, b, d, g = PUBLISHED[key]
    x = np.linspace(-6, 6, 241)
    mine = s.output_scale * (PHI[name](s.input_scale * x + s.input_shift) + s.output_shift)
    theirs = [sign * g * (PHI[name](a * (flip * x) + b) + d) for sign in (1, -1) for flip in (1, -1)]
    # one of the kernel's symmetric twins ±φ̂(±x): the same function to dks's precision (~1e-8)
    assert min(np.max(np.abs(mine - t)) for t in theirs) < 1e-6 * np.max(np.abs(mine))
    assert s.output_scale == pytest.approx(g, rel=1e-7) and s.input_scale == pytest.approx(abs(a), rel=1e-7)


def test_tat_conditions_hold_by_monte_carlo():
    """Q(1) = 1, Q′(1) = 1, C′(1) = 1 and C″(1) = τ/L estimated from samples (not the solver's
    quadrature), within 5 standard errors."""
    s = shaping.tat("tanh", 20, 0.3)
    a, b, d, g = s.input_scale, s.input_shift, s.output_shift, s.output_scale
    x = np.random.default_rng(0).standard_normal(2_000_000)
    t = np.tanh(a * x + b)
    h, dh, ddh = g * (t + d), g * a * (1 - t**2), g * a * a * (-2 * t * (1 - t**2))
    for sample, want in ((h * h, 1.0), (h * dh * x, 1.0), (dh * dh, 1.0), (ddh * ddh, 0.3 / 20)):
        assert abs(sample.mean() - want) < 5 * sample.std() / math.sqrt(sample.size), (sample.mean(), want)


def test_shaped_activation_derivatives_equal_autodiff_float64():
    act = shaping.shaped(shaping.tat("tanh", 20, 0.3))
    assert act.name == "tat(tanh, tau=0.3, depth=20)" and act.sigmoid_type
    with jax.enable_x64(True):
        z = jnp.linspace(-40.0, 40.0, 801, dtype=jnp.float64)
        auto = jax.vmap(jax.grad(act.fn))(z)
        np.testing.assert_allclose(np.asarray(act.deriv(z)), np.asarray(auto), rtol=1e-10, atol=1e-300)
        inner = z[np.abs(np.asarray(z)) < 20]
        np.testing.assert_allclose(np.asarray(act.log_deriv(inner)), np.log(np.asarray(jax.vmap(jax.grad(act.fn))(inner))),
                                   rtol=1e-10)


@pytest.mark.parametrize("args, words", [(("relu", 20), "smooth activation"), (("tanh", 0), "integer >= 1"),
                                         (("tanh", 20, -1.0), "tau"), (("swish", 20), "unknown activation")])
def test_bad_arguments_are_named(args, words):
    with pytest.raises(ValueError, match=words):
        shaping.tat(*args)


def test_a_tat_activation_is_a_spec_setting_named_in_labels_and_run_ids():
    from vglab.experiments.spec import SpecError, load_spec

    spec = load_spec({"name": "t", "depth": 4, "activation": ["tanh", "tat(tanh)", "tat(sigmoid, tau=1)"]})
    runs = [r for r in spec.expand() if r.seed == 0]
    assert [r.activation for r in runs] == ["tanh", "tat(tanh, tau=0.3, depth=4)", "tat(sigmoid, tau=1, depth=4)"]
    assert runs[1].label == "tat(tanh, tau=0.3, depth=4) · N(0, std=1)"
    assert runs[1].run_id.startswith("mlp-4x8-tat-tanh-tau-0.3-depth-4-std1-s0-")
    assert runs[0].run_id == load_spec({"name": "t", "depth": 4}).expand()[0].run_id  # plain ids unchanged
    with pytest.raises(SpecError, match=r"takes the MLP's depth.*tat\(tanh, tau=0.3, depth=20\)"):
        load_spec({"name": "t", "network": "cnn", "activation": "tat(tanh)"})
    with pytest.raises(SpecError, match=r"unknown argument\(s\) \['gain'\]"):
        load_spec({"name": "t", "activation": "tat(tanh, gain=2)"})


def test_mlp_with_a_tat_activation_gradient_checked_float64():
    from jax.test_util import check_grads

    from vglab.nn import networks
    from vglab.train import loop

    net = networks.mlp(3, 6, 5, n_out=4, activation="tat(tanh, tau=0.3, depth=3)")
    act = activations.get(net.activation)
    s = shaping.tat("tanh", 3, 0.3)
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        params = {l.name: {"w": jnp.asarray(rng.normal(0, 1 / math.sqrt(l.fan_in), l.w_shape)),
                           "b": jnp.asarray(rng.normal(0, 0.1, l.b_shape))} for l in net.layers}
        x, y = jnp.asarray(rng.standard_normal((8, 5))), jnp.asarray(rng.integers(0, 4, 8))
        h = x  # the forward pass by hand: φ̂(z) = γ(tanh(αz + β) + δ)
        for l in net.layers[:-1]:
            z = h @ params[l.name]["w"] + params[l.name]["b"]
            h = s.output_scale * (np.tanh(s.input_scale * z + s.input_shift) + s.output_shift)
        want = h @ params["out"]["w"] + params["out"]["b"]
        np.testing.assert_allclose(np.asarray(net.apply(params, x)), np.asarray(want), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.asarray(act.fn(jnp.asarray([0.3]))), np.asarray(shaping.shaped(s).fn(jnp.asarray([0.3]))))
        check_grads(jax.jit(lambda p: loop.mean_cross_entropy(net.apply(p, x), y)), (params,), order=1, modes=["rev"],
                    eps=1e-5, atol=1e-6, rtol=1e-6)
