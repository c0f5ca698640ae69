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

import math

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
# What an entry contributes to its tensor's sums at one step: (the array it reads, the
# elementwise feature). "g": the gradient; "u": the step's parameter update; "p": the
# parameters before the step. The counts are written with arithmetic (0 for zeros, and for
# the subnormals that XLA on CPU flushes, as g == 0 and g > 0 see them) rather than with a
# comparison: XLA's CPU backend fuses sign, abs, min, max and arithmetic into its
# vectorized (YNNPACK) reductions, but not a comparison or conversion, which cost a kernel
# and an array each; and no two features share a subexpression (XLA would materialize it:
# sum_sq was |g| * |g|, which wrote |g| out for sum_abs and read it twice). n_pos is
# relu(min(g * 2^127, 1)) (1 for every normal g > 0, inf included; NaN stays NaN): the
# sign(max(g, 0)) it replaced cost 1.66 ms on a 1 M-entry gradient against 0.28 ms (one
# core, busy machine), and the five gradient features together 3.3-3.6 ms against 2.4-2.8
# (in the whole watched step of the 1.2 M-parameter char LM the difference stayed within a
# busy machine's noise: moments +41 and +45 % against +47 and +44 %).
SUM_FEATURES = {
    "sum": ("g", lambda g: g), "sum_sq": ("g", lambda g: g * g), "sum_abs": ("g", jnp.abs),
    "n_zero": ("g", lambda g: 1.0 - jnp.abs(jnp.sign(g))),
    "n_pos": ("g", lambda g: jax.nn.relu(jnp.minimum(g * jnp.float32(2.0 ** 127), 1.0))),
    "update_sq": ("u", lambda u: u * u), "param_sq": ("p", lambda p: p * p),
}
SUM_COLUMNS = tuple(n for n, (source, _) in SUM_FEATURES.items() if source == "g")  # the gradient's
# Models of at most this many entries per member accumulate the moments entry by entry
# (`TensorSums`) and bin the histogram in one scatter (`GradHistogram`); larger ones per
# tensor at every step.
ENTRY_MAX = 1 << 16


def feature_sums(arrays: dict, names, keep: int = 1) -> list:
    """Each feature `names` of SUM_FEATURES summed over all but the first `keep` axes of
    its array (`arrays`: {"g"/"u"/"p": [*kept, ...]}, all of one shape; the tensor's own
    axes are reduced as they are: reshaped to one axis, a gradient that a product wrote
    in another layout was copied first): one reduction per feature,
    each of which XLA's CPU backend runs as a vectorized YNNPACK kernel with the feature
    fused in. Measured on 1 M entries (one core, best of 40): 3 features (g^2, u^2, p^2)
    0.87 ms against 1.55 ms for all three in one variadic reduction (a scalar loop in
    XLA), 5 gradient features 2.4 against 2.7 ms, float32-accurate (relative 1e-7; the
    variadic one over a whole 1 M axis: 5e-4)."""
    return [jnp.sum(SUM_FEATURES[n][1](a), tuple(range(keep, a.ndim)))
            for n in names for a in [arrays[SUM_FEATURES[n][0]]]]


class StepGrads:
    """One optimizer step of a whole group of members, as every `GradQuantity` sees it.

    `parts`: the tensors as arrays of equal-shaped tensors ({"g": [*lead, n, ...], and "u",
    "p" when needed}), in *storage* order (`segments`, a `flat.Flat`: tensors of equal
    shape side by side; the engine maps per-tensor results to the layout's tensor order
    once per record, `Flat.storage_order`). The engine's parts are the blocks of its flat
    vectors ([seed, config, n_entries], see `vglab.train.flat`), static slices of them
    ([*lead, n, size]); `vglab.watch`'s are the leaves of the user's pytrees, each in its
    own shape ([*lead, 1, *shape], `from_tensors`): no flat copy.
    `sums`: [*lead, n_tensors, len(columns)] per-tensor sums of this step's features
    (`SUM_FEATURES`: those some quantity reads, `step_columns`), one reduction per part
    and feature (`feature_sums`).
    `sizes`: [n_tensors] entries per tensor (NumPy, static, storage order)."""

    def __init__(self, parts, segments, n_lead: int = 2, columns=SUM_COLUMNS, flat=None):
        self.parts, self.segments, self.n_lead = parts, segments, n_lead
        self.lead = parts[0]["g"].shape[:n_lead]
        self.sizes = segments.sizes()[segments.storage_order()]
        self.columns = tuple(c for c in SUM_FEATURES if c in columns)
        missing = {SUM_FEATURES[c][0] for c in self.columns} - set(parts[0])
        if missing:
            raise ValueError(f"these sums need the step's {sorted(missing)} ('u': updates, 'p': parameters); the "
                             "engine passes them when a quantity with needs_updates is selected")
        self.sums = None
        if self.columns:
            self.sums = jnp.concatenate([jnp.stack(feature_sums(part, self.columns, n_lead + 1), -1)
                                         for part in parts], -2)
        self._flat = flat

    @classmethod
    def of_flat(cls, flat, segments, n_lead: int = 2, columns=SUM_COLUMNS, params=None, updates=None):
        """From flat vectors [*lead, n_entries] (gradients; the parameters before the step
        and its update, when given), one part per block of `segments`."""
        named = {"g": flat, "u": updates, "p": params}
        parts = []
        for block in segments.blocks:
            cut = slice(block.start, block.start + block.n * block.size)
            parts.append({k: a[..., cut].reshape(a.shape[:-1] + (block.n, block.size))
                          for k, a in named.items() if a is not None})
        return cls(parts, segments, n_lead, columns, flat)

    @classmethod
    def from_tensors(cls, tensors, n_lead: int = 2, columns=SUM_COLUMNS, params=None, updates=None):
        """From separate arrays ([*lead, *shape] each, in tensor order: the gradients, and
        the parameters and updates when given): a small model's gradients concatenated into
        one flat vector (`of_flat`: its moments and histogram then take the fewest kernels),
        its updates' and parameters' sums taken from their own arrays (only their norms are
        needed); a large model's one part per tensor (no copy)."""
        from vglab.train.flat import Flat

        segments = Flat.of_shapes([t.shape[n_lead:] for t in tensors])
        named = {"g": tensors, "u": updates, "p": params}
        if segments.size > ENTRY_MAX:
            parts = [{k: jnp.expand_dims(v[i], n_lead) for k, v in named.items() if v is not None}
                     for i in segments.storage_order()]
            return cls(parts, segments, n_lead, columns)
        own = tuple(c for c in SUM_FEATURES if c in columns and SUM_FEATURES[c][0] != "g"
                    and named[SUM_FEATURES[c][0]] is not None)
        step = cls.of_flat(segments.from_tensors(tensors), segments, n_lead, tuple(c for c in columns if c not in own))
        if own:  # each tensor's own sums; concatenating the updates and parameters too cost the
            # 50-member 1x8 group's watched step (UpdateSize alone) +35 % against +17 %, the full
            # tier +127 % against +108 % (one core, CPU time, shared machine, 10-12 interleaved pairs)
            sums = jnp.stack([jnp.stack(feature_sums({k: v[i] for k, v in named.items() if v is not None}, own,
                                                     n_lead), -1) for i in segments.storage_order()], -2)
            step.sums = sums if step.sums is None else jnp.concatenate([step.sums, sums], -1)
            step.columns += own
        return step

    def column(self, name):
        return self.sums[..., self.columns.index(name)]

    @property
    def flat(self):
        """[*lead, n_entries]: the gradients as one vector in storage order (the engine's
        own; for separate tensors, their concatenation, made on first use)."""
        if self._flat is None:
            self._flat = jnp.concatenate([p["g"].reshape(p["g"].shape[:self.n_lead] + (-1,)) for p in self.parts], -1)
        return self._flat

    def entries(self, names):
        """[*lead, len(names), n_entries]: the gradient's features `names` entry by entry,
        in storage order (`TensorSums` of a small model)."""
        return jnp.stack([SUM_FEATURES[n][1](self.flat) for n in names], -2)

    def columns_of(self, names):
        """[*lead, n_tensors, len(names)]: the sums `names`, in that order."""
        idx = [self.columns.index(n) for n in names]
        return self.sums[..., idx[0]:idx[0] + len(idx)] if idx == list(range(idx[0], idx[0] + len(idx))) \
            else self.sums[..., np.array(idx)]


class GradQuantity:
    """Accumulates over the steps of an epoch, for all members and tensors at once.

    The accumulator's leading axes are the members' ([seed, config]); `...` in the
    methods stands for them. `segments` is the engine's `flat.Flat` (tensors, sizes)."""

    name: str
    columns: tuple[str, ...] = ()  # per-epoch scalars it yields (a table column each)
    array: str | None = None  # or the name of the per-epoch array it yields
    sums: tuple[str, ...] = ()  # the per-step per-tensor sums (of SUM_FEATURES) it reads from `StepGrads`
    needs_updates = False  # reads the step's parameter updates and parameters ("u", "p")

    def step_sums(self, segments) -> tuple[str, ...]:
        """The per-step per-tensor sums it reads for a model laid out as `segments`."""
        return self.sums

    def zeros(self, lead: tuple, segments):
        raise NotImplementedError

    def update(self, acc, step: StepGrads):
        raise NotImplementedError

    def finalize(self, acc, n_steps, segments) -> dict:
        """Per-tensor results {column: [..., n_tensors]} (or {array: [..., n_tensors, ...]}),
        in storage order; `n_steps` is [..., 1], the member's finite steps."""
        raise NotImplementedError


class TensorSums(GradQuantity):
    """A quantity that needs only the sums over steps of its per-tensor `sums` (the
    gradient's features), divided by the entries and steps once per record. How it adds
    them up depends on the model's size (`per_entry`), the numbers do not (float32):
    - a small model (at most ENTRY_MAX entries per member) adds each step's features
      entry by entry, [..., len(sums), n_entries], and sums each tensor's entries once per
      record: one elementwise kernel per step, where per-step sums cost one reduction per
      tensor and feature (the engine's 50-member 1x8 group: 67 against 139 us per step,
      one core; 20x8: 104 against 217; watched, 1x8: +39 % per step against +56 %);
    - a large one adds per-tensor sums taken at every step (`StepGrads.sums`), a few
      floats per tensor: per entry, its state (5 floats per entry) is read and written
      whole at every step (the 1.2 M-parameter char LM of benchmarks/watch_speed.py,
      watched moments per step, one core, best of 9, two runs on a busy machine: +48 %
      and +59 % per entry, +35 % and +55 % per tensor)."""

    @staticmethod
    def per_entry(segments) -> bool:
        return segments.size <= ENTRY_MAX

    def step_sums(self, segments) -> tuple[str, ...]:
        return () if self.per_entry(segments) else self.sums

    def zeros(self, lead, segments):
        if self.per_entry(segments):
            return jnp.zeros(lead + (len(self.sums), segments.size))
        return jnp.zeros(lead + (segments.n_tensors, len(self.sums)))

    def update(self, acc, step):
        if self.per_entry(step.segments):
            return acc + step.entries(self.sums)
        return acc + step.columns_of(self.sums)

    def tensor_means(self, acc, segments, n_steps):
        """[..., n_tensors, len(sums)]: each feature's mean over the tensor's entries and the steps."""
        if self.per_entry(segments):
            acc = jnp.stack([segments.per_slot(acc[..., i, :], lambda seg: jnp.sum(seg, -1))
                             for i in range(len(self.sums))], -1)
        sizes = segments.sizes()[segments.storage_order()]
        return acc / sizes[:, None] / n_steps[..., None]


class GradMoments(TensorSums):
    """Mean, standard deviation and mean |g| of the gradient entries, pooled over all steps."""

    name = "grad_moments"
    columns = ("grad_mean", "grad_std", "grad_abs_mean")
    sums = ("sum", "sum_sq", "sum_abs")

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


class GradSigns(TensorSums):
    """Fraction of gradient entries that are exactly zero, and that are positive."""

    name = "grad_signs"
    columns = ("zero_frac", "pos_frac")
    sums = ("n_zero", "n_pos")

    def finalize(self, acc, n_steps, segments):
        means = self.tensor_means(acc, segments, n_steps)
        return {"zero_frac": means[..., 0], "pos_frac": means[..., 1]}


class GradHistogram(GradQuantity):
    """Counts of log10|g| in fixed bins over every step (bin 0: exact zeros).

    The costliest probe on CPU. A small model's entries (all members') go through ONE
    flat scatter-add (per-member scatters under vmap carry 3-component indices and ran
    about twice as slow); a large model's tensors are counted by `hist_counts`."""

    name = "grad_hist"
    array = "grad_hist"

    def zeros(self, lead, segments):
        return jnp.zeros(lead + (segments.n_tensors, HIST_BINS + 1), jnp.int32)

    def update(self, acc, step):
        if step.segments.size > ENTRY_MAX:
            return acc + jnp.concatenate([hist_counts(p["g"], step.n_lead + 1) for p in step.parts], -2)
        n_members = int(np.prod(step.lead, dtype=np.int64))
        bin_ = hist_bins(jnp.abs(step.flat.reshape(n_members, -1)))  # [member, entry]
        offset = (np.arange(n_members, dtype=np.int32)[:, None] * (len(step.sizes) * (HIST_BINS + 1))
                  + step.segments.entry_slot()[None, :] * (HIST_BINS + 1))
        flat = acc.reshape(-1).at[(offset + bin_).reshape(-1)].add(1, mode="promise_in_bounds")
        return flat.reshape(acc.shape)

    def finalize(self, acc, n_steps, segments):
        return {"grad_hist": acc}


_EDGE_BITS = (10.0 ** hist_edges()).astype(np.float32).view(np.int32)[1:-1]  # the interior edges' bit patterns
_NORMAL_BITS, _INF_BITS = 0x00800000, 0x7F800000


def hist_counts(g, n_keep: int):
    """[*kept, HIST_BINS + 1]: the log10|g| histogram of `g` over all but its first `n_keep`
    axes, the bins of `hist_bins` (exact zeros, subnormals and NaN in bin 0), without a
    scatter: for each edge e the count of entries with |g| >= e, all in ONE reduction (the
    float32 bit patterns of non-negative numbers order like their values), differenced.
    For a large model's gradients: 1.2 M entries (the char LM) cost +64 % per watched step
    against +82 % through the scatter (one core, best of 9; the scatter's indices and its
    array of ones are written and read again for every entry). A small model's group
    (the 50-member 1x8 MLP) keeps the scatter: 59 comparisons per entry cost +208 %
    against +96 %."""
    bits = jax.lax.bitcast_convert_type(jnp.abs(g), jnp.int32)
    bits = jnp.where((bits >= _NORMAL_BITS) & (bits <= _INF_BITS), bits, 0)  # as hist_bins: a > 0 under flushing
    ops = [(bits > 0).astype(jnp.int32)] + [(bits >= int(e)).astype(jnp.int32) for e in _EDGE_BITS]
    at_least = jax.lax.reduce(ops, [jnp.int32(0)] * len(ops), lambda a, b: [x + y for x, y in zip(a, b)],
                              tuple(range(n_keep, g.ndim)))
    size = math.prod(g.shape[n_keep:])
    at_least = jnp.stack([jnp.full_like(at_least[0], size)] + list(at_least) + [jnp.zeros_like(at_least[0])], -1)
    return at_least[..., :-1] - at_least[..., 1:]


class UpdateSize(GradQuantity):
    """The size of the optimizer's steps: the mean over steps of ||delta theta|| of each
    tensor, the mean ||theta|| before the step, and their ratio (the relative update).
    With Adam, layers move at about the learning rate per entry even when their gradients
    are tiny: this shows which layers the optimizer really moves."""

    name = "update_size"
    columns = ("update_norm_mean", "param_norm_mean", "update_ratio")
    sums = ("update_sq", "param_sq")
    needs_updates = True

    def zeros(self, lead, segments):
        return jnp.zeros(lead + (segments.n_tensors, 2))

    def update(self, acc, step):
        return acc + jnp.sqrt(step.columns_of(self.sums))

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


def step_columns(grad_qs, segments) -> set[str]:
    """The per-step per-tensor sums (of SUM_FEATURES) that `StepGrads` must take for
    `grad_qs` on a model laid out as `segments`: sum_sq always (the norm, and the
    engine's divergence check)."""
    return {"sum_sq"}.union(*(q.step_sums(segments) for q in grad_qs))


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
