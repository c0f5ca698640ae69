"""The training engine: vectorized equivalence, divergence, determinism, probes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest
from hist_check import assert_hist_matches, bin_of, bin_ranges
from problems import blobs

from vglab import nn
from vglab.nn import init
from vglab.train import Member, TrainConfig, train_group
from vglab.train import loop, probes

DATA = blobs()
NET = nn.mlp(2, 6, DATA.x_train.shape[1])
CONFIG = TrainConfig(epochs=3, batch_size=32)


def _same(a: pd.DataFrame, b: pd.DataFrame, rtol=2e-4, atol=1e-6):
    assert list(a.columns) == list(b.columns)
    num = a.select_dtypes("number").columns
    np.testing.assert_allclose(a[num].to_numpy(float), b[num].to_numpy(float), rtol=rtol, atol=atol, equal_nan=True)


GROUP = [
    Member(seed=0, weight_init=init.normal(std=1.0)),
    Member(seed=0, weight_init=init.normal(std=3.0), l2=0.01),
    Member(seed=1, weight_init=init.normal(std=1.0), alpha=2.0, l1=0.001),
    Member(seed=2, weight_init=init.normal(std=0.5)),  # a seed with fewer members: padded grid
]


@pytest.fixture(scope="module")
def group():
    """GROUP trained together on a grid padded to 3 slots per seed (`min_slots`: every
    seed's row gets copies), the run the equivalence, padding and repeat tests share."""
    return train_group(NET, DATA, GROUP, CONFIG, min_slots=3)


def test_group_members_match_training_alone_and_padding_copies_leave_their_results(group):
    """Each member of the padded group equals the member trained alone (an unpadded 1x1
    grid, with only the penalty terms it uses): neither its group mates nor the copies
    padding every seed's row to `min_slots` change its numbers."""
    assert len(group) == len(GROUP)
    for member, res in zip(GROUP, group):
        alone = train_group(NET, DATA, [member], CONFIG)[0]
        _same(res.epochs.drop(columns="seconds"), alone.epochs.drop(columns="seconds"))
        _same(res.grads, alone.grads)
        _same(res.activations, alone.activations)
        np.testing.assert_array_equal(res.histograms.sum(-1), alone.histograms.sum(-1))
    # the members really differ: the comparison above is not vacuous
    assert not np.allclose(group[0].epochs.val_loss, group[1].epochs.val_loss)


def test_batch_cross_entropy_is_the_mean_of_the_per_example_one():
    rng = np.random.default_rng(6)
    logits = jnp.asarray(rng.standard_normal((32, 10)).astype(np.float32) * 30)
    y = jnp.asarray(rng.integers(0, 10, 32))
    np.testing.assert_allclose(loop.mean_cross_entropy(logits, y), loop.cross_entropy(logits, y).mean(), rtol=1e-5)
    g_batch = jax.grad(loop.mean_cross_entropy)(logits, y)
    g_each = jax.grad(lambda z: loop.cross_entropy(z, y).mean())(logits)
    np.testing.assert_allclose(g_batch, g_each, rtol=1e-5, atol=1e-8)


def test_same_seed_shares_initial_draw_and_batch_order():
    a, b = train_group(NET, DATA, [Member(seed=3, weight_init=init.normal(std=1.0)),
                                   Member(seed=3, weight_init=init.normal(std=2.0), l2=0.01)], TrainConfig(epochs=1))
    # weights twice as large: at initialization every layer's spectral norm differs by log 2
    # (b's penalty, which acts from the first step on, makes this the diverging test's program)
    w_a = a.activations.query("epoch == 0").log_weight_norm.to_numpy()
    w_b = b.activations.query("epoch == 0").log_weight_norm.to_numpy()
    np.testing.assert_allclose(w_b - w_a, np.log(2.0), rtol=1e-4)
    o1, o2 = loop.batch_order(3, 1, 256, 32), loop.batch_order(4, 1, 256, 32)
    assert not np.array_equal(o1, o2)
    assert sorted(np.asarray(o1).ravel()) == list(range(256))


def test_diverging_member_is_frozen_and_others_continue():
    good = Member(seed=0, weight_init=init.normal(std=1.0))
    bad = Member(seed=0, weight_init=init.normal(std=1e19), l2=1.0)  # penalty overflows to inf
    res_good, res_bad = train_group(NET, DATA, [good, bad], CONFIG)
    assert res_bad.diverged_epoch == 1
    assert res_bad.epochs.diverged.tolist() == [False, True, True, True]
    assert res_bad.epochs.train_loss.iloc[1:].isna().all()
    assert res_good.diverged_epoch is None and not res_good.epochs.diverged.any()
    alone = train_group(NET, DATA, [good], CONFIG)[0]
    _same(res_good.epochs.drop(columns="seconds"), alone.epochs.drop(columns="seconds"))


def test_bit_identical_on_repeat(group):
    again = train_group(NET, DATA, GROUP, CONFIG, min_slots=3)
    for a, b in zip(group, again):
        pd.testing.assert_frame_equal(a.epochs.drop(columns="seconds"), b.epochs.drop(columns="seconds"))
        pd.testing.assert_frame_equal(a.grads, b.grads)
        pd.testing.assert_frame_equal(a.activations, b.activations)
        np.testing.assert_array_equal(a.histograms, b.histograms)


def test_training_learns_and_reports_whole_test_set():
    res = train_group(NET, DATA, [Member(seed=0)], TrainConfig(epochs=15, learning_rate=3e-2))[0]
    assert res.epochs.val_acc.iloc[-1] > res.epochs.val_acc.iloc[0] + 0.25
    # accuracy over the whole test set is a multiple of 1/n_test
    n_test = len(DATA.y_test)
    assert np.allclose(res.epochs.val_acc * n_test, np.round(res.epochs.val_acc * n_test), atol=1e-3)


@pytest.fixture(scope="module")
def replay():
    """A tiny run, and the same run replayed step by step outside the engine (plain
    `jax.grad`, another program): the engine's result, every step's gradients per epoch
    ({epoch: [{layer: {param: array}}]}), the final parameters, config and data."""
    cfg = TrainConfig(epochs=2, batch_size=32)
    data = blobs(n_train=100, n_test=32)  # 3 steps per epoch, 4 examples dropped
    member = Member(seed=7, weight_init=init.normal(std=2.0), l2=0.01, alpha=1.5)
    res = train_group(NET, data, [member], cfg)[0]

    params = loop.initial_params(NET, member)
    opt = optax.adam(cfg.learning_rate, eps=loop.ADAM_EPS)
    state = opt.init(params)

    def objective(p, x, y):
        logits = NET.apply(p, x, member.alpha)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean() + nn.penalty(p, 0.0, member.l2)

    @jax.jit  # one program for the replay's steps (eagerly, each operation compiles on its own)
    def step(params, state, x, y):
        g = jax.grad(objective)(params, x, y)
        updates, state = opt.update(g, state, params)
        return g, optax.apply_updates(params, updates), state

    steps = {}
    for epoch in (1, 2):
        order = loop.batch_order(member.seed, epoch, 100, 32)
        assert order.shape == (3, 32)
        steps[epoch] = []
        for idx in order:
            g, params, state = step(params, state, data.x_train[idx], data.y_train[idx])
            steps[epoch].append(jax.tree_util.tree_map(np.asarray, g))
    return res, steps, params, objective, cfg, data, member


def _tensors(steps, layer, p):
    return [s[layer][p] for s in steps]


def test_probe_statistics_match_numpy_over_every_step(replay):
    """Recompute every probe from the replay: floats within tolerances (two programs round
    differently), histogram counts exactly except near a bin edge (tests/train/hist_check.py)."""
    res, steps, params, objective, cfg, data, member = replay
    for epoch in (1, 2):
        hist = res.histograms[epoch - 1]
        for i, layer in enumerate(NET.layer_names):
            for j, p in enumerate(("w", "b")):
                gs = np.stack(_tensors(steps[epoch], layer, p))  # [step, ...]
                row = res.grads.query("epoch == @epoch and layer == @layer and param == @p").iloc[0]
                flat = gs.reshape(len(gs), -1)
                norms = np.sqrt((flat**2).sum(1))
                np.testing.assert_allclose(row.grad_mean, flat.mean(), rtol=1e-3, atol=1e-7)
                np.testing.assert_allclose(row.grad_std, flat.std(), rtol=1e-3)
                np.testing.assert_allclose(row.grad_abs_mean, np.abs(flat).mean(), rtol=1e-4)
                np.testing.assert_allclose(row.grad_norm_mean, norms.mean(), rtol=1e-4)
                np.testing.assert_allclose(row.grad_norm_max, norms.max(), rtol=1e-4)
                np.testing.assert_allclose(row.pos_frac, (flat > 0).mean(), atol=1e-6)
                assert_hist_matches(hist[i, j], _tensors(steps[epoch], layer, p))
    # the layer factors at the end, on the engine's fixed probe batch
    xp, _ = loop._probe_subset(data.x_train, data.y_train, cfg.probe_batch_size)
    _, z = jax.jit(lambda p, x: NET.apply(p, x, member.alpha, capture=True))(params, xp)
    last = res.activations.query("epoch == 2").set_index("layer")
    for layer in NET.hidden_layers:
        zl = np.asarray(z[layer.name], np.float64)
        d = 1 / np.cosh(zl / member.alpha) ** 2
        np.testing.assert_allclose(last.loc[layer.name, "preact_abs_mean"], np.abs(zl).mean(), rtol=1e-3)
        np.testing.assert_allclose(last.loc[layer.name, "deriv_mean"], d.mean(), rtol=1e-3)
        np.testing.assert_allclose(last.loc[layer.name, "saturated_frac"], (d < probes.SATURATION_THRESHOLD).mean(), atol=1e-6)
        np.testing.assert_allclose(last.loc[layer.name, "log_deriv_mean"], np.log(d).mean(), rtol=1e-3)
    for layer in NET.layers:
        w = np.asarray(params[layer.name]["w"], np.float64)
        np.testing.assert_allclose(last.loc[layer.name, "log_weight_norm"], np.log(np.linalg.norm(w, 2)), rtol=1e-3)
    # the first and last layer's full gradients, at the end, on the probe batch
    yp = loop._probe_subset(data.x_train, data.y_train, cfg.probe_batch_size)[1]
    g_end = jax.jit(jax.grad(objective))(params, xp, yp)
    assert set(res.final_grads) == {"dense1", "out"}
    for layer in ("dense1", "out"):
        np.testing.assert_allclose(res.final_grads[layer], g_end[layer]["w"], rtol=1e-4, atol=1e-7)


def _with_edge_values(replay):
    """The replay's first-layer weight gradients of epoch 1 plus entries on every float32
    bin edge (and one ulp to each side), with the engine's counts for them: the engine's
    histogram row plus the engine's own binning (`probes.hist_bins`) of the added entries."""
    res, steps, *_ = replay
    edges = (10.0 ** probes.hist_edges()).astype(np.float32)
    at_edges = np.concatenate([edges, np.nextafter(edges, np.float32(0)), np.nextafter(edges, np.float32(np.inf))])
    counts = res.histograms[0][0, 0] + np.bincount(np.asarray(probes.hist_bins(jnp.asarray(at_edges))),
                                                   minlength=probes.HIST_BINS + 1)
    return counts, [*_tensors(steps[1], "dense1", "w"), at_edges]


@pytest.mark.parametrize("direction", [0.0, np.inf], ids=["down", "up"])
def test_the_histogram_check_passes_with_gradients_one_ulp_off(replay, direction):
    """The test of the test: as if another CPU had rounded every gradient one ulp the other
    way, including those on an edge, which then change bins."""
    counts, tensors = _with_edge_values(replay)
    assert_hist_matches(counts, tensors)
    nudged = [np.copysign(np.nextafter(np.abs(t), np.float32(direction)), t) for t in tensors]
    assert not np.array_equal(np.bincount(bin_of(np.abs(np.concatenate([t.ravel() for t in nudged]))),
                                          minlength=len(counts)), counts)  # an exact comparison would fail
    assert_hist_matches(counts, nudged)


def test_the_histogram_check_catches_a_real_miscount(replay):
    res, steps, *_ = replay
    counts, tensors = res.histograms[0][0, 0], _tensors(steps[1], "dense1", "w")
    assert_hist_matches(counts, tensors)
    lo, hi = bin_ranges(tensors)
    # one count moved to the next bin, where no entry near that edge could explain it
    sure = [b for b in range(1, probes.HIST_BINS) if counts[b] and not ((lo <= b + 1) & (hi >= b) & (lo != hi)).any()]
    assert sure, "no bin without entries near its upper edge"
    moved = counts.copy()
    moved[sure[0]] -= 1
    moved[sure[0] + 1] += 1
    with pytest.raises(AssertionError, match="does not match"):
        assert_hist_matches(moved, tensors)
    dropped = counts.copy()
    dropped[sure[0]] -= 1
    with pytest.raises(AssertionError, match="does not match"):
        assert_hist_matches(dropped, tensors)
    # and a whole histogram shifted by one bin (an off-by-one in the binning), even with
    # entries on every edge
    counts, tensors = _with_edge_values(replay)
    with pytest.raises(AssertionError, match="does not match"):
        assert_hist_matches(np.roll(counts, 1), tensors)


def test_probes_can_be_switched_off():
    res = train_group(NET, DATA, [Member()], TrainConfig(epochs=1, probes=()))[0]
    assert res.histograms is None
    assert set(res.grads.columns) == {"epoch", "layer", "layer_index", "param"}
    assert res.epochs.val_acc.notna().all()


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="probe"):
        TrainConfig(probes=("nope",))
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="alpha"):
        Member(alpha=0.0)
    with pytest.raises(ValueError, match="init families"):
        train_group(NET, DATA, [Member(), Member(weight_init=init.glorot_uniform())], CONFIG)
    with pytest.raises(ValueError, match="shape"):
        train_group(nn.mlp(1, 4, 5), DATA, [Member()], CONFIG)


def test_in_out_weights_are_stored_transposed_so_a_shared_batch_reads_them_in_place():
    """`Flat.of(layout, swap_matrices=True)` (the engine, for a model with (in, out) weights)
    keeps every matrix weight as (out, in): unflatten/flatten give the model's own shapes
    back, and in a group's step (members sharing a batch) XLA no longer copies the first
    layer's weights or weight gradients (the [in, (member, out)] transposes that made the
    built-in 1x8 MLP slower than its Equinox twin, issue 25)."""
    import re

    from vglab.nn import networks
    from vglab.train.flat import Flat

    model = networks.mlp(1, 8, 153)
    layout = model.layout()
    params = jax.tree_util.tree_map(np.asarray, model.init(jax.random.key(0)))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((32, 153)).astype(np.float32))

    def first_layer_copies(flat):
        def loss(v):
            return jnp.sum(model.apply(flat.unflatten(v), x) ** 2)

        vs = jnp.stack([jnp.asarray(flat.flatten(params))] * 10)  # 10 members, one shared batch
        hlo = jax.jit(jax.vmap(jax.grad(loss))).lower(vs).compile().as_text()
        return len(re.findall(r"f32\[[0-9,]*153[0-9,]*\]\{[0-9,]*\} (?:transpose|copy)\(", hlo))

    swapped, plain = Flat.of(layout, swap_matrices=True), Flat.of(layout)
    assert swapped.swapped == {0, 2} and not plain.swapped  # the two weights, not the biases
    v = swapped.flatten(params)
    back = swapped.unflatten(jnp.asarray(v))
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), back, params)
    first = layout.layers[0]
    np.testing.assert_array_equal(v[: 8 * 153], params[first.name]["w"].T.ravel())  # stored (out, in)
    assert first_layer_copies(plain) >= 2 and first_layer_copies(swapped) == 0


def test_runs_view_hands_each_run_as_one_slice_and_its_program_does_not_grow_with_depth():
    """`Flat.with_runs` (the engine, for a model with `layer_runs`): each run of identical
    layers comes out of the flat vector as one stacked slice and goes back in place, so the
    vmapped gradient compiles to the same number of kernels at any depth (per-layer slices
    and copies were most of a 50-layer group's compile time)."""
    import re

    from vglab.nn import networks
    from vglab.train.flat import Flat

    def check(depth):
        model = networks.mlp(depth, 8, 20, n_out=3)
        flat = Flat.of(model.layout(), swap_matrices=True).with_runs(model.layer_runs)
        params = jax.tree_util.tree_map(np.asarray, model.init(jax.random.key(depth)))
        v = jnp.asarray(flat.flatten(params))
        runs = flat.model_params(v)
        assert [run["w"].shape[0] for run in runs] == [len(r) for r in model.layer_runs] == [1, depth - 1, 1]
        for run, names in zip(runs, model.layer_runs):
            for j, name in enumerate(names):
                np.testing.assert_array_equal(run["w"][j], params[name]["w"])
                np.testing.assert_array_equal(run["b"][j], params[name]["b"])
        np.testing.assert_array_equal(flat.from_model_params(runs), v)
        x = jnp.ones((4, 20))

        def loss(u):
            return jnp.sum(model.apply_runs(flat.model_params(u), x) ** 2)

        hlo = jax.jit(jax.vmap(jax.grad(loss))).lower(jnp.stack([v] * 3)).compile().as_text()
        np.testing.assert_allclose(jax.grad(loss)(v), flat.flatten(jax.grad(lambda p: jnp.sum(model.apply(p, x) ** 2))(
            jax.tree_util.tree_map(jnp.asarray, params))), rtol=1e-4, atol=1e-6)  # 12 layers' rounding
        return len(re.findall(r" fusion\(", hlo))

    assert check(4) == check(12)
    # A layout whose runs are not contiguous in storage falls back to the pytree view.
    model = networks.mlp(3, 8, 20, n_out=3)
    flat = Flat.of(model.layout())
    assert flat.with_runs((("dense1", "dense3"), ("dense2",), ("out",))).runs is None
    assert flat.with_runs(None) is flat


def test_the_engine_scans_where_compiling_costs_more_than_the_loop():
    """`scan_pays`: a deep narrow net on a short run (digits' steps) is scanned, compiled
    once per run; a deep wide group over MNIST's steps stays unrolled (the scan's copies of
    its weights would cost more per step than compiling saves); a shallow net has no run."""
    from vglab.nn import networks
    from vglab.train.flat import Flat

    def pays(depth, width, steps, members):
        model = networks.mlp(depth, width, 40)
        flat = Flat.of(model.layout(), swap_matrices=True).with_runs(model.layer_runs)
        return loop.scan_pays(flat, steps, members)

    assert pays(50, 8, 900, 9) and pays(20, 8, 15_000, 9)
    assert not pays(50, 128, 15_000, 9) and not pays(1, 8, 10, 1)
    assert pays(50, 128, 900, 3) and not pays(50, 128, 900, 50)
