"""The plan's cost model against a real run (benchmarks/cost_model.py --compare): each term
within 3x of the CPU seconds the run recorded in meta.json. The plan promises 2x; 3x leaves
room for a noisy CI machine and still catches a drift like the 4x of issue 31."""

import importlib.util
import io
import json
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
    out = tmp_path / "out"
    vglab.reproduce("digits", out=out, presets=["vs-relu"], epochs=300, seeds=1, workers=2, progress=False)
    meta = json.loads((out / "vs-relu" / "meta.json").read_text())
    task = meta["invocations"][-1]["tasks"][0]
    assert task["cpu_seconds"] >= sum(task["unit_cpu_seconds"]) >= task["compile_cpu_seconds"] > 0
    assert task["features"]["dense_layers"] == 2 and task["features"]["steps"] == 300 * (1437 // 32)
    assert meta["report"]["cpu_seconds"] >= sum(meta["report"]["figures"].values()) > 0
    text = io.StringIO()
    rows = {r["term"]: r for r in _bench().compare([out], out=text) if r["experiment"] == "all"}
    assert set(rows) == {"compile", "train", "report", "wall"}, text.getvalue()
    for term in ("compile", "train", "report"):
        r = rows[term]
        assert r["measured"] > 0 and 1 / 3 <= r["estimate"] / r["measured"] <= 3, (term, text.getvalue())
    # the wall time the plan schedules, against the measured CPU seconds on the same schedule
    assert 1 / 3 <= rows["wall"]["estimate"] / rows["wall"]["idle"] <= 3, text.getvalue()
    assert "vs-relu" in text.getvalue() and "wall: plan" in text.getvalue()


def test_the_fit_recovers_the_seconds_of_a_known_cost_model():
    """`fit` on times made by a known CostModel (varied programs, as a study's tasks are): the
    fitted constants estimate every task, compile and page within 5 %, starting from the
    shipped calibration (which is far from this one)."""
    pytest.importorskip("scipy")
    from dataclasses import replace

    from vglab.experiments import runner

    bench = _bench()
    truth = replace(runner.CPU_COSTS, compile_s=3.0, compile_s_per_layer={"dense": 0.6, "conv": 1.5},
                    compile_s_per_conv_mac=2e-6, step_overhead_s=2e-5, layer_step_s={"dense": 1e-5, "conv": 2e-4},
                    macs_per_s={"dense": 5e9, "conv": 2e10}, record_s=0.002, layer_record_s={"dense": 5e-4, "conv": 0.01},
                    report_s=2.0, report_s_per_run=0.01, report_s_per_panel=0.02)
    programs = [(d, c, dm, cm, m) for d, c, dm, cm, m in [(2, 0, 300, 0, 8), (21, 0, 1500, 0, 8), (11, 0, 900, 0, 8),
                                                         (65, 0, 260000, 0, 8), (9, 0, 600000, 0, 8),
                                                         (2, 4, 800, 1.2e6, 1), (9, 4, 900, 1.0e6, 1),
                                                         (2, 6, 700, 2.0e6, 1), (5, 6, 700, 2e4, 1)]]
    tasks, compiles = [], []
    for i, (d, c, dm, cm, m) in enumerate(programs):
        for steps, records in ((660, 16), (30800, 21), (2640 + 37 * i, 7)):
            f = {"dense_layers": d, "conv_layers": c, "dense_macs": dm, "conv_macs": cm, "members": m,
                 "batch_size": 32, "steps": steps, "records": records, "n_test": 360 + 50 * i}
            comp, unit = runner.estimate(f, truth)
            tasks.append((f, 1 + i % 3, unit * (1 + i % 3)))
            compiles.append((f, comp))
    pages = [({"runs": r, "configs": k, "layers": l}, runner.report_seconds({"runs": r, "configs": k, "layers": l}, truth))
             for r, k, l in [(9, 3, 2), (864, 288, 65), (45, 15, 21), (6, 2, 2), (63, 21, 2), (27, 9, 21)]]
    fitted = replace(runner.CPU_COSTS, **bench.fit({"compiles": compiles, "loads": [0.5, 1.5, 1.0], "tasks": tasks,
                                                     "pages": pages}, runner.CPU_COSTS))
    assert fitted.load_s == 1.0
    for f, units, seconds in tasks:
        assert runner.estimate(f, fitted)[1] * units == pytest.approx(seconds, rel=0.05)
    for f, seconds in compiles:
        assert runner.estimate(f, fitted)[0] == pytest.approx(seconds, rel=0.05)
    for f, seconds in pages:
        assert runner.report_seconds(f, fitted) == pytest.approx(seconds, rel=0.05)
