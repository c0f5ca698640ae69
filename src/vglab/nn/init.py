"""Initializations: a *family* (the base draw) times a per-layer *scale*.

Conventions are explicit because the reference study's text and code disagreed:
`normal(std=10)` draws N(0, 10^2) (what Keras `RandomNormal(0, 10)` does and what the
study's code ran); `normal(variance=10)` draws N(0, 10), std 3.16. Labels always say
which: `N(0, std=10)`.

Splitting a law into base draw x scale is what lets a sweep over init scales be one
vmapped program in which members with the same seed share the same base draw.

| law              | family  | base      | scale                       |
|------------------|---------|-----------|-----------------------------|
| normal(std=s)    | normal  | N(0, 1)   | s                           |
| uniform(a=a)     | uniform | U[-1, 1]  | a                           |
| glorot_uniform() | uniform | U[-1, 1]  | sqrt(6 / (fan_in + fan_out))|
| he_normal()      | normal  | N(0, 1)   | sqrt(2 / fan_in)            |
| zeros()          | zeros   | 0         | 0                           |
| normal(sigma_w2=S)| normal | N(0, 1)   | sqrt(S / fan_in)            |
| orthogonal(gain=G)| orthogonal | Q of N(0, 1) | G                    |
| orthogonal(sigma_w2=S)| orthogonal | Q of N(0, 1) | sqrt(S)          |
| model            | model   | the model's own `init(key)`, unscaled   |

He normal here is the plain (untruncated) normal of He et al. 2015. `normal(sigma_w2=S)`
is the mean-field parametrization (Poole et al. 2016): weight variance S / fan_in, so
that S = sigma_w^2 is the same number at every width; S can be swept in one program
(`scaled_normal`; He normal is S = 2). `orthogonal` (Saxe et al. 2014; the dynamical
isometry of Pennington et al. 2017) draws N(0, 1), reshaped to the weight's shape, and
replaces each weight by the Q of its QR decomposition with the signs of R's diagonal (so Q
is Haar-distributed, Mezzadri 2007): a semi-orthogonal matrix, WᵀW = I when the weight has
at least as many rows as columns, else WWᵀ = I (a tensor of rank > 2 as the matrix
(prod(shape[:-1]), shape[-1]), Keras' convention); the gain multiplies it. `sigma_w2=S`
is the mean-field reading, gain sqrt(S): a square orthogonal W·sqrt(S) has entries of
variance S / fan_in, like `normal(sigma_w2=S)`. `model` keeps what
the model's own initializer draws (for a user's Equinox or Flax model, its defaults).

Laws apply to any model's weight and bias tensors through its `Layout`
(`vglab.nn.model`): `assemble` cuts one flat base draw into the layers' weights (and
one into their biases), in layer order, each slice times its layer's scale.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

FAMILIES = ("normal", "uniform", "orthogonal", "zeros", "model")


@dataclass(frozen=True)
class Init:
    """An initialization law. `value` is the std (normal) or half-width (uniform)."""

    kind: str  # normal | uniform | glorot_uniform | he_normal | scaled_normal | orthogonal | scaled_orthogonal | zeros | model
    value: float | None = None  # std, half-width, gain (orthogonal), or sigma_w^2 (scaled_normal, scaled_orthogonal)

    @property
    def family(self) -> str:
        return {"glorot_uniform": "uniform", "he_normal": "normal", "scaled_normal": "normal",
                "scaled_orthogonal": "orthogonal"}.get(self.kind, self.kind)

    @property
    def fan_scaled(self) -> bool:
        """A law without a value of its own (Glorot, He): its scale is set by the fans alone."""
        return self.kind in ("glorot_uniform", "he_normal")

    def scale(self, fan_in: int, fan_out: int, value: float | None = None) -> float:
        """The factor that multiplies the base draw for a layer with these fans (`value`
        replaces the law's own std, half-width or sigma_w^2)."""
        v = self.value if value is None else value
        if self.kind == "glorot_uniform":
            return math.sqrt(6.0 / (fan_in + fan_out))
        if self.kind == "he_normal":
            return math.sqrt(2.0 / fan_in)
        if self.kind == "scaled_normal":
            return math.sqrt(float(v) / fan_in)
        if self.kind == "scaled_orthogonal":
            return math.sqrt(float(v))
        if self.kind == "zeros":
            return 0.0
        if self.kind == "model":
            return 1.0
        return v if value is not None else float(v)

    def variance(self, fan_in: int | None = None, fan_out: int | None = None) -> float:
        """The variance of one entry drawn for a tensor with these fans: std² (normal), a²/3
        (uniform), gain²/max(fan_in, fan_out) (a semi-orthogonal matrix's squares sum to
        gain²·min(fan_in, fan_out)), 0 (zeros); NaN for `model` (the model's own) and for a
        law scaled by fans that are not given (the mean-field theory's σ_b² needs a fixed number)."""
        if self.kind == "model" or ((self.fan_scaled or self.kind == "scaled_normal" or self.family == "orthogonal")
                                    and (fan_in is None or fan_out is None)):
            return float("nan")
        s = self.scale(fan_in or 1, fan_out or 1)
        if self.family == "orthogonal":
            return s * s / max(fan_in, fan_out)
        return {"normal": s * s, "uniform": s * s / 3.0}.get(self.family, 0.0)

    @property
    def label(self) -> str:
        """How tables and figures name the law, e.g. `N(0, std=10)`."""
        return _LABELS[self.kind].format(_fmt(self.value)) if self.kind in _LABELS else _NAMED[self.kind]

    @property
    def spec(self) -> str:
        """The canonical string that `parse` reads back."""
        return _SPECS[self.kind].format(_exact(self.value)) if self.kind in _SPECS else self.kind


# Per kind with a value: its label and its spec, the value formatted into {0}; the laws without one by name.
_LABELS = {"normal": "N(0, std={0})", "scaled_normal": "N(0, σ_w²={0}/fan_in)", "uniform": "U[-{0}, {0}]",
           "orthogonal": "orthogonal(gain={0})", "scaled_orthogonal": "orthogonal(σ_w²={0})"}
_SPECS = {"normal": "normal(std={0})", "uniform": "uniform(a={0})", "scaled_normal": "normal(sigma_w2={0})",
          "orthogonal": "orthogonal(gain={0})", "scaled_orthogonal": "orthogonal(sigma_w2={0})"}
_NAMED = {"glorot_uniform": "Glorot uniform", "he_normal": "He normal", "zeros": "zeros", "model": "model's own init"}


def _fmt(x: float) -> str:
    return f"{x:g}"


def _exact(x: float) -> str:
    """Short when that reads back exactly, else all digits: `parse(law.spec) == law`."""
    s = _fmt(x)
    return s if float(s) == x else repr(float(x))


def _positive(value, what: str) -> float:
    """`value` as a float, or the error that names `what` ("normal init std")."""
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{what} must be finite and > 0, got {value}")
    return float(value)


def normal(std: float | None = None, variance: float | None = None, sigma_w2: float | None = None) -> Init:
    """N(0, std^2); give exactly one of `std`, `variance`, or `sigma_w2` (variance
    sigma_w2 / fan_in per layer, the mean-field parametrization)."""
    if sum(v is not None for v in (std, variance, sigma_w2)) != 1:
        raise ValueError("normal init needs exactly one of std=, variance= or sigma_w2= (e.g. normal(std=10), "
                         "normal(variance=10), or normal(sigma_w2=2) for variance 2/fan_in)")
    if sigma_w2 is not None:
        return Init("scaled_normal", _positive(sigma_w2, "normal init sigma_w2"))
    if std is None:
        if not variance > 0:
            raise ValueError(f"normal init variance must be > 0, got {variance}")
        std = math.sqrt(variance)
    return Init("normal", _positive(std, "normal init std"))


def uniform(a: float) -> Init:
    """U[-a, a]."""
    return Init("uniform", _positive(a, "uniform init half-width a"))


def orthogonal(gain: float | None = None, sigma_w2: float | None = None) -> Init:
    """A random semi-orthogonal weight times `gain` (default 1), or times sqrt(`sigma_w2`)
    (the mean-field parametrization; see the module docstring). Weights only: a bias has
    no orthogonal matrix to draw."""
    if gain is not None and sigma_w2 is not None:
        raise ValueError("orthogonal init takes gain= or sigma_w2=, not both (gain = sqrt(sigma_w2)); e.g. "
                         "orthogonal(gain=1) or orthogonal(sigma_w2=1.5)")
    if sigma_w2 is not None:
        return Init("scaled_orthogonal", _positive(sigma_w2, "orthogonal init sigma_w2"))
    return Init("orthogonal", _positive(1.0 if gain is None else gain, "orthogonal init gain"))


def glorot_uniform() -> Init:
    return Init("glorot_uniform")


def he_normal() -> Init:
    return Init("he_normal")


def zeros() -> Init:
    return Init("zeros", 0.0)


def model() -> Init:
    """Whatever the model's own `init(key)` draws."""
    return Init("model")


_PATTERN = re.compile(r"^\s*(\w+)\s*(?:\((.*)\))?\s*$")
SPEC_HELP = ("normal(std=S), normal(variance=V), normal(sigma_w2=S), uniform(a=A), orthogonal(gain=G), "
             "orthogonal(sigma_w2=S), glorot_uniform, he_normal, zeros, model")


def default_bias_init(weight_init: Init) -> Init:
    """Biases follow the weights' law (as the reference study did), except for the laws
    scaled by the fans (Glorot, He, sigma_w^2/fan_in) and the orthogonal ones (no matrix
    in a bias), whose standard companion is zero biases."""
    if weight_init.fan_scaled or weight_init.kind == "scaled_normal" or weight_init.family == "orthogonal":
        return Init("zeros", 0.0)
    return weight_init


def parse(spec: str | Init) -> Init:
    """Read `normal(std=10)`, `normal(variance=10)`, `uniform(a=10)`, `glorot_uniform`, ..."""
    if isinstance(spec, Init):
        return spec
    m = _PATTERN.match(str(spec))
    if not m:
        raise ValueError(f"cannot read init {spec!r}; write one of: {SPEC_HELP}")
    name, args = m.group(1), (m.group(2) or "").strip()
    kwargs: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in args.split(","))):
        key, sep, val = part.partition("=")
        try:
            if not sep:
                raise ValueError
            kwargs[key.strip()] = float(val)
        except ValueError:
            raise ValueError(f"cannot read init {spec!r}: arguments are key=number; write one of: {SPEC_HELP}") from None
    aliases = {"var": "variance", "sigma": "std", "glorot": "glorot_uniform", "he": "he_normal", "own": "model"}
    kwargs = {aliases.get(k, k): v for k, v in kwargs.items()}
    name = aliases.get(name, name)
    makers = {"normal": normal, "uniform": uniform, "orthogonal": orthogonal, "glorot_uniform": glorot_uniform,
              "he_normal": he_normal, "zeros": zeros, "model": model}
    if name not in makers:
        raise ValueError(f"unknown init {name!r}; write one of: {SPEC_HELP}")
    try:
        return makers[name](**kwargs)
    except TypeError:
        raise ValueError(f"wrong arguments in init {spec!r}; write one of: {SPEC_HELP}") from None


def base_draw(key: jax.Array, family: str, shape: tuple[int, ...]) -> jax.Array:
    """The scale-free draw of a family: N(0,1) (also for `orthogonal`, orthogonalized per
    weight by `assemble`), U[-1,1] or zeros. (JAX is imported here and in the other functions
    that compute with it, not with the module: reading and labelling a law, `parse`, then needs
    NumPy only, and a report process does not start JAX, ~2.4 CPU-s.)"""
    import jax
    import jax.numpy as jnp

    if family in ("normal", "orthogonal"):
        return jax.random.normal(key, shape)
    if family == "uniform":
        return jax.random.uniform(key, shape, minval=-1.0, maxval=1.0)
    if family == "zeros":
        return jnp.zeros(shape)
    raise ValueError(f"unknown init family {family!r}; one of {FAMILIES}")


def _layer_scale(law: Init, fan_in: int, fan_out: int, value):
    if law.fan_scaled or value is None:
        return law.scale(fan_in, fan_out)
    if law.kind in ("scaled_normal", "scaled_orthogonal"):  # the member's sigma_w^2 (over this layer's fan-in)
        fan = fan_in if law.kind == "scaled_normal" else 1
        if isinstance(value, (int, float, np.number, np.ndarray)):  # in float32, as the draw
            return np.float32(np.sqrt(np.float32(value) / np.float32(fan)))
        import jax.numpy as jnp

        return jnp.sqrt(value / fan)  # traced
    return value


def semi_orthogonal(a):
    """The Haar-distributed semi-orthogonal matrix made from a Gaussian draw `a` (any shape;
    rank > 2 as (prod(shape[:-1]), shape[-1])): Q of a = QR times the signs of R's diagonal,
    QᵀQ = I (rows >= columns) or QQᵀ = I. NumPy arrays are decomposed in float64 on the host
    (the engine's starting state), JAX arrays with `jnp.linalg.qr` (traceable)."""
    shape = a.shape
    if isinstance(a, np.ndarray):
        xp = np
    else:
        import jax.numpy as xp
    m = a.reshape(-1, shape[-1]) if len(shape) != 1 else a.reshape(1, -1)
    tall = m.shape[0] >= m.shape[1]
    m = m if tall else m.T
    if xp is np:
        q, r = np.linalg.qr(m.astype(np.float64))
    else:
        q, r = xp.linalg.qr(m)
    q = q * xp.where(xp.diagonal(r) < 0, -1.0, 1.0).astype(q.dtype)
    q = q if tall else q.T
    return q.reshape(shape).astype(a.dtype)


def assemble(layout, w_all, b_all, weight_law: Init, bias_law: Init, weight_value=None, bias_value=None,
             own_leaves=None):
    """A parameter pytree from flat base draws (`w_all`: every weight's entries, layer after
    layer; `b_all`: every bias's), each layer's slice times its law's scale (`weight_value`
    /`bias_value` replace a fixed law's std or half-width). Tensors under the `model` law
    keep `own_leaves` (the model's own init, flattened)."""
    if own_leaves is None and "model" in (weight_law.kind, bias_law.kind):
        raise ValueError("the 'model' init law needs the model's own parameters (own_leaves)")
    if bias_law.family == "orthogonal":
        raise ValueError(f"{bias_law.spec} is a law for weight matrices; give the biases another law "
                         "(bias_init = \"zeros\" or \"normal(std=...)\")")
    leaves = list(own_leaves) if own_leaves is not None else [None] * layout.n_leaves
    i_w = i_b = 0
    for layer in layout.layers:
        for t, law, flat, value in ((layer.weight, weight_law, w_all, weight_value),
                                    (layer.bias, bias_law, b_all, bias_value)):
            if t is None:
                continue
            start = i_w if t.param == "w" else i_b
            if law.kind != "model":
                base = flat[start:start + t.size].reshape(t.shape)
                if law.family == "orthogonal":
                    base = semi_orthogonal(base)
                leaves[t.leaf] = base * _layer_scale(law, layer.fan_in, layer.fan_out, value)
            if t.param == "w":
                i_w += t.size
            else:
                i_b += t.size
    return layout.unflatten(leaves)
