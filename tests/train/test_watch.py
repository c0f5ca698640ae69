"""vglab.watch on a user's own training step: its tables against statistics computed
directly from `jax.grad` of the same batches (and the plain optimizer's updates), under
jit (with donated buffers), lax.scan over steps and vmap over 4 seeds."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import vglab
from hist_check import assert_hist_matches
from vglab.train import probes

N_STEPS, BATCH = 4, 8
TX = optax.chain(optax.clip_by_global_norm(0.5), optax.sgd(0.1, momentum=0.9))  # clipping: update != -lr * g


def init_params(seed):
    """A tiny regression MLP 4 -> 6 (tanh) -> 5 (relu) -> 3; relu unit 0 is always off, so
    its weights get exact zero gradients (zero_frac > 0, histogram bin 0)."""
    k = jax.random.split(jax.random.key(seed), 3)
    p = {"dense0": {"w": jax.random.normal(k[0], (4, 6)), "b": jnp.zeros(6)},
         "dense1": {"w": jax.random.normal(k[1], (6, 5)) * 0.5, "b": jnp.zeros(5).at[0].set(-100.0)},
         "out": {"w": jax.random.normal(k[2], (5, 3)) * 0.5, "b": jnp.zeros(3)}}
    return p


def loss(p, x, y):
    h = jnp.tanh(x @ p["dense0"]["w"] + p["dense0"]["b"])
    h = jax.nn.relu(h @ p["dense1"]["w"] + p["dense1"]["b"])
    return jnp.mean((h @ p["out"]["w"] + p["out"]["b"] - y) ** 2)


def batches(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N_STEPS, BATCH, 4)).astype(np.float32),
            rng.standard_normal((N_STEPS, BATCH, 3)).astype(np.float32))


WATCHED = vglab.watch(TX, tier="full")


def watched_step(p, s, x, y):
    g = jax.grad(loss)(p, x, y)
    u, s = WATCHED.update(g, s, p)
    return optax.apply_updates(p, u), s


_grad = jax.jit(jax.grad(loss))
_plain = jax.jit(TX.update)
TENSORS = [("dense0", "w"), ("dense0", "b"), ("dense1", "w"), ("dense1", "b"), ("out", "w"), ("out", "b")]


def reference(p, xs, ys):
    """Per step and tensor: the gradient, the update and the parameters before it (NumPy),
    from jax.grad and the unwatched optimizer."""
    s = TX.init(p)
    out = []
    for x, y in zip(xs, ys):
        g = _grad(p, x, y)
        u, s = _plain(g, s, p)
        out.append({(layer, t): tuple(np.asarray(tree[layer][t], np.float64) for tree in (g, u, p))
                    for layer, t in TENSORS})
        p = optax.apply_updates(p, u)
    return out


def expected(steps):
    """The gradient table's columns computed directly, per tensor (float64)."""
    rows = {}
    for key in TENSORS:
        g = [s[key][0] for s in steps]
        u = [s[key][1] for s in steps]
        p = [s[key][2] for s in steps]
        allg = np.concatenate([a.ravel() for a in g])
        norms = [np.linalg.norm(a) for a in g]
        un, pn = np.mean([np.linalg.norm(a) for a in u]), np.mean([np.linalg.norm(a) for a in p])
        rows[key] = {"grad_mean": allg.mean(), "grad_std": allg.std(), "grad_abs_mean": np.abs(allg).mean(),
                     "grad_norm_mean": np.mean(norms), "grad_norm_max": np.max(norms),
                     "zero_frac": np.mean(allg == 0), "pos_frac": np.mean(allg > 0),
                     "update_norm_mean": un, "param_norm_mean": pn, "update_ratio": un / pn}
    return rows


def check(table, steps, hist=None):
    """`table` (one member's watch_table rows) and its histograms against the reference."""
    want = expected(steps)
    assert list(zip(table["layer"], table["param"])) == TENSORS
    assert list(table["layer_index"]) == [0, 0, 1, 1, 2, 2]
    assert set(table["steps"]) == {len(steps)}
    for i, key in enumerate(TENSORS):
        row = table.iloc[i]
        scale = want[key]["grad_abs_mean"]
        for col, v in want[key].items():
            atol = 1e-5 * scale if col.startswith("grad_") and col not in ("grad_norm_mean", "grad_norm_max") else 0
            np.testing.assert_allclose(row[col], v, rtol=2e-5, atol=atol, err_msg=f"{key} {col}")
        if hist is not None:
            assert_hist_matches(hist[i], [s[key][0] for s in steps])
    assert table.loc[2, "zero_frac"] >= 1 / 6  # dense1's dead unit: a column of exact zeros
    if hist is not None:
        assert hist[2, 0] >= 6 * len(steps)


def test_watched_jitted_step_with_donated_buffers_and_reset():
    xs, ys = batches()
    p0 = init_params(0)
    ref = reference(p0, xs, ys)
    step = jax.jit(watched_step, donate_argnums=(0, 1))
    p, s = jax.tree_util.tree_map(jnp.copy, p0), WATCHED.init(p0)
    for t in range(2):
        p, s = step(p, s, xs[t], ys[t])
    r = vglab.train.watch.read(s)
    check(r.table, ref[:2], r.hist)
    s = vglab.watch_reset(s)
    fresh = vglab.watch_table(s)
    assert (fresh["steps"] == 0).all() and fresh["grad_norm_mean"].isna().all()
    for t in range(2, N_STEPS):
        p, s = step(p, s, xs[t], ys[t])
    r = vglab.train.watch.read(s)
    check(r.table, ref[2:], r.hist)  # means over the steps since the reset only


def test_watched_step_under_lax_scan():
    xs, ys = batches(1)
    p0 = init_params(1)

    @jax.jit
    def train(p, s, xs, ys):
        def body(c, b):
            return watched_step(*c, *b), None

        return jax.lax.scan(body, (p, s), (xs, ys))[0]

    _, s = train(p0, WATCHED.init(p0), xs, ys)
    r = vglab.train.watch.read(s)
    check(r.table, reference(p0, xs, ys), r.hist)


def test_watched_step_vmapped_over_four_seeds_has_a_member_axis():
    xs, ys = batches(2)
    seeds = [3, 4, 5, 6]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[init_params(k) for k in seeds])
    s = jax.vmap(WATCHED.init)(stacked)
    step = jax.jit(jax.vmap(watched_step, in_axes=(0, 0, None, None)))
    p = stacked
    for t in range(N_STEPS):
        p, s = step(p, s, xs[t], ys[t])
    r = vglab.train.watch.read(s)
    assert r.lead == (4,) and r.hist.shape == (4, 6, probes.HIST_BINS + 1)
    for m, seed in enumerate(seeds):
        table = r.table[r.table["member"] == m].reset_index(drop=True)
        check(table, reference(init_params(seed), xs, ys), r.hist[m])


def test_every_thins_the_schedule_and_layers_select_by_pattern():
    xs, ys = batches(3)
    p0 = init_params(0)
    tx = vglab.watch(TX, tier="norms", every=2, layers=["dense*"])

    @jax.jit
    def step(p, s, x, y):
        u, s = tx.update(jax.grad(loss)(p, x, y), s, p)
        return optax.apply_updates(p, u), s

    p, s = p0, tx.init(p0)
    for t in range(N_STEPS - 1):  # measured: steps 0 and 2
        p, s = step(p, s, xs[t], ys[t])
    table = vglab.watch_table(s)
    assert list(zip(table["layer"], table["param"])) == TENSORS[:4]
    assert set(table.columns) >= {"grad_norm_mean", "update_ratio"} and "grad_std" not in table
    ref = reference(p0, xs, ys)
    want = expected([ref[0], ref[2]])
    for i, key in enumerate(TENSORS[:4]):
        for col in ("grad_norm_mean", "grad_norm_max", "update_norm_mean", "param_norm_mean"):
            np.testing.assert_allclose(table.iloc[i][col], want[key][col], rtol=2e-5, err_msg=f"{key} {col}")
    with pytest.raises(ValueError, match=r"matches none of the layers \['dense0', 'dense1', 'out'\]"):
        vglab.watch(TX, layers="conv*").init(p0)
    with pytest.raises(ValueError, match="tier must be one of"):
        vglab.watch(TX, tier="everything")
    with pytest.raises(ValueError, match="needs the parameters"):
        vglab.watch(TX).update(p0, vglab.watch(TX).init(p0))


@pytest.mark.parametrize("make", [
    lambda: optax.MultiSteps(optax.adam(1e-2), every_k_schedule=2),
    lambda: optax.inject_hyperparams(optax.adamw)(learning_rate=1e-2),
    lambda: optax.masked(optax.adam(1e-2), {"dense0": {"w": True, "b": False}, "dense1": {"w": True, "b": False},
                                            "out": {"w": True, "b": False}}),
    lambda: optax.multi_transform({"a": optax.adam(1e-2), "s": optax.sgd(0.1)},
                                  {"dense0": {"w": "a", "b": "s"}, "dense1": {"w": "a", "b": "s"},
                                   "out": {"w": "a", "b": "s"}}),
], ids=["multisteps", "inject_hyperparams", "masked", "multi_transform"])
def test_watch_wraps_any_optax_transformation_without_changing_it(make):
    xs, ys = batches(4)
    p0 = init_params(0)
    inner = make()
    tx = vglab.watch(inner, tier="norms")

    @jax.jit
    def both(p, s, q, t, x, y):
        u, s = tx.update(jax.grad(loss)(p, x, y), s, p)
        v, t = inner.update(jax.grad(loss)(q, x, y), t, q)
        return optax.apply_updates(p, u), s, optax.apply_updates(q, v), t, u

    p, s, q, t = p0, tx.init(p0), p0, inner.init(p0)
    updates = []
    for k in range(2):
        p, s, q, t, u = both(p, s, q, t, xs[k], ys[k])
        updates.append(u)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), p, q)
    table = vglab.watch_table(s)
    assert (table["steps"] == 2).all()
    for i, (layer, param) in enumerate(TENSORS):  # the update measured is the one applied
        norms = [np.linalg.norm(np.asarray(u[layer][param], np.float64)) for u in updates]
        np.testing.assert_allclose(table.iloc[i]["update_norm_mean"], np.mean(norms), rtol=1e-5, atol=1e-12)


def test_low_precision_parameters_are_measured_in_float32():
    p0 = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), init_params(0))
    xs, ys = batches(5)
    tx = vglab.watch(optax.sgd(0.1), tier="moments")
    g = jax.jit(jax.grad(lambda p, x, y: loss(jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), p), x, y)))(
        p0, xs[0], ys[0])
    _, s = jax.jit(tx.update)(g, tx.init(p0), p0)
    table = vglab.watch_table(s)
    assert str(g["out"]["w"].dtype) == "bfloat16"
    for i, (layer, t) in enumerate(TENSORS):
        a = np.asarray(g[layer][t], np.float64)
        np.testing.assert_allclose(table.iloc[i]["grad_norm_mean"], np.linalg.norm(a), rtol=1e-5)
        np.testing.assert_allclose(table.iloc[i]["grad_abs_mean"], np.abs(a).mean(), rtol=1e-5)


def test_layer_factors_against_numpy():
    act = vglab.nn.activation("tanh")

    def apply(p, x):
        h = act(x @ p["dense0"]["w"] + p["dense0"]["b"])
        h = act(h @ p["dense1"]["w"] + p["dense1"]["b"])
        return h @ p["out"]["w"] + p["out"]["b"]

    p = init_params(7)
    p["dense0"]["w"] = p["dense0"]["w"] * 4.0  # a saturated first layer
    x = np.random.default_rng(7).standard_normal((64, 4)).astype(np.float32)
    f = vglab.layer_factors(apply, p, x)
    assert list(f["layer"]) == ["dense0", "dense1", "out"]
    h, pd_ = x.astype(np.float64), {k: {t: np.asarray(v, np.float64) for t, v in d.items()} for k, d in p.items()}
    for i, name in enumerate(["dense0", "dense1", "out"]):
        w = pd_[name]["w"]
        np.testing.assert_allclose(f.loc[i, "log_weight_norm"], np.log(np.linalg.norm(w, 2)), rtol=1e-5)
        if name == "out":
            assert np.isnan(f.loc[i, "log_deriv_mean"]) and np.isnan(f.loc[i, "saturated_frac"])
            continue
        z = h @ w + pd_[name]["b"]
        d = 1 - np.tanh(z) ** 2
        log_d = np.log(4.0) - 2 * np.abs(z) - 2 * np.log1p(np.exp(-2 * np.abs(z)))  # log(1 - tanh^2), no underflow
        np.testing.assert_allclose(f.loc[i, "log_deriv_mean"], np.mean(np.maximum(log_d, np.log(1e-30))), rtol=1e-4)
        np.testing.assert_allclose(f.loc[i, "saturated_frac"], np.mean(d < probes.SATURATION_THRESHOLD), atol=1e-6)
        h = np.tanh(z)
    assert f.loc[0, "saturated_frac"] > 0.1


def _np_deriv(name, z):
    """phi'(z) in float64, by hand."""
    if name == "tanh":
        return 1 - np.tanh(z) ** 2
    s = 1 / (1 + np.exp(-z))
    return s * (1 - s)


def test_layer_factors_pair_each_preactivation_with_its_own_activation():
    """sigmoid in dense0, tanh in dense1: each layer's phi' is the one that recorded its z
    (it was NaN for both when the model used more than one activation)."""
    sig, tanh = vglab.nn.activation("sigmoid"), vglab.nn.activation("tanh")

    def apply(p, x):
        h = sig(x @ p["dense0"]["w"] + p["dense0"]["b"])
        h = tanh(h @ p["dense1"]["w"] + p["dense1"]["b"])
        return h @ p["out"]["w"] + p["out"]["b"]

    p = init_params(3)
    x = np.random.default_rng(3).standard_normal((32, 4)).astype(np.float32)
    f = vglab.layer_factors(apply, p, x, alpha=2.0)
    h = x.astype(np.float64)
    for i, (name, act) in enumerate([("dense0", "sigmoid"), ("dense1", "tanh")]):
        z = h @ np.asarray(p[name]["w"], np.float64) + np.asarray(p[name]["b"], np.float64)
        np.testing.assert_allclose(f.loc[i, "deriv_mean"], _np_deriv(act, z / 2.0).mean(), rtol=1e-5)  # g' = phi'(z/a)
        np.testing.assert_allclose(f.loc[i, "preact_abs_mean"], np.abs(z).mean(), rtol=1e-5)
        h = 2.0 * (1 / (1 + np.exp(-z / 2.0)) if act == "sigmoid" else np.tanh(z / 2.0))
    assert f.loc[0, "deriv_mean"] <= 0.25 < f.loc[1, "deriv_mean"]


def test_layer_factors_compile_once_per_function_and_shape():
    """A second call with new values of the same shapes reuses the program: apply_fn is not
    traced again; a new batch shape or alpha is a new program."""
    act = vglab.nn.activation("tanh")
    traces = []

    def apply(p, x):
        traces.append(x.shape)
        return act(x @ p["dense0"]["w"] + p["dense0"]["b"]) @ p["dense1"]["w"][:6]

    x = np.ones((8, 4), np.float32)
    first = vglab.layer_factors(apply, init_params(0), x)
    n = len(traces)
    assert n >= 1
    second = vglab.layer_factors(apply, init_params(1), x + 1)
    assert len(traces) == n  # no retrace, yet the numbers are the new parameters'
    assert first.loc[0, "log_weight_norm"] != second.loc[0, "log_weight_norm"]
    np.testing.assert_allclose(second.loc[0, "log_weight_norm"],
                               np.log(np.linalg.norm(np.asarray(init_params(1)["dense0"]["w"]), 2)), rtol=1e-5)
    vglab.layer_factors(apply, init_params(1), x[:5])
    assert len(traces) > n and traces[-1][0] == 5
    m = len(traces)
    vglab.layer_factors(apply, init_params(1), x[:5], alpha=2.0)
    assert len(traces) > m


def test_layer_factors_per_example_apply_with_its_own_vmap_inside():
    """An apply_fn that maps one example (Equinox's convention): `per_example=True` gives
    the batched one's numbers; with a jax.vmap inside apply_fn instead, the error says to
    pass per_example=True."""
    act = vglab.nn.activation("tanh")

    def one(p, x):  # x: one example [4]
        return act(x @ p["dense0"]["w"] + p["dense0"]["b"]) @ p["dense1"]["w"][:6]

    p = init_params(4)
    x = np.random.default_rng(4).standard_normal((16, 4)).astype(np.float32)
    per = vglab.layer_factors(one, p, x, per_example=True)
    batched = vglab.layer_factors(one, p, x)  # the same function also maps a batch
    cols = ["deriv_mean", "log_deriv_mean", "preact_abs_mean", "log_weight_norm"]
    np.testing.assert_allclose(per[cols].to_numpy(), batched[cols].to_numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match="per_example=True") as e:
        vglab.layer_factors(lambda p, x: jax.vmap(lambda xi: one(p, xi))(x), p, x)
    assert "capture" in str(e.value)


def _rnn(p, x, act, capture=False):
    """A 4-step tanh RNN over x [B, T, 4] (lax.scan); with `capture`, also its own
    pre-activations {layer: [T, B, 6]}."""
    def cell(h, xt):
        z = xt @ p["cell"]["w"] + h @ p["rec"]["w"] + p["cell"]["b"]
        return act(z, name="cell"), z

    h, zs = jax.lax.scan(cell, jnp.zeros((x.shape[0], 6)), x.swapaxes(0, 1))
    logits = h @ p["out"]["w"] + p["out"]["b"]
    return (logits, {"cell": zs}) if capture else logits


def test_layer_factors_with_a_scan_need_the_preactivations_returned():
    """Recording inside lax.scan raises saying to return {layer: z} with `capture`; doing
    so measures phi' of every step's z."""
    act = vglab.nn.activation("tanh")
    k = jax.random.split(jax.random.key(5), 3)
    p = {"cell": {"w": jax.random.normal(k[0], (4, 6)), "b": jnp.zeros(6)},
         "rec": {"w": jax.random.normal(k[1], (6, 6))}, "out": {"w": jax.random.normal(k[2], (6, 3)), "b": jnp.zeros(3)}}
    x = np.random.default_rng(5).standard_normal((3, 4, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"capture.*\{layer name: z\}"):
        vglab.layer_factors(lambda p, x: _rnn(p, x, act), p, x)

    def apply(p, x, capture=False):
        return _rnn(p, x, act, capture)

    f = vglab.layer_factors(apply, p, x).set_index("layer")
    _, pre = _rnn(p, x, lambda z, name: jnp.tanh(z), capture=True)
    z = np.asarray(pre["cell"], np.float64)
    assert z.shape == (4, 3, 6)
    np.testing.assert_allclose(f.loc["cell", "deriv_mean"], _np_deriv("tanh", z).mean(), rtol=1e-5)
    assert f.drop(index="cell")["deriv_mean"].isna().all()
