"""Watch your own training step: `watch` wraps any Optax transformation and measures every
layer at every step, with the very probe quantities the engine uses (`vglab.train.probes`).

    tx = vglab.watch(optax.adam(1e-3), tier="moments")       # an ordinary GradientTransformation
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)          # inside your jit / scan / vmap
    vglab.watch_table(state)                                  # one row per layer x tensor (x member)
    state = vglab.watch_reset(state)                          # start the next record's means

Why a transformation: in JAX the optimizer is the one place every training loop hands its
gradients and parameters to (Cockpit wraps the backward pass, wandb.watch hooks modules;
neither exists for JAX), and an Optax state is carried through `jit`, `lax.scan`,
`vmap` and donation by the user's own code. The accumulators are fixed-size arrays in
that state, so measuring adds kernels to the step but no host round trip.

What is measured, per watched tensor (each layer's weight and bias, named by the
`Layout` of the parameter tree's paths, layers in the natural order of their names):
- the incoming gradient (what `update` receives, before clipping or scaling by the wrapped
  transformation): the tier's `GradQuantity`s of `probes.TIERS` (`norms`: gradient norms
  and `UpdateSize`; `moments`: + moments, signs, zero fraction; `full`: + the log10|g|
  histogram of every entry);
- the update: the wrapped transformation's output (what `optax.apply_updates` adds), and
  the parameters before it (`UpdateSize`: ||delta theta||, ||theta||, their ratio).
Everything is measured in float32 (bf16/f16 trees are cast first). Means are over the
measured steps since `init` or `watch_reset`; `every` n measures every n-th call only
(the first, n+1-th, ...). A non-finite gradient makes the means non-finite until the next
reset (the engine instead freezes a diverged member; here the loop is the user's).

The static description of what is watched (`WatchPlan`) travels as the state's pytree
metadata, so `watch_table(state)` needs nothing else; under `jax.vmap` the accumulators
get leading member axes and the table a `member` column (flat index over those axes).
`init` must run under the same vmap as `update` (the layout is read from one member's
parameter shapes). Under vmap, `every`'s `lax.cond` becomes a select (both branches
run), so thinning saves time only outside vmap. It works as the `tx` of
`flax.nnx.Optimizer` (read `optimizer.opt_state`) and with Equinox's filtered transforms.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from vglab.nn.model import Layout, Model, derive_layout
from vglab.train import probes
from vglab.train.flat import Flat

TIER_NAMES = ("norms", "moments", "full")


def tier_quantities(tier: str) -> tuple[str, ...]:
    """The per-step gradient quantities of a tier (the engine's `probes.TIERS`, less the
    layer factors, which `layer_factors` measures off the hot path)."""
    if tier not in TIER_NAMES:
        raise ValueError(f"tier must be one of {', '.join(map(repr, TIER_NAMES))}, got {tier!r}")
    return tuple(n for n in probes.TIERS[tier] if n in probes.GRAD_QUANTITIES)


class _Tree(Model):
    """A parameter tree seen as a model, only for its `Layout` (names, order, fans)."""

    name = "parameters"
    in_shape = None


@dataclasses.dataclass(frozen=True)
class WatchPlan:
    """What a watcher measures (hashable: the state's static pytree metadata).

    `layout`: the parameter tree's layers; `watched`: indices into `layout.tensors` of
    the tensors measured (in tensor order); `flat`: where each watched tensor lies in the
    flat vector the quantities read; `quantities`: probe names; `every`: the schedule."""

    layout: Layout
    watched: tuple[int, ...]
    flat: Flat
    quantities: tuple[str, ...]
    every: int

    @property
    def grad_qs(self) -> list:
        return [probes.GRAD_QUANTITIES[n] for n in self.quantities]

    @property
    def tensors(self):
        return [self.layout.tensors[i] for i in self.watched]

    def values(self, tree) -> list:
        """The watched tensors of a tree shaped like the parameters, as float32."""
        leaves = self.layout.leaves(tree)
        return [jnp.asarray(leaves[t.leaf], jnp.float32) for t in self.tensors]


@dataclasses.dataclass
class WatchState:
    """`inner`: the wrapped transformation's state; `acc`: {quantity: accumulator};
    `count`: calls of `update` since init/reset; `probed`: those measured; `plan`: static."""

    inner: object
    acc: dict
    count: jax.Array
    probed: jax.Array
    plan: WatchPlan


jax.tree_util.register_dataclass(WatchState, data_fields=["inner", "acc", "count", "probed"], meta_fields=["plan"])


def _plan(params, tier: str, every: int, layers) -> WatchPlan:
    layout = derive_layout(_Tree(), params=params)
    names = layout.names
    if layers is None:
        chosen = set(names)
    else:
        patterns = [layers] if isinstance(layers, str) else list(layers)
        if not patterns or not all(isinstance(p, str) for p in patterns):
            raise ValueError(f"layers must be a name pattern or a list of them (fnmatch: 'layers[[]0]', 'Dense_*'), "
                             f"got {layers!r}")
        chosen = {n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)}
        if not chosen:
            raise ValueError(f"layers={layers!r} matches none of the layers {list(names)}; give fnmatch patterns of "
                             "these names (a '[' in a name is written '[[]')")
    watched = tuple(i for i, t in enumerate(layout.tensors) if t.layer in chosen)
    flat = Flat.of_shapes([layout.tensors[i].shape for i in watched])
    return WatchPlan(layout, watched, flat, tier_quantities(tier), every)


def watch(tx: optax.GradientTransformation, *, tier: str = "moments", every: int = 1,
          layers=None) -> optax.GradientTransformationExtraArgs:
    """`tx` (any Optax transformation: chains, MultiSteps, inject_hyperparams, masked,
    multi_transform) with every layer's gradient and update measured at every `every`-th
    call of `update`. `tier`: "norms", "moments" or "full" (see the module docstring);
    `layers`: an fnmatch pattern (or list) of layer names to watch (default all).
    `update` needs `params` (the update/weight ratio): `tx.update(grads, state, params)`.
    Read the state with `watch_table`; start new means with `watch_reset`."""
    tier_quantities(tier)  # validates
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"every must be an integer >= 1 (measure every n-th step), got {every!r}")
    inner = optax.with_extra_args_support(tx)

    def init_fn(params):
        plan = _plan(params, tier, int(every), layers)
        acc = {q.name: q.zeros((), plan.flat) for q in plan.grad_qs}
        return WatchState(inner.init(params), acc, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), plan)

    def update_fn(updates, state, params=None, **extra_args):
        if not isinstance(state, WatchState):
            raise TypeError(f"vglab.watch's update got a {type(state).__name__} as its state; pass the state that "
                            "this transformation's init returned (and its successors)")
        plan = state.plan
        if params is None and any(q.needs_updates for q in plan.grad_qs):
            raise ValueError("vglab.watch measures the update/weight ratio, so it needs the parameters: call "
                             "tx.update(grads, state, params)")
        new_updates, new_inner = inner.update(updates, state.inner, params, **extra_args)

        def measure(acc):
            kw = {}
            if any(q.needs_updates for q in plan.grad_qs):
                kw = {"params": plan.values(params), "updates": plan.values(new_updates)}
            step = probes.StepGrads.from_tensors(plan.values(updates), n_lead=0,
                                                 columns=probes.step_columns(plan.grad_qs, plan.flat), **kw)
            return {q.name: q.update(acc[q.name], step) for q in plan.grad_qs}

        if plan.every == 1:
            due = jnp.ones((), bool)
            acc = measure(state.acc)
        else:
            due = state.count % plan.every == 0
            acc = jax.lax.cond(due, measure, lambda a: a, state.acc)
        return new_updates, WatchState(new_inner, acc, state.count + 1, state.probed + due.astype(jnp.int32), plan)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def watch_reset(state: WatchState) -> WatchState:
    """`state` with its accumulators and counters zeroed (the wrapped optimizer's state is
    kept): the next `watch_table` gives means over the steps after this. Pure; works on a
    vmapped state and inside jit."""
    _check(state)
    acc, count, probed = jax.tree_util.tree_map(jnp.zeros_like, (state.acc, state.count, state.probed))
    return WatchState(state.inner, acc, count, probed, state.plan)


def _check(state) -> None:
    if not isinstance(state, WatchState):
        raise TypeError(f"expected the state of a vglab.watch transformation, got {type(state).__name__}; pass the "
                        "state that tx.init / tx.update returned for tx = vglab.watch(...)")


@dataclasses.dataclass
class Reading:
    """What a watched state holds, on the host: `table` (see `watch_table`), `hist`
    ([*lead, n_watched, HIST_BINS + 1] counts in `plan.tensors` order, or None), `lead`
    (the member axes' shape, () for one model) and `steps` ([*lead] measured steps)."""

    table: pd.DataFrame
    hist: np.ndarray | None
    lead: tuple[int, ...]
    steps: np.ndarray
    plan: WatchPlan


def read(state: WatchState) -> Reading:
    """The state's per-tensor results on the host (`watch_table` and the Recorder read this)."""
    _check(state)
    plan = state.plan
    acc, probed = jax.device_get((state.acc, state.probed))
    probed = np.asarray(probed)
    lead = probed.shape
    n = probed.astype(np.float32)[..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        res = {k: np.asarray(v) for k, v in probes.finalize(plan.grad_qs, acc, n, plan.flat, len(lead)).items()}
    hist = res.pop("grad_hist", None)
    tensors = plan.tensors
    n_members, n_t = math.prod(lead), len(tensors)
    cols = {}
    if lead:
        cols["member"] = np.repeat(np.arange(n_members), n_t)
    cols["layer"] = np.tile([t.layer for t in tensors], n_members)
    cols["layer_index"] = np.tile([t.layer_index for t in tensors], n_members)
    cols["param"] = np.tile([t.param for t in tensors], n_members)
    cols["steps"] = np.repeat(probed.reshape(-1), n_t)
    for c in probes.grad_columns(res):
        cols[c] = res[c].reshape(-1).astype(np.float64)
    return Reading(pd.DataFrame(cols), hist, lead, probed, plan)


def watch_table(state: WatchState) -> pd.DataFrame:
    """One row per watched layer x tensor (x member, under vmap), with the columns of the
    results store's `grads` table (layer, layer_index, param, grad_norm_mean, grad_abs_mean,
    zero_frac, update_ratio, ...: DESIGN.md) meaning what they mean there, over the steps
    measured since `init` or `watch_reset` (`steps`: how many). NaN before the first step."""
    return read(state).table


# ------------------------------------------------------------------ layer factors
@dataclasses.dataclass(frozen=True)
class _FactorProgram:
    """One compiled layer-factor program: the model, its layout, the quantities and the
    jitted measurement (keeps `apply_fn` alive, so its id in the cache key stays its own)."""

    apply_fn: object
    layout: Layout
    qs: tuple
    fn: object


_FACTOR_PROGRAMS: dict = {}  # {key: _FactorProgram}, oldest first
FACTOR_CACHE_SIZE = 16


def _spec(tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((tuple(np.shape(a)), jnp.result_type(a)) for a in leaves)


def _factor_program(apply_fn, params, x, alpha: float, with_initial: bool, per_example: bool) -> _FactorProgram:
    """The program for this apply_fn, tree structure, shapes/dtypes and alpha, built once:
    the layout (a trace of the forward pass) and a `jax.jit` of the measurement. Built per
    call, it cost 0.55 s for a 2-layer MLP and 25 s for the example char LM's records."""
    from vglab.nn.adapters import FunctionModel
    from vglab.train.loop import measure_layer_factors

    key = (id(apply_fn), _spec(params), _spec(x), alpha, with_initial, per_example)
    prog = _FACTOR_PROGRAMS.pop(key, None)
    if prog is None or prog.apply_fn is not apply_fn:
        structs = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), params)
        model = FunctionModel(lambda _k: jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), structs),
                              apply_fn, name=getattr(apply_fn, "__name__", "model"), per_example=per_example)
        layout = derive_layout(model, jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)), params=structs)
        hidden = [layer.name for layer in layout.hidden]
        unpaired = [n for n in hidden if n not in model.layer_activations(hidden)]
        if unpaired and len(model.activations_used) > 1:
            raise ValueError(f"layer_factors: the pre-activations of {unpaired} cannot be paired with an activation: "
                             f"the model uses {sorted(model.activations_used)} and returns its own pre-activations; "
                             "name each activation's layer where it is applied: act(z, name='layer')")
        qs = tuple(q for q in probes.LAYER_QUANTITIES.values() if with_initial or not q.needs_initial)
        fn = jax.jit(lambda p, p0, xx: measure_layer_factors(model, layout, qs, p, p0, alpha, xx))
        prog = _FactorProgram(apply_fn, layout, qs, fn)
    _FACTOR_PROGRAMS[key] = prog  # most recently used last
    while len(_FACTOR_PROGRAMS) > FACTOR_CACHE_SIZE:
        del _FACTOR_PROGRAMS[next(iter(_FACTOR_PROGRAMS))]
    return prog


def layer_factors(apply_fn, params, x, *, alpha=1.0, initial=None, per_example: bool = False) -> pd.DataFrame:
    """The factors of the backprop product per layer, on the batch `x`, for a model whose
    `apply_fn(params, x)` applies its nonlinearities with `vglab.nn.activation(...)`:
    log_weight_norm (log ||W||_2, natural log), log_deriv_mean (mean log phi'(z)),
    saturated_frac, deriv_mean and preact_abs_mean (the engine's `LAYER_QUANTITIES`, one
    implementation: `loop.measure_layer_factors`), and with `initial` (the parameters at
    the start) weight_dist_init and weight_fro_norm. One row per layer (`layer`,
    `layer_index` in the order of first use by the forward pass). A sum over layers of
    log ||W||_2 and of mean log phi' tells a vanishing weight product from a vanishing
    derivative product.

    Each layer's phi' is that of the activation that recorded its z, so a model may mix
    them (sigmoid gates, tanh candidates). `apply_fn` maps a batch; with
    `per_example=True` it maps one example and vglab vmaps it (Equinox modules: a
    `jax.vmap` inside apply_fn would hide the activations' inputs inside it). A forward
    pass with a `lax.scan` (an RNN) returns its own pre-activations: `apply_fn(params, x,
    capture=False)` returning `(logits, {layer: z})` when capture is True, each activation
    named with its layer (`act(z, name=layer)`) when there are several; recording inside a
    vmap or scan raises an error saying so.

    Off the hot path: one forward pass. The program is compiled once per apply_fn (by
    identity: pass the same function object), parameter tree, shapes/dtypes and alpha,
    and reused by later calls (the last 16 kept). `alpha`: the rescaling g(z) = alpha *
    phi(z / alpha) the model is applied with. Layers without pre-activations (the output
    layer; or no `vglab.nn.activation`) get NaN for the derivative columns."""
    from vglab.nn.activations import check_alpha

    check_alpha(alpha)
    prog = _factor_program(apply_fn, params, x, float(alpha), initial is not None, bool(per_example))
    cols = jax.device_get(prog.fn(params, initial, x))
    out = pd.DataFrame({"layer": list(prog.layout.names), "layer_index": np.arange(len(prog.layout.layers))})
    for c in [c for q in prog.qs for c in q.columns]:
        out[c] = np.asarray(cols[c], np.float64)
    return out
