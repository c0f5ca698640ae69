"""`vglab doctor`: planted pathologies are found with their cause, healthy nets get no finding,
the JSON and the pages carry the diagnosis, and a remedy sweep says which remedy moved which
finding. A small subset of `benchmarks/doctor_cases.py` on digits (few epochs, a subset of the
training set), trained once per module."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from experiments_helpers import vglab_cache  # noqa: F401
from report_data import report_dirs  # noqa: F401  (session fixture)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import doctor_cases  # noqa: E402

from vglab.report import doctor, remedies  # noqa: E402
from vglab.results import load  # noqa: E402
from vglab.results.store import Results  # noqa: E402

CASES = ("tanh-20x8-small", "tanh-1x8-large", "sigmoid-20x8-glorot", "healthy-tanh-1x8", "watched-masked-layer")
KEYS = {"run_id", "label", "layer", "finding", "cause", "onset_epoch", "evidence", "remedies"}


@pytest.fixture(scope="module")
def planted(tmp_path_factory, vglab_cache):
    out = tmp_path_factory.mktemp("planted")
    by = {c.name: c for c in doctor_cases.CASES}
    return {n: Path(doctor_cases.run_case(by[n], out, "digits", epochs=2, seeds=2, train_size=500).path)
            for n in CASES}


def test_each_planted_case_is_found_with_its_cause_in_every_seed(planted):
    by = {c.name: c for c in doctor_cases.CASES}
    for name, path in planted.items():
        d = doctor.diagnose(load(path))
        scores = doctor_cases.score(by[name], d)
        assert len(scores) == 2 and all(s["ok"] for s in scores.values()), (name, scores, d.lines())
    d = doctor.diagnose(load(planted["healthy-tanh-1x8"]))
    assert not [f for f in d.findings if f.finding]


def test_vanishing_names_the_layers_onset_and_factors(planted):
    """20x8 tanh at N(0, std=0.05): the gradient is ≥ 3 decades below the output layer's from
    the first layer up (mean field: χ₁ = 0.02 per layer), from epoch 1 on, and the weight
    product, not φ′, is what is small."""
    d = doctor.diagnose(load(planted["tanh-20x8-small"]))
    for run in d.runs:
        van = [f for f in d.findings if f.run_id == run.run_id and f.finding == "vanishing"]
        idx = sorted(f.layer_index for f in van)
        assert idx[0] == 0 and idx == list(range(len(idx))) and 10 <= len(idx) <= 19, idx
        first = van[0]
        assert first.layer == "dense1" and first.onset_epoch == 1 and first.persists and first.cause == "weights"
        e = first.evidence
        assert e["level_decades"] < -10 and e["weight_log10"] < -8 and abs(e["deriv_log10"]) < 0.5
        assert e["param"] == "b" and e["factor_epoch"] == 0
    mf = d.runs[0].mean_field
    assert mf["chi_1"] == pytest.approx(0.02, rel=0.05) and mf["trainable_depth"] < 20
    assert mf["predicted_first_last"] < -10 and mf["measured_first_last"] < -10
    head = doctor.headline(d)
    assert head.startswith("tanh · N(0, std=0.05): vanishing: layers 1–") and "of 20" in head
    assert "cause: weight product (2/2 runs)" in head


def test_the_sigmoid_net_vanishes_by_its_derivatives_and_the_large_init_saturates(planted):
    d = doctor.diagnose(load(planted["sigmoid-20x8-glorot"]))
    f = next(f for f in d.findings if f.finding == "vanishing" and f.layer_index == 0)
    e = f.evidence  # the level is the φ′ product; the weights' spectral norms are above 1 (bound > 0)
    assert f.cause == "derivatives" and e["deriv_log10"] < -8 and abs(e["weight_log10"]) < 2
    assert e["weight_log10"] == pytest.approx(e["level_decades"] - e["deriv_log10"]) and e["weight_norm_bound_log10"] > 0
    d = doctor.diagnose(load(planted["tanh-1x8-large"]))
    sat = [f for f in d.findings if f.finding == "saturated"]
    assert {f.seed for f in sat} == {0, 1} and all(f.onset_epoch == 0 and f.persists for f in sat)
    assert all(f.evidence["saturated_frac"] > 0.8 for f in sat)
    assert not [f for f in d.findings if f.finding == "vanishing"]  # a 1-layer net: nothing to vanish through


def test_cli_json_parses_and_a_healthy_run_has_no_finding(planted):
    from vglab.cli import app

    res = CliRunner().invoke(app, ["doctor", str(planted["healthy-tanh-1x8"]), "--json"])
    assert res.exit_code == 0, res.output
    objs = json.loads(res.output)
    assert len(objs) == 2 and all(KEYS <= set(o) for o in objs) and all(o["finding"] is None for o in objs)
    res = CliRunner().invoke(app, ["doctor", str(planted["tanh-20x8-small"]), "--json"])
    objs = json.loads(res.output)
    van = [o for o in objs if o["finding"] == "vanishing" and o["layer"] == "dense1"]
    assert len(van) == 2 and all(o["cause"] == "weights" and o["onset_epoch"] == 1 for o in van)
    text = CliRunner().invoke(app, ["doctor", str(planted["tanh-20x8-small"])]).output
    assert "thresholds: vanishing / exploding" in text and "mean-field: tanh" in text
    assert "vanishing: layers 1–" in text


def test_a_watched_folder_the_masked_layer_is_frozen_by_the_optimizer(planted):
    """Trained by an own loop through vglab.watch + vglab.Recorder (records counted in steps): the layer
    masked out of Adam does not move while its gradient flows; --try prints changes, not a sweep."""
    from vglab.cli import app

    d = doctor.diagnose(load(planted["watched-masked-layer"]))
    assert [(f.layer, f.finding, f.cause) for f in d.findings] == [("dense2", "frozen", "optimizer")] * 2
    assert all(f.evidence["update_ratio"] == 0 and not f.evidence["vanishing"] for f in d.findings)
    assert d.runs[0].unit == "step" and d.findings[0].onset_epoch == d.runs[0].epochs[0] > 1
    res = CliRunner().invoke(app, ["doctor", str(planted["watched-masked-layer"]), "--try"])
    assert res.exit_code == 0, res.output
    assert "frozen: layer 2 of 4 (output counted)" in res.output and "from step" in res.output
    assert "was not trained by vglab (no experiment.toml)" in res.output
    assert not list(planted["watched-masked-layer"].parent.glob("*-remedies.toml"))


def test_cli_refuses_what_is_not_a_results_folder(tmp_path, planted):
    from vglab.cli import app

    res = CliRunner().invoke(app, ["doctor", str(tmp_path)])
    assert res.exit_code == 2 and "no results directory" in res.output and "vglab run" in res.output
    res = CliRunner().invoke(app, ["doctor", str(planted["tanh-1x8-large"]), "--run"])
    assert res.exit_code == 2 and "--try --run" in res.output


def test_try_run_names_the_remedy_that_moved_the_finding(planted, tmp_path):
    """The 1x8 tanh net at N(0, std=10): a Glorot init removes the saturation in every seed;
    the sweep's report opens with its diagnosis and the effects."""
    import shutil

    from vglab.cli import app

    folder = tmp_path / "tanh-1x8-large"
    shutil.copytree(planted["tanh-1x8-large"], folder)
    res = CliRunner().invoke(app, ["doctor", str(folder), "--try", "--run", "--seeds", "2", "--epochs", "2",
                                   "--workers", "1", "-q"])
    assert res.exit_code == 0, res.output
    spec = (tmp_path / "tanh-1x8-large-remedies.toml").read_text()
    assert 'init = "glorot_uniform"' in spec and "r = 0.1" in spec and "alpha = 2.0" in spec
    sweep = load(tmp_path / "tanh-1x8-large-remedies")
    eff = remedies.effects(sweep)
    glorot = next(e for e in eff if e.remedy == "init Glorot uniform" and e.finding == "saturated")
    assert glorot.verdict == "removed it" and glorot.found_baseline == "2/2" and glorot.found_remedy == "0/2"
    assert glorot.diff < -0.5 and glorot.high < 0 and glorot.seeds == 2
    assert {e.remedy for e in eff} >= {"L2 r=0.001", "L2 r=0.01", "L2 r=0.1", "α=2", "init N(0, std=1)"}
    assert "init Glorot uniform removed it (saturated)" in res.output
    page = (tmp_path / "tanh-1x8-large-remedies" / "report.html").read_text()
    assert page.index('id="diagnosis"') < page.index('id="claims"') and "Remedy sweep" in page
    # the folder's own findings now list the measured remedy from its sweep, first
    d = remedies.diagnose(load(folder))
    sat = next(f for f in d.findings if f.finding == "saturated")
    assert sat.remedies[0]["moved"] and str(tmp_path / "tanh-1x8-large-remedies") == sat.remedies[0]["source"]


def _results(grads: list[dict], acts: list[dict], activation="tanh") -> Results:
    runs = pd.DataFrame([{"run_id": "r", "label": "own", "seed": 0, "activation": activation, "network": "model"}])
    return Results(None, {}, {}, runs, pd.DataFrame(), pd.DataFrame(grads), pd.DataFrame(acts))


def _grad(layer_index, level, update_ratio=1e-3, param="b", zero=0.0, epoch=1):
    return {"run_id": "r", "epoch": epoch, "layer": f"l{layer_index}", "layer_index": layer_index, "param": param,
            "grad_abs_mean": 10.0 ** level, "update_ratio": update_ratio, "zero_frac": zero}


def test_frozen_while_the_gradient_flows_is_the_optimizers_and_thresholds_are_edges():
    """A layer whose update is zero while its gradient is ordinary (a masked layer) is frozen with
    cause optimizer; a level exactly at the threshold counts, one just above does not."""
    v = doctor.VANISH_DECADES
    g = [_grad(0, -v, update_ratio=0.0), _grad(1, -v + 1e-6), _grad(2, 0.0)]
    g += [{**x, "param": "w"} for x in g]
    d = doctor.diagnose(_results(g, []))
    kinds = {(f.layer_index, f.finding): f.cause for f in d.findings}
    assert kinds == {(0, "vanishing"): None, (0, "frozen"): None}  # no layer factors: cause not determined
    g = [_grad(0, -0.5, update_ratio=0.0), _grad(1, 0.0)]
    g += [{**x, "param": "w"} for x in g]
    d = doctor.diagnose(_results(g, []))
    assert [(f.layer_index, f.finding, f.cause) for f in d.findings] == [(0, "frozen", "optimizer")]
    assert "saturated" in d.missing and "not looked for" in "\n".join(d.lines())


def test_cause_rule_and_a_model_without_derivatives():
    """The level splits into the φ′ product (measured) and the weights' share (the rest)."""
    assert doctor._cause(-11.0, -0.1, -9.0, True) == ("weights", pytest.approx(-8.9))
    assert doctor._cause(+4.0, -12.0, -12.5, True) == ("derivatives", pytest.approx(-0.5))
    assert doctor._cause(+1.0, -4.0, -9.0, True) == ("both", pytest.approx(-5.0))
    assert doctor._cause(+11.0, -3.0, 2.0, False) == ("weights", pytest.approx(5.0))
    assert doctor._cause(-6.0, None, -10.0, True) == ("weights", None)  # the bound alone makes half the level
    assert doctor._cause(-2.0, None, -10.0, True) == (None, None)
    assert doctor._cause(-2.0, math.nan, -10.0, True) == (None, None)
    assert doctor._cause(None, None, -10.0, True) == (None, None)


def test_dead_units_in_a_relu_layer_and_json_of_infinities():
    g = [_grad(0, -math.inf, zero=1.0), _grad(1, 0.0)]
    g += [{**x, "param": "w"} for x in g]
    d = doctor.diagnose(_results(g, [], activation="relu"))
    assert [(f.finding, f.cause) for f in d.findings] == [("dead", "derivatives")]  # not also "vanishing"
    json.dumps(d.to_json())


def test_report_and_index_open_with_the_diagnosis_and_the_forest(report_dirs, tmp_path):
    import shutil

    from vglab.report.html import write_index, write_report

    dirs = []
    for p in ("large-params", "many-layers"):
        shutil.copytree(report_dirs[p], tmp_path / p)
        dirs.append(tmp_path / p)
    page = write_report(dirs[1]).read_text()
    assert page.index('id="diagnosis"') < page.index('id="claims"') < page.index('id="runs"')
    assert "Rules: vanishing / exploding" in page
    index = write_index(dirs, tmp_path / "index.html").read_text()
    assert index.index('src="figures/forest.png"') < index.index('id="claims"')
    assert (tmp_path / "figures" / "forest.png").stat().st_size > 1000


def test_forest_arms_are_mean_and_t_interval_over_seeds(report_dirs):
    from vglab.report import forest, tables

    res = load(report_dirs["large-params"])
    f = tables.final(res)
    for label, mean, lo, hi, n in forest.arms(res):
        v = f.loc[f["label"] == label, "val_acc"].to_numpy(float)
        assert n == len(v) == 2 and mean == pytest.approx(v.mean())
        half = 12.7062047362 * v.std(ddof=1) / math.sqrt(2)  # t_{0.975, 1}
        assert lo == pytest.approx(mean - half, rel=1e-7) and hi == pytest.approx(mean + half, rel=1e-7)
    assert np.isfinite(lo)


def test_run_ends_with_the_verdict_counts_and_the_diagnosis_headline(tmp_path, vglab_cache):
    from experiments_helpers import write_spec

    from vglab.cli import app

    spec, out = write_spec(tmp_path, probes='"moments"'), tmp_path / "out"
    r = CliRunner().invoke(app, ["run", str(spec), "--out", str(out), "--workers", "1", "--epochs", "1", "--seeds",
                                 "1"])
    assert r.exit_code == 0, r.output
    tail = r.output.strip().splitlines()
    assert tail[-1] == str(out) and tail[-2].startswith("4 runs complete; report: vglab report")
    assert tail[-4] == "claims: none of the reference study's claims is checked on these experiments"
    assert tail[-3].startswith("diagnosis: tanh · N(0, std=10): saturated: layer 1 of 1")
