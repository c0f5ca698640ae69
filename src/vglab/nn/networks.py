"""The networks the study varies: MLPs, a CNN, and the paper's two CNNs.

A `Network` is a static description (hashable, so it can be a jit static argument)
and one implementation of the model interface (`vglab.nn.model.Model`): `init` draws a
parameter pytree, `apply` maps inputs to logits. Every hidden layer (dense or conv)
uses the same activation, rescaled by alpha (alpha = 1 is the plain activation); the
output layer is linear and the softmax lives in the loss.

Layer names are stable and readable (`conv1`, `dense3`, `out`) and every report uses
them; `network.layers` gives their order (parameter dicts are unordered).

An MLP has two options that practitioners reach for against vanishing gradients, neither
of which adds a parameter (the layout, names and init draws stay those of the plain MLP):
- `residual = s > 0`: every hidden dense layer whose input is as wide as its output (all
  but the first, unless the input is as wide as the layers) computes h + s·φ(z) instead
  of φ(z): the identity path carries the signal and its gradient past the saturated
  units, the branch scale s keeps the sum's variance from growing with depth.
- `norm = "layer"`: LayerNorm (Ba et al. 2016) without learned gain and bias, on each
  hidden layer's summed input before φ: z = (u − mean(u)) / sqrt(var(u) + 1e-5) over the
  layer's units, so q = E z² ≈ 1 at every depth whatever the weights' scale. The
  captured pre-activation is this z, the φ′ the layer factors measure.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from vglab.nn import activations
from vglab.nn import init as init_laws
from vglab.nn.init import Init, base_draw
from vglab.nn.model import Model
from vglab.schema import arch_name  # noqa: F401  (its home: labels and run ids are stored facts)

KERNEL = 3  # every conv is 3x3 'same'
CNN_VARIANTS = ("parameters", "layers")
NORMS = ("none", "layer")  # the MLP's `norm` option
NETWORKS = ("mlp", "cnn", "paper_cnn")  # the built-in networks (a spec's `network`, besides "model")
# The defaults of every builder and of a spec (one home): the reference study's small net,
# one hidden layer of 8 tanh units; paper_cnn's variant with the study's parameter count.
DEFAULT_ACTIVATION = "tanh"
DEFAULT_DEPTH = 1
DEFAULT_WIDTH = 8
DEFAULT_VARIANT = "parameters"
LAYER_NORM_EPS = 1e-5  # PyTorch's and Flax's default
# Full float32 products on every backend: with JAX's default, GPUs multiply in TF32, which
# moved losses and gradient statistics by up to 5e-3 relative to the CPU (HIGHEST: 4e-6,
# at no measured cost; benchmarks/gpu_check.py).
PRECISION = lax.Precision.HIGHEST
# Runs of at least this many identical hidden layers are scanned (`Network.apply`).
SCAN_MIN_LAYERS = 2


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str  # "dense" | "conv"
    w_shape: tuple[int, ...]
    fan_in: int
    fan_out: int
    hidden: bool  # False for the linear output layer
    pool_after: bool = False  # conv only: 2x2 max-pool after the activation

    @property
    def b_shape(self) -> tuple[int, ...]:
        return (self.w_shape[-1],)

    @property
    def n_params(self) -> int:
        return math.prod(self.w_shape) + self.w_shape[-1]


@dataclass(frozen=True)
class Network(Model):
    name: str  # e.g. "mlp 20x8", "cnn", "paper_cnn(layers)"
    kind: str  # "mlp" | "cnn": which input preprocessing it takes
    in_shape: tuple[int, ...]  # one example: (D,) or (H, W, C)
    layers: tuple[Layer, ...]
    activation: str = DEFAULT_ACTIVATION
    meta: dict = field(default_factory=dict, compare=False, hash=False)
    residual: float = 0.0  # the branch scale s of h + s·φ(z) (0: no skip connection); MLP only
    norm: str = "none"  # "layer": LayerNorm before φ; MLP only

    @property
    def n_params(self) -> int:
        return sum(layer.n_params for layer in self.layers)

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    @property
    def hidden_layers(self) -> tuple[Layer, ...]:
        return tuple(layer for layer in self.layers if layer.hidden)

    @property
    def layer_order(self) -> tuple[str, ...]:
        return self.layer_names

    def fans(self, name: str, param: str, shape) -> tuple[int, int]:
        layer = next(layer for layer in self.layers if layer.name == name)
        return layer.fan_in, layer.fan_out

    def init(self, key: jax.Array, weight_init: Init | None = None, bias_init: Init | None = None, weight_value=None,
             bias_value=None) -> dict:
        """Draw parameters (by default Glorot uniform weights and zero biases, Keras' defaults:
        the network's own init). `weight_value`/`bias_value` replace the law's numeric value
        (std or half-width) and may be traced: the base draw depends on `key` and the family only."""
        weight_init = weight_init or init_laws.glorot_uniform()
        bias_init = bias_init or init_laws.zeros()
        # One draw for all weights and one for all biases, cut into layers: a random call
        # per layer made a 20-layer net's init take ~25 s to compile on CPU.
        k_w, k_b = jax.random.split(key)
        w_all = base_draw(k_w, weight_init.family, (self.n_weights,))
        b_all = base_draw(k_b, bias_init.family, (self.n_biases,))
        return self.assemble(w_all, b_all, weight_init, bias_init, weight_value, bias_value)

    @property
    def n_weights(self) -> int:
        return sum(math.prod(layer.w_shape) for layer in self.layers)

    @property
    def n_biases(self) -> int:
        return sum(math.prod(layer.b_shape) for layer in self.layers)

    def assemble(self, w_all, b_all, weight_init: Init, bias_init: Init, weight_value=None, bias_value=None) -> dict:
        """Parameters from flat base draws (`n_weights` and `n_biases` entries, layer after
        layer), each layer's slice multiplied by its law's scale (`vglab.nn.init.assemble`)."""
        return init_laws.assemble(self.layout(), w_all, b_all, weight_init, bias_init, weight_value, bias_value)

    def layout(self, x_example=None):
        """The model layout of this network's parameters (`vglab.nn.model.Layout`), built from
        `layers` without tracing anything."""
        return _layout(self)

    def apply(self, params: dict, x: jax.Array, alpha=1.0, capture: bool = False):
        """Logits for a batch `x`; with `capture`, also the pre-activations z of each hidden
        layer. Layer after layer (`apply_runs` scans runs of identical layers instead)."""
        phi = activations.get(self.activation)
        activations.check_alpha(alpha)  # a concrete alpha <= 0 would run silently (tanh: alpha=-1 == alpha=1)
        preacts = {}
        h = x
        for layer in self.layers:
            z, h = self.layer_step(layer, params[layer.name], h, phi, alpha)
            if not layer.hidden:
                return (z, preacts) if capture else z
            if capture:
                preacts[layer.name] = z
        raise AssertionError("a network ends with its output layer")

    @property
    def layer_runs(self) -> tuple[tuple[str, ...], ...]:
        """The layer names in order, cut into runs (`Model.layer_runs`): consecutive hidden
        dense layers of one square shape (a deep MLP's 8x8 layers) form a run; every other
        layer is a run of one."""
        return tuple(tuple(layer.name for layer in run) for run in self._runs)

    @property
    def _runs(self) -> tuple[tuple[Layer, ...], ...]:
        runs: list[list[Layer]] = []
        for layer in self.layers:
            square = layer.hidden and layer.kind == "dense" and not layer.pool_after and \
                layer.w_shape[0] == layer.w_shape[-1]
            if square and runs and runs[-1][-1].w_shape == layer.w_shape and runs[-1][-1].hidden \
                    and runs[-1][-1].kind == "dense" and not runs[-1][-1].pool_after:
                runs[-1].append(layer)
            else:
                runs.append([layer])
        return tuple(tuple(run) for run in runs)

    def stack_runs(self, params: dict) -> tuple[dict, ...]:
        """`params` as `apply_runs` takes them: per run, its layers' tensors stacked."""
        return tuple(jax.tree_util.tree_map(lambda *p: jnp.stack(p), *(params[layer.name] for layer in run))
                     for run in self._runs)

    def apply_runs(self, runs: tuple[dict, ...], x: jax.Array, alpha=1.0, capture: bool = False):
        """`apply` on parameters stacked per run (`Model.apply_runs`). A run of at least
        `SCAN_MIN_LAYERS` layers is one `lax.scan`: its program is traced and compiled once,
        not once per layer (the same operations, so the same numbers; the engine chooses
        between the two, `vglab.train.loop.scan_pays`). With `capture`, the second result
        holds per run its pre-activations stacked [layer, ...] (None for the output layer's
        run)."""
        phi = activations.get(self.activation)
        activations.check_alpha(alpha)  # a concrete alpha <= 0 would run silently (tanh: alpha=-1 == alpha=1)
        run_preacts = []
        h = x
        for run, p in zip(self._runs, runs):
            if not run[0].hidden:
                z, _ = self.layer_step(run[0], jax.tree_util.tree_map(lambda t: t[0], p), h, phi, alpha)
                return (z, tuple(run_preacts)) if capture else z
            if len(run) >= SCAN_MIN_LAYERS:
                h, zs = lax.scan(lambda h, q: self.layer_step(run[0], q, h, phi, alpha)[::-1], h, p)
            else:
                zs = []
                for j, layer in enumerate(run):
                    z, h = self.layer_step(layer, jax.tree_util.tree_map(lambda t: t[j], p), h, phi, alpha)
                    zs.append(z)
                zs = jnp.stack(zs)
            run_preacts.append(zs)
        raise AssertionError("a network ends with its output layer")

    def layer_step(self, layer: Layer, p: dict, h, phi, alpha=1.0):
        """One layer on its input h: (z, the next input) — the (normalized) pre-activation and
        the layer's output (z itself for the linear output layer). `phi`: the activation."""
        if layer.kind == "conv":
            z = conv(h, p["w"]) + p["b"]
        else:
            if h.ndim > 2:  # first dense layer after the convolutions: Flatten
                h = h.reshape(h.shape[0], -1)
            z = dense(h, p["w"]) + p["b"]
        if not layer.hidden:
            return z, z
        if self.norm == "layer":
            z = layer_norm(z)
        a = alpha * phi.fn(z / alpha)
        h = h + self.residual * a if self.residual and h.shape[-1] == a.shape[-1] and layer.kind == "dense" else a
        return z, (max_pool(h) if layer.pool_after else h)


def hidden_jacobian(network: Network, params: dict, x, alpha=1.0):
    """∂h^[L]/∂h^[1] for each example of `x` [batch, width, width]: the Jacobian from the first
    hidden layer's output to the last's (an MLP's hidden layers, L − 1 apart), the product of
    D_l W_l (with I + s·D_l W_l for residual layers and LayerNorm's Jacobian) whose singular
    values dynamical isometry is about (Pennington, Schoenholz & Ganguli 2017). Taken from
    h^[1] so that the map is square whatever the input width.

    Chained layer by layer in one compiled scan (`_chained_jacobian`): differentiated eagerly
    through the unrolled net, one 50x128 net's Jacobians took 10 CPU seconds op by op, and
    the deep-remedies report's 72 of them 467 of its 497 CPU seconds."""
    hidden = network.hidden_layers
    if network.kind != "mlp" or len(hidden) < 2:
        raise ValueError(f"hidden_jacobian needs an MLP with at least 2 hidden layers, got {network.name}")
    stacked = jax.tree_util.tree_map(lambda *p: np.stack(p), *(params[layer.name] for layer in hidden[1:]))
    block = replace(network, name="", layers=hidden[:2], meta={})  # its program serves every depth
    return _chained_jacobian(block, hidden[0], hidden[1], params[hidden[0].name], stacked, x, alpha)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _chained_jacobian(network: Network, first: Layer, layer: Layer, p1: dict, stacked: dict, x, alpha):
    """h^[1] from `first`, then J ← J_l · J over the stacked hidden layers 2..L (all of
    `layer`'s shape), per example."""
    phi = activations.get(network.activation)
    _, h1 = network.layer_step(first, p1, x, phi, alpha)

    def body(carry, p):
        h, jac = carry  # [batch, width], [batch, width, width]

        def step(v):  # one example's h^[l-1] -> h^[l]
            return network.layer_step(layer, p, v[None], phi, alpha)[1][0]

        return (jax.vmap(step)(h), jnp.matmul(jax.vmap(jax.jacrev(step))(h), jac, precision=PRECISION)), None

    eye = jnp.broadcast_to(jnp.eye(h1.shape[-1], dtype=h1.dtype), (*h1.shape, h1.shape[-1]))
    (_, jac), _ = lax.scan(body, (h1, eye), stacked)  # reverse mode per layer: `dense` has a custom VJP
    return jac


def layer_norm(u):
    """LayerNorm over the last axis without learned gain and bias (`Network.norm`)."""
    mean = jnp.mean(u, -1, keepdims=True)
    c = u - mean
    return c * lax.rsqrt(jnp.mean(c * c, -1, keepdims=True) + LAYER_NORM_EPS)


def block_suffix(residual: float = 0.0, norm: str = "none") -> str:
    """What a network's name adds for the MLP's options, only when they are set:
    ` res=0.5`, ` LN` (one home for names, labels and run ids)."""
    return (f" res={residual:g}" if residual else "") + (" LN" if norm == "layer" else "")


def check_block(residual: float = 0.0, norm: str = "none") -> None:
    """The MLP options' constraints (the spec schema calls this too)."""
    if isinstance(residual, bool) or not isinstance(residual, (int, float)) or not (
            math.isfinite(residual) and residual >= 0):
        raise ValueError(f"residual is the branch scale s of h + s·phi(z), a finite number >= 0 (0: no skip "
                         f"connection), got {residual!r}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {list(NORMS)} ('layer': LayerNorm before the "
                         "activation)")


_DN = ("NHWC", "HWIO", "NHWC")


@jax.custom_vjp
def dense(h, w):
    """h @ w, [batch, in] x [in, out]. Its weight gradient is written as (g^T h)^T with g^T
    made explicit: as autodiff writes it (contracting the batch axis, which is not the
    operand's minor one), XLA CPU (jax 0.10) runs the members' small products of a vmapped
    group on Eigen's generic batched loop instead of its fast library kernels: a 20x8 net's
    backward pass took 1.58x as long per step (3.55 ms against 2.25 ms, 50 members, one
    core; measured with h^T made explicit, the form before the engine stored weights
    transposed: the products are the same kind)."""
    return _product(h, w)


def _product(h, w):
    """h @ w written as (w^T h^T)^T: with the engine's transposed storage of w, w^T is the
    stored matrix, so members that share h multiply it in one product that reads their
    weights in place (h @ w made XLA copy them into [in, (member, out)] first)."""
    t = jnp.matmul(jnp.swapaxes(w, -1, -2), jnp.swapaxes(h, -1, -2), precision=PRECISION)
    return jnp.swapaxes(t, -1, -2)


def _dense_fwd(h, w):
    return dense(h, w), (h, w)


def _dense_bwd(res, g):
    h, w = res
    # The weight gradient as (g^T h)^T with g^T explicit (the barrier keeps XLA from folding
    # the transpose back into the product): the engine stores (in, out) weights transposed
    # (`vglab.train.flat.Flat.of`), so it keeps g^T h as it is (the two transposes cancel),
    # and members that share a batch (the first layer) get their gradients from one product
    # [(member, out), batch] x [batch, in] with no copy (h^T h-made-explicit needed two).
    g_t = lax.optimization_barrier(jnp.swapaxes(g, -1, -2))
    return jnp.matmul(g, jnp.swapaxes(w, -1, -2), precision=PRECISION), \
        jnp.swapaxes(jnp.matmul(g_t, h, precision=PRECISION), -1, -2)


dense.defvjp(_dense_fwd, _dense_bwd)


@jax.custom_vjp
def conv(x, w):
    """Stride-1 'same' convolution, NHWC x HWIO. Its gradients are written out as convolutions
    in the same canonical layout because XLA CPU (jax 0.10) leaves autodiff's transposed
    convolutions in other layouts when they sit inside `lax.scan` (the training epoch) and
    runs them on a slow generic path: a CNN epoch was ~6x slower than with these."""
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DN, precision=PRECISION)


def _conv_fwd(x, w):
    return conv(x, w), (x, w)


def _conv_bwd(res, g):
    x, w = res
    (kh, kw), (lh, lw) = w.shape[:2], ((w.shape[0] - 1) // 2, (w.shape[1] - 1) // 2)  # 'SAME' pads lo, k-1-lo
    # dx: convolution of g with the spatially flipped kernel, in/out channels swapped.
    dx = lax.conv_general_dilated(g, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2), (1, 1),
                                  ((kh - 1 - lh, lh), (kw - 1 - lw, lw)), dimension_numbers=_DN, precision=PRECISION)
    # dw[i, j, ci, co] = sum_{n, h, v} xpad[n, h+i, v+j, ci] g[n, h, v, co]: a convolution with
    # the input channels as the batch and the examples as the features.
    dw = lax.conv_general_dilated(x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3), (1, 1),
                                  ((lh, kh - 1 - lh), (lw, kw - 1 - lw)), dimension_numbers=_DN, precision=PRECISION)
    return dx, dw.transpose(1, 2, 0, 3)


conv.defvjp(_conv_fwd, _conv_bwd)


@jax.custom_vjp
def max_pool(h):
    """2x2 max-pool with stride 2, NHWC; an odd last row or column is dropped ('VALID').

    The same numbers as `lax.reduce_window(h, -inf, max, ...)` and its gradient (which,
    like Keras', goes to the first maximum of a window in row-major order when there are
    ties, common on digits' constant background), but written as a reshape: XLA CPU took
    about 4 s longer to compile a CNN's epoch with reduce_window's select-and-scatter."""
    return _windows(h).max(3)


def _windows(h):
    """[n, H/2, W/2, 4, c]: each 2x2 window's values in row-major order."""
    n, hh, ww, c = h.shape
    w = h[:, : hh // 2 * 2, : ww // 2 * 2].reshape(n, hh // 2, 2, ww // 2, 2, c)
    return w.transpose(0, 1, 3, 2, 4, 5).reshape(n, hh // 2, ww // 2, 4, c)


def _max_pool_fwd(h):
    out = max_pool(h)
    return out, (h, out)


def _max_pool_bwd(res, g):
    h, out = res
    n, hh, ww, c = h.shape
    hit = _windows(h) == out[:, :, :, None]
    first = hit & (jnp.cumsum(hit, axis=3, dtype=jnp.int32) == 1)
    dh = jnp.where(first, g[:, :, :, None], jnp.zeros((), g.dtype))
    dh = dh.reshape(n, hh // 2, ww // 2, 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, hh // 2 * 2, ww // 2 * 2, c)
    return (jnp.pad(dh, ((0, 0), (0, hh % 2), (0, ww % 2), (0, 0))),)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


@functools.lru_cache(maxsize=64)
def _layout(network: Network):
    from vglab.nn import model as model_mod

    shapes = {layer.name: {"w": jax.ShapeDtypeStruct(layer.w_shape, jnp.float32),
                           "b": jax.ShapeDtypeStruct(layer.b_shape, jnp.float32)} for layer in network.layers}
    base = model_mod.derive_layout(network, params=shapes)
    hidden = {layer.name for layer in network.hidden_layers}
    return replace(base, layers=tuple(replace(layer, hidden=layer.name in hidden) for layer in base.layers))


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")


def _check_activation(activation: str) -> None:
    activations.get(activation)  # raises with the list of valid names


def _dense_stack(n_in: int, depth: int, width: int, n_out: int, first_index: int = 1) -> list[Layer]:
    layers, fan_in = [], n_in
    for i in range(depth):
        layers.append(Layer(f"dense{first_index + i}", "dense", (fan_in, width), fan_in, width, True))
        fan_in = width
    layers.append(Layer("out", "dense", (fan_in, n_out), fan_in, n_out, False))
    return layers


def mlp(depth: int, width: int, n_in: int, n_out: int = 10, activation: str = DEFAULT_ACTIVATION, *, residual: float = 0.0,
        norm: str = "none") -> Network:
    """`n_in` (PCA) features -> `depth` hidden layers of `width` units -> `n_out` logits;
    `residual` and `norm`: see the module docstring."""
    _check_positive(depth=depth, width=width, n_in=n_in, n_out=n_out)
    _check_activation(activation)
    check_block(residual, norm)
    return Network(
        f"mlp {depth}x{width}{block_suffix(residual, norm)}", "mlp", (n_in,),
        tuple(_dense_stack(n_in, depth, width, n_out)), activation, {"depth": depth, "width": width},
        float(residual), norm,
    )


def _conv_stack(in_shape: tuple[int, int, int], filters: list[int], pool_after: set[int]) -> tuple[list[Layer], int]:
    """Conv layers (1-based indices in `pool_after` get a 2x2 max-pool); returns them and the flat size."""
    h, w, c = in_shape
    layers = []
    for i, f in enumerate(filters, start=1):
        pool = i in pool_after
        layers.append(Layer(f"conv{i}", "conv", (KERNEL, KERNEL, c, f), KERNEL * KERNEL * c, KERNEL * KERNEL * f, True, pool))
        c = f
        if pool:
            if h < 2 or w < 2:
                raise ValueError(f"input {in_shape} is too small for {len(pool_after)} max-pools; use larger images")
            h, w = h // 2, w // 2
    return layers, h * w * c


def _image_shape(in_shape) -> tuple[int, int, int]:
    if len(in_shape) != 3:
        raise ValueError(f"CNNs take images shaped (H, W, C), got {tuple(in_shape)}; prepare the data with kind='cnn'")
    return tuple(int(s) for s in in_shape)


def cnn(depth: int, width: int, in_shape, n_out: int = 10, activation: str = DEFAULT_ACTIVATION, filters: int = 36) -> Network:
    """4 conv layers of `filters` 3x3 'same', max-pool after every second, Flatten,
    `depth` dense layers of `width`, `n_out` logits."""
    _check_positive(depth=depth, width=width, n_out=n_out, filters=filters)
    _check_activation(activation)
    in_shape = _image_shape(in_shape)
    convs, flat = _conv_stack(in_shape, [filters] * 4, {2, 4})
    return Network(
        f"cnn 4conv+{depth}x{width}", "cnn", in_shape, tuple(convs + _dense_stack(flat, depth, width, n_out)), activation,
        {"depth": depth, "width": width},
    )


def paper_cnn(variant: str, in_shape, n_out: int = 10, activation: str = DEFAULT_ACTIVATION) -> Network:
    """The reference study's CNNs, with the Flatten its code lacked.

    'parameters': 6 conv layers of 36 filters, max-pool after every 2nd, dense 8, dense 10.
    'layers':     6 conv layers of 3 filters, max-pool after the 3rd and 6th, 4 dense of 8, dense 10.
    """
    if variant not in CNN_VARIANTS:
        raise ValueError(f"unknown paper_cnn variant {variant!r}; choose one of {list(CNN_VARIANTS)}")
    _check_activation(activation)
    in_shape = _image_shape(in_shape)
    if variant == "parameters":
        convs, flat = _conv_stack(in_shape, [36] * 6, {2, 4, 6})
        dense = _dense_stack(flat, 1, 8, n_out)
    else:
        convs, flat = _conv_stack(in_shape, [3] * 6, {3, 6})
        dense = _dense_stack(flat, 4, 8, n_out)
    return Network(f"paper_cnn({variant})", "cnn", in_shape, tuple(convs + dense), activation, {"variant": variant})


def build(network: str, in_shape, *, depth: int = DEFAULT_DEPTH, width: int = DEFAULT_WIDTH, variant: str | None = None,
          activation: str = DEFAULT_ACTIVATION, n_out: int = 10, residual: float = 0.0, norm: str = "none") -> Network:
    """One entry point for specs: `network` is 'mlp', 'cnn' or 'paper_cnn'."""
    if network != "mlp" and (residual or norm != "none"):
        raise ValueError(f"residual and norm are options of the built-in MLP, not of {network!r}")
    if network == "mlp":
        if len(in_shape) != 1:
            raise ValueError(f"an MLP takes flat features, got input shape {tuple(in_shape)}; prepare the data with kind='mlp'")
        return mlp(depth, width, int(in_shape[0]), n_out, activation, residual=residual, norm=norm)
    if network == "cnn":
        return cnn(depth, width, in_shape, n_out, activation)
    if network == "paper_cnn":
        return paper_cnn(variant or DEFAULT_VARIANT, in_shape, n_out, activation)
    raise ValueError(f"unknown network {network!r}; choose one of {list(NETWORKS)}")
