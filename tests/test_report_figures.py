"""Figures (vglab.report.figures): every instrument draws from real engine results, saves
PNG (and SVG on request), and shows what the tables hold."""

import numpy as np
import pytest
from matplotlib.figure import Figure
from report_data import report_dirs  # noqa: F401  (session fixture)

from vglab.report import figures as F
from vglab.results.store import load

CASES = [  # (instrument name in F.INSTRUMENTS, preset)
    ("learning_curves", "regularization"),
    ("gradient_stats_first_last", "regularization"),
    ("gradient_stats_all", "many-layers"),
    ("gradient_distributions", "large-params"),
    ("gradient_flow", "many-layers"),
    ("sweep_r", "r-sweep"),
    ("sweep_alpha", "rescaling-by-init"),
    ("theory_overlay", "many-layers"),
    ("regime_diagnosis", "many-layers"),
]


@pytest.fixture(scope="module")
def loaded(report_dirs):
    return {p: load(d) for p, d in report_dirs.items()}


@pytest.mark.parametrize("name,preset", CASES)
def test_every_figure_renders_and_saves(loaded, tmp_path, name, preset):
    fig = F.instrument(name).figure(loaded[preset])
    assert isinstance(fig, Figure) and fig.axes
    (png,) = F.save(fig, tmp_path / name)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert not (tmp_path / f"{name}.svg").exists()  # PNG only unless asked
    for ax in fig.axes:  # every visible panel has labelled axes (colorbars aside)
        if ax.get_visible() and ax.get_label() != "<colorbar>":
            assert ax.get_xlabel() or ax.get_ylabel(), (name, ax.get_title())
    (svg,) = F.save(fig, tmp_path / "vector", formats=("svg",))  # (PNG and SVG together: test_report_html)
    assert "<svg" in svg.read_text()[:2000] and not (tmp_path / "vector.png").exists()


def test_every_instrument_declares_what_it_needs(loaded):
    names = [i.name for i in F.INSTRUMENTS]
    assert len(set(names)) == len(names)
    for inst in F.INSTRUMENTS:
        assert inst.caption and callable(inst.draw) and callable(inst.needs)
    # large-params (one 4x8 MLP, no sweep): no sweep figures; many-layers: the theory overlay
    lp = {i.name for i in F.INSTRUMENTS if i.needs(loaded["large-params"]) is not None}
    assert {"learning_curves", "regime_diagnosis"} <= lp and not {"sweep_r", "sweep_alpha"} & lp
    assert F.instrument("theory_overlay").needs(loaded["many-layers"]) is not None
    with pytest.raises(F.NoData):
        F.instrument("sweep_r").figure(loaded["large-params"])


def test_save_lays_out_like_savefig_and_only_once(loaded, tmp_path):
    """`save` runs the constrained layout itself, once: its PNG is the one matplotlib's
    own savefig writes (which lays out in an extra draw), and the layout is then fixed."""
    fig = F.learning_curves(loaded["regularization"])
    (png,) = F.save(fig, tmp_path / "ours")
    assert fig.get_layout_engine() is None
    reference = F.learning_curves(loaded["regularization"])
    with F.matplotlib.rc_context(F.RC):
        reference.savefig(tmp_path / "matplotlib.png", dpi=F.DPI)
    assert png.read_bytes() == (tmp_path / "matplotlib.png").read_bytes()


def test_save_never_leaves_a_partial_file(loaded, tmp_path, monkeypatch):
    """A draw that dies half-way keeps the previous file and leaves no temporary one."""
    fig = F.learning_curves(loaded["regularization"])
    (png,) = F.save(fig, tmp_path / "fig")
    before = png.read_bytes()

    def dies(self, fname, **kw):
        with open(fname, "wb") as f:
            f.write(b"\x89PNG partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", dies)
    with pytest.raises(KeyboardInterrupt):
        F.save(fig, tmp_path / "fig")  # the same figure again (a new one costs ~1 CPU-s; what dies is the save)
    assert png.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]


def test_final_gradient_distributions(loaded, tmp_path):
    """The figure shows, per configuration, the histogram of log10|dJ/dW| of the pooled
    final gradients of its runs (first and last layer), as fractions of all entries."""
    res = loaded["many-layers"]
    fig = F.gradient_distributions(res, source="final")
    labels = F._labels(res, None)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == len(labels)
    for ax, lab in zip(panels, labels):
        ids = res.runs.loc[res.runs["label"] == lab, "run_id"]
        grads = [res.final_grads(rid) for rid in ids]
        first = np.concatenate([np.ravel(g[list(g)[0]]) for g in grads])
        last = np.concatenate([np.ravel(g[list(g)[-1]]) for g in grads])
        stairs = [p for p in ax.patches if hasattr(p, "get_data")]
        assert [s.get_label() for s in stairs] == ["first layer", "last (output) layer"]
        for s, values in zip(stairs, (first, last)):
            heights, edges = s.get_data().values, s.get_data().edges
            a = np.abs(values)
            want, _ = np.histogram(np.clip(np.log10(a[a > 0]), edges[0], edges[-1] - 1e-9), bins=edges)
            np.testing.assert_allclose(heights, want / a.size, rtol=1e-12)
            # the x range covers every non-zero gradient (no floor as in the stored histograms)
            assert edges[0] <= np.log10(a[a > 0].min()) and edges[-1] >= np.log10(a.max())
        text = ax.texts[0].get_text()
        assert f"first: mean {first.mean():.2e}, std {first.std():.2e}" in text
        assert f"last: mean {last.mean():.2e}, std {last.std():.2e}" in text
    F.save(fig, tmp_path / "dist_final")


def test_figures_without_the_data_say_so(loaded):
    with pytest.raises(F.NoData):
        F.sweep(loaded["large-params"], "r")
    with pytest.raises(F.NoData):
        F.sweep(loaded["large-params"], "alpha")
    with pytest.raises(F.NoData):
        F.learning_curves(loaded["large-params"], labels=["no such label"])


def test_heatmap_shows_log10_mean_abs_gradient(loaded):
    res = loaded["many-layers"]
    label = sorted(res.runs["label"])[0]
    fig = F.gradient_flow(res, labels=[label])
    img = fig.axes[0].images[0].get_array()
    g = res.grads[(res.grads["param"] == "w") & res.grads["run_id"].isin(res.runs.loc[res.runs["label"] == label, "run_id"])]
    want = g.assign(v=np.log10(g["grad_abs_mean"])).groupby(["layer_index", "epoch"])["v"].mean().unstack()
    np.testing.assert_allclose(np.ma.filled(img, np.nan), want.to_numpy(), rtol=1e-6)


def test_learning_curves_plot_the_seed_mean(loaded):
    res = loaded["large-params"]
    label = sorted(res.runs["label"])[0]
    fig = F.learning_curves(res, labels=[label])
    ax = fig.axes[1]  # validation accuracy
    line = ax.get_lines()[0]
    ids = res.runs.loc[res.runs["label"] == label, "run_id"]
    e = res.epochs[res.epochs["run_id"].isin(ids)]
    np.testing.assert_allclose(line.get_ydata(), e.groupby("epoch")["val_acc"].mean().to_numpy(), rtol=1e-6)


def test_short_labels_drop_the_shared_parts():
    short, shared = F.short_labels(["tanh · mlp 20x8 · N(0, std=0.05)", "tanh α=2 · mlp 20x8 · N(0, std=0.05)"])
    assert shared == "mlp 20x8 · N(0, std=0.05)"
    assert list(short.values()) == ["tanh", "tanh α=2"]


def _boxes(fig, artists):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    return [a.get_window_extent(renderer) for a in artists]


def test_every_layer_figure_titles_do_not_overlap(loaded, tmp_path):
    res = loaded["many-layers"]
    fig = F.gradient_stats(res, layers="all")
    F.save(fig, tmp_path / "all")
    titles = [t for ax in fig.axes for t in (ax.title, ax._left_title, ax._right_title) if t.get_text()]
    titles += [sf._suptitle for sf in fig.subfigs if sf._suptitle is not None]
    assert len(titles) >= 3 * len(F._labels(res, None))  # a configuration title and two panel titles per row
    boxes = _boxes(fig, titles)
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (titles[i].get_text(), titles[j].get_text())
    for sf, lab in zip(fig.subfigs, F.short_labels(F._labels(res, None))[0].values()):
        assert sf._suptitle.get_text() == lab


def test_theory_overlay_keeps_its_legend_and_note_off_the_points(loaded, tmp_path):
    res = loaded["many-layers"]
    for labels in (None, [c.label for c in F.theory.compare(res)][:1]):  # several panels, and one narrow panel
        fig = F.theory_overlay(res, labels=labels)
        F.save(fig, tmp_path / "theory")
        assert all(ax.get_legend() is None for ax in fig.axes)  # no legend inside a panel
        assert len(fig.legends) == 1 and "slope" in fig.legends[0].get_title().get_text()  # the note: its title
        fig_box = fig.bbox
        panels = [ax for ax in fig.axes if ax.get_visible()]
        legend, *axes_boxes = _boxes(fig, [fig.legends[0], *panels])
        assert legend.x0 >= fig_box.x0 - 1 and legend.x1 <= fig_box.x1 + 1 and legend.y0 >= fig_box.y0 - 1
        assert not any(legend.overlaps(b) for b in axes_boxes)  # below the panels, not over the points
        for ax in fig.axes:
            if ax.get_visible():
                assert "slope: χ" in ax.get_title(loc="left")


def test_regime_diagnosis_spans_the_layers_for_one_hidden_layer(loaded):
    """One hidden layer: one point in the derivative and saturation panels, on an axis
    that spans the network's layers (autoscaling gave 0.96-1.04)."""
    res = loaded["many-layers"]
    shallow = [lab for lab in F._labels(res, None) if "1x8" in lab]
    fig = F.regime_diagnosis(res, labels=shallow)
    for ax in fig.axes[:3]:
        assert ax.get_xlim() == (0.5, 2.5) and list(ax.get_xticks()) == [1, 2]


def test_learning_curves_by_penalty_draw_one_line_per_r(loaded, tmp_path):
    res = loaded["r-sweep"]
    fig = F.learning_curves_by_penalty(res)
    F.save(fig, tmp_path / "curves")
    r = F.tables.runs(res)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    pens = sorted(set(r["penalty"]) - {"none"})
    assert len(panels) == 2 * len(pens)
    for i, pen in enumerate(pens):
        n_r = r.loc[r["penalty"] == pen, "r"].nunique()
        for ax in panels[2 * i: 2 * i + 2]:
            dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
            solid = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]
            assert len(dashed) == 1 and len(solid) == n_r, (pen, ax.get_title(loc="left"))
            assert ax.get_title(loc="left").startswith(pen.upper())
