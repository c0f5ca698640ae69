"""The model interface: layouts from tree paths, the built-in networks as one implementation,
Equinox and Flax adapters trained to the built-in's numbers, and bad models named."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent / "train"))
from problems import blobs  # noqa: E402

from vglab import nn  # noqa: E402
from vglab.nn import init  # noqa: E402
from vglab.nn.model import ModelError, derive_layout  # noqa: E402
from vglab.train import Member, TrainConfig, loop, train_group  # noqa: E402
from vglab.train.flat import Flat  # noqa: E402

DATA = blobs()
CONFIG = TrainConfig(epochs=2)
DEEP = 6  # the adapters' reference MLP's depth


def _frames_equal(a, b):
    pd.testing.assert_frame_equal(a.epochs.drop(columns="seconds"), b.epochs.drop(columns="seconds"))
    pd.testing.assert_frame_equal(a.grads.drop(columns="layer"), b.grads.drop(columns="layer"))
    pd.testing.assert_frame_equal(a.activations.drop(columns="layer"), b.activations.drop(columns="layer"))
    np.testing.assert_array_equal(a.histograms, b.histograms)


def _close(a, b, rtol=2e-4):
    """Two runs of the same model written two ways: equal to float32 rounding. Signed means
    (grad_mean) are compared against the mean |g|, as they cancel towards zero."""
    e1, e2 = a.epochs.drop(columns="seconds"), b.epochs.drop(columns="seconds")
    np.testing.assert_allclose(e1.select_dtypes("number"), e2.select_dtypes("number"), rtol=rtol, atol=1e-6)
    g1, g2 = a.grads.drop(columns=["layer", "param"]), b.grads.drop(columns=["layer", "param"])
    assert a.grads["param"].tolist() == b.grads["param"].tolist()
    scale = g1["grad_abs_mean"].to_numpy()
    np.testing.assert_allclose(g1["grad_mean"], g2["grad_mean"], atol=1e-4 * scale.max() + 1e-12)
    cols = [c for c in g1.columns if c != "grad_mean"]
    np.testing.assert_allclose(g1[cols].to_numpy(float), g2[cols].to_numpy(float), rtol=rtol, atol=1e-9)
    a1, a2 = a.activations.drop(columns="layer"), b.activations.drop(columns="layer")
    np.testing.assert_allclose(a1.to_numpy(float), a2.to_numpy(float), rtol=rtol, atol=1e-6, equal_nan=True)


# ------------------------------------------------------------------ layouts
def test_layout_names_layers_from_paths_and_orders_them_by_first_use():
    """Dict keys sort alphabetically ('dense10' < 'dense2', 'out' < 'stem'); the layout
    follows the forward pass instead."""
    params = {"stem": {"kernel": jnp.zeros((4, 3)), "bias": jnp.zeros(3)},
              "dense10": {"weight": jnp.zeros((3, 3)), "b": jnp.zeros(3)},
              "dense2": {"w": jnp.zeros((3, 3)), "bias": jnp.zeros(3)},
              "out": {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}}

    def apply(p, x):
        h = jnp.tanh(x @ p["stem"]["kernel"] + p["stem"]["bias"])
        h = jnp.tanh(h @ p["dense2"]["w"] + p["dense2"]["bias"])
        h = jnp.tanh(h @ p["dense10"]["weight"] + p["dense10"]["b"])
        return h @ p["out"]["w"] + p["out"]["b"]

    model = nn.FunctionModel(lambda k: params, apply)
    assert model.layout(jnp.zeros((5, 4))).names == ("stem", "dense2", "dense10", "out")
    assert model.layout().names == ("dense2", "dense10", "out", "stem")  # no example: natural path order
    lay = model.layout(jnp.zeros((5, 4)))
    assert [(t.layer, t.param) for t in lay.tensors] == [(n, p) for n in lay.names for p in ("w", "b")]
    assert (lay.layers[0].fan_in, lay.layers[0].fan_out) == (4, 3) and lay.n_params == 15 + 2 * 12 + 8


def test_layout_splits_parents_with_several_weights_and_rejects_non_float_leaves():
    params = {"attn": {"q": jnp.zeros((4, 4)), "k": jnp.zeros((4, 4))}, "out": {"w": jnp.zeros((4, 2))}}
    lay = derive_layout(nn.FunctionModel(lambda k: params, lambda p, x: x), params=params)
    assert lay.names == ("attn.k", "attn.q", "out") and all(layer.bias is None for layer in lay.layers)
    bad = {"w": jnp.zeros((2, 2)), "step": jnp.zeros((), jnp.int32)}
    with pytest.raises(ModelError, match="not a float array.*keep integers"):
        derive_layout(nn.FunctionModel(lambda k: bad, lambda p, x: x), params=bad)


def test_builtin_network_layout_matches_its_layers():
    net = nn.cnn(2, 8, (8, 8, 1), filters=4)
    lay = net.layout()
    assert lay.names == net.layer_names
    assert [layer.hidden for layer in lay.layers] == [layer.hidden for layer in net.layers]
    assert [(layer.fan_in, layer.fan_out) for layer in lay.layers] == [(layer.fan_in, layer.fan_out) for layer in net.layers]
    assert lay.n_params == net.n_params


# ------------------------------------------------------------------ one engine for every model
def test_builtin_network_as_a_plain_function_pair_trains_bit_identically():
    """The built-in MLP is one implementation of the interface: wrapped as a plain
    (init_fn, apply_fn) pair whose layout vglab derives itself, it gives the same numbers.
    Depth 3: its two square hidden layers are a run the engine scans (the pair's pytree
    path applies them one by one), so the scanned program is checked bit for bit too."""
    net = nn.mlp(3, 6, DATA.x_train.shape[1])
    steps = CONFIG.epochs * (len(DATA.x_train) // CONFIG.batch_size)
    flat = Flat.of(net.layout(), swap_matrices=True).with_runs(net.layer_runs)
    assert loop.scan_pays(flat, steps, members=2)  # the engine scans the built-in's run
    pair = nn.FunctionModel(lambda k: net.init(k), net.apply, activation="tanh")  # apply takes alpha
    members = [Member(seed=1, weight_init=init.normal(std=0.5), l2=0.01), Member(seed=1, weight_init=init.normal(std=2.0), alpha=2.0)]
    assert pair.layout(DATA.x_train[:4]).names == net.layer_names
    for a, b in zip(train_group(net, DATA, members, CONFIG), train_group(pair, DATA, members, CONFIG)):
        _frames_equal(a, b)


@pytest.fixture(scope="module")
def builtin_deep():
    """The built-in DEEPx8 MLP, its member, start and trained result: the reference the
    Equinox and Flax adapters must reproduce (trained once for both). The built-in scans
    its run of hidden layers (`loop.scan_pays`), the adapters' unrolled programs do not:
    the comparison covers both paths. Depth 6, not 20: the same check, and each adapter test
    took 8.1 -> 5.5 s (session 6, loaded 2-core machine)."""
    net = nn.mlp(DEEP, 8, DATA.x_train.shape[1])
    member = Member(seed=3, weight_init=init.normal(std=0.3))
    return net, member, loop.initial_params(net, member), train_group(net, DATA, [member], CONFIG)[0]


def test_equinox_mlp_equal_to_the_builtin_trains_to_its_numbers(builtin_deep):
    eqx = pytest.importorskip("equinox")
    from examples.equinox_mlp import DeepMLP

    net, member, p0, ref = builtin_deep
    module = DeepMLP(jax.random.key(0), DATA.x_train.shape[1], 10, depth=DEEP, width=8)
    names = net.layer_names
    module = eqx.tree_at(lambda m: [layer.weight for layer in m.layers] + [layer.bias for layer in m.layers], module,
                         [p0[n]["w"].T for n in names] + [p0[n]["b"] for n in names])  # Equinox: (out, in)
    model = nn.equinox(module)
    own = Member(seed=member.seed, weight_init=init.model(), alpha=1.0)
    got = train_group(model, DATA, [own], CONFIG)[0]
    assert model.activation == "tanh" and model.accepts_alpha
    assert [layer.hidden for layer in model.layout(DATA.x_train[:2]).layers] == [True] * DEEP + [False]
    _close(ref, got)
    np.testing.assert_array_equal(ref.histograms.sum(-1), got.histograms.sum(-1))


def test_flax_mlp_equal_to_the_builtin_trains_to_its_numbers(builtin_deep):
    pytest.importorskip("flax")
    from flax import nnx

    net, member, p0, ref = builtin_deep
    act = nn.activation("tanh")

    class MLP(nnx.Module):
        def __init__(self, rngs):
            sizes = [DATA.x_train.shape[1]] + [8] * DEEP + [10]
            self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])

        def __call__(self, x):
            for layer in self.layers[:-1]:
                x = act(layer(x))
            return self.layers[-1](x)

    module = MLP(nnx.Rngs(0))
    for layer, name in zip(module.layers, net.layer_names):  # Flax kernels are (in, out), as vglab's
        layer.kernel[...], layer.bias[...] = p0[name]["w"], p0[name]["b"]
    model = nn.flax_nnx(module)
    own = Member(seed=member.seed, weight_init=init.model(), alpha=1.0)
    _close(ref, train_group(model, DATA, [own], CONFIG)[0])


def test_init_laws_and_alpha_apply_to_a_users_model():
    """vglab's laws draw any model's weights (scaled by its own fans); alpha reaches a model
    built with vglab.nn.activation; members of a group differ only in their values."""
    pytest.importorskip("equinox")
    from examples.equinox_mlp import make

    model = make((DATA.x_train.shape[1],), 10, depth=2, width=6)
    lay = model.layout(DATA.x_train[:2])
    assert [(layer.fan_in, layer.fan_out) for layer in lay.layers] == [(12, 6), (6, 6), (6, 10)]
    members = [Member(seed=0, weight_init=init.glorot_uniform()), Member(seed=0, weight_init=init.glorot_uniform(), alpha=3.0)]
    a, b = train_group(model, DATA, members, TrainConfig(epochs=1))
    w0 = a.activations.query("epoch == 0")
    np.testing.assert_allclose(w0.log_weight_norm, b.activations.query("epoch == 0").log_weight_norm)  # same draw
    assert not np.allclose(a.epochs.val_loss.iloc[1:], b.epochs.val_loss.iloc[1:])  # alpha changed the function
    params = loop.initial_params(model, members[0], lay)
    w = np.asarray(jax.tree_util.tree_leaves(params)[lay.layers[0].weight.leaf])
    limit = np.sqrt(6 / (12 + 6))
    assert w.shape == (6, 12) and np.abs(w).max() <= limit and np.abs(w).max() > 0.8 * limit


def test_a_model_without_preactivations_gets_gradients_and_norms_only():
    net = nn.mlp(2, 6, DATA.x_train.shape[1])
    plain = nn.FunctionModel(lambda k: net.init(k), lambda p, x: net.apply(p, x))  # no alpha, no vglab activation
    res = train_group(plain, DATA, [Member(seed=0)], TrainConfig(epochs=1))[0]
    assert not plain.accepts_alpha and plain.activation is None
    assert res.activations["deriv_mean"].isna().all() and res.activations["log_weight_norm"].notna().all()
    assert res.grads["grad_norm_mean"].notna().all()
    with pytest.raises(ValueError, match="does not take alpha"):
        train_group(plain, DATA, [Member(seed=0, alpha=2.0)], TrainConfig(epochs=1))


def test_model_output_and_factory_errors_say_what_to_fix(tmp_path):
    from vglab.nn.adapters import build_from_factory
    from vglab.nn.model import check_output

    net = nn.mlp(1, 4, 12, n_out=7)
    params = jax.eval_shape(net.init, jax.random.key(0))
    with pytest.raises(ModelError, match=r"must return float logits shaped \(5, 10\).*10 outputs"):
        check_output(net, params, np.zeros((5, 12), np.float32), 10)
    (tmp_path / "m.py").write_text("def make(in_shape, n_classes):\n    return 42\n\ndef broken(:\n")
    with pytest.raises(ModelError, match="importing .*m.py failed: SyntaxError"):
        build_from_factory("m.py:make", {}, in_shape=(12,), n_classes=10, base_dir=str(tmp_path))
    (tmp_path / "m2.py").write_text("def make(in_shape, n_classes):\n    return 42\n")
    with pytest.raises(ModelError, match="cannot use a builtins.int as a model"):
        build_from_factory("m2.py:make", {}, in_shape=(12,), n_classes=10, base_dir=str(tmp_path))
    with pytest.raises(ModelError, match="has no callable 'nope'"):
        build_from_factory("m2.py:nope", {}, in_shape=(12,), n_classes=10, base_dir=str(tmp_path))
    with pytest.raises(ModelError, match="cannot import 'no_such_module_xyz'"):
        build_from_factory("no_such_module_xyz:make", {}, in_shape=(12,), n_classes=10)
    with pytest.raises(ModelError, match="model_args must be the factory's keyword arguments"):
        build_from_factory("m2.py:make", {"depth": 3}, in_shape=(12,), n_classes=10, base_dir=str(tmp_path))
