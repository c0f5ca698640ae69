"""Results for analysis: the runs table as Parquet, histograms as a long table, several
results folders loaded at once."""

import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from experiments_helpers import vglab_cache, write_spec  # noqa: F401
from report_data import report_dirs  # noqa: F401  (session fixture)

import vglab
from vglab.results import store


def test_runs_parquet_is_the_runs_table(tmp_path, vglab_cache):
    spec = write_spec(tmp_path)
    res = vglab.run(spec, out=tmp_path / "out", workers=1, progress=False, seeds=1)
    table = pq.read_table(tmp_path / "out" / "runs.parquet").to_pandas()
    assert sorted(table["run_id"]) == sorted(res.runs["run_id"]) and len(table) == 4
    pd.testing.assert_frame_equal(table.sort_values("run_id", ignore_index=True)[list(res.runs.columns)],
                                  res.runs.sort_values("run_id", ignore_index=True), check_dtype=False)
    assert not list((tmp_path / "out").glob(".*tmp"))


def test_histogram_table_is_labelled_and_holds_the_counts(report_dirs):
    res = store.load(report_dirs["many-layers"])
    rid = res.runs["run_id"].iloc[0]
    counts, edges = res.histogram(rid)
    t = res.histogram_table(rid)
    assert list(t.columns) == ["run_id", "epoch", "layer", "layer_index", "param", "bin", "bin_lo", "bin_hi", "count"]
    assert len(t) == counts.size
    epochs = sorted(res.grads.loc[res.grads["run_id"] == rid, "epoch"].unique())
    assert sorted(t["epoch"].unique()) == epochs == res.histogram_epochs(rid)
    layers = res.grads[res.grads["run_id"] == rid].drop_duplicates("layer").sort_values("layer_index")["layer"]
    for e_i, e in enumerate(epochs):
        for l_i, layer in enumerate(layers):
            for p_i, p in enumerate(("w", "b")):
                sel = t[(t["epoch"] == e) & (t["layer"] == layer) & (t["param"] == p)].sort_values("bin")
                np.testing.assert_array_equal(sel["count"].to_numpy(), counts[e_i, l_i, p_i])
    zero = t[t["bin"] == 0]
    assert np.isneginf(zero["bin_lo"]).all() and np.isneginf(zero["bin_hi"]).all()
    rest = t[(t["bin"] > 0) & (t["epoch"] == epochs[0]) & (t["layer"] == layers.iloc[0]) & (t["param"] == "w")]
    np.testing.assert_array_equal(rest["bin_lo"], edges[:-1])
    np.testing.assert_array_equal(rest["bin_hi"], edges[1:])
    # every weight entry of every step is counted once: the counts add up the same in every epoch
    per_epoch = t[(t["layer"] == layers.iloc[0]) & (t["param"] == "w")].groupby("epoch")["count"].sum()
    assert per_epoch.nunique() == 1 and per_epoch.iloc[0] > 0
    nonempty = res.histogram_table(rid, drop_empty=True)
    assert (nonempty["count"] > 0).all() and nonempty["count"].sum() == t["count"].sum()


def test_two_results_folders_load_as_one(report_dirs, tmp_path):
    a, b = report_dirs["large-params"], report_dirs["regularization"]
    one, two = store.load(a), store.load(b)
    both = vglab.load_results(a, b)
    assert both.path is None and set(both.folders) == {"large-params", "regularization"}
    assert both.runs["experiment"].tolist() == ["large-params"] * len(one.runs) + ["regularization"] * len(two.runs)
    for name in ("epochs", "grads", "activations"):
        t = getattr(both, name)
        assert len(t) == len(getattr(one, name)) + len(getattr(two, name))
        assert set(t["experiment"]) == {"large-params", "regularization"}
    merged = both.table("epochs")  # joined on (experiment, run_id)
    assert len(merged) == len(both.epochs) and merged["label"].notna().all()
    final = merged[merged["epoch"] == merged["epoch"].max()].groupby(["experiment", "label"])["val_acc"].mean()
    for exp, res in (("large-params", one), ("regularization", two)):
        t = res.table("epochs")
        want = t[t["epoch"] == t["epoch"].max()].groupby("label")["val_acc"].mean()
        np.testing.assert_allclose(final.loc[exp].sort_index().to_numpy(), want.sort_index().to_numpy())
    rid = two.runs["run_id"].iloc[0]
    np.testing.assert_array_equal(both.histogram(rid, "regularization")[0], two.histogram(rid)[0])
    assert set(both.histogram_table(rid, experiment="regularization")["experiment"]) == {"regularization"}
    # a list works too; the same folder twice is refused
    assert len(vglab.load_results([a, b]).runs) == len(both.runs)
    with pytest.raises(store.StoreError, match="given twice"):
        vglab.load_results(a, a)


def test_folders_of_the_same_experiment_get_distinct_keys(report_dirs, tmp_path):
    """digits/large-params next to mnist/large-params: keyed by the end of their paths, and a
    run id present in both is looked up by experiment."""
    for ds in ("digits", "mnist"):
        shutil.copytree(report_dirs["large-params"], tmp_path / ds / "large-params")
    both = vglab.load_results(tmp_path / "digits" / "large-params", tmp_path / "mnist" / "large-params")
    assert set(both.runs["experiment"]) == {"digits/large-params", "mnist/large-params"}
    rid = both.runs["run_id"].iloc[0]
    with pytest.raises(store.StoreError, match="pass experiment="):
        both.final_grads(rid)
    assert both.final_grads(rid, "mnist/large-params").keys() == store.load(report_dirs["large-params"]).final_grads(rid).keys()
    assert len(both.table("grads")) == len(both.grads)
