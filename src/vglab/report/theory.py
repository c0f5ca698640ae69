"""Mean-field signal propagation at initialization: how pre-activations, correlations and
gradients change from layer to layer, and how deep a network can still be trained.

Sources: Poole, Lahiri, Raghu, Sohl-Dickstein & Ganguli (2016), "Exponential expressivity in
deep neural networks through transient chaos" (the length map, the correlation map, the
order-to-chaos transition); Schoenholz, Gilmer, Ganguli & Sohl-Dickstein (2017), "Deep
Information Propagation" (χ_1, the depth scales ξ, backpropagated gradients, trainability
up to about 6 ξ_c).

Setting. Hidden layers l = 1..L of width N_l (N_0 = the input dimension), weights of
variance v_l, biases of variance σ_b²; σ_w,l² = N_{l-1} · v_l. The activation is the
rescaled g(z) = α φ(z/α), g'(z) = φ'(z/α) (α = 1: the plain φ). Expectations are over
z, z1, z2 ~ N(0, 1) independent. In the wide-network limit the pre-activations are Gaussian:

Length map (Poole et al. 2016): the variance q_l of a pre-activation,

    q_1 = v_1 · E_x[Σ_i x_i²] + σ_b,1²
    q_l = σ_w,l² · E[g(√q_{l-1} z)²] + σ_b,l²                                  (`q_map`)

and with equal σ_w², σ_b² in every layer it converges to a fixed point q* = q_map(q*)
(`q_star`).

Gradients (Schoenholz et al. 2017): back-propagated errors δ^[l] = g'(z^[l]) ⊙ W^[l+1]ᵀ δ^[l+1]
change by

    χ_l = σ_w,l+1² · E[g'(√q_l z)²]      so   E‖δ^[l]‖² = χ_l · E‖δ^[l+1]‖²      (`chi`)

and at the fixed point by χ_1 = σ_w² E[g'(√q* z)²] per layer (`chi_1`): gradients vanish
(χ_1 < 1, the ordered phase) or explode (χ_1 > 1, the chaotic phase) geometrically, with
depth scale ξ_∇ = -1/ln χ_1 in the ordered phase. The weight gradient of layer l is the
outer product a^[l-1] δ^[l], so

    log ‖∂J/∂W^[l]‖² − log ‖∂J/∂W^[L]‖²
        = Σ_{k=l}^{L-1} log χ_k                                   (backward factor)
        + log A_{l-1} − log A_{L-1}                               (layer-input factor)

with A_0 = E‖x‖² and A_l = N_l · E[g(√q_l z)²]. `predict` returns both the backward
factor alone (Schoenholz et al.'s χ product: what the derivative-times-weight product of
the backprop formula predicts) and the full prediction including the layer inputs.

Correlation map (Poole et al. 2016): two inputs whose pre-activations have variance q* and
correlation c have, one layer on, correlation

    c' = (σ_w² E[g(u1) g(u2)] + σ_b²) / q*,
    u1 = √q* z1,   u2 = √q* (c z1 + √(1 − c²) z2)                              (`c_map`)

c = 1 is always a fixed point and its slope there is χ_1. On [0, 1] the map is increasing
and convex (E[g(u1) g(u2)] = Σ_k q*^k c^k / k! · E[g^(k)(√q* z)]², a series with
non-negative coefficients), so: in the ordered phase every c in [0, 1] flows to c* = 1;
in the chaotic phase to the unique c* < 1 (`c_star`; c* = 0 when σ_b² = 0 and g is odd).

Depth scale of correlations (Schoenholz et al. 2017): |c_l − c*| ~ exp(−l / ξ_c) with

    χ_c  = σ_w² E[g'(u1) g'(u2)]  at c = c*       (the map's slope at c*)       (`chi_c`)
    ξ_c  = −1 / ln χ_c,  i.e.  ξ_c = −1/ln χ_1 in the ordered phase (c* = 1, χ_c = χ_1)

ξ_c diverges on the critical line χ_1 = 1 (returned as inf). Schoenholz et al. found
(fully connected tanh networks on MNIST and CIFAR-10) that networks train up to a depth of about 6 ξ_c
and not beyond (`trainable_depth`, `TRAINABLE_XI`); `depth_scales` evaluates all of this
over a grid of σ_w² (the heat-map overlay) and `critical_sigma_w2` finds the critical line.

Rescaling (α): with ĥ = h/α the α-network is a standard φ-network with the same σ_w², bias
variance σ_b²/α² and inputs x/α (`vglab.nn.rescaling`). Hence q*(α, σ_w², σ_b²) =
α² q*(1, σ_w², σ_b²/α²), while χ_1, c*, χ_c and ξ_c at (α, σ_w², σ_b²) equal those at
(1, σ_w², σ_b²/α²): rescaling acts on the depth scales only through the biases.

Numerics: Gaussian expectations by Gauss–Hermite quadrature (probabilists' weight),
switching to composite Gauss–Legendre panels when √q exceeds the activation's scale α
(`gauss_expect`); the two-point expectations of the correlation map by an outer rule in u1
and, given u1, a panel rule in u2 split where g has its feature (`gauss_expect2`).

The single-input numerics (q*, χ_1, the critical σ_w², Gaussian expectations) live in
`vglab.nn.meanfield` (the spec resolves `sigma_w2=critical` there) and are re-exported here.
This module needs only numpy; `vglab.nn.init` is used to read init specs.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import numpy as np

from vglab.nn.meanfield import (  # noqa: F401  (re-exported: theory's names as before)
    ACTIVATIONS, KINKED, Q_MAX, Q_MIN, Q_RTOL, QUAD_POINTS, activation, bracketed_root, check_variances, chi, chi_1,
    critical_sigma_w2, gauss_expect, q_map, q_star, quad_rule)


@functools.lru_cache(maxsize=1)
def _split_rule(per_panel: int = 8, finest: int = 14, uniform: int = 8):
    """Gauss–Legendre nodes and weights on [0, 1] for an integrand with a feature at 0:
    panels halving towards 0 (down to 2^-finest) inside the first 1/uniform, uniform beyond."""
    t = {0.0} | {2.0 ** -k for k in range(int(math.log2(uniform)), finest + 1)} | {j / uniform for j in range(1, uniform + 1)}
    t = np.array(sorted(t))
    x, w = np.polynomial.legendre.leggauss(per_panel)
    a, b = t[:-1, None], t[1:, None]
    return (0.5 * (b - a) * x + 0.5 * (a + b)).ravel(), (0.5 * (b - a) * w + 0.0 * x).ravel()


SPLIT_RANGE = 10.0  # the inner rule covers ±10 conditional sd: the Gaussian mass beyond is 2e-23


def gauss_expect2(f, h, q: float, c: float, scale: float = 1.0, smooth: bool = True) -> float:
    """E[f(u1) h(u2)] for u1 = √q z1, u2 = √q (c z1 + √(1 − c²) z2), z1, z2 ~ N(0, 1).

    Taken as E_u1[f(u1) H(u1)] with H(u1) = E[h(c u1 + τ x)], τ = √(q (1 − c²)), x ~ N(0, 1).
    The outer rule in u1 is `gauss_expect`'s (its panels also refine down to the scale
    τ/|c| over which H varies when h has a kink). The inner integral over x is split at
    x* = −c u1/τ, where h has its feature (the spike of tanh', the step of relu'), and each
    side is integrated by `_split_rule`, refined towards x*: relu's E[relu'(u1) relu'(u2)] =
    (π − arccos c)/2π comes out to 1e-10 this way, while a tensor-product rule whose panels
    cannot follow the line u2 = 0 missed it by 3e-3 (measured for the tests)."""
    q = max(float(q), 0.0)
    c = min(max(float(c), -1.0), 1.0)
    sd = math.sqrt(q)
    tau = sd * math.sqrt(max(1.0 - c * c, 0.0))
    outer_scale = min(scale, tau / abs(c)) if (not smooth and tau > 0 and c != 0) else scale
    u1, w1 = quad_rule(sd, outer_scale, smooth)
    m = c * u1
    if tau == 0.0:
        return float(np.sum(w1 * f(u1) * h(m)))
    t, wt = _split_rule()
    xk = np.clip(-m / tau, -SPLIT_RANGE, SPLIT_RANGE)[:, None]
    inner = np.zeros_like(u1)
    for sign, length in ((-1.0, xk + SPLIT_RANGE), (1.0, SPLIT_RANGE - xk)):
        x = xk + sign * length * t
        wx = length * wt * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        inner += np.sum(wx * h(m[:, None] + tau * x), axis=1)
    return float(np.sum(w1 * f(u1) * inner))


# ------------------------------------------------ fixed points, correlations, depth scales
C_ATOL = 1e-12  # c* to this absolute tolerance
CRITICAL_TOL = 1e-10  # |χ_1 − 1| at most this: on the critical line (ξ_c = inf)
TRAINABLE_XI = 6.0  # Schoenholz et al. 2017: networks train up to a depth of about 6 ξ_c


def _pair_q(name: str, alpha: float, sigma_w2: float, sigma_b2: float, q: float | None) -> float:
    q = q_star(name, alpha, sigma_w2, sigma_b2) if q is None else float(q)
    if not math.isfinite(q):
        raise ValueError(f"{name} at sigma_w2={sigma_w2:g} has no finite fixed point q* (the pre-activations grow "
                         "without bound), so the correlation map is not defined; use a smaller sigma_w2")
    return max(q, Q_MIN)  # q* = 0 (σ_b² = 0, ordered): the map's limit as q -> 0


def c_map(c: float, name: str, alpha: float, sigma_w2: float, sigma_b2: float, *, q: float | None = None) -> float:
    """c' = (σ_w² E[g(u1) g(u2)] + σ_b²) / q*, u1 = √q* z1, u2 = √q* (c z1 + √(1 − c²) z2)
    (Poole et al. 2016): the correlation of two inputs' pre-activations one layer on, at the
    fixed point q* (computed unless given as `q`). The denominator is taken as q_map(q), which
    is q* at the fixed point and keeps c_map(1) = 1 to rounding. At q* = 0 (σ_b² = 0,
    ordered) the map is its limit q -> 0."""
    q = _pair_q(name, alpha, sigma_w2, sigma_b2, q)
    g, _ = activation(name, alpha)
    e = gauss_expect2(g, g, q, c, scale=alpha, smooth=name not in KINKED)
    return (sigma_w2 * e + sigma_b2) / q_map(q, name, alpha, sigma_w2, sigma_b2)


def chi_c(c: float, name: str, alpha: float, sigma_w2: float, sigma_b2: float, *, q: float | None = None) -> float:
    """χ_c = σ_w² E[g'(u1) g'(u2)] (Schoenholz et al. 2017): the slope of the correlation map
    at c (u1, u2 as in `c_map`); χ_c(1) = χ_1."""
    q = _pair_q(name, alpha, sigma_w2, sigma_b2, q)
    _, dg = activation(name, alpha)
    return sigma_w2 * gauss_expect2(dg, dg, q, c, scale=alpha, smooth=name not in KINKED)


def c_star(name: str, alpha: float, sigma_w2: float, sigma_b2: float, *, q: float | None = None) -> float:
    """The stable fixed point of the correlation map on [0, 1] (Poole et al. 2016).

    The map is increasing and convex on [0, 1] with c_map(1) = 1 and slope χ_1 there. Ordered
    phase (χ_1 <= 1): c* = 1. Chaotic phase: the unique root of c_map(c) − c in [0, 1), which
    is 0 when c_map(0) = 0 (σ_b² = 0 and g odd), found to an absolute tolerance C_ATOL = 1e-12.
    At q* = 0 (σ_b² = 0, ordered) c* = 1 is the limit σ_b² -> 0 (at σ_b² = 0 exactly a tanh
    net is linear there and keeps every correlation)."""
    q = _pair_q(name, alpha, sigma_w2, sigma_b2, q)
    if chi(q, name, alpha, sigma_w2) <= 1.0 + CRITICAL_TOL:
        return 1.0

    def gap(c):
        return c_map(c, name, alpha, sigma_w2, sigma_b2, q=q) - c

    f_lo = gap(0.0)
    if f_lo <= C_ATOL:
        return 0.0
    lo = 0.0
    for k in range(3, 13):  # c_map(c) < c just below 1, by about (χ_1 − 1)(1 − c)
        hi = 1.0 - 10.0 ** -k
        f_hi = gap(hi)
        if f_hi <= 0:
            return bracketed_root(gap, lo, hi, f_lo, f_hi, lambda a, b: b - a <= C_ATOL)
        lo, f_lo = hi, f_hi
    return 1.0  # within 1e-12 of 1: on the critical line to the quadrature's precision


@dataclass(frozen=True)
class DepthScales:
    """The mean-field fixed point of one (activation, α, σ_w², σ_b²) and its depth scales."""

    activation: str
    alpha: float
    sigma_w2: float
    sigma_b2: float
    q_star: float  # the fixed point of the length map
    chi_1: float  # σ_w² E[g'(√q* z)²]: gradient factor per layer
    c_star: float  # the stable fixed point of the correlation map
    chi_c: float  # the correlation map's slope at c*
    xi_c: float  # −1/ln χ_c: the depth scale of correlations (inf on the critical line)
    phase: str  # "ordered" (χ_1 < 1), "critical", "chaotic" (χ_1 > 1), or "unbounded" (no finite q*)

    @property
    def xi_grad(self) -> float:
        """ξ_∇ = −1/ln χ_1 (Schoenholz et al. 2017): E‖δ‖² changes by a factor e every |ξ_∇|
        layers, shrinking towards the input when ξ_∇ > 0 (ordered), growing when ξ_∇ < 0."""
        if not self.chi_1 > 0:  # NaN (unbounded) or a zero derivative
            return float("nan") if math.isnan(self.chi_1) else 0.0
        return math.inf if self.chi_1 == 1.0 else -1.0 / math.log(self.chi_1)

    @property
    def trainable_depth(self) -> float:
        """6 ξ_c: the deepest network Schoenholz et al. (2017) found trainable at these variances."""
        return TRAINABLE_XI * self.xi_c


def _xi(chi_value: float) -> float:
    """−1/ln χ for 0 <= χ <= 1 (0 at χ = 0, inf at χ = 1)."""
    if chi_value <= 0.0:
        return 0.0
    if chi_value >= 1.0:
        return math.inf
    return -1.0 / math.log(chi_value)


def depth_scales(name: str, alpha: float, sigma_w2: float, sigma_b2: float) -> DepthScales:
    """q*, χ_1, c*, χ_c and ξ_c for one setting (Poole et al. 2016; Schoenholz et al. 2017).

    ordered  (χ_1 < 1): c* = 1, χ_c = χ_1, ξ_c = −1/ln χ_1
    critical (|χ_1 − 1| <= CRITICAL_TOL): ξ_c = inf
    chaotic  (χ_1 > 1): c* < 1 from `c_star`, χ_c = σ_w² E[g'(u1) g'(u2)] at c*, ξ_c = −1/ln χ_c
    unbounded (no finite q*, relu at σ_w² >= 2): every depth scale NaN."""
    check_variances(sigma_w2, sigma_b2)
    q = q_star(name, alpha, sigma_w2, sigma_b2)
    if not math.isfinite(q):
        nan = float("nan")
        return DepthScales(name, alpha, sigma_w2, sigma_b2, q, nan, nan, nan, nan, "unbounded")
    c1 = chi(q, name, alpha, sigma_w2)
    if abs(c1 - 1.0) <= CRITICAL_TOL:
        return DepthScales(name, alpha, sigma_w2, sigma_b2, q, c1, 1.0, c1, math.inf, "critical")
    if c1 < 1.0:
        return DepthScales(name, alpha, sigma_w2, sigma_b2, q, c1, 1.0, c1, _xi(c1), "ordered")
    cs = c_star(name, alpha, sigma_w2, sigma_b2, q=q)
    cc = chi_c(cs, name, alpha, sigma_w2, sigma_b2, q=q) if cs < 1.0 else 1.0
    return DepthScales(name, alpha, sigma_w2, sigma_b2, q, c1, cs, cc, _xi(cc), "chaotic")


def trainable_depth(name: str, alpha: float, sigma_w2: float, sigma_b2: float) -> float:
    """6 ξ_c (Schoenholz et al. 2017): about the deepest trainable network at these variances."""
    return depth_scales(name, alpha, sigma_w2, sigma_b2).trainable_depth


@dataclass(frozen=True)
class DepthScaleGrid:
    """`depth_scales` over a grid of σ_w² (one entry per value, in the order given)."""

    activation: str
    alpha: float
    sigma_b2: float
    sigma_w2: np.ndarray
    q_star: np.ndarray
    chi_1: np.ndarray
    c_star: np.ndarray
    chi_c: np.ndarray
    xi_c: np.ndarray
    phase: tuple[str, ...]

    @property
    def trainable_depth(self) -> np.ndarray:
        return TRAINABLE_XI * self.xi_c


def depth_scale_grid(name: str, alpha: float, sigma_w2s, sigma_b2: float) -> DepthScaleGrid:
    """`depth_scales` for every σ_w² in `sigma_w2s` (e.g. the 6 ξ_c curve over a heat map of
    depth × σ_w²). Each value costs a few ms in the ordered phase and ~0.1-0.5 s in the chaotic
    phase (the correlation map's fixed point: two-dimensional quadratures)."""
    w = np.atleast_1d(np.asarray(sigma_w2s, dtype=float))
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"sigma_w2s must be a non-empty 1-D sequence of variances, got shape {w.shape}")
    rows = [depth_scales(name, alpha, float(v), float(sigma_b2)) for v in w]
    col = lambda k: np.array([getattr(r, k) for r in rows], dtype=float)  # noqa: E731
    return DepthScaleGrid(name, float(alpha), float(sigma_b2), w, col("q_star"), col("chi_1"), col("c_star"),
                          col("chi_c"), col("xi_c"), tuple(r.phase for r in rows))


# --------------------------------------------------------------------------- inits
def weight_variance(spec: str, fan_in: int, fan_out: int) -> float:
    """The variance of one weight under the init `spec` (e.g. 'normal(std=10)' -> 100)."""
    from vglab.nn.init import parse

    return parse(spec).variance(fan_in, fan_out)


def bias_variance(label: str | None, weight_spec: str | None = None) -> float:
    """The variance of one bias from its init label ('N(0, std=0.05)', 'U[-1, 1]', 'zeros').

    Without a readable label, the engine's default: biases follow a fixed-scale weight
    law, and are zero for the fan-scaled laws (Glorot, He)."""
    if label:
        m = re.fullmatch(r"\s*N\(0,\s*std=([^)]+)\)\s*", label)
        if m:
            return float(m.group(1)) ** 2
        m = re.fullmatch(r"\s*N\(0,\s*variance=([^)]+)\)\s*", label)
        if m:
            return float(m.group(1))
        m = re.fullmatch(r"\s*U\[-([^,]+),[^\]]*\]\s*", label)
        if m:
            return float(m.group(1)) ** 2 / 3.0
        if label.strip().lower() in ("zeros", "zero", "0"):
            return 0.0
    if weight_spec:
        from vglab.nn.init import parse

        law = parse(weight_spec)
        if law.fan_scaled or law.kind == "zeros":
            return 0.0
        return weight_variance(weight_spec, 1, 1)
    raise ValueError(f"cannot read the bias init {label!r}")


def run_bias_variance(row, weight_spec: str | None = None) -> float:
    """σ_b² of one run: as the runner stored it when it trained it (run.json `bias_var`, the
    bias law's variance); only runs stored before that column read it from their init label
    (`bias_variance`)."""
    stored = row.get("bias_var")
    if stored is not None and np.isfinite(float(stored)):
        return float(stored)
    label = row.get("bias_init")
    return bias_variance(label if isinstance(label, str) else None, weight_spec)


# ------------------------------------------------------------------------- predict
@dataclass
class Prediction:
    """Per hidden layer l = 1..L (index 0..L-1)."""

    q: np.ndarray  # pre-activation variance q_l
    chi: np.ndarray  # χ_l (χ_L uses the output layer's σ_w²)
    input_norm: np.ndarray  # A_{l-1} = E‖a^[l-1]‖² (A_0 = E‖x‖²)
    log_rel_backward: np.ndarray  # Σ_{k=l}^{L-1} log χ_k       (natural log, 0 at l = L)
    log_rel_full: np.ndarray  # + log A_{l-1} − log A_{L-1}

    @property
    def depth(self) -> int:
        return len(self.q)

    def slope(self, full: bool = False) -> float:
        """Least-squares slope of log10 ‖∂J/∂W^[l]‖² per layer (positive: grows towards the output)."""
        y = (self.log_rel_full if full else self.log_rel_backward) / math.log(10)
        return _slope(y)


def _slope(y) -> float:
    y = np.asarray(y, float)
    x = np.arange(len(y), dtype=float)
    ok = np.isfinite(y)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(x[ok], y[ok], 1)[0])


def predict(depth: int, width: int, n_in: int, activation_name: str, alpha: float = 1.0, *,
            weight_var=None, bias_var: float = 0.0, input_sq_norm: float | None = None,
            n_out: int = 10, weight_spec: str | None = None) -> Prediction:
    """Mean-field prediction for an MLP n_in -> depth x width -> n_out of `activation_name`
    (no default: the report passes what each run stored, `compare`).

    Give the weight variance either as `weight_var` (a number, or a function
    (fan_in, fan_out) -> variance) or as an init `weight_spec` ('normal(std=0.05)').
    `input_sq_norm` is E_x‖x‖² over the inputs; without it, inputs are taken as uniform on
    [-1, 1] (E x_i² = 1/3)."""
    if weight_spec is not None:
        var = lambda fi, fo: weight_variance(weight_spec, fi, fo)  # noqa: E731
    elif callable(weight_var):
        var = weight_var
    elif weight_var is not None:
        var = lambda fi, fo, v=float(weight_var): v  # noqa: E731
    else:
        raise ValueError("give weight_var or weight_spec")
    fans = [(n_in, width)] + [(width, width)] * (depth - 1) + [(width, n_out)]
    v = [var(fi, fo) for fi, fo in fans]  # per weight layer, including the output layer
    sw2 = [fi * vi for (fi, _), vi in zip(fans, v)]
    a0 = float(input_sq_norm) if input_sq_norm is not None else n_in / 3.0
    g, _ = activation(activation_name, alpha)
    q = np.empty(depth)
    q[0] = v[0] * a0 + bias_var
    for l in range(1, depth):
        q[l] = q_map(q[l - 1], activation_name, alpha, sw2[l], bias_var)
    chis = np.array([chi(q[l], activation_name, alpha, sw2[l + 1]) for l in range(depth)])
    a = np.array([a0] + [width * gauss_expect(lambda z: g(z) ** 2, q[l], scale=alpha,
                                               smooth=activation_name not in KINKED) for l in range(depth - 1)])
    with np.errstate(divide="ignore"):
        log_chi = np.log(chis)
        back = np.array([log_chi[l:depth - 1].sum() for l in range(depth)])
        full = back + np.log(a) - np.log(a[-1])
    return Prediction(q, chis, a, back, full)


STORED_INPUTS = ("n_in", "input_sq_norm", "bias_var", "n_classes")  # runs columns the prediction reads
OLD_RESULTS = ("these runs were stored before vglab recorded the inputs the mean-field prediction needs "
               f"({', '.join(STORED_INPUTS)} in run.json); delete the runs folder and re-run the same `vglab run` "
               "command to train and store them again")


def stored_inputs(row) -> tuple[int, float | None, float] | None:
    """(n_in, E‖x‖², σ_b²) of a run as the runner stored them when it trained it (the input
    width and E_x‖x‖² of the inputs the model saw, the bias law's variance): never worked
    out again from the dataset's name, the parameter count or the labels. None for runs
    stored before these columns (`OLD_RESULTS`); E‖x‖² None when it was not stored."""
    get = row.get if hasattr(row, "get") else (lambda k, d=None: getattr(row, k, d))
    vals = {k: get(k) for k in STORED_INPUTS}
    if any(v is None or not np.isfinite(float(v)) for k, v in vals.items() if k != "input_sq_norm"):
        return None
    x2 = vals["input_sq_norm"]
    return int(vals["n_in"]), (float(x2) if x2 is not None and np.isfinite(float(x2)) else None), float(vals["bias_var"])


# ------------------------------------------------------------ against measurements
@dataclass
class Comparison:
    """Theory vs measurement for one configuration (label), per hidden layer, in log10 of
    the squared weight-gradient norm relative to the last hidden layer."""

    label: str
    depth: int
    activation: str
    alpha: float
    weight_spec: str
    pred_backward: np.ndarray  # [depth]
    pred_full: np.ndarray  # [depth]
    measured: np.ndarray  # [seed, depth]
    input_assumed: bool  # True when E‖x‖² was not stored with the runs and 1/3 per feature was assumed
    prediction: Prediction
    epoch: int = 1  # the recorded epoch measured (its statistics cover every step since epoch 0)
    diverged: int = 0  # runs of this configuration left out: they diverged
    runs: int = 0  # runs measured

    @property
    def measured_ok(self) -> bool:
        """Some run has a finite measurement (all diverged: nothing to compare)."""
        return bool(np.isfinite(self.measured).any())

    @property
    def slope_backward(self) -> float:
        return _slope(self.pred_backward)

    @property
    def slope_full(self) -> float:
        return _slope(self.pred_full)

    @property
    def slope_measured(self) -> float:
        return _slope(np.nanmean(self.measured, 0)) if self.measured_ok else float("nan")

    @property
    def first_vs_last(self) -> dict:
        """log10 ‖∂J/∂W^[1]‖² − log10 ‖∂J/∂W^[L]‖²: predicted (both ways) and measured."""
        first = self.measured[:, 0]
        return {"backward": float(self.pred_backward[0]), "full": float(self.pred_full[0]),
                "measured": float(np.nanmean(first)) if np.isfinite(first).any() else float("nan")}


def compare(res, labels=None, epoch: int | None = None, min_depth: int = 2) -> list[Comparison]:
    """The mean-field prediction against the measured per-layer gradient norms
    (`grad_norm_mean` of `w` in `epoch`, default the first recorded epoch after
    initialization) for every MLP configuration of `res`. Runs that diverged are left
    out (counted in `Comparison.diverged`); if all did, `measured` is NaN."""
    from vglab.report import tables

    r = tables.runs(res)
    out = []
    g = res.grads
    if g.empty or not len(r):
        return out
    epoch = tables.first_recorded_epoch(res) if epoch is None else epoch
    g = g[(g["param"] == "w") & (g["epoch"] == epoch)]
    for label in tables.label_order(r):
        if labels is not None and label not in labels:
            continue
        rows = r[r["label"] == label]
        row = rows.iloc[0]
        if str(row["network"]) != "mlp" or not np.isfinite(float(row["depth"])) or int(row["depth"]) < min_depth:
            continue
        if str(row["activation"]) not in ACTIVATIONS or not row.get("weight_init_spec"):
            continue
        if float(row.get("residual") or 0.0) > 0 or str(row.get("norm") or "none") == "layer":
            continue  # skips or normalization: the mean-field maps here have no model of them
        depth, width = int(row["depth"]), int(row["width"])
        facts = stored_inputs(row)
        if facts is None:
            continue  # stored before the runner recorded the inputs: `stored_inputs` says what to do
        n_in, x2, b_var = facts
        assumed = x2 is None
        n_out = int(row["n_classes"])
        try:
            pred = predict(depth, width, n_in, str(row["activation"]), float(row["alpha"]),
                           weight_spec=str(row["weight_init_spec"]), bias_var=b_var, input_sq_norm=x2, n_out=n_out)
        except ValueError:
            continue
        meas, diverged = [], 0
        for rid, div in zip(rows["run_id"], rows["diverged_epoch"]):
            s = g[(g["run_id"] == rid) & (g["layer_index"] < depth)].sort_values("layer_index")
            if len(s) != depth:
                continue
            if div is not None and not (isinstance(div, float) and math.isnan(div)):
                diverged += 1
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                v = 2 * np.log10(s["grad_norm_mean"].to_numpy(float))
            meas.append(v - v[-1])
        if not meas and not diverged:
            continue
        out.append(Comparison(label, depth, str(row["activation"]), float(row["alpha"]), str(row["weight_init_spec"]),
                              pred.log_rel_backward / math.log(10), pred.log_rel_full / math.log(10),
                              np.array(meas) if meas else np.full((1, depth), np.nan), assumed, pred, epoch,
                              diverged, len(meas)))
    return out
