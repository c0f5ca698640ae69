"""The training engine: vectorized equivalence, divergence, determinism, probes."""

import jax
import numpy as np
import optax
import pandas as pd
import pytest
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


def test_group_members_match_training_alone():
    members = [
        Member(seed=0, weight_init=init.normal(std=1.0)),
        Member(seed=0, weight_init=init.normal(std=3.0), l2=0.01),
        Member(seed=1, weight_init=init.normal(std=1.0), alpha=2.0, l1=0.001),
        Member(seed=2, weight_init=init.normal(std=0.5)),  # a seed with fewer members: padded grid
    ]
    together = train_group(NET, DATA, members, CONFIG)
    for member, res in zip(members, together):
        alone = train_group(NET, DATA, [member], CONFIG)[0]
        _same(res.epochs.drop(columns="seconds"), alone.epochs.drop(columns="seconds"))
        _same(res.grads, alone.grads)
        _same(res.activations, alone.activations)
        np.testing.assert_array_equal(res.histograms.sum(-1), alone.histograms.sum(-1))
    # the members really differ: the comparison above is not vacuous
    assert not np.allclose(together[0].epochs.val_loss, together[1].epochs.val_loss)


def test_padding_the_grid_with_copies_leaves_the_members_results():
    members = [Member(seed=0, weight_init=init.normal(std=1.0)), Member(seed=0, weight_init=init.normal(std=2.0), l2=0.01)]
    plain = train_group(NET, DATA, members, CONFIG)
    padded = train_group(NET, DATA, members, CONFIG, min_slots=8)
    assert len(padded) == 2
    for a, b in zip(plain, padded):
        _same(a.epochs.drop(columns="seconds"), b.epochs.drop(columns="seconds"))
        _same(a.grads, b.grads)


def test_same_seed_shares_initial_draw_and_batch_order():
    a, b = train_group(NET, DATA, [Member(seed=3, weight_init=init.normal(std=1.0)),
                                   Member(seed=3, weight_init=init.normal(std=2.0))], TrainConfig(epochs=1))
    # weights twice as large: at initialization every layer's spectral norm differs by log 2
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


def test_bit_identical_on_repeat():
    members = [Member(seed=5, weight_init=init.normal(std=2.0), l2=0.01), Member(seed=6)]
    r1 = train_group(NET, DATA, members, CONFIG)
    r2 = train_group(NET, DATA, members, CONFIG)
    for a, b in zip(r1, r2):
        pd.testing.assert_frame_equal(a.epochs.drop(columns="seconds"), b.epochs.drop(columns="seconds"))
        pd.testing.assert_frame_equal(a.grads, b.grads)
        np.testing.assert_array_equal(a.histograms, b.histograms)


def test_training_learns_and_reports_whole_test_set():
    res = train_group(NET, DATA, [Member(seed=0)], TrainConfig(epochs=15, learning_rate=3e-2))[0]
    assert res.epochs.val_acc.iloc[-1] > res.epochs.val_acc.iloc[0] + 0.25
    # accuracy over the whole test set is a multiple of 1/n_test
    n_test = len(DATA.y_test)
    assert np.allclose(res.epochs.val_acc * n_test, np.round(res.epochs.val_acc * n_test), atol=1e-3)


def test_probe_statistics_match_numpy_over_every_step():
    """Replay a tiny run step by step outside the engine and recompute every probe."""
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

    lo, hi = probes.HIST_LOG10_RANGE
    for epoch in (1, 2):
        order = loop.batch_order(member.seed, epoch, 100, 32)
        assert order.shape == (3, 32)
        steps = []
        for idx in order:
            g = jax.grad(objective)(params, data.x_train[idx], data.y_train[idx])
            steps.append(jax.tree_util.tree_map(np.asarray, g))
            updates, state = opt.update(g, state, params)
            params = optax.apply_updates(params, updates)
        hist = res.histograms[epoch - 1]
        for i, layer in enumerate(NET.layer_names):
            for j, p in enumerate(("w", "b")):
                gs = np.stack([s[layer][p] for s in steps])  # [step, ...]
                row = res.grads.query("epoch == @epoch and layer == @layer and param == @p").iloc[0]
                flat = gs.reshape(len(steps), -1)
                norms = np.sqrt((flat**2).sum(1))
                np.testing.assert_allclose(row.grad_mean, flat.mean(), rtol=1e-3, atol=1e-7)
                np.testing.assert_allclose(row.grad_std, flat.std(), rtol=1e-3)
                np.testing.assert_allclose(row.grad_abs_mean, np.abs(flat).mean(), rtol=1e-4)
                np.testing.assert_allclose(row.grad_norm_mean, norms.mean(), rtol=1e-4)
                np.testing.assert_allclose(row.grad_norm_max, norms.max(), rtol=1e-4)
                np.testing.assert_allclose(row.pos_frac, (flat > 0).mean(), atol=1e-6)
                a = np.abs(flat.ravel())
                bins = np.clip(np.floor((np.log10(a[a > 0]) - lo) / (hi - lo) * probes.HIST_BINS), 0, probes.HIST_BINS - 1)
                expected = np.bincount(bins.astype(int) + 1, minlength=probes.HIST_BINS + 1)
                expected[0] = (a == 0).sum()
                np.testing.assert_array_equal(hist[i, j], expected)
    # the layer factors at the end, on the engine's fixed probe batch
    xp, _ = loop._probe_subset(data.x_train, data.y_train, cfg.probe_batch_size)
    _, z = NET.apply(params, xp, member.alpha, capture=True)
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
    g_end = jax.grad(objective)(params, xp, yp)
    assert set(res.final_grads) == {"dense1", "out"}
    for layer in ("dense1", "out"):
        np.testing.assert_allclose(res.final_grads[layer], g_end[layer]["w"], rtol=1e-4, atol=1e-7)


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
