"""Network structure: parameter counts worked out by hand, CNN shapes, captured
pre-activations, 'same' convolutions and max-pools against NumPy, and input validation."""

import runpy
import sys
from pathlib import Path

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from vglab.nn import activations, init, networks

ROOT = Path(__file__).resolve().parents[1]


# ---- parameter counts, by hand ---------------------------------------------------------
# Every conv is 3x3 'same' with a bias per filter: 3*3*c_in*f + f. Max-pools are 2x2 VALID,
# so odd sizes round down: 28 -> 14 -> 7 -> 3 and 32 -> 16 -> 8 -> 4.
# cnn: 4 convs of 36, pool after conv2 and conv4.  paper_cnn('parameters'): 6 convs of 36,
# pool after conv2, conv4, conv6, dense 8.  paper_cnn('layers'): 6 convs of 3, pool after
# conv3 and conv6, 4 dense of 8.  All end in a dense layer of 10.
CONV36 = 3 * 3 * 36 * 36 + 36
CONV3 = 3 * 3 * 3 * 3 + 3
DENSE88 = 8 * 8 + 8
OUT = 8 * 10 + 10

EXPECTED = {
    "mlp 1x8, MNIST-PCA 153": (
        lambda: networks.mlp(1, 8, 153),
        {"dense1": 153 * 8 + 8, "out": OUT},
        153 * 8 + 8 + 8 * 10 + 10,
    ),
    "mlp 20x8, MNIST-PCA 153": (
        lambda: networks.mlp(20, 8, 153),
        {"dense1": 153 * 8 + 8, **{f"dense{i}": DENSE88 for i in range(2, 21)}, "out": OUT},
        153 * 8 + 8 + 19 * (8 * 8 + 8) + 8 * 10 + 10,
    ),
    "mlp 1x8, digits-PCA 40": (
        lambda: networks.mlp(1, 8, 40),
        {"dense1": 40 * 8 + 8, "out": OUT},
        40 * 8 + 8 + 8 * 10 + 10,
    ),
    "mlp 20x8, digits-PCA 40": (
        lambda: networks.mlp(20, 8, 40),
        {"dense1": 40 * 8 + 8, **{f"dense{i}": DENSE88 for i in range(2, 21)}, "out": OUT},
        40 * 8 + 8 + 19 * (8 * 8 + 8) + 8 * 10 + 10,
    ),
    "cnn 1x8, MNIST": (  # 28 -> 14 -> 7: flatten 7*7*36
        lambda: networks.cnn(1, 8, (28, 28, 1)),
        {"conv1": 3 * 3 * 1 * 36 + 36, "conv2": CONV36, "conv3": CONV36, "conv4": CONV36,
         "dense1": 7 * 7 * 36 * 8 + 8, "out": OUT},
        (9 * 36 + 36) + 3 * (9 * 36 * 36 + 36) + (7 * 7 * 36 * 8 + 8) + (8 * 10 + 10),
    ),
    "cnn 1x8, CIFAR-10": (  # 32 -> 16 -> 8: flatten 8*8*36
        lambda: networks.cnn(1, 8, (32, 32, 3)),
        {"conv1": 3 * 3 * 3 * 36 + 36, "conv2": CONV36, "conv3": CONV36, "conv4": CONV36,
         "dense1": 8 * 8 * 36 * 8 + 8, "out": OUT},
        (27 * 36 + 36) + 3 * (9 * 36 * 36 + 36) + (8 * 8 * 36 * 8 + 8) + (8 * 10 + 10),
    ),
    "paper_cnn parameters, MNIST": (  # 28 -> 14 -> 7 -> 3: flatten 3*3*36
        lambda: networks.paper_cnn("parameters", (28, 28, 1)),
        {"conv1": 3 * 3 * 1 * 36 + 36, **{f"conv{i}": CONV36 for i in range(2, 7)},
         "dense1": 3 * 3 * 36 * 8 + 8, "out": OUT},
        (9 * 36 + 36) + 5 * (9 * 36 * 36 + 36) + (3 * 3 * 36 * 8 + 8) + (8 * 10 + 10),
    ),
    "paper_cnn parameters, CIFAR-10": (  # 32 -> 16 -> 8 -> 4: flatten 4*4*36
        lambda: networks.paper_cnn("parameters", (32, 32, 3)),
        {"conv1": 3 * 3 * 3 * 36 + 36, **{f"conv{i}": CONV36 for i in range(2, 7)},
         "dense1": 4 * 4 * 36 * 8 + 8, "out": OUT},
        (27 * 36 + 36) + 5 * (9 * 36 * 36 + 36) + (4 * 4 * 36 * 8 + 8) + (8 * 10 + 10),
    ),
    "paper_cnn layers, MNIST": (  # 28 -> 14 -> 7: flatten 7*7*3
        lambda: networks.paper_cnn("layers", (28, 28, 1)),
        {"conv1": 3 * 3 * 1 * 3 + 3, **{f"conv{i}": CONV3 for i in range(2, 7)},
         "dense1": 7 * 7 * 3 * 8 + 8, "dense2": DENSE88, "dense3": DENSE88, "dense4": DENSE88, "out": OUT},
        (9 * 3 + 3) + 5 * (27 * 3 + 3) + (7 * 7 * 3 * 8 + 8) + 3 * (8 * 8 + 8) + (8 * 10 + 10),
    ),
    "paper_cnn layers, CIFAR-10": (  # 32 -> 16 -> 8: flatten 8*8*3
        lambda: networks.paper_cnn("layers", (32, 32, 3)),
        {**{f"conv{i}": CONV3 for i in range(1, 7)},
         "dense1": 8 * 8 * 3 * 8 + 8, "dense2": DENSE88, "dense3": DENSE88, "dense4": DENSE88, "out": OUT},
        6 * (27 * 3 + 3) + (8 * 8 * 3 * 8 + 8) + 3 * (8 * 8 + 8) + (8 * 10 + 10),
    ),
}
TOTALS = {  # the same totals as plain numbers, read off the arithmetic above
    "mlp 1x8, MNIST-PCA 153": 1322, "mlp 20x8, MNIST-PCA 153": 2690,
    "mlp 1x8, digits-PCA 40": 418, "mlp 20x8, digits-PCA 40": 1786,
    "cnn 1x8, MNIST": 49670, "cnn 1x8, CIFAR-10": 54638,
    "paper_cnn parameters, MNIST": 61550, "paper_cnn parameters, CIFAR-10": 64214,
    "paper_cnn layers, MNIST": 1940, "paper_cnn layers, CIFAR-10": 2354,
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_parameter_counts_by_hand(case):
    make, per_layer, total = EXPECTED[case]
    net = make()
    assert net.layer_names == tuple(per_layer)  # names and their order
    assert {layer.name: layer.n_params for layer in net.layers} == per_layer
    assert net.n_params == total == sum(per_layer.values()) == TOTALS[case]
    for layer in net.layers:  # the weight shape accounts for the count
        assert layer.n_params == int(np.prod(layer.w_shape)) + layer.w_shape[-1]
        assert layer.b_shape == (layer.w_shape[-1],)
    assert [layer.hidden for layer in net.layers] == [True] * (len(net.layers) - 1) + [False]


def test_param_counts_benchmark_prints_the_hand_totals(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["param_counts.py", "--mnist-inputs", "153", "--digits-inputs", "40"])
    runpy.run_path(str(ROOT / "benchmarks" / "param_counts.py"), run_name="__main__")
    out = capsys.readouterr().out
    summary = out[out.index("Summary"):]
    for total in TOTALS.values():
        assert f"{total:,}" in summary


# ---- CNNs: shapes, capture, 'same' padding ----------------------------------------------

def _numpy_params(net, seed=0, w_std=0.3, b_std=0.1):
    rng = np.random.default_rng(seed)
    return {layer.name: {"w": jnp.asarray(rng.normal(0.0, w_std, layer.w_shape), jnp.float32),
                         "b": jnp.asarray(rng.normal(0.0, b_std, layer.b_shape), jnp.float32)} for layer in net.layers}


# (network, spatial size of each conv layer's output, by hand)
CNN_CASES = {
    "cnn MNIST": (lambda: networks.cnn(1, 8, (28, 28, 1)), [28, 28, 14, 14]),
    "paper_cnn layers MNIST": (lambda: networks.paper_cnn("layers", (28, 28, 1)), [28, 28, 28, 14, 14, 14]),
    "paper_cnn parameters CIFAR-10": (lambda: networks.paper_cnn("parameters", (32, 32, 3)), [32, 32, 16, 16, 8, 8]),
}


@pytest.fixture(scope="module")
def cnn_runs():
    """Every CNN case applied to a batch of 2, with and without capture: one compiled program."""
    nets = {case: make() for case, (make, _) in CNN_CASES.items()}
    params = {case: _numpy_params(net) for case, net in nets.items()}
    xs = {case: jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (2, *net.in_shape)), jnp.float32)
          for case, net in nets.items()}

    @jax.jit
    def run(params, xs):
        return {case: (*net.apply(params[case], xs[case], alpha=2.0, capture=True), net.apply(params[case], xs[case], alpha=2.0))
                for case, net in nets.items()}

    return nets, run(params, xs)


@pytest.mark.parametrize("case", sorted(CNN_CASES))
def test_cnn_apply_shapes_and_capture(cnn_runs, case):
    nets, runs = cnn_runs
    net, sizes = nets[case], CNN_CASES[case][1]
    logits, pre, plain = runs[case]
    assert logits.shape == (2, 10)
    assert bool(jnp.all(jnp.isfinite(logits)))
    assert list(pre) == [layer.name for layer in net.hidden_layers]
    convs = [layer for layer in net.hidden_layers if layer.kind == "conv"]
    assert len(convs) == len(sizes)
    for layer, size in zip(convs, sizes):  # 'same' padding: a conv keeps its input's size
        assert pre[layer.name].shape == (2, size, size, layer.w_shape[-1])
    for layer in net.hidden_layers:
        if layer.kind == "dense":
            assert pre[layer.name].shape == (2, 8)
        assert bool(jnp.all(jnp.isfinite(pre[layer.name])))
    np.testing.assert_allclose(plain, logits, rtol=1e-5, atol=1e-5)  # capture changes nothing


def _conv_same_numpy(x, w, b):
    """3x3 'same' cross-correlation with zero padding, NHWC x HWIO."""
    n, h, wd, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((n, h, wd, w.shape[-1]))
    for di in range(3):
        for dj in range(3):
            out += np.einsum("nhwc,cf->nhwf", xp[:, di:di + h, dj:dj + wd, :], w[di, dj])
    return out + b


def _maxpool_numpy(h):
    n, hh, ww, c = h.shape
    h = h[:, : hh // 2 * 2, : ww // 2 * 2, :]  # VALID: drop an odd last row/column
    return h.reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))


def test_cnn_forward_matches_numpy():
    """'same' convs, tanh rescaled by alpha, 2x2 VALID max-pools (7 -> 3), flatten, dense."""
    net = networks.cnn(1, 5, (7, 7, 2), n_out=3, filters=4)
    params = _numpy_params(net, seed=3, w_std=0.5, b_std=0.2)
    x = np.random.default_rng(4).uniform(-1, 1, (3, 7, 7, 2))
    alpha = 1.5
    p = {k: {kk: np.asarray(vv, np.float64) for kk, vv in v.items()} for k, v in params.items()}
    h = x
    zs = {}
    for i in range(1, 5):
        z = _conv_same_numpy(h, p[f"conv{i}"]["w"], p[f"conv{i}"]["b"])
        zs[f"conv{i}"] = z
        h = alpha * np.tanh(z / alpha)
        if i in (2, 4):
            h = _maxpool_numpy(h)
    assert h.shape == (3, 1, 1, 4)  # 7 -> 3 -> 1
    h = h.reshape(3, -1)
    h = alpha * np.tanh((h @ p["dense1"]["w"] + p["dense1"]["b"]) / alpha)
    want = h @ p["out"]["w"] + p["out"]["b"]
    logits, pre = jax.jit(lambda p, x: net.apply(p, x, alpha=alpha, capture=True))(params, jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)
    for name, z in zs.items():
        np.testing.assert_allclose(pre[name], z, rtol=1e-4, atol=1e-5)
    assert pre["conv1"].shape[1:3] == (7, 7) and pre["conv3"].shape[1:3] == (3, 3)


@pytest.mark.parametrize("shape", [(3, 8, 8, 5), (2, 7, 9, 3), (1, 3, 3, 2)])
@pytest.mark.parametrize("levels", [None, 2, 1])  # coarse rounding: many tied maxima
def test_max_pool_matches_reduce_window_and_its_gradient(shape, levels):
    """The reshape max-pool gives reduce_window's numbers and gradient bit for bit, ties
    (the gradient goes to the first maximum, row-major) and odd sizes included."""
    from jax import lax

    def reference(h):
        return lax.reduce_window(h, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    if levels:
        x = np.round(x * levels) / levels
    out, back = jax.vjp(networks.max_pool, jnp.asarray(x))
    want, want_back = jax.vjp(reference, jnp.asarray(x))
    g = jnp.asarray(rng.standard_normal(want.shape).astype(np.float32))
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(back(g)[0], want_back(g)[0])
    if levels == 1:  # the case the test is about: windows with tied maxima
        assert (x[:, : shape[1] // 2 * 2, : shape[2] // 2 * 2] == 0).sum() > 0


def test_mlp_capture_gives_every_hidden_preactivation():
    net = networks.mlp(3, 5, 4, n_out=2)
    params = _numpy_params(net)
    x = jnp.ones((6, 4))
    logits, pre = jax.jit(lambda p, x: net.apply(p, x, capture=True))(params, x)
    assert logits.shape == (6, 2)
    assert list(pre) == ["dense1", "dense2", "dense3"]
    assert all(z.shape == (6, 5) for z in pre.values())
    np.testing.assert_allclose(pre["dense1"], x @ params["dense1"]["w"] + params["dense1"]["b"], rtol=1e-6)


@pytest.mark.parametrize("kwargs", [{}, {"residual": 0.5}, {"norm": "layer"}])
def test_scanned_runs_give_the_layer_by_layer_networks_numbers_and_gradients(kwargs):
    """`apply_runs` scans a run of identical hidden layers (compiled once, not per layer):
    its logits, pre-activations and gradients are those of `apply`, layer after layer."""
    net = networks.mlp(6, 5, 5, n_out=3, activation="tanh", **kwargs)  # n_in = width: dense1 joins the run
    assert net.layer_runs == (tuple(f"dense{i}" for i in range(1, 7)), ("out",))
    params = jax.tree_util.tree_map(jnp.asarray, _numpy_params(net))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(7, 5)), jnp.float32)
    logits, run_pre = jax.jit(lambda p: net.apply_runs(net.stack_runs(p), x, alpha=2.0, capture=True))(params)
    ref_logits, ref_pre = net.apply(params, x, alpha=2.0, capture=True)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-6)
    assert run_pre[0].shape == (6, 7, 5) and len(run_pre) == 1  # the output layer's run gives none
    for j, name in enumerate(ref_pre):
        np.testing.assert_allclose(run_pre[0][j], ref_pre[name], rtol=1e-5, atol=1e-6)
    grad = jax.grad(lambda p: jnp.sum(jnp.sin(net.apply_runs(net.stack_runs(p), x, alpha=2.0))))(params)
    ref_grad = jax.grad(lambda p: jnp.sum(jnp.sin(net.apply(p, x, alpha=2.0))))(params)
    for g, r in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(ref_grad)):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6)


def test_layer_runs_group_only_identical_square_dense_layers():
    assert networks.mlp(3, 8, 40).layer_runs == (("dense1",), ("dense2", "dense3"), ("out",))
    assert networks.mlp(1, 8, 40).layer_runs == (("dense1",), ("out",))
    cnn = networks.cnn(2, 4, (8, 8, 1))
    assert all(len(run) == 1 for run in cnn.layer_runs) and sum(cnn.layer_runs, ()) == cnn.layer_names


# ---- validation ------------------------------------------------------------------------

@pytest.mark.parametrize(
    "make, word",
    [
        (lambda: networks.mlp(0, 8, 153), "depth"),
        (lambda: networks.mlp(1, 0, 153), "width"),
        (lambda: networks.mlp(-1, 8, 153), "depth"),
        (lambda: networks.mlp(1.5, 8, 153), "depth"),
        (lambda: networks.mlp(1, 8, 0), "n_in"),
        (lambda: networks.cnn(0, 8, (28, 28, 1)), "depth"),
        (lambda: networks.cnn(1, 0, (28, 28, 1)), "width"),
        (lambda: networks.build("mlp", (153,), depth=0), "depth"),
        (lambda: networks.build("cnn", (28, 28, 1), width=0), "width"),
    ],
)
def test_depth_and_width_must_be_positive(make, word):
    with pytest.raises(ValueError, match=rf"{word} must be an integer >= 1"):
        make()


@pytest.mark.parametrize(
    "make",
    [
        lambda: networks.mlp(1, 8, 153, activation="gelu"),
        lambda: networks.cnn(1, 8, (28, 28, 1), activation="Tanh"),
        lambda: networks.paper_cnn("layers", (28, 28, 1), activation="swish"),
        lambda: networks.build("mlp", (153,), activation="elu"),
    ],
)
def test_unknown_activation_lists_valid_names(make):
    with pytest.raises(ValueError) as e:
        make()
    for name in activations.ACTIVATIONS:
        assert name in str(e.value)


def test_unknown_network_and_variant_list_valid_choices():
    with pytest.raises(ValueError) as e:
        networks.build("resnet", (28, 28, 1))
    assert all(n in str(e.value) for n in ("mlp", "cnn", "paper_cnn"))
    for make in (lambda: networks.paper_cnn("deep", (28, 28, 1)),
                 lambda: networks.build("paper_cnn", (28, 28, 1), variant="deep")):
        with pytest.raises(ValueError) as e:
            make()
        assert "parameters" in str(e.value) and "layers" in str(e.value)


def test_build_dispatches_and_checks_input_shapes():
    assert networks.build("mlp", (153,), depth=20, width=8) == networks.mlp(20, 8, 153)
    assert networks.build("cnn", (28, 28, 1)).n_params == networks.cnn(1, 8, (28, 28, 1)).n_params
    assert networks.build("paper_cnn", (32, 32, 3), variant="layers") == networks.paper_cnn("layers", (32, 32, 3))
    with pytest.raises(ValueError, match="flat"):
        networks.build("mlp", (28, 28, 1))
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        networks.cnn(1, 8, (784,))
    with pytest.raises(ValueError, match="too small"):
        networks.paper_cnn("parameters", (4, 4, 1))  # three 2x2 pools: 4 -> 2 -> 1 -> nothing left


def test_networks_are_hashable_static_descriptions():
    a, b = networks.mlp(2, 8, 10), networks.mlp(2, 8, 10)
    assert a == b and hash(a) == hash(b)
    assert len({a, b, networks.mlp(3, 8, 10)}) == 2


def _products(jaxpr):
    """Every matmul and convolution in a jaxpr, nested calls (custom VJPs, pjit) included."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
            yield eqn
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from _products(sub)


@pytest.mark.parametrize("make", [lambda: networks.mlp(2, 4, 6), lambda: networks.cnn(1, 4, (8, 8, 1), filters=2)])
def test_every_product_runs_in_full_float32(make):
    # GPUs multiply float32 in TF32 under JAX's default precision, which moved gradient
    # statistics by ~5e-3: forward and backward products must all ask for HIGHEST.
    net = make()
    params = net.init(jax.random.PRNGKey(0), init.normal(std=1.0), init.normal(std=1.0))
    x = jnp.ones((2, *net.in_shape))

    def loss(p):
        return net.apply(p, x).sum()

    eqns = list(_products(jax.make_jaxpr(jax.grad(loss))(params).jaxpr))
    assert len(eqns) >= 3 * len(net.layers) - 1  # forward, and the backward products of each layer
    for eqn in eqns:
        assert set(eqn.params["precision"]) == {jax.lax.Precision.HIGHEST}, eqn


def test_dense_gradients_equal_autodiff_of_the_plain_product():
    """`networks.dense` writes its weight gradient out (gᵀ made explicit, for XLA CPU's
    library kernels); under a group's vmap (weights per member, the input batch shared
    or per member) it must give the plain product's value and gradients."""
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((32, 7)).astype(np.float32))
    w1 = jnp.asarray(rng.standard_normal((4, 7, 6)).astype(np.float32))  # 4 members
    w2 = jnp.asarray(rng.standard_normal((4, 6, 3)).astype(np.float32))

    def loss(product):
        def member(w1, w2):
            return jnp.sum(jnp.tanh(product(jnp.tanh(product(x, w1)), w2)) ** 2)
        return jax.vmap(jax.value_and_grad(member, argnums=(0, 1)))

    plain = loss(lambda h, w: jnp.matmul(h, w, precision=networks.PRECISION))
    (v_plain, g_plain), (v_dense, g_dense) = jax.jit(plain)(w1, w2), jax.jit(loss(networks.dense))(w1, w2)
    np.testing.assert_allclose(v_dense, v_plain, rtol=1e-5)
    for a, b in zip(g_dense, g_plain):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(g_plain[0]).max()) > 1e-2  # the gradients compared are not all zero
