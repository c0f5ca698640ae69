"""Progress and the plan: counters that count runs, ETAs that include compiling, finished
rows with their time, plain lines in a log file, and the plan printed before training."""

import io
import subprocess
import sys

import pytest
from experiments_helpers import real_data, vglab_cache, write_spec  # noqa: F401

from vglab.experiments import progress as P
from vglab.experiments import runner


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_eta_is_the_estimate_until_epochs_are_measured_then_their_pace():
    clock = Clock()
    t = P.Tracker(workers=1, clock=clock)
    t.add(P.GroupPlan("e/a", runs=4, units=2, estimate_s=100.0))
    t.add(P.GroupPlan("e/b", runs=2, units=1, estimate_s=50.0))
    assert t.eta() == pytest.approx(150.0)  # nothing started: compile + train of both
    t.started("e/a")
    clock.t = 30.0  # compiling: no epoch yet
    assert t.remaining("e/a") == pytest.approx(70.0)
    t.unit_epoch("e/a", "u1", 0.1)  # first epoch after compiling: pace from here
    clock.t = 40.0
    t.unit_epoch("e/a", "u1", 0.5)  # unit 1 from 10 % to 50 %: the group from 5 % to 25 % in 10 s
    assert t.remaining("e/a") == pytest.approx(10.0 / 0.2 * 0.75)
    assert t.runs() == (0, 6)
    t.unit_done("e/a", "u1", 2)
    assert t.runs() == (2, 6) and t.groups["e/a"].fraction == pytest.approx(0.5)
    t.unit_done("e/a", "u2", 2)
    clock.t = 80.0
    t.done("e/a")
    assert t.seconds("e/a") == pytest.approx(80.0) and t.remaining("e/a") == 0.0
    assert t.calibration() == pytest.approx(0.8)  # took 80 s of an estimated 100
    assert t.remaining("e/b") == pytest.approx(40.0)  # the estimate, calibrated
    assert t.groups_done() == (1, 2)
    t.started("e/b", ago=30.0)  # known only when it ends (a Ray task's events arrive together)
    t.done("e/b")
    assert t.seconds("e/b") == pytest.approx(30.0)


def test_plain_progress_prints_one_line_per_group_and_report():
    stream = io.StringIO()
    p = P.PlainProgress(stream)
    with p:
        p.start("demo: 3 runs in 2 groups", [P.GroupPlan("demo/g1", 2, 1, 10.0), P.GroupPlan("demo/g2", 1, 1, 5.0)])
        p.group_started("demo/g1")
        p.unit_epoch("demo/g1", "u", 0.5)
        p.unit_done("demo/g1", "u", 2)
        p.group_done("demo/g1")
        p.reports(2)
        p.report_done("demo", 1.5)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("training demo: 3 runs in 2 groups (ETA")
    assert lines[1].startswith("[1/2 groups] demo/g1: 2 runs in ") and "2/3 runs" in lines[1] and "ETA" in lines[1]
    assert lines[2] == "writing 2 reports…"
    assert lines[3] == "[1/2 reports] demo in 1.5 s"


def test_rich_rows_count_runs_and_show_the_time_when_done():
    from rich.console import Console

    console = Console(file=io.StringIO(), force_terminal=True, width=140)
    p = P.RichProgress(console)
    with p:
        p.start("demo", [P.GroupPlan("demo/g", 3, 1, 10.0)])
        p.group_started("demo/g")
        p.unit_done("demo/g", "u", 3)
        p.group_done("demo/g")
        p.reports(1)
        p.report_done("demo", 0.1)
    rows = {t.fields["key"]: t for t in p._bars.tasks}
    assert rows["demo/g"].fields["count"] == "3/3 runs" and rows["__overall__"].fields["count"] == "3/3 runs"
    out = console.file.getvalue()
    assert "done in 0:00:0" in out and "ETA 0:00:00" not in out.split("demo/g")[-1].split("\n")[0]
    assert "1 reports written" in out or "1/1" in out


def test_the_plan_says_hours_and_the_ways_out():
    rows = (runner.PlanRow("cnn-large-params", "mnist", 12, 0, 1, 20.0, 4 * 3600.0, 10.0),
            runner.PlanRow("large-params", "mnist", 9, 0, 1, 15.0, 60.0, 5.0))
    lines = runner.Plan(rows, 2, "cpu", 2 * 3600.0).lines()
    text = "\n".join(lines)
    assert "cnn-large-params" in lines[2] and "4 h 00 min" in lines[2]
    assert "estimated time: 2 h 00 min" in text
    for way in ("--device gpu", "--train-size", "--presets"):
        assert way in text
    short = runner.Plan(rows[1:], 2, "cpu", 90.0).lines()
    assert not any("Ways out" in line for line in short)
    gpu = runner.Plan(rows, 1, "gpu", 300.0).lines()
    assert "calibrated on an NVIDIA H200" in gpu[0] and "other GPUs differ" in gpu[0]
    assert "estimated time: 5 min 00 s" in "\n".join(gpu) and not any("Ways out" in line for line in gpu)


def test_a_gpu_plan_uses_the_gpu_calibration(monkeypatch, vglab_cache):
    """The same CNN experiment: hours of CPU work on a CPU, minutes on a GPU (one process,
    the reports on the CPU's cores); each from its own calibration of the cost model."""
    from vglab.experiments.spec import load_spec
    from vglab.train import parallel

    monkeypatch.setattr(parallel, "gpu_platforms_installed", lambda: ["cuda"])
    spec = [load_spec("cnn-large-params", dataset="digits")]
    cpu = runner.plan_experiments(spec, workers=2, device="cpu")
    gpu = runner.plan_experiments(spec, device="gpu")
    assert (cpu.device, gpu.device, gpu.workers) == ("cpu", "gpu", 1)
    (c,), (g,) = cpu.rows, gpu.rows
    # compiling costs about the same on both (measured: 13.6 s of one core, 15 s on an H200)
    assert g.runs == c.runs and 0 < g.train_s < c.train_s / 10 and g.compile_s > 0 and c.compile_s > 0
    assert g.compile_s + g.train_s <= gpu.wall_s < cpu.wall_s


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, vglab_cache):
    from typer.testing import CliRunner  # in-process: the command's code, without ~3 s of CPU starting Python

    from vglab.cli import app

    spec = write_spec(tmp_path)
    proc = CliRunner().invoke(app, ["run", str(spec), "--out", str(tmp_path / "out"), "--dry-run"])
    assert proc.exit_code == 0, proc.output
    assert proc.stdout.startswith("plan: 1 experiment, 8 runs to train on ")
    assert "tiny" in proc.stdout and "estimated time:" in proc.stdout
    assert not (tmp_path / "out").exists()


def test_a_log_file_shows_the_plan_and_progress(tmp_path, vglab_cache):
    """stdout and stderr to a file (not a terminal): plain lines, one per finished group."""
    spec = write_spec(tmp_path)
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "vglab.cli", "run", str(spec), "--out", str(tmp_path / "out"),
                               "--workers", "1"], stdout=f, stderr=subprocess.STDOUT, timeout=600)
    text = log.read_text()
    assert proc.returncode == 0, text
    lines = text.splitlines()
    assert lines[0].startswith("plan: 1 experiment, 8 runs to train on 1 CPU worker")
    assert any(line.startswith("training tiny: 8 runs in 3 groups on 1 worker (ETA") for line in lines)
    done = [line for line in lines if line.startswith("[") and " groups] tiny/" in line]
    assert [d.split("]")[0] for d in done] == ["[1/3 groups", "[2/3 groups", "[3/3 groups"], text
    assert "8/8 runs" in done[-1] and "100% of the work" in done[-1]
    assert "\x1b[" not in text  # no terminal control codes in a log file
    assert lines[-1] == str(tmp_path / "out")


def test_the_plan_matches_the_work(tmp_path, vglab_cache):
    """The plan counts the runs still to train: none once they are complete."""
    from vglab.experiments.spec import load_spec

    spec = load_spec(write_spec(tmp_path), seeds=1)
    plan = runner.plan_experiments([spec], [tmp_path / "out"], workers=1)
    assert [(r.experiment, r.runs, r.done, r.groups) for r in plan.rows] == [("tiny", 4, 0, 3)]
    assert plan.rows[0].compile_s > 0 and plan.wall_s >= plan.rows[0].compile_s
    runner.run_experiments([spec], [tmp_path / "out"], workers=1)
    again = runner.plan_experiments([spec], [tmp_path / "out"], workers=1)
    assert [(r.runs, r.done) for r in again.rows] == [(0, 4)] and again.wall_s == 0


@pytest.mark.slow
def test_the_plan_of_cnns_on_mnist_says_hours_before_anything_starts(tmp_path):
    """On a CPU, the 4-conv CNN on MNIST is hours of training: the plan says so and names
    the ways out (measured: 0.2 s per step of one run on one core, 1,875 steps per epoch)."""
    from vglab.experiments.spec import load_spec

    data = real_data("mnist")
    spec = load_spec("cnn-large-params", dataset="mnist")
    plan = runner.plan_experiments([spec], [tmp_path / "out"], workers=2, device="cpu", data_dir=data)
    (row,) = plan.rows
    assert row.runs == 12 and row.train_s > 3 * 3600  # 12 runs x 15 epochs
    text = "\n".join(plan.lines())
    assert "this takes hours on this CPU" in text and "--device gpu" in text and "--train-size" in text
    assert not (tmp_path / "out").exists()
