"""Mean-field signal propagation, the part the layers below the report need: the length
map's fixed point q*, the gradient factor χ_1 per layer, and the critical σ_w² where χ_1 = 1
(Poole et al. 2016; Schoenholz et al. 2017). A spec's `init = "orthogonal(sigma_w2=critical)"`
is resolved here (`vglab.experiments.expansion.resolve_critical`), so the experiments layer does not import the
report; `vglab.report.theory` builds the correlation map, the depth scales and the
predictions on these functions (its docstring states the equations).

Numerics: Gaussian expectations by Gauss–Hermite quadrature (probabilists' weight),
switching to composite Gauss–Legendre panels when √q exceeds the activation's scale α
(`gauss_expect`). NumPy only: no JAX is imported.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numpy.polynomial.hermite_e import hermegauss

from vglab.nn.formulas import FORMULAS, numpy_pair

QUAD_POINTS = 200  # even: no node at 0, so relu's step is integrated exactly by symmetry

# ----------------------------------------------------------------- activations (numpy)
# The formulas are vglab.nn.formulas' (the ones training uses), evaluated in float64 NumPy.
ACTIVATIONS = {name: numpy_pair(name) for name in FORMULAS}
KINKED = {name for name, f in FORMULAS.items() if not f.smooth}  # integrated by panels with a break at 0


def activation(name: str, alpha: float = 1.0):
    """(g, g') of the rescaled activation g(z) = alpha * phi(z / alpha)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"no mean-field model for activation {name!r}; one of {sorted(ACTIVATIONS)}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    fn, deriv = ACTIVATIONS[name]
    return (lambda z: alpha * fn(z / alpha)), (lambda z: deriv(z / alpha))


@functools.lru_cache(maxsize=4)
def _nodes(n: int):
    x, w = hermegauss(n)
    return x, w / math.sqrt(2.0 * math.pi)  # weights of E over N(0, 1): they sum to 1


@functools.lru_cache(maxsize=64)
def _panel_nodes(sd: float, scale: float, per_panel: int = 24):
    """Composite Gauss–Legendre nodes and N(0, sd²)-weights on the u-line, with panel
    breaks at 0, ±scale·2^k (the activation's features) and out to ±12 sd (the Gaussian's)."""
    top = 12.0 * sd
    breaks = [0.0] + [scale * 2.0 ** k for k in range(-6, 60) if scale * 2.0 ** k < top] + [top]
    breaks = np.array(sorted(set(breaks)))
    x, w = np.polynomial.legendre.leggauss(per_panel)
    us, ws = [], []
    for a, b in zip(breaks[:-1], breaks[1:]):
        u = 0.5 * (b - a) * x + 0.5 * (a + b)
        us.append(u)
        ws.append(0.5 * (b - a) * w * np.exp(-0.5 * (u / sd) ** 2) / (sd * math.sqrt(2.0 * math.pi)))
    u, wt = np.concatenate(us), np.concatenate(ws)
    return np.concatenate([-u[::-1], u]), np.concatenate([wt[::-1], wt])


def quad_rule(sd: float, scale: float, smooth: bool, n: int = QUAD_POINTS):
    """Nodes u and weights of E over u ~ N(0, sd²): Hermite while sd <= scale and the
    integrand is smooth, else the panels of `_panel_nodes`."""
    if sd == 0.0:
        return np.zeros(1), np.ones(1)
    if smooth and sd <= scale:
        x, w = _nodes(n)
        return sd * x, w
    return _panel_nodes(sd, float(scale))


def gauss_expect(f, q: float, n: int = QUAD_POINTS, scale: float = 1.0, smooth: bool = True) -> float:
    """E[f(√q · z)] for z ~ N(0, 1).

    Gauss–Hermite quadrature (`n` nodes) while the integrand varies slowly on the nodes'
    spacing, i.e. while √q is at most `scale` (the width of the activation's features, α
    for a rescaled activation). For larger q the integrand in z is a spike of width
    scale/√q that Hermite nodes miss (tanh'² at √q = 30: Hermite gives 5e-6, the truth is
    0.018), so the integral is taken in u = √q z by composite Gauss–Legendre panels that
    resolve both the activation's features and the Gaussian. An integrand with a kink at 0
    (`smooth=False`: relu, softsign) always takes the panels, which break at 0."""
    q = max(float(q), 0.0)
    if q == 0.0:
        return float(f(np.zeros(1))[0])
    u, w = quad_rule(math.sqrt(q), scale, smooth, n)
    return float(np.sum(w * f(u)))


def q_map(q: float, name: str, alpha: float, sigma_w2: float, sigma_b2: float) -> float:
    """The variance of the next layer's pre-activations given this layer's q."""
    g, _ = activation(name, alpha)
    return sigma_w2 * gauss_expect(lambda z: g(z) ** 2, q, scale=alpha, smooth=name not in KINKED) + sigma_b2


def chi(q: float, name: str, alpha: float, sigma_w2_next: float) -> float:
    """χ = σ_w² E[g'(√q z)²]: the factor by which E‖δ‖² shrinks through one layer."""
    _, dg = activation(name, alpha)
    return sigma_w2_next * gauss_expect(lambda z: dg(z) ** 2, q, scale=alpha, smooth=name not in KINKED)


Q_RTOL = 1e-12  # q* to this relative tolerance
Q_MIN = 1e-30  # iterates falling below this are at the fixed point q* = 0
Q_MAX = 1e30  # iterates rising above this have no finite fixed point (relu at σ_w² >= 2)


def check_variances(sigma_w2: float, sigma_b2: float) -> None:
    if not (math.isfinite(sigma_w2) and sigma_w2 > 0):
        raise ValueError(f"sigma_w2 must be a finite number > 0 (N_in × the weight variance), got {sigma_w2}")
    if not (math.isfinite(sigma_b2) and sigma_b2 >= 0):
        raise ValueError(f"sigma_b2 must be a finite number >= 0 (the bias variance), got {sigma_b2}")


def bracketed_root(fn, lo: float, hi: float, f_lo: float, f_hi: float, done) -> float:
    """A root of `fn` between lo (fn > 0) and hi (fn <= 0): Illinois false position, which
    keeps the bracket and converges superlinearly (about 10 evaluations where bisection needs
    40); stops when `done(lo, hi)`."""
    side = 0
    x = hi
    for _ in range(300):
        if done(lo, hi):
            break
        x = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
        if not lo < x < hi:
            x = 0.5 * (lo + hi)
        fx = fn(x)
        if fx > 0:
            lo, f_lo = x, fx
            if side == 1:
                f_hi *= 0.5
            side = 1
        else:
            hi, f_hi = x, fx
            if side == -1:
                f_lo *= 0.5
            side = -1
        if fx == 0:
            return x
    return 0.5 * (lo + hi)


def q_star(name: str, alpha: float, sigma_w2: float, sigma_b2: float, *, q0: float = 1.0) -> float:
    """The fixed point q* = q_map(q*) that the length map reaches from q0 (Poole et al. 2016).

    q_map is increasing in q, so iterates from q0 move monotonically to the first fixed point
    in the direction q_map(q0) − q0 points. Plain iteration converges only algebraically at
    the critical line (tanh at σ_w² = 1, σ_b² = 0: q_l ≈ 1/(2l), a million layers to reach
    1e-6), so the fixed point is bracketed (doubling or halving q0) and then solved to a
    relative tolerance Q_RTOL = 1e-12. Returns 0.0 when the iterates fall below Q_MIN = 1e-30
    (σ_b² = 0 in the ordered phase: the signal dies) and inf when they pass Q_MAX = 1e30 (relu
    with σ_w² >= 2: no finite fixed point)."""
    check_variances(sigma_w2, sigma_b2)
    if not (math.isfinite(q0) and q0 > 0):
        raise ValueError(f"q0 must be a finite number > 0 (the starting variance), got {q0}")

    def gap(q):
        return q_map(q, name, alpha, sigma_w2, sigma_b2) - q

    g0 = gap(q0)
    if abs(g0) <= Q_RTOL * q0:
        return float(q0)
    if g0 > 0:  # rising: the first root above q0
        lo, f_lo, hi = q0, g0, 2.0 * q0
        while (f_hi := gap(hi)) > 0:
            if hi > Q_MAX:
                return math.inf
            lo, f_lo, hi = hi, f_hi, 2.0 * hi
    else:  # falling: the first root below q0
        hi, f_hi, lo = q0, g0, 0.5 * q0
        while (f_lo := gap(lo)) <= 0:
            if lo < Q_MIN:
                return 0.0
            hi, f_hi, lo = lo, f_lo, 0.5 * lo
    return bracketed_root(gap, lo, hi, f_lo, f_hi, lambda a, b: b - a <= Q_RTOL * b)


def chi_1(name: str, alpha: float, sigma_w2: float, sigma_b2: float, *, q: float | None = None) -> float:
    """χ_1 = σ_w² E[g'(√q* z)²] (Schoenholz et al. 2017): the factor by which E‖δ‖² changes per
    layer at the fixed point q* (computed unless given as `q`)."""
    q = q_star(name, alpha, sigma_w2, sigma_b2) if q is None else q
    return chi(q, name, alpha, sigma_w2)


@functools.lru_cache(maxsize=64)  # pure; a spec resolves each configuration's many times
def critical_sigma_w2(name: str, alpha: float, sigma_b2: float, *, rtol: float = 1e-10) -> float:
    """The σ_w² on the order-to-chaos line, χ_1(σ_w², σ_b²) = 1 (Poole et al. 2016), to a
    relative tolerance `rtol`. χ_1 rises with σ_w² (checked on a grid in the tests), so the
    root is bracketed by doubling from σ_w² = 1 and solved by false position."""
    def gap(w):  # > 0 below the line
        return 1.0 - chi_1(name, alpha, w, sigma_b2)

    lo, hi = 1.0, 1.0
    f_lo = f_hi = gap(1.0)
    while f_lo <= 0:
        hi, f_hi, lo = lo, f_lo, lo / 2
        if lo < 1e-12:
            raise ValueError(f"{name} has no order-to-chaos transition at sigma_b2={sigma_b2:g}: chi_1 >= 1 down to "
                             "sigma_w2 = 1e-12")
        f_lo = gap(lo)
    while f_hi > 0:
        lo, f_lo, hi = hi, f_hi, hi * 2
        if hi > 1e12:
            raise ValueError(f"{name} has no order-to-chaos transition at sigma_b2={sigma_b2:g}: chi_1 < 1 up to "
                             "sigma_w2 = 1e12")
        f_hi = gap(hi)
    return bracketed_root(gap, lo, hi, f_lo, f_hi, lambda a, b: b - a <= rtol * b)
