"""Training: the study's recipe, K configurations at once, measured at every step.

Read top to bottom:
1. `Member` is one configuration (seed, init, alpha, L1/L2, learning rate, swept optimizer
   parameters); a *group* of members shares the model, the optimizer's constants and the
   init families, and is trained as ONE vmapped program.
2. `_member_update` is one optimizer step of one member; `_grid_epoch` scans it over an
   epoch's minibatches for a [seed, config] grid of members (vmapped twice: members with
   one seed share each batch), with the gradient probes and divergence freezing, and
   carries the probes' accumulators from epoch to epoch.
3. `_member_observe` measures a member at a record: validation over the whole test set and
   the layer factors on a fixed probe batch; `_member_end_grads` takes the first/last
   layer's gradients after the last epoch.
4. `train_group` jits the three and loops over epochs on the host, recording every
   `record_every` epochs.

The engine sees a model only through `vglab.nn.model`: `init`/`apply` and the `Layout`
of its parameter pytree (named layers, each a weight and a bias). The built-in networks,
Equinox and Flax models and plain function pairs are all trained by this one loop.

Recipe (the reference study's defaults): Adam lr 1e-3 (eps 1e-7, Keras' value),
softmax cross-entropy on integer labels, batch 32. Each epoch draws a fresh
permutation from the member's seed and drops the last `n_train % batch_size` examples
of it (a static scan length); the dropped ones differ from epoch to epoch.
Members with the same seed share the initial base draw and every batch order, so a
sweep over r, alpha, init scale or learning rate is a controlled comparison.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field, replace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from vglab.nn import activations
from vglab.nn import model as model_mod
from vglab.nn.init import Init, assemble, default_bias_init, normal
from vglab.nn.penalties import penalty
from vglab.train import optim
from vglab.train import probes as probes_mod
from vglab.train.flat import Flat, tree_update
from vglab.train.flat import optimizer_on_flat as on_flat

PARAMS = model_mod.PARAMS
# The `epochs` table's metric columns (DESIGN.md), NaN where not measured.
EPOCH_METRICS = ("train_loss", "train_penalty", "train_total_loss", "train_acc", "val_loss", "val_acc")
ADAM_EPS = optim.DEFAULTS["adam"]["eps"]  # Keras' 1e-7 (vglab.train.optim); the reference study trained with Keras


@dataclass(frozen=True)
class TrainConfig:
    """What every member of a group shares. `learning_rate` is the rate of members that do
    not set their own; `record_every` k records the tables every k epochs (the gradient
    probes still see every step in between); `probe_every` n runs the per-step gradient
    probes on every n-th step only (a cheaper schedule; 1 = every step)."""

    epochs: int = 15
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: optim.Optimizer = field(default_factory=optim.Optimizer)
    probes: tuple[str, ...] = probes_mod.ALL
    probe_every: int = 1
    record_every: int = 1
    probe_batch_size: int = 512  # fixed training examples for the layer factors
    eval_chunk: int = 1024  # test examples per forward pass (memory, not results)
    label_smoothing: float = 0.0  # the training loss's target: (1 - ε)·one-hot + ε/K (Szegedy et al. 2016)

    def __post_init__(self):
        for name in ("epochs", "batch_size", "probe_batch_size", "eval_chunk", "probe_every", "record_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        object.__setattr__(self, "probes", probes_mod.resolve(self.probes))

    def record_epochs(self) -> list[int]:
        """The epochs after which the tables get a row (besides epoch 0): every
        `record_every`-th, and the last."""
        return sorted(set(range(self.record_every, self.epochs + 1, self.record_every)) | {self.epochs})


@dataclass(frozen=True)
class Member:
    """One configuration of a group."""

    seed: int = 0
    weight_init: Init = field(default_factory=lambda: normal(std=1.0))
    bias_init: Init | None = None  # None: `default_bias_init(weight_init)`
    alpha: float = 1.0
    l1: float = 0.0
    l2: float = 0.0
    learning_rate: float | None = None  # None: the config's
    optimizer_args: tuple[tuple[str, float], ...] = ()  # values of the optimizer's traced parameters

    def __post_init__(self):
        activations.check_alpha(self.alpha)
        if not (self.l1 >= 0 and self.l2 >= 0):
            raise ValueError(f"penalty strengths must be >= 0, got l1={self.l1}, l2={self.l2}")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")

    @property
    def bias_law(self) -> Init:
        return self.bias_init or default_bias_init(self.weight_init)


@dataclass
class RunResult:
    """What one member's training produced (tables follow DESIGN.md)."""

    epochs: pd.DataFrame
    grads: pd.DataFrame
    activations: pd.DataFrame
    histograms: np.ndarray | None  # [record, layer, param, bin] counts, or None without grad_hist
    final_grads: dict[str, np.ndarray]  # first and last layer's weight gradient at the end
    diverged_epoch: int | None


# ------------------------------------------------------------------ one member, pure
def cross_entropy(logits, y):
    """Softmax cross-entropy with integer labels, per example: logsumexp minus the label's
    logit, picked with a one-hot mask. Optax's version gathers the label's logit, and a
    gather's gradient is a scatter: one more (slow, serial) kernel per step on a CPU."""
    return jax.nn.logsumexp(logits, -1) - jnp.sum(logits * jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype), -1)


def apply_model(model, flat: Flat, params, x, alpha, capture: bool = False):
    """The model on what `flat.model_params` gave: per run stacked (`Model.apply_runs`) or its pytree."""
    if flat.runs is not None:
        return model.apply_runs(params, x, alpha=alpha, capture=capture)
    return model.apply(params, x, alpha=alpha, capture=capture) if capture else model.apply(params, x, alpha=alpha)


def _data_loss(model, flat: Flat, params, x, y, hyper):
    logits = apply_model(model, flat, params, x, hyper["alpha"])
    return mean_cross_entropy(logits, y, hyper.get("label_smoothing")), jnp.mean(jnp.argmax(logits, -1) == y)


def mean_cross_entropy(logits, y, smoothing=None):
    """`cross_entropy(logits, y).mean()`, with the labels' logits summed over the whole batch
    in one reduction instead of one per example (3 % of a 1x8 group's step on one core;
    the gradient is the same expression). `smoothing` ε (None: the plain loss, the same
    program as before it existed): the cross-entropy against (1 - ε)·one-hot + ε/K."""
    target = jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype)
    if smoothing is not None:
        target = (1 - smoothing) * target + smoothing / logits.shape[-1]
    return jnp.mean(jax.nn.logsumexp(logits, -1)) - jnp.sum(logits * target) / logits.shape[0]


def _objective(model, flat: Flat, params, x, y, hyper):
    data_loss, correct = _data_loss(model, flat, params, x, y, hyper)
    pen = penalty(params, hyper["l1"], hyper["l2"])
    return data_loss + pen, (data_loss, pen, correct)


# Random draws happen on the host with NumPy (PCG64, the same on every machine): the
# draws are cheap, and JAX's threefry generator made every group's program take tens of
# seconds longer to compile on CPU.
def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *stream])


def base_draws(layout: model_mod.Layout, seed: int, w_family: str, b_family: str) -> tuple[np.ndarray, np.ndarray]:
    """A seed's scale-free initial draw: all weights, then all biases, flat (float32)."""
    rng = _rng(seed, 0)

    def draw(family, n):
        if family in ("normal", "orthogonal"):  # orthogonal: made so per weight by `assemble`
            return rng.standard_normal(n, dtype=np.float32)
        if family == "uniform":
            return rng.uniform(-1.0, 1.0, n).astype(np.float32)
        return np.zeros(n, np.float32)  # zeros, or the model's own init (not drawn here)

    n_w, n_b = sum(t.size for t in layout.weights), sum(t.size for t in layout.biases)
    return draw(w_family, n_w), draw(b_family, n_b)


def own_init(model, seed: int):
    """The model's own initialization for `seed`, as NumPy leaves (host side)."""
    params = model.init(jax.random.key(int(seed)))
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(params)]


def initial_params(model, member: Member, layout: model_mod.Layout | None = None):
    """The parameters `member` starts from (what the engine trains from)."""
    layout = layout or model.layout()
    w_law, b_law = member.weight_init, member.bias_law
    w_all, b_all = base_draws(layout, member.seed, w_law.family, b_law.family)
    own = own_init(model, member.seed) if "model" in (w_law.kind, b_law.kind) else None
    params = model.start_from(assemble(layout, w_all, b_all, w_law, b_law, own_leaves=own))
    return jax.tree_util.tree_map(jnp.asarray, params)


def batch_order(seed: int, epoch: int, n_train: int, batch_size: int) -> np.ndarray:
    """[steps, batch] example indices of one epoch: a fresh permutation from the seed,
    its last `n_train % batch_size` entries dropped."""
    n_steps = n_train // batch_size
    return _rng(seed, 1, epoch).permutation(n_train)[: n_steps * batch_size].reshape(n_steps, batch_size).astype(np.int32)


def _grid_init(model, flat: Flat, w_law, b_law, optimizer, hypers, seeds, keep_initial: bool):
    """The [seed, slot] grid's starting state from each seed's base draw (and the model's
    own init where a law asks for it): flat parameter vectors [seed, slot, n_params].
    Built on the host with NumPy (the same float32 products as in a program): compiled,
    these few multiplications took about a second per group."""
    layout = flat.layout
    n_seeds, n_slots = hypers["w_value"].shape
    members = []
    for s, seed in enumerate(seeds):
        w, b = base_draws(layout, seed, w_law.family, b_law.family)
        own = own_init(model, seed) if "model" in (w_law.kind, b_law.kind) else None
        members += [flat.flatten(jax.tree_util.tree_map(np.asarray, model.start_from(
            assemble(layout, w, b, w_law, b_law, hypers["w_value"][s, k], hypers["b_value"][s, k], own))))
            for k in range(n_slots)]
    params = jax.device_put(np.stack(members).reshape(n_seeds, n_slots, flat.size).astype(np.float32))
    state = {"params": params, "opt": _grid(functools.partial(_opt_init, flat, optimizer))(params),
             "alive": jnp.ones((n_seeds, n_slots), bool)}
    if keep_initial:
        state["initial"] = jnp.copy(params)
    return state


def _opt_init(flat: Flat, optimizer, params):
    t = optimizer.transformation()
    return t.init(params) if on_flat(optimizer.name) else t.init(flat.unflatten(params))


def _member_update(model, flat: Flat, optimizer, terms, params, opt_state, hyper, xb, yb):
    """One optimizer step of one member (`params` its flat vector): its new state, [data
    loss, penalty, total, accuracy] on the batch, and its (flat) gradient.

    The data loss is differentiated with respect to the model's pytree and the gradient
    concatenated into a flat vector (one kernel; through the slices of `unflatten`, XLA
    built it from a pad and an add per tensor); the penalty, elementwise, on the flat vector,
    with only the `terms` ("l1", "l2") some member of the group uses."""
    (data_loss, correct), g_data = jax.value_and_grad(
        lambda t: _data_loss(model, flat, t, xb, yb, hyper), has_aux=True)(flat.model_params(params))
    l1, l2 = (hyper[t] if t in terms else None for t in ("l1", "l2"))
    pen, g_pen = jax.value_and_grad(lambda f: penalty(f, l1, l2))(params)
    grads = flat.from_model_params(g_data) + g_pen
    total = data_loss + pen
    transformation = optimizer.transformation({k: hyper["opt/" + k] for k in optimizer.traced})
    if on_flat(optimizer.name):
        updates, new_opt = transformation.update(grads, opt_state, params)
    else:
        updates, new_opt = tree_update(transformation, flat, grads, opt_state, params)
    updates = optim.scale_updates(updates, hyper["lr"])
    return optax.apply_updates(params, updates), new_opt, jnp.stack([data_loss, pen, total, correct]), grads


def _zero_acc(flat: Flat, config, grid):
    """The accumulators a record's epochs add to (per tensor: in storage order)."""
    grad_qs, _ = probes_mod.select(config.probes)
    return {
        "metrics": jnp.zeros(grid + (4,)),  # data loss, penalty, total loss, accuracy
        "steps": jnp.zeros(grid, jnp.int32),
        "probed": jnp.zeros(grid, jnp.int32),
        "grads": {q.name: q.zeros(grid, flat) for q in grad_qs},
    }


def _grid_epoch(model, flat: Flat, config, optimizer, terms, state, acc, hyper, order, x, y):
    """One epoch of a [seed, config] grid of members, adding to the accumulators `acc`.

    Members that share a seed share every minibatch, so the inner vmap multiplies one
    batch by all their weights in one matrix product instead of one per member. The
    gradient probes then see the whole grid's gradients at once (`probes.StepGrads`)."""
    grad_qs, _ = probes_mod.select(config.probes)  # order: [step, seed, batch]
    columns = probes_mod.step_columns(grad_qs, flat)
    needs_updates = any(q.needs_updates for q in grad_qs)
    update_grid = jax.vmap(jax.vmap(functools.partial(_member_update, model, flat, optimizer, terms),
                                    in_axes=(0, 0, 0, None, None)))
    every = config.probe_every

    def probe_of(grads, params, new_params):
        return probes_mod.StepGrads.of_flat(grads, flat, n_lead=2, columns=columns,
                                            params=params if needs_updates else None,
                                            updates=new_params - params if needs_updates else None)

    def step(carry, xs):
        params, opt_state, alive, acc = carry
        i, idx = xs
        new_params, new_opt, metrics, grads = update_grid(params, opt_state, hyper, x[idx], y[idx])
        if every == 1:
            probe = probe_of(grads, params, new_params)
            finite_grads = jnp.isfinite(jnp.sum(probe.column("sum_sq"), -1))
        else:
            probe = None
            finite_grads = jnp.isfinite(jnp.sum(grads * grads, -1))
        # A member whose loss or gradient stops being finite keeps its last finite state
        # (finite gradients give finite steps, so the parameters stay finite too).
        ok = alive & jnp.isfinite(metrics[..., 2]) & finite_grads
        new_acc = {"metrics": acc["metrics"] + metrics, "steps": acc["steps"] + 1, "probed": acc["probed"],
                   "grads": acc["grads"]}
        if every == 1:
            new_acc["probed"] = acc["probed"] + 1
            new_acc["grads"] = {q.name: q.update(acc["grads"][q.name], probe) for q in grad_qs}
        elif grad_qs:
            def probed(a):
                p = probe_of(grads, params, new_params)
                return {q.name: q.update(a[q.name], p) for q in grad_qs}

            new_acc["grads"] = jax.lax.cond(i % every == 0, probed, lambda a: a, acc["grads"])
            new_acc["probed"] = acc["probed"] + (i % every == 0).astype(jnp.int32)
        keep = functools.partial(_where_members, ok)
        return (keep(new_params, params), keep(new_opt, opt_state), ok, keep(new_acc, acc)), None

    carry = (state["params"], state["opt"], state["alive"], acc)
    (params, opt_state, alive, acc), _ = jax.lax.scan(step, carry, (jnp.arange(order.shape[0]), order))
    return {**state, "params": params, "opt": opt_state, "alive": alive}, acc


def _where_members(ok, new, old):
    """`new` for the members where `ok` ([seed, config]), else `old`, leaf by leaf."""
    def pick(a, b):
        return jnp.where(ok.reshape(ok.shape + (1,) * (a.ndim - ok.ndim)), a, b)

    return jax.tree_util.tree_map(pick, new, old)


def _finalize(flat: Flat, config, acc):
    """Per-record means from the accumulators: [seed, config] metrics and per-tensor
    probe results [seed, config, n_tensors, ...] (in the layout's tensor order)."""
    grad_qs, _ = probes_mod.select(config.probes)
    n = acc["steps"].astype(jnp.float32)[..., None]  # 0 once diverged: every mean below is then NaN
    metrics = acc["metrics"] / n
    out = {"train_loss": metrics[..., 0], "train_penalty": metrics[..., 1],
           "train_total_loss": metrics[..., 2], "train_acc": metrics[..., 3]}
    n_probed = acc["probed"].astype(jnp.float32)[..., None]
    out.update(probes_mod.finalize(grad_qs, acc["grads"], n_probed, flat, n_lead=2))
    return out


def _member_observe(model, flat: Flat, config, params, initial, hyper, x_probe, y_probe, x_test, y_test):
    _, layer_qs = probes_mod.select(config.probes)
    layout, alpha = flat.layout, hyper["alpha"]
    params = flat.model_params(params)
    initial = flat.model_params(initial) if initial is not None else None
    out = {}

    # Validation over the whole test set, in chunks (padding masked out).
    chunk = min(config.eval_chunk, x_test.shape[0])
    n_chunks = -(-x_test.shape[0] // chunk)
    pad = n_chunks * chunk - x_test.shape[0]
    xs = jnp.concatenate([x_test, jnp.zeros((pad,) + x_test.shape[1:], x_test.dtype)]).reshape((n_chunks, chunk) + x_test.shape[1:])
    ys = jnp.concatenate([y_test, jnp.zeros((pad,), y_test.dtype)]).reshape(n_chunks, chunk)
    mask = (jnp.arange(n_chunks * chunk) < x_test.shape[0]).reshape(n_chunks, chunk)

    def eval_chunk(args):
        xc, yc, mc = args
        logits = apply_model(model, flat, params, xc, alpha)
        loss = cross_entropy(logits, yc)
        return jnp.sum(loss * mc), jnp.sum((jnp.argmax(logits, -1) == yc) * mc)

    losses, corrects = jax.lax.map(eval_chunk, (xs, ys, mask))
    out["val_loss"] = jnp.sum(losses) / x_test.shape[0]
    out["val_acc"] = jnp.sum(corrects) / x_test.shape[0]
    if layer_qs and flat.runs is not None:
        out.update(factors_of_groups(layout, layer_qs, run_factor_groups(model, flat, params, initial, alpha, x_probe),
                                     alpha))
    elif layer_qs:
        out.update(measure_layer_factors(model, layout, layer_qs, params, initial, alpha, x_probe))
    return out


@dataclass(frozen=True)
class FactorGroup:
    """Layers whose factors are measured as one stacked batch: their indices in the layout,
    their weights [n, ...] (None: no matrix weight), the weights at initialization, their
    pre-activations [n, ...] and activation (None: the model gives none)."""

    layers: tuple[int, ...]
    w: jax.Array | None
    w0: jax.Array | None
    z: jax.Array | None
    activation: str | None


def measure_layer_factors(model, layout, layer_qs, params, initial, alpha, x_probe) -> dict:
    """The factors of the backprop product on the probe batch, one number per layer per
    quantity. Layers of equal shapes (a deep MLP's 19 hidden 8x8 layers) are measured as
    one stacked batch: each quantity is traced and compiled once per shape, not once per
    layer. Quantities that need phi' are NaN where the model gives no pre-activations or
    no activation name; those of the weight are NaN for layers without a matrix weight.
    Each layer's phi' is its own activation's (`model.layer_activations`: a model may mix
    them; most have one, `model.activation`)."""
    acts = model.layer_activations(layout.names)
    preacts = {}
    if acts and layout.hidden:
        _, preacts = model.apply(params, x_probe, alpha=alpha, capture=True)
        preacts = model_mod.named_preactivations(layout.names, preacts)
        acts = model.layer_activations(layout.names)  # as recorded by the trace just made
    leaves = layout.leaves(params)
    initial_leaves = layout.leaves(initial) if initial is not None else None
    same_shape: dict[tuple, list[int]] = {}
    for i, layer in enumerate(layout.layers):
        w_shape = layer.weight.shape if layer.weight is not None and len(layer.weight.shape) >= 2 else None
        act = acts.get(layer.name) if layer.name in preacts else None
        z_shape = tuple(preacts[layer.name].shape) if act is not None else None
        same_shape.setdefault((w_shape, z_shape, act), []).append(i)

    def stack(arrays, idx):
        return jnp.stack([arrays[i] for i in idx])

    groups = []
    for (w_shape, z_shape, act), idx in same_shape.items():
        weights = [layout.layers[i].weight.leaf if w_shape is not None else None for i in idx]
        groups.append(FactorGroup(
            tuple(idx), stack(leaves, weights) if w_shape is not None else None,
            stack(initial_leaves, weights) if w_shape is not None and initial_leaves is not None else None,
            jnp.stack([preacts[layout.layers[i].name] for i in idx]) if z_shape is not None else None, act))
    return factors_of_groups(layout, layer_qs, groups, alpha)


def run_factor_groups(model, flat: Flat, params, initial, alpha, x_probe) -> list[FactorGroup]:
    """`FactorGroup`s of a model that takes its parameters per run (`flat.runs`): each run is
    a group, its stacks as they are (stacking per-layer slices again was one copy kernel
    per layer under the engine's vmap)."""
    layout = flat.layout
    acts = model.layer_activations(layout.names)
    run_preacts = apply_model(model, flat, params, x_probe, alpha, capture=True)[1] if acts else ()
    index = {name: i for i, name in enumerate(layout.names)}
    groups = []
    for r, run in enumerate(model.layer_runs):
        z = run_preacts[r] if r < len(run_preacts) else None
        groups.append(FactorGroup(tuple(index[name] for name in run), params[r]["w"],
                                  initial[r]["w"] if initial is not None else None, z,
                                  acts.get(run[0]) if z is not None else None))
    return groups


def factors_of_groups(layout, layer_qs, groups: list[FactorGroup], alpha) -> dict:
    """{column: [layer]} of the layer quantities `layer_qs` over `groups` (every layer once)."""
    per_group = []
    for g in groups:
        dphi = log_dphi = None
        if g.z is not None:
            phi = activations.get(g.activation)
            dphi, log_dphi = phi.deriv(g.z / alpha), phi.log_deriv(g.z / alpha)  # g'(z) = phi'(z / alpha)
        cols = {}
        for q in layer_qs:
            usable = (g.z is not None or not q.needs_activation) and (g.w is not None or q.needs_activation) \
                and (g.w0 is not None or not q.needs_initial)
            if usable:
                cols.update(jax.vmap(q.compute)(g.z, dphi, log_dphi, g.w, g.w0) if q.needs_initial
                            else jax.vmap(q.compute)(g.z, dphi, log_dphi, g.w))
            else:
                cols.update({c: jnp.full(len(g.layers), jnp.nan) for c in q.columns})
        per_group.append(cols)
    # One concatenation per column, then one gather when the groups are not in layer order:
    # a slice per layer and column was one kernel each under the engine's vmap.
    order = np.argsort(np.concatenate([g.layers for g in groups]), kind="stable")
    identity = bool(np.array_equal(order, np.arange(len(order))))
    return {col: (lambda v: v if identity else v[order])(jnp.concatenate([cols[col] for cols in per_group]))
            for col in per_group[0]}


def _member_end_grads(model, flat: Flat, params, hyper, x_probe, y_probe):
    """The first and last layer's full weight gradient on the probe batch, for the
    distribution plots. Its own program, run once after the last epoch: a backward pass
    over the probe batch was most of the observe program's cost (a CNN on digits: 2/3),
    and as a branch of it (a `cond` under vmap) it was traced several times over."""
    g = jax.grad(lambda p: _objective(model, flat, p, x_probe, y_probe, hyper)[0])(flat.model_params(params))
    leaves = flat.model_leaves(g)
    first, last = _end_layers(flat.layout)
    return leaves[first.weight.leaf], leaves[last.weight.leaf]


def _end_layers(layout):
    with_weight = [layer for layer in layout.layers if layer.weight is not None]
    return with_weight[0], with_weight[-1]


# --------------------------------------------------------------- the vmapped group
def _grid(f, **kw):
    return jax.vmap(jax.vmap(f, **kw), **kw)


@functools.lru_cache(maxsize=32)
def _compiled(model, flat: Flat, config: TrainConfig, terms: tuple[str, ...] = ("l1", "l2")):
    """jit of epoch, observe and end_grads over a [seed, config] grid (cached: the init
    families do not enter them, so groups that differ only in those share the programs).
    `terms`: the penalty terms the epoch computes (those some member uses)."""
    optimizer = config.optimizer
    epoch = jax.jit(functools.partial(_grid_epoch, model, flat, config, optimizer, terms), donate_argnums=(0, 1))
    member_observe = _grid(functools.partial(_member_observe, model, flat, config),
                           in_axes=(0, 0, 0, None, None, None, None))

    def observe(params, initial, acc, hyper, x_probe, y_probe, x_test, y_test):
        return {**_finalize(flat, config, acc), **member_observe(params, initial, hyper, x_probe, y_probe, x_test, y_test)}

    end_grads = jax.jit(_grid(functools.partial(_member_end_grads, model, flat), in_axes=(0, 0, None, None)))
    return epoch, jax.jit(observe), end_grads


def penalty_terms(members: list[Member]) -> tuple[str, ...]:
    """The penalty terms ("l1", "l2") some member uses: the only ones a group's program computes."""
    return tuple(t for t in ("l1", "l2") if any(getattr(m, t) > 0 for m in members))


def group_key(member: Member) -> tuple[str, str]:
    """Members with equal keys can share a vmapped group (with the same model and config)."""
    return member.weight_init.kind, member.bias_law.kind


def _hypers(members: list[Member], config: TrainConfig) -> dict:
    keys = {group_key(m) for m in members}
    if len(keys) != 1:
        raise ValueError(f"a group's members must share their init families; got {sorted(keys)}. Split them into groups.")
    traced = config.optimizer.traced
    for m in members:
        given = {k for k, _ in m.optimizer_args}
        if given != set(traced):
            raise ValueError(f"every member must give the optimizer's traced parameters {list(traced)}; "
                             f"a member gives {sorted(given)}")

    def value(law: Init) -> float:
        return 1.0 if law.value is None or law.fan_scaled else law.value

    out = {
        "w_value": np.array([value(m.weight_init) for m in members], np.float32),
        "b_value": np.array([value(m.bias_law) for m in members], np.float32),
        "alpha": np.array([m.alpha for m in members], np.float32),
        "l1": np.array([m.l1 for m in members], np.float32),
        "l2": np.array([m.l2 for m in members], np.float32),
        "lr": np.array([m.learning_rate or config.learning_rate for m in members], np.float32),
    }
    for k in traced:
        out["opt/" + k] = np.array([dict(m.optimizer_args)[k] for m in members], np.float32)
    if config.label_smoothing:  # absent at 0: the default program is unchanged
        out["label_smoothing"] = np.full(len(members), config.label_smoothing, np.float32)
    return out


def _seed_grid(members: list[Member], min_slots: int = 1) -> np.ndarray:
    """Member indices arranged [seed, slot]; a seed with fewer members (or fewer than
    `min_slots`) repeats its last one (the copy is trained and discarded) so the grid is
    rectangular."""
    by_seed: dict[int, list[int]] = {}
    for k, m in enumerate(members):
        by_seed.setdefault(int(m.seed), []).append(k)
    width = max(min_slots, *(len(v) for v in by_seed.values()))
    return np.array([v + [v[-1]] * (width - len(v)) for v in by_seed.values()])


def _probe_subset(x, y, size):
    idx = np.sort(np.random.default_rng(0).permutation(x.shape[0])[: min(size, x.shape[0])])
    return x[idx], y[idx]


def check_group(model, layout, arrays, members: list[Member], config: TrainConfig) -> None:
    """What must hold before a group can train; each message says what to change."""
    if not members:
        raise ValueError("a group needs at least one member")
    shape = tuple(arrays.x_train.shape[1:])
    in_shape = getattr(model, "in_shape", None)
    if in_shape is not None and shape != tuple(in_shape):
        raise ValueError(
            f"the data's example shape {shape} does not fit {model.name} "
            f"(expects {tuple(in_shape)}); build the network from the prepared data's shape"
        )
    if arrays.x_train.shape[0] < config.batch_size:
        raise ValueError(f"{arrays.x_train.shape[0]} training examples are fewer than one batch of {config.batch_size}; "
                         "lower batch_size or use more training data")
    if not model.accepts_alpha and any(m.alpha != 1 for m in members):
        raise ValueError(f"{model.name} does not take alpha (the rescaled activation); build it with "
                         "vglab.nn.activation(...) or give its apply an alpha argument, or drop the alpha sweep")
    if not layout.weights:
        raise ValueError(f"{model.name} has no weight tensors; a model needs at least one layer with a weight")


def train_group(model, arrays, members: list[Member], config: TrainConfig = TrainConfig(), on_epoch=None,
                min_slots: int = 1):
    """Train `members` on `arrays` (a `vglab.data.Arrays`) as one vectorized program.

    `model` is any `vglab.nn.model.Model` (a built-in network or an adapter). `on_epoch(epoch, metrics)`
    is called after every recorded epoch (0 = at initialization) with per-member numpy arrays, e.g. for a
    progress bar. `min_slots` pads every seed's row of the grid to at least that many members (so groups
    of different sizes can share one compiled program). Returns one `RunResult` per member."""
    x, y = jnp.asarray(arrays.x_train), jnp.asarray(arrays.y_train, jnp.int32)
    x_test, y_test = jnp.asarray(arrays.x_test), jnp.asarray(arrays.y_test, jnp.int32)
    x_probe, y_probe = _probe_subset(x, y, config.probe_batch_size)
    layout = model.layout(x_probe)
    check_group(model, layout, arrays, members, config)
    slots = _seed_grid(members, min_slots)
    hypers_np = {k: v[slots] for k, v in _hypers(members, config).items()}  # [seed, slot]
    hypers = {k: jnp.asarray(v) for k, v in hypers_np.items()}
    seeds = [int(members[row[0]].seed) for row in slots]
    w_law, b_law = (Init(kind) for kind in group_key(members[0]))
    steps = x.shape[0] // config.batch_size
    # The number of epochs, records and learning rate are host-side: groups that differ
    # only in them share programs (a schedule needs the run's length, so it enters).
    optimizer = replace(config.optimizer, total_steps=steps * config.epochs
                        if config.optimizer.schedule.name != "constant" else None)
    program = replace(config, epochs=1, record_every=1, learning_rate=1e-3, optimizer=optimizer)
    flat = _storage(model, layout, steps * config.epochs, slots.size)
    epoch_fn, observe, end_grads = _compiled(model, flat, program, penalty_terms(members))
    _, layer_qs = probes_mod.select(config.probes)
    keep_initial = any(q.needs_initial for q in layer_qs)
    where = [tuple(np.argwhere(slots == k)[0]) for k in range(len(members))]  # member -> (seed, slot)

    def per_member(record: dict) -> dict:
        return {key: np.stack([v[i, j] for i, j in where]) if np.ndim(v) >= 2 else v for key, v in record.items()}

    def measure(state, acc, epoch: int) -> dict:
        obs = observe(state["params"], state.get("initial"), acc, hypers, x_probe, y_probe, x_test, y_test)
        if epoch == config.epochs:
            obs["final_grad_first"], obs["final_grad_last"] = end_grads(state["params"], hypers, x_probe, y_probe)
        return {**obs, "alive": state["alive"]}

    history = []  # per record: dict of numpy arrays with leading member axis

    def keep(epoch: int, state, acc, t0: float) -> None:
        record = jax.device_get(measure(state, acc, epoch))
        record["seconds"], record["epoch"] = time.perf_counter() - t0, epoch
        history.append(per_member(record))
        if on_epoch:
            on_epoch(epoch, history[-1])

    state = _grid_init(model, flat, w_law, b_law, optimizer, hypers_np, seeds, keep_initial)
    keep(0, state, _zero_acc(flat, program, slots.shape), time.perf_counter())
    done = 0
    for e in config.record_epochs():
        t0 = time.perf_counter()
        acc = _zero_acc(flat, program, slots.shape)
        for epoch in range(done + 1, e + 1):
            order = np.stack([batch_order(seed, epoch, x.shape[0], config.batch_size) for seed in seeds], 1)
            state, acc = epoch_fn(state, acc, hypers, jnp.asarray(order), x, y)
        done = e
        keep(e, state, acc, t0)
    return [_member_result(layout, history, k) for k in range(len(members))]


# ------------------------------------------------------------ host-side tables
# When scanning a model's runs of identical layers pays (`scan_pays`), measured on a 2-core
# CPU (benchmarks/scan_cost.py: the vmapped gradient of 9 members; whole groups): unrolled, each
# layer costs about 1.2 CPU-s of compiling over a group's three programs (a 50x8 group:
# 78 -> 20 s scanned); scanned, each step costs about 10 us more per layer (the loop) and
# 1.1e-8 s per parameter per member and layer (a run's weights are copied layer-major for
# the scan and back: 50x128, 9 members: 100 -> 180 ms per step).
SCAN_COMPILE_S_PER_LAYER = 1.2
SCAN_STEP_S_PER_LAYER = 1e-5
SCAN_STEP_S_PER_PARAM = 1.1e-8


def _storage(model, layout, steps: int, members: int) -> Flat:
    """Where a group keeps its parameters (`Flat`), with the model's runs handed over stacked
    when scanning them pays (`scan_pays`)."""
    flat = Flat.of(layout, swap_matrices=model.weight_layout == "in_out")
    runs = flat.with_runs(model.layer_runs)
    return runs if runs.runs is not None and scan_pays(runs, steps, members) else flat


@dataclass(frozen=True)
class ScanCost:
    """What scanning a model's runs (`flat.runs`) changes for a group: the layers it no
    longer compiles one by one (each run's beyond its first), the compile seconds that saves
    and the seconds each step costs more."""

    scanned_layers: int
    saved_s: float
    step_s: float


def scan_cost(flat: Flat, members: int) -> ScanCost:
    """`ScanCost` of `flat.runs` for a group of `members` (constants above)."""
    scanned, step = 0, 0.0
    for run in flat.runs or ():
        n = len(run[0][1])
        if n >= 2:
            per_layer = sum(math.prod(flat.shapes[idx[0]]) for _, idx in run)
            scanned += n - 1
            step += n * (SCAN_STEP_S_PER_LAYER + members * per_layer * SCAN_STEP_S_PER_PARAM)
    return ScanCost(scanned, scanned * SCAN_COMPILE_S_PER_LAYER, step)


def scan_pays(flat: Flat, steps: int, members: int) -> bool:
    """Whether a group of `members` training for `steps` steps is faster with its runs
    scanned (`flat.runs`: compiled once per run) than unrolled (compiled once per layer):
    digits' short runs are mostly compiling, MNIST's wide deep nets mostly stepping."""
    cost = scan_cost(flat, members)
    return cost.scanned_layers > 0 and cost.saved_s > steps * cost.step_s


def _member_result(layout: model_mod.Layout, history: list[dict], k: int) -> RunResult:
    alive = np.array([h["alive"][k] for h in history])
    dead = np.flatnonzero(~alive)
    diverged_epoch = int(history[dead[0]]["epoch"]) if dead.size else None

    epoch_rows, grad_rows, act_rows, hists = [], [], [], []
    layer_cols = [c for q in probes_mod.LAYER_QUANTITIES.values() for c in q.columns if c in history[0]]
    grad_cols = probes_mod.grad_columns(history[-1])
    tensors = layout.tensors
    n_layers = len(layout.layers)
    for r, h in enumerate(history):
        e = int(h["epoch"])
        row = {"epoch": e, "seconds": float(h["seconds"]), "diverged": bool(not alive[r])}
        for col in EPOCH_METRICS:
            row[col] = float(h[col][k]) if col in h else np.nan  # training means are NaN at epoch 0
        epoch_rows.append(row)
        for i, layer in enumerate(layout.layers):
            act_rows.append({"epoch": e, "layer": layer.name, "layer_index": i,
                             **{c: float(h[c][k][i]) for c in layer_cols}})
        if e == 0:
            continue
        for t, tensor in enumerate(tensors):
            grad_rows.append({"epoch": e, "layer": tensor.layer, "layer_index": tensor.layer_index,
                              "param": tensor.param, **{c: float(h[c][k][t]) for c in grad_cols}})
        if "grad_hist" in h:
            per_tensor = h["grad_hist"][k]
            counts = np.zeros((n_layers, len(PARAMS), per_tensor.shape[-1]), per_tensor.dtype)
            for t, tensor in enumerate(tensors):
                counts[tensor.layer_index, PARAMS.index(tensor.param)] = per_tensor[t]
            hists.append(counts)
    last = history[-1]
    first, final = _end_layers(layout)
    return RunResult(
        epochs=pd.DataFrame(epoch_rows),
        grads=pd.DataFrame(grad_rows, columns=["epoch", "layer", "layer_index", "param", *grad_cols]),
        activations=pd.DataFrame(act_rows),
        histograms=np.stack(hists) if hists else None,
        final_grads={first.name: np.asarray(last["final_grad_first"][k]),
                     final.name: np.asarray(last["final_grad_last"][k])},
        diverged_epoch=diverged_epoch,
    )
