"""Self-contained HTML pages: one per experiment (`write_report`) and an index over
several (`write_index`, for `vglab reproduce`).

Every page works offline: figures are embedded as base64 PNG (the PNG and SVG files are
also written under `<results>/figures/`), the CSS is inline, no scripts, fonts or
links to anything outside the page (besides the relative links between pages).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np

from vglab.report import claims as claims_mod
from vglab.report import figures as F
from vglab.report import tables, theory
from vglab.report import why as why_mod

MAX_PANELS = 6  # per-configuration panel figures show at most this many configurations
MAX_LINES = 8  # line figures colour at most this many configurations distinctly (more: a colour ramp)

CSS = """
:root { --fg:#1d232b; --muted:#5b6673; --line:#e3e7ec; --bg:#fff; --soft:#f6f8fa; --accent:#2458a6; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color:var(--fg); background:var(--bg); }
main { max-width: 1180px; margin: 0 auto; padding: 28px 28px 60px; }
h1 { font-size: 1.7em; margin: 0 0 4px; letter-spacing: -0.01em; }
h2 { font-size: 1.25em; margin: 38px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05em; margin: 22px 0 6px; }
p.sub { color: var(--muted); margin: 0 0 18px; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
nav.toc { font-size: .9em; color: var(--muted); margin-bottom: 8px; }
nav.toc a { margin-right: 14px; }
table { border-collapse: collapse; width: 100%; font-size: .9em; margin: 8px 0 4px; }
th, td { text-align: left; vertical-align: top; padding: 6px 9px; border-bottom: 1px solid var(--line); }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:hover td { background: #fafbfc; }
.verdict { display:inline-block; padding: 1px 8px; border-radius: 10px; font-size: .85em; font-weight: 600;
           white-space: nowrap; border: 1px solid transparent; }
.v-reproduced { background:#e3f4e8; color:#17623a; border-color:#b9e2c6; }
.v-partly { background:#fff4d6; color:#7a5600; border-color:#f0dc9c; }
.v-not-reproduced { background:#fde7e7; color:#9b1c1c; border-color:#f3bcbc; }
.v-inconclusive { background:#eef0f3; color:#4a5563; border-color:#d5dae1; }
.v-answered { background:#e6efff; color:#1e4a9a; border-color:#bdd0f5; }
.v-not-run { background:#f3f4f6; color:#6b7280; border-color:#e5e7eb; }
.rule { color: var(--muted); font-size: .85em; margin-top: 3px; }
figure { margin: 18px 0 30px; }
figure img { max-width: 100%; height: auto; display: block; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: .9em; margin-top: 6px; max-width: 900px; }
pre { background: var(--soft); border: 1px solid var(--line); border-radius: 4px; padding: 10px 12px;
      font: 12.5px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; overflow-x: auto; }
details summary { cursor: pointer; color: var(--accent); margin: 8px 0; }
.kv td:first-child { color: var(--muted); white-space: nowrap; width: 1%; }
.note { background: var(--soft); border-left: 3px solid var(--accent); padding: 8px 12px; font-size: .9em; }
footer { margin-top: 40px; color: var(--muted); font-size: .85em; }
"""

CAPTIONS = {
    "learning_curves": "Training and validation accuracy and loss per epoch (reference Figures 1, 2, 4, 5). "
                       "Epoch 0 is the network at initialization; the dotted line is chance (1/classes).",
    "sweep_r": "Final validation accuracy against the penalty strength r (log scale), L1 and L2; the dashed line "
               "and its band are the runs without penalty.",
    "sweep_alpha": "Left: final validation accuracy against the rescaling α (dashed: α = 1 of the same line). "
                   "Right: the first layer's weight-gradient norm in epoch 1 — does rescaling let more gradient reach "
                   "the first layer?",
    "gradient_flow": "Gradient flow: log10 of the mean |∂J/∂w| of every layer's weights (y) in every epoch (x), "
                     "averaged over the steps of the epoch and over seeds, one shared colour scale. A dark lower "
                     "region means the gradient vanishes on its way back to the first layers. The gradient is of "
                     "the training objective, i.e. includes the penalty's own gradient for L1/L2 runs.",
    "gradient_stats_first_last": "Mean (linear) and standard deviation (log scale) of the weight-gradient entries of "
                                 "the first (solid) and the last, output, layer (dashed), pooled over every step.",
    "gradient_stats_all": "The same statistics for every layer (colour: layer, first to output).",
    "gradient_distributions": "Distribution of log10|∂J/∂w| of the first vs the last layer in the last epoch "
                              "(reference Figure 3), from the stored histograms (every step, seeds pooled); "
                              "mean and std of the raw gradient in the boxes.",
    "gradient_distributions_final": "The same from the full gradients on the 512-example probe batch after training "
                                    "(final_grads), with an x range that covers the smallest gradients.",
    "theory_overlay": "Mean-field prediction (Schoenholz et al. 2017) of log10‖∂J/∂W^[l]‖² relative to the last "
                      "hidden layer at initialization — solid: the backward χ product alone, dashed: including the "
                      "layer inputs a^[l-1] — against the measured gradient norms of epoch 1, normalized the same way.",
    "regime_diagnosis": "The factors of the backprop product per layer at initialization (dashed) and after training "
                        "(solid): the weight factor log10‖W‖₂, the derivative factor mean log10 g'(z), and the fraction "
                        "of saturated units. Large parameters show as saturation (g' ≈ 0); many small layers as a "
                        "weight factor below 0 in every layer.",
}


# -------------------------------------------------------------------- helpers
def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def _verdict(v: str) -> str:
    return f'<span class="verdict v-{v.replace(" ", "-")}">{_esc(v)}</span>'


def _png_b64(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _num(x, fmt="{:.3f}") -> str:
    try:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return "–"
        return fmt.format(x)
    except (TypeError, ValueError):
        return _esc(x)


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_esc(title)}</title><style>{CSS}</style></head>\n<body><main>\n{body}\n"
            f'<footer>Generated by vglab on {_dt.datetime.now().strftime("%Y-%m-%d %H:%M")}. '
            "Every number on this page is computed from the stored results.</footer>\n</main></body></html>\n")


def _representative(res, limit: int) -> list[str] | None:
    """At most `limit` labels for per-configuration panels: all when few; else alpha at 1 and its
    largest value, r at 0 and nearest 0.01, one per init and architecture. None: all labels."""
    labels = tables.label_order(res)
    if len(labels) <= limit:
        return None
    r = tables.runs(res)
    keep = r.copy()
    if keep["alpha"].nunique() > 2:
        keep = keep[np.isclose(keep["alpha"], 1.0) | np.isclose(keep["alpha"], keep["alpha"].max())]
    pen = keep[keep["penalty"] != "none"]
    if pen["r"].nunique() > 1:
        target = min(pen["r"].unique(), key=lambda v: abs(math.log(v / 0.01)))
        keep = keep[(keep["penalty"] == "none") | np.isclose(keep["r"], target)]
    chosen = [lab for lab in tables.label_order(keep)]
    return chosen[:limit]


# --------------------------------------------------------------- the figures
def _figure_plan(res) -> list[tuple[str, callable, dict, str]]:
    """(name, function, kwargs, extra caption) for the figures that fit these results."""
    r = tables.runs(res)
    if not len(r) or res.epochs.empty:
        return []
    plan = [("learning_curves", F.learning_curves, {}, "")]
    pen = r[r["penalty"] != "none"]
    if len(pen) and pen["r"].nunique() >= 2:
        plan.append(("sweep_r", F.sweep, {"param": "r"}, ""))
    if r["alpha"].nunique() >= 2:
        plan.append(("sweep_alpha", F.sweep, {"param": "alpha"}, ""))
    if not res.grads.empty and res.grads["layer_index"].max() >= 2:  # 2 layers: the first/last figure says it all
        plan.append(("gradient_flow", F.gradient_flow, {}, ""))
    sub = _representative(res, MAX_PANELS)
    note = (f" Shown for {len(sub)} of {len(tables.label_order(res))} configurations (α at 1 and its largest value, "
            "r at 0 and nearest 0.01)." if sub else "")
    plan.append(("gradient_stats_first_last", F.gradient_stats, {"layers": "first_last", "labels": _representative(res, MAX_LINES)},
                 ""))
    if np.nanmax(r["depth"].astype(float).fillna(1)) >= 3:
        plan.append(("gradient_stats_all", F.gradient_stats, {"layers": "all", "labels": sub}, note))
    plan.append(("gradient_distributions", F.gradient_distributions, {"labels": sub}, note))
    if _floor_hit(res):
        plan.append(("gradient_distributions_final", F.gradient_distributions, {"labels": sub, "source": "final"}, note))
    if ((r["network"].astype(str) == "mlp") & (r["depth"].astype(float) >= 3)).any():
        plan.append(("theory_overlay", F.theory_overlay, {"labels": sub}, note))
    plan.append(("regime_diagnosis", F.regime_diagnosis, {"labels": _representative(res, MAX_LINES)}, ""))
    return plan


def _floor_hit(res) -> bool:
    """Some first-layer gradient sits at the stored histogram's 1e-12 floor."""
    g = res.grads
    if g.empty:
        return False
    g = g[(g["param"] == "w") & (g["layer_index"] == 0)]
    return bool((g["grad_abs_mean"] < 1e-11).any())


def _render_figures(res, fig_dir: Path) -> list[dict]:
    out = []
    for name, fn, kw, extra in _figure_plan(res):
        kw = {k: v for k, v in kw.items() if not (k == "labels" and v is None)}
        try:
            fig = fn(res, **kw)
        except F.NoData:
            continue
        except Exception as e:  # one figure that cannot be drawn must not cost the whole page
            warnings.warn(f"figure {name} could not be drawn: {type(e).__name__}: {e}", stacklevel=2)
            out.append({"name": name, "error": f"{type(e).__name__}: {e}", "caption": CAPTIONS.get(name, "")})
            continue
        png, svg = F.save(fig, fig_dir / name)
        fig.clf()
        out.append({"name": name, "png": png, "svg": svg, "caption": CAPTIONS.get(name, "") + extra})
    return out


def _figure_html(f: dict, base: Path) -> str:
    if "error" in f:
        return (f'<figure id="fig-{_esc(f["name"])}"><p class="note">The figure <b>{_esc(f["name"])}</b> could not be '
                f'drawn from these results: {_esc(f["error"])}</p></figure>')
    rel_svg = os.path.relpath(f["svg"], base)
    rel_png = os.path.relpath(f["png"], base)
    return (f'<figure id="fig-{_esc(f["name"])}"><img alt="{_esc(f["name"].replace("_", " "))}" '
            f'src="data:image/png;base64,{_png_b64(f["png"])}">'
            f'<figcaption>{_esc(f["caption"])} <a href="{_esc(rel_png)}">PNG</a> · <a href="{_esc(rel_svg)}">SVG</a>'
            "</figcaption></figure>")


# ------------------------------------------------------------------ the tables
def _runs_table(res) -> str:
    s = tables.summary(res)
    if s.empty:
        return "<p>No completed runs.</p>"
    rows = []
    for _, r in s.iterrows():
        div = f'<span class="v-not-reproduced verdict">{r["diverged"]}</span>' if r["diverged"] else "0"
        rows.append(f'<tr><td>{_esc(r["label"])}</td><td class="num">{r["seeds"]}</td>'
                    f'<td class="num">{_num(r["val_acc_mean"])} ± {_num(r["val_acc_std"])}</td>'
                    f'<td class="num">{_num(r["val_acc_min"])} – {_num(r["val_acc_max"])}</td>'
                    f'<td class="num">{r["epochs"]}</td><td class="num">{div}</td></tr>')
    return ("<table><thead><tr><th>configuration (label)</th><th>seeds</th><th>final val acc mean ± std</th>"
            "<th>min – max</th><th>epochs</th><th>diverged</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _claims_table(pairs, link_preset=None) -> str:
    rows = []
    for c, o in pairs:
        links = []
        for p in (o.presets or ([o.preset] if o.preset else [])):
            href = link_preset(p) if link_preset else ""
            links.append(f'<a href="{_esc(href)}">{_esc(p)}</a>' if href else _esc(p))
        where = ", ".join(links)
        rows.append(f'<tr id="claim-{_esc(c.id)}"><td><b>{_esc(c.text)}</b><div class="rule">{_esc(c.source)} · '
                    f'<code>{_esc(c.id)}</code>{" · " + where if where else ""}</div></td>'
                    f'<td>{_esc(o.measured)}<div class="rule">Rule: {_esc(c.rule_text)}</div></td>'
                    f"<td>{_verdict(o.verdict)}</td></tr>")
    return ("<table><thead><tr><th style=\"width:28%\">claim</th><th>what we measured</th><th>verdict</th></tr></thead>"
            "<tbody>" + "".join(rows) + "</tbody></table>")


def _theory_table(res) -> str:
    comp = theory.compare(res)
    if not comp:
        return ""
    rows = []
    for c in comp:
        fl = c.first_vs_last
        rows.append(f"<tr><td>{_esc(c.label)}</td><td class=\"num\">{c.prediction.chi[0]:.3g}</td>"
                    f"<td class=\"num\">{c.slope_backward:+.2f}</td><td class=\"num\">{c.slope_full:+.2f}</td>"
                    f"<td class=\"num\">{c.slope_measured:+.2f}</td><td class=\"num\">{fl['backward']:+.1f}</td>"
                    f"<td class=\"num\">{fl['full']:+.1f}</td><td class=\"num\">{fl['measured']:+.1f}</td></tr>")
    note = " E‖x‖² was not available locally; 1/3 per input feature was assumed." if any(c.input_assumed for c in comp) else ""
    return ("<h3>Mean-field theory vs measured</h3><p class=\"sub\">Slope: least-squares change of log10‖∂J/∂W^[l]‖² "
            "per hidden layer (positive: smaller towards the input). First/last: log10‖∂J/∂W^[1]‖² − "
            "log10‖∂J/∂W^[L]‖² (L = last hidden layer). χ₁: the first layer's predicted per-layer factor." + note + "</p>"
            "<table><thead><tr><th>configuration</th><th>χ₁</th><th>slope, χ product</th><th>slope, with inputs</th>"
            "<th>slope, measured</th><th>first/last, χ product</th><th>first/last, with inputs</th>"
            "<th>first/last, measured</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _kv(d: dict, prefix="") -> list[tuple[str, str]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += _kv(v, key + ".")
        else:
            out.append((key, v if isinstance(v, str) else json.dumps(v, default=str)))
    return out


def _meta_html(res) -> str:
    rows = _kv(res.meta or {})
    e = res.epochs
    if len(e) and "seconds" in e:
        per_run = e.groupby("run_id")["seconds"].sum()
        rows.append(("training time, summed over runs (s)", f"{per_run.sum():.1f}"))
    rows.append(("runs (complete)", str(len(res.runs))))
    return '<table class="kv">' + "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in rows) + "</table>"


def _spec_html(res) -> str:
    path = Path(res.path) / "experiment.toml"
    text = path.read_text() if path.exists() else json.dumps(res.spec, indent=2, default=str)
    return f"<pre>{_esc(text)}</pre>"


# ----------------------------------------------------------------- the pages
def write_report(results_dir) -> Path:
    """Write `results_dir/report.html` (self-contained) and its figures under
    `results_dir/figures/` (PNG and SVG); returns the page's path."""
    from vglab.results.store import load

    results_dir = Path(results_dir)
    res = load(results_dir)
    preset = claims_mod.preset_of(res) or results_dir.name
    ds = res.spec.get("dataset", "") if isinstance(res.spec, dict) else ""
    why_page = preset in why_mod.PRESETS  # the why presets draw their own figures (see `_why_figures`)
    figs = _why_figures(res, preset, results_dir / "figures") if why_page else _render_figures(res, results_dir / "figures")
    pairs = claims_mod.evaluate({preset: res})
    mine = [(c, o) for c, o in pairs if claims_mod.relevant(c, preset)]
    others = [(c, o) for c, o in pairs if not claims_mod.relevant(c, preset)]
    desc = res.spec.get("description", "") if isinstance(res.spec, dict) else ""
    reference = res.spec.get("reference", "") if isinstance(res.spec, dict) else ""

    parts = [f"<h1>{_esc(preset)}</h1>",
             f'<p class="sub">{_esc(desc + " · " if desc else "")}dataset {_esc(ds or "?")} · '
             f"{len(res.runs)} runs · {len(tables.label_order(res))} configurations · results in "
             f"<code>{_esc(results_dir.resolve())}</code></p>",
             (f'<p class="sub">Reference: {_esc(reference)}</p>' if reference else ""),
             '<nav class="toc"><a href="#claims">Claims</a><a href="#runs">Runs</a><a href="#figures">Figures</a>'
             '<a href="#config">Configuration</a><a href="#meta">Versions and timing</a></nav>',
             '<h2 id="claims">Claims of the reference study</h2>']
    if mine:
        parts.append(_claims_table(mine))
    elif why_page:
        parts[-1] = '<h2 id="claims">Why: claims checked on this experiment</h2>'
        parts.append(_claims_table([(c, o) for c, o in why_mod.evaluate({preset: res}) if why_mod.relevant(c, preset)]))
    else:
        parts.append("<p>No claim of the reference study is checked on this experiment.</p>")
    if others:
        parts.append("<details><summary>Claims checked on other experiments (" + str(len(others)) +
                     ") — not run here; see the index page of <code>vglab reproduce</code></summary>" +
                     _claims_table(others) + "</details>")
    parts += ['<h2 id="runs">Runs</h2>', _runs_table(res), "" if why_page else _theory_table(res),
              '<h2 id="figures">Figures</h2>']
    if not figs:
        parts.append("<p>No figures: these results hold no per-epoch data.</p>")
    parts += [_figure_html(f, results_dir) for f in figs]
    parts += ['<h2 id="config">Configuration</h2>', _spec_html(res), '<h2 id="meta">Versions and timing</h2>',
              _meta_html(res)]
    out = results_dir / "report.html"
    tmp = out.with_name(".report.html.tmp")
    tmp.write_text(_page(f"vglab · {preset}", "\n".join(parts)), encoding="utf-8")
    os.replace(tmp, out)
    return out


def _stale(results_dir: Path) -> bool:
    page = results_dir / "report.html"
    if not page.exists():
        return True
    t = page.stat().st_mtime
    return any(p.stat().st_mtime > t for p in (results_dir / "runs").glob("*/DONE"))


def write_index(results_dirs, out, refresh_pages: bool = True) -> Path:
    """An index page over several experiments: a link to each one's report (written or
    refreshed when missing or older than its results, unless `refresh_pages` is False:
    someone else is writing them) and every claim, evaluated over all of them (keyed by
    their preset). `out` is the page's path (or a folder for index.html)."""
    from vglab.results.store import load

    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        out = out / "index.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    dirs = [Path(d) for d in results_dirs]
    loaded, rows, pages = {}, [], {}
    for d in dirs:
        try:
            res = load(d)
        except Exception as e:  # a broken directory is listed, not fatal
            rows.append(f"<tr><td>{_esc(d.name)}</td><td colspan=4>cannot be read: {_esc(e)}</td></tr>")
            continue
        preset = claims_mod.preset_of(res) or d.name
        if refresh_pages and _stale(d):
            write_report(d)
        rel = os.path.relpath(d / "report.html", out.parent)
        pages.setdefault(preset, rel)
        loaded.setdefault(preset, res)
        s = tables.summary(res)
        best = s.loc[s["val_acc_mean"].idxmax()] if len(s) and s["val_acc_mean"].notna().any() else None
        rows.append(f'<tr><td><a href="{_esc(rel)}">{_esc(preset)}</a></td>'
                    f'<td>{_esc(res.spec.get("dataset", "") if isinstance(res.spec, dict) else "")}</td>'
                    f'<td class="num">{len(res.runs)}</td><td class="num">{len(s)}</td>'
                    f'<td>{_esc(best["label"]) + " — " + _num(best["val_acc_mean"]) if best is not None else "–"}</td></tr>')
    pairs = claims_mod.evaluate(loaded)
    counts = {v: sum(o.verdict == v for _, o in pairs) for v in claims_mod.VERDICTS}
    tally = " · ".join(f"{_verdict(v)} {n}" for v, n in counts.items() if n)
    body = ["<h1>vglab — reproducing Ven &amp; Lederer (2021)</h1>",
            f'<p class="sub">{len(loaded)} experiments · {len(pairs)} claims · {tally}</p>',
            '<h2 id="claims">Claims</h2>',
            _claims_table(pairs, link_preset=lambda p: (pages.get(p, "") + "#claims") if p in pages else ""),
            *_why_index_html(loaded, pages),
            '<h2 id="experiments">Experiments</h2>',
            "<table><thead><tr><th>experiment (preset)</th><th>dataset</th><th>runs</th><th>configurations</th>"
            "<th>best configuration — final val acc</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"]
    tmp = out.with_name("." + out.name + ".tmp")
    tmp.write_text(_page("vglab · reproduction index", "\n".join(body)), encoding="utf-8")
    os.replace(tmp, out)
    return out


# ------------------------------------------------------- the why presets (issue 16)
def _why_figures(res, preset: str, fig_dir: Path) -> list[dict]:
    """The figures of a why preset's page (`vglab.report.why_figures.PLAN`), in place of the
    generic ones: those draw a line per configuration, and these presets hold 50 to 300."""
    from vglab.report import why_figures

    out = []
    for name, fn, caption in why_figures.PLAN.get(preset, []):
        try:
            fig = fn(res)
        except F.NoData:
            continue
        except Exception as e:  # one figure that cannot be drawn must not cost the whole page
            warnings.warn(f"figure {name} could not be drawn: {type(e).__name__}: {e}", stacklevel=2)
            out.append({"name": name, "error": f"{type(e).__name__}: {e}", "caption": caption})
            continue
        png, svg = F.save(fig, fig_dir / name)
        fig.clf()
        out.append({"name": name, "png": png, "svg": svg, "caption": caption})
    return out


def _why_index_html(loaded: dict, pages: dict) -> list[str]:
    """The index's "Why" section: the why claims (`vglab.report.why`), apart from the
    reference study's; a line saying how to run them when none of their presets ran."""
    head = '<h2 id="why">Why the remedies work or fail</h2>'
    if not any(p in loaded for p in why_mod.PRESETS):
        return [head, "<p>Not run: <code>vglab reproduce --presets " + ",".join(why_mod.PRESETS) + "</code> checks "
                "the optimizer's part, the rescaling identity and trainability against mean-field theory.</p>"]
    pairs = why_mod.evaluate(loaded)
    counts = {v: sum(o.verdict == v for _, o in pairs) for v in claims_mod.VERDICTS}
    tally = " · ".join(f"{_verdict(v)} {n}" for v, n in counts.items() if n)
    return [head, f'<p class="sub">{len(pairs)} claims · {tally}</p>',
            _claims_table(pairs, link_preset=lambda p: (pages.get(p, "") + "#claims") if p in pages else "")]
