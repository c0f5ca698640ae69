"""The gradient-probe building blocks against direct NumPy computations."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vglab.train import probes


def test_hist_bins_are_exact_at_the_float32_edges():
    edges = (10.0 ** probes.hist_edges()).astype(np.float32)
    rng = np.random.default_rng(0)
    spread = np.abs(rng.standard_normal(50_000) * 10.0 ** rng.uniform(-15, 4, 50_000)).astype(np.float32)
    at_edges = np.concatenate([edges, np.nextafter(edges, np.float32(0)), np.nextafter(edges, np.float32(np.inf))])
    a = np.concatenate([spread, at_edges, np.float32([0.0, np.inf, 1e-30, 1e30])]).astype(np.float32)
    expected = np.where(a > 0, 1 + np.searchsorted(edges[1:-1], a, side="right"), 0)
    got = np.asarray(probes.hist_bins(jnp.asarray(a)))
    np.testing.assert_array_equal(got, expected)
    assert got[-4] == 0 and got[-3] == probes.HIST_BINS  # zero, and inf clipped into the last bin
    assert got[-2] == 1 and got[-1] == probes.HIST_BINS  # below 1e-12 / above 1e2: clipped


def test_step_sums_per_tensor_for_a_grid_of_members():
    """Equal-shaped tensors are reduced together; the rows must come back in tensor order."""
    rng = np.random.default_rng(1)
    shapes = [(3, 4), (4,), (3, 4), (4,), (4, 2)]
    tensors = [rng.standard_normal((2, 3) + s).astype(np.float32) for s in shapes]  # [seed=2, config=3, ...]
    tensors[2][0, 1, 0, 0] = 0.0
    step = probes.StepGrads.from_tensors([jnp.asarray(t) for t in tensors], n_lead=2)
    assert step.sums.shape == (2, 3, len(shapes), len(probes.SUM_COLUMNS))
    slot = step.segments.tensor_order()  # per-tensor results are in storage order (equal shapes side by side)
    for t, g in enumerate(tensors):
        flat = g.reshape(2, 3, -1)
        expected = np.stack([flat.sum(-1), (flat**2).sum(-1), np.abs(flat).sum(-1), (flat == 0).sum(-1), (flat > 0).sum(-1)], -1)
        np.testing.assert_allclose(np.asarray(step.sums[:, :, slot[t]]), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(step.sizes[slot], [12, 4, 12, 4, 8])
    assert list(slot) == [0, 2, 1, 3, 4]


@pytest.mark.parametrize("entry_max", [probes.ENTRY_MAX, 0], ids=["flat_gradient", "per_tensor"])
def test_step_sums_of_updates_and_parameters_per_tensor(entry_max, monkeypatch):
    """A small model's update and parameter sums come from their own arrays, its gradient's
    from the flat vector: all columns in SUM_FEATURES order, each tensor's row in storage order."""
    monkeypatch.setattr(probes, "ENTRY_MAX", entry_max)
    rng = np.random.default_rng(2)
    shapes = [(3, 4), (4,), (3, 4), (5, 2)]
    named = {k: [rng.standard_normal((2,) + s).astype(np.float32) for s in shapes] for k in "gup"}
    columns = {"update_sq", "sum_sq", "param_sq"}  # a set, as step_columns gives it
    g, u, p = ([jnp.asarray(t) for t in named[k]] for k in "gup")
    step = probes.StepGrads.from_tensors(g, n_lead=1, columns=columns, params=p, updates=u)
    assert step.columns == ("sum_sq", "update_sq", "param_sq")
    slot = step.segments.tensor_order()
    for t in range(len(shapes)):
        expected = np.stack([(named[k][t].reshape(2, -1) ** 2).sum(-1) for k in "gup"], -1)
        np.testing.assert_allclose(np.asarray(step.sums[:, slot[t]]), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="'u'"):
        probes.StepGrads.from_tensors(g, n_lead=1, columns=columns)


@pytest.mark.parametrize("entry_max", [probes.ENTRY_MAX, 0], ids=["per_entry", "per_step"])
def test_moments_and_signs_accumulated_over_steps_equal_the_per_step_means(entry_max, monkeypatch):
    """GradMoments and GradSigns add features over steps (entry by entry for a small model,
    per-tensor sums for a large one: `TensorSums`) and divide once per record; either way
    their results must be the means over steps of each step's per-tensor statistics."""
    monkeypatch.setattr(probes, "ENTRY_MAX", entry_max)
    rng = np.random.default_rng(4)
    shapes = [(3, 4), (4,), (3, 4), (5,)]
    steps = []
    for k in range(3):
        tensors = [rng.standard_normal((2, 3) + s).astype(np.float32) * 10.0**-k for s in shapes]
        tensors[0][1, 2, 0, :2] = 0.0
        steps.append(tensors)
    n_steps = jnp.full((2, 3, 1), 3.0)
    for q in (probes.GradMoments(), probes.GradSigns()):
        segments = probes.StepGrads.from_tensors([jnp.asarray(t) for t in steps[0]]).segments

        @jax.jit  # the record's steps in one program (op by op, each operation would compile on its own)
        def record(steps):
            acc = q.zeros((2, 3), segments)
            assert acc.shape[-1] == (segments.size if entry_max else len(q.sums))  # the mode asked for
            for tensors in steps:
                acc = q.update(acc, probes.StepGrads.from_tensors(tensors, columns=q.step_sums(segments)))
            return q.finalize(acc, n_steps, segments)

        got = record([[jnp.asarray(t) for t in tensors] for tensors in steps])
        slot = segments.tensor_order()
        for t in range(len(shapes)):
            per_step = [g[t].reshape(2, 3, -1) for g in steps]
            expected = {
                "grad_mean": np.mean([g.mean(-1) for g in per_step], 0),
                "grad_abs_mean": np.mean([np.abs(g).mean(-1) for g in per_step], 0),
                "zero_frac": np.mean([(g == 0).mean(-1) for g in per_step], 0),
                "pos_frac": np.mean([(g > 0).mean(-1) for g in per_step], 0),
            }
            m2 = np.mean([(g.astype(np.float64) ** 2).mean(-1) for g in per_step], 0)
            expected["grad_std"] = np.sqrt(np.maximum(m2 - expected["grad_mean"] ** 2, 0))
            for col in q.columns:
                np.testing.assert_allclose(np.asarray(got[col][:, :, slot[t]]), expected[col], rtol=2e-5, atol=1e-7,
                                           err_msg=f"{q.name} {col} tensor {t}")


def test_feature_sums_count_zeros_and_signs_exactly():
    """The counts are written with sign (what XLA fuses into its fast reductions): zeros,
    signed zeros, subnormals (flushed to zero on CPU, as a comparison sees them too) and
    infinities are counted as g == 0 and g > 0 count them; the sums float32-accurate."""
    rng = np.random.default_rng(5)
    g = rng.standard_normal((3, 5000)).astype(np.float32) * 10.0 ** rng.uniform(-6, 0, (3, 1)).astype(np.float32)
    g[:, ::7] = 0.0
    g[1, 1::11] = -0.0
    g[2, :4] = [np.inf, -np.inf, 1e-40, -1e-40]
    u, p = g * 0.5 + 1e-3, g - 2.0
    names = list(probes.SUM_FEATURES)
    got = np.stack(jax.jit(lambda *a: probes.feature_sums(dict(zip("gup", a)), names))(g, u, p), -1)
    flushed = np.where(np.abs(g) < np.finfo(np.float32).tiny, np.float32(0), g)
    np.testing.assert_array_equal(got[:, 3], (flushed == 0).sum(-1))
    np.testing.assert_array_equal(got[:, 4], (flushed > 0).sum(-1))
    G, U, P = (x[:2].astype(np.float64) for x in (g, u, p))  # finite rows
    expected = np.stack([G.sum(-1), (G * G).sum(-1), np.abs(G).sum(-1), (U * U).sum(-1), (P * P).sum(-1)], -1)
    scale = np.stack([np.abs(G).sum(-1), (G * G).sum(-1), np.abs(G).sum(-1), (U * U).sum(-1), (P * P).sum(-1)], -1)
    np.testing.assert_array_less(np.abs(got[:2][:, [0, 1, 2, 5, 6]] - expected), 1e-5 * scale)


@pytest.mark.parametrize("entry_max", [probes.ENTRY_MAX, 0], ids=["flat", "per_part"])
def test_histogram_counts_every_entry_of_every_member_once(entry_max, monkeypatch):
    """A small model's gradients go through one scatter, a large one's are counted tensor
    by tensor by comparisons with the edges (`hist_counts`): the counts of `hist_bins`,
    zeros, subnormals, infinities, NaN, values at and beyond the edges included."""
    monkeypatch.setattr(probes, "ENTRY_MAX", entry_max)
    rng = np.random.default_rng(2)
    tensors = [rng.standard_normal((2, 3) + s).astype(np.float32) * 10.0 ** -k
               for k, s in enumerate([(5, 4), (4,), (5, 4)])]  # the two (5, 4) lie side by side: slots 0, 2, 1
    edges = (10.0 ** probes.hist_edges()).astype(np.float32)
    tensors[0][1, 2] = np.float32([0.0, -0.0, 1e-40, np.inf, -np.inf, np.nan, 1e-30, -1e30, *edges[[1, 7, 30]],
                                   *np.nextafter(edges[[1, 7, 30, 59]], np.float32(0)), -edges[59], edges[59],
                                   3e-6, -2e-7, 0.5]).reshape(5, 4)
    tensors = [jnp.asarray(t) for t in tensors]
    q, segments = probes.GradHistogram(), []

    @jax.jit  # one program (op by op, each operation would compile on its own)
    def two_steps(tensors):
        step = probes.StepGrads.from_tensors(tensors, n_lead=2)
        segments.append(step.segments)
        acc = q.update(q.update(q.zeros((2, 3), step.segments), step), step)  # two steps
        return q.finalize(acc, None, step.segments)["grad_hist"]

    hist = np.asarray(two_steps(tensors))
    slot = segments[0].tensor_order()
    np.testing.assert_array_equal(hist.sum(-1)[..., slot], np.broadcast_to([40, 8, 40], (2, 3, 3)))
    for t, g in enumerate(tensors):
        for s in range(2):
            for c in range(3):
                bins = np.asarray(probes.hist_bins(jnp.abs(g[s, c])))
                np.testing.assert_array_equal(hist[s, c, slot[t]],
                                              2 * np.bincount(bins.ravel(), minlength=probes.HIST_BINS + 1))


def test_weight_norm_is_the_float64_spectral_norm():
    """Tall, wide and square dense weights and a conv kernel (read as (3*3*C_in, C_out)),
    including an ill-conditioned one: the Gram-matrix route keeps float32 accuracy."""
    rng = np.random.default_rng(3)
    ill = rng.standard_normal((30, 8)) @ np.diag(10.0 ** -np.arange(8))
    for w in [rng.standard_normal((28, 8)), rng.standard_normal((8, 10)), rng.standard_normal((8, 8)) * 10,
              rng.standard_normal((3, 3, 36, 36)) * 0.05, ill]:
        w = w.astype(np.float32)
        got = float(probes.WeightNorm().compute(None, None, None, jnp.asarray(w))["log_weight_norm"])
        expected = np.log(np.linalg.norm(w.astype(np.float64).reshape(-1, w.shape[-1]), 2))
        assert abs(got - expected) < 1e-6 * max(1.0, abs(expected)), (w.shape, got, expected)


def test_weight_norm_calls_no_lapack_kernel_and_handles_equal_and_zero_spectra():
    """The spectral norm uses matrix products only: jaxlib's batched LAPACK eigh deadlocked
    when two ran side by side in one program (a 5x64 ReLU MLP's observe program hung for good
    on a 2-core machine). An orthogonal W (all singular values equal) and a zero W are exact."""
    w = jnp.asarray(np.random.default_rng(0).standard_normal((4, 64, 64)).astype(np.float32))
    hlo = jax.jit(jax.vmap(lambda m: probes.WeightNorm().compute(None, None, None, m)["log_weight_norm"])) \
        .lower(w).compile().as_text()
    assert not re.search(r"custom-call\(", hlo)  # an instruction, not the metadata's names
    q = np.linalg.qr(np.random.default_rng(1).standard_normal((64, 32)))[0].astype(np.float32) * 3.0
    got = float(probes.WeightNorm().compute(None, None, None, jnp.asarray(q))["log_weight_norm"])
    assert abs(got - np.log(3.0)) < 1e-6
    zero = probes.WeightNorm().compute(None, None, None, jnp.zeros((8, 8)))["log_weight_norm"]
    assert float(zero) == -np.inf
