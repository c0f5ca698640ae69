"""The mean-field theory (vglab.report.theory): exact cases, quadrature vs Monte Carlo,
and the prediction against gradients measured by the real engine."""

import math

import numpy as np
import pytest
from report_data import report_dirs  # noqa: F401  (session fixture)

from vglab.report import theory


def test_relu_with_he_init_has_chi_exactly_one():
    p = theory.predict(20, 8, 28, "relu", weight_spec="he_normal", bias_var=0.0, input_sq_norm=12.0)
    assert np.allclose(p.chi, 1.0, atol=1e-12, rtol=0)
    assert np.allclose(p.log_rel_backward, 0.0, atol=1e-10)
    # He keeps q constant through the layers: q_{l+1} = 2 * E[relu(sqrt(q) z)^2] = q
    assert np.allclose(p.q[1:], p.q[1], rtol=1e-10)


def test_tanh_at_sigma_w_one_flows_to_the_zero_fixed_point_and_chi_to_one():
    q = 1.0
    qs = []
    for _ in range(300):
        q = theory.q_map(q, "tanh", 1.0, sigma_w2=1.0, sigma_b2=0.0)
        qs.append(q)
    assert all(b < a for a, b in zip(qs, qs[1:]))  # monotone towards q* = 0
    assert qs[-1] < 0.01
    assert theory.chi(qs[-1], "tanh", 1.0, 1.0) > 0.98
    assert theory.chi(0.0, "tanh", 1.0, 1.0) == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "arctan", "softsign", "relu"])
@pytest.mark.parametrize("alpha", [1.0, 2.5])
def test_quadrature_matches_monte_carlo(name, alpha):
    rng = np.random.default_rng(0)
    z = rng.standard_normal(1_000_000)
    g, dg = theory.activation(name, alpha)
    smooth = name not in theory.KINKED
    for q in (1e-3, 0.5, 3.0, 900.0):  # 900: a spike far narrower than the Hermite nodes' spacing
        for f in (lambda u: g(u) ** 2, lambda u: dg(u) ** 2):
            mc = np.mean(f(math.sqrt(q) * z))
            se = np.std(f(math.sqrt(q) * z)) / math.sqrt(z.size)
            quad = theory.gauss_expect(f, q, scale=alpha, smooth=smooth)
            assert abs(quad - mc) < 5 * se + 1e-4 * abs(mc), (name, alpha, q, quad, mc)


def test_rescaled_tanh_is_more_linear():
    """g(z) = α tanh(z/α): at a fixed q, a larger α keeps E[g'^2] nearer 1 (less saturation)."""
    vals = [theory.gauss_expect(lambda u, a=a: theory.activation("tanh", a)[1](u) ** 2, 4.0, scale=a) for a in (1, 2, 5)]
    assert vals[0] < vals[1] < vals[2] < 1.0


def test_deep_narrow_small_init_decays_steeply():
    """Deep 20x8 at N(0, std=0.05): sigma_w^2 = 8 x 0.0025 = 0.02, so chi ~ 0.02 per layer."""
    p = theory.predict(20, 8, 28, "tanh", weight_spec="normal(std=0.05)", bias_var=0.0025, input_sq_norm=17.8)
    assert np.all(p.chi < 0.021) and np.all(p.chi > 0.015)
    assert p.slope() > 1.6  # log10 ||dJ/dW||^2 falls by > 1.6 decades per layer towards the input
    assert p.log_rel_backward[0] / math.log(10) < -30


def test_large_weights_are_in_the_chaotic_phase():
    """N(0, std=10): q is huge, E[tanh'^2] ~ 1/sqrt(q), yet sigma_w^2 = 800 wins: chi > 1."""
    p = theory.predict(4, 8, 28, "tanh", weight_spec="normal(std=10)", bias_var=100.0, input_sq_norm=17.8)
    assert np.all(p.chi[1:] > 5)


def test_init_variances():
    assert theory.weight_variance("normal(std=10)", 8, 8) == pytest.approx(100)
    assert theory.weight_variance("normal(variance=10)", 8, 8) == pytest.approx(10)
    assert theory.weight_variance("uniform(a=3)", 8, 8) == pytest.approx(3.0)
    assert theory.weight_variance("glorot_uniform", 28, 8) == pytest.approx(2 / 36)
    assert theory.weight_variance("he_normal", 8, 8) == pytest.approx(2 / 8)
    assert theory.bias_variance("N(0, std=0.05)") == pytest.approx(0.0025)
    assert theory.bias_variance("U[-1, 1]") == pytest.approx(1 / 3)
    assert theory.bias_variance("zeros") == 0.0
    assert theory.bias_variance(None, "glorot_uniform") == 0.0
    assert theory.bias_variance(None, "normal(std=2)") == pytest.approx(4.0)


def test_theory_inputs_are_read_from_the_runs_table_never_re_derived():
    """n_in, E‖x‖², σ_b² and n_classes come from the stored columns; runs stored before them
    give None (the figure then says to re-run), never a value worked out from the labels."""
    row = {"n_in": 28, "input_sq_norm": 17.8, "bias_var": 0.0025, "n_classes": 3}
    assert theory.stored_inputs(row) == (28, 17.8, 0.0025)
    assert theory.stored_inputs({**row, "input_sq_norm": None}) == (28, None, 0.0025)
    assert theory.stored_inputs({k: v for k, v in row.items() if k != "n_in"}) is None
    assert theory.stored_inputs({**row, "bias_var": float("nan")}) is None  # the model's own bias law: unknown


def test_prediction_against_measured_gradients(report_dirs):
    """The engine's measured per-layer gradient norms (epoch 1) follow the mean-field
    prediction with the layer inputs: same sign, and within a factor 10 (one decade) of the
    predicted first/last ratio for the small-init net; the numbers are printed (pytest -s)."""
    from vglab.results.store import load

    comp = {c.weight_spec: c for c in theory.compare(load(report_dirs["many-layers"])) if c.alpha == 1}
    c = comp["normal(std=0.05)"]
    fl = c.first_vs_last
    print(f"\n{c.label}: slope chi-product {c.slope_backward:+.2f}, with inputs {c.slope_full:+.2f}, "
          f"measured {c.slope_measured:+.2f}; first/last {fl}")
    assert not c.input_assumed  # digits is embedded: E||x||^2 is measured, not assumed
    assert fl["measured"] < -0.5 and fl["full"] < -0.5  # the gradient shrinks towards the input
    assert abs(fl["measured"] - fl["full"]) < 1.0
    assert c.slope_measured > 0.2
