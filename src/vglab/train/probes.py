"""What is measured during training: one small class per quantity (the Cockpit idea).

Two kinds of quantity:

* `GradQuantity`: updated from the gradient of one tensor (a layer's `w` or `b`) at
  **every** optimizer step and accumulated on-device over the epoch, then finalized
  into per-epoch numbers. (The reference study looked at one batch per epoch.)
* `LayerQuantity`: computed once per epoch on a fixed probe batch from a layer's
  pre-activations z, the activation derivative g'(z) (and its log) and its weight matrix W. These
  are the factors of the backprop product
      dJ/dw^[l] = dJ/dy * g'(z^[L]) * prod_{k>l} W^[k] * prod_{k>=l} phi'(z^[k]) * a^[l-1],
  so a report can say whether the weight product or the derivative product vanished.

To add a quantity, write a class with `name`, `columns` and its functions, and list it
in `GRAD_QUANTITIES` or `LAYER_QUANTITIES`; it is then selectable by name.
All functions are pure JAX for one member; the engine vmaps them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SATURATION_THRESHOLD = 0.01  # a unit is saturated when g'(z) < this
HIST_LOG10_RANGE = (-12.0, 2.0)  # histogram of log10|g|: 1e-12 .. 1e2
HIST_BINS = 60


def hist_edges() -> np.ndarray:
    """Edges (in log10|g|) of the HIST_BINS gradient-magnitude bins; bin 0 of a stored
    histogram counts exact zeros, bins 1..HIST_BINS these ranges (values outside clipped)."""
    return np.linspace(*HIST_LOG10_RANGE, HIST_BINS + 1)


# --------------------------------------------------------------------------- gradients
class GradQuantity:
    """Accumulates over the steps of an epoch, for all tensors of a member at once.

    `tensors` is the step's gradient as a tuple of arrays, tensor t = 2 * layer +
    {w: 0, b: 1}; the accumulator holds one row per tensor."""

    name: str
    columns: tuple[str, ...] = ()  # per-epoch scalars it yields (a table column each)
    array: str | None = None  # or the name of the per-epoch array it yields

    def zeros(self, n_tensors: int):
        raise NotImplementedError

    def update(self, acc, tensors):
        raise NotImplementedError

    def finalize(self, acc, n_steps) -> dict:
        """Per-tensor results: {column: [n_tensors]} (or {array: [n_tensors, ...]})."""
        raise NotImplementedError


def per_tensor(fn, tensors):
    """[n_tensors, k]: `fn(t)` (a tuple of k numbers) for every tensor.

    Tensors of equal shape are stacked and reduced together (a deep MLP's 19 hidden
    8x8 weights are one reduction, not 19), which keeps the compiled step small; plain
    reductions are also much cheaper on CPU than scatter-based segment sums."""
    by_shape: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        by_shape.setdefault(tuple(t.shape), []).append(i)
    blocks, order = [], []
    for idx in by_shape.values():
        stacked = jnp.stack([tensors[i] for i in idx])
        blocks.append(jax.vmap(lambda t: jnp.stack(fn(t)))(stacked))
        order += idx
    rows = jnp.concatenate(blocks)
    return rows[np.argsort(order)] if order != sorted(order) else rows


class GradMoments(GradQuantity):
    """Mean, standard deviation and mean |g| of the gradient entries, pooled over all steps."""

    name = "grad_moments"
    columns = ("grad_mean", "grad_std", "grad_abs_mean")

    def zeros(self, n_tensors):
        return jnp.zeros((n_tensors, 3))

    def update(self, acc, tensors):
        return acc + per_tensor(lambda g: (jnp.mean(g), jnp.mean(g * g), jnp.mean(jnp.abs(g))), tensors)

    def finalize(self, acc, n_steps):
        m, m2, mabs = (acc / n_steps).T
        return {"grad_mean": m, "grad_std": jnp.sqrt(jnp.maximum(m2 - m * m, 0.0)), "grad_abs_mean": mabs}


class GradNorm(GradQuantity):
    """L2 norm of each tensor's gradient: mean and max over the steps of the epoch."""

    name = "grad_norm"
    columns = ("grad_norm_mean", "grad_norm_max")

    def zeros(self, n_tensors):
        return jnp.zeros((n_tensors, 2))

    def update(self, acc, tensors):
        norm = per_tensor(lambda g: (jnp.sqrt(jnp.sum(g * g)),), tensors)[:, 0]
        return jnp.stack([acc[:, 0] + norm, jnp.maximum(acc[:, 1], norm)], -1)

    def finalize(self, acc, n_steps):
        return {"grad_norm_mean": acc[:, 0] / n_steps, "grad_norm_max": acc[:, 1]}


class GradSigns(GradQuantity):
    """Fraction of gradient entries that are exactly zero, and that are positive."""

    name = "grad_signs"
    columns = ("zero_frac", "pos_frac")

    def zeros(self, n_tensors):
        return jnp.zeros((n_tensors, 2))

    def update(self, acc, tensors):
        return acc + per_tensor(lambda g: (jnp.mean(g == 0), jnp.mean(g > 0)), tensors)

    def finalize(self, acc, n_steps):
        return {"zero_frac": acc[:, 0] / n_steps, "pos_frac": acc[:, 1] / n_steps}


class GradHistogram(GradQuantity):
    """Counts of log10|g| in fixed bins over every step (bin 0: exact zeros).
    All tensors go through one scatter-add (the costliest probe on CPU)."""

    name = "grad_hist"
    array = "grad_hist"

    def zeros(self, n_tensors):
        return jnp.zeros((n_tensors, HIST_BINS + 1), jnp.int32)

    def update(self, acc, tensors):
        lo, hi = HIST_LOG10_RANGE
        a = jnp.abs(jnp.concatenate([t.ravel() for t in tensors]))
        pos = jnp.floor((jnp.log10(jnp.where(a > 0, a, 1.0)) - lo) * (HIST_BINS / (hi - lo)))
        bin_ = jnp.where(a > 0, jnp.clip(pos, 0, HIST_BINS - 1).astype(jnp.int32) + 1, 0)
        offset = np.repeat(np.arange(len(tensors), dtype=np.int32) * (HIST_BINS + 1), [t.size for t in tensors])
        flat = acc.reshape(-1).at[offset + bin_].add(1, mode="promise_in_bounds")
        return flat.reshape(acc.shape)

    def finalize(self, acc, n_steps):
        return {"grad_hist": acc}


# ------------------------------------------------------------------- layer factors
class LayerQuantity:
    name: str
    columns: tuple[str, ...]
    needs_activation = True  # False: defined for the linear output layer too

    def compute(self, z, dphi, log_dphi, w) -> dict:
        raise NotImplementedError


class PreactivationSize(LayerQuantity):
    """Mean |z|: how far into the tails of phi the pre-activations sit."""

    name = "preact"
    columns = ("preact_abs_mean",)

    def compute(self, z, dphi, log_dphi, w):
        return {"preact_abs_mean": jnp.mean(jnp.abs(z))}


class DerivativeMean(LayerQuantity):
    """Mean g'(z) over units and probe examples."""

    name = "deriv"
    columns = ("deriv_mean",)

    def compute(self, z, dphi, log_dphi, w):
        return {"deriv_mean": jnp.mean(dphi)}


class Saturation(LayerQuantity):
    """Fraction of units with g'(z) < SATURATION_THRESHOLD."""

    name = "saturation"
    columns = ("saturated_frac",)

    def compute(self, z, dphi, log_dphi, w):
        return {"saturated_frac": jnp.mean(dphi < SATURATION_THRESHOLD)}


class LogDerivative(LayerQuantity):
    """Mean log g'(z): this layer's contribution to the derivative product (natural log),
    computed in log space so deep saturation is measured, not rounded to zero. ReLU's
    exact zeros are floored at log 1e-30 so the mean stays finite."""

    name = "log_deriv"
    columns = ("log_deriv_mean",)

    def compute(self, z, dphi, log_dphi, w):
        return {"log_deriv_mean": jnp.mean(jnp.maximum(log_dphi, jnp.log(1e-30)))}


class WeightNorm(LayerQuantity):
    """log ||W||_2 (spectral norm, natural log): this layer's factor in the weight product.
    A conv kernel is read as the (3*3*C_in, C_out) matrix."""

    name = "weight_norm"
    columns = ("log_weight_norm",)
    needs_activation = False

    def compute(self, z, dphi, log_dphi, w):
        m = w.reshape(-1, w.shape[-1])
        return {"log_weight_norm": jnp.log(jnp.linalg.norm(m, 2))}


GRAD_QUANTITIES: dict[str, GradQuantity] = {q.name: q for q in (GradMoments(), GradNorm(), GradSigns(), GradHistogram())}
LAYER_QUANTITIES: dict[str, LayerQuantity] = {
    q.name: q for q in (PreactivationSize(), DerivativeMean(), Saturation(), LogDerivative(), WeightNorm())
}
ALL = tuple(GRAD_QUANTITIES) + tuple(LAYER_QUANTITIES)


def select(names) -> tuple[list[GradQuantity], list[LayerQuantity]]:
    """The quantities called `names` ("all" for every one, () for none)."""
    if names == "all" or names == ("all",) or names == ["all"]:
        names = ALL
    unknown = [n for n in names if n not in GRAD_QUANTITIES and n not in LAYER_QUANTITIES]
    if unknown:
        raise ValueError(f"unknown probe(s) {unknown}; choose from {list(ALL)} or 'all'")
    return [GRAD_QUANTITIES[n] for n in names if n in GRAD_QUANTITIES], [
        LAYER_QUANTITIES[n] for n in names if n in LAYER_QUANTITIES
    ]
