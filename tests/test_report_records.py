"""The report with runs that record every k epochs (record_every): what read "epoch 1"
reads the first recorded epoch after initialization, and says which epochs it pools."""

import re

import numpy as np
import pandas as pd
import pytest
from report_data import copy_of, report_dirs  # noqa: F401  (session fixture)

from vglab.report import claims, tables, theory
from vglab.report import figures as F
from vglab.results.store import load, run_dir


def _thin(out, keep=(0, 2, 3)):
    """Rewrite a fixture copy as if recorded at epochs `keep` only (histogram rows follow)."""
    res = load(out)
    for rid in res.runs["run_id"]:
        d = run_dir(out, rid)
        for name in ("epochs", "grads", "activations"):
            t = pd.read_parquet(d / f"{name}.parquet")
            t[t["epoch"].isin(keep)].to_parquet(d / f"{name}.parquet", index=False)
        with np.load(d / "histograms.npz") as z:
            counts = z["counts"]
        rows = [e - 1 for e in keep if e > 0]  # the fixture's rows are epochs 1, 2, 3
        with open(d / "histograms.npz", "wb") as f:
            np.savez_compressed(f, counts=counts[rows])
    return load(out)


@pytest.fixture(scope="module")
def thinned(report_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("thin")
    return {p: _thin(copy_of(p, root)) for p in ("many-layers", "rescaling-by-init")}


def test_the_first_recorded_epoch_stands_for_epoch_1(thinned, report_dirs):
    res = thinned["many-layers"]
    assert tables.first_recorded_epoch(res) == 2 and tables.epoch_span(2) == "epochs 1–2"
    assert tables.first_recorded_epoch(load(report_dirs["many-layers"])) == 1
    comp = theory.compare(res)
    assert comp and all(c.epoch == 2 and c.measured_ok for c in comp)
    g = res.grads[(res.grads["param"] == "w") & (res.grads["epoch"] == 2)]
    c = comp[0]
    rid = res.runs.loc[res.runs["label"] == c.label, "run_id"].iloc[0]
    v = 2 * np.log10(g[g["run_id"] == rid].sort_values("layer_index")["grad_norm_mean"].to_numpy()[:c.depth])
    np.testing.assert_allclose(c.measured[0], v - v[-1], rtol=1e-9)
    o = claims.by_id("why-vanish").evaluate({"many-layers": res})
    assert o.verdict != "not run" and "measured (epochs 1–2)" in o.measured and not re.search(r"\bnan\b", o.measured)


def test_histograms_and_figures_follow_the_records(thinned, tmp_path):
    res = thinned["many-layers"]
    rid = res.runs["run_id"].iloc[0]
    assert res.histogram_epochs(rid) == [2, 3] and len(res.histogram(rid)[0]) == 2
    assert set(res.histogram_table(rid)["epoch"]) == {2, 3}
    fig = F.instrument("theory_overlay").figure(res)
    assert "epochs 1–2" in fig.legends[0].texts[2].get_text()
    assert "record every 2 epochs" in fig.legends[0].get_title().get_text()
    dist = F.gradient_distributions(res)
    assert "every step of epoch 3, seeds pooled" in dist._suptitle.get_text()
    flow = F.gradient_flow(res)
    img = flow.axes[0].images[0]
    assert img.get_extent()[:2] == [1.5, 3.5]  # cells centred on the recorded epochs 2 and 3
    for f, name in ((fig, "theory"), (dist, "dist"), (flow, "flow")):
        F.save(f, tmp_path / name)


def test_the_alpha_sweep_reads_the_first_record(thinned):
    res = thinned["rescaling-by-init"]
    fig = F.instrument("sweep_alpha").figure(res)
    assert "epochs 1–2" in fig.axes[1].get_title()
    o = claims.by_id("rescaling-by-init").evaluate({"rescaling-by-init": res})
    assert o.verdict == "answered" and "log10‖∂J/∂W‖ epochs 1–2" in o.measured
