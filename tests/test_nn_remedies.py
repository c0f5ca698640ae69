"""The remedies' building blocks (issue 29): orthogonal init, the critical σ_w², and the MLP's
residual blocks and LayerNorm — each checked against what it promises, independently of the
code that implements it (NumPy references, finite differences, Monte Carlo)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import vglab
from vglab.data.preprocess import Arrays
from vglab.experiments.spec import SpecError, load_spec
from vglab.nn import init, networks
from vglab.train import Member, TrainConfig, loop

NET = networks.mlp(2, 8, 20, n_out=10)  # dense1 (20, 8) tall, dense2 (8, 8) square, out (8, 10) wide
GAINS = (0.5, 2.0)


def _gram(w):
    """WᵀW for a tall or square matrix, WWᵀ for a wide one (the identity-sized product)."""
    w = np.asarray(w, np.float64).reshape(-1, w.shape[-1])
    return w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T


def _assert_semi_orthogonal(params, gain):
    for layer in NET.layers:
        g = _gram(params[layer.name]["w"])
        np.testing.assert_allclose(g, gain**2 * np.eye(len(g)), atol=2e-6 * gain**2, err_msg=layer.name)
        assert np.all(np.asarray(params[layer.name]["b"]) == 0)  # the default bias of an orthogonal law: zeros


@pytest.fixture(scope="module")
def traced_sweep():
    """Network.init vmapped over traced gains (the JAX path, jnp.linalg.qr)."""
    gains = jnp.asarray(GAINS, jnp.float32)
    fn = jax.jit(jax.vmap(lambda g: NET.init(jax.random.key(3), init.orthogonal(), init.zeros(), weight_value=g)))
    return jax.tree_util.tree_map(np.asarray, fn(gains))


def test_traced_gains_give_semi_orthogonal_weights_from_one_base_draw(traced_sweep):
    for i, gain in enumerate(GAINS):
        _assert_semi_orthogonal(jax.tree_util.tree_map(lambda a: a[i], traced_sweep), gain)
    for layer in NET.layers:  # the same base draw: the members differ by their gains only
        w = traced_sweep[layer.name]["w"]
        np.testing.assert_allclose(w[1], w[0] * GAINS[1] / GAINS[0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("law, gain", [(init.orthogonal(gain=0.5), 0.5), (init.orthogonal(gain=2.0), 2.0),
                                       (init.parse("orthogonal"), 1.0),
                                       (init.orthogonal(sigma_w2=1.7609), math.sqrt(1.7609))])
def test_engine_start_is_semi_orthogonal_times_gain(law, gain):
    params = jax.tree_util.tree_map(np.asarray, loop.initial_params(NET, Member(seed=1, weight_init=law)))
    _assert_semi_orthogonal(params, gain)


def test_host_and_traced_paths_draw_the_same_matrix():
    """NumPy (float64 QR on the host) and JAX (jnp.linalg.qr) orthogonalize a draw alike: Q
    with a positive diagonal of R is unique. Shapes: tall, wide, and a conv kernel."""
    rng = np.random.default_rng(0)
    for shape in ((12, 5), (5, 12), (3, 3, 2, 4), (6, 6)):
        a = rng.standard_normal(shape).astype(np.float32)
        q_np, q_jax = init.semi_orthogonal(a), np.asarray(init.semi_orthogonal(jnp.asarray(a)))
        assert q_np.dtype == np.float32 and q_np.shape == shape
        np.testing.assert_allclose(q_jax, q_np, atol=2e-5)
        g = _gram(q_np)
        np.testing.assert_allclose(g, np.eye(len(g)), atol=2e-6)
        # sign-fixed: Q's columns correlate positively with the draw's (R's diagonal > 0)
        m = a.reshape(-1, shape[-1])
        q = q_np.reshape(m.shape)
        r = q.T @ m if m.shape[0] >= m.shape[1] else m @ q.T
        assert np.all(np.diagonal(r) > 0)


def test_orthogonal_law_labels_specs_and_variance():
    law = init.parse("orthogonal(gain=2)")
    assert (law.kind, law.family, law.value) == ("orthogonal", "orthogonal", 2.0)
    assert law.label == "orthogonal(gain=2)" and init.parse(law.spec) == law
    crit = init.parse("orthogonal(sigma_w2=1.5)")
    assert crit.label == "orthogonal(σ_w²=1.5)" and init.parse(crit.spec) == crit
    assert crit.scale(8, 8) == pytest.approx(math.sqrt(1.5))
    # a semi-orthogonal matrix's squares sum to gain²·min(fans): per entry gain²/max(fans)
    assert law.variance(8, 8) == pytest.approx(4 / 8) and law.variance(20, 8) == pytest.approx(4 / 20)
    assert math.isnan(law.variance())
    for bad, word in (("orthogonal(gain=-1)", "gain must be finite and > 0"),
                      ("orthogonal(gain=1, sigma_w2=1)", "not both"),
                      ("orthogonal(sigma_w2=0)", "sigma_w2 must be finite and > 0")):
        with pytest.raises(ValueError, match=word):
            init.parse(bad)
    with pytest.raises(ValueError, match="law for weight matrices"):
        NET.init(jax.random.key(0), init.zeros(), init.orthogonal())


def _arrays(n_in=20, n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n_in)).astype(np.float32)
    y = rng.integers(0, 10, n).astype(np.int32)
    return Arrays("synthetic", x, y, x[:32], y[:32], 10, n_in, "mlp")


def test_a_sweep_over_gains_is_one_group_and_trains_from_orthogonal_weights():
    spec = load_spec({"name": "orth", "depth": 2, "width": 8, "init": [f"orthogonal(gain={g})" for g in GAINS]})
    assert list(spec.groups()) == ["mlp-2x8-tanh-orthogonal"]
    runs = spec.expand()
    assert [r.label for r in runs[::3]] == ["tanh · orthogonal(gain=0.5)", "tanh · orthogonal(gain=2)"]
    assert runs[0].run_id.startswith("mlp-2x8-tanh-orth0.5-s0-") and runs[3].run_id.startswith("mlp-2x8-tanh-orth2-s0-")
    # the engine's vmapped group starts each member at its gain times one orthogonal draw:
    # ‖W‖_F = gain·sqrt(min(fans)) at epoch 0, in every layer
    members = [r.member() for r in runs if r.seed == 0]
    results = loop.train_group(NET, _arrays(), members,
                               TrainConfig(epochs=1, batch_size=32, probes=("weight_distance",)))
    for gain, res in zip(GAINS, results):
        a = res.activations[res.activations.epoch == 0].set_index("layer")
        for layer in NET.layers:
            want = gain * math.sqrt(min(layer.fan_in, layer.fan_out))
            assert a.loc[layer.name, "weight_fro_norm"] == pytest.approx(want, rel=1e-5), layer.name


def test_spec_refuses_an_orthogonal_bias_law():
    with pytest.raises(SpecError, match=r"bias_init.*law for weight matrices"):
        load_spec({"name": "x", "init": "normal(std=1)", "bias_init": "orthogonal"})


# ------------------------------------------------------------------ the critical σ_w²
def _mc_chi1(name, alpha, sigma_w2, sigma_b2, batches=8, n=50_000):
    """χ₁ = σ_w² E[φ′(z)²] at the fixed point q* of q = σ_w² E[φ(z)²] + σ_b², z ~ N(0, q),
    by Monte Carlo, independently of the theory module's quadratures: in each of `batches`
    independent samples of N(0, 1), the map is iterated to its fixed point and χ₁ averaged.
    Returns the mean over batches and its standard error (which includes the error of each
    batch's q*, amplified near criticality, where the q-map's slope approaches 1)."""
    u = np.random.default_rng(0).standard_normal((batches, n))
    phi, dphi = {"tanh": (np.tanh, lambda x: 1 - np.tanh(x) ** 2),
                 "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), lambda x: 0.25 / np.cosh(x / 2) ** 2)}[name]

    def gap(q):  # Q(q) - q: > 0 below the (stable) fixed point, < 0 above it
        return sigma_w2 * np.mean((alpha * phi(np.sqrt(q) * u / alpha)) ** 2, -1, keepdims=True) + sigma_b2 - q

    lo, hi = np.full((batches, 1), sigma_b2), np.full((batches, 1), 1.0)
    while np.any(gap(hi) > 0):
        hi = hi * 2
    for _ in range(32):  # bisection: q* to 2e-10 of the bracket, far below the standard error's effect
        mid = (lo + hi) / 2
        above = gap(mid) < 0
        lo, hi = np.where(above, lo, mid), np.where(above, mid, hi)
    q = (lo + hi) / 2
    d = dphi(np.sqrt(q) * u / alpha)
    chi = sigma_w2 * np.mean(d**2, -1)
    return chi.mean(), chi.std(ddof=1) / math.sqrt(batches)


@pytest.mark.parametrize("name, alpha, sigma_b2", [("tanh", 1.0, 0.05), ("tanh", 1.0, 1e-3), ("tanh", 2.0, 0.05),
                                                   ("sigmoid", 1.0, 0.05)])
def test_critical_sigma_w2_puts_chi1_at_one_by_monte_carlo(name, alpha, sigma_b2):
    w = vglab.critical_sigma_w2(name, alpha, sigma_b2)
    chi, se = _mc_chi1(name, alpha, w, sigma_b2)
    tol = 5 * se  # 8 batches: 5 standard errors is beyond the t-distribution's 99.9 % (4.8)
    assert abs(chi - 1.0) < tol, (w, chi, tol)
    # and it is where χ₁ crosses 1, not a value where χ₁ is flat: the test can tell a 10 % error
    assert _mc_chi1(name, alpha, 0.9 * w, sigma_b2)[0] < 1 - tol
    assert _mc_chi1(name, alpha, 1.1 * w, sigma_b2)[0] > 1 + tol


# ------------------------------------------------------------------ residual blocks, LayerNorm
def _numpy_forward(params, x, residual, norm, alpha=1.0):
    h, pre = x.astype(np.float64), {}
    for layer in NET.layers:
        u = h @ params[layer.name]["w"] + params[layer.name]["b"]
        if not layer.hidden:
            return u, pre
        if norm == "layer":
            c = u - u.mean(-1, keepdims=True)
            u = c / np.sqrt((c**2).mean(-1, keepdims=True) + 1e-5)
        pre[layer.name] = u
        a = alpha * np.tanh(u / alpha)
        h = h + residual * a if residual and h.shape[-1] == a.shape[-1] else a


def _params64(seed=0, std=1.0):
    rng = np.random.default_rng(seed)
    return {layer.name: {"w": rng.normal(0, std, layer.w_shape), "b": rng.normal(0, 0.3, layer.b_shape)}
            for layer in NET.layers}


BLOCKS = [(0.5, "none"), (1.0, "layer"), (0.0, "layer")]


@pytest.mark.parametrize("residual, norm", BLOCKS)
def test_residual_and_layer_norm_forward_and_gradients_float64(residual, norm):
    net = networks.mlp(2, 8, 20, residual=residual, norm=norm)
    with jax.enable_x64(True):
        params = _params64()
        x = np.random.default_rng(1).standard_normal((16, 20))
        y = np.random.default_rng(2).integers(0, 10, 16)
        logits, pre = net.apply(jax.tree_util.tree_map(jnp.asarray, params), jnp.asarray(x), alpha=1.5, capture=True)
        want, want_pre = _numpy_forward(params, x, residual, norm, alpha=1.5)
        np.testing.assert_allclose(np.asarray(logits), want, rtol=1e-12, atol=1e-12)
        for k in want_pre:
            np.testing.assert_allclose(np.asarray(pre[k]), want_pre[k], rtol=1e-12, atol=1e-12)

        def loss(p, xb):
            return loop.mean_cross_entropy(net.apply(p, xb, alpha=1.5), jnp.asarray(y))

        check_grads(jax.jit(loss), (jax.tree_util.tree_map(jnp.asarray, params), jnp.asarray(x)), order=1, modes=["rev"], eps=1e-5,
                    atol=1e-6, rtol=1e-6)


def test_blocks_keep_the_layout_and_change_the_numbers():
    plain, blocks = NET, networks.mlp(2, 8, 20, residual=0.5, norm="layer")
    assert blocks.name == "mlp 2x8 res=0.5 LN" and plain.name == "mlp 2x8"
    assert blocks.layout().names == plain.layout().names and blocks.n_params == plain.n_params
    assert blocks != plain and hash(blocks) != hash(plain)  # a compiled program's key tells them apart
    params = _params64(std=3.0)
    x = np.random.default_rng(1).standard_normal((4, 20))
    _, pre = blocks.apply(params, x, capture=True)
    # LayerNorm: every example's pre-activation has mean 0 and variance 1 over the units, whatever
    # the weights' scale (std 3 here: without it, |z| ~ 8 and tanh saturates)
    for z in pre.values():
        np.testing.assert_allclose(np.asarray(z).mean(-1), 0, atol=1e-5)
        np.testing.assert_allclose(np.asarray(z).var(-1), 1, atol=1e-3)
    assert not np.allclose(np.asarray(blocks.apply(params, x)), np.asarray(plain.apply(params, x)))


def test_spec_blocks_show_in_labels_and_ids_only_when_set():
    spec = load_spec({"name": "b", "depth": 3, "arms": [{}, {"residual": [0.5, 1.0]}, {"norm": "layer"}]})
    runs = [r for r in spec.expand() if r.seed == 0]
    assert [r.label for r in runs] == ["tanh · N(0, std=1)", "residual s=0.5 · tanh · N(0, std=1)",
                                       "residual s=1 · tanh · N(0, std=1)", "LayerNorm · tanh · N(0, std=1)"]
    assert [r.run_id.rsplit("-", 1)[0] for r in runs] == ["mlp-3x8-tanh-std1-s0", "mlp-3x8-res-0.5-tanh-std1-s0",
                                                          "mlp-3x8-res-1-tanh-std1-s0", "mlp-3x8-ln-tanh-std1-s0"]
    assert "residual" not in runs[0].config_dict() and "norm" not in runs[0].config_dict()
    assert len(spec.groups()) == 4
    model = runs[3].model_spec().build((20,), 10)
    assert (model.residual, model.norm, model.name) == (0.0, "layer", "mlp 3x8 LN")


@pytest.mark.parametrize("data, words", [
    ({"residual": -1}, r"residual is the branch scale .* >= 0"),
    ({"residual": "linspace(0, 1, 3)", "norm": "batch"}, r"unknown norm 'batch'; choose one of \['none', 'layer'\]"),
    ({"network": "cnn", "residual": 0.5}, r"residual applies to network = 'mlp' only"),
    ({"norm": "layer", "arms": [{"network": "cnn"}]}, r"norm applies to network = 'mlp' only"),
    ({"arms": [{"network": "paper_cnn", "norm": "layer"}]}, r"arms\[0\]\.norm applies to network = 'mlp' only"),
])
def test_spec_refuses_bad_blocks_with_the_fix(data, words):
    with pytest.raises(SpecError, match=words):
        load_spec({"name": "x", **data})
