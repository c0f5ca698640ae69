"""Why the remedies work or fail: claims checked on the `optimizers`, `rescaling-identity` and
`trainability` presets (issue 16) and on `deep-remedies` (issue 29: which designed remedy
trains the deep net, and which factor of the backprop product it fixes), with the same
`Claim`/`Outcome` types as the reference study's claims (`vglab.report.claims`) but in a list
of their own (`WHY_CLAIMS`): the index shows them in a separate "Why" section.

Every compared difference is measured over seeds with a 95 % interval
(`vglab.report.stats.difference`): paired when both arms hold the same seeds (runs with one
seed share the base draw of their initialization and every batch order), one-sample against
a fixed reference (chance, a threshold). A verdict is decided by the means, as the reference
claims are, and its text says whether the whole interval meets each threshold too
(`stats.check`); one seed gives no interval, and the text says so.

Arms are found by the `runs` columns: the optimizer by `optimizer_spec` (the resolved
optimizer table, JSON) and the rescaling twins by `model_args` (JSON), both parsed once per
results (`runs`); never by reading labels.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from vglab.experiments.presets import in_section
from vglab.report import claims, stats, tables, theory
from vglab.report.claims import CHANCE_MARGIN, HELPS, RAISES_GRAD, SHALLOW_LEARNS, WITHIN, Claim, Outcome

# ------------------------------------------------------------------ thresholds
# (shared with the reference claims: HELPS = 3 points "helps", WITHIN = 2 points "restores",
# CHANCE_MARGIN = 5 points "at chance", SHALLOW_LEARNS = 20 points above chance "learns")
L2_R = 0.01  # the penalty strength compared (the study's)
EFFECT = HELPS  # rescaling has an effect to decompose when |α-network − standard| >= 3 points
TRAINS_FRACTION = 0.5  # a trainability cell "trains": at least half-way from chance to its map's best cell
AGREE = 0.80  # the trainable depth follows 6 ξ_c: at least 80 % of cells on the predicted side ...
AGREE_PARTLY = 0.65  # ... 65-80 %: partly
BEATS_CONSTANT = 0.10  # ... and at least 10 points more than the better constant prediction
START_RTOL = 1e-4  # the plain twin starts as the α-network: epoch-0 validation losses this close

OPTIMIZERS = "optimizers"
RESCALING_IDENTITY = "rescaling-identity"
TRAINABILITY = "trainability"
DEEP_REMEDIES = "deep-remedies"
PRESETS = in_section("why")  # read from the presets' TOML (`section = "why"`), not listed here
TWIN_MODEL = "vglab.nn.rescaling:twin"


# ------------------------------------------------------------------ the runs, typed
def runs(res) -> pd.DataFrame:
    """The final-epoch table (`tables.final`) with typed columns for the rules:
    opt_name, opt_eps, opt_momentum (from optimizer_spec), twin_form and twin_alpha (from
    model_args of `vglab.nn.rescaling:twin` runs; form "alpha-net" for a built-in network at
    α != 1, "standard" at α = 1) and opt_label. Cached on the results."""
    key = "_why_runs"
    if key in res.cache:
        return res.cache[key]
    f = tables.final(res).copy()
    specs = [json.loads(s) if isinstance(s, str) and s else {} for s in f.get("optimizer_spec", pd.Series([""] * len(f)))]
    f["opt_name"] = [s.get("name", "adam") for s in specs]
    f["opt_eps"] = [float(s["eps"]) if "eps" in s else math.nan for s in specs]
    f["opt_momentum"] = [float(s["momentum"]) if s.get("momentum") is not None else 0.0 for s in specs]
    forms, alphas = [], []
    for model, margs, alpha in zip(f.get("model", pd.Series([None] * len(f))),
                                   f.get("model_args", pd.Series([""] * len(f))), f["alpha"]):
        if isinstance(model, str) and model == TWIN_MODEL:
            a = json.loads(margs) if isinstance(margs, str) and margs else {}
            forms.append(f"{a.get('form', 'plain')} twin")
            alphas.append(float(a.get("alpha", math.nan)))
        elif isinstance(model, str) and model:
            forms.append("other model")
            alphas.append(math.nan)
        else:
            forms.append("standard" if np.isclose(alpha, 1.0) else "alpha-net")
            alphas.append(float(alpha))
    f["twin_form"], f["twin_alpha"] = forms, alphas
    f["opt_label"] = [_opt_label(n, m, e, lr) for n, m, e, lr in
                      zip(f["opt_name"], f["opt_momentum"], f["opt_eps"], f["learning_rate"].astype(float))]
    res.cache[key] = f
    return f


def _opt_label(name: str, momentum: float, eps: float, lr: float) -> str:
    if name == "adam":
        return f"Adam lr {lr:g} eps {eps:g}" if math.isfinite(eps) else f"Adam lr {lr:g}"
    if name == "momentum" or (name == "sgd" and momentum > 0):
        return f"SGD+momentum {momentum:g} lr {lr:g}"
    if name == "sgd":
        return f"SGD lr {lr:g}"
    return f"{name} lr {lr:g}"


def by_seed(rows: pd.DataFrame, value: str = "val_acc") -> dict[int, float]:
    """{seed: value} of one arm (one configuration): what `stats.difference` pairs."""
    if rows["label"].nunique() > 1:
        raise ValueError(f"an arm must be one configuration, got {sorted(rows['label'].unique())}")
    return {int(s): float(v) for s, v in zip(rows["seed"], rows[value])}


def _mean(x: dict) -> float:
    v = np.array([y for y in x.values() if math.isfinite(y)])
    return float(v.mean()) if v.size else math.nan


def _acc_text(x: dict) -> str:
    """The mean over seeds with its 95 % t interval, '0.912 (0.880–0.944)', or '0.912 (1 seed)'."""
    vals = [v for v in x.values() if math.isfinite(v)]
    if len(vals) < 2:
        return f"{_mean(x):.3f} ({len(vals)} seed)"
    d = stats.difference(x, 0.0)
    return f"{d.diff:.3f} ({d.low:.3f}–{d.high:.3f})"


def _pts(d: stats.Difference) -> str:
    return d.text(scale=100, digits=1, unit=" points")


def _merge(verdicts: list[str]) -> str:
    """Several parts' verdicts as one, as the reference claims combine architectures: all the
    same -> that verdict; all inconclusive -> inconclusive; any other mix -> partly."""
    vs = set(verdicts) - {"not run"}
    if not vs:
        return "not run"
    if vs == {"answered"}:
        return "answered"
    decided = vs - {"inconclusive"}
    if not decided:
        return "inconclusive"
    if len(decided) == 1 and "inconclusive" not in vs:
        return decided.pop()
    return "partly"


# ------------------------------------------------------------------ optimizers
def large_params_arms(f: pd.DataFrame):
    """The 1x8-type (shallowest) net's arms at α = 1: N(0, std=10) without and with L2 (r
    closest to 0.01), N(0, std=1) without penalty."""
    f = f[np.isclose(f["alpha"], 1.0) & (f["twin_form"] == "standard")]
    f = pd.concat([tables.arms(f, spec="normal(std=10)"), tables.arms(f, spec="normal(std=1)")])
    if f.empty:
        return f
    return f[f["depth"].astype(float) == f["depth"].astype(float).min()]


def _rescue_at(g: pd.DataFrame, lr: float):
    """(none, l2, ref) rows at one learning rate of one optimizer."""
    at = g[np.isclose(g["learning_rate"].astype(float), lr)]
    big, ref = tables.arms(at, spec="normal(std=10)"), tables.arms(at, spec="normal(std=1)", penalty="none")
    none = big[big["penalty"] == "none"]
    l2 = big[big["penalty"] == "l2"]
    if not l2.empty:
        r = min(l2["r"].unique(), key=lambda v: abs(math.log(v / L2_R)))
        l2 = l2[np.isclose(l2["r"], r)]
    return none, l2, ref


def _rescue(g: pd.DataFrame, chance: float) -> dict | None:
    """L2's rescue for one optimizer setting (all its learning rates): at the rate where
    N(0, std=1) is best, the gain of L2 over no penalty and its gap to N(0, std=1)."""
    rates = sorted(g["learning_rate"].astype(float).unique())
    refs = {lr: _rescue_at(g, lr)[2] for lr in rates}
    rates = [lr for lr in rates if not refs[lr].empty]
    if not rates:
        return None
    best = max(rates, key=lambda lr: refs[lr]["val_acc"].mean())
    none, l2, ref = _rescue_at(g, best)
    if none.empty or l2.empty:
        return None
    a_none, a_l2, a_ref = by_seed(none), by_seed(l2), by_seed(ref)
    gain, gap = stats.difference(a_l2, a_none), stats.difference(a_l2, a_ref)
    helps, within = stats.check(gain, low=HELPS, scale=100, digits=1), stats.check(gap, low=-WITHIN, scale=100, digits=1)
    per_lr = {}
    for lr in sorted(g["learning_rate"].astype(float).unique()):
        n, l, r = _rescue_at(g, lr)
        per_lr[lr] = {k: float(x["val_acc"].mean()) if not x.empty else math.nan for k, x in
                      (("none", n), ("l2", l), ("std1", r))}
    at_chance = all(abs(_mean(x) - chance) <= CHANCE_MARGIN for x in (a_none, a_l2, a_ref))
    return {"lr": best, "none": a_none, "l2": a_l2, "ref": a_ref, "gain": gain, "gap": gap, "helps": helps,
            "within": within, "per_lr": per_lr, "at_chance": at_chance, "r": float(l2["r"].iloc[0])}


def _rescue_text(name: str, x: dict) -> str:
    rates = "; ".join(f"lr {lr:g}: none {v['none']:.3f}, L2 {v['l2']:.3f}, N(0, std=1) {v['std1']:.3f}"
                      for lr, v in x["per_lr"].items())
    return (f"{name} at lr {x['lr']:g} (N(0, std=1)'s best): N(0, std=10) + L2 r={x['r']:g} {_acc_text(x['l2'])} vs "
            f"none {_acc_text(x['none'])} and N(0, std=1) {_acc_text(x['ref'])}; L2 − none {_pts(x['gain'])}, "
            f"{HELPS * 100:g}-point threshold {x['helps'].text}; L2 − N(0, std=1) {_pts(x['gap'])}, "
            f"−{WITHIN * 100:g}-point threshold {x['within'].text}. All rates (means): {rates}")


def _sgd_l2_rescues(avail: dict) -> Outcome:
    preset, res = next(iter(avail.items()))
    f = large_params_arms(runs(res))
    chance = 1.0 / tables.n_classes(res)
    sgd = f[(f["opt_name"] == "sgd") & (f["opt_momentum"] == 0)]
    main = _rescue(sgd, chance) if not sgd.empty else None
    if main is None:
        return Outcome("not run", f"`{preset}` lacks plain SGD runs of N(0, std=10) without and with L2 next to "
                                  "N(0, std=1)")
    helps, within = main["helps"].by_means, main["within"].by_means
    verdict = "reproduced" if helps and within else ("partly" if helps or within else "not reproduced")
    text = _rescue_text("SGD", main)
    if main["at_chance"]:
        verdict, text = "inconclusive", text + f" — every arm is within {CHANCE_MARGIN * 100:g} points of chance"
    nums = {"sgd": {"lr": main["lr"], "gain": main["gain"].diff, "gain_low": main["gain"].low,
                    "gain_high": main["gain"].high, "gap": main["gap"].diff, "acc_l2": _mean(main["l2"]),
                    "acc_none": _mean(main["none"]), "acc_std1": _mean(main["ref"]), "per_lr": main["per_lr"]}}
    others = []
    for name, sel in (("SGD+momentum", (f["opt_name"] == "momentum") | ((f["opt_name"] == "sgd") & (f["opt_momentum"] > 0))),
                      ("Adam", f["opt_name"] == "adam")):
        x = _rescue(f[sel], chance) if sel.any() else None
        if x is not None:
            others.append(_rescue_text(name, x))
            nums[name] = {"lr": x["lr"], "gain": x["gain"].diff, "gap": x["gap"].diff, "acc_l2": _mean(x["l2"]),
                          "acc_none": _mean(x["none"]), "acc_std1": _mean(x["ref"])}
    if others:
        text += " ‖ For comparison: " + " ‖ ".join(others)
    return Outcome(verdict, text, nums, preset)


def deep_runs(res) -> pd.DataFrame:
    """The deepest net's runs of the optimizers preset (built-in network, no penalty)."""
    f = runs(res)
    f = f[f["twin_form"].isin(["standard", "alpha-net"]) & (f["penalty"] == "none")]
    if f.empty:
        return f
    return f[f["depth"].astype(float) == f["depth"].astype(float).max()]


def layer_gradients(res, run_ids, epoch: int = 1) -> pd.Series:
    """log10 of each weight's mean |∂J/∂w| in `epoch` (averaged over the runs in log10), by
    layer_index: the gradient size Adam's eps is compared with."""
    g = res.grads
    g = g[g["run_id"].isin(list(run_ids)) & (g["param"] == "w") & (g["epoch"] == epoch)]
    with np.errstate(divide="ignore"):
        return g.assign(lg=np.log10(g["grad_abs_mean"].astype(float))).groupby("layer_index")["lg"].mean()


def _eps_rule_one(res, d: pd.DataFrame, chance: float, alpha: float):
    adam = d[(d["opt_name"] == "adam") & np.isclose(d["alpha"], alpha) & d["opt_eps"].notna()]
    if adam["opt_eps"].nunique() < 2:
        return None
    grads = layer_gradients(res, adam["run_id"])
    if grads.empty:
        return None
    smallest = float(grads.min())
    eps = sorted(adam["opt_eps"].unique(), reverse=True)
    arms = {e: by_seed(adam[np.isclose(adam["opt_eps"], e, rtol=1e-9, atol=0)]) for e in eps}
    base_eps = max(eps)
    below = [e for e in eps if math.log10(e) < smallest]
    rows = [f"eps {e:g}: {_acc_text(arms[e])} ({int((grads > math.log10(e)).sum())}/{len(grads)} layers' |g| above eps)"
            for e in eps]
    head = (f"α={alpha:g}: first layer's mean |∂J/∂W| in epoch 1 10^{grads.iloc[0]:.1f}, smallest over layers "
            f"10^{smallest:.1f}, output layer's 10^{grads.iloc[-1]:.1f}; final val acc " + "; ".join(rows))
    nums = {"alpha": alpha, "log10_grad_min": smallest, "log10_grad_first": float(grads.iloc[0]),
            "acc": {float(e): _mean(a) for e, a in arms.items()}}
    if not below:
        return "inconclusive", head + f" — no swept eps is below every layer's gradient (smallest 10^{smallest:.1f})", nums
    best = max(below, key=lambda e: _mean(arms[e]))
    gain = stats.difference(arms[best], arms[base_eps])
    above_chance = stats.difference(arms[best], chance)
    c_gain = stats.check(gain, low=HELPS, scale=100, digits=1)
    c_trains = stats.check(above_chance, low=SHALLOW_LEARNS, scale=100, digits=1)
    text = (head + f". Best eps below every gradient: {best:g}, gain over eps {base_eps:g} {_pts(gain)} "
            f"({HELPS * 100:g}-point threshold {c_gain.text}); above chance {_pts(above_chance)} "
            f"({SHALLOW_LEARNS * 100:g}-point 'trains' threshold {c_trains.text})")
    nums.update(best_eps=best, gain=gain.diff, gain_low=gain.low, gain_high=gain.high,
                above_chance=above_chance.diff)
    verdict = ("reproduced" if c_gain.by_means and c_trains.by_means else "partly" if c_gain.by_means
               else "not reproduced")
    return verdict, text, nums


def _eps_below_gradients(avail: dict) -> Outcome:
    preset, res = next(iter(avail.items()))
    d = deep_runs(res)
    chance = 1.0 / tables.n_classes(res)
    parts = [p for a in sorted(d["alpha"].unique()) if (p := _eps_rule_one(res, d, chance, float(a))) is not None] \
        if not d.empty else []
    if not parts:
        return Outcome("not run", f"`{preset}` lacks the deep net under Adam at two or more eps values")
    arch = f"{tables.arch_name(d)} at {d['weight_init'].iloc[0]}, Adam"
    text = arch + ": " + " ‖ ".join(f"{t} → {v}" for v, t, _ in parts)
    return Outcome(_merge([v for v, _, _ in parts]), text, {f"alpha={n['alpha']:g}": n for _, _, n in parts}, preset)


def frozen_layers(res, run_ids, epoch: int = 1) -> tuple[int, int]:
    """(layers counted from the input whose weights did not change at all in `epoch` in any
    of the runs, hidden+output layers): the update_size probe measures θ_after − θ_before
    after float32 rounding, so an update below the weights' resolution reads exactly 0."""
    g = res.grads
    g = g[g["run_id"].isin(list(run_ids)) & (g["param"] == "w") & (g["epoch"] == epoch)]
    if "update_norm_mean" not in g or g.empty:
        raise ValueError("no update_size probe in these results")
    moved = g.groupby("layer_index")["update_norm_mean"].max() > 0
    n = 0
    for _, m in moved.sort_index().items():
        if m:
            break
        n += 1
    return n, int(moved.size)


def _frozen(avail: dict) -> Outcome:
    preset, res = next(iter(avail.items()))
    d = deep_runs(res)
    if d.empty or "update_norm_mean" not in res.grads:
        return Outcome("not run", f"`{preset}` lacks the deep net's runs with the update_size probe")
    d = d[np.isclose(d["alpha"], 1.0)].assign(_eps=lambda x: -x["opt_eps"].fillna(0.0))
    d = d.sort_values(["opt_name", "opt_momentum", "learning_rate", "_eps"], kind="stable")
    rows, nums = [], {}
    for label, g in d.groupby("opt_label", sort=False):
        n, total = frozen_layers(res, g["run_id"])
        grads = layer_gradients(res, g["run_id"])
        moving = f"; the first layer that moves has |∂J/∂W| 10^{grads.iloc[n]:.1f}" if n < total else ""
        rows.append(f"{label}: {n} of {total} layers never change in epoch 1{moving}")
        nums[label] = {"frozen": n, "layers": total, "log10_grad_first_moving": float(grads.iloc[n]) if n < total
                       else math.nan}
    arch = f"{tables.arch_name(d)} at {d['weight_init'].iloc[0]}, α=1"
    return Outcome("answered", arch + ": " + "; ".join(rows), nums, preset)


# ------------------------------------------------------------------ rescaling identity
PARTS = ("input scale", "bias scale + output temperature", "parametrisation")


@dataclass(frozen=True)
class Decomposition:
    """Rescaling's effect on final accuracy for one network, optimizer and α, paired over
    seeds: total = α-network − standard; input scale = input-scaled − standard; bias scale
    + output temperature = plain twin − input-scaled; parametrisation = α-network − plain
    twin (the three sum to the total)."""

    setting: str  # the network and optimizer
    alpha: float
    total: stats.Difference
    parts: dict  # PARTS -> stats.Difference
    start_gap: float  # max over seeds of |val_loss(α-net) − val_loss(plain twin)| / val_loss at epoch 0
    arms: dict  # {"standard", "inputs", "plain", "alpha-net"} -> {seed: final val acc}


def setting_key(f: pd.DataFrame) -> pd.Series:
    """One setting per network (the twins' model_args without alpha/form) and optimizer."""
    def arch(row):
        if row["twin_form"].endswith("twin"):
            a = json.loads(row["model_args"]) if isinstance(row["model_args"], str) else {}
            depth, width, net = a.get("depth", 1), a.get("width", 8), a.get("network", "mlp")
        else:
            depth, width, net = row["depth"], row["width"], row["network"]
        return f"{net} {int(depth)}x{int(width)} · {row['weight_init']} · {row['opt_label']}"
    return f.apply(arch, axis=1)


def decompositions(res) -> list[Decomposition]:
    """Every (setting, α) with all four arms (see `Decomposition`)."""
    f = runs(res)
    if f.empty:
        return []
    f = f.assign(setting=setting_key(f))
    e0 = res.epochs[res.epochs["epoch"] == 0].set_index("run_id")["val_loss"]
    out = []
    for setting, g in f.groupby("setting", sort=False):
        std = g[g["twin_form"] == "standard"]
        if std.empty:
            continue
        for alpha in sorted(a for a in g["twin_alpha"].unique() if math.isfinite(a) and not np.isclose(a, 1.0)):
            at = g[np.isclose(g["twin_alpha"], alpha)]
            pick = {"alpha-net": at[at["twin_form"] == "alpha-net"], "plain": at[at["twin_form"] == "plain twin"],
                    "inputs": at[at["twin_form"] == "inputs twin"]}
            if any(v.empty for v in pick.values()):
                continue
            arms = {"standard": by_seed(std), **{k: by_seed(v) for k, v in pick.items()}}
            parts = {PARTS[0]: stats.difference(arms["inputs"], arms["standard"]),
                     PARTS[1]: stats.difference(arms["plain"], arms["inputs"]),
                     PARTS[2]: stats.difference(arms["alpha-net"], arms["plain"])}
            la = pick["alpha-net"].set_index("seed")["run_id"].map(e0)
            lp = pick["plain"].set_index("seed")["run_id"].map(e0)
            gap = float(np.nanmax(np.abs(la - lp.reindex(la.index)) / np.abs(la)))
            out.append(Decomposition(setting, float(alpha), stats.difference(arms["alpha-net"], arms["standard"]),
                                     parts, gap, arms))
    return out


def _ci(d: stats.Difference) -> str:
    """'+12.0 (+7.6 to +16.5)' points, or '+12.0 (no interval)'."""
    if not d.has_interval:
        return f"{d.diff * 100:+.1f} (no interval)"
    return f"{d.diff * 100:+.1f} ({d.low * 100:+.1f} to {d.high * 100:+.1f})"


def _decomposition(avail: dict) -> Outcome:
    preset, res = next(iter(avail.items()))
    decs = decompositions(res)
    if not decs:
        return Outcome("not run", f"`{preset}` lacks a standard net, an α-network and its plain and input-scaled "
                                  f"twins ({TWIN_MODEL}) of one setting")
    rows, nums, resolved = [], {}, []
    for d in decs:
        name = f"{d.setting}, α={d.alpha:g}"
        effect = stats.check(d.total, **({"low": EFFECT} if d.total.diff >= 0 else {"high": -EFFECT}),
                             scale=100, digits=1)
        share = math.nan
        if not effect.by_means:
            summary = f"no effect to decompose (|total| < {EFFECT * 100:g} points)"
        else:
            share = 1.0 - d.parts[PARTS[2]].diff / d.total.diff
            summary = (f"the function (input scale, bias scale, output temperature) accounts for {share:.0%} of the "
                       f"effect, the parametrisation for {1 - share:.0%}")
            if effect.by_interval:
                resolved.append(f"{name}: function {share:.0%}, parametrisation {1 - share:.0%}")
            else:
                summary += f" — but the total's {EFFECT * 100:g}-point threshold is {effect.text}, so the shares are " \
                           "not resolved"
        start = ("the plain twin starts as the α-network (epoch-0 validation loss within "
                 f"{d.start_gap:.1e} relative)" if d.start_gap <= START_RTOL else
                 f"the plain twin does NOT start as the α-network (epoch-0 validation losses differ by {d.start_gap:.1e})")
        bits = ", ".join(f"{k} {_ci(v)}" for k, v in d.parts.items())
        rows.append(f"{name}: standard {_acc_text(d.arms['standard'])}, α-network {_acc_text(d.arms['alpha-net'])}; "
                    f"total {_ci(d.total)} points = {bits} → {summary}; {start}")
        nums[f"{d.setting} · α={d.alpha:g}"] = {"total": d.total.diff, "total_low": d.total.low,
                                                 "total_high": d.total.high, **{k: v.diff for k, v in d.parts.items()},
                                                 "function_share": share, "start_gap": d.start_gap,
                                                 "effect_resolved": bool(effect.by_interval)}
    head = (f"Effects whose whole 95 % interval is at least {EFFECT * 100:g} points: {len(resolved)} of {len(decs)} "
            f"settings" + (" (" + "; ".join(resolved) + ")" if resolved else "") + ". ")
    return Outcome("answered", head + " ‖ ".join(rows), nums, preset)


# ------------------------------------------------------------------ trainability
@dataclass(frozen=True)
class TrainabilityMap:
    """One heat map: mean final accuracy over depth x σ_w² at one width and α, with the
    mean-field prediction. `acc[i, j]` is at depths[i], sigma_w2[j]; `per_seed[i][j]` the
    seeds' values; `predicted` is depth <= 6 ξ_c; `trains` the measured decision."""

    width: int
    alpha: float
    sigma_b2: float
    depths: np.ndarray
    sigma_w2: np.ndarray
    acc: np.ndarray
    per_seed: list
    trainable_depth: np.ndarray  # 6 ξ_c per σ_w²
    threshold: float  # chance + TRAINS_FRACTION (best − chance)
    trains: np.ndarray  # bool, mean >= threshold
    decided: np.ndarray  # bool: the cell's whole 95 % interval lies on one side of the threshold

    @property
    def predicted(self) -> np.ndarray:
        return self.depths[:, None] <= self.trainable_depth[None, :]

    @property
    def agreement(self) -> float:
        ok = np.isfinite(self.acc)
        return float((self.predicted == self.trains)[ok].mean())

    @property
    def constant_agreement(self) -> float:
        """The better of 'every cell trains' and 'no cell trains' under the same rule."""
        ok = np.isfinite(self.acc)
        t = self.trains[ok].mean()
        return float(max(t, 1 - t))

    def sides(self) -> dict[str, tuple[int, int]]:
        """{'within': (cells with depth <= 6 ξ_c that train, such cells), 'beyond': (cells
        deeper than 6 ξ_c that do not train, such cells)}: the two halves of the prediction,
        "up to about 6 ξ_c" and "not beyond"."""
        ok = np.isfinite(self.acc)
        p, t = self.predicted[ok], self.trains[ok]
        return {"within": (int((p & t).sum()), int(p.sum())), "beyond": (int((~p & ~t).sum()), int((~p).sum()))}

    @property
    def decided_agreement(self) -> tuple[int, int]:
        """(cells whose interval lies wholly on the predicted side, cells decided by their interval)."""
        ok = np.isfinite(self.acc) & self.decided
        return int((self.predicted == self.trains)[ok].sum()), int(ok.sum())


def trainability_maps(res) -> list[TrainabilityMap]:
    """The heat maps of a trainability experiment: one per (width, α), tanh-type MLPs under
    normal(sigma_w2=...) weights (σ_w² from `init_scale`), σ_b² from the bias law. Cached on
    the results (the chaotic phase's depth scales take ~0.1-0.5 s per σ_w²)."""
    if "_why_maps" not in res.cache:
        res.cache["_why_maps"] = _trainability_maps(res)
    return res.cache["_why_maps"]


def _trainability_maps(res) -> list[TrainabilityMap]:
    f = runs(res)
    f = f[(f["network"].astype(str) == "mlp") & (f["weight_init_kind"].astype(str) == "scaled_normal")]
    if f.empty:
        return []
    chance = 1.0 / tables.n_classes(res)
    out = []
    for (width, alpha, act), g in f.groupby(["width", "alpha", "activation"], sort=True):
        depths = np.array(sorted(g["depth"].astype(int).unique()))
        sw = np.array(sorted(g["init_scale"].astype(float).unique()))
        sb2 = theory.run_bias_variance(g.iloc[0])  # as the runner stored it; older runs: from the label
        acc = np.full((depths.size, sw.size), np.nan)
        per = [[{} for _ in sw] for _ in depths]
        for (d, s), c in g.groupby([g["depth"].astype(int), g["init_scale"].astype(float)]):
            i, j = int(np.searchsorted(depths, d)), int(np.searchsorted(sw, s))
            per[i][j] = {int(k): float(v) for k, v in zip(c["seed"], c["val_acc"])}
            acc[i, j] = _mean(per[i][j])
        grid = theory.depth_scale_grid(str(act), float(alpha), sw, sb2)
        threshold = chance + TRAINS_FRACTION * (np.nanmax(acc) - chance)
        trains = acc >= threshold
        decided = np.zeros_like(trains)
        for i in range(depths.size):
            for j in range(sw.size):
                vals = per[i][j]
                if sum(math.isfinite(v) for v in vals.values()) >= 2:
                    d = stats.difference(vals, threshold)
                    decided[i, j] = d.has_interval and (d.low >= 0 or d.high < 0)
        out.append(TrainabilityMap(int(width), float(alpha), sb2, depths, sw, acc, per, grid.trainable_depth,
                                   float(threshold), trains, decided))
    return out


def _trainable_depth(avail: dict) -> Outcome:
    preset, res = next(iter(avail.items()))
    maps = trainability_maps(res)
    if not maps:
        return Outcome("not run", f"`{preset}` has no MLPs at normal(sigma_w2=...) weights")
    parts = []
    for m in maps:
        agree, base = m.agreement, m.constant_agreement
        ok, n_dec = m.decided_agreement
        v = ("reproduced" if agree >= AGREE and agree >= base + BEATS_CONSTANT else
             "partly" if agree >= AGREE_PARTLY and agree > base else "not reproduced")
        deepest = []
        for j, s in enumerate(m.sigma_w2):
            t = m.depths[m.trains[:, j]]
            deepest.append(f"σ_w²={s:g}: {int(t.max()) if t.size else '–'} vs {m.trainable_depth[j]:.0f}")
        sides = m.sides()
        text = (f"width {m.width}, α={m.alpha:g} (σ_b²={m.sigma_b2:.3g}): {agree:.0%} of {np.isfinite(m.acc).sum()} "
                f"cells on the predicted side (constant prediction: {base:.0%}): {sides['within'][0]} of "
                f"{sides['within'][1]} cells within 6 ξ_c train, {sides['beyond'][0]} of {sides['beyond'][1]} beyond it "
                "do not; cells whose 95 % seed interval is "
                f"wholly on one side of the threshold: {n_dec}, of which {ok} on the predicted side; trains = final "
                f"val acc ≥ {m.threshold:.3f}. Deepest depth that trains vs 6 ξ_c: " + ", ".join(deepest))
        parts.append((v, text, {"width": m.width, "alpha": m.alpha, "agreement": agree, "constant": base, **sides,
                                "decided": n_dec, "decided_agree": ok, "threshold": m.threshold}))
    return Outcome(_merge([v for v, _, _ in parts]), " ‖ ".join(f"{t} → {v}" for v, t, _ in parts),
                   {f"width={n['width']} alpha={n['alpha']:g}": n for _, _, n in parts}, preset)


# ------------------------------------------------------------------ deep remedies (issue 29)
REMEDY_ORDER = ("none", "Glorot", "α=2", "α=5", "orthogonal critical", "Gaussian critical", "kernel-shaped",
                "residual", "LayerNorm")
DESIGNED = ("orthogonal critical", "Gaussian critical", "kernel-shaped", "residual", "LayerNorm")
FEW_POINTS = 0.05  # "within a few points" of the shallow net: at most 5 points below it
THEORY_GAP = 0.5  # width 8 "holds less": its mean-field error at least 0.5 decades larger than width 128's
_TAT = re.compile(r"^\s*tat\s*\(\s*(\w+)")


def remedy_of(row) -> str:
    """Which arm of the deep-remedies preset a run is, from its runs columns: the shallow
    reference (depth 1), LayerNorm (`norm`), residual (`residual` > 0), kernel-shaped (a TAT
    activation), orthogonal / Gaussian critical (`weight_init_kind` scaled_orthogonal /
    scaled_normal: the preset's σ_w² = critical), Glorot, α = 2, 5 or none (N(0, std) at α = 1)."""
    if int(row["depth"]) == 1:
        return "shallow"
    if str(row.get("norm") or "none") == "layer":
        return "LayerNorm"
    if float(row.get("residual") or 0.0) > 0:
        return "residual"
    if _TAT.match(str(row["activation"])):
        return "kernel-shaped"
    kind = str(row["weight_init_kind"])
    named = {"scaled_orthogonal": "orthogonal critical", "scaled_normal": "Gaussian critical",
             "glorot_uniform": "Glorot"}
    if kind in named:
        return named[kind]
    return "none" if np.isclose(float(row["alpha"]), 1.0) else f"α={float(row['alpha']):g}"


def remedy_runs(res) -> pd.DataFrame:
    """The final-epoch table of built-in MLPs with `remedy` (`remedy_of`) and `base` (the
    activation a TAT one is made from). Cached on the results."""
    key = "_why_remedies"
    if key not in res.cache:
        f = runs(res)
        f = f[f["network"].astype(str) == "mlp"].copy()
        for col, default in (("residual", 0.0), ("norm", "none")):
            f[col] = f[col].fillna(default) if col in f else default
        f["remedy"] = [remedy_of(r) for _, r in f.iterrows()] if len(f) else []
        f["base"] = [m.group(1) if (m := _TAT.match(str(a))) else str(a) for a in f["activation"]]
        res.cache[key] = f
    return res.cache[key]


def remedy_cells(f: pd.DataFrame) -> list[tuple[str, int, int]]:
    """The deep nets (base activation, depth, width), tanh first, shallow to deep, narrow to wide."""
    deep = f[f["depth"].astype(int) > 1]
    cells = {(str(a), int(d), int(w)) for a, d, w in zip(deep["base"], deep["depth"], deep["width"])}
    return sorted(cells, key=lambda c: (c[0] != "tanh", c[0], c[1], c[2]))


def remedy_arm(f: pd.DataFrame, cell: tuple, remedy: str, value: str = "val_acc") -> dict:
    """{seed: value} of one remedy on one deep net; the shallow reference at the cell's width."""
    act, depth, width = cell
    rows = f[(f["base"] == act) & (f["width"].astype(int) == width) & (f["remedy"] == remedy)]
    if remedy != "shallow":
        rows = rows[rows["depth"].astype(int) == depth]
    return by_seed(rows, value) if len(rows) else {}


def _cell_name(cell) -> str:
    return f"{cell[0]} {cell[1]}x{cell[2]}"


def _at_chance(chance: float, *arms: dict) -> bool:
    return all(abs(_mean(a) - chance) <= CHANCE_MARGIN for a in arms)


def _isometry_cell(f, cell, chance):
    orth, gauss = remedy_arm(f, cell, "orthogonal critical"), remedy_arm(f, cell, "Gaussian critical")
    if not orth or not gauss:
        return None
    d = stats.difference(orth, gauss)
    c = stats.check(d, low=HELPS, scale=100, digits=1)
    v = "inconclusive" if _at_chance(chance, orth, gauss) else ("reproduced" if c.by_means else "not reproduced")
    text = (f"{_cell_name(cell)}: orthogonal {_acc_text(orth)} vs Gaussian {_acc_text(gauss)}, difference {_pts(d)}, "
            f"{HELPS * 100:g}-point threshold {c.text}")
    return v, text, {"orth": _mean(orth), "gauss": _mean(gauss), "diff": d.diff, "low": d.low, "high": d.high}


def _tat_cell(f, cell, chance):
    tat, shallow = remedy_arm(f, cell, "kernel-shaped"), remedy_arm(f, cell, "shallow")
    if not tat or not shallow:
        return None
    d = stats.difference(tat, shallow)
    c = stats.check(d, low=-FEW_POINTS, scale=100, digits=1)
    trains = _mean(tat) - chance >= SHALLOW_LEARNS
    v = "reproduced" if c.by_means else ("partly" if trains else "not reproduced")
    text = (f"{_cell_name(cell)}: kernel-shaped {_acc_text(tat)} vs shallow 1x{cell[2]} {_acc_text(shallow)}, "
            f"difference {_pts(d)}, −{FEW_POINTS * 100:g}-point threshold {c.text}")
    return v, text, {"tat": _mean(tat), "shallow": _mean(shallow), "diff": d.diff, "low": d.low, "high": d.high}


def _per_cell(avail: dict, decide, activations=("tanh",)) -> Outcome:
    """A claim decided per deep net of `activations` (merged as architectures); the other
    activations' nets shown beside it, not counted."""
    preset, res = next(iter(avail.items()))
    f = remedy_runs(res)
    chance = 1.0 / tables.n_classes(res)
    counted, beside, nums = [], [], {}
    for cell in remedy_cells(f):
        out = decide(f, cell, chance)
        if out is None:
            continue
        (counted if cell[0] in activations else beside).append((out[0], out[1]))
        nums[_cell_name(cell)] = {**out[2], "verdict": out[0], "counted": cell[0] in activations}
    if not counted:
        return Outcome("not run", f"`{preset}` lacks these arms on a deep {'/'.join(activations)} net", nums, preset)
    text = " ‖ ".join(f"{t} → {v}" for v, t in counted)
    if beside:
        text += " ‖ Not counted (shown beside): " + " ‖ ".join(f"{t} → {v}" for v, t in beside)
    return Outcome(_merge([v for v, _ in counted]), text, nums, preset)


def _isometry(avail: dict) -> Outcome:
    return _per_cell(avail, _isometry_cell)


def _tat_near_shallow(avail: dict) -> Outcome:
    return _per_cell(avail, _tat_cell)


def _alpha_cell(f, cell, chance):
    none = remedy_arm(f, cell, "none")
    alphas = {r: a for r in ("α=2", "α=5") if (a := remedy_arm(f, cell, r))}
    designed = {r: a for r in DESIGNED if (a := remedy_arm(f, cell, r))}
    if not none or not alphas or not designed:
        return None
    best = max(alphas, key=lambda r: _mean(alphas[r]))
    gain = stats.difference(alphas[best], none)
    over = {r: stats.difference(a, alphas[best]) for r, a in designed.items()}
    beats = [r for r, d in over.items() if stats.check(d, low=HELPS).by_means]
    if _at_chance(chance, none, *alphas.values(), *designed.values()):
        v = "inconclusive"
    else:
        v = "reproduced" if len(beats) == len(designed) else ("partly" if beats else "not reproduced")
    rows = "; ".join(f"{r} {_acc_text(designed[r])}, − {best} {_pts(d)}" for r, d in over.items())
    text = (f"{_cell_name(cell)}: none {_acc_text(none)}, {best} (the better α) {_acc_text(alphas[best])}, gain "
            f"{_pts(gain)}; {rows} — {len(beats)} of {len(designed)} remedies at least {HELPS * 100:g} points above "
            f"{best} (by the means)")
    return v, text, {"best_alpha": best, "alpha_gain": gain.diff, "beats": beats,
                     "over_alpha": {r: d.diff for r, d in over.items()}}


def _alpha_less(avail: dict) -> Outcome:
    return _per_cell(avail, _alpha_cell, activations=("tanh", "sigmoid"))


PLAIN = ("none", "Glorot", "α=2", "α=5", "orthogonal critical", "Gaussian critical")  # arms with a mean-field model


def theory_errors(res) -> dict[int, list[float]]:
    """Per width, |measured − predicted| log10 ‖∂J/∂W^[1]‖/‖∂J/∂W^[L]‖ (first over last hidden
    layer, decades; `theory.compare`'s prediction with layer inputs, measured in the first
    recorded epoch) of every run of the deep nets' plain arms (`PLAIN`); runs whose first-layer
    gradient underflowed to 0 (no finite measurement) are left out and counted under key -width."""
    f = remedy_runs(res)
    plain = f[f["remedy"].isin(PLAIN) & (f["depth"].astype(int) > 1)]
    width_of = dict(zip(plain["label"], plain["width"].astype(int)))
    out: dict[int, list[float]] = {}
    for c in theory.compare(res, labels=set(width_of)):
        w = width_of[c.label]
        err = np.abs(c.measured[:, 0] - c.pred_full[0]) / 2  # squared norms -> norms
        out.setdefault(w, []).extend(float(e) for e in err[np.isfinite(err)])
        out.setdefault(-w, []).extend([1.0] * int((~np.isfinite(err)).sum()))
    return out


def _width_theory(avail: dict) -> Outcome:
    preset, res = next(iter(avail.items()))
    errs = theory_errors(res)
    widths = sorted(w for w in errs if w > 0 and errs[w])
    if len(widths) < 2:
        return Outcome("not run", f"`{preset}` lacks deep plain nets at two widths with measured gradients")
    narrow, wide = widths[0], widths[-1]
    d = stats.difference(errs[narrow], errs[wide])
    c = stats.check(d, low=THEORY_GAP, digits=2, unit=" decades")
    v = "reproduced" if c.by_means else ("partly" if d.diff > 0 else "not reproduced")
    f, chance = remedy_runs(res), 1.0 / tables.n_classes(res)
    held = []
    for name, decide in (("isometry", _isometry_cell), ("kernel-shaped ≈ shallow", _tat_cell)):
        for w in (narrow, wide):
            outs = [o[0] for cell in remedy_cells(f) if cell[0] == "tanh" and cell[2] == w
                    and (o := decide(f, cell, chance)) is not None]
            held.append(f"{name} at width {w}: {outs.count('reproduced')} of {len(outs)} nets")
    left = {w: len(errs.get(-w, [])) for w in (narrow, wide)}
    text = (f"mean-field error of the first/last hidden gradient ratio (decades, per run): width {narrow} "
            f"{np.mean(errs[narrow]):.2f} ({len(errs[narrow])} runs, {left[narrow]} underflowed), width {wide} "
            f"{np.mean(errs[wide]):.2f} ({len(errs[wide])} runs, {left[wide]} underflowed); width {narrow} − width "
            f"{wide} {d.text(digits=2, unit=' decades')}, {THEORY_GAP:g}-decade threshold {c.text}. Claims per net: "
            + "; ".join(held))
    return Outcome(v, text, {"error_narrow": float(np.mean(errs[narrow])), "error_wide": float(np.mean(errs[wide])),
                             "diff": d.diff, "low": d.low, "high": d.high, "narrow": narrow, "wide": wide}, preset)


JACOBIAN_EXAMPLES = 16  # inputs per configuration whose Jacobians' singular values are pooled


def jacobian_spectra(res, cell, examples: int = JACOBIAN_EXAMPLES) -> dict[str, np.ndarray]:
    """Per remedy on one deep net: the singular values of ∂h^[L]/∂h^[1] at initialization
    (`vglab.nn.networks.hidden_jacobian`), pooled over `examples` inputs, for the first seed's
    network drawn again from its stored laws and seed (`train.loop.initial_params`: what
    training started from). Inputs are N(0, E‖x‖²/n_in) per feature, the stored input scale
    (`theory.stored_inputs`): the report does not prepare the dataset again. Cached."""
    key = ("_why_jacobians", cell, examples)
    if key in res.cache:
        return res.cache[key]
    f = remedy_runs(res)
    act, depth, width = cell
    f = f[(f["base"] == act) & (f["depth"].astype(int) == depth) & (f["width"].astype(int) == width)]
    with threadpool_limits(limits=1):  # small QRs and SVDs: 2 BLAS threads took 40x the CPU (9.5 s vs 0.22 s)
        out = {remedy: sv for remedy in REMEDY_ORDER if (sv := _jacobian_singular_values(f, remedy, examples)) is not None}
    res.cache[key] = out
    return out


def _jacobian_singular_values(f: pd.DataFrame, remedy: str, examples: int) -> np.ndarray | None:
    """One remedy's pooled singular values (`jacobian_spectra`), None where it has no runs."""
    from vglab.nn import init, networks
    from vglab.train import Member, loop

    rows = f[f["remedy"] == remedy].sort_values("seed")
    facts = theory.stored_inputs(rows.iloc[0]) if len(rows) else None
    if facts is None:
        return None
    r, (n_in, x2, _) = rows.iloc[0], facts
    net = networks.build("mlp", (n_in,), depth=int(r["depth"]), width=int(r["width"]), activation=str(r["activation"]),
                         n_out=int(r["n_classes"]), residual=float(r["residual"]), norm=str(r["norm"]))
    member = Member(seed=int(r["seed"]), weight_init=init.parse(r["weight_init_spec"]),
                    bias_init=init.parse(r["bias_init_spec"]))
    x = np.random.default_rng(0).normal(0.0, math.sqrt((x2 or n_in / 3) / n_in), (examples, n_in))
    jac = networks.hidden_jacobian(net, loop.initial_params(net, member), x.astype(np.float32), float(r["alpha"]))
    return np.linalg.svd(np.asarray(jac, np.float64), compute_uv=False).ravel()


def remedy_factors(res, cell) -> dict[str, dict]:
    """Per remedy on one deep net: final accuracy {seed: acc}, the first layer's log10 weight-
    gradient norm in the first recorded epoch (`claims.first_grad`) and the backprop product's
    factors at initialization (`claims.factor_diagnosis`: Σ log10‖W‖₂ over the later layers,
    Σ mean log10 φ′, saturated fraction)."""
    f = remedy_runs(res)
    act, depth, width = cell
    out = {}
    for r in REMEDY_ORDER:
        rows = f[(f["base"] == act) & (f["depth"].astype(int) == depth) & (f["width"].astype(int) == width)
                 & (f["remedy"] == r)]
        if rows.empty:
            continue
        ids = list(rows["run_id"])
        out[r] = {"acc": by_seed(rows), "grad": claims.first_grad(res, ids),
                  **claims.factor_diagnosis(res, ids, epoch=0)}
    return out


def _fixed(x: dict, none: dict) -> str:
    """Which factor a remedy raised against no remedy: the larger rise of Σ log10‖W‖ and Σ log10 φ′."""
    dw, dd = x["weight_log10"] - none["weight_log10"], x["deriv_log10"] - none["deriv_log10"]
    if not (np.isfinite(dw) and np.isfinite(dd)) or max(dw, dd) < RAISES_GRAD:
        return "neither factor"
    return "weights" if dw >= dd else "derivatives"


def _factors(avail: dict) -> Outcome:
    preset, res = next(iter(avail.items()))
    if not {"param", "grad_norm_mean"} <= set(res.grads.columns):
        return Outcome("not run", f"`{preset}` holds no gradient records (no grad_norm rows in its grads table): "
                                  "train it with the grad_norm probe to read each remedy's first-layer gradient")
    f = remedy_runs(res)
    rows, nums = [], {}
    for cell in remedy_cells(f):
        fx = remedy_factors(res, cell)
        none = fx.get("none")
        parts = []
        for r, x in fx.items():
            fixed = f", fixed {_fixed(x, none)}" if none is not None and r != "none" else ""
            parts.append(f"{r} {_mean(x['acc']):.3f}, g₁ 10^{x['grad']:.1f}, W {x['weight_log10']:+.1f}, "
                         f"φ′ {x['deriv_log10']:+.1f}{fixed}")
            nums[f"{_cell_name(cell)} · {r}"] = {"acc": _mean(x["acc"]), "grad_log10": x["grad"],
                                                 "weight_log10": x["weight_log10"], "deriv_log10": x["deriv_log10"],
                                                 "saturated_frac": x["saturated_frac"]}
        rows.append(f"{_cell_name(cell)}: " + "; ".join(parts))
    if not rows:
        return Outcome("not run", f"`{preset}` has no deep nets")
    head = ("Per net and remedy: final val acc (mean), first-layer ‖∂J/∂W‖ in the first recorded epoch (g₁), and at "
            "initialization Σ log10‖W‖₂ over the later layers (W) and Σ mean log10 φ′ (φ′). Residual and LayerNorm "
            "change the backward map beyond W and φ′ (the identity path; the normalization's 1/σ), so for them read "
            "g₁. ‖ ")
    return Outcome("answered", head + " ‖ ".join(rows), nums, preset)


# ------------------------------------------------------------------ the claims
WHY_CLAIMS: list[Claim] = [
    Claim("sgd-l2-rescues",
          "L2 (r = 0.01) rescues a net started at large parameters (N(0, std=10)) under plain SGD, the setting of "
          "Ven & Lederer's theory, where no normalisation hides small gradients.", (OPTIMIZERS,),
          f"Shallowest net, α = 1, plain SGD at the learning rate where N(0, std=1) reaches its best mean final "
          f"accuracy: N(0, std=10) + L2 (r closest to {L2_R:g}) gains at least {HELPS * 100:g} points over no penalty "
          f"and is at most {WITHIN * 100:g} points below N(0, std=1): reproduced; one of the two: partly; neither: not "
          "reproduced (inconclusive when all three are within "
          f"{CHANCE_MARGIN * 100:g} points of chance). Differences paired over seeds, 95 % t intervals; decided by the "
          "means, the text says whether the whole interval meets each threshold. Momentum and Adam shown beside it.",
          _sgd_l2_rescues, source="why (issue 16)"),
    Claim("eps-below-gradients",
          "The deep net at N(0, std=0.05) is stuck because its gradients fall below Adam's eps: it trains once eps "
          "is below its gradients.", (OPTIMIZERS,),
          "Deepest net under Adam, per α: gradient size = each layer's mean |∂J/∂W| in epoch 1 (log10, mean over "
          "seeds); an eps is 'below' when it is below every layer's. The best 'below' eps (mean final accuracy) "
          f"gains at least {HELPS * 100:g} points over the largest eps swept (paired over seeds) and is at least "
          f"{SHALLOW_LEARNS * 100:g} points above chance: reproduced; only the gain: partly; no gain: not reproduced; "
          "no swept eps below every layer's gradient: inconclusive. α values combined as for architectures.",
          _eps_below_gradients, source="why (issue 16)"),
    Claim("frozen-layers",
          "Which layers of the deep net at N(0, std=0.05) change at all under each optimizer?", (OPTIMIZERS,),
          "A layer's weights change in epoch 1 when the update_size probe's mean ‖θ_after − θ_before‖ (after float32 "
          "rounding, so an update below the weights' resolution is exactly 0) is above 0 in some seed; counted from "
          "the input, per optimizer setting, α = 1, with the gradient size of the first layer that changes.",
          _frozen, source="why (issue 16)"),
    Claim("rescaling-decomposition",
          "Open question: how much of rescaling's effect on final accuracy is the function it computes (input scale "
          "x/α, hidden biases b/α, output temperature α·W_out) and how much the parametrisation the optimizer sees?",
          (RESCALING_IDENTITY,),
          "Per network, optimizer and α, paired over seeds (95 % t intervals): total = α-network − standard net; "
          "input scale = input-scaled standard net (x/α) − standard; bias scale + output temperature = plain twin "
          "(own parameters started at b/α, α·W_out, inputs x/α) − input-scaled net; parametrisation = α-network − "
          f"plain twin; they sum to the total (points, with the paired 95 % t interval). The function's share = 1 − "
          f"parametrisation/total where |total| ≥ {EFFECT * 100:g} points by the means, resolved where the whole "
          f"interval is. The plain twin must start as the α-network (epoch-0 validation loss within {START_RTOL:g} "
          "relative). Why the parametrisation matters (chain rule, vglab.nn.rescaling): in the twin's coordinates "
          "the α-network's steps on the output weights are ×α² (SGD) or ×α (Adam) and on the hidden biases ÷α² or "
          "÷α. What follows for the many-layers claim: the hidden weights enter the twin unchanged, so rescaling "
          "cannot undo a vanishing weight product (see the optimizers experiment: the deep net at α = 2).",
          _decomposition, source="why (issue 16)"),
    Claim("trainable-depth",
          "Networks train up to a depth of about 6 ξ_c and not beyond (mean-field theory, Schoenholz et al. 2017).",
          (TRAINABILITY,),
          f"Per heat map (width, α): a cell (depth, σ_w²) trains when its mean final accuracy is at least "
          f"{TRAINS_FRACTION:.0%} of the way from chance to the map's best cell; predicted to train when depth ≤ 6 ξ_c "
          f"(tanh, σ_w², σ_b²/α²). At least {AGREE:.0%} of cells on the predicted side and {BEATS_CONSTANT * 100:g} "
          f"points above the better constant prediction (all train / none trains): reproduced; at least "
          f"{AGREE_PARTLY:.0%} and above the constant: partly; else not reproduced; maps combined as for "
          "architectures. Cells whose 95 % seed interval (one-sample t) lies wholly on one side are counted too.",
          _trainable_depth, source="why (issue 16)"),
    Claim("isometry",
          "Orthogonal weights at the critical point (χ_1 = 1) train a deep tanh net better than Gaussian weights at "
          "the critical point (dynamical isometry: Pennington, Schoenholz & Ganguli 2017; Xiao et al. 2018).",
          (DEEP_REMEDIES,),
          f"Per deep tanh net (each depth > 1 and width): orthogonal − Gaussian init, both at the critical σ_w² of "
          f"the same σ_b², final validation accuracy paired over seeds (95 % t interval). At least {HELPS * 100:g} "
          f"points by the means: reproduced; less: not reproduced; both arms within {CHANCE_MARGIN * 100:g} points "
          "of chance: inconclusive. Nets combined as architectures (all the same -> that verdict, a mix -> partly); "
          "the text says whether the whole interval meets the threshold. Sigmoid nets are shown beside it, not "
          "counted: sigmoid's critical point is at q* = 45.6, where φ′ is far from constant, so the theory "
          "promises no isometry there.",
          _isometry, source="why (issue 29)"),
    Claim("kernel-shaped-trains",
          "A kernel-shaped tanh (TAT, Zhang et al. 2022) trains the deep net without skips or normalization to "
          "within a few points of the shallow net.", (DEEP_REMEDIES,),
          f"Per deep tanh net: the TAT-tanh net (τ = 0.3, orthogonal σ_w² = 1, zero biases) − the shallow 1×width "
          f"tanh net (the study's N(0, std=0.05)), final validation accuracy paired over seeds (95 % t interval). "
          f"At most {FEW_POINTS * 100:g} points below by the means: reproduced; further below but at least "
          f"{SHALLOW_LEARNS * 100:g} points above chance: partly; else not reproduced. Nets combined as "
          "architectures; sigmoid shown beside it, not counted.",
          _tat_near_shallow, source="why (issue 29)"),
    Claim("alpha-below-remedies",
          "α-rescaling (the reference study's remedy) helps the deep net less than each designed remedy: "
          "orthogonal and Gaussian critical init, kernel shaping, residual connections, LayerNorm.", (DEEP_REMEDIES,),
          f"Per deep net (tanh and sigmoid, each depth > 1 and width): the better α of 2 and 5 (higher mean final "
          f"accuracy) at the study's N(0, std=0.05); each designed remedy − that α, paired over seeds (95 % t "
          f"intervals). Every remedy at least {HELPS * 100:g} points above it by the means: reproduced; some: partly; "
          f"none: not reproduced; every arm within {CHANCE_MARGIN * 100:g} points of chance: inconclusive. Nets "
          "combined as architectures.",
          _alpha_less, source="why (issue 29)"),
    Claim("narrow-theory",
          "At width 8 the theory's predictions hold less than at width 128 (mean-field theory is a wide-network "
          "limit).", (DEEP_REMEDIES,),
          f"Per run of the deep nets' arms with a mean-field model (none, Glorot, α, orthogonal and Gaussian "
          f"critical; tanh and sigmoid): the error |measured − predicted| of log10 ‖∂J/∂W^[1]‖/‖∂J/∂W^[L]‖ (first "
          f"over last hidden layer; prediction with layer inputs, measured in the first recorded epoch). Narrowest − "
          f"widest width's mean error (Welch t, 95 % interval) at least {THEORY_GAP:g} decades by the means: "
          f"reproduced; above 0: partly; else not reproduced. The isometry and kernel-shaping claims' nets that hold "
          f"at each width are counted beside it.",
          _width_theory, source="why (issue 29)"),
    Claim("remedy-factors",
          "Which factor of the backprop product does each remedy fix on the deep net?", (DEEP_REMEDIES,),
          f"Per deep net and remedy: final accuracy, the first layer's weight-gradient norm in the first recorded "
          f"epoch, and at initialization Σ log10‖W‖₂ over the later layers and Σ mean log10 φ′ "
          f"(`claims.factor_diagnosis`); a remedy fixed the factor that rose more against no remedy "
          f"(N(0, std=0.05), α = 1), when it rose by at least {RAISES_GRAD:g} decades.",
          _factors, source="why (issue 29)"),
]


def by_id(claim_id: str) -> Claim:
    for c in WHY_CLAIMS:
        if c.id == claim_id:
            return c
    raise KeyError(f"no why claim {claim_id!r}; they are {[c.id for c in WHY_CLAIMS]}")


def evaluate(results) -> list[tuple[Claim, Outcome]]:
    """Evaluate every why claim, as `claims.evaluate` does the reference study's:
    `results` is a Results, a list of them, or {preset: Results}."""
    return claims.evaluate(results, WHY_CLAIMS)


relevant = claims.relevant  # whether a claim is checked on a preset
