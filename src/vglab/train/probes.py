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

Cost tiers (`TIERS`), as Cockpit's: `norms` (gradient, update and weight norms: the
cheapest reductions), `moments` (+ the moments and signs of the gradient entries and the
layer factors of the backprop product) and `full` (+ the histogram of every gradient
entry at every step: the costliest probe on CPU). The step schedule (`probe_every` in
`TrainConfig`) thins the per-step quantities further; the per-record ones are cheap.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# The histogram's bins are part of the results format (vglab.schema: NumPy, read without JAX).
from vglab.schema import HIST_BINS, hist_edges

SATURATION_THRESHOLD = 0.01  # a unit is saturated when g'(z) < this
_BUCKET_SHIFT = 21  # a bucket: the bit patterns with equal sign, exponent and first mantissa bit


def _bucket_table() -> np.ndarray:
    """[1024] int32 over the top 11 bits of a non-negative float32 (sign, exponent and the
    first mantissa bit: a bucket at most log10(1.5) = 0.18 decades wide): the bin of the
    bucket's smallest value in the high bits (<< 22), and in the low 22 bits the position
    in the bucket of the one interior edge inside it (2^21, above every position, when none is).

    A bin is 14/60 = 0.23 decades wide, so a bucket holds at most one edge (asserted);
    positive float32 bit patterns order like the values they encode. The table is 4 KB:
    it stays in L1 however widely the gradients spread (a 256 KB table over 16 bits
    cost 2.9 ns per entry on a 20x8 net's gradients, spread over 18 decades)."""
    edge_bits = (10.0 ** hist_edges()).astype(np.float32).view(np.int32)[1:-1].astype(np.int64)  # interior edges
    n, width = 1 << (31 - _BUCKET_SHIFT), 1 << _BUCKET_SHIFT
    bucket = edge_bits >> _BUCKET_SHIFT
    assert len(np.unique(bucket)) == len(bucket), "two edges in one bucket: lower _BUCKET_SHIFT"
    first = 1 + np.searchsorted(edge_bits, np.arange(n, dtype=np.int64) * width, side="left")  # 1 + edges below
    low = np.full(n, width, np.int64)
    low[bucket] = edge_bits & (width - 1)
    return ((first << 22) | low).astype(np.int32)


_BUCKETS = _bucket_table()


def hist_bins(a):
    """Histogram bin of each |g| in `a` (>= 0): 0 for exact zeros (and subnormals, which
    XLA on CPU flushes to zero), else 1..HIST_BINS, exact against the float32 edges.
    One lookup by the top bits and one comparison instead of a log10 (or of three lookups
    by the exponent, 1.6x slower: 107 against 66 us for a 50-member 1x8 group's 66,500
    entries, one core)."""
    bits = jax.lax.bitcast_convert_type(a, jnp.int32)
    entry = jnp.asarray(_BUCKETS).at[bits >> _BUCKET_SHIFT].get(mode="promise_in_bounds")  # a >= 0: bits >= 0
    bin_ = (entry >> 22) + ((bits & ((1 << _BUCKET_SHIFT) - 1)) >= (entry & ((1 << 22) - 1))).astype(jnp.int32)
    return jnp.where(a > 0, bin_, 0)


# --------------------------------------------------------------------------- gradients
# What a step's gradient entries contribute to a tensor's sums (elementwise).
ENTRY_FEATURES = {"sum": lambda g: g, "sum_sq": lambda g: g * g, "sum_abs": jnp.abs,
                  "n_zero": lambda g: (g == 0).astype(g.dtype), "n_pos": lambda g: (g > 0).astype(g.dtype)}
SUM_COLUMNS = tuple(ENTRY_FEATURES)


class StepGrads:
    """One optimizer step of a whole group of members, as every `GradQuantity` sees it.

    `flat`: the gradients as the engine keeps them, one flat vector per member
    ([seed, config, n_entries], see `vglab.train.flat`); `segments` (a `flat.Flat`) says
    where each tensor lies. Everything per tensor is in *storage* order (`slot`: tensors
    of equal shape side by side); the engine maps it to the layout's tensor order once
    per record (`Flat.storage_order`).
    `sums`: [seed, config, n_tensors, len(columns)] per-tensor sums of this step (of
    SUM_COLUMNS: those that must be taken at every step, such as sum_sq for a norm and
    for the divergence check), one reshape and one reduction per shape and sum.
    `entries(names)`: the same features entry by entry, [seed, config, len(names),
    n_entries], for quantities that only need their sums over steps: they add them up
    elementwise and reduce per tensor once per record (see `EntrySums`).
    `params`, `updates`: the flat parameters before the step and the step's change (the
    update quantities need them); `update_sums`: [seed, config, n_tensors, 2] sums of
    squares of both, computed on first use.
    `sizes`: [n_tensors] entries per tensor (NumPy, static, storage order)."""

    def __init__(self, flat, segments, n_lead: int = 2, columns=SUM_COLUMNS, params=None, updates=None):
        self.flat, self.segments, self.n_lead = flat, segments, n_lead
        self.lead = flat.shape[:n_lead]
        self.sizes = segments.sizes()[segments.storage_order()]
        self.columns = tuple(c for c in SUM_COLUMNS if c in columns)
        self.sums = jnp.stack([segments.per_slot(flat, _tensor_sum(c)) for c in self.columns], -1) \
            if self.columns else None
        self.params, self.updates = params, updates
        self._update_sums = None

    @classmethod
    def from_tensors(cls, tensors, n_lead: int = 2, **kw) -> "StepGrads":
        """From separate gradient arrays ([*lead, *shape] each), in tensor order."""
        from vglab.train.flat import Flat

        segments = Flat.of_shapes([t.shape[n_lead:] for t in tensors])
        return cls(segments.from_tensors(tensors), segments, n_lead, **kw)

    def column(self, name):
        return self.sums[..., self.columns.index(name)]

    def entries(self, names):
        return jnp.stack([ENTRY_FEATURES[n](self.flat) for n in names], -2)

    @property
    def update_sums(self):
        if self._update_sums is None:
            if self.updates is None:
                raise ValueError("this quantity needs the step's updates; the engine passes them when "
                                 "a quantity with needs_updates is selected")
            sq = _tensor_sum("sum_sq")
            self._update_sums = jnp.stack([self.segments.per_slot(self.updates, sq),
                                           self.segments.per_slot(self.params, sq)], -1)
        return self._update_sums


def _tensor_sum(name):
    feature = ENTRY_FEATURES[name]
    return lambda seg: jnp.sum(feature(seg), -1)


class GradQuantity:
    """Accumulates over the steps of an epoch, for all members and tensors at once.

    The accumulator's leading axes are the members' ([seed, config]); `...` in the
    methods stands for them. `segments` is the engine's `flat.Flat` (tensors, sizes)."""

    name: str
    columns: tuple[str, ...] = ()  # per-epoch scalars it yields (a table column each)
    array: str | None = None  # or the name of the per-epoch array it yields
    sums: tuple[str, ...] = ()  # the per-step per-tensor SUM_COLUMNS it reads from `StepGrads`
    needs_updates = False  # reads the step's parameter updates (`StepGrads.update_sums`)

    def zeros(self, lead: tuple, segments):
        raise NotImplementedError

    def update(self, acc, step: StepGrads):
        raise NotImplementedError

    def finalize(self, acc, n_steps, segments) -> dict:
        """Per-tensor results {column: [..., n_tensors]} (or {array: [..., n_tensors, ...]}),
        in storage order; `n_steps` is [..., 1], the member's finite steps."""
        raise NotImplementedError


class EntrySums(GradQuantity):
    """A quantity that needs only the sums over steps of per-tensor sums (`entry_sums`, of
    SUM_COLUMNS): it adds each step's features entry by entry, [..., n_features, n_entries],
    and sums each tensor's entries once per record. The same numbers (to float32 rounding)
    as reducing at every step, for half the cost: one elementwise kernel per step instead of
    one reduction per feature and tensor shape (moments and signs of a 50-member 1x8 group:
    67 against 139 us per step, one core; 20x8: 104 against 217)."""

    entry_sums: tuple[str, ...] = ()

    def zeros(self, lead, segments):
        return jnp.zeros(lead + (len(self.entry_sums), segments.size))

    def update(self, acc, step):
        return acc + step.entries(self.entry_sums)

    def tensor_means(self, acc, segments, n_steps):
        """[..., n_tensors, n_features]: each feature's mean over the tensor's entries and the steps."""
        sizes = segments.sizes()[segments.storage_order()]
        per_tensor = jnp.stack([segments.per_slot(acc[..., i, :], lambda seg: jnp.sum(seg, -1))
                                for i in range(len(self.entry_sums))], -1)
        return per_tensor / sizes[:, None] / n_steps[..., None]


class GradMoments(EntrySums):
    """Mean, standard deviation and mean |g| of the gradient entries, pooled over all steps."""

    name = "grad_moments"
    columns = ("grad_mean", "grad_std", "grad_abs_mean")
    entry_sums = ("sum", "sum_sq", "sum_abs")

    def finalize(self, acc, n_steps, segments):
        means = self.tensor_means(acc, segments, n_steps)
        m, m2, mabs = (means[..., i] for i in range(3))
        return {"grad_mean": m, "grad_std": jnp.sqrt(jnp.maximum(m2 - m * m, 0.0)), "grad_abs_mean": mabs}


class GradNorm(GradQuantity):
    """L2 norm of each tensor's gradient: mean and max over the steps of the epoch."""

    name = "grad_norm"
    columns = ("grad_norm_mean", "grad_norm_max")
    sums = ("sum_sq",)

    def zeros(self, lead, segments):
        return jnp.zeros(lead + (segments.n_tensors, 2))

    def update(self, acc, step):
        norm = jnp.sqrt(step.column("sum_sq"))
        return jnp.stack([acc[..., 0] + norm, jnp.maximum(acc[..., 1], norm)], -1)

    def finalize(self, acc, n_steps, segments):
        return {"grad_norm_mean": acc[..., 0] / n_steps, "grad_norm_max": acc[..., 1]}


class GradSigns(EntrySums):
    """Fraction of gradient entries that are exactly zero, and that are positive."""

    name = "grad_signs"
    columns = ("zero_frac", "pos_frac")
    entry_sums = ("n_zero", "n_pos")

    def finalize(self, acc, n_steps, segments):
        means = self.tensor_means(acc, segments, n_steps)
        return {"zero_frac": means[..., 0], "pos_frac": means[..., 1]}


class GradHistogram(GradQuantity):
    """Counts of log10|g| in fixed bins over every step (bin 0: exact zeros).

    The costliest probe on CPU: every entry of every member goes through ONE flat
    scatter-add (per-member scatters under vmap carry 3-component indices and ran
    about twice as slow)."""

    name = "grad_hist"
    array = "grad_hist"

    def zeros(self, lead, segments):
        return jnp.zeros(lead + (segments.n_tensors, HIST_BINS + 1), jnp.int32)

    def update(self, acc, step):
        n_members = int(np.prod(step.lead, dtype=np.int64))
        bin_ = hist_bins(jnp.abs(step.flat.reshape(n_members, -1)))  # [member, entry]
        n_tensors = len(step.sizes)
        offset = (np.arange(n_members, dtype=np.int32)[:, None] * (n_tensors * (HIST_BINS + 1))
                  + step.segments.entry_slot()[None, :] * (HIST_BINS + 1))
        flat = acc.reshape(-1).at[(offset + bin_).reshape(-1)].add(1, mode="promise_in_bounds")
        return flat.reshape(acc.shape)

    def finalize(self, acc, n_steps, segments):
        return {"grad_hist": acc}


class UpdateSize(GradQuantity):
    """The size of the optimizer's steps: the mean over steps of ||delta theta|| of each
    tensor, the mean ||theta|| before the step, and their ratio (the relative update).
    With Adam, layers move at about the learning rate per entry even when their gradients
    are tiny: this shows which layers the optimizer really moves."""

    name = "update_size"
    columns = ("update_norm_mean", "param_norm_mean", "update_ratio")
    needs_updates = True

    def zeros(self, lead, segments):
        return jnp.zeros(lead + (segments.n_tensors, 2))

    def update(self, acc, step):
        return acc + jnp.sqrt(step.update_sums)

    def finalize(self, acc, n_steps, segments):
        u, p = acc[..., 0] / n_steps, acc[..., 1] / n_steps
        return {"update_norm_mean": u, "param_norm_mean": p, "update_ratio": u / p}


# ------------------------------------------------------------------- layer factors
class LayerQuantity:
    name: str
    columns: tuple[str, ...]
    needs_activation = True  # False: defined for the linear output layer too
    needs_initial = False  # reads the layer's weight at initialization (w0)

    def compute(self, z, dphi, log_dphi, w, w0=None) -> dict:
        raise NotImplementedError


class PreactivationSize(LayerQuantity):
    """Mean |z|: how far into the tails of phi the pre-activations sit."""

    name = "preact"
    columns = ("preact_abs_mean",)

    def compute(self, z, dphi, log_dphi, w, w0=None):
        return {"preact_abs_mean": jnp.mean(jnp.abs(z))}


class DerivativeMean(LayerQuantity):
    """Mean g'(z) over units and probe examples."""

    name = "deriv"
    columns = ("deriv_mean",)

    def compute(self, z, dphi, log_dphi, w, w0=None):
        return {"deriv_mean": jnp.mean(dphi)}


class Saturation(LayerQuantity):
    """Fraction of units with g'(z) < SATURATION_THRESHOLD."""

    name = "saturation"
    columns = ("saturated_frac",)

    def compute(self, z, dphi, log_dphi, w, w0=None):
        return {"saturated_frac": jnp.mean(dphi < SATURATION_THRESHOLD)}


class LogDerivative(LayerQuantity):
    """Mean log g'(z): this layer's contribution to the derivative product (natural log),
    computed in log space so deep saturation is measured, not rounded to zero. ReLU's
    exact zeros are floored at log 1e-30 so the mean stays finite."""

    name = "log_deriv"
    columns = ("log_deriv_mean",)

    def compute(self, z, dphi, log_dphi, w, w0=None):
        return {"log_deriv_mean": jnp.mean(jnp.maximum(log_dphi, jnp.log(1e-30)))}


class WeightNorm(LayerQuantity):
    """log ||W||_2 (spectral norm, natural log): this layer's factor in the weight product.
    A conv kernel is read as the (3*3*C_in, C_out) matrix.

    ||W||_2^2 is the largest eigenvalue of the smaller Gram matrix (W^T W or W W^T): as
    accurate in float32 as an SVD here (checked against float64 in the tests), and it
    compiled in a third of the time. The eigenvalue comes from repeated squaring
    (`top_eigenvalue`), matrix products only: jaxlib 0.10's LAPACK eigh kernel splits a
    batch over the CPU thread pool and waits for it, and two such calls running side by
    side in one program deadlocked on a 2-core machine (a 5x64 ReLU MLP's observe program,
    every thread idle on a futex in `ParallelBatchMap`)."""

    name = "weight_norm"
    columns = ("log_weight_norm",)
    needs_activation = False

    def compute(self, z, dphi, log_dphi, w, w0=None):
        m = w.reshape(-1, w.shape[-1])
        if m.shape[0] < m.shape[1]:
            m = m.T
        gram = jnp.matmul(m.T, m, precision=jax.lax.Precision.HIGHEST)
        return {"log_weight_norm": 0.5 * jnp.log(top_eigenvalue(gram))}


def top_eigenvalue(gram, squarings: int = 14):
    """The largest eigenvalue of a symmetric positive semi-definite matrix, by squaring it
    `squarings` times (each rescaled to trace 1): G^(2^k) is the top eigenspace's projector
    up to (lambda_2/lambda_1)^(2^k) (1e-7 for a ratio of 0.999 at k = 14), so one of its
    columns is a top eigenvector, and its Rayleigh quotient is lambda_1 (error quadratic in
    the vector's). Equal top eigenvalues (an orthogonal W) give any vector of their space,
    with the same quotient. The zero matrix gives 0."""
    hi = jax.lax.Precision.HIGHEST
    trace = jnp.trace(gram)
    a = gram / jnp.where(trace > 0, trace, 1.0)
    for _ in range(squarings):
        a = jnp.matmul(a, a, precision=hi)
        a = a / jnp.maximum(jnp.trace(a), jnp.finfo(a.dtype).tiny)
    v = a[:, jnp.argmax(jnp.diagonal(a))]
    quotient = jnp.dot(v, jnp.matmul(gram, v, precision=hi), precision=hi) / jnp.maximum(jnp.dot(v, v), jnp.finfo(a.dtype).tiny)
    return jnp.where(trace > 0, quotient, 0.0)


class WeightDistance(LayerQuantity):
    """How far the weights moved: ||W - W0||_F from their initialization, and ||W||_F."""

    name = "weight_distance"
    columns = ("weight_dist_init", "weight_fro_norm")
    needs_activation = False
    needs_initial = True

    def compute(self, z, dphi, log_dphi, w, w0=None):
        return {"weight_dist_init": jnp.sqrt(jnp.sum((w - w0) ** 2)), "weight_fro_norm": jnp.sqrt(jnp.sum(w * w))}


GRAD_QUANTITIES: dict[str, GradQuantity] = {
    q.name: q for q in (GradMoments(), GradNorm(), GradSigns(), GradHistogram(), UpdateSize())
}
LAYER_QUANTITIES: dict[str, LayerQuantity] = {
    q.name: q for q in (PreactivationSize(), DerivativeMean(), Saturation(), LogDerivative(), WeightNorm(),
                        WeightDistance())
}
ALL = tuple(GRAD_QUANTITIES) + tuple(LAYER_QUANTITIES)
TIERS = {
    "norms": ("grad_norm", "update_size", "weight_norm", "weight_distance"),
    "moments": ("grad_moments", "grad_norm", "grad_signs", "update_size", "preact", "deriv", "saturation",
                "log_deriv", "weight_norm", "weight_distance"),
    "full": ALL,
}


def resolve(names) -> tuple[str, ...]:
    """Probe names from a tier ("norms", "moments", "full"; "all" = "full"), a list of
    names and tiers, or () for none; validated, in the registry's order."""
    if isinstance(names, str):
        names = (names,)
    names = tuple(names)
    chosen = set()
    for n in names:
        if n == "all":
            n = "full"
        if n in TIERS:
            chosen.update(TIERS[n])
        elif n in GRAD_QUANTITIES or n in LAYER_QUANTITIES:
            chosen.add(n)
        else:
            raise ValueError(f"unknown probe {n!r}; choose a tier ({', '.join(TIERS)}), 'all', or probes from "
                             f"{', '.join(ALL)}")
    return tuple(n for n in ALL if n in chosen)


def step_columns(grad_qs) -> set[str]:
    """The per-step per-tensor sums (of SUM_COLUMNS) that `StepGrads` must take for
    `grad_qs`: sum_sq always (the norm, and the engine's divergence check)."""
    return {"sum_sq"}.union(*(q.sums for q in grad_qs))


def finalize(grad_qs, accs: dict, n_steps, segments, n_lead: int) -> dict:
    """Every quantity's per-tensor results {column or array: [*lead, n_tensors, ...]}, in
    *tensor* order (`segments.tensor_order()`), from its accumulator `accs[q.name]`;
    `n_steps` is [*lead, 1], the steps measured. Shared by the engine and `vglab.watch`."""
    order = segments.tensor_order()
    out = {}
    for q in grad_qs:
        out.update({k: jnp.take(v, order, axis=n_lead) for k, v in q.finalize(accs[q.name], n_steps, segments).items()})
    return out


def grad_columns(present) -> list[str]:
    """The gradient table's columns among `present`, in the registry's order."""
    return [c for q in GRAD_QUANTITIES.values() for c in q.columns if c in present]


def select(names) -> tuple[list[GradQuantity], list[LayerQuantity]]:
    """The quantities called `names` (see `resolve`)."""
    names = resolve(names)
    return [GRAD_QUANTITIES[n] for n in names if n in GRAD_QUANTITIES], [
        LAYER_QUANTITIES[n] for n in names if n in LAYER_QUANTITIES
    ]
