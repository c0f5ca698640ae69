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

import vglab  # noqa: E402
from vglab.report import doctor, remedies  # noqa: E402
from vglab.results import load  # noqa: E402
from vglab.results.store import Results  # noqa: E402

# the issue's --json keys, exactly (seed, layer index, persists are in evidence)
KEYS = {"run_id", "label", "layer", "finding", "cause", "onset_epoch", "evidence", "remedies"}
CASES = ("tanh-20x8-small", "tanh-1x8-large", "sigmoid-20x8-glorot", "healthy-tanh-1x8", "watched-masked-layer")


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
    assert len(objs) == 2 and all(set(o) == KEYS for o in objs) and all(o["finding"] is None for o in objs)
    assert {o["evidence"]["seed"] for o in objs} == {0, 1}
    res = CliRunner().invoke(app, ["doctor", str(planted["tanh-20x8-small"]), "--json"])
    objs = json.loads(res.output)
    van = [o for o in objs if o["finding"] == "vanishing" and o["layer"] == "dense1"]
    assert len(van) == 2 and all(o["cause"] == "weights" and o["onset_epoch"] == 1 for o in van)
    assert all(set(o) == KEYS and o["evidence"]["layer_index"] == 0 and o["evidence"]["persists"]
               for o in van)
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
    text = " ".join(res.output.split())
    assert "was not trained by vglab (no experiment.toml)" in text and "untested on this model" in text
    # the shipped evidence: measured in the benchmark's own loop with the layer given back to Adam
    assert "the frozen layer back in the optimizer removed it (frozen)" in text and "95 % interval" in text
    assert not list(planted["watched-masked-layer"].parent.glob("*-remedies.toml"))
    page = Path(vglab.report(planted["watched-masked-layer"])).read_text()
    assert page.index("<h2") == page.index('<h2 id="diagnosis"') and "dense2" in page


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


def test_an_own_model_folder_gets_its_findings_and_remedies_untested_on_it(tmp_path, vglab_cache):
    """A function-pair model (tests/own_models.py, not vglab's MLP) at N(0, std=10): saturated by its
    derivatives in both seeds; its remedies were measured on the closest planted case and say so."""
    from own_models import write_models

    from vglab.cli import app

    factories = write_models(tmp_path / "mine")
    spec = {"name": "own", "dataset": "digits", "train_size": 500, "epochs": 1, "seeds": 2,
            "model": f"{factories}:tanh_fixed", "init": "normal(std=10)"}
    path = vglab.run(spec, out=tmp_path / "own", workers=1, progress=False).path
    res = CliRunner().invoke(app, ["doctor", str(path), "--json"])
    assert res.exit_code == 0, res.output
    objs = json.loads(res.output)
    sat = [o for o in objs if o["finding"] == "saturated"]
    assert all(set(o) == KEYS for o in objs) and {o["evidence"]["seed"] for o in sat} == {0, 1}
    assert all(o["cause"] == "derivatives" and o["evidence"]["saturated_frac"] > 0.5 for o in sat)
    for o in sat:
        moved = [r for r in o["remedies"] if r["moved"]]
        assert moved and not any(r["tested_on_this_model"] for r in o["remedies"])
        e = moved[0]["effect"]
        assert e["seeds"] >= 3 and e["low"] <= e["diff"] <= e["high"] < 0
        assert "case tanh-1x8-large" in moved[0]["source"]  # the closest: a 1-layer tanh net
    text = " ".join(CliRunner().invoke(app, ["doctor", str(path)]).output.split())
    assert "saturated: layers 1–2 of 2: saturated (φ′ < 0.01) from epoch 0" in text
    assert "remedy (untested on this model; measured on the closest case): init" in text
    res = CliRunner().invoke(app, ["doctor", str(path), "--try"])  # the sweep on this model: written, loadable
    assert res.exit_code == 0, res.output
    from vglab.experiments.spec import load_spec

    runs = load_spec(tmp_path / "own-remedies.toml").expand()
    assert {r.model for r in runs} == {f"{factories}:tanh_fixed"} and len(runs) == 3 * 9  # 3 seeds by default
    inits = {"normal(std=10)", "normal(std=1)", "glorot_uniform", "orthogonal(sigma_w2=1)"}  # σ_w² = 1: tanh's critical
    assert {r.weight_init for r in runs} == inits


def test_every_finding_of_the_planted_cases_has_measured_remedies(planted):
    """The shipped evidence covers every (finding, cause) the planted cases produce, measured in one run of
    `doctor_cases.py --evidence` over all cases: exploding, an Equinox model's, a watched run's included."""
    ev = remedies.load_evidence()
    made_by = json.loads(remedies.EVIDENCE_FILE.read_text())["made_by"]
    assert "--evidence" in made_by and "--cases" not in made_by  # all the planted cases, one invocation
    moved = {(e.finding, e.cause) for e in ev if e.moved}
    assert moved >= {("vanishing", "weights"), ("saturated", "derivatives"), ("dead", "derivatives"),
                     ("exploding", "weights"), ("frozen", "optimizer"), ("frozen", "weights")}
    assert {e.network for e in ev} >= {"mlp", "model", "watched"}
    assert all(e.dataset == "digits" and "benchmarks/doctor_cases.py case" in e.source for e in ev)
    assert all(e.seeds >= 3 for e in ev if e.verdict != remedies.DIVERGED)  # a diverged arm has no pairs
    assert all(e.text() for e in ev)  # nulls (NaN) read back
    for name, path in planted.items():
        d = remedies.diagnose(load(path))
        for f in d.findings:
            assert f.remedies and all(r["effect"]["seeds"] >= 3 for r in f.remedies), (name, f.finding, f.cause)


def _results(grads: list[dict], acts: list[dict], activation="tanh") -> Results:
    """One run of an own model; `activation` None: its runs store none (an own loop's)."""
    row = {"run_id": "r", "label": "own", "seed": 0, "activation": activation, "network": "model"}
    runs = pd.DataFrame([{k: v for k, v in row.items() if v is not None}])
    return Results(None, {}, {}, runs, pd.DataFrame(), pd.DataFrame(grads), pd.DataFrame(acts))


def test_an_activation_not_stored_is_not_guessed():
    """Runs that store no activation (an own loop's) are of an unknown model: the report's runs
    view leaves it None (it used to say tanh, the built-in default), and so does the diagnosis."""
    from vglab.report import tables

    g = [_grad(0, -6.0), _grad(1, 0.0)]
    g += [{**x, "param": "w"} for x in g]
    assert doctor.diagnose(_results(g, [], activation="relu")).runs[0].model["activation"] == "relu"
    res = _results(g, [], activation=None)
    assert "activation" not in res.runs and tables.runs(res)["activation"].isna().all()
    assert doctor.diagnose(res).runs[0].model["activation"] is None


def _grad(layer_index, level, update_ratio=1e-3, param="b", zero=0.0, epoch=1):
    return {"run_id": "r", "epoch": epoch, "layer": f"l{layer_index}", "layer_index": layer_index, "param": param,
            "grad_abs_mean": 10.0 ** level, "update_ratio": update_ratio, "zero_frac": zero}


def test_the_pivot_is_pandas_pivot_table():
    """`doctor._pivot` places a run's records with NumPy: the frame pandas' pivot_table (mean per
    epoch and layer) gives, with missing values, keys, epochs and layers, unordered rows and
    repeated records (means) alike."""
    df = pd.DataFrame({"epoch": [0, 0, 1, 1, 2, 2, 3], "layer_index": [0, 1, 0, 1, 0, 1, 2],
                       "x": [1.5, np.nan, np.nan, np.nan, np.inf, -3.0, np.nan], "n": [1, 2, 3, 4, 5, 6, 7]})
    cases = [(df, "x"), (df.iloc[::-1], "x"), (df, "n"), (pd.concat([df, df.assign(x=df.x + 1)]), "x"),
             (df.assign(epoch=[0, 0, np.nan, 1, 2, 2, 3]), "x"), (df.astype({"x": np.float32}), "x")]
    for frame, value in cases:
        want = frame.pivot_table(index="epoch", columns="layer_index", values=value, aggfunc="mean")
        pd.testing.assert_frame_equal(doctor._pivot(frame, value), want, check_exact=True)
    assert doctor._pivot(df, "x").shape == (2, 2)  # epochs 1 and 3, layer 2: no value
    assert doctor._pivot(df, "missing").empty and doctor._pivot(df.iloc[:0], "x").empty


def test_compare_pairs_seeds_and_a_diverged_arm_removes_nothing():
    """`remedies.compare` on two arms of two seeds: an arm whose gradient recovers removed the vanishing
    (level −5 → −0.5 and −0.3 decades: +4.6 mean, paired t interval over the two seeds); an arm whose runs
    diverged at epoch 1 has nothing left to read, which is not a removal (SGD on the 20x64 ReLU net)."""
    def arm(levels: dict, diverged=None) -> remedies.ArmRuns:
        runs = pd.DataFrame([{"run_id": f"r{s}", "label": "own", "seed": s, "activation": "tanh", "network": "model",
                              "diverged_epoch": diverged} for s in levels])
        g = [{**_grad(li, lv if li == 0 else 0.0), "run_id": f"r{s}"} for s, lv in levels.items() for li in (0, 1)]
        g += [{**x, "param": "w"} for x in g]
        res = Results(None, {}, {}, runs, pd.DataFrame(), pd.DataFrame(g), pd.DataFrame())
        return remedies.ArmRuns({s: f"r{s}" for s in levels}, doctor.diagnose(res),
                                {s: 0.5 for s in levels})

    about = {"baseline": "own", "source": "test", "dataset": "digits", "epochs": 1}
    base = arm({0: -5.0, 1: -5.0})
    e = remedies.compare("vanishing", base, arm({0: -0.5, 1: -0.3}), "init X", {"init": "X"}, about)
    assert e.verdict == "removed it" and e.moved and (e.found_baseline, e.found_remedy) == ("2/2", "0/2")
    half = 12.7062047362 * np.std([4.5, 4.7], ddof=1) / math.sqrt(2)  # t_{0.975, 1}
    assert e.diff == pytest.approx(4.6) and e.low == pytest.approx(4.6 - half) and e.seeds == 2
    e = remedies.compare("vanishing", base, arm({0: -0.5, 1: -0.3}, diverged=1), "sgd", {}, about)
    assert e.verdict == remedies.DIVERGED and not e.moved and e.found_remedy == "0/2" and math.isnan(e.remedy_mean)


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


def test_results_without_gradient_records_say_so_and_what_to_record():
    """A grads table with no rows, or rows without the per-layer keys (no `param`), is not an
    error: the findings read from gradients are not looked for, and the text says which probe
    records them; the layer factors are still read."""
    acts = [{"run_id": "r", "epoch": e, "layer": f"l{i}", "layer_index": i, "saturated_frac": 0.99 - i}
            for e in (0, 1) for i in (0, 1)]  # l1: the output layer
    for grads in ([], [{"run_id": "r", "epoch": 1, "grad_norm_mean": 0.1}]):
        d = doctor.diagnose(_results(grads, acts))
        text = "\n".join(d.lines())
        for probe in ("grad_moments", "update_size", "grad_signs"):
            assert f"no gradient records (no per-layer rows in the grads table); train with the {probe} probe" in text
        assert [(f.finding, f.layer_index) for f in d.findings] == [("saturated", 0)]  # the factors still count
        assert d.runs[0].checked == ("saturated",)


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


@pytest.mark.filterwarnings("error::UserWarning")  # a diagnosis that fails is a warning on the page: fail here
def test_report_and_index_open_with_the_diagnosis_and_the_forest(report_dirs, tmp_path):
    import shutil

    from vglab.cli import app

    from vglab.report.html import write_index, write_report

    dirs = []
    for p in ("large-params", "many-layers"):
        shutil.copytree(report_dirs[p], tmp_path / p)
        dirs.append(tmp_path / p)
    page = write_report(dirs[1]).read_text()
    assert page.index("<h2") == page.index('<h2 id="diagnosis"') < page.index('id="claims"') < page.index('id="runs"')
    text = " ".join(CliRunner().invoke(app, ["doctor", str(dirs[1])]).output.split())  # a preset's folder
    assert "tanh · mlp 4x8 · N(0, std=0.05) · no penalty (2 runs) vanishing: layer 1 of 4" in text
    assert "remedy (untested on this model; measured on the closest case): init" in text
    assert "Rules: vanishing / exploding" in page
    # (refresh_pages=False: the index alone; large-params' page, ~10 CPU-s, is not what this checks)
    index = write_index(dirs, tmp_path / "index.html", refresh_pages=False).read_text()
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
