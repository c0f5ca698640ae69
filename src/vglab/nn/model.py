"""The model interface the engine, the probes and the store depend on.

A *model* is two pure functions over a parameter pytree (any pytree of float arrays)::

    params = model.init(key)                                   # the model's own initialization
    logits = model.apply(params, x, alpha=1.0)                 # [batch, n_classes]
    logits, preacts = model.apply(params, x, alpha=a, capture=True)

`preacts` maps layer names to the pre-activations z of the hidden layers (what the
layer-factor probes measure: phi'(z), saturation, log phi'). `alpha` is the rescaling of
the activation, g(z) = alpha * phi(z / alpha) (traced: a sweep over alpha is one vmapped
program); a model that cannot rescale says so with `accepts_alpha = False`.

The engine never looks inside the pytree by name. It asks `model.layout(x)` for a
`Layout`: the parameter leaves grouped into named *layers*, each with at most one
weight and one bias, in network order, with the fans that fan-scaled init laws need.
Layers come from the tree paths: Equinox `layers[3].weight`, Flax `Dense_3/kernel` and
vglab's `dense3/w` all become a layer (`layers[3]`, `Dense_3`, `dense3`) with a weight
and a bias. A leaf named w/weight/kernel (or of rank >= 2) is a weight, b/bias (or rank
<= 1) a bias; a parent with several weights (or biases) gives one layer per leaf.

The built-in networks (`vglab.nn.networks`) implement this interface; adapters for
Equinox, Flax and a plain (init_fn, apply_fn) pair are in `vglab.nn.adapters`.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
from dataclasses import dataclass, field

import jax
import jax.extend
import numpy as np

from vglab.schema import PARAMS  # a layer's tensors, in this order (the histograms' param axis)

WEIGHT_NAMES = ("w", "weight", "kernel")
BIAS_NAMES = ("b", "bias")


class ModelError(ValueError):
    """A model that the engine cannot train; the message says what to change."""


class Model:
    """Base class of vglab models (an interface: subclasses override what they have).

    Attributes the engine reads:
    - `name`: for tables and error messages.
    - `activation`: the vglab activation name (`vglab.nn.activations`) of the hidden layers,
      whose phi' the layer factors use; None when unknown (those probes are then skipped).
      A model mixing activations says per layer: `layer_activations(names)`.
    - `accepts_alpha`: whether `apply` honours `alpha` (the rescaled activation).
    - `in_shape`: one example's shape, or None when any shape is accepted.
    - `layer_order`: layer names in network order, or None to take the natural order of
      the tree paths (`layers[2]` before `layers[10]`, `Dense_2` before `Dense_10`).
    - `weight_layout`: "in_out" when a matrix weight is (in, out), applied as x @ W (JAX,
      Flax, Keras, the built-in networks), "out_in" when (out, in) (Equinox, PyTorch); the
      engine stores (in, out) matrices transposed (`vglab.train.flat.Flat.of`).
    """

    # `name` and `in_shape` are left to subclasses (plain attributes or dataclass fields:
    # a class-level default here would become a dataclass default there).
    name: str
    in_shape: tuple[int, ...] | None
    activation: str | None = None
    accepts_alpha: bool = True
    layer_order: tuple[str, ...] | None = None
    weight_layout: str = "in_out"
    # Optional, for models built of runs of identical layers (the built-in MLPs): the layer
    # names in order, cut into runs, and `apply_runs`, which takes per run a dict of its
    # layers' tensors stacked on a leading axis ({"w": [n, ...], "b": [n, ...]}) and with
    # `capture` returns per run the pre-activations stacked (None for the output layer's).
    # The engine then hands over each run as one slice of its flat vector (`Flat.with_runs`).
    layer_runs: tuple[tuple[str, ...], ...] | None = None

    def init(self, key: jax.Array):
        raise NotImplementedError

    def apply(self, params, x, *, alpha=1.0, capture: bool = False):
        raise NotImplementedError

    def apply_runs(self, runs, x, *, alpha=1.0, capture: bool = False):
        raise NotImplementedError

    def layer_activations(self, names) -> dict[str, str]:
        """{layer: vglab activation name} of the layers among `names` whose phi' the layer
        factors use (each layer's own where the model knows it; default: `activation` for
        all, none when it is None)."""
        return {n: self.activation for n in names} if self.activation else {}

    def fans(self, name: str, param: str, shape: tuple[int, ...]) -> tuple[int, int]:
        """(fan_in, fan_out) of a weight, for the fan-scaled laws (Glorot, He). Default: the
        JAX/Flax/Keras layout (..., in, out), a conv kernel (kh, kw, in, out)."""
        return kernel_fans(shape)

    def start_from(self, params):
        """The parameters training starts from, given those the init law drew (NumPy leaves,
        on the host). Default: as drawn. A model that reparametrizes another (e.g. the
        rescaling twin of `vglab.nn.rescaling`) maps the draw here, so both start from
        the same base draw."""
        return params

    def layout(self, x_example=None) -> "Layout":
        """This model's `Layout` (see `derive_layout`)."""
        return derive_layout(self, x_example)


def kernel_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Keras' fans of a (..., in, out) kernel: the receptive field times in / out channels."""
    if len(shape) < 2:
        n = int(shape[0]) if shape else 1
        return n, n
    receptive = math.prod(shape[:-2])
    return receptive * int(shape[-2]), receptive * int(shape[-1])


def out_in_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Fans of an (out, in, ...) weight (Equinox, PyTorch layout)."""
    if len(shape) < 2:
        n = int(shape[0]) if shape else 1
        return n, n
    receptive = math.prod(shape[2:])
    return receptive * int(shape[1]), receptive * int(shape[0])


@dataclass(frozen=True)
class Tensor:
    """One parameter leaf as the probes see it: the weight or bias of a named layer."""

    layer: str
    layer_index: int
    param: str  # "w" | "b"
    leaf: int  # index in `jax.tree_util.tree_leaves(params)`
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class LayerParams:
    """A layer's parameters: at most one weight and one bias, and its fans."""

    name: str
    weight: Tensor | None
    bias: Tensor | None
    fan_in: int
    fan_out: int
    hidden: bool  # the model returns this layer's pre-activations (the layer factors apply)


@dataclass(frozen=True)
class Layout:
    """The engine's view of a model's parameters (see the module docstring)."""

    layers: tuple[LayerParams, ...]
    treedef: object  # of the parameter pytree
    n_leaves: int

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    @property
    def tensors(self) -> tuple[Tensor, ...]:
        """Every weight and bias, layer by layer (weight first): the probes' order."""
        return tuple(t for layer in self.layers for t in (layer.weight, layer.bias) if t is not None)

    @property
    def weights(self) -> tuple[Tensor, ...]:
        return tuple(layer.weight for layer in self.layers if layer.weight is not None)

    @property
    def biases(self) -> tuple[Tensor, ...]:
        return tuple(layer.bias for layer in self.layers if layer.bias is not None)

    @property
    def hidden(self) -> tuple[LayerParams, ...]:
        return tuple(layer for layer in self.layers if layer.hidden)

    @property
    def n_params(self) -> int:
        return sum(t.size for t in self.tensors)

    def leaves(self, params) -> list:
        leaves = jax.tree_util.tree_leaves(params)
        if len(leaves) != self.n_leaves:
            raise ModelError(f"the parameters have {len(leaves)} leaves, the model's layout {self.n_leaves}")
        return leaves

    def tensor_values(self, params) -> list:
        """The arrays of `tensors`, in that order."""
        leaves = self.leaves(params)
        return [leaves[t.leaf] for t in self.tensors]

    def unflatten(self, leaves):
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


def path_name(path) -> str:
    """A readable name of a tree path: `layers[3].weight`, `Dense_3.kernel`, `dense3.w`."""
    out = ""
    for k in path:
        if isinstance(k, jax.tree_util.SequenceKey):
            out += f"[{k.idx}]"
        elif isinstance(k, jax.tree_util.DictKey):
            out += ("." if out else "") + str(k.key)
        elif isinstance(k, jax.tree_util.GetAttrKey):
            out += ("." if out else "") + str(k.name)
        elif isinstance(k, jax.tree_util.FlattenedIndexKey):
            out += f"[{k.key}]"
        else:
            out += ("." if out else "") + str(k)
    return out


def _natural(name: str) -> tuple:
    """Sort key in which digit runs compare as numbers (`Dense_2` < `Dense_10`)."""
    return tuple((0, int(s), "") if s.isdigit() else (1, 0, s) for s in re.split(r"(\d+)", name) if s)


def _param_kind(leaf_name: str, rank: int) -> str:
    low = leaf_name.lower()
    if low in WEIGHT_NAMES:
        return "w"
    if low in BIAS_NAMES:
        return "b"
    return "w" if rank >= 2 else "b"


# Wrappers some libraries put around a leaf (Flax nnx's Variable `.value`), dropped from names.
_WRAPPER_KEYS = ("value", "raw_value")
# A top-level collection name that says nothing about the layer (Flax linen's 'params').
_ROOT_KEYS = ("params",)


def _split_path(path) -> tuple[str, str]:
    """(layer name, leaf name) of a leaf's path."""
    keys = list(path)
    while len(keys) > 1 and isinstance(keys[-1], jax.tree_util.GetAttrKey) and keys[-1].name in _WRAPPER_KEYS:
        keys.pop()
    if len(keys) > 1 and isinstance(keys[0], jax.tree_util.DictKey) and keys[0].key in _ROOT_KEYS:
        keys = keys[1:]
    leaf = path_name(keys[-1:]).lstrip(".")
    return path_name(keys[:-1]) or leaf, leaf.strip("[]")


def derive_layout(model: Model, x_example=None, params=None) -> Layout:
    """The `Layout` of `model`'s parameters, from its tree paths.

    With `x_example` (a batch, or its ShapeDtypeStruct) the layers are ordered by where the
    forward pass first uses them (found in its jaxpr: dict keys and attribute names say
    nothing about the order of computation), ties broken by the natural order of the
    paths; and the hidden layers are those whose pre-activations `apply(..., capture=True)`
    returns. Without it, the natural order of the paths and no hidden layer. Only shapes
    are computed (nothing runs)."""
    if params is None:
        params = jax.eval_shape(model.init, jax.random.key(0))
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    groups: dict[str, list[tuple[str, int, tuple]]] = {}
    for i, (path, leaf) in enumerate(flat):
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jax.numpy.issubdtype(dtype, jax.numpy.floating):
            raise ModelError(f"parameter {path_name(path) or i!r} of {model.name} is not a float array "
                             f"(dtype {dtype}); a model's parameters must be float arrays only (keep integers, "
                             "flags and functions out of the trained pytree)")
        name, leaf_name = _split_path(path)
        groups.setdefault(name, []).append((_param_kind(leaf_name, len(leaf.shape)), i, tuple(leaf.shape), leaf_name))
    # One weight and one bias per layer: a parent holding more is split into one layer per leaf.
    entries: dict[str, dict[str, tuple[int, tuple]]] = {}
    for name, leaves in groups.items():
        kinds = [k for k, *_ in leaves]
        if kinds.count("w") <= 1 and kinds.count("b") <= 1:
            entries[name] = {k: (i, shape) for k, i, shape, _ in leaves}
        else:
            for k, i, shape, leaf_name in leaves:
                entries[f"{name}.{leaf_name}" if name != leaf_name else name] = {k: (i, shape)}
    if model.layer_order is not None:
        missing = [n for n in model.layer_order if n not in entries]
        extra = [n for n in entries if n not in model.layer_order]
        if missing or extra:
            raise ModelError(f"{model.name}.layer_order does not match its parameters: missing {missing}, "
                             f"not listed {extra}")
        order = list(model.layer_order)
    elif x_example is not None:
        first = _first_use(model, params, x_example)
        order = sorted(entries, key=lambda n: (min(first[i] for i, _ in entries[n].values()), _natural(n)))
    else:
        order = sorted(entries, key=_natural)
    hidden = _hidden_layers(model, params, x_example, order) if x_example is not None else set()
    layers = []
    for li, name in enumerate(order):
        e = entries[name]
        w = Tensor(name, li, "w", e["w"][0], e["w"][1]) if "w" in e else None
        b = Tensor(name, li, "b", e["b"][0], e["b"][1]) if "b" in e else None
        fan_in, fan_out = model.fans(name, "w", w.shape) if w is not None else (b.shape[0] if b.shape else 1,) * 2
        layers.append(LayerParams(name, w, b, int(fan_in), int(fan_out), name in hidden))
    return Layout(tuple(layers), treedef, len(flat))


def _struct(x):
    return jax.ShapeDtypeStruct(tuple(x.shape), x.dtype)


def _first_use(model: Model, params, x_example) -> list[float]:
    """For each parameter leaf, the index of the first equation of the forward pass's
    jaxpr that reads it (inf if none does)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    structs = [_struct(leaf) for leaf in leaves]

    def forward(ls, x):
        return model.apply(jax.tree_util.tree_unflatten(treedef, ls), x, alpha=1.0)

    jaxpr = jax.make_jaxpr(forward)(structs, _struct(x_example)).jaxpr
    position = {v: i for i, v in enumerate(jaxpr.invars[: len(leaves)])}
    first = [math.inf] * len(leaves)
    for n, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            i = position.get(v) if isinstance(v, jax.extend.core.Var) else None
            if i is not None and first[i] == math.inf:
                first[i] = n
    return first


def _hidden_layers(model: Model, params, x_example, order: list[str]) -> set[str]:
    out = jax.eval_shape(lambda p, xx: model.apply(p, xx, alpha=1.0, capture=True), params, _struct(x_example))
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ModelError(f"{model.name}.apply(..., capture=True) must return (logits, preactivations)")
    names = set(named_preactivations(order, out[1]))
    unknown = names - set(order)
    if unknown:
        raise ModelError(f"{model.name} returned pre-activations of {sorted(unknown)}, which are not layers of its "
                         f"parameters ({order}); key them by layer name")
    return names


def named_preactivations(order, preacts) -> dict:
    """`preacts` as {layer name: z}: a dict as it is; a sequence (pre-activations recorded
    in call order without names) is matched to the first layers in `order`."""
    if isinstance(preacts, dict):
        return dict(preacts)
    preacts = list(preacts)
    if len(preacts) > len(order):
        raise ModelError(f"{len(preacts)} pre-activations were recorded for {len(order)} layers; name them "
                         "(vglab.nn.preactivation(z, name=...)) so each belongs to a layer")
    return dict(zip(order, preacts))


def check_output(model: Model, params, x_example, n_classes: int) -> None:
    """The model maps a batch to [batch, n_classes] float logits (checked on shapes only)."""
    x = jax.ShapeDtypeStruct(tuple(x_example.shape), x_example.dtype)
    try:
        out = jax.eval_shape(lambda p, xx: model.apply(p, xx, alpha=1.0), params, x)
    except Exception as e:  # the user's model failed on the data: say which and why
        raise ModelError(f"{model.name} cannot be applied to a batch shaped {tuple(x.shape)}: "
                         f"{type(e).__name__}: {e}") from None
    want = (x.shape[0], n_classes)
    shape = getattr(out, "shape", None)
    if shape is None or tuple(shape) != want or not np.issubdtype(out.dtype, np.floating):
        raise ModelError(f"{model.name} returns {getattr(out, 'dtype', type(out).__name__)}{tuple(shape or ())} "
                         f"for a batch of {x.shape[0]}; it must return float logits shaped {want} "
                         f"(batch, n_classes = {n_classes}): end with a linear layer of {n_classes} outputs")


# ------------------------------------------------------------------ the apply scope
def _trace_state():
    from jax.extend.core import get_opaque_trace_state

    return get_opaque_trace_state()


INNER_RECORD_HELP = (
    "a vglab activation recorded its pre-activation inside a JAX transformation within the model's forward pass "
    "(a jax.vmap, lax.scan, lax.cond, ...), and the value cannot leave it (it would be an UnexpectedTracerError). "
    "For a jax.vmap over the examples, let vglab map them instead: an apply_fn that takes one example, with "
    "per_example=True. For a scan (an RNN) or any other: give apply_fn a `capture` argument and, when it is True, "
    "return (logits, {layer name: z}) with each layer's pre-activations brought out of the transformation (e.g. "
    "as scan outputs); when the model uses several activations, name each one's layer: act(z, name='layer')")


@dataclass
class ApplyScope:
    """What a model's forward pass can read while vglab applies it: the rescaling `alpha`
    (read by `vglab.nn.activation`), and, when `capture` is on, the pre-activations it
    records (in call order; `name` None: matched to the layers in order), each with the
    vglab activation that recorded it (its phi' is the layer's, in the layer factors).

    `trace`: the JAX trace the scope was opened in. A z recorded in another one (inside
    a vmap or scan of the forward pass) is a value of that transformation only; it is
    kept as such and reading `preacts` says what to do instead. `named_activations`
    ({layer: activation}) holds even then: a name and an activation are Python facts."""

    alpha: object = 1.0
    capture: bool = False
    recorded: list = field(default_factory=list)  # [(name or None, z, activation or None, inner)]
    activations: set = field(default_factory=set)  # the vglab activations the forward pass used
    named_activations: dict = field(default_factory=dict)  # {layer name: activation name}
    trace: object = field(default_factory=_trace_state)

    def record(self, z, name: str | None = None, activation: str | None = None) -> None:
        if name is not None and activation is not None:
            self.named_activations[name] = activation
        if self.capture:
            self.recorded.append((name, z, activation, _trace_state() != self.trace))

    def _entries(self, i: int):
        if any(inner for *_, inner in self.recorded):
            raise ModelError(INNER_RECORD_HELP)
        if self.recorded and all(r[0] is not None for r in self.recorded):
            return {r[0]: r[i] for r in self.recorded}
        if any(r[0] is not None for r in self.recorded):
            raise ModelError("name all recorded pre-activations or none (vglab.nn.preactivation(z, name=...))")
        return [r[i] for r in self.recorded]

    def preacts(self):
        """The recorded pre-activations: a dict when all are named, else a list in call order."""
        return self._entries(1)

    def preact_activations(self):
        """The activation that recorded each of `preacts` (same structure; None for a bare
        `vglab.nn.preactivation`)."""
        return self._entries(2)


_SCOPES = threading.local()


@contextlib.contextmanager
def apply_scope(alpha=1.0, capture: bool = False):
    """Set the scope that `vglab.nn.activation` and `preactivation` read while a model's
    forward pass is traced (trace time only: the values are the traced ones)."""
    stack = getattr(_SCOPES, "stack", None)
    if stack is None:
        stack = _SCOPES.stack = []
    scope = ApplyScope(alpha, capture)
    stack.append(scope)
    try:
        yield scope
    finally:
        stack.pop()


def current_scope() -> ApplyScope | None:
    stack = getattr(_SCOPES, "stack", None)
    return stack[-1] if stack else None


def preactivation(z, name: str | None = None):
    """Mark `z` as a layer's pre-activation (for the layer-factor probes); returns `z`.
    Unnamed ones are matched to the layers in order; `vglab.nn.activation` calls this."""
    scope = current_scope()
    if scope is not None:
        scope.record(z, name)
    return z
