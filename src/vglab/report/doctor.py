"""The diagnosis of any results folder: which layer's gradient vanishes or explodes, from
when, by which factor, and why (`vglab doctor PATH`, the "Diagnosis" section of a report).

It reads only the results-store tables (DESIGN.md): `grads` (per layer, tensor and recorded
epoch, pooled over that epoch's steps), `activations` (the layer factors, epoch 0 and every
record) and `runs`. So it works on presets, own models and runs recorded by `vglab.Recorder`
alike; a finding whose instrument was not recorded is not looked for, and the output says so.

Per run and hidden layer l, at every recorded epoch e:

- the **gradient level** rel_l = log10 mean|∂J/∂b^[l]| − log10 mean|∂J/∂b^[out]| (per entry; the
  weight gradient where a layer has no bias). The bias gradient is the back-propagated error δ^[l]
  itself: the product φ′(z^[l]) ⊙ W^[l+1]ᵀ … W^[out]ᵀ δ^[out] without the layer-input factor a^[l−1],
  which in a ReLU net at σ_w² ≠ 2 grows exactly as δ shrinks and hides the explosion from the
  weight gradients (mean field: χ·A is constant for ReLU);
- `vanishing`: rel_l ≤ −VANISH_DECADES; `exploding`: rel_l ≥ EXPLODE_DECADES;
- `saturated` (sigmoid-type activations): saturated_frac ≥ SATURATED_FRAC (units × probe examples
  with φ′ < 0.01, `vglab.train.probes.SATURATION_THRESHOLD`);
- `dead` (ReLU-type): zero_frac of the bias gradient ≥ DEAD_FRAC: the mean over the epoch's steps of
  the fraction of units whose gradient is exactly zero on the whole batch (a unit dead on every
  step counts on every step, so this is at least the dead fraction; healthy He-initialised ReLU nets
  had up to 28 % such units, off for every input they saw, so the threshold sits above: DESIGN.md);
- `frozen`: update_ratio ‖Δθ‖/‖θ‖ of the weights < FROZEN_RATIO per step (below float32's relative
  resolution 2⁻²³ = 1.2e-7, most entries' updates round away: the update_size probe measures
  θ_after − θ_before after rounding).

**Cause**: for vanishing and exploding, the level of δ^[l] against δ^[out] is the product of the
derivative factors and the weight factors between them. The derivative product D = Σ_{k≥l} log10 φ′
is measured at the start of the pooled steps (the previous record: mean log φ′ per hidden layer;
ReLU-type: ½ log10 of the mean φ′, the active fraction, which the mask keeps of δ's squared norm;
log 0 would be −∞); the rest of the level,
W = level − D, is what the weight product made. (Σ_{k>l} log10 ‖W^[k]‖₂ is shown beside it: only an
upper bound of the weights' gain, e.g. −0.1 against a measured −4.7 for the Equinox example, whose
random 8x8 matrices at σ_w² = 1/3 shrink a typical vector by √(1/3) per layer while their spectral norm
is about 1.) Vanishing is blamed on the factors below 1 (negative logs), exploding on those above:
one factor when its share is at least `claims.DOMINANCE` times the other's, else `both`. Without φ′
(a model not built with `vglab.nn.activation`), `weights` when the spectral-norm bound alone makes at
least half the level, else not determined (None). `saturated` and `dead` are φ′ findings (cause
`derivatives`). `frozen`: `optimizer` when the layer's gradient is not vanishing (the update is zero
while the gradient is not: a masked layer, a zero learning rate), else the vanishing's cause.

**Onset** is the first recorded epoch at which a finding holds (epoch 0, initialization, for the
activation findings), and it **persists** when it holds at every later recorded epoch too.

For tanh-family MLPs with a known init law the mean-field prediction is given beside the
measurement: χ₁, ξ_c, the trainable depth 6 ξ_c (`vglab.report.theory`) and, for depth ≥ 2, the
predicted log10 ratio of the first to the last hidden layer's weight gradient against the measured.

Thresholds (each set from `benchmarks/doctor_cases.py --measure` on planted and healthy nets; the
measured margins are in DESIGN.md, "doctor").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from vglab.report import claims as claims_mod
from vglab.report import tables, theory
from vglab.schema import EXPLODE_DECADES, VANISH_DECADES  # one home: the cost model prices them too

SATURATED_FRAC = 0.5  # fraction of (unit, probe example) with φ' < 0.01
DEAD_FRAC = 0.4  # fraction of a ReLU layer's units with an exactly zero gradient (mean over the epoch's steps)
FROZEN_RATIO = 1e-7  # ‖Δθ‖/‖θ‖ per step below float32's relative resolution (2^-23 = 1.2e-7)
UNDERFLOW_LOG10 = math.log10(2.0 ** -149)  # a gradient that underflowed to 0 counts at the smallest float32 (-44.9)
DOMINANCE = claims_mod.DOMINANCE  # one factor is the cause when its log is at least twice the other's

SIGMOID_TYPE = ("tanh", "sigmoid", "arctan", "softsign")
RELU_TYPE = ("relu",)
FINDINGS = ("vanishing", "exploding", "saturated", "dead", "frozen")
JSON_KEYS = ("run_id", "label", "layer", "finding", "cause", "onset_epoch", "evidence", "remedies")  # `--json`
CAUSE_TEXT = {"weights": "weight product", "derivatives": "φ′ product", "both": "weight and φ′ products",
              "optimizer": "the optimizer (the update is zero while the gradient is not)", None: "not determined"}


def thresholds_text() -> str:
    """The rules, as printed beside every diagnosis."""
    return (f"vanishing / exploding: a hidden layer's mean |∂J/∂b| (∂J/∂W where it has no bias) ≥ {VANISH_DECADES:g} "
            f"decades below / ≥ {EXPLODE_DECADES:g} above the output layer's; saturated: ≥ {SATURATED_FRAC:.0%} of "
            f"units × probe examples with φ′ < 0.01 (sigmoid-type); dead: ≥ {DEAD_FRAC:.0%} of a ReLU layer's units "
            f"with an exactly zero gradient (mean over the epoch's steps); frozen: ‖Δθ‖/‖θ‖ < {FROZEN_RATIO:g} per "
            "step; cause: the level splits into the φ′ product (Σ log10 φ′, measured) and the weight product's share "
            f"(the rest); the factor on the level's side with at least {DOMINANCE:g}x the other's share, else both")


@dataclass
class Finding:
    """One finding on one layer of one run (a healthy run has one record with finding None)."""

    run_id: str
    label: str
    seed: int | None
    layer: str | None
    layer_index: int | None
    finding: str | None
    cause: str | None = None
    onset_epoch: int | None = None
    persists: bool | None = None
    evidence: dict = field(default_factory=dict)
    remedies: list = field(default_factory=list)

    def to_json(self) -> dict:
        """Exactly the issue's keys (JSON_KEYS); seed, layer_index and persists travel in evidence."""
        d = asdict(self)
        d["evidence"] = _jsonable({"seed": d.pop("seed"), "layer_index": d.pop("layer_index"),
                                   "persists": d.pop("persists"), **d["evidence"]})
        d["remedies"] = _jsonable(d["remedies"])
        return d


@dataclass
class RunCheck:
    """What was looked at in one run."""

    run_id: str
    label: str
    seed: int | None
    layers: list[str]  # every layer in order (the last is the output)
    epochs: list[int]  # recorded epochs of the gradient table
    param: str  # "b" or "w": whose gradient level is compared
    checked: tuple[str, ...]  # the findings whose instruments were recorded
    mean_field: dict | None = None
    diverged_epoch: int | None = None
    extremes: dict = field(default_factory=dict)  # the extreme values each threshold was compared with
    last: dict = field(default_factory=dict)  # the same at the last readable epoch (what a remedy sweep compares)
    unit: str = "epoch"  # what the records count: epochs, or steps (a vglab.Recorder folder: run.json x_unit)
    model: dict = field(default_factory=dict)  # activation, network ("watched": own loop), depth: for the remedies


@dataclass
class Diagnosis:
    path: str | None
    findings: list[Finding]
    runs: list[RunCheck]
    missing: dict = field(default_factory=dict)  # finding -> why it was not looked for

    def to_json(self) -> list[dict]:
        """One object per finding with exactly the keys JSON_KEYS (the run's seed, the layer's index
        and whether the finding persists are in its evidence); one with finding None per healthy run."""
        out = [f.to_json() for f in self.findings]
        for r in self.runs:
            if not any(f.run_id == r.run_id for f in self.findings):
                out.append(Finding(r.run_id, r.label, r.seed, None, None, None,
                                   evidence={"checked": list(r.checked), "mean_field": r.mean_field}).to_json())
        return out

    def by_label(self) -> dict[str, list[RunCheck]]:
        out: dict[str, list[RunCheck]] = {}
        for r in self.runs:
            out.setdefault(r.label, []).append(r)
        return out

    def groups(self, label: str) -> list[dict]:
        """The findings of one configuration, grouped by (finding, cause): the layers, seeds, onset."""
        runs = self.by_label()[label]
        fs = [f for f in self.findings if f.label == label]
        out = []
        for kind in FINDINGS:
            for cause in dict.fromkeys(f.cause for f in fs if f.finding == kind):
                sel = [f for f in fs if f.finding == kind and f.cause == cause]
                idx = sorted({f.layer_index for f in sel})
                names = {f.layer_index: f.layer for f in sel}
                levels = [f.evidence.get("level_decades") for f in sel if f.evidence.get("level_decades") is not None]
                out.append({"finding": kind, "cause": cause, "layer_index": idx, "layers": [names[i] for i in idx],
                            "seeds": len({f.run_id for f in sel}), "runs": len(runs),
                            "onset": min(f.onset_epoch for f in sel), "persists": all(f.persists for f in sel),
                            "level": (min(levels) if kind == "vanishing" else max(levels)) if levels else None,
                            "findings": sel})
        return out

    def lines(self, remedies: bool = True) -> list[str]:
        """The full text: per configuration its findings, the mean-field line, the remedies
        (attached by `remedies.diagnose`)."""
        out = [f"thresholds: {thresholds_text()} (DESIGN.md, 'doctor': the measurements that set them)"]
        for why in self.missing.values():
            out.append(f"not looked for: {why}")
        for label, runs in self.by_label().items():
            out.append("")
            out.append(f"{label} ({len(runs)} run{'s' if len(runs) > 1 else ''})")
            gs = self.groups(label)
            if not gs:
                out.append(f"  no finding: {', '.join(runs[0].checked)} checked in every recorded epoch")
            for g in gs:
                out.append("  " + _group_text(g, runs[0]))
                ev = _factor_text(g, runs[0].unit)
                if ev:
                    out.append("      " + ev)
                if remedies:
                    rem = g["findings"][0].remedies
                    out += [f"      remedy ({r['where']}): {r['text']}" for r in rem if r["moved"]]
                    idle = {}  # "did not move it" first, then "not comparable (...)"
                    for r in sorted((r for r in rem if not r["moved"]), key=lambda r: r["verdict"] != "did not move it"):
                        idle.setdefault(r["verdict"], []).append(r["remedy"])
                    out += [f"      measured, {verdict}: {', '.join(names)}" for verdict, names in idle.items()]
            mf = runs[0].mean_field
            if mf:
                out.append("  mean-field: " + mean_field_text(mf))
        return out

    def measurements(self) -> dict:
        """Per run, the extreme per-layer values each threshold was compared with (for DESIGN.md)."""
        return {r.run_id: r.extremes for r in self.runs}


def measurement_lines(d: Diagnosis) -> list[str]:
    out = []
    for r in d.runs:
        x = r.extremes
        out.append(f"{r.run_id}: " + ", ".join(f"{k} {v:.3g}" for k, v in x.items() if v is not None))
    return out


def _layers_text(idx: list[int], of: str) -> str:
    spans, start = [], None
    for i, k in enumerate(idx):
        if start is None:
            start = k
        if i == len(idx) - 1 or idx[i + 1] != k + 1:
            spans.append(f"{start + 1}" if start == k else f"{start + 1}–{k + 1}")
            start = None
    word = "layer" if len(idx) == 1 else "layers"
    return f"{word} {', '.join(spans)} of {of}"


def _group_text(g: dict, run: RunCheck) -> str:
    of = f"{len(run.layers)} (output counted)" if g["finding"] == "frozen" else str(len(run.layers) - 1)
    where = _layers_text(g["layer_index"], of)
    level = g["level"]
    what = {"vanishing": f"gradient down to 10^{level:.1f} of the output layer's" if level is not None else "gradient vanishes",
            "exploding": f"gradient up to 10^{level:+.1f} of the output layer's" if level is not None else "gradient explodes",
            "saturated": "saturated (φ′ < 0.01)", "dead": "dead units (gradient exactly zero)",
            "frozen": "frozen (the weights do not move)"}[g["finding"]]
    when = f"from {run.unit} {g['onset']}" + ("" if g["persists"] else f", not in every later {run.unit}")
    seeds = f"{g['seeds']}/{g['runs']} runs"
    return f"{g['finding']}: {where}: {what} {when}; cause: {CAUSE_TEXT.get(g['cause'], g['cause'])} ({seeds})"


def _factor_text(g: dict, unit: str = "epoch") -> str:
    f = g["findings"][0]
    e = f.evidence
    parts = []
    if "level_decades" in e:
        parts.append(f"level {_fmt(e['level_decades'], '{:+.1f}')} = φ′ product Σ log10 φ′ "
                     f"{_fmt(e.get('deriv_log10'), '{:+.1f}')} + weight product {_fmt(e.get('weight_log10'), '{:+.1f}')}"
                     f" (its bound Σ log10‖W‖₂ {_fmt(e.get('weight_norm_bound_log10'), '{:+.1f}')}; layer {f.layer}, "
                     f"run {f.run_id}, factors at {unit} {e.get('factor_epoch')})")
    if "saturated_frac" in e:
        parts.append(f"saturated fraction {e['saturated_frac']:.0%} (layer {f.layer}, {unit} {f.onset_epoch})")
    if "zero_frac" in e:
        parts.append(f"zero-gradient fraction {e['zero_frac']:.0%} (layer {f.layer}, {unit} {f.onset_epoch})")
    if "update_ratio" in e:
        parts.append(f"‖Δθ‖/‖θ‖ {e['update_ratio']:.2g} per step (layer {f.layer}, {unit} {f.onset_epoch})")
    return "; ".join(parts)


def mean_field_text(mf: dict) -> str:
    s = (f"{mf['activation']} at σ_w² {mf['sigma_w2']:.3g}, σ_b² {mf['sigma_b2']:.3g}, α {mf['alpha']:g}: "
         f"χ₁ {_fmt(mf['chi_1'], '{:.3g}')} ({mf['phase']}), ξ_c {_fmt(mf['xi_c'], '{:.3g}')}, trainable depth 6ξ_c "
         f"{_fmt(mf['trainable_depth'], '{:.3g}')} vs depth {mf['depth']}"
         + ("" if not np.isfinite(mf["trainable_depth"]) and not mf["trainable_depth"] == math.inf else
            " — predicted untrainable" if mf["trainable_depth"] < mf["depth"] else " — predicted trainable"))
    if mf.get("predicted_first_last") is not None:
        s += (f"; log10 ‖∂J/∂W^[1]‖/‖∂J/∂W^[L]‖ predicted {mf['predicted_first_last']:+.1f} (χ product), measured "
              f"{_fmt(mf.get('measured_first_last'), '{:+.1f}')}")
    return s


def _fmt(x, f: str) -> str:
    return f.format(x) if x is not None and np.isfinite(x) else "–"


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else ("-inf" if x < 0 else "inf" if x > 0 else None)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


# ------------------------------------------------------------------------ measuring
def _pivot(df: pd.DataFrame, value: str) -> pd.DataFrame:
    """`value` by epoch (rows) and layer_index (columns): `df.pivot_table(index="epoch",
    columns="layer_index", values=value, aggfunc="mean")`, the same frame, placed with NumPy
    when each (epoch, layer) has one row (a run's records: always); pandas' pivot_table took
    54 % of `diagnose` (cProfile, four report-fixture experiments). Like it, rows without a
    value or key are left out, and so are epochs and layers left with none."""
    if value not in df or df.empty:
        return pd.DataFrame()
    d = df[["epoch", "layer_index", value]].dropna()
    epochs, ei = np.unique(d["epoch"].to_numpy(), return_inverse=True)
    layers, li = np.unique(d["layer_index"].to_numpy(), return_inverse=True)
    v = d[value].to_numpy()
    if d.empty or v.dtype != np.float64 or len(np.unique(ei * len(layers) + li)) < len(d):
        return df.pivot_table(index="epoch", columns="layer_index", values=value, aggfunc="mean")  # means of several
    out = np.full((len(epochs), len(layers)), np.nan)
    out[ei, li] = v
    return pd.DataFrame(out, index=pd.Index(epochs, name="epoch", dtype=d["epoch"].dtype),
                        columns=pd.Index(layers, name="layer_index", dtype=d["layer_index"].dtype))


def _cause(w_bound: float | None, d: float | None, level: float, vanishing: bool) -> tuple[str | None, float | None]:
    """(cause, the weight product's share of the level). The level splits into the φ′ product D
    (measured) and the rest, W = level − D, which the weight product made; the cause is the
    factor(s) on the level's side, one when its share is at least DOMINANCE times the other's.
    Without φ′: `weights` when the spectral-norm sum `w_bound` (an upper bound of the weights'
    gain) is itself at least half the level on its side, else not determined."""
    sign = -1.0 if vanishing else 1.0
    if d is None or not np.isfinite(d) or not np.isfinite(level):
        ok = w_bound is not None and np.isfinite(w_bound) and np.isfinite(level)
        return ("weights" if ok and sign * w_bound >= 0.5 * sign * level > 0 else None), None
    w = level - d
    a, b = max(sign * w, 0.0), max(sign * d, 0.0)
    if a == 0 and b == 0:
        return None, w
    if a >= DOMINANCE * b:
        return "weights", w
    if b >= DOMINANCE * a:
        return "derivatives", w
    return "both", w


def _deriv_log10(act: pd.DataFrame, epoch: int, relu: bool) -> pd.Series:
    """log10 φ′ per hidden layer at `epoch`: mean log φ′ (sigmoid-type), ½ log10 of the mean φ′, the
    active fraction (ReLU-type)."""
    if epoch not in act.index:
        return pd.Series(dtype=float)
    if relu:
        v = act.loc[epoch, "deriv_mean"] if "deriv_mean" in act.columns.get_level_values(0) else None
        if v is None:
            return pd.Series(dtype=float)
        with np.errstate(divide="ignore"):
            return 0.5 * np.log10(v.astype(float))  # the mask keeps that fraction of δ's squared norm
    if "log_deriv_mean" not in act.columns.get_level_values(0):
        return pd.Series(dtype=float)
    return act.loc[epoch, "log_deriv_mean"].astype(float) / math.log(10)


def _mean_field(row: pd.Series, res, label: str) -> dict | None:
    """χ₁, ξ_c, 6 ξ_c (and the predicted first/last gradient ratio) of a tanh-family MLP."""
    act = str(row.get("activation"))
    spec = row.get("weight_init_spec")
    if str(row.get("network")) != "mlp" or act not in SIGMOID_TYPE or not isinstance(spec, str) or spec == "model":
        return None
    try:
        depth, width = int(row["depth"]), int(row["width"])
        sw2 = width * theory.weight_variance(spec, width, width)
        sb2 = theory.run_bias_variance(row, spec)  # stored in run.json; older runs: from the label
        ds = theory.depth_scales(act, float(row.get("alpha", 1.0) or 1.0), sw2, sb2)
    except (ValueError, TypeError, KeyError):
        return None
    mf = {"activation": act, "alpha": float(row.get("alpha", 1.0) or 1.0), "sigma_w2": sw2, "sigma_b2": sb2,
          "chi_1": ds.chi_1, "xi_c": ds.xi_c, "trainable_depth": ds.trainable_depth, "phase": ds.phase,
          "depth": depth, "predicted_first_last": None, "measured_first_last": None}
    if depth >= 2:
        try:
            comp = theory.compare(res, labels=[label])
        except Exception:  # the prediction is context; a failure must not cost the diagnosis
            comp = []
        if comp:
            fl = comp[0].first_vs_last
            mf["predicted_first_last"] = fl["backward"] / 2  # squared norms -> norms
            mf["measured_first_last"] = fl["measured"] / 2 if np.isfinite(fl["measured"]) else None
    return mf


def _runs_frame(res) -> pd.DataFrame:
    r = tables.runs(res)  # the activation as recorded (None where a folder has none: a watched model's)
    for col in ("seed", "network", "depth", "width", "weight_init_spec", "bias_init"):
        if col not in r:
            r[col] = None
    return r


def _model_of(row: pd.Series) -> dict:
    """What kind of model a run trained (the remedies' evidence is chosen closest to it)."""
    known = lambda v: v is not None and not (isinstance(v, float) and math.isnan(v))  # noqa: E731
    act, net, depth = row.get("activation"), row.get("network"), row.get("depth")
    return {"activation": str(act) if known(act) else None,
            "network": "watched" if row.get("x_unit") == "step" else (str(net) if known(net) else None),
            "depth": int(depth) if known(depth) else None}


# What a gradient record is keyed by, and per finding read from gradient records: what it
# is called and the probe that records the column it reads (train.probes).
GRAD_KEYS = ("run_id", "epoch", "layer_index", "param")
GRAD_NEEDS = (("vanishing", "vanishing/exploding", "grad_moments"), ("frozen", "frozen", "update_size"),
              ("dead", "dead", "grad_signs"))


def _gradient_records(grads: pd.DataFrame) -> pd.DataFrame:
    """The grads table, or an empty one keyed by `GRAD_KEYS` where it holds no per-layer
    gradient record (no rows, or not those keys: a folder trained without gradient probes)."""
    if grads.empty or not set(GRAD_KEYS) <= set(grads.columns):
        return pd.DataFrame(columns=list(GRAD_KEYS))
    return grads


def diagnose(res) -> Diagnosis:
    """The findings of every run of `res` (a `Results`; see the module docstring for the rules).
    With each finding's remedies (measured evidence): `vglab.report.remedies.diagnose`."""
    r = _runs_frame(res)
    g_all, a_all = _gradient_records(res.grads), res.activations
    missing = {}
    if g_all.empty:
        missing.update((k, f"{what}: these results hold no gradient records (no per-layer rows in the grads "
                           f"table); train with the {probe} probe to look for it")
                       for k, what, probe in GRAD_NEEDS)
    elif "grad_abs_mean" not in g_all:
        missing["vanishing"] = "vanishing/exploding: the grad_moments probe (mean |g| per layer) was not recorded"
    if "frozen" not in missing and "update_ratio" not in g_all:
        missing["frozen"] = "frozen: the update_size probe was not recorded"
    if a_all.empty or "saturated_frac" not in a_all:
        missing["saturated"] = "saturated: no layer factors (activations table) were recorded"
    elif a_all["saturated_frac"].isna().all():
        missing["saturated"] = ("saturated: the model records no pre-activations (build its nonlinearity with "
                                "vglab.nn.activation)")
    if "dead" not in missing and "zero_frac" not in g_all:
        missing["dead"] = "dead: the grad_signs probe (zero fractions) was not recorded"
    grads_by = dict(tuple(g_all.groupby("run_id"))) if len(g_all) else {}
    acts_by = dict(tuple(a_all.groupby("run_id"))) if len(a_all) else {}
    findings, checks, mf_cache = [], [], {}
    for _, row in r.iterrows():
        rid, label = row["run_id"], row["label"]
        seed = None if row["seed"] is None or pd.isna(row["seed"]) else int(row["seed"])
        g = grads_by.get(rid, pd.DataFrame(columns=g_all.columns))
        a = acts_by.get(rid, pd.DataFrame(columns=a_all.columns))
        if label not in mf_cache:
            mf_cache[label] = _mean_field(row, res, label)
        found, check = _diagnose_run(row, g, a, missing)
        check.mean_field = mf_cache[label]
        for f in found:
            f.run_id, f.label, f.seed = rid, label, seed
        check.run_id, check.label, check.seed = rid, label, seed
        check.model = _model_of(row)
        findings += found
        checks.append(check)
    return Diagnosis(str(res.path) if getattr(res, "path", None) else None, findings, checks, missing)


@dataclass
class _RunTables:
    """One run's tables as the rules read them: [epoch x layer_index] pivots of its
    gradient records and layer factors, its layers, and where it diverged."""

    relu: bool
    sigmoid: bool
    layer_of: dict  # layer_index -> name, in order (the last is the output layer)
    param: str  # "b" when every layer has bias records (their level is the one compared), else "w"
    rel: pd.DataFrame  # log10 of mean |g| relative to the output layer
    level: pd.DataFrame
    upd: pd.DataFrame  # update ratio ‖Δθ‖/‖θ‖
    zero: pd.DataFrame  # fraction of zero gradient entries
    actf: pd.DataFrame  # the layer factors, columns (quantity, layer_index)
    div: int | None  # the diverged epoch (or step)
    # per factor epoch: (layer indices, log10 ‖W‖₂), (hidden layer indices, log10 φ′): read
    # once, not per flagged cell (optimizers on MNIST: 10,018 cells, 55 of the page's 93 CPU-s)
    _factor_rows: dict = field(default_factory=dict, repr=False)

    @property
    def order(self) -> list:
        return list(self.layer_of)

    @property
    def hidden(self) -> list:
        return self.order[:-1]

    @property
    def epochs(self) -> list:
        return sorted(set(self.rel.index) | set(self.upd.index))

    def live(self, e) -> bool:
        """Before the engine froze a diverged run at its last finite parameters."""
        return self.div is None or e < self.div

    def factors(self, li, e):
        """(log10 bound of the weights' product above layer li, log10 of the derivatives'
        product from li, the epoch they were read at): the factors at the start of the
        steps epoch e pools."""
        actf = self.actf
        if actf.empty or "log_weight_norm" not in actf.columns.get_level_values(0):
            return None, None, None
        before = [k for k in actf.index if k < e]
        fe = max(before) if before else (e if e in actf.index else None)
        if fe is None:
            return None, None, None
        if fe not in self._factor_rows:
            wn = actf.loc[fe, "log_weight_norm"].astype(float)
            dl = _deriv_log10(actf, fe, self.relu)
            dl = dl[[k for k in dl.index if k in self.hidden]]
            self._factor_rows[fe] = ((wn.index.to_numpy(), wn.to_numpy(float)), (dl.index.to_numpy(), dl.to_numpy(float)))
        (wi, wv), (di, dv) = self._factor_rows[fe]
        w = float(np.nansum(wv[wi > li]) / math.log(10))
        dl = dv[di >= li]
        d = float(dl.sum()) if len(dl) and not np.isnan(dl).any() else None
        return w, d, fe


def _run_tables(row, g: pd.DataFrame, a: pd.DataFrame) -> _RunTables:
    act_name = str(row.get("activation"))
    relu = act_name in RELU_TYPE
    # sigmoid-type, or not named (a watched model) but with its saturation recorded
    sigmoid = act_name in SIGMOID_TYPE or (act_name not in RELU_TYPE and "saturated_frac" in a
                                           and a["saturated_frac"].notna().any())
    parts = [t[["layer_index", "layer"]] for t in (g, a) if {"layer_index", "layer"} <= set(t.columns) and len(t)]
    names = (pd.concat(parts) if parts else pd.DataFrame(columns=["layer_index", "layer"])).drop_duplicates(
        "layer_index").sort_values("layer_index")
    layer_of = dict(zip(names["layer_index"], names["layer"]))
    order = list(layer_of)
    out_idx = order[-1] if order else None
    has_b = bool(len(g)) and set(g.loc[g["param"] == "b", "layer_index"]) >= set(order)
    param = "b" if has_b else "w"
    gp = g[g["param"] == param]
    level = _pivot(gp, "grad_abs_mean")
    if not level.empty:
        with np.errstate(divide="ignore", invalid="ignore"):
            lg = np.log10(level.astype(float))
        rel = lg.sub(lg[out_idx], axis=0) if out_idx in lg else pd.DataFrame()
    else:
        rel = pd.DataFrame()
    gw = g[g["param"] == "w"]
    upd = _pivot(gw if len(gw) else g[g["param"] == "b"], "update_ratio")
    zero = _pivot(g[g["param"] == "b"] if has_b else gw, "zero_frac")
    acts = {c: _pivot(a, c) for c in ("saturated_frac", "log_deriv_mean", "deriv_mean", "log_weight_norm")}
    actf = pd.concat({k: v for k, v in acts.items() if not v.empty}, axis=1) if any(
        not v.empty for v in acts.values()) else pd.DataFrame()
    div = row.get("diverged_epoch")
    div = None if div is None or (isinstance(div, float) and math.isnan(div)) else int(div)
    if row.get("x_unit") == "step":
        # a vglab.Recorder folder: the user's loop freezes nothing, and the Recorder flags any non-finite
        # column (e.g. update_ratio 0/0 of an all-zero tensor that never moves); the gradient itself says
        bad = [e for e in level.index if not np.isfinite(level.loc[e].to_numpy(float)).all()] if not level.empty \
            else []
        div = min(bad) if bad else None
    return _RunTables(relu, sigmoid, layer_of, param, rel, level, upd, zero, actf, div)


def _diagnose_run(row, g: pd.DataFrame, a: pd.DataFrame, missing: dict) -> tuple[list[Finding], RunCheck]:
    t = _run_tables(row, g, a)
    checked = [k for k in FINDINGS if k not in missing and not (k == "saturated" and not t.sigmoid)
               and not (k == "dead" and not t.relu) and not (k == "exploding" and "vanishing" in missing)]
    check = RunCheck("", "", None, [t.layer_of[i] for i in t.order], t.epochs, t.param, tuple(checked),
                     diverged_epoch=t.div, unit="step" if row.get("x_unit") == "step" else "epoch")
    extremes = {}
    holds: dict[tuple[str, int], dict[int, dict]] = {}
    for e in t.epochs:
        if t.live(e):  # after a divergence the run is frozen: nothing to read
            _scan_levels(t, e, holds, extremes)
            _scan_updates(t, e, holds, extremes)
    _scan_saturation(t, holds, extremes)
    check.extremes = extremes
    ok = [e for e in t.epochs if t.live(e)]
    if ok:
        check.last = _at_epoch(t, ok[-1])
    return _findings(t, holds), check


def _mark(holds: dict, kind: str, li, e, ev: dict) -> None:
    holds.setdefault((kind, li), {})[e] = ev


def _scan_levels(t: _RunTables, e, holds: dict, extremes: dict) -> None:
    """Epoch e's vanishing, exploding and dead hidden layers."""
    rel, zero = t.rel, t.zero
    for li in t.hidden:
        x = rel.at[e, li] if (e in rel.index and li in rel.columns) else np.nan
        z = zero.at[e, li] if (t.relu and e in zero.index and li in zero.columns) else np.nan
        dead = np.isfinite(z) and z >= DEAD_FRAC
        if np.isfinite(z):
            extremes["zero_frac_max"] = max(extremes.get("zero_frac_max", -1), float(z))
        if dead:
            _mark(holds, "dead", li, e, {"zero_frac": float(z)})
        if np.isnan(x):
            continue
        if np.isfinite(x):
            extremes["level_min"] = min(extremes.get("level_min", np.inf), float(x))
            extremes["level_max"] = max(extremes.get("level_max", -np.inf), float(x))
        vanishing = x <= -VANISH_DECADES and not dead
        if vanishing or x >= EXPLODE_DECADES:
            w, d, fe = t.factors(li, e)
            cause, share = _cause(w, d, x, vanishing)
            _mark(holds, "vanishing" if vanishing else "exploding", li, e, {
                "level_decades": float(x), "weight_log10": share, "deriv_log10": d, "weight_norm_bound_log10": w,
                "factor_epoch": fe, "cause": cause, "param": t.param})


def _scan_updates(t: _RunTables, e, holds: dict, extremes: dict) -> None:
    """Epoch e's frozen layers (after `_scan_levels`: a frozen layer whose gradient vanished
    is caused by it)."""
    upd = t.upd
    for li in t.order:
        u = upd.at[e, li] if (e in upd.index and li in upd.columns) else np.nan
        if np.isfinite(u):
            extremes["update_ratio_min"] = min(extremes.get("update_ratio_min", np.inf), float(u))
            if u < FROZEN_RATIO:
                v = holds.get(("vanishing", li), {}).get(e)
                _mark(holds, "frozen", li, e, {"update_ratio": float(u), "cause": v["cause"] if v else "optimizer",
                                               "vanishing": bool(v)})


def _scan_saturation(t: _RunTables, holds: dict, extremes: dict) -> None:
    if not (t.sigmoid and not t.actf.empty and "saturated_frac" in t.actf.columns.get_level_values(0)):
        return
    sat = t.actf["saturated_frac"]
    for e in sat.index:
        if t.div is not None and e > t.div:
            continue
        for li in t.hidden:
            s = sat.at[e, li] if li in sat.columns else np.nan
            if np.isfinite(s):
                extremes["saturated_max"] = max(extremes.get("saturated_max", -1), float(s))
                if s >= SATURATED_FRAC:
                    _mark(holds, "saturated", li, e, {"saturated_frac": float(s)})


def _at_epoch(t: _RunTables, e) -> dict:
    """The run's state at its last readable epoch e (the `RunCheck.last` row)."""
    rel, upd, zero, actf, hidden = t.rel, t.upd, t.zero, t.actf, t.hidden
    hid = [li for li in hidden if e in rel.index and li in rel.columns and not np.isnan(rel.at[e, li])]
    lv = [max(float(rel.at[e, li]), UNDERFLOW_LOG10) for li in hid]
    last = {"epoch": e, "level_min": min(lv) if lv else np.nan, "level_max": max(lv) if lv else np.nan,
            "frozen_layers": float(sum(1 for li in t.order if e in upd.index and li in upd.columns
                                       and upd.at[e, li] < FROZEN_RATIO)) if not upd.empty else np.nan}
    if t.relu and e in zero.index:
        last["zero_frac_max"] = float(np.nanmax(zero.loc[e, [li for li in hidden if li in zero.columns]]))
    if t.sigmoid and "saturated_frac" in actf.columns.get_level_values(0) and e in actf.index:
        sat_last = actf.loc[e, "saturated_frac"]
        measured = [li for li in hidden if li in sat_last.index]  # a layer without pre-activations has none
        if measured and np.isfinite(sat_last[measured].to_numpy(float)).any():
            last["saturated_max"] = float(np.nanmax(sat_last[measured].to_numpy(float)))
    return last


def _findings(t: _RunTables, holds: dict) -> list[Finding]:
    """One finding per (kind, layer): its onset, whether it holds at every later epoch, and
    its evidence at the onset (and at its last epoch)."""
    found = []
    for (kind, li), per_epoch in holds.items():
        es = sorted(per_epoch)
        onset = es[0]
        later = [e for e in (t.epochs if kind != "saturated" else sorted(t.actf.index)) if e >= onset and t.live(e)]
        ev = dict(per_epoch[onset])
        cause = ev.pop("cause", "derivatives" if kind in ("saturated", "dead") else None)
        last = es[-1]
        ev["epochs"] = es
        if last != onset:
            ev["at_last_epoch"] = {k: v for k, v in per_epoch[last].items() if k != "cause"}
        found.append(Finding("", "", None, t.layer_of[li], int(li), kind, cause, int(onset),
                             all(e in per_epoch for e in later), ev))
    found.sort(key=lambda f: (FINDINGS.index(f.finding), f.layer_index))
    return found


# ------------------------------------------------------------------------ shown
def html_section(d: Diagnosis, effects=None) -> str:
    """The "Diagnosis" section at the top of a report page: per configuration its findings
    (layers, onset, cause, the factors), the mean-field line, the remedies with evidence, and
    the effects of a remedy sweep when the page is one."""
    import html as _h

    e = lambda x: _h.escape(str(x), quote=True)  # noqa: E731
    rows = []
    for label, runs in d.by_label().items():
        gs = d.groups(label)
        mf = runs[0].mean_field
        cells = []
        if not gs:
            cells.append(f"no finding ({e(', '.join(runs[0].checked))} checked in every recorded epoch)")
        for g in gs:
            rem = [r for r in g["findings"][0].remedies if r["moved"]]
            ft = _factor_text(g, runs[0].unit)
            cells.append(f"<b>{e(g['finding'])}</b>: {e(_group_text(g, runs[0]).split(': ', 1)[1])}"
                         + (f'<div class="rule">{e(ft)}</div>' if ft else "")
                         + "".join(f'<div class="rule">remedy ({e(r["where"])}): {e(r["text"])}</div>' for r in rem))
        if mf:
            cells.append(f'<div class="rule">mean-field: {e(mean_field_text(mf))}</div>')
        rows.append(f'<tr><td class="cfg">{e(label)}</td><td>{"<br>".join(cells)}</td></tr>')
    for why in d.missing.values():
        rows.append(f'<tr><td>not looked for</td><td>{e(why)}</td></tr>')
    eff = ""
    if effects:
        eff = ("<h3>Remedy sweep: which remedy moved which finding</h3><ul>"
               + "".join(f"<li>{e(x.text())}</li>" for x in effects) + "</ul>")
    return ('<h2 id="diagnosis">Diagnosis</h2><table><thead><tr><th style="width:28%">configuration</th>'
            "<th>findings (vglab doctor)</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
            f'<p class="rule">Rules: {e(thresholds_text())}. <code>vglab doctor PATH --json</code> gives every '
            "finding per run and layer.</p>" + eff)


def headline(d: Diagnosis) -> str:
    """The one line a terminal shows: of the most severe kind found (FINDINGS' order), the configuration
    whose finding spans the most layers (then the most extreme level), or that nothing was found."""
    labels = d.by_label()
    with_findings = sum(1 for lab in labels if d.groups(lab))
    for kind in FINDINGS:
        cands = [(g, runs) for lab, runs in labels.items() for g in d.groups(lab) if g["finding"] == kind]
        if cands:
            g, runs = max(cands, key=lambda c: (len(c[0]["layer_index"]), abs(c[0]["level"] or 0.0)))
            more = (f" (+{with_findings - 1} more configuration{'s' if with_findings > 2 else ''} with findings)"
                    if with_findings > 1 else "")
            return f"{runs[0].label}: {_group_text(g, runs[0])}{more}"
    return f"no finding in {len(d.runs)} runs"


def ending(results_dirs) -> list[str]:
    """What `vglab run` / `vglab reproduce` print at the end: the verdict counts of the claims
    checked on these experiments and each experiment's diagnosis headline."""
    from vglab.report import why as why_mod
    from vglab.results.store import load

    loaded = {}
    for p in results_dirs:
        res = load(p)
        loaded[claims_mod.preset_of(res) or p.name] = res
    pairs = [(c, o) for c, o in claims_mod.evaluate(loaded) if any(claims_mod.relevant(c, p) for p in loaded)]
    pairs += [(c, o) for c, o in why_mod.evaluate(loaded) if any(why_mod.relevant(c, p) for p in loaded)]
    counts = {v: sum(o.verdict == v for _, o in pairs) for v in claims_mod.VERDICTS}
    out = ["claims: " + (", ".join(f"{n} {v}" for v, n in counts.items() if n) if pairs else
                         "none of the reference study's claims is checked on these experiments")]
    for name, res in loaded.items():
        out.append(f"diagnosis{' of ' + name if len(loaded) > 1 else ''}: {headline(diagnose(res))}")
    return out
