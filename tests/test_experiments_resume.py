"""Resume: a sweep killed with SIGKILL and re-run ends with every run complete exactly
once and the same numbers as an uninterrupted sweep; the lock stops a second writer."""

import os
import signal
import subprocess
import sys
import time

from experiments_helpers import epochs_table, runs_table, vglab_cache, write_spec  # noqa: F401

from vglab.results import store


def _done(out):
    return len(list((out / "runs").glob("*/DONE"))) if (out / "runs").is_dir() else 0


def test_sigkill_then_resume_equals_an_uninterrupted_sweep(tmp_path, vglab_cache):
    spec = write_spec(tmp_path)  # 3 groups, 6 units, 8 runs
    killed, clean = tmp_path / "killed", tmp_path / "clean"

    # Two workers; the parent is SIGKILLed once some but not all runs are DONE.
    proc = subprocess.Popen([sys.executable, "-m", "vglab.cli", "run", str(spec), "--out", str(killed),
                             "--workers", "2", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while _done(killed) == 0 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = _done(killed)
    assert 0 < done_at_kill < 8, f"the kill should land mid-sweep, found {done_at_kill} runs done"
    assert (killed / ".lock").exists()  # left behind by the killed process: taken over below

    # The command again finishes the sweep, training only what was missing; then an uninterrupted
    # sweep elsewhere. Both in this test process, in one worker (three JAX processes fewer than the
    # killed command's: how many workers trained a run does not change its numbers).
    import json

    from typer.testing import CliRunner

    from vglab.cli import app

    r = CliRunner().invoke(app, ["run", str(spec), "--out", str(killed), "--workers", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    last = json.loads((killed / "meta.json").read_text())["invocations"][-1]
    assert last["skipped"] == done_at_kill and last["trained"] == 8 - done_at_kill

    r = CliRunner().invoke(app, ["run", str(spec), "--out", str(clean), "--workers", "1", "--quiet"])
    assert r.exit_code == 0, r.output

    ids = sorted(p.name for p in (killed / "runs").iterdir())
    assert ids == sorted(p.name for p in (clean / "runs").iterdir()) and len(ids) == 8
    assert all((killed / "runs" / i / "DONE").exists() for i in ids)
    assert runs_table(killed).equals(runs_table(clean))
    a, b = epochs_table(killed), epochs_table(clean)
    assert len(a) == 8 * 3 and a.equals(b)  # bit for bit: the numbers do not depend on the interruption
    assert not (killed / ".lock").exists()


def test_a_partly_written_unit_is_retrained_whole_and_only_its_missing_runs_written(tmp_path, vglab_cache):
    import vglab

    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    vglab.run(spec, out=out, workers=1, progress=False)
    before = epochs_table(out)
    # As if killed between two runs of a unit: one run lost its DONE marker.
    victim = sorted((out / "runs").glob("mlp-1x4-tanh-std10-s1-*"))[0]
    (victim / "DONE").unlink()
    stamps = {p.name: (p / "DONE").stat().st_mtime_ns for p in (out / "runs").iterdir() if p != victim}
    res = vglab.run(spec, out=out, workers=1, progress=False)
    assert res.meta["invocations"][-1]["trained"] == 1
    assert {p.name: (p / "DONE").stat().st_mtime_ns for p in (out / "runs").iterdir() if p != victim} == stamps
    assert epochs_table(out).equals(before)


def test_the_lock_stops_a_second_writer(tmp_path, vglab_cache):
    spec, out = write_spec(tmp_path), tmp_path / "out"
    from typer.testing import CliRunner

    from vglab.cli import app

    with store.locked(out):  # the kernel's lock: a second open file description, here in this same process
        r = CliRunner().invoke(app, ["run", str(spec), "--out", str(out), "--workers", "1", "--quiet"])
    assert r.exit_code == 2
    assert f"{out} is in use by another vglab process (pid {os.getpid()})" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (out / "runs").exists()
