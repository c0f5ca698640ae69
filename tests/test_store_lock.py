"""The results store's lock and files: one holder at a time even among processes that
start together, a killed holder's lock taken over, every file with the same mode."""

import multiprocessing as mp
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
from experiments_helpers import vglab_cache, write_spec  # noqa: F401

from vglab.results import store

TRIALS, PROCESSES = 200, 8


def _contend(out, barrier, holders, overlaps, wins, index):
    """One of PROCESSES processes: in each trial, all try to take the lock at once; the
    holder counts itself in `holders` while it holds it (2 ms)."""
    for trial in range(TRIALS):
        folder = out / f"trial{trial}"
        barrier.wait()  # (with a timeout: a process that fails breaks it for all)
        try:
            with store.locked(folder):
                with holders.get_lock():
                    holders.value += 1
                    if holders.value > 1:
                        overlaps.value += 1
                time.sleep(0.002)
                with holders.get_lock():
                    holders.value -= 1
                with wins.get_lock():
                    wins.value += 1
        except store.StoreError:
            pass
        barrier.wait()


def test_many_processes_starting_together_never_both_hold_the_lock(tmp_path):
    """200 trials of 8 processes behind a barrier; in every other trial a stale lock file
    (of a dead process, with its pid) is there first. (The old create-then-write-the-pid
    lock had two holders in 12 of 1,000 trials, 20 of 200 with a stale lock.)"""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for trial in range(1, TRIALS, 2):
        (tmp_path / f"trial{trial}").mkdir()
        (tmp_path / f"trial{trial}" / store.LOCK).write_text(str(dead.pid))
    ctx = mp.get_context("spawn")  # no fork of this (JAX-running) process; the children do not import JAX
    barrier = ctx.Barrier(PROCESSES, timeout=60)
    holders, overlaps, wins = ctx.Value("i", 0), ctx.Value("i", 0), ctx.Value("i", 0)
    procs = [ctx.Process(target=_contend, args=(tmp_path, barrier, holders, overlaps, wins, i)) for i in range(PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    assert overlaps.value == 0, f"{overlaps.value} times two processes held the lock together"
    assert TRIALS <= wins.value < TRIALS * PROCESSES  # every trial had a holder, and some were refused
    assert not any(tmp_path.glob(f"*/{store.LOCK}"))  # every holder removed it, stale ones included


def test_a_killed_holders_lock_is_taken_over(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom vglab.results import store\n"
                               f"with store.locked({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(600)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(store.StoreError, match=rf"{out} is in use by another vglab process \(pid {holder.pid}\); "
                                               "wait for it to finish, or choose another --out"):
        with store.locked(out):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (out / store.LOCK).read_text() == str(holder.pid)  # left behind
    with store.locked(out):  # the kernel released the dead holder's lock
        assert (out / store.LOCK).read_text() == str(os.getpid())
    assert not (out / store.LOCK).exists() and out.is_dir()


def test_a_refused_lock_leaves_no_folder_it_created(tmp_path):
    out = tmp_path / "a" / "b"
    with store.locked(out):
        with pytest.raises(store.StoreError, match="in use"):
            with store.locked(out):
                pass
        assert out.is_dir()
    assert not (tmp_path / "a").exists()  # created by the lock, left empty: removed
    (tmp_path / "file").write_text("")
    with pytest.raises(store.StoreError, match=f"^{tmp_path / 'file'} is a file, not a folder; choose another --out$"):
        with store.locked(tmp_path / "file" / "out"):
            pass


def test_every_file_gets_the_same_mode_under_the_umask(tmp_path, vglab_cache):
    """experiment.toml, meta.json, run.json and DONE were 0600 (mkstemp) beside 0644 Parquet
    files: a shared results folder was half unreadable to its group."""
    from typer.testing import CliRunner

    from vglab.cli import app

    spec, out = write_spec(tmp_path), tmp_path / "out"
    for umask, mode in ((0o027, 0o640), (0o002, 0o664)):
        args = ["run", spec, "--out", out, "--workers", 1, "--quiet", "--tensorboard", "--overwrite", "--seeds", 1,
                "--epochs", 1 + (umask == 0o002)]
        # the command in this process under the umask (no JAX process to start), the umask given back after
        old = os.umask(umask)
        try:
            r = CliRunner().invoke(app, list(map(str, args)))
        finally:
            os.umask(old)
        assert r.exit_code == 0, r.output
        files = [p for p in out.rglob("*") if p.is_file()]
        kinds = {p.name if p.parent.parent.name != "runs" else p.suffix or p.name for p in files}
        assert {"experiment.toml", "meta.json", ".json", ".parquet", ".npz", "DONE"} <= kinds
        assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {oct(mode)}, umask
