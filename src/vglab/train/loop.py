"""Training: the study's recipe, K configurations at once, measured at every step.

Read top to bottom:
1. `Member` is one configuration (seed, init, alpha, L1/L2); a *group* of members shares
   the network and the init families and is trained as ONE vmapped program.
2. `_member_step` is one Adam step of one member with its gradient probes and divergence
   freezing; `_grid_epoch` scans it over an epoch's minibatches for a [seed, config]
   grid of members (vmapped twice: members with one seed share each batch).
3. `_member_observe` measures a member after an epoch: validation over the whole test
   set and the layer factors on a fixed probe batch; `_member_end_grads` takes the
   first/last-layer gradients after the last one.
4. `train_group` jits the three and loops over epochs on the host.

Recipe (the reference study's defaults): Adam lr 1e-3 (eps 1e-7, Keras' value),
softmax cross-entropy on integer labels, batch 32. Each epoch draws a fresh
permutation from the member's seed and drops the last `n_train % batch_size` examples
of it (a static scan length); the dropped ones differ from epoch to epoch.
Members with the same seed share the initial base draw and every batch order, so a
sweep over r, alpha or init scale is a controlled comparison.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field, replace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from vglab.nn import activations
from vglab.nn.init import Init, normal
from vglab.nn.networks import Network
from vglab.nn.penalties import penalty
from vglab.train import probes as probes_mod

PARAMS = ("w", "b")
ADAM_EPS = 1e-7  # Keras' default; the reference study trained with Keras


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 15
    batch_size: int = 32
    learning_rate: float = 1e-3
    probes: tuple[str, ...] = probes_mod.ALL
    probe_batch_size: int = 512  # fixed training examples for the layer factors
    eval_chunk: int = 1024  # test examples per forward pass (memory, not results)

    def __post_init__(self):
        for name in ("epochs", "batch_size", "probe_batch_size", "eval_chunk"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        object.__setattr__(self, "probes", tuple(probes_mod.ALL if self.probes in ("all", ("all",)) else self.probes))
        probes_mod.select(self.probes)  # validates names


def default_bias_init(weight_init: Init) -> Init:
    """Biases follow the weights' law (as the reference study did), except for the
    fan-scaled laws, whose standard (Keras) companion is zero biases."""
    return Init("zeros", 0.0) if weight_init.fan_scaled else weight_init


@dataclass(frozen=True)
class Member:
    """One configuration of a group."""

    seed: int = 0
    weight_init: Init = field(default_factory=lambda: normal(std=1.0))
    bias_init: Init | None = None  # None: `default_bias_init(weight_init)`
    alpha: float = 1.0
    l1: float = 0.0
    l2: float = 0.0

    def __post_init__(self):
        activations.check_alpha(self.alpha)
        if not (self.l1 >= 0 and self.l2 >= 0):
            raise ValueError(f"penalty strengths must be >= 0, got l1={self.l1}, l2={self.l2}")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")

    @property
    def bias_law(self) -> Init:
        return self.bias_init or default_bias_init(self.weight_init)


@dataclass
class RunResult:
    """What one member's training produced (tables follow DESIGN.md)."""

    epochs: pd.DataFrame
    grads: pd.DataFrame
    activations: pd.DataFrame
    histograms: np.ndarray | None  # [epoch, layer, param, bin] counts, or None without grad_hist
    final_grads: dict[str, np.ndarray]  # first and last layer's weight gradient at the end
    diverged_epoch: int | None


# ------------------------------------------------------------------ one member, pure
def _objective(network, params, x, y, hyper):
    logits = network.apply(params, x, hyper["alpha"])
    data_loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    pen = penalty(params, hyper["l1"], hyper["l2"])
    correct = jnp.mean(jnp.argmax(logits, -1) == y)
    return data_loss + pen, (data_loss, pen, correct)


# Random draws happen on the host with NumPy (PCG64, the same on every machine): the
# draws are cheap, and JAX's threefry generator made every group's program take tens of
# seconds longer to compile on CPU.
def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *stream])


def base_draws(network: Network, seed: int, w_family: str, b_family: str) -> tuple[np.ndarray, np.ndarray]:
    """A seed's scale-free initial draw: all weights, then all biases, flat (float32)."""
    rng = _rng(seed, 0)

    def draw(family, n):
        if family == "normal":
            return rng.standard_normal(n, dtype=np.float32)
        if family == "uniform":
            return rng.uniform(-1.0, 1.0, n).astype(np.float32)
        return np.zeros(n, np.float32)

    return draw(w_family, network.n_weights), draw(b_family, network.n_biases)


def initial_params(network: Network, member: "Member") -> dict:
    """The parameters `member` starts from (what the engine trains from)."""
    w_all, b_all = base_draws(network, member.seed, member.weight_init.family, member.bias_law.family)
    return network.assemble(jnp.asarray(w_all), jnp.asarray(b_all), member.weight_init, member.bias_law)


def batch_order(seed: int, epoch: int, n_train: int, batch_size: int) -> np.ndarray:
    """[steps, batch] example indices of one epoch: a fresh permutation from the seed,
    its last `n_train % batch_size` entries dropped."""
    n_steps = n_train // batch_size
    return _rng(seed, 1, epoch).permutation(n_train)[: n_steps * batch_size].reshape(n_steps, batch_size).astype(np.int32)


def _grid_init(network, w_law, b_law, optimizer, hypers, draws):
    """The [seed, slot] grid's starting state from each seed's (weights, biases) base draw.
    Built on the host with NumPy (the same float32 products as in a program): compiled,
    these few multiplications took about a second per group."""
    n_seeds, n_slots = hypers["w_value"].shape
    members = [network.assemble(w, b, w_law, b_law, hypers["w_value"][s, k], hypers["b_value"][s, k])
               for s, (w, b) in enumerate(draws) for k in range(n_slots)]
    params = jax.device_put(jax.tree_util.tree_map(
        lambda *xs: np.stack(xs).reshape((n_seeds, n_slots) + xs[0].shape), *members))
    return {"params": params, "opt": _grid(optimizer.init)(params), "alive": jnp.ones((n_seeds, n_slots), bool)}


def _member_update(network, optimizer, params, opt_state, hyper, xb, yb):
    """One Adam step of one member: its new state, [data loss, penalty, total, accuracy]
    on the batch, and its gradient."""
    (total, (data_loss, pen, correct)), grads = jax.value_and_grad(
        functools.partial(_objective, network), has_aux=True
    )(params, xb, yb, hyper)
    updates, new_opt = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_opt, jnp.stack([data_loss, pen, total, correct]), grads


def _grid_epoch(network, config, optimizer, state, hyper, order, x, y):
    """One epoch of a [seed, config] grid of members.

    Members that share a seed share every minibatch, so the inner vmap multiplies one
    batch by all their weights in one matrix product instead of one per member. The
    gradient probes then see the whole grid's gradients at once (`probes.StepGrads`)."""
    grad_qs, _ = probes_mod.select(config.probes)  # order: [step, seed, batch]
    grid = state["alive"].shape
    n_tensors = len(PARAMS) * len(network.layers)
    acc0 = {
        "metrics": jnp.zeros(grid + (4,)),  # data loss, penalty, total loss, accuracy
        "steps": jnp.zeros(grid, jnp.int32),
        "grads": {q.name: q.zeros(grid, n_tensors) for q in grad_qs},
    }
    update_grid = jax.vmap(jax.vmap(functools.partial(_member_update, network, optimizer), in_axes=(0, 0, 0, None, None)))

    def step(carry, idx):
        params, opt_state, alive, acc = carry
        new_params, new_opt, metrics, grads = update_grid(params, opt_state, hyper, x[idx], y[idx])
        probe = probes_mod.StepGrads((grads[layer.name][p] for layer in network.layers for p in PARAMS), n_lead=2)
        # A member whose loss or gradient stops being finite keeps its last finite state
        # (finite gradients give finite Adam steps, so the parameters stay finite too).
        ok = alive & jnp.isfinite(metrics[..., 2]) & jnp.isfinite(jnp.sum(probe.column("sum_sq"), -1))
        new_acc = {
            "metrics": acc["metrics"] + metrics,
            "steps": acc["steps"] + 1,
            "grads": {q.name: q.update(acc["grads"][q.name], probe) for q in grad_qs},
        }
        keep = functools.partial(_where_members, ok)
        return (keep(new_params, params), keep(new_opt, opt_state), ok, keep(new_acc, acc)), None

    carry = (state["params"], state["opt"], state["alive"], acc0)
    (params, opt_state, alive, acc), _ = jax.lax.scan(step, carry, order)
    return {"params": params, "opt": opt_state, "alive": alive}, _finalize_epoch(network, grad_qs, acc)


def _where_members(ok, new, old):
    """`new` for the members where `ok` ([seed, config]), else `old`, leaf by leaf."""
    def pick(a, b):
        return jnp.where(ok.reshape(ok.shape + (1,) * (a.ndim - ok.ndim)), a, b)

    return jax.tree_util.tree_map(pick, new, old)


def _finalize_epoch(network, grad_qs, acc):
    n = acc["steps"].astype(jnp.float32)[..., None]  # 0 once diverged: every mean below is then NaN
    metrics = acc["metrics"] / n
    out = {"train_loss": metrics[..., 0], "train_penalty": metrics[..., 1],
           "train_total_loss": metrics[..., 2], "train_acc": metrics[..., 3]}
    grid, n_layers = acc["steps"].shape, len(network.layers)
    for q in grad_qs:
        for key, per_tensor in q.finalize(acc["grads"][q.name], n).items():
            out[key] = per_tensor.reshape(grid + (n_layers, len(PARAMS)) + per_tensor.shape[len(grid) + 1:])  # [.., layer, param, ...]
    return out


def _member_observe(network, config, params, hyper, x_probe, y_probe, x_test, y_test):
    _, layer_qs = probes_mod.select(config.probes)
    alpha = hyper["alpha"]
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
        logits = network.apply(params, xc, alpha)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, yc)
        return jnp.sum(loss * mc), jnp.sum((jnp.argmax(logits, -1) == yc) * mc)

    losses, corrects = jax.lax.map(eval_chunk, (xs, ys, mask))
    out["val_loss"] = jnp.sum(losses) / x_test.shape[0]
    out["val_acc"] = jnp.sum(corrects) / x_test.shape[0]

    # The factors of the backprop product on the probe batch. Layers of equal shapes
    # (a deep MLP's 19 hidden 8x8 layers) are measured as one stacked batch: each quantity
    # is traced and compiled once per shape, not once per layer.
    if layer_qs:
        _, preacts = network.apply(params, x_probe, alpha, capture=True)
        phi = activations.get(network.activation)
        same_shape: dict[tuple, list[int]] = {}
        for i, layer in enumerate(network.layers):
            z_shape = preacts[layer.name].shape if layer.hidden else None
            same_shape.setdefault((params[layer.name]["w"].shape, z_shape), []).append(i)
        per_layer = {}
        for idx in same_shape.values():
            hidden = network.layers[idx[0]].hidden
            w = jnp.stack([params[network.layers[i].name]["w"] for i in idx])
            z = dphi = log_dphi = None
            if hidden:
                z = jnp.stack([preacts[network.layers[i].name] for i in idx])
                dphi, log_dphi = phi.deriv(z / alpha), phi.log_deriv(z / alpha)  # g'(z) = phi'(z / alpha)
            cols = {}
            for q in layer_qs:
                if hidden or not q.needs_activation:
                    cols.update(jax.vmap(q.compute)(z, dphi, log_dphi, w))
                else:
                    cols.update({c: jnp.full(len(idx), jnp.nan) for c in q.columns})
            for j, i in enumerate(idx):
                per_layer[i] = {c: v[j] for c, v in cols.items()}
        for col in per_layer[0]:
            out[col] = jnp.stack([per_layer[i][col] for i in range(len(network.layers))])  # [layer]
    return out


def _member_end_grads(network, params, hyper, x_probe, y_probe):
    """The first and last layer's full weight gradient on the probe batch, for the
    distribution plots. Its own program, run once after the last epoch: a backward pass
    over the probe batch was most of the observe program's cost (a CNN on digits: 2/3),
    and as a branch of it (a `cond` under vmap) it was traced several times over."""
    g = jax.grad(lambda p: _objective(network, p, x_probe, y_probe, hyper)[0])(params)
    return g[network.layers[0].name]["w"], g[network.layers[-1].name]["w"]


# --------------------------------------------------------------- the vmapped group
def _optimizer(config: TrainConfig):
    return optax.adam(config.learning_rate, eps=ADAM_EPS)


def _grid(f, **kw):
    return jax.vmap(jax.vmap(f, **kw), **kw)


@functools.lru_cache(maxsize=32)
def _compiled(network: Network, config: TrainConfig):
    """jit of epoch, observe and end_grads over a [seed, config] grid (cached: the init
    families do not enter them, so groups that differ only in those share the programs)."""
    epoch = jax.jit(functools.partial(_grid_epoch, network, config, _optimizer(config)), donate_argnums=(0,))
    observe = jax.jit(_grid(functools.partial(_member_observe, network, config), in_axes=(0, 0, None, None, None, None)))
    end_grads = jax.jit(_grid(functools.partial(_member_end_grads, network), in_axes=(0, 0, None, None)))
    return epoch, observe, end_grads


def group_key(member: Member) -> tuple[str, str]:
    """Members with equal keys can share a vmapped group (with the same network and config)."""
    return member.weight_init.kind, member.bias_law.kind


def _hypers(members: list[Member]) -> dict:
    keys = {group_key(m) for m in members}
    if len(keys) != 1:
        raise ValueError(f"a group's members must share their init families; got {sorted(keys)}. Split them into groups.")

    def value(law: Init) -> float:
        return 1.0 if law.value is None or law.fan_scaled else law.value

    return {
        "w_value": np.array([value(m.weight_init) for m in members], np.float32),
        "b_value": np.array([value(m.bias_law) for m in members], np.float32),
        "alpha": np.array([m.alpha for m in members], np.float32),
        "l1": np.array([m.l1 for m in members], np.float32),
        "l2": np.array([m.l2 for m in members], np.float32),
    }


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


def train_group(network: Network, arrays, members: list[Member], config: TrainConfig = TrainConfig(), on_epoch=None,
                min_slots: int = 1):
    """Train `members` on `arrays` (a `vglab.data.Arrays`) as one vectorized program.

    `on_epoch(epoch, metrics)` is called after every epoch (epoch 0 = at initialization)
    with per-member numpy arrays, e.g. for a progress bar. `min_slots` pads every seed's
    row of the grid to at least that many members (so groups of different sizes can
    share one compiled program). Returns one `RunResult` per member.
    """
    if not members:
        raise ValueError("a group needs at least one member")
    if tuple(arrays.x_train.shape[1:]) != tuple(network.in_shape):
        raise ValueError(
            f"the data's example shape {tuple(arrays.x_train.shape[1:])} does not fit {network.name} "
            f"(expects {tuple(network.in_shape)}); build the network from the prepared data's shape"
        )
    if arrays.x_train.shape[0] < config.batch_size:
        raise ValueError(f"{arrays.x_train.shape[0]} training examples are fewer than one batch of {config.batch_size}")
    slots = _seed_grid(members, min_slots)
    hypers_np = {k: v[slots] for k, v in _hypers(members).items()}  # [seed, slot]
    hypers = {k: jnp.asarray(v) for k, v in hypers_np.items()}
    seeds = [int(members[row[0]].seed) for row in slots]
    w_law, b_law = (Init(kind) for kind in group_key(members[0]))
    draws = [base_draws(network, seed, w_law.family, b_law.family) for seed in seeds]
    # The number of epochs is a host loop: groups that differ only in it share programs.
    program = replace(config, epochs=1)
    epoch_fn, observe, end_grads = _compiled(network, program)

    x, y = jnp.asarray(arrays.x_train), jnp.asarray(arrays.y_train, jnp.int32)
    x_test, y_test = jnp.asarray(arrays.x_test), jnp.asarray(arrays.y_test, jnp.int32)
    x_probe, y_probe = _probe_subset(x, y, config.probe_batch_size)
    where = [tuple(np.argwhere(slots == k)[0]) for k in range(len(members))]  # member -> (seed, slot)

    def per_member(record: dict) -> dict:
        return {key: np.stack([v[i, j] for i, j in where]) if np.ndim(v) >= 2 else v for key, v in record.items()}

    def measure(state, epoch: int) -> dict:
        obs = observe(state["params"], hypers, x_probe, y_probe, x_test, y_test)
        if epoch == config.epochs:
            obs["final_grad_first"], obs["final_grad_last"] = end_grads(state["params"], hypers, x_probe, y_probe)
        return {**obs, "alive": state["alive"]}

    state = _grid_init(network, w_law, b_law, _optimizer(program), hypers_np, draws)
    history = []  # per epoch: dict of numpy arrays with leading member axis
    t0 = time.perf_counter()
    record = jax.device_get(measure(state, 0))
    record["seconds"] = time.perf_counter() - t0
    history.append(per_member(record))
    if on_epoch:
        on_epoch(0, history[-1])
    for e in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        order = np.stack([batch_order(seed, e, x.shape[0], config.batch_size) for seed in seeds], 1)
        state, trained = epoch_fn(state, hypers, jnp.asarray(order), x, y)
        record = jax.device_get({**trained, **measure(state, e)})
        record["seconds"] = time.perf_counter() - t0
        history.append(per_member(record))
        if on_epoch:
            on_epoch(e, history[-1])
    return [_member_result(network, history, k) for k in range(len(members))]


# ------------------------------------------------------------ host-side tables
def _member_result(network: Network, history: list[dict], k: int) -> RunResult:
    names = network.layer_names
    alive = np.array([h["alive"][k] for h in history])
    dead = np.flatnonzero(~alive)
    diverged_epoch = int(dead[0]) if dead.size else None

    epoch_rows, grad_rows, act_rows, hists = [], [], [], []
    layer_cols = [c for q in probes_mod.LAYER_QUANTITIES.values() for c in q.columns if c in history[0]]
    for e, h in enumerate(history):
        row = {"epoch": e, "seconds": float(h["seconds"]), "diverged": bool(not alive[e])}
        for col in ("train_loss", "train_penalty", "train_total_loss", "train_acc", "val_loss", "val_acc"):
            row[col] = float(h[col][k]) if col in h else np.nan
        epoch_rows.append(row)
        for i, name in enumerate(names):
            act_rows.append({"epoch": e, "layer": name, "layer_index": i, **{c: float(h[c][k][i]) for c in layer_cols}})
        if e == 0:
            continue
        grad_cols = [c for q in probes_mod.GRAD_QUANTITIES.values() for c in q.columns if c in h]
        for i, name in enumerate(names):
            for j, p in enumerate(PARAMS):
                grad_rows.append({"epoch": e, "layer": name, "layer_index": i, "param": p,
                                  **{c: float(h[c][k][i][j]) for c in grad_cols}})
        if "grad_hist" in h:
            hists.append(h["grad_hist"][k])
    last = history[-1]
    return RunResult(
        epochs=pd.DataFrame(epoch_rows),
        grads=pd.DataFrame(grad_rows),
        activations=pd.DataFrame(act_rows),
        histograms=np.stack(hists) if hists else None,
        final_grads={names[0]: np.asarray(last["final_grad_first"][k]), names[-1]: np.asarray(last["final_grad_last"][k])},
        diverged_epoch=diverged_epoch,
    )
