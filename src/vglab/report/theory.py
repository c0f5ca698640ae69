"""Mean-field prediction of how gradients shrink (or grow) from layer to layer at initialization.

For a fully connected network of hidden layers l = 1..L (width N_l, N_0 = the input
dimension) with weights of variance v_l and biases of variance σ_b², write
σ_w,l² = N_{l-1} · v_l. The pre-activations of layer l are (in the wide-network limit)
Gaussian with variance q_l (Poole et al. 2016; Schoenholz et al. 2017):

    q_1 = v_1 · E_x[Σ_i x_i²] + σ_b,1²
    q_l = σ_w,l² · E_z[g(√q_{l-1} z)²] + σ_b,l²           z ~ N(0, 1)

and back-propagated errors δ^[l] = g'(z^[l]) ⊙ W^[l+1] δ^[l+1] change by

    χ_l = σ_w,l+1² · E_z[g'(√q_l z)²]      so   E‖δ^[l]‖² = χ_l · E‖δ^[l+1]‖².

g is the (rescaled) activation g(z) = α φ(z/α), g'(z) = φ'(z/α). The weight gradient of
layer l is the outer product a^[l-1] δ^[l], so

    log ‖∂J/∂W^[l]‖² − log ‖∂J/∂W^[L]‖²
        = Σ_{k=l}^{L-1} log χ_k                                   (backward factor)
        + log A_{l-1} − log A_{L-1}                               (layer-input factor)

with A_0 = E‖x‖² and A_l = N_l · E_z[g(√q_l z)²]. `predict` returns both the backward
factor alone (Schoenholz et al.'s χ product: what the derivative-times-weight product of
the backprop formula predicts) and the full prediction including the layer inputs.
Gaussian expectations are computed by Gauss–Hermite quadrature (probabilists' weight),
switching to composite Gauss–Legendre panels when √q exceeds the activation's scale α
(see `gauss_expect`).

This module needs only numpy; `vglab.nn.init` is used to read init specs.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import numpy as np
from numpy.polynomial.hermite_e import hermegauss

QUAD_POINTS = 200  # even: no node at 0, so relu's step is integrated exactly by symmetry

# ----------------------------------------------------------------- activations (numpy)
_sig = lambda z: 0.5 * (1.0 + np.tanh(0.5 * z))  # noqa: E731  (no overflow)

ACTIVATIONS = {
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "sigmoid": (_sig, lambda z: _sig(z) * (1.0 - _sig(z))),
    "arctan": (np.arctan, lambda z: 1.0 / (1.0 + z * z)),
    "softsign": (lambda z: z / (1.0 + np.abs(z)), lambda z: 1.0 / (1.0 + np.abs(z)) ** 2),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(float)),
}
KINKED = {"softsign", "relu"}  # not smooth at 0: integrated by panels with a break there


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
    sd = math.sqrt(q)
    if sd == 0.0:
        return float(f(np.zeros(1))[0])
    if smooth and sd <= scale:
        x, w = _nodes(n)
        return float(np.sum(w * f(sd * x)))
    u, w = _panel_nodes(sd, float(scale))
    return float(np.sum(w * f(u)))


def q_map(q: float, name: str, alpha: float, sigma_w2: float, sigma_b2: float) -> float:
    """The variance of the next layer's pre-activations given this layer's q."""
    g, _ = activation(name, alpha)
    return sigma_w2 * gauss_expect(lambda z: g(z) ** 2, q, scale=alpha, smooth=name not in KINKED) + sigma_b2


def chi(q: float, name: str, alpha: float, sigma_w2_next: float) -> float:
    """χ = σ_w² E[g'(√q z)²]: the factor by which E‖δ‖² shrinks through one layer."""
    _, dg = activation(name, alpha)
    return sigma_w2_next * gauss_expect(lambda z: dg(z) ** 2, q, scale=alpha, smooth=name not in KINKED)


# --------------------------------------------------------------------------- inits
def weight_variance(spec: str, fan_in: int, fan_out: int) -> float:
    """The variance of one weight under the init `spec` (e.g. 'normal(std=10)' -> 100)."""
    from vglab.nn.init import parse

    law = parse(spec)
    s = law.scale(fan_in, fan_out)
    return s * s if law.family == "normal" else (s * s / 3.0 if law.family == "uniform" else 0.0)


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


def predict(depth: int, width: int, n_in: int, activation_name: str = "tanh", alpha: float = 1.0, *,
            weight_var=None, bias_var: float = 0.0, input_sq_norm: float | None = None,
            n_out: int = 10, weight_spec: str | None = None) -> Prediction:
    """Mean-field prediction for an MLP n_in -> depth x width -> n_out.

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


@functools.lru_cache(maxsize=16)
def input_sq_norm(dataset: str, train_size: int | None = None, data_dir: str | None = None) -> tuple[float, int] | None:
    """(E_x‖x‖², n_in) of the MLP inputs of `dataset` as the trainer saw them, or None when
    the data is not available locally (nothing is downloaded)."""
    try:
        from vglab.data import prepare

        arr = prepare(dataset, "mlp", data_dir=data_dir, train_size=train_size or None, download=False)
    except Exception:  # not available here: the caller falls back and says so
        return None
    x = np.asarray(arr.x_train, np.float64)
    return float(np.mean(np.sum(x * x, axis=1))), int(x.shape[1])


def n_in_from_params(n_params: int, depth: int, width: int, n_out: int = 10) -> int:
    """The MLP input dimension implied by its parameter count."""
    rest = n_params - width - (depth - 1) * (width * width + width) - (width * n_out + n_out)
    return int(round(rest / width))


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
    input_assumed: bool  # True when E‖x‖² was not available and 1/3 per feature was assumed
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
        depth, width = int(row["depth"]), int(row["width"])
        ds = row.get("dataset") or (res.spec.get("dataset") if isinstance(res.spec, dict) else None)
        ts = row.get("train_size")
        ts = int(ts) if ts is not None and np.isfinite(float(ts)) and float(ts) > 0 else None
        data_dir = res.spec.get("data_dir") if isinstance(res.spec, dict) else None
        inp = input_sq_norm(str(ds), ts, str(data_dir) if data_dir else None) if ds else None
        n_out = tables.n_classes(res)
        if inp is None:
            n_in = n_in_from_params(int(row["n_params"]), depth, width, n_out) if "n_params" in row else width
            x2, assumed = None, True
        else:
            x2, n_in = inp
            assumed = False
        try:
            b_var = bias_variance(row.get("bias_init"), row["weight_init_spec"])
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
