"""What is measured during training: one small class per quantity (the Cockpit idea).

Two kinds of quantity:

* `GradQuantity`: updated from every tensor's gradient (each layer's `w` and `b`) at
  **every** optimizer step and accumulated on-device over the epoch, then finalized
  into per-epoch numbers. (The reference study looked at one batch per epoch.) It sees
  the whole group of members at once (`StepGrads`), with shared per-tensor sums.
* `LayerQuantity`: computed once per epoch on a fixed probe batch from a layer's
  pre-activations z, the activation derivative g'(z) (and its log) and its weight matrix W. These
  are the factors of the backprop product
      dJ/dw^[l] = dJ/dy * g'(z^[L]) * prod_{k>l} W^[k] * prod_{k>=l} phi'(z^[k]) * a^[l-1],
  so a report can say whether the weight product or the derivative product vanished.

To add a quantity, write a class with `name`, `columns` and its functions, and list it
in `GRAD_QUANTITIES` or `LAYER_QUANTITIES`; it is then selectable by name.
All functions are pure JAX: a `GradQuantity`'s over the group (members' axes leading),
a `LayerQuantity`'s for one member (the engine vmaps it).
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
    histogram counts exact zeros, bins 1..HIST_BINS these ranges (values outside clipped).
    The bins are exact for the float32 edges `10.0 ** hist_edges()` (see `hist_bins`)."""
    return np.linspace(*HIST_LOG10_RANGE, HIST_BINS + 1)


def _binade_tables() -> np.ndarray:
    """[3, 256] int32 tables over the float32 exponent e: the bin of the binade's
    smallest value and the bit patterns of the (at most two) interior edges inside it.

    A bin is 14/60 = 0.23 decades wide and a binade 0.30, so at most two edges fall
    in one binade; positive float32 bit patterns order like the values they encode."""
    edge_bits = (10.0 ** hist_edges()).astype(np.float32).view(np.int32)[1:-1]  # interior edges
    never = np.iinfo(np.int32).max
    table = np.array([[0, never, never]] * 256, np.int64)
    for e in range(256):
        table[e, 0] = 1 + np.sum(edge_bits < (e << 23))
        inside = edge_bits[(edge_bits >> 23) == e]
        table[e, 1 : 1 + len(inside)] = inside
    return table.T.astype(np.int32)


_BINADES = _binade_tables()


def hist_bins(a):
    """Histogram bin of each |g| in `a` (>= 0): 0 for exact zeros (and subnormals, which
    XLA on CPU flushes to zero), else 1..HIST_BINS, exact against the float32 edges.
    Three lookups by exponent instead of a log10: measured 1.5x cheaper on CPU."""
    bits = jax.lax.bitcast_convert_type(a, jnp.int32)
    first, edge1, edge2 = (jnp.asarray(t)[bits >> 23] for t in _BINADES)
    bin_ = first + (bits >= edge1).astype(jnp.int32) + (bits >= edge2).astype(jnp.int32)
    return jnp.where(a > 0, bin_, 0)


# --------------------------------------------------------------------------- gradients
SUM_COLUMNS = ("sum", "sum_sq", "sum_abs", "n_zero", "n_pos")


class StepGrads:
    """One optimizer step's gradients of a whole group of members, as every
    `GradQuantity` sees them.

    `tensors`: the gradient arrays with the members' axes leading ([seed, config, *shape]),
    tensor t = 2 * layer + {w: 0, b: 1}.
    `sums`: [seed, config, n_tensors, 5] per-tensor sums (SUM_COLUMNS), computed once per
    step and shared by the quantities (and the divergence check) that need them.
    `sizes`: [n_tensors] entries per tensor (NumPy, static)."""

    def __init__(self, tensors, n_lead: int = 2):
        self.tensors = tuple(tensors)
        self.n_lead = n_lead
        self.lead = self.tensors[0].shape[:n_lead]
        self.sizes = np.array([np.prod(t.shape[n_lead:], dtype=np.int64) for t in self.tensors], np.float32)
        self.sums = _tensor_sums(self.tensors, n_lead)

    def column(self, name):
        return self.sums[..., SUM_COLUMNS.index(name)]


def _tensor_sums(tensors, n_lead):
    """[*lead, n_tensors, 5]: SUM_COLUMNS of every tensor.

    Tensors of equal shape are stacked and reduced together (a deep MLP's 19 hidden
    8x8 weights are one reduction, not 19), which keeps the compiled step small. The
    five sums are five plain reductions: stacking the five features first and reducing
    once was 5x slower on CPU (the stack is materialized)."""
    by_shape: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        by_shape.setdefault(tuple(t.shape), []).append(i)
    blocks, order = [], []
    for idx in by_shape.values():
        g = jnp.stack([tensors[i] for i in idx], n_lead)
        g = g.reshape(g.shape[: n_lead + 1] + (-1,))  # [*lead, n_same, entries]
        sums = (jnp.sum(g, -1), jnp.sum(g * g, -1), jnp.sum(jnp.abs(g), -1),
                jnp.sum(g == 0, -1, dtype=g.dtype), jnp.sum(g > 0, -1, dtype=g.dtype))
        blocks.append(jnp.stack(sums, -1))
        order += idx
    rows = jnp.concatenate(blocks, -2)
    return rows[..., np.argsort(order), :] if order != sorted(order) else rows


class GradQuantity:
    """Accumulates over the steps of an epoch, for all members and tensors at once.

    The accumulator's leading axes are the members' ([seed, config]), then one row per
    tensor; `...` in the methods stands for the members' axes."""

    name: str
    columns: tuple[str, ...] = ()  # per-epoch scalars it yields (a table column each)
    array: str | None = None  # or the name of the per-epoch array it yields

    def zeros(self, lead: tuple, n_tensors: int):
        raise NotImplementedError

    def update(self, acc, step: StepGrads):
        raise NotImplementedError

    def finalize(self, acc, n_steps) -> dict:
        """Per-tensor results {column: [..., n_tensors]} (or {array: [..., n_tensors, ...]});
        `n_steps` is [..., 1], the member's finite steps."""
        raise NotImplementedError


class GradMoments(GradQuantity):
    """Mean, standard deviation and mean |g| of the gradient entries, pooled over all steps."""

    name = "grad_moments"
    columns = ("grad_mean", "grad_std", "grad_abs_mean")

    def zeros(self, lead, n_tensors):
        return jnp.zeros(lead + (n_tensors, 3))

    def update(self, acc, step):
        return acc + step.sums[..., :3] / step.sizes[:, None]

    def finalize(self, acc, n_steps):
        m, m2, mabs = (acc[..., i] / n_steps for i in range(3))
        return {"grad_mean": m, "grad_std": jnp.sqrt(jnp.maximum(m2 - m * m, 0.0)), "grad_abs_mean": mabs}


class GradNorm(GradQuantity):
    """L2 norm of each tensor's gradient: mean and max over the steps of the epoch."""

    name = "grad_norm"
    columns = ("grad_norm_mean", "grad_norm_max")

    def zeros(self, lead, n_tensors):
        return jnp.zeros(lead + (n_tensors, 2))

    def update(self, acc, step):
        norm = jnp.sqrt(step.column("sum_sq"))
        return jnp.stack([acc[..., 0] + norm, jnp.maximum(acc[..., 1], norm)], -1)

    def finalize(self, acc, n_steps):
        return {"grad_norm_mean": acc[..., 0] / n_steps, "grad_norm_max": acc[..., 1]}


class GradSigns(GradQuantity):
    """Fraction of gradient entries that are exactly zero, and that are positive."""

    name = "grad_signs"
    columns = ("zero_frac", "pos_frac")

    def zeros(self, lead, n_tensors):
        return jnp.zeros(lead + (n_tensors, 2))

    def update(self, acc, step):
        return acc + step.sums[..., 3:] / step.sizes[:, None]

    def finalize(self, acc, n_steps):
        return {"zero_frac": acc[..., 0] / n_steps, "pos_frac": acc[..., 1] / n_steps}


class GradHistogram(GradQuantity):
    """Counts of log10|g| in fixed bins over every step (bin 0: exact zeros).

    The costliest probe on CPU: every entry of every member goes through ONE flat
    scatter-add (per-member scatters under vmap carry 3-component indices and ran
    about twice as slow)."""

    name = "grad_hist"
    array = "grad_hist"

    def zeros(self, lead, n_tensors):
        return jnp.zeros(lead + (n_tensors, HIST_BINS + 1), jnp.int32)

    def update(self, acc, step):
        n_members = int(np.prod(step.lead, dtype=np.int64))
        bin_ = hist_bins(jnp.abs(jnp.concatenate([t.reshape(n_members, -1) for t in step.tensors], -1)))  # [member, entry]
        n_tensors = len(step.tensors)
        offset = (np.arange(n_members, dtype=np.int32)[:, None] * (n_tensors * (HIST_BINS + 1))
                  + np.repeat(np.arange(n_tensors, dtype=np.int32) * (HIST_BINS + 1), step.sizes.astype(np.int64))[None, :])
        flat = acc.reshape(-1).at[(offset + bin_).reshape(-1)].add(1, mode="promise_in_bounds")
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
    A conv kernel is read as the (3*3*C_in, C_out) matrix.

    ||W||_2^2 is the largest eigenvalue of the smaller Gram matrix (W^T W or W W^T): as
    accurate in float32 as an SVD here (checked against float64 in the tests), and it
    compiled in a third of the time."""

    name = "weight_norm"
    columns = ("log_weight_norm",)
    needs_activation = False

    def compute(self, z, dphi, log_dphi, w):
        m = w.reshape(-1, w.shape[-1])
        if m.shape[0] < m.shape[1]:
            m = m.T
        gram = jnp.matmul(m.T, m, precision=jax.lax.Precision.HIGHEST)
        return {"log_weight_norm": 0.5 * jnp.log(jnp.linalg.eigvalsh(gram)[-1])}


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
