"""Figures of the why pages (`vglab.report.why`): the trainability heat map with the
mean-field 6 ξ_c curve, update sizes per layer under SGD and Adam, Adam's eps against the
gradients' size, the rescaling decomposition, and the deep remedies' accuracy and gradient
against depth with their Jacobians' singular values at initialization. One function per figure, each taking a
`Results` and returning a matplotlib `Figure` (saved with `vglab.report.figures.save`);
`INSTRUMENTS` registers them (`figures.Instrument`), each drawn on its preset's page only.
"""

from __future__ import annotations

import functools
import math

import matplotlib
import numpy as np
from matplotlib import patheffects
from matplotlib.figure import Figure

from vglab.data.own import dataset_name
from vglab.experiments.presets import own_figures
from vglab.report import claims, tables, theory, why
from vglab.report.claims import preset_of
from vglab.report.figures import RC, Instrument, NoData, Use

ZERO = "update exactly 0"  # below the weights' float32 resolution


def _figure(w: float, h: float) -> Figure:
    with matplotlib.rc_context(RC):
        return Figure(figsize=(w, h), layout="constrained")


def _axes(fig: Figure, nrows: int, ncols: int, **kw):
    with matplotlib.rc_context(RC):
        return fig.subplots(nrows, ncols, squeeze=False, **kw)


def _edges(v: np.ndarray) -> np.ndarray:
    """Cell edges halfway between sorted values (half a step beyond the ends)."""
    v = np.asarray(v, float)
    if v.size == 1:
        return np.array([v[0] - 0.5, v[0] + 0.5])
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])


# ------------------------------------------------------------------ trainability
OUTLINE = [patheffects.withStroke(linewidth=3.2, foreground="black")]


@functools.lru_cache(maxsize=16)
def _curve(alpha: float, sigma_b2: float, lo: float, hi: float, n: int = 48):
    """(σ_w² grid, 6 ξ_c on it, critical σ_w² or None) for the overlay (one per α, not per panel)."""
    fine = np.linspace(lo, hi, n)
    td = theory.depth_scale_grid("tanh", alpha, fine, sigma_b2).trainable_depth
    try:
        crit = theory.critical_sigma_w2("tanh", alpha, sigma_b2)
    except ValueError:
        crit = None
    return fine, td, crit


def trainability_map(res) -> Figure:
    """Mean final validation accuracy over depth (log2 axis) x σ_w², one panel per (width, α),
    with the mean-field trainable depth 6 ξ_c (solid), the critical σ_w² (dotted) and the cells
    on the wrong side of the prediction marked ×."""
    maps = why.trainability_maps(res)
    if not maps:
        raise NoData("no trainability maps in these results")
    widths = sorted({m.width for m in maps})
    alphas = sorted({m.alpha for m in maps})
    fig = _figure(3.6 * len(alphas) + 0.8, 3.0 * len(widths) + 0.6)
    axes = _axes(fig, len(widths), len(alphas))
    cmap = matplotlib.colormaps["viridis"]
    mesh = None
    for m in maps:
        ax = axes[widths.index(m.width)][alphas.index(m.alpha)]
        y = np.log2(m.depths.astype(float))
        mesh = ax.pcolormesh(_edges(m.sigma_w2), _edges(y), m.acc, cmap=cmap, vmin=0.0, vmax=1.0, shading="flat")
        fine, td, crit = _curve(m.alpha, m.sigma_b2, float(m.sigma_w2.min()), float(m.sigma_w2.max()))
        ax.plot(fine, np.log2(np.clip(td, 2 ** (y.min() - 1), 2 ** (y.max() + 1))), color="white", lw=2.0,
                label="6 ξ_c (mean field)", path_effects=OUTLINE)
        if crit is not None:
            ax.axvline(crit, color="white", ls=":", lw=1.4, label="critical σ_w² (χ₁ = 1)", path_effects=OUTLINE)
        wrong = (m.predicted != m.trains) & np.isfinite(m.acc)
        ii, jj = np.nonzero(wrong)
        ax.scatter(m.sigma_w2[jj], y[ii], marker="x", color="red", s=22, lw=1.2, label="against the prediction")
        ax.set_ylim(_edges(y)[0], _edges(y)[-1])
        ax.set_yticks(y, [str(int(d)) for d in m.depths])
        ax.set_title(f"width {m.width} · {'tanh' if m.alpha == 1 else f'α={m.alpha:g} tanh'} · "
                     f"{m.agreement:.0%} as predicted")
        ax.set_xlabel("σ_w² (weight variance × fan_in)")
        ax.set_ylabel("depth (hidden layers)")
        ax.grid(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, frameon=False)
    fig.colorbar(mesh, ax=axes.ravel().tolist(), label="final val acc (mean over seeds)", shrink=0.8)
    ds = dataset_name(res.info.dataset)  # a path: its short name
    fig.suptitle(f"Trainability: final accuracy vs depth and σ_w² (σ_b² = {maps[0].sigma_b2:.3g}) · {ds}")
    return fig


# ------------------------------------------------------------------ optimizers
def _deep_alpha1(res):
    d = why.deep_runs(res)
    d = d[np.isclose(d["alpha"], 1.0)]
    if d.empty:
        raise NoData("no deep net at alpha = 1")
    return d


def update_sizes(res) -> Figure:
    """The deep net (α = 1) per layer in epoch 1, one line per optimizer setting: the weights'
    mean |∂J/∂W|, the relative update ‖Δθ‖/‖θ‖ per step (update_size probe; an update lost
    to float32 rounding is exactly 0, drawn at the bottom) and the distance from
    initialization after training relative to the initial norm (weight_distance probe)."""
    d = _deep_alpha1(res)
    g = res.grads
    g = g[g["run_id"].isin(d["run_id"]) & (g["param"] == "w") & (g["epoch"] == 1)]
    if g.empty or "update_ratio" not in g:
        raise NoData("no update_size probe for the deep net")
    a = res.activations
    last = a[a["run_id"].isin(d["run_id"])]
    has_dist = "weight_dist_init" in last and last["weight_dist_init"].notna().any()
    fig = _figure(11.5 if has_dist else 8.5, 4.2)
    axes = _axes(fig, 1, 3 if has_dist else 2)[0]
    settings = list(dict.fromkeys(d.sort_values(["opt_name", "learning_rate", "opt_eps"])["opt_label"]))
    cmap = matplotlib.colormaps["tab10" if len(settings) <= 10 else "viridis"]
    floor = -14.0
    for k, label in enumerate(settings):
        ids = d.loc[d["opt_label"] == label, "run_id"]
        color = cmap(k if len(settings) <= 10 else k / max(len(settings) - 1, 1))
        ls = "-" if label.startswith("Adam") else ("--" if "momentum" in label else ":")
        gg = g[g["run_id"].isin(ids)]
        with np.errstate(divide="ignore"):
            grad = gg.groupby("layer_index")["grad_abs_mean"].apply(lambda s: np.log10(s.astype(float)).mean())
            ratio = gg.groupby("layer_index")["update_ratio"].apply(lambda s: np.log10(s.astype(float)).mean())
        axes[0].plot(grad.index, grad.values, color=color, ls=ls, marker=".", label=label)
        shown = ratio.where(np.isfinite(ratio), floor)
        axes[1].plot(shown.index, shown.values, color=color, ls=ls, marker=".")
        if has_dist:
            aa = last[last["run_id"].isin(ids)]
            e_last = aa["epoch"].max()
            start = aa[aa["epoch"] == 0].groupby("layer_index")["weight_fro_norm"].mean()
            moved = aa[aa["epoch"] == e_last].groupby("layer_index")["weight_dist_init"].mean()
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.log10(moved / start)
            axes[2].plot(rel.index, rel.where(np.isfinite(rel), floor).values, color=color, ls=ls, marker=".")
    axes[0].set_ylabel("log10 mean |∂J/∂W| (epoch 1)")
    axes[1].set_ylabel("log10 ‖Δθ‖ / ‖θ‖ per step (epoch 1)")
    axes[1].axhline(floor, color="grey", lw=0.8)
    axes[1].text(0, floor + 0.2, ZERO + " (below float32 resolution)", fontsize=7, color="grey")
    if has_dist:
        axes[2].set_ylabel("log10 ‖θ_end − θ_0‖ / ‖θ_0‖")
        axes[2].axhline(floor, color="grey", lw=0.8)
        axes[2].set_title("moved from initialization, end of training")
    axes[0].set_title("gradient size per layer")
    axes[1].set_title("relative update per step")
    for ax in axes:
        ax.set_xlabel("layer (0 = first hidden, last = output)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=min(4, len(settings)),
               frameon=False)
    r = d.iloc[0]
    fig.suptitle(f"Which layers move: mlp {int(r['depth'])}x{int(r['width'])} at {r['weight_init']}, α = 1 "
                 "(mean over seeds, log10)")
    return fig


def eps_sweep(res) -> Figure:
    """Adam's eps against the gradients: left, final accuracy of the deep net per eps (mean,
    min–max over seeds, per α); right, each layer's mean |∂J/∂W| in epoch 1 with the swept
    eps values as lines (a layer whose gradient is below eps takes steps shrunk by |g|/eps)."""
    d = why.deep_runs(res)
    d = d[(d["opt_name"] == "adam") & d["opt_eps"].notna()]
    if d["opt_eps"].nunique() < 2:
        raise NoData("no eps sweep")
    fig = _figure(9.5, 4.0)
    ax_acc, ax_g = _axes(fig, 1, 2)[0]
    eps = np.array(sorted(d["opt_eps"].unique()))
    cmap = matplotlib.colormaps["tab10"]
    for k, alpha in enumerate(sorted(d["alpha"].unique())):
        da = d[np.isclose(d["alpha"], alpha)]
        acc = da.groupby("opt_eps")["val_acc"].agg(["mean", "min", "max"]).reindex(eps)
        label = "tanh" if alpha == 1 else f"rescaled tanh α={alpha:g}"
        ax_acc.plot(eps, acc["mean"], marker="o", color=cmap(k), label=label)
        ax_acc.fill_between(eps, acc["min"], acc["max"], color=cmap(k), alpha=0.18, lw=0)
        lg = why.layer_gradients(res, da["run_id"])
        ax_g.plot(lg.values, lg.index, marker="o", color=cmap(k), label=f"{label}: mean |∂J/∂W|", ms=4)
    ax_acc.set_xscale("log")
    ax_acc.axhline(1.0 / tables.n_classes(res), color="grey", ls=":", lw=1, label="chance")
    ax_acc.set_xlabel("Adam eps")
    ax_acc.set_ylabel("final val acc")
    ax_acc.set_title("final accuracy per eps (band: min–max over seeds)", fontsize=8.5)
    ax_acc.legend(frameon=False)
    top = ax_g.get_ylim()[1]
    for e in eps:
        ax_g.axvline(math.log10(e), color="grey", ls="--", lw=0.8)
        ax_g.text(math.log10(e), top, f"eps {e:g} ", rotation=90, fontsize=7, color="grey", va="top", ha="right")
    ax_g.set_xlabel("log10 magnitude")
    ax_g.set_ylabel("layer (0 = first hidden)")
    ax_g.set_title("gradient size per layer (epoch 1) vs eps (dashed)")
    ax_g.legend(frameon=False, loc="lower right", fontsize=7)
    r = d.iloc[0]
    fig.suptitle(f"Adam's eps vs the gradients' size: mlp {int(r['depth'])}x{int(r['width'])} at {r['weight_init']}")
    return fig


def large_params_optimizers(res) -> Figure:
    """Final accuracy of the large-parameters arms (shallowest net, α = 1) per optimizer and
    learning rate: N(0, std=10) without and with L2, N(0, std=1) (mean over seeds, bars: min–max)."""
    f = why.large_params_arms(why.runs(res))
    if f.empty:
        raise NoData("no large-parameters arms")
    settings = list(dict.fromkeys(f.sort_values(["opt_name", "learning_rate"])["opt_label"]))
    arms = [("N(0, std=10), no penalty", "normal(std=10)", "none"), ("N(0, std=10) + L2", "normal(std=10)", "l2"),
            ("N(0, std=1)", "normal(std=1)", "none")]
    fig = _figure(max(6.0, 0.75 * len(settings) + 2), 3.8)
    ax = _axes(fig, 1, 1)[0][0]
    x = np.arange(len(settings))
    cmap = matplotlib.colormaps["tab10"]
    for k, (name, spec, pen) in enumerate(arms):
        rows = tables.arms(f, spec=spec, penalty=pen)
        s = rows.groupby("opt_label")["val_acc"].agg(["mean", "min", "max"]).reindex(settings)
        ax.bar(x + (k - 1) * 0.27, s["mean"], 0.27, color=cmap(k), label=name,
               yerr=np.clip([s["mean"] - s["min"], s["max"] - s["mean"]], 0, None), capsize=2, error_kw={"lw": 0.8})
    ax.set_xticks(x, settings, rotation=30, ha="right")
    ax.set_ylabel("final val acc")
    ax.legend(frameon=False, ncol=3, loc="upper left")
    r = f.iloc[0]
    ax.set_title(f"Large parameters under each optimizer: mlp {int(r['depth'])}x{int(r['width'])}")
    return fig


# ------------------------------------------------------------------ rescaling identity
def rescaling_decomposition(res) -> Figure:
    """One panel per setting (network and optimizer); per α, the total effect of rescaling on
    final accuracy (α-network − standard, black) and its three parts (input scale; bias scale
    + output temperature; parametrisation), each with its paired 95 % interval over seeds."""
    decs = why.decompositions(res)
    if not decs:
        raise NoData("no complete decomposition")
    settings = list(dict.fromkeys(d.setting for d in decs))
    ncols = min(2, len(settings))
    nrows = -(-len(settings) // ncols)
    fig = _figure(5.2 * ncols, 3.0 * nrows + 0.6)
    axes = _axes(fig, nrows, ncols)
    names = ("total",) + why.PARTS
    colors = ["black"] + [matplotlib.colormaps["tab10"](k) for k in range(3)]
    for n, setting in enumerate(settings):
        ax = axes[n // ncols][n % ncols]
        mine = [d for d in decs if d.setting == setting]
        for i, d in enumerate(mine):
            for k, name in enumerate(names):
                v = d.total if name == "total" else d.parts[name]
                err = np.clip([[100 * (v.diff - v.low)], [100 * (v.high - v.diff)]], 0, None) if v.has_interval \
                    else None
                ax.bar(i + (k - 1.5) * 0.2, 100 * v.diff, 0.2, color=colors[k], yerr=err, capsize=2,
                       error_kw={"lw": 0.8}, label=name if (n, i) == (0, 0) else None)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(mine)), [f"α = {d.alpha:g}" for d in mine])
        ax.set_title(setting, fontsize=8.5)
        ax.set_ylabel("effect on final val acc (points)")
    for n in range(len(settings), nrows * ncols):
        axes[n // ncols][n % ncols].set_visible(False)
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center", ncol=4, frameon=False)
    fig.suptitle("Rescaling's effect, decomposed (bars: paired 95 % t interval over seeds)")
    return fig


def twin_curves(res) -> Figure:
    """Validation accuracy per epoch of the four arms, one panel per setting (row) and α
    (column), mean over seeds."""
    decs = why.decompositions(res)
    if not decs:
        raise NoData("no complete decomposition")
    f = why.runs(res)
    f = f.assign(setting=why.setting_key(f))
    e = res.epochs.merge(f[["run_id", "setting", "twin_form", "twin_alpha"]], on="run_id")
    settings = list(dict.fromkeys(d.setting for d in decs))
    alphas = sorted({d.alpha for d in decs})
    fig = _figure(4.3 * len(alphas) + 0.4, 2.3 * len(settings) + 0.6)
    axes = _axes(fig, len(settings), len(alphas), sharex=True)
    styles = {"standard": ("grey", "-", "standard net"), "inputs twin": ("tab:blue", "--", "input-scaled net (x/α)"),
              "plain twin": ("tab:orange", "-.", "plain twin"), "alpha-net": ("black", "-", "α-network")}
    for d in decs:
        ax = axes[settings.index(d.setting)][alphas.index(d.alpha)]
        mine = e[e["setting"] == d.setting]
        for form, (color, ls, label) in styles.items():
            sel = mine[mine["twin_form"] == form]
            if form != "standard":
                sel = sel[np.isclose(sel["twin_alpha"], d.alpha)]
            m = sel.groupby("epoch")["val_acc"].mean()
            ax.plot(m.index, m.values, color=color, ls=ls, label=label)
        ax.set_title(f"{d.setting} · α={d.alpha:g}", fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for row in axes:
        row[0].set_ylabel("val acc")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center", ncol=4, frameon=False)
    fig.suptitle("Validation accuracy per epoch (mean over seeds)")
    return fig


# ------------------------------------------------------------------ deep remedies
def _remedy_styles():
    cmap = matplotlib.colormaps["tab10"]
    return {r: {"color": cmap(k % 10), "ls": "--" if r in ("none", "Glorot", "α=2", "α=5") else "-",
                "marker": "os^v*DPXh"[k % 9]} for k, r in enumerate(why.REMEDY_ORDER)}


def _panel_stat(ax, f, remedy, value, style, chance=None):
    """One remedy's line over depth: mean over seeds, bars min–max."""
    g = f[f["remedy"] == remedy].groupby(f["depth"].astype(int))[value].agg(["mean", "min", "max"]).sort_index()
    if g.empty:
        return
    err = np.clip([g["mean"] - g["min"], g["max"] - g["mean"]], 0, None)
    ax.errorbar(g.index, g["mean"], yerr=err, label=remedy, capsize=2, lw=1.3, ms=4, **style)


def remedies_vs_depth(res) -> Figure:
    """Per activation and width: final accuracy (top) and the first layer's log10 weight-gradient
    norm in the first recorded epoch (bottom) against depth, one line per remedy (mean over seeds,
    bars min–max); the shallow net (depth 1) as a grey band, chance dotted."""
    f = why.remedy_runs(res)
    cells = why.remedy_cells(f)
    if not cells:
        raise NoData("no deep remedy nets")
    measured = {"param", "grad_norm_mean"} <= set(res.grads.columns)
    f = f.assign(g1=[claims.first_grad(res, [rid]) if measured else math.nan for rid in f["run_id"]])
    cols = sorted({(a, w) for a, _, w in cells}, key=lambda c: (c[0] != "tanh", c[0], c[1]))
    fig = _figure(3.3 * len(cols) + 0.4, 6.4)
    axes = _axes(fig, 2, len(cols), sharex=True)
    styles, chance = _remedy_styles(), 1.0 / tables.n_classes(res)
    for j, (act, width) in enumerate(cols):
        sub = f[(f["base"] == act) & (f["width"].astype(int) == width)]
        for i, value in enumerate(("val_acc", "g1")):
            ax = axes[i][j]
            shallow = sub.loc[sub["remedy"] == "shallow", value]
            if len(shallow):
                ax.axhspan(shallow.min(), shallow.max(), color="grey", alpha=0.25, lw=0, label="shallow 1×width")
            for r in why.REMEDY_ORDER:
                _panel_stat(ax, sub, r, value, styles[r])
            if value == "val_acc":
                ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
                ax.set_title(f"{act} · width {width}")
            ax.set_xticks(sorted({c[1] for c in cells}))
        axes[1][j].set_xlabel("depth (hidden layers)")
    axes[0][0].set_ylabel("final val acc")
    axes[1][0].set_ylabel("log10 ‖∂J/∂W^[1]‖ (first record)")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center", ncol=6, frameon=False)
    fig.suptitle("Which remedy trains the deep net: accuracy and first-layer gradient vs depth "
                 "(mean over seeds, bars: min–max)")
    return fig


def jacobian_spectra(res) -> Figure:
    """Per deep net: the distribution (empirical CDF) of the singular values of the hidden
    layers' input–output Jacobian ∂h^[L]/∂h^[1] at initialization, one line per remedy
    (`why.jacobian_spectra`): dynamical isometry is all of them near 1 (a step at 0)."""
    f = why.remedy_runs(res)
    cells = why.remedy_cells(f)
    if not cells:
        raise NoData("no deep remedy nets")
    acts = list(dict.fromkeys(c[0] for c in cells))
    shapes = sorted({c[1:] for c in cells})
    fig = _figure(3.0 * len(shapes) + 0.4, 2.9 * len(acts) + 0.8)
    axes = _axes(fig, len(acts), len(shapes), sharey=True)
    styles = _remedy_styles()
    for cell in cells:
        ax = axes[acts.index(cell[0])][shapes.index(cell[1:])]
        for r, sv in why.jacobian_spectra(res, cell).items():
            with np.errstate(divide="ignore"):
                x = np.sort(np.log10(np.maximum(sv, 1e-30)))
            ax.plot(np.clip(x, -12, 4), np.linspace(0, 1, x.size), color=styles[r]["color"], ls=styles[r]["ls"],
                    lw=1.3, label=r)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(f"{cell[0]} {cell[1]}x{cell[2]}")
        ax.set_xlabel("log10 singular value of ∂h^[L]/∂h^[1]")
    for row in axes:
        row[0].set_ylabel("fraction ≤ x")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center", ncol=min(5, 2 * len(shapes)),
               frameon=False)
    fig.suptitle(f"Jacobian singular values at initialization\n(first seed, {why.JACOBIAN_EXAMPLES} inputs; "
                 "below 1e-12 drawn at −12)")
    return fig


# The why figures (name -> function, caption). Which page draws which: its preset's record
# (`presets.Preset.figures`, from its TOML); drawn in this registry's order.
def _listed(name: str):
    """`needs` of a why instrument: drawn where the page's preset lists it, with its default arguments."""
    return lambda res: Use() if name in own_figures(preset_of(res)) else None


def _instruments(*entries) -> tuple[Instrument, ...]:
    return tuple(Instrument(name, draw, caption, _listed(name)) for name, draw, caption in entries)


INSTRUMENTS: tuple[Instrument, ...] = (
    *_instruments(
        ("large_params_optimizers", large_params_optimizers,
         "Final validation accuracy of the large-parameters arms under each optimizer and learning rate (mean over "
         "seeds; bars: min–max)."),
        ("update_sizes", update_sizes,
         "The deep net at α = 1, per layer in epoch 1: gradient size, relative update per step (updates below the "
         "weights' float32 resolution are exactly 0 and drawn at the bottom) and the distance moved from "
         "initialization by the end."),
        ("eps_sweep", eps_sweep,
         "Adam's eps against the gradients' size: final accuracy per eps, and each layer's epoch-1 mean |∂J/∂W| "
         "with the swept eps values (dashed). A layer whose gradient is below eps takes steps shrunk by |g|/eps."),
    ),
    *_instruments(
        ("rescaling_decomposition", rescaling_decomposition,
         "Rescaling's effect on final accuracy and its three parts, paired over seeds with 95 % t intervals: input "
         "scale (x/α), bias scale + output temperature (b/α, α·W_out: the plain twin's start), parametrisation "
         "(the α-network against its plainly parametrised twin)."),
        ("twin_curves", twin_curves,
         "Validation accuracy per epoch of the standard net, the input-scaled net, the plain twin and the "
         "α-network (mean over seeds). The plain twin and the α-network coincide at epoch 0 (same function)."),
    ),
    *_instruments(
        ("trainability_map", trainability_map,
         "Final validation accuracy (mean over seeds) over depth and σ_w², with the mean-field trainable depth "
         "6 ξ_c (white), the order-to-chaos line (dotted) and the cells on the wrong side of the prediction (×)."),
    ),
    *_instruments(
        ("remedies_vs_depth", remedies_vs_depth,
         "Per activation and width, against depth: final validation accuracy and the first layer's weight-gradient "
         "norm in the first recorded epoch, one line per remedy (mean over seeds, bars min–max); grey band: the "
         "shallow net's range over seeds; dotted: chance."),
        ("jacobian_spectra", jacobian_spectra,
         "The singular values of the hidden layers' input–output Jacobian ∂h^[L]/∂h^[1] at initialization (first "
         "seed, redrawn from its stored init laws; inputs at the data's stored scale), as a cumulative distribution "
         "per remedy: dynamical isometry is a step at 1 (log10 = 0)."),
    ),
)
