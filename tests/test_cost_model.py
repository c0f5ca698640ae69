"""The plan's cost model against a real run (benchmarks/cost_model.py --compare): each term
within 3x of the CPU seconds the run recorded in meta.json (or both under the benchmark's
noise floor). The plan promises 2x; 3x leaves room for a noisy CI machine and still catches
a drift like the 4x of issue 31 (checked: training estimated 4x too long fails it)."""

import importlib.util
import io
import json
import os
from pathlib import Path

import pytest

from experiments_helpers import vglab_cache  # noqa: F401

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "cost_model.py"


def _bench():
    spec = importlib.util.spec_from_file_location("cost_model_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_term_of_the_plan_holds_within_3x_on_a_small_digits_run(tmp_path, monkeypatch, vglab_cache):
    import vglab

    monkeypatch.setenv("VGLAB_JAX_CACHE", str(tmp_path / "jax"))  # cold: the plan's compile term is a compile
    # the cost model prices the programs users run: XLA's default optimization level, not the
    # suite's cheaper-to-compile ones (conftest.TEST_XLA_FLAGS)
    suite = set(os.environ.get("VGLAB_TEST_XLA_FLAG_NAMES", "").split())
    monkeypatch.setenv("XLA_FLAGS", " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                                             if f.split("=")[0] not in suite))
    out = tmp_path / "out"
    # 600 epochs: training (~3 s) well above the noise of the first task's compile/train split
    vglab.reproduce("digits", out=out, presets=["vs-relu"], epochs=600, seeds=1, workers=2, progress=False)
    meta = json.loads((out / "vs-relu" / "meta.json").read_text())
    task = meta["invocations"][-1]["tasks"][0]
    assert task["cpu_seconds"] >= sum(task["unit_cpu_seconds"]) >= task["compile_cpu_seconds"] > 0
    assert task["features"]["dense_layers"] == 2 and task["features"]["steps"] == 600 * (1437 // 32)
    assert all(len(t["features"]["family"]) == len(t["features"]["program"]) == 12
               for t in meta["invocations"][-1]["tasks"])  # the cache keys the measured compile is split by
    assert meta["report"]["cpu_seconds"] >= sum(meta["report"]["figures"].values()) > 0
    text = io.StringIO()
    bench = _bench()
    rows = {r["term"]: r for r in bench.compare([out], out=text) if r["experiment"] == "all"}
    assert set(rows) == {"compile", "train", "report", "wall"}, text.getvalue()
    for term in ("compile", "train", "report"):
        r = rows[term]
        assert r["measured"] > 0, (term, text.getvalue())
        assert max(r["estimate"], r["measured"]) < bench.NOISE_FLOOR_S or 1 / 3 <= r["estimate"] / r["measured"] <= 3, (
            term, text.getvalue())
    assert rows["compile"]["measured"] > bench.NOISE_FLOOR_S  # a cold compile: the term is measured, not noise
    # the wall time the plan schedules, against the measured CPU seconds on the same schedule
    assert 1 / 3 <= rows["wall"]["estimate"] / rows["wall"]["idle"] <= 3, text.getvalue()
    assert "vs-relu" in text.getvalue() and "wall: plan" in text.getvalue()


def test_a_shared_model_s_compile_is_split_evenly_whatever_the_order():
    """Which experiment's task compiles a model that several train is the schedule's choice:
    the plan splits it evenly, so reordering the experiments changes no row's compile (before
    the split, the first experiment got it all: many-layers 0 s against 20 s measured)."""
    from vglab.experiments import runner
    from vglab.experiments.spec import load_spec

    specs = [load_spec(p, dataset="digits", epochs=2, seeds=[0]) for p in ("many-layers", "alpha-sweep")]
    a = runner.plan_experiments(specs, ["/nonexistent/a", "/nonexistent/b"], workers=2, device="cpu")
    b = runner.plan_experiments(specs[::-1], ["/nonexistent/b", "/nonexistent/a"], workers=2, device="cpu")
    rows_a, rows_b = {r.experiment: r for r in a.rows}, {r.experiment: r for r in b.rows}
    for name in rows_a:
        assert rows_a[name].compile_s == pytest.approx(rows_b[name].compile_s)
    # both train the 20x8 tanh net: half its compile is in each row, not all in one; many-layers
    # compiles its 1x8 net alone
    deep, shallow = (runner.estimate(next(f for f in a.task_features.values() if f["dense_layers"] == n))[0]
                     for n in (21, 2))
    assert rows_a["alpha-sweep"].compile_s >= deep / 2
    assert rows_a["many-layers"].compile_s >= deep / 2 + shallow
    shares = runner.compile_shares([{"experiment": "x", "family": "f", "seconds": 9.0},
                                    {"experiment": "y", "family": "f", "seconds": 1.0},
                                    {"experiment": "y", "family": "g", "seconds": 4.0}])
    assert shares == {"x": 5.0, "y": 9.0}


def test_the_fit_recovers_the_seconds_of_a_known_cost_model():
    """`fit` on times made by a known CostModel (varied programs, as a study's tasks are): the
    fitted constants estimate every task, program family's compiles and page within 5 %,
    starting from the shipped calibration (which is far from this one)."""
    pytest.importorskip("scipy")
    from dataclasses import replace

    from vglab.experiments import runner

    bench = _bench()
    truth = replace(runner.CPU_COSTS, compile_s=3.0, compile_s_per_layer={"dense": 0.6, "conv": 1.5},
                    compile_s_per_conv_mac=2e-6, compile_s_per_penalty=0.0, variant_s=2.0, variant_s_per_layer=0.3,
                    load_s=1.0, step_overhead_s=2e-5, layer_step_s={"dense": 1e-5, "conv": 2e-4},
                    macs_per_s={"dense": 5e9, "conv": 2e10}, record_s=0.002, layer_record_s={"dense": 5e-4, "conv": 0.01},
                    report_s=2.0, report_s_per_run=0.01, report_s_per_panel=0.02, report_s_per_config_panel=0.3,
                    report_s_per_config=0.15, report_s_own_page=4.0, report_s_per_flagged_cell=0.003)
    programs = [(d, c, dm, cm, m) for d, c, dm, cm, m in [(2, 0, 300, 0, 8), (21, 0, 1500, 0, 8), (11, 0, 900, 0, 8),
                                                         (65, 0, 260000, 0, 8), (9, 0, 600000, 0, 8),
                                                         (2, 4, 800, 1.2e6, 1), (9, 4, 900, 1.0e6, 1),
                                                         (2, 6, 700, 2.0e6, 1), (5, 6, 700, 2e4, 1)]]
    tasks, families = [], []
    for i, (d, c, dm, cm, m) in enumerate(programs):
        for steps, records in ((660, 16), (30800, 21), (2640 + 37 * i, 7)):
            f = {"dense_layers": d, "conv_layers": c, "dense_macs": dm, "conv_macs": cm, "members": m,
                 "batch_size": 32, "steps": steps, "records": records, "n_test": 360 + 50 * i}
            comp, unit = runner.estimate(f, truth)
            tasks.append((f, 1 + i % 3, unit * (1 + i % 3)))
        for n_prog, n_tasks in ((1, 1), (1 + i % 3, 2 + i % 4)):  # a model alone, and with variants and loads
            families.append((f, n_prog, n_tasks, comp + (n_prog - 1) * runner.variant_seconds(f, truth)
                             + (n_tasks - n_prog) * truth.load_s))
    shapes = [(9, 3, 2, False, 0), (864, 288, 65, True, 0), (45, 15, 21, False, 6480), (6, 2, 2, False, 0),
              (63, 21, 2, False, 0), (27, 9, 21, False, 6885), (150, 50, 21, True, 11220), (24, 8, 11, False, 1920),
              (4, 2, 13, False, 120), (84, 28, 21, True, 2520)]
    pages = [({"runs": r, "configs": k, "layers": l, "own_page": o, "flagged": g},
              runner.report_seconds({"runs": r, "configs": k, "layers": l, "own_page": o, "flagged": g}, truth))
             for r, k, l, o, g in shapes]
    # a page that records its figures' seconds: the figures and the rest are fitted apart
    drawn = [({**f, "figures_s": runner.report_seconds({**f, "runs": 0, "flagged": 0}, truth) - truth.report_s}, s)
             for f, s in pages]
    fitted = replace(runner.CPU_COSTS, **bench.fit({"families": families, "loads": [0.5, 1.5, 1.0], "tasks": tasks,
                                                     "pages": pages}, runner.CPU_COSTS))
    split = replace(runner.CPU_COSTS, **bench.fit({"pages": drawn}, runner.CPU_COSTS, terms=("report",)))
    for f, units, seconds in tasks:
        assert runner.estimate(f, fitted)[1] * units == pytest.approx(seconds, rel=0.05)
    for f, n_prog, n_tasks, seconds in families:
        est = runner.estimate(f, fitted)[0] + (n_prog - 1) * runner.variant_seconds(f, fitted) + (
            n_tasks - n_prog) * fitted.load_s
        assert est == pytest.approx(seconds, rel=0.05)
    for f, seconds in pages:
        assert runner.report_seconds(f, fitted) == pytest.approx(seconds, rel=0.05)
        assert runner.report_seconds(f, split) == pytest.approx(seconds, rel=0.05)
    assert split.report_s_per_flagged_cell == pytest.approx(truth.report_s_per_flagged_cell, rel=0.05)


def test_the_report_term_follows_the_diagnosis_flagged_cells(tmp_path, monkeypatch, vglab_cache):
    """many-layers on digits with its nets 8 deep (one program; 2 epochs, one seed): the cells
    where the page's Diagnosis looks up a vanishing gradient's layer factors (each
    `doctor._cause`: ~2.5 ms, most of a deep sweep's page) against those the plan's
    mean-field prediction flagged, within 2x; and the page's estimate within 3x of its CPU
    seconds (the small run above draws no deep net)."""
    import vglab
    from vglab.experiments import runner
    from vglab.experiments.spec import load_spec
    from vglab.report import doctor

    spec = load_spec("many-layers", dataset="digits", epochs=2, seeds=[0], sets=["arms.0.depth=8", "arms.1.depth=8"])
    out = tmp_path / "many-layers"
    plan = runner.plan_experiments([spec], [out], workers=1, device="cpu")
    flagged = plan.report_features["many-layers"]["flagged"]
    # at N(0, std=0.05), sigma_w^2 = 0.02: 0.85 decades a layer, past 3 from the 4th layer below the
    # output: 5 of 8 hidden layers, in 2 records with a gradient, in each run
    assert flagged == len(spec.expand()) * 2 * 5 > 0
    runner.run_experiment(spec, out, workers=1, progress=None)
    counted = []
    real = doctor._cause
    monkeypatch.setattr(doctor, "_cause", lambda *a, **k: counted.append(1) or real(*a, **k))
    vglab.report(out)
    assert flagged / 2 <= len(counted) <= flagged * 2, (len(counted), flagged)
    meta = json.loads((out / "meta.json").read_text())
    estimate = runner.report_seconds(plan.report_features["many-layers"])
    assert 1 / 3 <= estimate / meta["report"]["cpu_seconds"] <= 3, (estimate, meta["report"])
