"""Figures (vglab.report.figures): every instrument draws from real engine results, saves
PNG and SVG, and shows what the tables hold."""

import numpy as np
import pytest
from matplotlib.figure import Figure
from report_data import report_dirs  # noqa: F401  (session fixture)

from vglab.report import figures as F
from vglab.results.store import load

CASES = [  # (figure name in F.FIGURES, preset)
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
    fn, kw = F.FIGURES[name]
    fig = fn(loaded[preset], **kw)
    assert isinstance(fig, Figure) and fig.axes
    png, svg = F.save(fig, tmp_path / name)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "<svg" in svg.read_text()[:2000]
    for ax in fig.axes:  # every visible panel has labelled axes (colorbars aside)
        if ax.get_visible() and ax.get_label() != "<colorbar>":
            assert ax.get_xlabel() or ax.get_ylabel(), (name, ax.get_title())


def test_save_lays_out_like_savefig_and_only_once(loaded, tmp_path):
    """`save` runs the constrained layout itself, once: its PNG is the one matplotlib's
    own savefig writes (which lays out in an extra draw), and the layout is then fixed."""
    fig = F.learning_curves(loaded["regularization"])
    png, _ = F.save(fig, tmp_path / "ours")
    assert fig.get_layout_engine() is None
    reference = F.learning_curves(loaded["regularization"])
    with F.matplotlib.rc_context(F.RC):
        reference.savefig(tmp_path / "matplotlib.png", dpi=110)
    assert png.read_bytes() == (tmp_path / "matplotlib.png").read_bytes()


def test_final_gradient_distributions(loaded, tmp_path):
    fig = F.gradient_distributions(loaded["many-layers"], source="final")
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
