"""Instruments: one function per figure type. Each takes a `Results` (plus options) and
returns a matplotlib `Figure`; `save(fig, stem)` writes `stem.png` (and `stem.svg` on request).

`INSTRUMENTS` lists the standard figures (Cockpit style): each `Instrument` declares what
it needs from the results, the function that draws it and its caption. The report reads
them with the why pages' from the one registry, `vglab.report.registry.INSTRUMENTS`.

Runs are grouped by `label`; the line is the mean over seeds and the shaded band spans
the min–max over seeds (the band's meaning is written on every figure). Figures are
built with the object-oriented API (no pyplot state), rendered by Agg.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg", force=False)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import cm, colors  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from vglab.data.files import write_via  # noqa: E402
from vglab.data.own import dataset_name  # noqa: E402
from vglab.report import tables, theory  # noqa: E402
from vglab.schema import REPORT_PANELS  # noqa: E402

BAND_NOTE = "line: mean over seeds · band: min–max over seeds"
RC = {"font.size": 9, "axes.titlesize": 9.5, "axes.labelsize": 9, "legend.fontsize": 8,
      "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False,
      "axes.grid": True, "grid.alpha": 0.25, "svg.fonttype": "none"}
LOG10E = 1.0 / math.log(10.0)
# PNG resolution: 100 dpi makes the 9-11.5 inch figures 900-1150 pixels wide, the width of
# the page's column; 110 dpi made the PNGs (half of a digits results folder) 20 % larger.
DPI = 100


class NoData(ValueError):
    """The results hold nothing this figure can show (e.g. an r-sweep plot without L1/L2 runs)."""


# ------------------------------------------------------------------------ helpers
def save(fig: Figure, path_stem, dpi: int | None = None, formats: tuple[str, ...] = ("png",)) -> list[Path]:
    """Write `path_stem`.png (and .svg when "svg" is in `formats`); returns the paths.

    Each file is written under a temporary name and renamed into place, so a process
    killed while drawing leaves the previous file or none, never a partial one.
    The layout is computed once, here, and then switched off: `savefig` would otherwise
    draw the whole figure an extra time before each file (to lay it out, and again for
    the SVG), which was a third of a report's drawing time. The layout is in figure
    fractions, so the PNG's holds for the SVG; so are the ticks, which are then fixed."""
    dpi = dpi or DPI
    unknown = [f for f in formats if f not in ("png", "svg")]
    if unknown or not formats:
        raise ValueError(f"figure formats are 'png' and 'svg', got {list(formats)}")
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    with matplotlib.rc_context(RC):
        _lay_out(fig, dpi)
        _fix_ticks(fig)
        for ext in formats:
            p = stem.with_name(stem.name + "." + ext)
            write_via(p, lambda tmp, ext=ext: fig.savefig(tmp, dpi=dpi, format=ext,
                                                          metadata=None if ext == "png" else {"Date": None}))
            out.append(p)
    return out


def _lay_out(fig: Figure, dpi: int) -> None:
    """Run the figure's layout engine once, measuring text as the PNG at `dpi` will
    draw it, and fix the result (the engine is removed)."""
    engine = fig.get_layout_engine()
    if engine is None:
        return
    fig.set_dpi(dpi)
    FigureCanvasAgg(fig)  # the renderer the engine measures text with
    engine.execute(fig)
    fig.set_layout_engine(None)


def _fix_ticks(fig: Figure) -> None:
    """Pin every axis's ticks and their labels to those the layout placed: each draw
    would otherwise run every axis's locator and formatter again for the same result."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            # (the minor locations without those of major ticks, as a draw labels them)
            for ticker, locs in ((axis.major, axis.get_majorticklocs()), (axis.minor, axis.get_minorticklocs())):
                labels = matplotlib.ticker.FixedFormatter(ticker.formatter.format_ticks(locs))
                labels.set_offset_string(ticker.formatter.get_offset())  # e.g. the "1e-3" of sci notation
                ticker.locator, ticker.formatter = matplotlib.ticker.FixedLocator(locs), labels


def _figure(w: float, h: float) -> Figure:
    with matplotlib.rc_context(RC):
        return Figure(figsize=(w, h), layout="constrained")


def _subplots(fig: Figure, nrows: int, ncols: int, **kw):
    with matplotlib.rc_context(RC):
        axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return axes


def _label_canvas(labels: list[str], w: float, h: float, fit: int, nrows: int, ncols: int):
    """For a figure with one line per label: ((short labels, shared text), colours, styles, the
    figure, its axes); `h` grows 0.18 in per label beyond `fit` (the legend's rows)."""
    fig = _figure(w, h + 0.18 * max(0, len(labels) - fit))
    return short_labels(labels), _colors(labels), _styles(labels), fig, _subplots(fig, nrows, ncols)


def short_labels(labels: list[str]) -> tuple[dict[str, str], str]:
    """Drop the ' · '-separated parts every label shares; returns ({label: short}, shared text)."""
    parts = [lab.split(" · ") for lab in labels]
    if len(labels) < 2:
        return {lab: lab for lab in labels}, ""
    common = [p for p in parts[0] if all(p in q for q in parts[1:])]
    short = {}
    for lab, p in zip(labels, parts):
        rest = [x for x in p if x not in common]
        short[lab] = " · ".join(rest) if rest else lab
    return short, " · ".join(common)


def _colors(labels: list[str]) -> dict[str, tuple]:
    n = len(labels)
    if n <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return {lab: cmap(i) for i, lab in enumerate(labels)}
    cmap = matplotlib.colormaps["viridis"]
    return {lab: cmap(i / max(n - 1, 1) * 0.9) for i, lab in enumerate(labels)}


LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")


def _styles(labels: list[str]) -> dict[str, dict]:
    """Colour, line style and marker per label, so lines that coincide stay distinguishable."""
    col = _colors(labels)
    return {lab: {"color": col[lab], "ls": LINESTYLES[i % len(LINESTYLES)], "marker": MARKERS[i % len(MARKERS)]}
            for i, lab in enumerate(labels)}


def _labels(res, labels) -> list[str]:
    order = tables.label_order(res)
    if labels is None:
        return order
    missing = [lab for lab in labels if lab not in order]
    if missing:
        raise NoData(f"no runs labelled {missing}; labels are {order}")
    return [lab for lab in order if lab in labels]


def _band(ax, wide: pd.DataFrame, color, label, *, marker=None, ls="-", lw=1.6, alpha=0.18, markevery=None, mfc=None):
    """Mean line and min–max band of a [x] x [run] frame."""
    wide = wide.dropna(how="all")
    if wide.empty:
        return
    x = wide.index.to_numpy(float)
    mean, lo, hi = wide.mean(axis=1), wide.min(axis=1), wide.max(axis=1)
    if markevery is None and marker is not None and len(x) > 12:
        markevery = max(1, len(x) // 8)
    ax.plot(x, mean, color=color, label=label, marker=marker, ls=ls, lw=lw, ms=3.8, markevery=markevery, mfc=mfc)
    if wide.shape[1] < 2:
        return
    lo, hi = lo.to_numpy(float), hi.to_numpy(float)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        ax.fill_between(x, lo, hi, color=color, alpha=alpha, lw=0)  # splits the band at the gaps
        return
    # The polygon fill_between would build, added without its per-call autoscaling (which
    # made figures with hundreds of bands spend most of their time there).
    outline = np.concatenate([np.column_stack([x, lo]), np.column_stack([x[::-1], hi[::-1]])])
    ax.add_collection(PolyCollection([outline], facecolors=[color], alpha=alpha, linewidths=0), autolim=False)
    ax.update_datalim(outline)


def _runs_of(res, label) -> list[str]:
    r = res.runs
    return list(r.loc[r["label"] == label, "run_id"])


def _seeds_note(res, labels) -> str:
    n = [len(_runs_of(res, lab)) for lab in labels]
    if not n:
        return ""
    lo, hi = min(n), max(n)
    seeds = f"{lo}" if lo == hi else f"{lo}–{hi}"
    return f"{BAND_NOTE} ({seeds} seeds per configuration)"


def _legend_below(fig, axes, labels_short, colors_, title=None, extra=(), styles=None):
    if styles:
        handles = [Line2D([], [], lw=2, ms=4.5, **styles[lab]) for lab in labels_short]
    else:
        handles = [Line2D([], [], color=colors_[lab], lw=2) for lab in labels_short]
    handles += [h for h, _ in extra]
    texts = list(labels_short.values()) + [t for _, t in extra]
    ncol = 1 if max((len(t) for t in texts), default=0) > 60 else (2 if len(texts) > 3 else len(texts) or 1)
    ncol = min(ncol if len(texts) <= 8 else 3, 4)
    fig.legend(handles, texts, loc="outside lower center", ncol=ncol, frameon=False, title=title,
               fontsize=8, title_fontsize=8.5)


def _wrap(fig, text: str) -> str:
    """`text` in lines that fit the figure's width at 7.5 pt."""
    import textwrap

    width = int(fig.get_figwidth() * 12.5)  # characters of 7.5 pt text per line, with margin to spare
    return "\n".join(textwrap.wrap(text, width))


def _note(fig, text):
    """A small note under the panels (inside the figure: the layout makes room for it).
    Not with a legend below the panels too: use the legend's title for the note."""
    fig.supxlabel(_wrap(fig, text), fontsize=7.5, color="0.25")


def _title(fig, res, text, shared=""):
    preset = res.info.preset
    ds = dataset_name(res.info.dataset)  # a path: its short name
    head = tables.in_x_unit(res, text) + (f" — {preset}" if preset else "") + (f" ({ds})" if ds else "")
    fig.suptitle(head + (f"\n{shared}" if shared else ""), fontsize=10)


# ------------------------------------------------------------ 1. learning curves
def learning_curves(res, labels=None, *, log_loss: bool = True) -> Figure:
    """Training and validation accuracy and loss per epoch (reference Figures 1, 2, 4, 5)."""
    labels = _labels(res, labels)
    if not labels or res.epochs.empty:
        raise NoData("no epochs recorded")
    (short, shared), col, sty, fig, axes = _label_canvas(labels, 9.0, 6.2, 4, 2, 2)
    chance = tables.chance(res)
    spots = [("train_acc", axes[0, 0], "training accuracy"), ("val_acc", axes[0, 1], "validation accuracy"),
             ("train_loss", axes[1, 0], "training loss (cross-entropy, nats)"),
             ("val_loss", axes[1, 1], "validation loss (cross-entropy, nats)")]
    e = res.epochs
    for lab in labels:
        ids = _runs_of(res, lab)
        sub = e[e["run_id"].isin(ids)]
        for colname, ax, _ in spots:
            if colname in sub:
                st = sty[lab]
                _band(ax, tables.per_seed(sub, colname), st["color"], short[lab], ls=st["ls"], marker=st["marker"])
    for colname, ax, title in spots:
        ax.set_title(title)
        ax.set_xlabel(tables.x_unit(res))
        if colname.endswith("acc"):
            ax.set_ylabel("accuracy (fraction correct)")
            if chance is not None:
                ax.axhline(chance, color="0.4", ls=":", lw=1)
                ax.text(ax.get_xlim()[0], chance, f" chance {chance:.2f}", va="bottom", ha="left", fontsize=7.5,
                        color="0.35")
            ax.set_ylim(0, 1.02)
        else:
            ax.set_ylabel("loss (nats)")
            y = np.concatenate([line.get_ydata() for line in ax.get_lines()]) if ax.get_lines() else np.array([])
            y = y[np.isfinite(y) & (y > 0)]
            if log_loss and y.size and y.max() / y.min() > 3:  # log only when the loss spans a factor > 3
                ax.set_yscale("log")
                _plain_log(ax)
        ax.xaxis.get_major_locator().set_params(integer=True)
    _title(fig, res, "Accuracy and loss per epoch", shared)
    _legend_below(fig, axes, short, col, styles=sty,
                  title=tables.in_x_unit(res, _seeds_note(res, labels) + " · epoch 0 = at initialization"))
    return fig


def learning_curves_by_penalty(res, labels=None) -> Figure:
    """Learning curves of an r sweep, one row per penalty (L1, L2): validation accuracy
    and training loss per epoch, one line per r coloured by log r, and the runs without
    penalty as a dashed reference in every row. (21 configurations in one panel were
    overlapping lines that no legend could tell apart.)"""
    labels = _labels(res, labels)
    r = tables.runs(res)
    r = r[r["label"].isin(labels)]
    pens = [p for p in ("l1", "l2") if (r["penalty"] == p).any()]
    if not pens or r.loc[r["penalty"] != "none", "r"].nunique() < 2 or res.epochs.empty:
        raise NoData("no sweep over the penalty strength r")
    e = res.epochs
    rs = r.loc[r["penalty"] != "none", "r"]
    norm = colors.LogNorm(rs.min(), rs.max())
    cmap = matplotlib.colormaps["viridis"]
    fig = _figure(9.6, 1.4 + 3.0 * len(pens))
    axes = _subplots(fig, len(pens), 2, sharex=True)
    chance = 1.0 / tables.n_classes(res)
    ref = r[r["penalty"] == "none"]
    others = set(r["label"]) - set(r.loc[r["penalty"].isin(pens), "label"]) - set(ref["label"])
    if others:
        raise NoData(f"configurations besides the r sweep: {sorted(others)}")
    for i, pen in enumerate(pens):
        for col, ax in (("val_acc", axes[i, 0]), ("train_loss", axes[i, 1])):
            for (_rv, lab), g in r[r["penalty"] == pen].groupby(["r", "label"]):
                sub = e[e["run_id"].isin(g["run_id"])]
                m = sub.groupby("epoch")[col].mean()
                ax.plot(m.index, m.to_numpy(float), color=cmap(norm(float(_rv))), lw=1.4)
            for lab, g in ref.groupby("label"):
                m = e[e["run_id"].isin(g["run_id"])].groupby("epoch")[col].mean()
                ax.plot(m.index, m.to_numpy(float), color="0.1", ls="--", lw=1.6)
            ax.set_title(f"{pen.upper()}: {'validation accuracy' if col == 'val_acc' else 'training loss (nats)'}",
                         loc="left")
            if col == "val_acc":
                ax.axhline(chance, color="0.4", ls=":", lw=1)
                ax.set_ylim(0, 1.02)
                ax.set_ylabel("accuracy")
            else:
                ax.set_ylabel("loss (nats)")
                y = np.concatenate([ln.get_ydata() for ln in ax.get_lines()])
                y = y[np.isfinite(y) & (y > 0)]
                if y.size and y.max() / y.min() > 3:
                    ax.set_yscale("log")
                    _plain_log(ax)
            if i == len(pens) - 1:
                ax.set_xlabel(tables.x_unit(res))
            ax.xaxis.get_major_locator().set_params(integer=True)
    sm = cm.ScalarMappable(norm=norm, cmap=cmap)
    with matplotlib.rc_context(RC):
        cb = fig.colorbar(sm, ax=axes.ravel().tolist(), aspect=35, shrink=0.9)
    cb.set_label("penalty strength r (log scale)")
    fig.legend([Line2D([], [], color="0.1", ls="--", lw=1.6), Line2D([], [], color="0.4", ls=":", lw=1)],
               ["no penalty (reference)", f"chance {chance:.2f}"], loc="outside lower center", ncol=2, frameon=False,
               fontsize=8, title_fontsize=7.5,
               title="line: mean over seeds (bands left out: one per r would cover each other) · epoch 0 = at "
                     "initialization")
    _title(fig, res, "Accuracy and loss per epoch, by penalty strength", _shared_text(tables.final(res), ("penalty", "r")))
    return fig


# ------------------------------------------------------- 2. gradient statistics
def _grad_table(res, param):
    g = res.grads
    return g[g["param"] == param] if "param" in g else g


def gradient_stats(res, labels=None, *, layers: str = "first_last", param: str = "w") -> Figure:
    """Per-layer gradient mean and standard deviation over epochs (pooled over every step of
    the epoch); std on a log scale. `layers='first_last'`: the first and last layer of every
    configuration in one pair of panels; `layers='all'`: every layer, one row per configuration."""
    labels = _labels(res, labels)
    g = _grad_table(res, param)
    if g.empty or not labels:
        raise NoData("no gradient statistics recorded")
    what = "weights" if param == "w" else "biases"
    if layers == "first_last":
        return _grad_first_last(res, labels, g, what)
    if layers != "all":
        raise ValueError(f"layers must be 'first_last' or 'all', got {layers!r}")
    return _grad_every_layer(res, labels, g, what)


def _grad_first_last(res, labels, g, what: str) -> Figure:
    """The first and last layer of every configuration in one pair of panels."""
    (short, shared), col, _, fig, axes = _label_canvas(labels, 9.0, 3.9, 3, 1, 2)
    for lab in labels:
        sub = g[g["run_id"].isin(_runs_of(res, lab))]
        first, last = sub["layer_index"].min(), sub["layer_index"].max()
        for idx, ls in ((first, "-"), (last, "--")):
            s = sub[sub["layer_index"] == idx]
            _band(axes[0, 0], tables.per_seed(s, "grad_mean"), col[lab], None, ls=ls)
            _band(axes[0, 1], tables.per_seed(s, "grad_std"), col[lab], None, ls=ls)
    extra = [(Line2D([], [], color="0.2", ls="-"), "first layer"),
             (Line2D([], [], color="0.2", ls="--"), "last (output) layer")]
    axes[0, 0].set_title(f"mean of ∂J/∂w ({what}), first vs last layer")
    axes[0, 1].set_title(f"standard deviation of ∂J/∂w ({what})")
    _finish_grad_axes(axes[0, 0], axes[0, 1], g, tables.x_unit(res))
    _title(fig, res, "Gradient statistics per epoch", shared)
    _legend_below(fig, axes, short, col, title=_seeds_note(res, labels), extra=extra)
    return fig


def _grad_every_layer(res, labels, g, what: str) -> Figure:
    """Every layer, one row per configuration, coloured from the first layer to the output.
    One subfigure per configuration, titled with it (its two panels' titles name the
    statistic only: long configuration names overlapped the neighbouring title), and one at
    the bottom for the layer colour scale."""
    short, shared = short_labels(labels)
    n = len(labels)
    fig = _figure(9.0, 1.6 + 2.5 * n)
    rows = fig.subfigures(n + 1, 1, height_ratios=[2.5] * n + [0.75])
    cmap = matplotlib.colormaps["viridis"]
    layer_lists = set()
    axes = []
    for i, lab in enumerate(labels):
        with matplotlib.rc_context(RC):
            ax_mean, ax_std = rows[i].subplots(1, 2)
        axes += [ax_mean, ax_std]
        rows[i].suptitle(short[lab], x=0.01, ha="left", fontsize=9.5, fontweight="bold")
        sub = g[g["run_id"].isin(_runs_of(res, lab))]
        order = sub[["layer_index", "layer"]].drop_duplicates().sort_values("layer_index")
        layer_lists.add(tuple(order["layer"]))
        top = max(len(order) - 1, 1)
        # [layer, epoch] x [statistic, run], pivoted once for all layers
        wide = sub.groupby(["layer_index", "epoch", "run_id"])[["grad_mean", "grad_std"]].mean().unstack("run_id")
        for idx, block in wide.groupby(level="layer_index"):
            block = block.droplevel("layer_index")
            c = cmap(idx / top * 0.92)  # colour: position from the first layer (dark) to the output (light)
            _band(ax_mean, block["grad_mean"], c, None, lw=1.2, alpha=0.1)
            _band(ax_std, block["grad_std"], c, None, lw=1.2, alpha=0.1)
        ax_mean.set_title("mean of ∂J/∂w", loc="left")
        ax_std.set_title("standard deviation of ∂J/∂w", loc="left")
        _finish_grad_axes(ax_mean, ax_std, g, tables.x_unit(res) if i == n - 1 else None)
    lo, hi = min(a.get_xlim()[0] for a in axes), max(a.get_xlim()[1] for a in axes)
    for a in axes:  # one epoch axis for every row
        a.set_xlim(lo, hi)
    _layer_colorbar(rows[n], cmap, layer_lists, _seeds_note(res, labels))
    _title(fig, res, f"Gradient statistics of every layer ({what})", shared)
    return fig


def _layer_colorbar(row, cmap, layer_lists: set, note: str) -> None:
    """The layer colour scale, ticked with the layers' names when every row has the same."""
    sm = cm.ScalarMappable(norm=colors.Normalize(0, 1 / 0.92), cmap=cmap)
    with matplotlib.rc_context(RC):
        cax = row.add_axes((0.2, 0.55, 0.6, 0.18))
    cb = row.colorbar(sm, cax=cax, orientation="horizontal")
    if len(layer_lists) == 1:
        names = list(next(iter(layer_lists)))
        ticks = _thin(list(range(len(names))), 10)
        top = max(len(names) - 1, 1)
        cb.set_ticks([t / top for t in ticks], labels=[names[t] for t in ticks])
    else:
        cb.set_ticks([0, 1], labels=["first layer", "output layer"])
    cb.set_label(f"layer colour (first → output) · {note}", fontsize=8)


def _finish_grad_axes(ax_mean, ax_std, g, xlabel: str | None):
    ax_mean.axhline(0, color="0.5", lw=0.8)
    ax_mean.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax_mean.set_ylabel("gradient mean (linear)")
    ax_std.set_yscale("log")
    _plain_log(ax_std)
    ax_std.set_ylabel("gradient std (log scale)")
    for ax in (ax_mean, ax_std):
        if xlabel:
            ax.set_xlabel(xlabel)
        ax.xaxis.get_major_locator().set_params(integer=True)


class _PlainLog(matplotlib.ticker.Formatter):
    """Log-axis tick labels written 0.01, 2, 40 (not 10^-2, 2x10^0); minor ticks labelled
    at leading digits 2, 3, 5 — or all of them when the axis spans under 1.5 decades."""

    def __init__(self, minor: bool):
        self.minor = minor

    def __call__(self, v, pos=None):
        if v <= 0:
            return ""
        if not self.minor:
            return f"{v:g}"
        lo, hi = sorted(self.axis.get_view_interval())
        if lo > 0 and math.log10(hi / lo) < 1.5:
            digits = max(2, math.ceil(math.log10(hi / max(hi - lo, 1e-300))) + 1)  # enough to tell ticks apart
            return f"{v:.{digits}g}"
        lead = round(v / 10 ** math.floor(math.log10(v) + 1e-9))
        return f"{v:g}" if lead in (2, 3, 5) else ""


def _plain_log(ax, axis="y"):
    a = ax.yaxis if axis == "y" else ax.xaxis
    a.set_major_formatter(_PlainLog(False))
    a.set_minor_formatter(_PlainLog(True))


def _thin(xs, k):
    if len(xs) <= k:
        return xs
    step = math.ceil(len(xs) / k)
    out = xs[::step]
    return out if out[-1] == xs[-1] else out + [xs[-1]]


# -------------------------------------------------- 3. gradient distributions
def gradient_distributions(res, labels=None, *, source: str = "histogram", param: str = "w") -> Figure:
    """First- vs last-layer distribution of log10|∂J/∂w| at the end of training (reference
    Figure 3), one panel per configuration, with mean and std annotated.

    `source='histogram'`: the stored histograms of the last epoch (every step of it, seeds
    pooled), mean and std from the grads table of that epoch; `source='final'`: the
    full gradients on the probe batch after the last epoch (`final_grads`)."""
    labels = _labels(res, labels)
    if not labels:
        raise NoData("no runs")
    short, shared = short_labels(labels)
    n = len(labels)
    ncol = 1 if n == 1 else (2 if n <= 4 else 3)
    nrow = math.ceil(n / ncol)
    fig = _figure(4.4 * ncol, 0.9 + 2.6 * nrow)
    axes = _subplots(fig, nrow, ncol)
    c_first, c_last = "#1f77b4", "#d62728"
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    for ax, lab in zip(axes.ravel(), labels):
        ids = _runs_of(res, lab)
        data = _distribution(res, ids, source, param)
        if data is None:
            ax.text(0.5, 0.5, "no gradient data", ha="center", va="center", transform=ax.transAxes)
            continue
        (edges, hist_first, hist_last, zeros), stats = data
        # One filled step outline per histogram (a bar per bin was hundreds of patches to draw).
        ax.stairs(hist_first, edges, fill=True, color=c_first, alpha=0.55, linewidth=0, label="first layer")
        ax.stairs(hist_last, edges, fill=True, color=c_last, alpha=0.55, linewidth=0, label="last (output) layer")
        ax.set_title(short[lab], loc="left")
        ax.set_xlabel("log10 |∂J/∂w|")
        ax.set_ylabel("fraction of entries per bin")
        txt = []
        for name, (mean, std, zf) in zip(("first", "last"), stats):
            z = f", zeros {zf:.0%}" if zf and zf > 0.005 else ""
            txt.append(f"{name}: mean {mean:.2e}, std {std:.2e}{z}")
        ax.text(0.02, 0.97, "\n".join(txt), transform=ax.transAxes, va="top", ha="left", fontsize=7.3,
                bbox=dict(boxstyle="round,pad=0.3", fc="white", ec="0.8", alpha=0.9))
        ax.set_ylim(0, max(np.max(hist_first), np.max(hist_last)) * 1.45 + 1e-12)
        floor = [(nm, h[0]) for nm, h in (("first", hist_first), ("last", hist_last)) if h[0] >= 0.05]
        if source == "histogram" and floor:
            ax.annotate("\n".join(f"{nm}: {v:.0%} at or below 1e-12\n(the histogram's floor)" for nm, v in floor),
                        xy=(x0 := 0.5 * (edges[0] + edges[1]), min(floor[0][1], ax.get_ylim()[1] * 0.6)), xytext=(x0 + 1.2, ax.get_ylim()[1] * 0.45),
                        fontsize=7, arrowprops=dict(arrowstyle="->", color="0.4", lw=0.8), color="0.25")
    where = (f"every step of {tables.last_span(res)}, seeds pooled" if source == "histogram"
             else "full gradient on the 512-example probe batch after training, seeds pooled")
    _title(fig, res, f"Gradient distributions at the end of training ({where})", shared)
    from matplotlib.patches import Patch

    fig.legend([Patch(color=c_first, alpha=0.55), Patch(color=c_last, alpha=0.55)], ["first layer", "last (output) layer"],
               loc="outside lower center", ncol=2, frameon=False)
    return fig


def _distribution(res, ids, source, param):
    """((bin edges, first, last, zero fracs), [(mean, std, zero frac) first, last])."""
    if source == "histogram":
        firsts, lasts = [], []
        edges = None
        for rid in ids:
            try:
                counts, edges = res.histogram(rid)
            except Exception:
                continue
            p = 0 if param == "w" else 1
            firsts.append(counts[-1, 0, p].astype(float))
            lasts.append(counts[-1, -1, p].astype(float))
        if not firsts:
            return None
        f, l_ = np.sum(firsts, 0), np.sum(lasts, 0)
        f, l_ = f / max(f.sum(), 1), l_ / max(l_.sum(), 1)
        g = _grad_table(res, param)
        g = g[g["run_id"].isin(ids)]
        last_epoch = g["epoch"].max()
        g = g[g["epoch"] == last_epoch]
        lo, hi = g["layer_index"].min(), g["layer_index"].max()
        stats = []
        for idx, h in ((lo, f), (hi, l_)):
            s = g[g["layer_index"] == idx]
            stats.append((float(s["grad_mean"].mean()), float(s["grad_std"].mean()), float(h[0])))
        return (edges, f[1:], l_[1:], (f[0], l_[0])), stats
    if source != "final":
        raise ValueError(f"source must be 'histogram' or 'final', got {source!r}")
    firsts, lasts = [], []
    for rid in ids:
        try:
            fg = res.final_grads(rid)
        except Exception:
            continue
        keys = list(fg)
        if not keys:
            continue
        firsts.append(np.ravel(fg[keys[0]]))
        lasts.append(np.ravel(fg[keys[-1]]))
    if not firsts:
        return None
    allnz = np.abs(np.concatenate(firsts + lasts))
    allnz = allnz[allnz > 0]
    lo = math.floor(np.log10(allnz.min())) if allnz.size else -12
    hi = math.ceil(np.log10(allnz.max())) if allnz.size else 2
    lo = min(lo, hi - 4)
    edges = np.linspace(lo, hi, max(30, min(90, 4 * (hi - lo))) + 1)
    out, stats = [], []
    for arr in (np.concatenate(firsts), np.concatenate(lasts)):
        a = np.abs(arr)
        nz = a[a > 0]
        h, _ = np.histogram(np.clip(np.log10(nz), edges[0], edges[-1] - 1e-9), bins=edges)
        out.append(h / max(len(a), 1))
        stats.append((float(arr.mean()), float(arr.std()), float(np.mean(a == 0))))
    return (edges, out[0], out[1], (stats[0][2], stats[1][2])), stats


# ------------------------------------------------------ 4. gradient-flow heatmap
def gradient_flow(res, labels=None, *, param: str = "w", quantity: str = "grad_abs_mean") -> Figure:
    """Layer (y) x epoch (x) heatmap of log10 mean |∂J/∂w| (mean over steps and seeds), one
    panel per configuration, one shared colour scale: vanishing shows as a dark band."""
    labels = _labels(res, labels)
    g = _grad_table(res, param)
    if g.empty or not labels:
        raise NoData("no gradient statistics recorded")
    short, shared = short_labels(labels)
    mats = {}
    for lab in labels:
        sub = g[g["run_id"].isin(_runs_of(res, lab))]
        if sub.empty:
            continue
        with np.errstate(divide="ignore"):
            sub = sub.assign(v=np.log10(sub[quantity].astype(float).where(sub[quantity] > 0)))
        m = sub.groupby(["layer_index", "epoch"])["v"].mean().unstack("epoch")
        names = sub[["layer_index", "layer"]].drop_duplicates().set_index("layer_index")["layer"]
        mats[lab] = (m, names)
    if not mats:
        raise NoData("no gradient statistics for these labels")
    allv = np.concatenate([m.to_numpy().ravel() for m, _ in mats.values()])
    allv = allv[np.isfinite(allv)]
    vmin, vmax = (np.percentile(allv, 1), np.percentile(allv, 99.5)) if allv.size else (-8, 0)
    n = len(mats)
    ncol = 1 if n == 1 else (2 if n <= 6 else 3)
    nrow = math.ceil(n / ncol)
    n_layers = max(len(m) for m, _ in mats.values())
    fig = _figure(4.6 * ncol + 0.8, 0.9 + nrow * max(2.0, 0.16 * n_layers + 0.9))
    axes = _subplots(fig, nrow, ncol)
    cmap = matplotlib.colormaps["magma"].with_extremes(bad="0.85")
    im = None
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    for ax, (lab, (m, names)) in zip(axes.ravel(), mats.items()):
        ep = m.columns.to_numpy()
        half = 0.5 * (ep[1] - ep[0]) if len(ep) > 1 else 0.5  # records every k epochs: cells k wide
        im = ax.imshow(np.ma.masked_invalid(m.to_numpy()), origin="lower", aspect="auto", cmap=cmap,
                       vmin=vmin, vmax=vmax, interpolation="nearest",
                       extent=(ep.min() - half, ep.max() + half, -0.5, len(m) - 0.5))
        ticks = _thin(list(range(len(m))), 11)
        ax.set_yticks(ticks, [names.get(m.index[t], str(m.index[t])) for t in ticks])
        ax.set_xlabel(tables.x_unit(res))
        ax.set_title(short[lab], loc="left")
        ax.grid(False)
        ax.xaxis.get_major_locator().set_params(integer=True)
    cb = fig.colorbar(im, ax=axes.ravel().tolist(), aspect=35, shrink=0.9)
    cb.set_label(f"log10 mean |∂J/∂{param}| (over steps, seeds)")
    _title(fig, res, "Gradient flow: layer × epoch", shared)
    return fig


# ------------------------------------------------------------------ 5. sweeps
def sweep(res, param: str = "r", *, epoch: int | None = None) -> Figure:
    """Final validation accuracy vs the L1/L2 strength r (log x; one line per penalty,
    and per init when several), or vs alpha (one line per init/depth), with the
    unregularized / unscaled reference as a horizontal line. For alpha, a second panel
    shows the first layer's gradient norm in the first recorded epoch against alpha."""
    f = tables.final(res)
    if epoch is not None:
        e = res.epochs[res.epochs["epoch"] == epoch][["run_id", "val_acc"]]
        f = f.drop(columns="val_acc").merge(e, on="run_id", how="left")
    chance = 1.0 / tables.n_classes(res)
    if param == "r":
        return _sweep_r(res, f, chance)
    if param == "alpha":
        return _sweep_alpha(res, f, chance)
    raise ValueError(f"param must be 'r' or 'alpha', got {param!r}")


def _context_cols(f, exclude):
    cols = [c for c in ("network", "variant", "depth", "width", "activation", "weight_init", "penalty", "r", "alpha")
            if c in f.columns and c not in exclude and f[c].astype(str).nunique() > 1]
    return cols


def _ctx_name(row, cols):
    parts = []
    for c in cols:
        v = row[c]
        if c == "depth":
            parts.append(f"{int(v)}x{int(row['width'])}" if "width" in row and pd.notna(row["width"]) else f"depth {v}")
        elif c == "width":
            continue
        elif c in ("r", "alpha"):
            parts.append(f"{c}={v:g}")
        else:
            parts.append(str(v))
    return " · ".join(parts)


def _stat_band(ax, g, xcol, color, label, marker="o"):
    s = g.groupby(xcol)["val_acc"].agg(["mean", "min", "max", "count"]).sort_index()
    ax.plot(s.index, s["mean"], color=color, marker=marker, label=label, lw=1.6, ms=4)
    if (s["count"] > 1).any():
        ax.fill_between(s.index, s["min"], s["max"], color=color, alpha=0.18, lw=0)


def _ref_line(ax, g, color, label):
    if g.empty:
        return
    m, lo, hi = g["val_acc"].mean(), g["val_acc"].min(), g["val_acc"].max()
    ax.axhline(m, color=color, ls="--", lw=1.3, label=label)
    if len(g) > 1:
        ax.axhspan(lo, hi, color=color, alpha=0.1, lw=0)


def _sweep_r(res, f, chance):
    pen = f[f["penalty"].isin(["l1", "l2"])]
    if pen.empty or pen["r"].nunique() < 2:
        raise NoData("no L1/L2 sweep over r in these results")
    ctx = _context_cols(pen, exclude=("penalty", "r"))
    contexts = [()] if not ctx else list(pen[ctx].astype(str).drop_duplicates().itertuples(index=False, name=None))
    fig = _figure(7.2, 4.6 + 0.15 * len(contexts))
    ax = _subplots(fig, 1, 1)[0, 0]
    styles = {"l1": ("#ff7f0e", "s"), "l2": ("#1f77b4", "o")}
    greys = ["0.25", "0.5", "0.65"]
    for ci, c in enumerate(contexts):
        sel = np.all([f[k].astype(str) == v for k, v in zip(ctx, c)], axis=0) if ctx else np.ones(len(f), bool)
        fc = f[sel]
        name = _ctx_name(fc.iloc[0], ctx) if ctx else ""
        for p in ("l1", "l2"):
            g = fc[fc["penalty"] == p]
            if not g.empty:
                color, marker = styles[p]
                if ci:
                    color = matplotlib.colormaps["tab10"](2 * ci + (p == "l2"))
                _stat_band(ax, g, "r", color, f"{p.upper()}" + (f" · {name}" if name else ""), marker)
        _ref_line(ax, fc[fc["penalty"] == "none"], greys[ci % 3], "no penalty (reference)" + (f" · {name}" if name else ""))
    ax.axhline(chance, color="0.4", ls=":", lw=1)
    ax.text(pen["r"].min(), chance, f"chance {chance:.2f}", va="bottom", fontsize=7.5, color="0.35")
    ax.set_xscale("log")
    ax.set_xlabel("penalty strength r (log scale)")
    ax.set_ylabel("final validation accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="best", fontsize=8)
    shared = _shared_text(f, ("penalty", "r"))
    _title(fig, res, "Final validation accuracy vs penalty strength", shared)
    _note(fig, "markers: mean over seeds · band: min–max · dashed: unregularized runs (band: their min–max)")
    return fig


def _sweep_alpha(res, f, chance):
    if f["alpha"].nunique() < 2:
        raise NoData("no sweep over alpha in these results")
    ctx = _context_cols(f, exclude=("alpha",))
    contexts = [()] if not ctx else list(f[ctx].astype(str).drop_duplicates().itertuples(index=False, name=None))
    fig = _figure(10.0, 4.4 + 0.15 * len(contexts))
    axes = _subplots(fig, 1, 2)
    ax, ax2 = axes[0, 0], axes[0, 1]
    cmap = matplotlib.colormaps["tab10"]
    first_epoch = tables.first_recorded_epoch(res)
    first_grad = _first_layer_grad(res, epoch=first_epoch)
    for ci, c in enumerate(contexts):
        sel = np.all([f[k].astype(str) == v for k, v in zip(ctx, c)], axis=0) if ctx else np.ones(len(f), bool)
        fc = f[sel]
        name = _ctx_name(fc.iloc[0], ctx) if ctx else "runs"
        color = cmap(ci % 10)
        _stat_band(ax, fc, "alpha", color, name)
        _ref_line(ax, fc[np.isclose(fc["alpha"], 1.0)], color, None)
        fg = fc.merge(first_grad, on="run_id")
        if not fg.empty:
            s = fg.groupby("alpha")["log10_grad"].agg(["mean", "min", "max", "count"]).sort_index()
            ax2.plot(s.index, s["mean"], color=color, marker="o", lw=1.6, ms=4, label=name)
            if (s["count"] > 1).any():
                ax2.fill_between(s.index, s["min"], s["max"], color=color, alpha=0.18, lw=0)
    ax.axhline(chance, color="0.4", ls=":", lw=1)
    ax.text(f["alpha"].min(), chance, f"chance {chance:.2f}", va="bottom", fontsize=7.5, color="0.35")
    ax.set_xscale("log")
    xt = sorted(f["alpha"].unique())
    for a in (ax, ax2):
        a.set_xscale("log")
        a.set_xticks(xt, [f"{v:g}" for v in xt])
        a.minorticks_off()
        a.set_xlabel("rescaling α in g(z) = α·φ(z/α)  (log scale)")
    ax.set_ylabel("final validation accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("final validation accuracy (dashed: α = 1 of the same line)")
    ax2.set_ylabel("log10 ‖∂J/∂W‖ of the first layer")
    ax2.set_title(f"first-layer gradient norm, {tables.epoch_span(first_epoch)} (mean over steps)")
    h, lab = ax.get_legend_handles_labels()
    fig.legend(h, lab, loc="outside lower center", ncol=min(3, len(lab)), frameon=False, fontsize=8)
    _title(fig, res, "Effect of rescaling the activation", _shared_text(f, ("alpha",)))
    return fig


def _shared_text(f, exclude):
    parts = []
    for c in ("network", "depth", "activation", "weight_init", "penalty"):
        if c in f.columns and c not in exclude and f[c].astype(str).nunique() == 1:
            v = f[c].iloc[0]
            if c == "depth" and "width" in f:
                parts.append(f"{f['network'].iloc[0]} {int(v)}x{int(f['width'].iloc[0])}" if pd.notna(v) else "")
            elif c != "network":
                parts.append(str(v))
    return " · ".join(p for p in parts if p)


def _first_layer_grad(res, epoch=1, param="w"):
    g = _grad_table(res, param)
    g = g[g["epoch"] == epoch]
    if g.empty:
        return pd.DataFrame(columns=["run_id", "log10_grad"])
    first = g.loc[g.groupby("run_id")["layer_index"].idxmin()]
    with np.errstate(divide="ignore"):
        return pd.DataFrame({"run_id": first["run_id"], "log10_grad": np.log10(first["grad_norm_mean"].astype(float))})


# ------------------------------------------------------------ 6. theory overlay
def theory_overlay(res, labels=None) -> Figure:
    """Mean-field prediction of log10 ‖∂J/∂W^[l]‖² relative to the last hidden layer, at
    initialization, against the measured per-layer gradient norms (the first recorded
    epoch, normalized the same way), one panel per MLP configuration. The line styles
    are explained once, below the panels, and each panel's slopes are in its title (a
    legend inside the panel hid measured points)."""
    comp = theory.compare(res, labels)
    if not comp:
        old = not set(theory.STORED_INPUTS) <= set(res.runs.columns)
        raise NoData(theory.OLD_RESULTS if old else "no MLP runs with at least two hidden layers and a mean-field model")
    short, shared = short_labels([c.label for c in comp])
    n = len(comp)
    ncol = 1 if n == 1 else (2 if n <= 4 else 3)
    nrow = math.ceil(n / ncol)
    fig = _figure(max(4.8 * ncol, 6.4), 1.9 + 3.3 * nrow)
    axes = _subplots(fig, nrow, ncol)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    span = tables.epoch_span(comp[0].epoch)
    for ax, c in zip(axes.ravel(), comp):
        x = np.arange(1, c.depth + 1)
        ax.plot(x, c.pred_backward, color="#1f77b4", lw=1.8)
        ax.plot(x, c.pred_full, color="#2ca02c", lw=1.5, ls="--")
        m = c.measured
        head = short[c.label]
        if c.measured_ok:
            ax.plot(x, np.nanmean(m, 0), "o", color="#d62728", ms=4)
            if m.shape[0] > 1:
                ax.fill_between(x, np.nanmin(m, 0), np.nanmax(m, 0), color="#d62728", alpha=0.15, lw=0)
            slopes = f"slope: χ {c.slope_backward:+.2f} · inputs {c.slope_full:+.2f} · measured {c.slope_measured:+.2f}"
        else:
            slopes = f"slope: χ {c.slope_backward:+.2f} · inputs {c.slope_full:+.2f} · measured: every run diverged"
        if c.diverged and c.measured_ok:
            head += f" ({c.diverged} diverged run{'s' if c.diverged > 1 else ''} left out)"
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_title(f"{head}\n{slopes}", loc="left", fontsize=8.5)
        ax.set_xlabel("hidden layer l")
        ax.set_ylabel("log10 ‖∂J/∂W^[l]‖² − log10 ‖∂J/∂W^[L]‖²")
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles = [Line2D([], [], color="#1f77b4", lw=1.8), Line2D([], [], color="#2ca02c", lw=1.5, ls="--"),
               Line2D([], [], color="#d62728", marker="o", ls="none", ms=4)]
    texts = ["theory: backward χ product", "theory: with layer inputs",
             f"measured, {span} (mean over steps; band: min–max over seeds)"]
    note = ("slope: least-squares change of log10‖∂J/∂W‖² per layer · theory at initialization "
            "(Schoenholz et al. 2017)")
    if comp[0].epoch != 1:
        note += (f" · the runs record every {comp[0].epoch} epochs: the measurement pools the steps of {span}, "
                 "while the network trains away from its initialization")
    if any(c.input_assumed for c in comp):
        note += " · input ‖x‖² not stored with the runs: assumed E x_i² = 1/3"
    # The note is the legend's title: both sit below the panels (a separate note and an
    # outside legend were laid over each other).
    fig.legend(handles, texts, loc="outside lower center", ncol=3 if ncol > 1 else 1, frameon=False, fontsize=8,
               title=_wrap(fig, note), title_fontsize=7.5)
    _title(fig, res, "Mean-field theory vs measured per-layer gradient norms", shared)
    return fig


# ------------------------------------------------------ 7. regime diagnosis
def regime_diagnosis(res, labels=None) -> Figure:
    """The factors of the backprop product per layer, at initialization (epoch 0, dashed)
    and after training (last epoch, solid): log10 of the weight matrix's spectral norm,
    the mean log10 of the activation derivative g'(z), and the fraction of saturated units."""
    labels = _labels(res, labels)
    a = res.activations
    if a.empty or not labels:
        raise NoData("no layer factors recorded")
    (short, shared), col, sty, fig, axes = _label_canvas(labels, 11.5, 4.3, 3, 1, 3)
    last_epoch = a["epoch"].max()
    quantities = ((axes[0, 0], "log_weight_norm", LOG10E), (axes[0, 1], "log_deriv_mean", LOG10E),
                  (axes[0, 2], "saturated_frac", 1.0))
    depths = {_draw_factors(quantities, a[a["run_id"].isin(_runs_of(res, lab))], col[lab], sty[lab]["marker"],
                            last_epoch) for lab in labels}
    _layer_axes(axes, a[a["run_id"].isin([rid for lab in labels for rid in _runs_of(res, lab)])], depths)
    extra = [(Line2D([], [], color="0.2", ls="--", marker="o", mfc="white", ms=4.5),
              tables.in_x_unit(res, "epoch 0 (initialization)")),
             (Line2D([], [], color="0.2", ls="-", marker="o", ms=4.5),
              tables.in_x_unit(res, f"epoch {last_epoch} (end of training)"))]
    if (res.runs["label"].isin(labels) & (res.runs.get("activation", pd.Series(dtype=str)) == "relu")).any():
        _note(fig, "ReLU: g' is 0 or 1, so its mean log10 g' is set by the 1e-30 floor given to inactive units, "
                   "and its 'saturated' fraction is the fraction of inactive units.")
    elif _no_preactivations(res, labels):
        _note(fig, NO_PREACTIVATIONS)
    _title(fig, res, "Regime diagnosis: which factor of the backprop product is small", shared)
    _legend_below(fig, axes, short, col, title=_seeds_note(res, labels), extra=extra,
                  styles={lab: {"color": sty[lab]["color"], "marker": sty[lab]["marker"]} for lab in labels})
    return fig


def _draw_factors(quantities, sub: pd.DataFrame, color, marker, last_epoch) -> int:
    """One configuration's factors per layer at epoch 0 (dashed, hollow markers: a single
    hidden layer is one point) and at the end (solid); returns its number of layers."""
    n_layers = int(sub["layer_index"].max()) + 1
    for ep, ls, mfc in ((0, "--", "white"), (last_epoch, "-", None)):
        s = sub[sub["epoch"] == ep]
        for ax, colname, scale in quantities:
            w = tables.per_seed(s, colname, index="layer_index") * scale
            w.index = w.index + 1  # layers counted from 1
            _band(ax, w, color, None, ls=ls, marker=marker, lw=1.4, alpha=0.12, markevery=1, mfc=mfc)
            out = w.loc[[n_layers]] if n_layers in w.index else None
            if out is not None and out.notna().any(axis=None):  # mark the linear output layer
                ax.plot([n_layers], [out.mean(axis=1).iloc[0]], "s", color=color, ms=6, mfc="white")
    return n_layers


def _layer_axes(axes, drawn: pd.DataFrame, depths: set) -> None:
    """The three panels' titles and one layer axis, by name as the gradient-flow figure
    names them (the deepest configuration's)."""
    titles = ("weight factor: log10 ‖W^[l]‖₂ (spectral norm)", "derivative factor: mean log10 g'(z^[l])",
              "saturated units: fraction with g'(z) < 0.01")
    n_max = max(depths)
    ticks = _thin(list(range(1, n_max + 1)), 12)
    names = drawn.drop_duplicates("layer_index").set_index("layer_index")["layer"].astype(str)
    tick_names = [names.get(t - 1, str(t)) for t in ticks]
    for ax, t in zip(axes[0], titles):
        ax.set_title(t)
        ax.set_xlabel("layer (first hidden to output; □ = linear output layer)" if len(depths) > 1 or ax is axes[0, 0]
                      else "layer (first hidden to last)")
        # Every panel spans the same layers (a net of one hidden layer has one point in the
        # derivative and saturation panels, which autoscaling spread over 0.96-1.04).
        ax.set_xlim(0.5, n_max + 0.5)
        ax.set_xticks(ticks, tick_names, rotation=30 if max(map(len, tick_names)) > 4 else 0, fontsize=7.5)
    axes[0, 0].axhline(0, color="0.5", lw=0.8)
    axes[0, 1].axhline(0, color="0.5", lw=0.8)
    axes[0, 2].set_ylim(-0.02, 1.02)


# ------------------------------------------------------------- the instruments
MAX_PANELS = REPORT_PANELS  # per-configuration panel figures show at most this many (`vglab.schema`: the plan prices it)
MAX_LINES = 8  # line figures colour at most this many configurations distinctly (more: a colour ramp)


@dataclass(frozen=True)
class Use:
    """How an instrument draws given results: its keyword arguments and a note for the caption."""

    kwargs: dict = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Instrument:
    """One figure type: what it needs from the results (`needs(res)` -> a `Use`, or None
    when these results cannot show it), the function that draws it, and what it shows.
    The report draws every instrument whose needs are met, in the order of
    `registry.INSTRUMENTS`."""

    name: str
    draw: Callable[..., Figure]
    caption: str
    needs: Callable[[object], Use | None]

    def caption_for(self, res, use: Use | None = None) -> str:
        """The caption (and the note of `use`) in the runs' x unit (steps for a watched run)."""
        return tables.in_x_unit(res, self.caption + (use.note if use is not None else ""))

    def figure(self, res) -> Figure:
        """Draw it for `res` (NoData when its needs are not met)."""
        use = self.needs(res)
        if use is None:
            raise NoData(f"these results do not have what {self.name} shows")
        return self.draw(res, **use.kwargs)


def representative(res, limit: int) -> list[str] | None:
    """At most `limit` labels for per-configuration panels: all when few; else alpha at 1 and its
    largest value, r at 0 and nearest 0.01, one per init and architecture. None: all labels."""
    labels = tables.label_order(res)
    if len(labels) <= limit:
        return None
    keep = tables.runs(res)
    if keep["alpha"].nunique() > 2:
        keep = keep[np.isclose(keep["alpha"], 1.0) | np.isclose(keep["alpha"], keep["alpha"].max())]
    pen = keep[keep["penalty"] != "none"]
    if pen["r"].nunique() > 1:
        target = min(pen["r"].unique(), key=lambda v: abs(math.log(v / 0.01)))
        keep = keep[(keep["penalty"] == "none") | np.isclose(keep["r"], target)]
    return tables.label_order(keep)[:limit]


def _subset_note(res, sub) -> str:
    return (f" Shown for {len(sub)} of {len(tables.label_order(res))} configurations (α at 1 and its largest value, "
            "r at 0 and nearest 0.01)." if sub else "")


def _panels(res, **kw) -> Use:
    sub = representative(res, MAX_PANELS)
    return Use({**kw, **({"labels": sub} if sub else {})}, _subset_note(res, sub))


def _lines(res, **kw) -> Use:
    sub = representative(res, MAX_LINES)
    return Use({**kw, **({"labels": sub} if sub else {})}, _subset_note(res, sub))


def _has_runs(res) -> bool:
    return len(res.runs) > 0 and not res.epochs.empty


def _r_sweep(res) -> bool:
    r = tables.runs(res)
    pen = r[r["penalty"] != "none"]
    return len(pen) > 0 and pen["r"].nunique() >= 2


def _floor_hit(res) -> bool:
    """Some first-layer gradient sits at the stored histogram's 1e-12 floor."""
    g = res.grads
    if g.empty:
        return False
    g = g[(g["param"] == "w") & (g["layer_index"] == 0)]
    return bool((g["grad_abs_mean"] < 1e-11).any())


def _need_learning_curves(res):
    if not _has_runs(res):
        return None
    if len(tables.label_order(res)) > MAX_LINES and _r_sweep(res):
        return None  # learning_curves_by_penalty shows them
    return Use()


def _need_curves_by_penalty(res):
    if not _has_runs(res) or len(tables.label_order(res)) <= MAX_LINES or not _r_sweep(res):
        return None
    r = tables.runs(res)
    return Use() if set(r["penalty"]) <= {"none", "l1", "l2"} and r["alpha"].nunique() == 1 \
        and r["spec"].nunique() == 1 else None


NO_PREACTIVATIONS = ("The derivative and saturation panels are empty: no pre-activations were recorded, because the "
                     "model does not apply its nonlinearity with vglab.nn.activation(...) (a plain jax.nn.sigmoid is "
                     "invisible to vglab); build it with vglab.nn.activation to measure g'(z) and saturation.")


def _no_preactivations(res, labels=None) -> bool:
    """Some configuration's hidden layers have no recorded pre-activations (NaN derivative factors)."""
    a = res.activations
    if a.empty or "deriv_mean" not in a:
        return False
    if labels is not None:
        a = a[a["run_id"].isin([rid for lab in labels for rid in _runs_of(res, lab)])]
    hidden = a[a["layer_index"] < a.groupby("run_id")["layer_index"].transform("max")]  # the output is linear
    return bool(len(hidden)) and bool(hidden.groupby("run_id")["deriv_mean"].apply(lambda v: v.isna().all()).any())


def _need_regime(res):
    if not _has_runs(res) or res.activations.empty:
        return None
    use = _lines(res)
    return Use(use.kwargs, use.note + (" " + NO_PREACTIVATIONS if _no_preactivations(res) else ""))


def _need_first_grad(res) -> str:
    return tables.epoch_span(tables.first_recorded_epoch(res))


INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument("learning_curves", learning_curves,
               "Training and validation accuracy and loss per recorded epoch (reference Figures 1, 2, 4, 5). "
               "Epoch 0 is the network at initialization; the dotted line is chance (1/classes).",
               _need_learning_curves),
    Instrument("learning_curves_by_penalty", learning_curves_by_penalty,
               "Validation accuracy and training loss per recorded epoch for every penalty strength r, one row per "
               "penalty, colour by r; dashed: the runs without penalty (reference Figure 2).",
               _need_curves_by_penalty),
    Instrument("sweep_r", sweep,
               "Final validation accuracy against the penalty strength r (log scale), L1 and L2; the dashed line "
               "and its band are the runs without penalty.",
               lambda res: Use({"param": "r"}) if _has_runs(res) and _r_sweep(res) else None),
    Instrument("sweep_alpha", sweep,
               "Left: final validation accuracy against the rescaling α (dashed: α = 1 of the same line). "
               "Right: the first layer's weight-gradient norm in the first recorded epoch — does rescaling let more "
               "gradient reach the first layer?",
               lambda res: Use({"param": "alpha"}, f" Gradient norms of {_need_first_grad(res)}.")
               if _has_runs(res) and tables.runs(res)["alpha"].nunique() >= 2 else None),
    Instrument("gradient_flow", gradient_flow,
               "Gradient flow: log10 of the mean |∂J/∂w| of every layer's weights (y) in every recorded epoch (x), "
               "averaged over the steps since the previous record and over seeds, one shared colour scale. A dark "
               "lower region means the gradient vanishes on its way back to the first layers. The gradient is of "
               "the training objective, i.e. includes the penalty's own gradient for L1/L2 runs.",
               # two layers: the first/last figure says it all
               lambda res: Use() if _has_runs(res) and not res.grads.empty and res.grads["layer_index"].max() >= 2
               else None),
    Instrument("gradient_stats_first_last", gradient_stats,
               "Mean (linear) and standard deviation (log scale) of the weight-gradient entries of the first (solid) "
               "and the last, output, layer (dashed), pooled over every step.",
               lambda res: _lines(res, layers="first_last") if _has_runs(res) and not res.grads.empty else None),
    Instrument("gradient_stats_all", gradient_stats,
               "The same statistics for every layer (colour: layer, first to output), one row per configuration.",
               lambda res: _panels(res, layers="all") if _has_runs(res) and not res.grads.empty
               and np.nanmax(tables.runs(res)["depth"].astype(float).fillna(1)) >= 3 else None),
    Instrument("gradient_distributions", gradient_distributions,
               "Distribution of log10|∂J/∂w| of the first vs the last layer over the steps of the last recorded "
               "epoch (reference Figure 3), from the stored histograms (seeds pooled); mean and std of the raw "
               "gradient in the boxes.",
               lambda res: _panels(res) if _has_runs(res) else None),
    Instrument("gradient_distributions_final", gradient_distributions,
               "The same from the full gradients on the 512-example probe batch after training (final_grads), with "
               "an x range that covers the smallest gradients.",
               lambda res: _panels(res, source="final") if _has_runs(res) and _floor_hit(res) else None),
    Instrument("theory_overlay", theory_overlay,
               "Mean-field prediction (Schoenholz et al. 2017) of log10‖∂J/∂W^[l]‖² relative to the last hidden "
               "layer at initialization — solid: the backward χ product alone, dashed: including the layer inputs "
               "a^[l-1] — against the measured gradient norms of the first recorded epoch, normalized the same way.",
               lambda res: Use(_panels(res).kwargs, _panels(res).note + f" Measured over {_need_first_grad(res)}.")
               if _has_runs(res) and not res.grads.empty
               and ((tables.runs(res)["network"].astype(str) == "mlp")
                    & (tables.runs(res)["depth"].astype(float) >= 3)).any() else None),
    Instrument("regime_diagnosis", regime_diagnosis,
               "The factors of the backprop product per layer at initialization (dashed) and after training (solid): "
               "the weight factor log10‖W‖₂, the derivative factor mean log10 g'(z), and the fraction of saturated "
               "units. Large parameters show as saturation (g' ≈ 0); many small layers as a weight factor below 0 in "
               "every layer.",
               _need_regime),
)


def instrument(name: str) -> Instrument:
    for i in INSTRUMENTS:
        if i.name == name:
            return i
    raise KeyError(f"no instrument {name!r}; instruments are {[i.name for i in INSTRUMENTS]}")
