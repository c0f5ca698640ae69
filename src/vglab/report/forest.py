"""The index's opening picture: per claim, the arms of the experiment it was checked on as
points (mean final validation accuracy over seeds) with their 95 % intervals over seeds
(one-sample t, `stats.difference(values, 0.0)`), the panel marked with the claim's verdict
— the study's result before any number is read."""

from __future__ import annotations

import numpy as np

from vglab.report import figures as F
from vglab.report import stats, tables

VERDICT_COLORS = {"reproduced": "#17623a", "partly": "#7a5600", "not reproduced": "#9b1c1c",
                  "inconclusive": "#4a5563", "answered": "#1e4a9a", "not run": "#6b7280"}
MAX_ARMS = 12  # arms per panel; a longer sweep shows its first MAX_ARMS in label order (said in the panel)


def arms(res) -> list[tuple[str, float, float, float, int]]:
    """(label, mean, low, high, seeds) of the final validation accuracy per configuration."""
    f = tables.final(res)
    out = []
    for label in tables.label_order(res):
        v = f.loc[f["label"] == label, "val_acc"].astype(float).to_numpy()
        v = v[np.isfinite(v)]
        if not v.size:
            continue
        d = stats.difference(list(v), 0.0)
        out.append((label, float(v.mean()), d.low, d.high, int(v.size)))
    return out


def forest(pairs, loaded: dict):
    """One panel per claim (`pairs`: [(Claim, Outcome)] checked on the experiments `loaded`,
    {preset: Results}); raises `figures.NoData` when no claim has arms to show."""
    panels = []
    for c, o in pairs:
        preset = next((p for p in (o.presets or [o.preset]) if p in loaded), None)
        if preset is None:
            continue
        a = arms(loaded[preset])
        if a:
            panels.append((c, o, preset, a, tables.n_classes(loaded[preset])))
    if not panels:
        raise F.NoData("no claim with arms to show")
    ncols = 2 if len(panels) > 1 else 1
    nrows = -(-len(panels) // ncols)
    heights = [max(len(p[3][:MAX_ARMS]) for p in panels[i * ncols:(i + 1) * ncols]) for i in range(nrows)]
    fig = F._figure(11.5, sum(0.28 * h + 0.9 for h in heights))
    gs = fig.add_gridspec(nrows, ncols, height_ratios=[h + 2 for h in heights])
    for i, (c, o, preset, a, n_classes) in enumerate(panels):
        ax = fig.add_subplot(gs[i // ncols, i % ncols])
        shown = a[:MAX_ARMS]
        short, _ = F.short_labels([x[0] for x in shown])
        col = VERDICT_COLORS.get(o.verdict, "#333333")
        y = np.arange(len(shown))[::-1]
        for yi, (label, m, lo, hi, n) in zip(y, shown):
            if np.isfinite(lo):
                ax.plot([lo, hi], [yi, yi], color=col, lw=1.6)
            ax.plot([m], [yi], "o", color=col, ms=4.5)
        ax.axvline(1.0 / n_classes, color="#999999", lw=0.8, ls=":")
        ax.set_yticks(y, [short[x[0]][:48] for x in shown], fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_title(f"{c.id} — {o.verdict} [{preset}]" + (f" (first {MAX_ARMS} of {len(a)} arms)"
                                                          if len(a) > MAX_ARMS else ""), color=col, fontsize=8.5,
                     loc="left")
        ax.tick_params(axis="x", labelsize=7)
        if i // ncols == nrows - 1:
            ax.set_xlabel("final val acc (mean, 95 % interval over seeds; dotted: chance)", fontsize=7.5)
    return fig
