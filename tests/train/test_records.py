"""Recording every k epochs, probing every n steps, probe tiers, and the update-size and
distance-from-init probes against a replay outside the engine."""

import jax
import numpy as np
import optax
from problems import blobs

from vglab import nn
from vglab.nn import init
from vglab.train import Member, TrainConfig, loop, probes, train_group

DATA = blobs(n_train=100, n_test=32)  # 3 steps of 32 per epoch
NET = nn.mlp(2, 6, DATA.x_train.shape[1])
MEMBER = Member(seed=4, weight_init=init.normal(std=1.0), l2=0.01)


def test_recording_every_k_epochs_sums_what_every_epoch_records():
    every = train_group(NET, DATA, [MEMBER], TrainConfig(epochs=4))[0]
    sparse = train_group(NET, DATA, [MEMBER], TrainConfig(epochs=4, record_every=2))[0]
    assert sparse.epochs.epoch.tolist() == [0, 2, 4] and sorted(sparse.grads.epoch.unique()) == [2, 4]
    # the training state is the same program's: equal at the shared records
    keep = every.epochs[every.epochs.epoch.isin([0, 2, 4])].reset_index(drop=True)
    np.testing.assert_array_equal(keep.val_loss, sparse.epochs.val_loss)
    # counts add up exactly; per-step means average over the record's steps
    np.testing.assert_array_equal(sparse.histograms[0], every.histograms[0] + every.histograms[1])
    g1 = every.grads.set_index(["epoch", "layer", "param"])
    g2 = sparse.grads.set_index(["epoch", "layer", "param"])
    for col in ("grad_norm_mean", "grad_abs_mean", "update_norm_mean"):
        np.testing.assert_allclose(g2.loc[2, col], (g1.loc[1, col] + g1.loc[2, col]) / 2, rtol=1e-5)
    np.testing.assert_allclose(g2.loc[4, "grad_norm_max"], np.maximum(g1.loc[3, "grad_norm_max"], g1.loc[4, "grad_norm_max"]))
    np.testing.assert_allclose(sparse.epochs.train_loss.iloc[1], every.epochs.train_loss.iloc[1:3].mean(), rtol=1e-5)


def test_probing_every_n_steps_sees_those_steps_only():
    res = train_group(NET, DATA, [MEMBER], TrainConfig(epochs=2, probe_every=2))[0]
    entries = sum(np.prod(s) for s in [(12, 6), (6,), (6, 6), (6,), (6, 10), (10,)])
    assert res.histograms.sum() == 2 * 2 * entries  # steps 0 and 2 of each 3-step epoch
    full = train_group(NET, DATA, [MEMBER], TrainConfig(epochs=2))[0]
    np.testing.assert_array_equal(res.epochs.val_loss, full.epochs.val_loss)  # training itself is unchanged


def test_tiers_select_their_quantities():
    norms = train_group(NET, DATA, [MEMBER], TrainConfig(epochs=1, probes="norms"))[0]
    assert norms.histograms is None
    assert {"grad_norm_mean", "update_norm_mean"} <= set(norms.grads.columns)
    assert "grad_mean" not in norms.grads.columns and "deriv_mean" not in norms.activations.columns
    moments = TrainConfig(probes="moments").probes
    assert "grad_hist" not in moments and "grad_moments" in moments and "saturation" in moments
    assert TrainConfig(probes=("full",)).probes == TrainConfig(probes="all").probes == probes.ALL


def test_update_size_and_distance_from_init_match_a_replay():
    res = train_group(NET, DATA, [MEMBER], TrainConfig(epochs=1))[0]
    params = loop.initial_params(NET, MEMBER)
    p0 = params
    opt = optax.adam(1e-3, eps=loop.ADAM_EPS)
    state = opt.init(params)

    def objective(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(NET.apply(p, x), y).mean() + nn.penalty(p, 0.0, MEMBER.l2)

    @jax.jit  # one program for the replay's steps (eagerly, each operation compiles on its own)
    def step(params, state, x, y):
        g = jax.grad(objective)(params, x, y)
        updates, state = opt.update(g, state, params)
        return optax.apply_updates(params, updates), state

    steps = []
    for idx in loop.batch_order(MEMBER.seed, 1, 100, 32):
        new, state = step(params, state, DATA.x_train[idx], DATA.y_train[idx])
        steps.append((params, new))
        params = new
    g = res.grads.set_index(["layer", "param"])
    for layer in NET.layer_names:
        for p in ("w", "b"):
            du = np.mean([np.linalg.norm(np.asarray(b[layer][p]) - np.asarray(a[layer][p])) for a, b in steps])
            pn = np.mean([np.linalg.norm(np.asarray(a[layer][p])) for a, _ in steps])
            np.testing.assert_allclose(g.loc[(layer, p), "update_norm_mean"], du, rtol=1e-3)
            np.testing.assert_allclose(g.loc[(layer, p), "param_norm_mean"], pn, rtol=1e-5)
            np.testing.assert_allclose(g.loc[(layer, p), "update_ratio"], du / pn, rtol=1e-3)
    a = res.activations.query("epoch == 1").set_index("layer")
    for layer in NET.layer_names:
        w, w0 = np.asarray(params[layer]["w"], np.float64), np.asarray(p0[layer]["w"], np.float64)
        np.testing.assert_allclose(a.loc[layer, "weight_dist_init"], np.linalg.norm(w - w0), rtol=1e-3)
        np.testing.assert_allclose(a.loc[layer, "weight_fro_norm"], np.linalg.norm(w), rtol=1e-5)
    assert (res.activations.query("epoch == 0").weight_dist_init == 0).all()
