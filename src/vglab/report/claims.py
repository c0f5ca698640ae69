"""The reference study's claims, checked against measured results.

Each claim is a small object: an id, the claim's text, the preset(s) whose results it
needs, the rule written out (thresholds are the module constants below) and a rule
function from the available results to an `Outcome` (verdict, what was measured, the
numbers). Nothing here is canned: every verdict is recomputed from the results tables.

Verdicts: `reproduced`, `partly`, `not reproduced`, `not run` (the preset, or the arms a
rule needs, are absent), `inconclusive` (every arm a comparison needs is at chance, so
the ordering between them is noise) and, for the open questions vglab adds, `answered`.

Arms are found by the `runs` columns (weight_init_spec, penalty, r, alpha, activation,
depth, ...). "Final accuracy" is the validation accuracy after the last epoch, averaged
over seeds. Where a preset holds several architectures, a rule is applied to each and
the verdicts combined (all reproduced -> reproduced, none -> not reproduced, else partly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from vglab.report import tables

# ------------------------------------------------------------------ thresholds
SLOW_GAP = 0.10  # large params "slow learning": N(0, std=10) at least 10 points below N(0, std=1)
SLOW_GAP_PARTLY = 0.03  # 3 to 10 points below: partly
WITHIN = 0.02  # "restores" / "catches": within 2 points of the reference arm
HELPS = 0.03  # a remedy "helps" when it gains at least 3 points over no remedy
L1_MARGIN = 0.01  # "L1 helps less": L1 at least 1 point below L2 at the same r
BEST_R = 0.01  # the reference study's best r
BEST_R_FACTOR = 3.0  # best r within a factor 3 of 0.01: reproduced; within a factor 10: partly
LARGE_R = 0.2  # "r > 0.2 is worse than no penalty"
CHANCE_MARGIN = 0.05  # "stuck at chance": within 5 points of 1/n_classes
SHALLOW_LEARNS = 0.20  # the shallow net must beat chance by 20 points
SAME = 0.05  # "does not change": final accuracies within 5 points
DOMINANCE = 2.0  # one factor dominates when its summed log is at least twice the other's
RAISES_ACC = 0.02  # alpha > 1 "raises final accuracy": by at least 2 points
RAISES_GRAD = 0.5  # ... "raises the first-layer gradient": by at least 0.5 decades (x3.2)

# the presets (experiment.toml `preset`) each claim reads
LARGE_PARAMS = "large-params"
REGULARIZATION = "regularization"
R_SWEEP = "r-sweep"
SUPER_LARGE = "super-large"
UNIFORM_LARGE = "uniform-large"
VS_RELU = "vs-relu"
MANY_LAYERS = "many-layers"
ALPHA_SWEEP = "alpha-sweep"
CNN_LARGE = ("cnn-large-params", "paper-cnn-large-params")
CNN_DEEP = ("cnn-many-layers", "paper-cnn-many-layers")
RESCALING_BY_INIT = "rescaling-by-init"
COMBINED = "combined"

DIVERGED_NOTE = ("A run diverges when its loss or a gradient stops being finite; training then freezes it at its last "
                 "finite parameters. The claims count a diverged run with the final accuracy of those parameters "
                 "(measured on the test set like any other) and say so beside the arm; tables and figures show it as "
                 "diverged instead of an accuracy.")
VERDICTS = ("reproduced", "partly", "not reproduced", "inconclusive", "answered", "not run")
UNINFORMATIVE = ("inconclusive: every arm compared is within "
                 f"{CHANCE_MARGIN * 100:g} points of chance, so the comparison says nothing")


@dataclass
class Outcome:
    verdict: str
    measured: str
    numbers: dict = field(default_factory=dict)
    preset: str | None = None  # which experiment the numbers come from ("a, b" when several)
    presets: list = field(default_factory=list)  # the same as a list
    answer: str = ""  # an open question's answer in one line (verdict "answered")


@dataclass(frozen=True)
class Claim:
    id: str
    text: str  # the claim, as the reference study (or the open question) states it
    presets: tuple[str, ...]  # the results it can be checked on, in order of preference
    rule_text: str  # the rule, with its thresholds
    rule: Callable[[dict], Outcome] = field(repr=False, compare=False)
    source: str = "reference study"  # or "open question", "vglab diagnosis"

    def evaluate(self, results: dict) -> Outcome:
        """`results`: {preset: Results}. The rule runs on every one of `self.presets` present
        (each experiment on its own) and the outcomes are combined: all reproduced ->
        reproduced, all not reproduced -> not reproduced, a mix -> partly."""
        outs = []
        for p in self.presets:
            if p not in results:
                continue
            try:
                o = self.rule({p: results[p]})
            except _Missing as e:
                o = Outcome("not run", str(e))
            except Exception as e:  # results this rule cannot read: said on the page, not fatal
                o = Outcome("not run", f"could not be evaluated on these results ({type(e).__name__}: {e})",
                            {"error": f"{type(e).__name__}: {e}"})
            o.preset = o.preset or p
            o.presets = [p]
            outs.append(o)
        if not outs:
            need = " or ".join(f"`{p}`" for p in self.presets)
            return Outcome("not run", f"needs the {need} experiment, which is not among these results")
        ran = [o for o in outs if o.verdict != "not run"] or outs
        if len(ran) == 1:
            return ran[0]
        return Outcome(_merge([o.verdict for o in ran]), " ‖ ".join(f"[{o.preset}] {o.measured}" for o in ran),
                       {o.preset: o.numbers for o in ran}, ", ".join(o.preset for o in ran), [o.preset for o in ran],
                       " ".join(o.answer for o in ran if o.answer))


def _merge(verdicts: list[str]) -> str:
    """One verdict from several experiments' (or architectures') verdicts."""
    vs = set(verdicts)
    if vs == {"not run"}:
        return "not run"
    vs -= {"not run"}
    if vs == {"answered"}:
        return "answered"
    decided = vs - {"inconclusive"}
    if not decided:
        return "inconclusive"
    if decided == {"reproduced"}:
        return "reproduced" if "inconclusive" not in vs else "partly"
    if decided == {"not reproduced"}:
        return "not reproduced" if "inconclusive" not in vs else "partly"
    return "partly"


class _Missing(Exception):
    """The preset ran but lacks the arms a rule needs."""


# ------------------------------------------------------------------ helpers
def _sig(a) -> bool:
    return str(a) != "relu"


def _finals(res) -> pd.DataFrame:
    key = "_claims_final"
    if key not in res.cache:
        res.cache[key] = tables.final(res)
    return res.cache[key]


def _acc(rows: pd.DataFrame) -> dict:
    """Final accuracy over seeds. A diverged run counts with the accuracy of the parameters
    it was frozen at (its last finite ones: see DIVERGED_NOTE); `diverged` says how many."""
    v = rows["val_acc"].astype(float).to_numpy()
    v = v[np.isfinite(v)]
    div = int(rows["diverged_epoch"].notna().sum()) if "diverged_epoch" in rows else 0
    return {"mean": float(v.mean()) if v.size else float("nan"), "std": float(v.std()) if v.size else float("nan"),
            "n": int(v.size), "label": str(rows["label"].iloc[0]) if len(rows) else "", "diverged": div,
            "runs": len(rows)}


def _a(x: dict) -> str:
    s = f"{x['mean']:.3f}"
    if x.get("n", 0) > 1:
        s += f" ± {x['std']:.3f}"
    if x.get("diverged"):
        s += f" ({x['diverged']} of {x['runs']} runs diverged)"
    return s


def _pts(d: float) -> str:
    return f"{d * 100:+.1f} points"


ARCH = ("network", "variant", "depth", "width")


def _archs(f: pd.DataFrame, cols=ARCH) -> list[tuple[tuple, pd.DataFrame]]:
    cols = [c for c in cols if c in f.columns]
    out = []
    for key, g in f.groupby([f[c].astype(str) for c in cols], sort=True, dropna=False):
        out.append((key if isinstance(key, tuple) else (key,), g))
    return out


def _sigmoid_archs(avail: dict, has) -> tuple[str, object, list[pd.DataFrame]]:
    """The first preset whose final accuracies `has` what a rule compares, its results, and
    their sigmoid-type runs' finals by architecture and activation (one verdict part each)."""
    preset, res = _first_with(avail, has)
    f = _finals(res)
    return preset, res, [g for _, g in _archs(f[f["activation"].map(_sig)], ARCH + ("activation",))]


def _at_chance(res, *means) -> bool:
    chance = 1.0 / tables.n_classes(res)
    return all(abs(m - chance) <= CHANCE_MARGIN for m in means)


def _combine(parts: list[tuple[str, str, dict]], preset: str) -> Outcome:
    """Per-architecture (verdict, text, numbers) -> one outcome."""
    if not parts:
        raise _Missing(f"`{preset}` has none of the arms this rule compares")
    v = _merge([v for v, _, _ in parts])
    if len(parts) == 1:
        return Outcome(v, parts[0][1], parts[0][2], preset)
    text = "; ".join(f"{t} → {pv}" for pv, t, _ in parts)
    return Outcome(v, text, {n.get("arch", str(i)): n for i, (_, _, n) in enumerate(parts)}, preset)


def _first_with(avail: dict, test) -> tuple[str, object]:
    for p, res in avail.items():
        if test(_finals(res)):
            return p, res
    return next(iter(avail.items()))


def _closest_r(rows: pd.DataFrame, target: float = BEST_R) -> float | None:
    rs = sorted(rows["r"].unique())
    if not rs:
        return None
    return min(rs, key=lambda r: abs(math.log(r / target)) if r > 0 else math.inf)


# ------------------------------------------------------------------ the rules
def _large_params_slow(avail):
    def has(f):
        return len(tables.arms(f, spec="normal(std=10)", penalty="none", alpha=1.0)) > 0

    preset, res, groups = _sigmoid_archs(avail, has)
    parts = []
    for g in groups:
        big = tables.arms(g, spec="normal(std=10)", penalty="none", alpha=1.0)
        ref = tables.arms(g, spec="normal(std=1)", penalty="none", alpha=1.0)
        if big.empty or ref.empty:
            continue
        a, b = _acc(big), _acc(ref)
        gap = b["mean"] - a["mean"]
        v = "reproduced" if gap >= SLOW_GAP else ("partly" if gap >= SLOW_GAP_PARTLY else "not reproduced")
        text = (f"{tables.arch_name(g)}: final val acc N(0, std=10) {_a(a)} vs N(0, std=1) {_a(b)} "
                f"({_pts(-gap)})")
        if _at_chance(res, a["mean"], b["mean"]):
            v, text = "inconclusive", text + f" — {UNINFORMATIVE}"
        parts.append((v, text, {"arch": tables.arch_name(g), "acc_std10": a["mean"], "acc_std1": b["mean"], "gap": gap}))
    return _combine(parts, preset)


def _reg_arms(g):
    none = tables.arms(g, spec="normal(std=10)", penalty="none", alpha=1.0)
    ref = tables.arms(g, spec="normal(std=1)", penalty="none", alpha=1.0)
    l2 = tables.arms(g, spec="normal(std=10)", penalty="l2", alpha=1.0)
    l1 = tables.arms(g, spec="normal(std=10)", penalty="l1", alpha=1.0)
    return none, ref, l1, l2


def _l2_restores(avail):
    def has(f):
        return len(tables.arms(f, spec="normal(std=10)", penalty="l2")) > 0

    preset, res, groups = _sigmoid_archs(avail, has)
    parts = []
    for g in groups:
        none, ref, _, l2 = _reg_arms(g)
        if l2.empty or (none.empty and ref.empty):
            continue
        r = _closest_r(l2)
        a2 = _acc(l2[np.isclose(l2["r"], r)])
        nums = {"arch": tables.arch_name(g), "r": r, "acc_l2": a2["mean"]}
        bits = [f"{tables.arch_name(g)}: N(0, std=10) + L2 r={r:g} {_a(a2)}"]
        an = _acc(none) if not none.empty else None
        ar = _acc(ref) if not ref.empty else None
        if ar:
            bits.append(f"N(0, std=1) {_a(ar)}")
            nums["acc_std1"] = ar["mean"]
        if an:
            bits.append(f"N(0, std=10) without penalty {_a(an)}")
            nums["acc_none"] = an["mean"]
        within = ar is not None and a2["mean"] >= ar["mean"] - WITHIN
        helps = an is not None and a2["mean"] >= an["mean"] + HELPS
        if within and (helps or an is None):
            v = "reproduced"
        elif within or helps:
            v = "partly"
        else:
            v = "not reproduced"
        text = ", ".join(bits)
        if _at_chance(res, a2["mean"], *[x["mean"] for x in (an, ar) if x]):
            v, text = "inconclusive", text + f" — {UNINFORMATIVE}"
        parts.append((v, text, nums))
    return _combine(parts, preset)


def _l1_weaker(avail):
    def has(f):
        return len(tables.arms(f, spec="normal(std=10)", penalty="l1")) > 0 and len(
            tables.arms(f, spec="normal(std=10)", penalty="l2")) > 0

    preset, res, groups = _sigmoid_archs(avail, has)
    parts = []
    for g in groups:
        none, _, l1, l2 = _reg_arms(g)
        if l1.empty or l2.empty:
            continue
        common = sorted(set(np.round(l1["r"], 12)) & set(np.round(l2["r"], 12)))
        r = _closest_r(pd.DataFrame({"r": common})) if common else None
        if r is None:
            continue
        a1, a2 = _acc(l1[np.isclose(l1["r"], r)]), _acc(l2[np.isclose(l2["r"], r)])
        d = a2["mean"] - a1["mean"]
        text = f"{tables.arch_name(g)}, N(0, std=10), r={r:g}: L1 {_a(a1)} vs L2 {_a(a2)} (L1 {_pts(-d)})"
        nums = {"arch": tables.arch_name(g), "r": r, "acc_l1": a1["mean"], "acc_l2": a2["mean"]}
        if not none.empty:
            an = _acc(none)
            text += f", no penalty {_a(an)}"
            nums["acc_none"] = an["mean"]
        v = "reproduced" if d >= L1_MARGIN else "not reproduced"
        if _at_chance(res, a1["mean"], a2["mean"]):
            v, text = "inconclusive", text + f" — {UNINFORMATIVE}"
        parts.append((v, text, nums))
    return _combine(parts, preset)


def _sweep_groups(res):
    f = _finals(res)
    f = f[f["activation"].map(_sig) & np.isclose(f["alpha"], 1.0)]
    return _archs(f, ARCH + ("activation", "spec"))


def _best_r(avail):
    preset, res = next(iter(avail.items()))
    parts = []
    for _, g in _sweep_groups(res):
        l2 = g[g["penalty"] == "l2"]
        if l2["r"].nunique() < 3:
            continue
        means = l2.groupby("r")["val_acc"].mean()
        best = float(means.idxmax())
        ratio = abs(math.log10(best / BEST_R))
        v = ("reproduced" if ratio <= math.log10(BEST_R_FACTOR) + 1e-9 else
             "partly" if ratio <= 1 + 1e-9 else "not reproduced")
        text = (f"{tables.arch_name(g)} · {g['weight_init'].iloc[0]}: best L2 r = {best:g} "
                f"(final val acc {means.max():.3f}; swept r = {', '.join(f'{r:g}' for r in means.index)})")
        nums = {"arch": tables.arch_name(g), "best_r_l2": best, "acc_best_l2": float(means.max())}
        l1 = g[g["penalty"] == "l1"]
        if l1["r"].nunique() >= 3:
            m1 = l1.groupby("r")["val_acc"].mean()
            nums["best_r_l1"] = float(m1.idxmax())
            text += f"; best L1 r = {m1.idxmax():g} ({m1.max():.3f})"
        if _at_chance(res, *means.to_numpy()):
            v, text = "inconclusive", text + f" — {UNINFORMATIVE}"
        parts.append((v, text, nums))
    return _combine(parts, preset)


def _large_r_worse(avail):
    preset, res = next(iter(avail.items()))
    parts = []
    for _, g in _sweep_groups(res):
        none = g[g["penalty"] == "none"]
        big = g[(g["penalty"] == "l2") & (g["r"] > LARGE_R)]
        if none.empty or big.empty:
            continue
        an = _acc(none)
        means = big.groupby("r")["val_acc"].mean()
        worse = {float(r): float(m) for r, m in means.items() if m < an["mean"]}
        v = ("reproduced" if len(worse) == len(means) else "not reproduced" if not worse else "partly")
        text = (f"{tables.arch_name(g)} · {g['weight_init'].iloc[0]}: no penalty {_a(an)}; L2 "
                + ", ".join(f"r={r:g}: {m:.3f}" for r, m in means.items())
                + f" ({len(worse)} of {len(means)} below no penalty)")
        l1big = g[(g["penalty"] == "l1") & (g["r"] > LARGE_R)]
        if not l1big.empty:
            m1 = l1big.groupby("r")["val_acc"].mean()
            text += "; L1 " + ", ".join(f"r={r:g}: {m:.3f}" for r, m in m1.items())
        if _at_chance(res, an["mean"], *means.to_numpy()):
            v, text = "inconclusive", text + f" — {UNINFORMATIVE}"
        parts.append((v, text, {"arch": tables.arch_name(g), "acc_none": an["mean"],
                                "acc_l2_large_r": {float(r): float(m) for r, m in means.items()}}))
    if not parts:
        raise _Missing(f"`{preset}` has no L2 runs with r > {LARGE_R:g} next to a run without penalty")
    return _combine(parts, preset)


def _l2_catches_relu(avail):
    preset, res = next(iter(avail.items()))
    f = _finals(res)
    parts = []
    for _, g in _archs(f):
        relu = g[(g["activation"] == "relu") & (g["weight_init_kind"].astype(str) == "glorot_uniform")
                 & (g["penalty"] == "none")]
        tl2 = g[g["activation"].map(_sig) & (g["penalty"] == "l2")]
        if relu.empty or tl2.empty:
            continue
        pref = tables.arms(tl2, spec="normal(std=10)")
        tl2 = pref if not pref.empty else tl2
        r = _closest_r(tl2)
        tl2 = tl2[np.isclose(tl2["r"], r)]
        at, ar = _acc(tl2), _acc(relu)
        d = at["mean"] - ar["mean"]
        v = "reproduced" if d >= -WITHIN else ("partly" if d >= -2.5 * WITHIN else "not reproduced")
        text = (f"{tables.arch_name(g)}: {tl2['activation'].iloc[0]} · {tl2['weight_init'].iloc[0]} + L2 r={r:g} {_a(at)} "
                f"vs relu · Glorot uniform {_a(ar)} ({_pts(d)})")
        nums = {"arch": tables.arch_name(g), "acc_tanh_l2": at["mean"], "acc_relu": ar["mean"], "diff": d}
        if _at_chance(res, at["mean"], ar["mean"]):
            v, text = "inconclusive", text + f" — {UNINFORMATIVE}"
        tnone = tables.arms(g[g["activation"].map(_sig)], spec=str(tl2["spec"].iloc[0]), penalty="none")
        if not tnone.empty:
            text += f"; without L2 {_a(_acc(tnone))}"
            nums["acc_tanh_none"] = _acc(tnone)["mean"]
        parts.append((v, text, nums))
    return _combine(parts, preset)


def _deep_arms(res, alpha=1.0, spec="normal(std=0.05)"):
    f = _finals(res)
    f = f[f["activation"].map(_sig) & (f["penalty"] == "none")]
    f = tables.arms(f, spec=spec)
    if f.empty:
        raise _Missing(f"no sigmoid-type runs at {spec} without penalty")
    f = f.assign(depth=f["depth"].astype(float).fillna(0))
    dmax = f["depth"].max()
    deep = tables.arms(f[f["depth"] == dmax], alpha=alpha)
    shallow = f[(f["depth"] < dmax) & np.isclose(f["alpha"], 1.0)]
    if not shallow.empty:
        shallow = shallow[shallow["depth"] == shallow["depth"].min()]
    return deep, shallow


def _deep_chance(avail):
    preset, res = next(iter(avail.items()))
    deep, shallow = _deep_arms(res)
    if deep.empty:
        raise _Missing(f"`{preset}` has no deep run at alpha = 1")
    chance = 1.0 / tables.n_classes(res)
    ad = _acc(deep)
    near = abs(ad["mean"] - chance) <= CHANCE_MARGIN
    nums = {"acc_deep": ad["mean"], "chance": chance, "depth": int(deep["depth"].iloc[0])}
    text = f"{tables.arch_name(deep)} at N(0, std=0.05): final val acc {_a(ad)} (chance {chance:.2f})"
    if shallow.empty:
        return Outcome("partly" if near else "not reproduced", text + "; no shallow net to compare", nums, preset)
    ash = _acc(shallow)
    nums["acc_shallow"] = ash["mean"]
    learns = ash["mean"] >= chance + SHALLOW_LEARNS
    text += f"; {tables.arch_name(shallow)} at the same init: {_a(ash)}"
    v = "reproduced" if near and learns else ("partly" if near else "not reproduced")
    return Outcome(v, text, nums, preset)


def _alpha2(avail):
    preset, res = next(iter(avail.items()))
    d1, _ = _deep_arms(res, 1.0)
    d2, _ = _deep_arms(res, 2.0)
    if d1.empty or d2.empty:
        raise _Missing(f"`{preset}` lacks the deep net at alpha = 1 or alpha = 2")
    chance = 1.0 / tables.n_classes(res)
    a1, a2 = _acc(d1), _acc(d2)
    d = a2["mean"] - a1["mean"]
    same = abs(d) < SAME
    near = abs(a2["mean"] - chance) <= CHANCE_MARGIN
    v = "reproduced" if same and near else ("partly" if same or near else "not reproduced")
    text = (f"{tables.arch_name(d1)} at N(0, std=0.05): α=2 {_a(a2)} vs α=1 {_a(a1)} ({_pts(d)}; chance {chance:.2f})")
    return Outcome(v, text, {"acc_alpha1": a1["mean"], "acc_alpha2": a2["mean"], "diff": d, "chance": chance}, preset)


def factor_diagnosis(res, run_ids: list[str], epoch: int = 0) -> dict:
    """The backprop product's factors for dJ/dW^[1], summed in log10, averaged over runs:
    the weight product Σ_{k>1} log10 ‖W^[k]‖₂ (every later layer, output included), the
    derivative product Σ_{k≥1} mean log10 g'(z^[k]) (every hidden layer), the mean
    saturated fraction (all at `epoch`), and the measured log10 ratio of the first layer's
    weight-gradient norm to the output layer's and to the last hidden layer's (in the first
    recorded epoch after initialization, `grad_epoch`; runs that diverged are left out of
    these ratios and counted in `diverged`)."""
    a = res.activations
    a = a[a["run_id"].isin(run_ids) & (a["epoch"] == epoch)]
    g = res.grads
    first = tables.first_recorded_epoch(res)
    g = g[g["run_id"].isin(run_ids) & (g["param"] == "w") & (g["epoch"] == first)]
    w, d, sat, r_out, r_hidden = [], [], [], [], []
    runs = res.runs.set_index("run_id")
    diverged = {rid for rid in run_ids if "diverged_epoch" in runs and pd.notna(runs.at[rid, "diverged_epoch"])}
    for rid in run_ids:
        ar = a[a["run_id"] == rid].sort_values("layer_index")
        if ar.empty:
            continue
        w.append(ar["log_weight_norm"].iloc[1:].sum() / math.log(10))
        d.append(ar["log_deriv_mean"].dropna().sum() / math.log(10))
        sat.append(ar["saturated_frac"].dropna().mean())
        gr = g[g["run_id"] == rid].sort_values("layer_index")
        if len(gr) >= 2 and rid not in diverged:
            n = gr["grad_norm_mean"].to_numpy(float)
            with np.errstate(divide="ignore"):
                r_out.append(np.log10(n[0]) - np.log10(n[-1]))
                if len(n) >= 3:
                    r_hidden.append(np.log10(n[0]) - np.log10(n[-2]))
    m = lambda x: float(np.mean(x)) if len(x) else float("nan")  # noqa: E731
    return {"weight_log10": m(w), "deriv_log10": m(d), "saturated_frac": m(sat),
            "grad_ratio_first_out_log10": m(r_out), "grad_ratio_first_last_hidden_log10": m(r_hidden),
            "grad_epoch": first, "diverged": len(diverged)}


def _dominant(fd: dict) -> str:
    w, d = fd["weight_log10"], fd["deriv_log10"]
    if w < 0 and abs(w) >= DOMINANCE * abs(d):
        return "weights"
    if d < 0 and abs(d) >= DOMINANCE * abs(w):
        return "derivatives"
    return "both"


def _diag_text(fd: dict) -> str:
    def ratio(x: float) -> str:
        return f"{x:+.2f}" if np.isfinite(x) else "– (no run that did not diverge)"

    div = f"; {fd['diverged']} diverged run{'s' if fd['diverged'] > 1 else ''} left out" if fd.get("diverged") else ""
    return (f"Σ log10‖W‖₂ over the later layers {fd['weight_log10']:+.2f}, Σ mean log10 g' {fd['deriv_log10']:+.2f}, "
            f"saturated {fd['saturated_frac']:.0%}; measured ({tables.epoch_span(fd.get('grad_epoch'))}{div}) "
            f"log10 ‖∂J/∂W^[1]‖/‖∂J/∂W^[out]‖ = {ratio(fd['grad_ratio_first_out_log10'])}, /‖∂J/∂W^[L]‖ (last hidden) = "
            f"{ratio(fd['grad_ratio_first_last_hidden_log10'])}")


def _why(avail):
    preset, res = next(iter(avail.items()))
    deep, _ = _deep_arms(res)
    if deep.empty:
        raise _Missing(f"`{preset}` has no deep run at alpha = 1")
    fd = factor_diagnosis(res, list(deep["run_id"]))
    dom = _dominant(fd)
    text = f"{tables.arch_name(deep)} at N(0, std=0.05), epoch 0: " + _diag_text(fd) + f" → dominant factor: {dom}"
    from vglab.report import theory

    comp = [c for c in theory.compare(res, labels=[deep["label"].iloc[0]])]
    if comp and not comp[0].measured_ok:
        text += "; mean-field: not compared, every run diverged"
    elif comp:
        c = comp[0]
        fl = c.first_vs_last
        text += (f"; mean-field: log10 ‖∂J/∂W^[1]‖²/‖∂J/∂W^[L]‖² predicted {fl['backward']:+.1f} (χ product), "
                 f"{fl['full']:+.1f} (with layer inputs), measured {fl['measured']:+.1f}; slope per layer "
                 f"{c.slope_backward:+.2f} predicted vs {c.slope_measured:+.2f} measured")
        fd.update({"theory_first_last_backward": fl["backward"], "theory_first_last_full": fl["full"],
                   "measured_first_last_sq": fl["measured"], "theory_slope": c.slope_backward,
                   "measured_slope": c.slope_measured})
    fd["dominant"] = dom
    v = "reproduced" if dom == "weights" else ("partly" if dom == "both" else "not reproduced")
    return Outcome(v, text, fd, preset)


def first_grad(res, run_ids) -> float:
    """Mean log10 of the first layer's weight-gradient norm in the first recorded epoch."""
    g = res.grads
    g = g[g["run_id"].isin(run_ids) & (g["param"] == "w") & (g["epoch"] == tables.first_recorded_epoch(res))]
    if g.empty:
        return float("nan")
    first = g[g["layer_index"] == g["layer_index"].min()]["grad_norm_mean"].to_numpy(float)
    with np.errstate(divide="ignore"):
        return float(np.mean(np.log10(first)))


def _rescaling_by_init(avail):
    preset, res = next(iter(avail.items()))
    f = _finals(res)
    f = f[f["activation"].map(_sig) & (f["penalty"] == "none")]
    if f.empty or f["alpha"].nunique() < 2:
        raise _Missing(f"`{preset}` has no sweep over alpha")
    rows, helped_acc, helped_grad = [], [], []
    nums = {}
    for _, g in _archs(f, ARCH + ("activation", "spec")):
        base = g[np.isclose(g["alpha"], 1.0)]
        if base.empty:
            continue
        a1 = _acc(base)
        gr1 = first_grad(res, list(base["run_id"]))
        means = g[g["alpha"] > 1].groupby("alpha")["val_acc"].mean()
        if means.empty:
            continue
        best_alpha = float(means.idxmax())
        best = g[np.isclose(g["alpha"], best_alpha)]
        ab = _acc(best)
        grads = {float(al): first_grad(res, list(gg["run_id"])) for al, gg in g[g["alpha"] > 1].groupby("alpha")}
        best_grad_alpha = max(grads, key=lambda k: grads[k] if np.isfinite(grads[k]) else -np.inf)
        name = f"{g['weight_init'].iloc[0]} ({tables.arch_name(g)})"
        d_acc, d_grad = ab["mean"] - a1["mean"], grads[best_grad_alpha] - gr1
        if d_acc >= RAISES_ACC:
            helped_acc.append(name)
        if d_grad >= RAISES_GRAD:
            helped_grad.append(name)
        rows.append(f"{name}: α=1 {_a(a1)}, best α={best_alpha:g} {_a(ab)} ({_pts(d_acc)}); first-layer "
                    f"log10‖∂J/∂W‖ {tables.epoch_span(tables.first_recorded_epoch(res))}: α=1 {gr1:+.2f}, max at α={best_grad_alpha:g} {grads[best_grad_alpha]:+.2f} "
                    f"({d_grad:+.2f} decades)")
        nums[name] = {"acc_alpha1": a1["mean"], "best_alpha": best_alpha, "acc_best": ab["mean"], "d_acc": d_acc,
                      "log10_grad_alpha1": gr1, "log10_grad_best": grads[best_grad_alpha], "d_grad": d_grad}
    if not rows:
        raise _Missing(f"`{preset}` has no alpha = 1 reference next to alpha > 1")
    answer = (f"α > 1 raises final accuracy for {', '.join(helped_acc) or 'no init'}; it raises the first-layer "
              f"gradient for {', '.join(helped_grad) or 'no init'}.")
    return Outcome("answered", " | ".join(rows), nums, preset, answer=answer)


def _combined(avail):
    preset, res = next(iter(avail.items()))
    f = _finals(res)
    f = f[f["activation"].map(_sig)]
    parts, nums, beat, not_beat = [], {}, [], []
    for _, g in _archs(f, ARCH + ("activation", "spec")):
        base = g[(g["penalty"] == "none") & np.isclose(g["alpha"], 1.0)]
        l2 = g[(g["penalty"] != "none") & np.isclose(g["alpha"], 1.0)]
        resc = g[(g["penalty"] == "none") & (g["alpha"] > 1)]
        both = g[(g["penalty"] != "none") & (g["alpha"] > 1)]
        if base.empty or both.empty:
            continue

        def best(rows):
            if rows.empty:
                return None
            m = rows.groupby("label")["val_acc"].mean()
            return _acc(rows[rows["label"] == m.idxmax()])

        arms = {"none": _acc(base), "penalty only": best(l2), "rescaling only": best(resc), "both": best(both)}
        singles = [a["mean"] for k, a in arms.items() if k in ("penalty only", "rescaling only") and a]
        gain = arms["both"]["mean"] - max(singles + [arms["none"]["mean"]])
        name = f"{g['weight_init'].iloc[0]} ({tables.arch_name(g)})"
        verdict = ("both together beat either alone" if gain >= RAISES_ACC else
                   "combining does not beat the best single remedy")
        txt = f"{name}: " + ", ".join(f"{k} {_a(a)} [{a['label']}]" if k != "none" else f"{k} {_a(a)}"
                                      for k, a in arms.items() if a) + f" → {verdict} ({_pts(gain)})"
        parts.append(txt)
        (beat if gain >= RAISES_ACC else not_beat).append(name)
        nums[name] = {k: (a["mean"] if a else None) for k, a in arms.items()} | {"gain": gain}
    if not parts:
        raise _Missing(f"`{preset}` lacks a run with neither remedy or one with both")
    answer = "; ".join(x for x in (
        f"L2 and rescaling together beat either alone at {', '.join(beat)}" if beat else "",
        f"{'they do not' if beat else 'L2 and rescaling together do not beat the better single remedy'} at "
        f"{', '.join(not_beat)}" if not_beat else "") if x) + "."
    return Outcome("answered", "; ".join(parts), nums, preset, answer=answer)


def _alpha_sweep(avail):
    preset, res = next(iter(avail.items()))
    d1, _ = _deep_arms(res, 1.0)
    f = _finals(res)
    f = tables.arms(f[f["activation"].map(_sig) & (f["penalty"] == "none")], spec="normal(std=0.05)")
    f = f[(f["depth"].astype(float) == float(d1["depth"].max())) & (f["alpha"] > 1)] if not d1.empty else f.iloc[0:0]
    if d1.empty or f.empty:
        raise _Missing(f"`{preset}` lacks the deep net at alpha = 1 and alpha > 1")
    a1 = _acc(d1)
    means = f.groupby("alpha")["val_acc"].mean()
    best = float(means.idxmax())
    d = float(means.max()) - a1["mean"]
    v = "reproduced" if d < SAME else "not reproduced"
    text = (f"{tables.arch_name(d1)} at N(0, std=0.05): α=1 {_a(a1)}; " + ", ".join(f"α={al:g}: {m:.3f}" for al, m in means.items())
            + f" (best α={best:g}, {_pts(d)})")
    return Outcome(v, text, {"acc_alpha1": a1["mean"], "best_alpha": best, "acc_best": float(means.max()), "diff": d},
                   preset)


def _l2_generalizes(avail):
    preset, res = next(iter(avail.items()))
    f = _finals(res)
    f = f[f["activation"].map(_sig) & np.isclose(f["alpha"], 1.0)]
    parts = []
    for _, g in _archs(f, ARCH + ("activation", "spec")):
        none, l2 = g[g["penalty"] == "none"], g[g["penalty"] == "l2"]
        if none.empty or l2.empty:
            continue
        r = _closest_r(l2)
        an, a2 = _acc(none), _acc(l2[np.isclose(l2["r"], r)])
        d = a2["mean"] - an["mean"]
        v = "reproduced" if d >= HELPS else "not reproduced"
        text = f"{tables.arch_name(g)} · {g['weight_init'].iloc[0]}: L2 r={r:g} {_a(a2)} vs no penalty {_a(an)} ({_pts(d)})"
        nums = {"arch": tables.arch_name(g), "acc_none": an["mean"], "acc_l2": a2["mean"], "gain": d}
        l1 = g[g["penalty"] == "l1"]
        if not l1.empty:
            a1 = _acc(l1[np.isclose(l1["r"], _closest_r(l1))])
            text += f"; L1 {_a(a1)}"
            nums["acc_l1"] = a1["mean"]
        if _at_chance(res, an["mean"], a2["mean"]):
            v, text = "inconclusive", text + f" — {UNINFORMATIVE}"
        parts.append((v, text, nums))
    return _combine(parts, preset)


CLAIMS: list[Claim] = [
    Claim("large-params-slow",
          "Large parameters (N(0, std=10) init) slow learning down compared with N(0, std=1).",
          (LARGE_PARAMS,) + CNN_LARGE,
          f"Final validation accuracy (mean over seeds) of tanh at N(0, std=10) is at least {SLOW_GAP * 100:g} points "
          f"below N(0, std=1), same network: reproduced; {SLOW_GAP_PARTLY * 100:g}–{SLOW_GAP * 100:g} points: partly; "
          "otherwise not reproduced.", _large_params_slow),
    Claim("l2-restores",
          "L2 regularization (r = 0.01) restores learning at N(0, std=10) within the training epochs.",
          (REGULARIZATION,) + CNN_LARGE,
          f"N(0, std=10) + L2 at the r closest to 0.01 reaches within {WITHIN * 100:g} points of N(0, std=1)'s final "
          f"accuracy and gains at least {HELPS * 100:g} points over no penalty: reproduced; one of the two: partly.",
          _l2_restores),
    Claim("l1-weaker", "L1 regularization helps less than L2.", (REGULARIZATION,),
          f"At N(0, std=10) and the same r (closest to 0.01), L1's final accuracy is at least {L1_MARGIN * 100:g} "
          "point below L2's: reproduced; otherwise not reproduced.", _l1_weaker),
    Claim("best-r", "The best L2 strength is r ≈ 0.01.", (R_SWEEP,),
          f"The r with the highest mean final accuracy (L2, ≥ 3 values swept) is within a factor {BEST_R_FACTOR:g} of "
          f"{BEST_R:g}: reproduced; within a factor 10: partly; otherwise not reproduced.", _best_r),
    Claim("large-r-worse", f"L2 with r > {LARGE_R:g} is worse than no regularization.", (R_SWEEP,),
          f"Every swept L2 r > {LARGE_R:g} has a lower mean final accuracy than no penalty: reproduced; some: partly; "
          "none: not reproduced.", _large_r_worse),
    Claim("l2-catches-relu", "tanh with L2 regularization catches up with ReLU and Glorot initialization.",
          (VS_RELU,),
          f"tanh + L2 (N(0, std=10) if present) is at most {WITHIN * 100:g} points below ReLU · Glorot uniform: "
          f"reproduced; at most {2.5 * WITHIN * 100:g} points below: partly; otherwise not reproduced.",
          _l2_catches_relu),
    Claim("deep-chance", "Deep 20x8 tanh networks at N(0, std=0.05) are stuck at chance, while a shallow one learns.",
          (MANY_LAYERS,),
          f"The deepest net's final accuracy is within {CHANCE_MARGIN * 100:g} points of 1/n_classes and the shallowest "
          f"net at the same init beats chance by at least {SHALLOW_LEARNS * 100:g} points: reproduced; only the first: "
          "partly; otherwise not reproduced.", _deep_chance),
    Claim("alpha2-no-help", "Rescaling with α = 2 does not rescue the deep net at N(0, std=0.05).",
          (MANY_LAYERS,) + CNN_DEEP,
          f"Final accuracy at α = 2 is within {SAME * 100:g} points of α = 1 and within {CHANCE_MARGIN * 100:g} points "
          "of chance: reproduced; one of the two: partly; neither: not reproduced.", _alpha2),
    Claim("why-vanish",
          "In the deep net at N(0, std=0.05) the gradient vanishes through the weight product, not through "
          "saturation (φ' ≈ 1 there).", (MANY_LAYERS,) + CNN_DEEP,
          "At initialization, sum over the layers after the first of log10 ‖W‖₂ (weight product) vs sum over hidden "
          f"layers of mean log10 g'(z) (derivative product): the weight product dominates (negative and at least "
          f"{DOMINANCE:g}× the other in magnitude): reproduced; neither dominates: partly; derivatives dominate: not "
          "reproduced. Reported with the measured first/last gradient-norm ratio and the mean-field prediction.",
          _why, source="vglab diagnosis"),
    Claim("alpha-sweep-no-help", "No rescaling α in the swept range rescues the deep 20x8 net at N(0, std=0.05).",
          (ALPHA_SWEEP,),
          f"The best α > 1 (mean final accuracy) is within {SAME * 100:g} points of α = 1: reproduced; otherwise not "
          "reproduced (that α helps).", _alpha_sweep, source="reference study (extended to an α sweep)"),
    Claim("l2-generalizes", "L2 (r = 0.01) also helps at other large initializations: N(0, std=20) and U[-10, 10].",
          (SUPER_LARGE, UNIFORM_LARGE),
          f"Per experiment, L2 at the r closest to 0.01 gains at least {HELPS * 100:g} points of final accuracy over no "
          "penalty at the same init: reproduced; otherwise not reproduced (inconclusive when both are at chance).",
          _l2_generalizes, source="reference study (Section 4 variants)"),
    Claim("rescaling-by-init", "Open question: for which initializations does rescaling (α > 1) help a deep 20x8 net?",
          (RESCALING_BY_INIT,),
          f"Per init: the best α > 1 raises final accuracy if it beats α = 1 by at least {RAISES_ACC * 100:g} points; "
          f"raises the first-layer gradient (first recorded epoch) if some α > 1 beats α = 1 by at least {RAISES_GRAD:g} decades.",
          _rescaling_by_init, source="open question"),
    Claim("combined", "Open question: does combining L2 and rescaling help a net with both problems (deep and large "
          "parameters)?", (COMBINED,),
          f"Both remedies together beat the better single remedy (and no remedy) by at least {RAISES_ACC * 100:g} "
          "points: 'both together beat either alone'; otherwise not.", _combined, source="open question"),
]


def by_id(claim_id: str) -> Claim:
    for c in CLAIMS:
        if c.id == claim_id:
            return c
    raise KeyError(f"no claim {claim_id!r}; claims are {[c.id for c in CLAIMS]}")


def preset_of(res) -> str | None:
    """The preset the results ran, the key its claims are found by (a spec file's: its name)."""
    return res.info.preset or res.info.name or None


def evaluate(results, claims=None) -> list[tuple[Claim, Outcome]]:
    """Evaluate every claim (of `claims`, default the reference study's `CLAIMS`).
    `results`: a Results, a list of them, or {preset: Results}; Results are keyed by
    their `preset` (experiment.toml)."""
    if isinstance(results, dict):
        by = dict(results)
    else:
        seq = results if isinstance(results, (list, tuple)) else [results]
        by = {}
        for r in seq:
            p = preset_of(r)
            if p and p not in by:
                by[p] = r
    return [(c, c.evaluate(by)) for c in (CLAIMS if claims is None else claims)]


def relevant(claim: Claim, preset: str | None) -> bool:
    return preset is not None and preset in claim.presets
