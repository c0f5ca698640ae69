"""Initializations: the variance each law promises, drawn through `Network.init` on real layers
(so the per-layer fan scaling is what is tested), the shared base draw, labels and parsing."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vglab.nn import init, networks

# A wide MLP whose weight matrices have different fans and many entries each:
# dense1 (1000, 400), dense2 (400, 400), out (400, 100).
WIDE = networks.mlp(2, 400, 1000, n_out=100)
FANS = {"dense1": (1000, 400), "dense2": (400, 400), "out": (400, 100)}
KEY = jax.random.key(7)
REL_TOL = 0.04  # >= 5 standard errors of a sample variance over >= 40 000 draws
WIDE_SPECS = ("normal(std=10)", "normal(variance=10)", "normal(std=0.05)", "uniform(a=10)", "glorot_uniform",
              "he_normal", "normal(std=1)")

# XLA's CPU compile of the random generator is the cost of these tests (seconds per program,
# growing faster than linearly with the number of draws in it). So the draws are grouped in
# a few jitted programs, where draws of one family on one key share the generator, compiled
# at the lowest backend optimization level (the draws themselves are cheap).
def _compile(fn):
    return jax.jit(fn, compiler_options={"xla_backend_optimization_level": 0})


@pytest.fixture(scope="module")
def wide():
    """{spec: params} on WIDE with zero biases, plus the same-key draws of the base-draw tests."""
    def draw(key):
        out = {spec: WIDE.init(key, init.parse(spec), init.zeros()) for spec in WIDE_SPECS}
        bias = init.parse("normal(std=0.1)")
        for v in (1.0, 10.0):
            out[f"normal value={v:g}"] = WIDE.init(key, init.normal(std=1), bias, weight_value=v)
        for v in (2.0, 4.0):
            out[f"uniform value={v:g}"] = WIDE.init(key, init.uniform(1), bias, weight_value=v)
        return out

    return jax.tree_util.tree_map(np.asarray, _compile(draw)(KEY))


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
def test_fixed_laws_have_their_variance_in_every_layer(wide, spec, variance, family):
    params = wide[spec]
    assert WIDE.layer_names == tuple(FANS)
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
def test_fan_scaled_laws_scale_per_layer(wide, spec, variance_of, family):
    for name, (fan_in, fan_out) in FANS.items():
        _check_law(wide[spec][name]["w"], variance_of(fan_in, fan_out), family)


def test_conv_layers_use_receptive_field_fans():
    # 3x3 kernels: fan_in = 9 * c_in, fan_out = 9 * filters (Keras' convention); the draw itself goes
    # through the same `_scale(law, layer)` as the dense layers checked above.
    net = networks.cnn(1, 8, (8, 8, 5), filters=7)
    conv1, conv2 = net.layers[0], net.layers[1]
    assert (conv1.w_shape, conv1.fan_in, conv1.fan_out) == ((3, 3, 5, 7), 9 * 5, 9 * 7)
    assert (conv2.w_shape, conv2.fan_in, conv2.fan_out) == ((3, 3, 7, 7), 9 * 7, 9 * 7)
    assert init.glorot_uniform().scale(conv1.fan_in, conv1.fan_out) == pytest.approx(math.sqrt(6 / (45 + 63)))
    assert init.he_normal().scale(conv1.fan_in, conv1.fan_out) == pytest.approx(math.sqrt(2 / 45))
    dense1 = net.layers[4]  # 8 -> 4 -> 2 after two pools: flatten 2*2*7 = 28
    assert (dense1.name, dense1.fan_in, dense1.fan_out) == ("dense1", 28, 8)


def test_biases_follow_their_own_law():
    # 50 000 hidden biases; the weights (zeros here) do not touch the bias draw.
    net = networks.mlp(1, 50_000, 1, n_out=100)
    laws = {"normal(std=0.5)": (0.25, "normal"), "normal(variance=2)": (2.0, "normal"), "uniform(a=3)": (3.0, "uniform")}
    drawn = _compile(lambda k: {s: net.init(k, init.zeros(), init.parse(s)) for s in laws})(KEY)
    for spec, (variance, family) in laws.items():
        _check_law(drawn[spec]["dense1"]["b"], variance, family)
        np.testing.assert_array_equal(drawn[spec]["dense1"]["w"], 0.0)


def test_bias_law_does_not_change_the_weights(wide):
    for name in FANS:
        np.testing.assert_array_equal(wide["normal(std=1)"][name]["w"], wide["normal value=1"][name]["w"])
        np.testing.assert_array_equal(wide["normal(std=1)"][name]["b"], 0.0)
        assert 0.07 < wide["normal value=1"][name]["b"].std() < 0.13  # normal(std=0.1) biases


def test_zero_biases_are_exactly_zero(wide):
    for name in FANS:
        assert wide["he_normal"][name]["b"].shape == (FANS[name][1],)
        np.testing.assert_array_equal(wide["he_normal"][name]["b"], 0.0)


# ---- the shared base draw ---------------------------------------------------------------

def test_compiled_weight_value_one_vs_ten_is_ten_times(wide):
    for name in FANS:
        w1, w10 = wide["normal value=1"][name]["w"], wide["normal value=10"][name]["w"]
        assert np.all(w1 != 0)
        # XLA may fold the factor into the generator's own arithmetic: equal to within 2 ulp
        # (the eager call is exact: test_eager_draw_equals_the_compiled_one)
        np.testing.assert_allclose(w10, np.float32(10.0) * w1, rtol=2.5e-7, atol=0)
        np.testing.assert_array_equal(wide["normal(std=10)"][name]["w"], w10)  # the law's own value: same draw
        np.testing.assert_array_equal(wide["normal value=1"][name]["b"], wide["normal value=10"][name]["b"])


def test_uniform_weight_value_scales_the_same_base_draw(wide):
    for name in FANS:
        w2, w4 = wide["uniform value=2"][name]["w"], wide["uniform value=4"][name]["w"]
        np.testing.assert_allclose(w4, 2.0 * w2, rtol=1e-6)
        np.testing.assert_allclose(wide["uniform(a=10)"][name]["w"], 5.0 * w2, rtol=1e-6)
        np.testing.assert_array_equal(wide["uniform value=2"][name]["b"], wide["uniform value=4"][name]["b"])


TINY = networks.mlp(1, 3, 3, n_out=3)  # one weight shape (3, 3): an eager draw compiles the generator per shape


@pytest.fixture(scope="module")
def tiny():
    """TINY drawn eagerly, and compiled both plainly and with a traced weight value under vmap."""
    values = [1.0, 0.05, 10.0]
    law = init.normal(std=1)
    eager = {v: TINY.init(KEY, law, init.zeros(), weight_value=v) for v in (1.0, 10.0)}
    eager["std=10"] = TINY.init(KEY, init.normal(std=10), init.zeros())
    eager["other key"] = TINY.init(jax.random.key(8), law, init.zeros())

    def compiled(key):
        return (TINY.init(key, init.normal(std=10), init.zeros()),
                jax.vmap(lambda v: TINY.init(key, law, init.zeros(), weight_value=v))(jnp.asarray(values)))

    plain, stacked = _compile(compiled)(KEY)
    return eager, plain, stacked, values


def test_eager_weight_value_one_vs_ten_is_exactly_ten_times(tiny):
    eager, plain, _, _ = tiny
    for name in TINY.layer_names:
        w1, w10 = np.asarray(eager[1.0][name]["w"]), np.asarray(eager[10.0][name]["w"])
        np.testing.assert_array_equal(w10, np.float32(10.0) * w1)  # exactly
        np.testing.assert_array_equal(eager["std=10"][name]["w"], w10)
        np.testing.assert_allclose(plain[name]["w"], w10, rtol=1e-6)  # the compiled draw is the same


def test_traced_weight_value_under_vmap_shares_the_base_draw(tiny):
    eager, _, stacked, values = tiny
    for i, v in enumerate(values):  # member 0 (value 1) is the base draw itself
        for name in TINY.layer_names:
            np.testing.assert_allclose(stacked[name]["w"][i], v * np.asarray(stacked[name]["w"][0]), rtol=1e-6)
            np.testing.assert_allclose(stacked[name]["w"][i], v * np.asarray(eager[1.0][name]["w"]), rtol=1e-6)


def test_keys_and_layers_give_different_draws(wide, tiny):
    eager = tiny[0]
    for name in TINY.layer_names:  # another key, another draw
        assert not np.allclose(eager[1.0][name]["w"], eager["other key"][name]["w"])
    assert not np.allclose(eager[1.0]["dense1"]["w"], eager[1.0]["out"]["w"])  # same shape, other layer
    a = wide["normal(std=1)"]
    assert not np.allclose(a["dense2"]["w"][:, :100], a["out"]["w"])  # layers are independent


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


ONE_OF = r"normal init needs exactly one of std=, variance= or sigma_w2= \(e\.g\. normal\(std=10\)"


@pytest.mark.parametrize(
    "bad, message",
    [("normal()", ONE_OF), ("normal(std=1, variance=1)", ONE_OF),
     ("normal(std=0)", r"normal init std must be finite and > 0, got 0\.0$"),
     ("normal(std=-1)", r"normal init std must be finite and > 0, got -1\.0$"),
     ("normal(variance=-1)", r"normal init variance must be > 0, got -1\.0$"),
     ("uniform(a=0)", r"uniform init half-width a must be finite and > 0, got 0\.0$"),
     ("normal(std=nan)", r"normal init std must be finite and > 0, got nan$"),
     ("uniform(a=inf)", r"uniform init half-width a must be finite and > 0, got inf$")],
)
def test_bad_values_raise(bad, message):
    """The whole message: which value is wrong, the rule and the value given."""
    with pytest.raises(ValueError, match=message):
        init.parse(bad)
