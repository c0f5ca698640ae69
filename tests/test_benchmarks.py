"""The benchmark scripts, small on the CPU. The GPU script: a lent GPU machine gives it one
run, so it must not break between sessions (benchmarks/gpu_reproduce.py --small). The
throughput benchmark's --quick mode is its CI smoke run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments_helpers import vglab_cache  # noqa: F401

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_gpu_reproduce_runs_every_stage_small_on_the_cpu(tmp_path, vglab_cache):
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_reproduce.py"), "--small", "--presets", "large-params",
                           "--budget", "400", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("agree", "study", "curve", "cnn_curve"):
        assert f"== stage {stage}: " in out and out.split(f"== stage {stage}: ")[1].split("\n")[0].endswith("exit 0"), out
    assert "reproduce --dataset digits, 1 presets on cpu" in out and "large-params-slow" in out
    mlp, cnn = (part.split("== stage")[0].splitlines()[2:] for part in out.split("group-size curve, ")[1:3])
    assert [int(line.split()[0]) for line in mlp if line.strip()[:1].isdigit()] == [1, 2]
    rows = [line.split() for line in cnn if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in rows] == [2]
    sys.path.insert(0, str(BENCH))
    from gpu_reproduce import SMALL

    n = SMALL["cnn_train"]
    assert 32 <= n < 1437 and f"(cnn-large-params), all probes, {n} examples, on cpu" in out  # --small: n of digits' 1437
    for k, s_epoch, ms_step, model_ep_s, *_ in rows:  # the figures follow from each other (to their printed digits)
        rel = 0.0005 / float(s_epoch) + 0.01
        assert float(model_ep_s) == pytest.approx(int(k) / float(s_epoch), rel=rel)
        assert float(ms_step) == pytest.approx(1e3 * float(s_epoch) / (n // 32), rel=rel)
    assert (tmp_path / "out" / "large-params" / "report.html").exists()


def test_train_speed_quick_prints_consistent_rows_and_the_plain_loop(tmp_path, vglab_cache, monkeypatch, capsys):
    """`train_speed.py --quick` (the CI smoke run of the throughput benchmark): every engine
    row and its plain JAX + Optax loop, with figures that follow from each other (model-epochs/s
    from members and s/epoch; GFLOP/s from the stated FLOP count). Its `main` runs in this
    process (one JAX start fewer); the per-core row still starts its own worker processes."""
    from vglab import nn

    sys.path.insert(0, str(BENCH))
    import train_speed

    out = tmp_path / "rows.json"
    monkeypatch.setattr(sys, "argv", ["train_speed.py", "--quick", "--only", "engine", "--json", str(out)])
    train_speed.main()
    stdout = capsys.readouterr().out
    rows = json.loads(out.read_text())
    kinds = {(r["network"], r["members"], r["probes"], r["processes"]) for r in rows}
    assert {("builtin 1x8", 50, "full", 1), ("builtin 1x8", 50, "off", 1), ("plain 1x8", 50, "off", 1)} <= kinds
    if (os.cpu_count() or 1) > 1:
        assert ("builtin 1x8", 50, "full", os.cpu_count()) in kinds
    n_in = 154 if rows[0]["source"].startswith("MNIST") else 153
    weights = sum(t.size for t in nn.mlp(1, 8, n_in).layout().weights)
    examples = train_speed.QUICK["n_train"] // 32 * 32
    for r in rows:
        assert r["s_per_epoch"] > 0 and r["compile_s"] > -r["s_per_epoch"], r
        assert r["model_epochs_per_s"] == pytest.approx(r["members"] / r["s_per_epoch"], rel=1e-9)
        assert r["gflops"] == pytest.approx(6 * weights * examples * r["members"] / r["s_per_epoch"] / 1e9, rel=1e-6)
        assert f"{r['network']:<13} {r['members']:>3} {r['probes']:<7} {r['processes']:>5} " in stdout


def test_watch_speed_quick_writes_every_model_and_tier(tmp_path):
    """`watch_speed.py --quick`: one row per model and tier with the issue's JSON keys (the
    script itself checks that the watched run trained exactly as the unwatched one)."""
    sys.path.insert(0, str(BENCH))
    import watch_speed

    watch_speed.main(["--quick", "--json", str(tmp_path / "w.json")])
    rows = json.loads((tmp_path / "w.json").read_text())
    assert [(r["model"], r["tier"]) for r in rows] == [(m, t) for m in ("mlp1x8x50", "char_lm")
                                                       for t in ("norms", "moments", "full")]
    for r in rows:
        assert {"model", "tier", "watched_s_per_step", "unwatched_s_per_step"} <= set(r)
        assert r["watched_s_per_step"] > 0 and r["unwatched_s_per_step"] > 0


def test_train_speed_refuses_a_missing_equinox_before_any_work(monkeypatch, capsys):
    """Without Equinox the equinox and tiers sections cannot run: said at once, exit 2, before
    any data are read or a model trains (it used to fail after 4 1/2 minutes of the engine section)."""
    import importlib.util

    sys.path.insert(0, str(BENCH))
    import train_speed

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "equinox" else real(name, *a))
    monkeypatch.setattr(train_speed, "_arrays", lambda *a: pytest.fail("work started"))
    monkeypatch.setattr(sys, "argv", ["train_speed.py", "--quick"])
    with pytest.raises(SystemExit) as e:
        train_speed.main()
    assert e.value.code == 2
    assert capsys.readouterr().err == ("error: equinox is not installed: the sections equinox, tiers train the Equinox "
                                       "MLP of examples/equinox_mlp.py; pip install 'vglab[equinox]', or leave them out "
                                       "with --only engine\n")
    assert train_speed.missing_imports(["engine"]) == []


def test_scan_cost_prints_both_views_of_each_net(monkeypatch, capsys):
    """`scan_cost.py`, where `scan_pays`' constants come from: one row per net and view,
    the same gradient through the unrolled and the scanned program."""
    sys.path.insert(0, str(BENCH))
    monkeypatch.setattr(sys, "argv", ["scan_cost.py", "--nets", "3x4", "--steps", "1"])
    import scan_cost

    scan_cost.main()
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(r[0], r[1]) for r in rows] == [("3x4", "unrolled"), ("3x4", "scanned")]
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows)
    v, fns = scan_cost.programs(3, 4)
    import numpy as np
    np.testing.assert_allclose(fns["scanned"](v), fns["unrolled"](v), rtol=1e-5, atol=1e-7)
