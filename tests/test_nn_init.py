"""Initializations: the variance each law promises, drawn through `Network.init` on real layers
(so the per-layer fan scaling is what is tested), the shared base draw, labels and parsing."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vglab.nn import init, networks

# A wide MLP whose weight matrices have different fans and many entries each:
# dense1 (1000, 400), dense2 and dense3 (400, 400), out (400, 100).
# Each new (shape, family) costs an XLA compile of the random generator (~0.5 s on this
# machine), so every test below draws on these same shapes where it can.
WIDE = networks.mlp(3, 400, 1000, n_out=100)
FANS = {"dense1": (1000, 400), "dense2": (400, 400), "dense3": (400, 400), "out": (400, 100)}
KEY = jax.random.key(7)
REL_TOL = 0.04  # >= 5 standard errors of a sample variance over >= 40 000 draws


def _check_law(sample, variance, family):
    """Sample variance within REL_TOL, mean ~ 0, and the family's shape (kurtosis)."""
    x = np.asarray(sample, dtype=np.float64).ravel()
    n = x.size
    assert abs(x.var() / variance - 1.0) < REL_TOL, (x.var(), variance)
    assert abs(x.mean()) < 5.0 * math.sqrt(variance / n)
    kurtosis = np.mean(x**4) / x.var() ** 2  # 3 for a normal, 9/5 for a uniform
    assert abs(kurtosis - {"normal": 3.0, "uniform": 1.8}[family]) < 0.15, kurtosis
    if family == "uniform":  # U[-a, a] with a^2 / 3 = variance
        a = math.sqrt(3.0 * variance)
        assert np.abs(x).max() <= a * (1 + 1e-6)
        assert np.abs(x).max() > 0.99 * a


@pytest.mark.parametrize(
    "spec, variance, family",
    [
        ("normal(std=10)", 100.0, "normal"),
        ("normal(variance=10)", 10.0, "normal"),
        ("normal(std=0.05)", 0.0025, "normal"),
        ("uniform(a=10)", 100.0 / 3.0, "uniform"),
    ],
)
def test_fixed_laws_have_their_variance_in_every_layer(spec, variance, family):
    params = WIDE.init(KEY, init.parse(spec), init.zeros())
    assert [layer.name for layer in WIDE.layers] == list(FANS)
    for name, (fan_in, fan_out) in FANS.items():
        assert params[name]["w"].shape == (fan_in, fan_out)
        _check_law(params[name]["w"], variance, family)
        np.testing.assert_array_equal(params[name]["b"], 0.0)


@pytest.mark.parametrize(
    "spec, variance_of, family",
    [
        ("glorot_uniform", lambda fi, fo: 2.0 / (fi + fo), "uniform"),
        ("he_normal", lambda fi, fo: 2.0 / fi, "normal"),
    ],
)
def test_fan_scaled_laws_scale_per_layer(spec, variance_of, family):
    params = WIDE.init(KEY, init.parse(spec), init.zeros())
    for name, (fan_in, fan_out) in FANS.items():
        _check_law(params[name]["w"], variance_of(fan_in, fan_out), family)


@pytest.mark.parametrize(
    "spec, variance_of, family",
    [
        ("glorot_uniform", lambda fi, fo: 2.0 / (fi + fo), "uniform"),
        ("he_normal", lambda fi, fo: 2.0 / fi, "normal"),
    ],
)
def test_fan_scaled_laws_on_conv_layers(spec, variance_of, family):
    # 3x3 kernels, 100 -> 100 channels: fan_in = fan_out = 9 * 100 (Keras' receptive-field fans).
    # 8x8 images, two max-pools: flatten 2*2*100 = 400 -> dense 400 -> out 100 (WIDE's shapes).
    net = networks.cnn(1, 400, (8, 8, 100), n_out=100, filters=100)
    params = net.init(KEY, init.parse(spec), init.zeros())
    for name in ("conv1", "conv4"):
        assert params[name]["w"].shape == (3, 3, 100, 100)
        _check_law(params[name]["w"], variance_of(9 * 100, 9 * 100), family)
    assert params["dense1"]["w"].shape == (400, 400)
    _check_law(params["dense1"]["w"], variance_of(400, 400), family)


@pytest.mark.parametrize(
    "bias_spec, variance, family",
    [("normal(std=0.5)", 0.25, "normal"), ("normal(variance=2)", 2.0, "normal")],
)
def test_biases_follow_their_own_law(bias_spec, variance, family):
    # 50 000 hidden biases; the weights (zeros here) do not touch the bias draw.
    net = networks.mlp(1, 50_000, 1, n_out=100)
    params = net.init(KEY, init.zeros(), init.parse(bias_spec))
    _check_law(params["dense1"]["b"], variance, family)
    np.testing.assert_array_equal(params["dense1"]["w"], 0.0)


def test_bias_law_does_not_change_the_weights():
    a = WIDE.init(KEY, init.parse("normal(std=1)"), init.zeros())
    b = WIDE.init(KEY, init.parse("normal(std=1)"), init.parse("normal(std=0.1)"))
    for name in FANS:
        np.testing.assert_array_equal(a[name]["w"], b[name]["w"])
        assert np.asarray(b[name]["b"]).std() > 0.05


def test_zero_biases_are_exactly_zero():
    params = WIDE.init(KEY, init.parse("normal(std=1)"), init.parse("zeros"))
    for name in FANS:
        assert params[name]["b"].shape == (FANS[name][1],)
        np.testing.assert_array_equal(params[name]["b"], 0.0)


# ---- the shared base draw ---------------------------------------------------------------

SMALL = WIDE


@pytest.mark.parametrize("family_spec, v1, v2", [("normal(std=1)", 1.0, 10.0), ("uniform(a=1)", 2.0, 4.0)])
def test_same_key_same_base_draw(family_spec, v1, v2):
    law = init.parse(family_spec)
    bias = init.parse("normal(std=0.1)")
    p1 = SMALL.init(KEY, law, bias, weight_value=v1)
    p2 = SMALL.init(KEY, law, bias, weight_value=v2)
    for name in SMALL.layer_names:
        w1, w2 = np.asarray(p1[name]["w"]), np.asarray(p2[name]["w"])
        assert np.all(w1 != 0)
        np.testing.assert_allclose(w2, (v2 / v1) * w1, rtol=1e-6)  # exactly the ratio, up to rounding
        np.testing.assert_array_equal(p1[name]["b"], p2[name]["b"])  # the bias draw is untouched


def test_weight_value_one_vs_ten_is_exactly_ten_times():
    law = init.parse("normal(std=1)")
    p1 = SMALL.init(KEY, law, init.zeros(), weight_value=1.0)
    p10 = SMALL.init(KEY, law, init.zeros(), weight_value=10.0)
    p_law10 = SMALL.init(KEY, init.parse("normal(std=10)"), init.zeros())
    for name in SMALL.layer_names:
        np.testing.assert_array_equal(np.asarray(p10[name]["w"]), np.float32(10.0) * np.asarray(p1[name]["w"]))
        np.testing.assert_array_equal(p_law10[name]["w"], p10[name]["w"])


def test_traced_weight_value_under_vmap_shares_the_base_draw():
    law = init.parse("normal(std=1)")
    bias = init.parse("normal(std=0.1)")
    values = [1.0, 0.05, 10.0]
    stacked = jax.vmap(lambda v, bv: WIDE.init(KEY, law, bias, weight_value=v, bias_value=bv))(
        jnp.asarray(values), jnp.asarray(values))
    base = WIDE.init(KEY, law, bias, bias_value=1.0)
    for i, v in enumerate(values):
        for name in ("dense1", "out"):
            np.testing.assert_allclose(stacked[name]["w"][i], v * np.asarray(base[name]["w"]), rtol=1e-6)
            np.testing.assert_allclose(stacked[name]["b"][i], v * np.asarray(base[name]["b"]), rtol=1e-6)


def test_keys_and_layers_give_different_draws():
    law = init.parse("normal(std=1)")
    a = SMALL.init(jax.random.key(0), law, law)
    b = SMALL.init(jax.random.key(1), law, law)
    assert not np.allclose(a["dense2"]["w"], b["dense2"]["w"])
    assert not np.allclose(a["dense2"]["w"], a["dense3"]["w"])  # same shape, independent draws
    assert not np.allclose(a["dense2"]["w"][0], a["dense2"]["b"])


# ---- labels, specs, parsing ----------------------------------------------------------------

def test_labels_say_the_convention():
    assert "std=3.16" in init.parse("normal(variance=10)").label
    assert init.parse("normal(std=10)").label == "N(0, std=10)"
    assert init.parse("normal(variance=100)").label == "N(0, std=10)"
    assert init.parse("uniform(a=10)").label == "U[-10, 10]"
    assert init.parse("glorot_uniform").label == "Glorot uniform"
    assert init.parse("he_normal()").label == "He normal"


def test_std_and_variance_forms_agree():
    assert init.parse("normal(variance=10)").value == pytest.approx(math.sqrt(10))
    assert init.parse("normal(variance=4)") == init.parse("normal(std=2)") == init.normal(std=2)
    assert init.parse("normal(var=4)") == init.parse("normal(sigma=2)") == init.parse(" normal ( std = 2 ) ")
    assert init.parse("uniform(a=10)") == init.uniform(10)
    assert init.parse("glorot") == init.parse("glorot_uniform()") == init.glorot_uniform()
    assert init.parse("he") == init.he_normal()
    law = init.parse("zeros")
    assert init.parse(law) is law


@pytest.mark.parametrize(
    "spec",
    ["normal(std=10)", "normal(std=0.05)", "normal(variance=10)", "normal(variance=2)", "normal(std=1e-3)",
     "uniform(a=10)", "uniform(a=0.3)", "glorot_uniform", "he_normal", "zeros"],
)
def test_parse_round_trips_spec(spec):
    law = init.parse(spec)
    assert init.parse(law.spec) == law
    assert init.parse(law.spec).spec == law.spec


def test_simple_specs_are_canonical():
    for spec in ("normal(std=10)", "normal(std=0.05)", "uniform(a=10)", "glorot_uniform", "he_normal", "zeros"):
        assert init.parse(spec).spec == spec


@pytest.mark.parametrize(
    "bad",
    ["", "(", "gaussian(std=1)", "normal(10)", "normal(std=abc)", "uniform(std=1)", "uniform", "zeros(a=1)",
     "normal(std=1", "normal(mean=0, std=1)"],
)
def test_malformed_specs_list_the_valid_forms(bad):
    with pytest.raises(ValueError) as e:
        init.parse(bad)
    msg = str(e.value)
    for form in ("normal(std=", "normal(variance=", "uniform(a=", "glorot_uniform", "he_normal", "zeros"):
        assert form in msg, msg


@pytest.mark.parametrize(
    "bad, word",
    [("normal()", "std"), ("normal(std=1, variance=1)", "std"), ("normal(std=0)", "std"), ("normal(std=-1)", "std"),
     ("normal(variance=-1)", "variance"), ("uniform(a=0)", "a"), ("normal(std=nan)", "std"), ("uniform(a=inf)", "a")],
)
def test_bad_values_raise(bad, word):
    with pytest.raises(ValueError, match=word):
        init.parse(bad)
