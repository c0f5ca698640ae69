"""Every failure a user can fix: exit code 2, the whole message (naming the problem and
the fix, no traceback), and nothing written (or, mid-run, nothing lost: complete runs
kept, the lock released, the same command resumes)."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from experiments_helpers import epochs_table, runs_table, vglab, vglab_cache, write_spec  # noqa: F401
from typer.testing import CliRunner

from vglab.cli import app
from vglab.data import sources
from vglab.results import store

cli = CliRunner()


def invoke(*args):
    return cli.invoke(app, [str(a) for a in args])


def error(r, code: int = 2) -> str:
    """The whole output of a failed command, which must be its error message only."""
    assert r.exit_code == code, r.output
    msg = r.output.strip()  # (a download's progress bar may have drawn an empty line before it)
    assert "Traceback" not in msg and msg.startswith("error: "), r.output
    return msg


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No real datasets and no network: downloads are refused at once."""
    monkeypatch.delenv("VGLAB_DATA", raising=False)
    monkeypatch.setenv("VGLAB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(sources, "MNIST_MIRRORS", ["http://127.0.0.1:9/"])
    monkeypatch.setattr(sources, "CIFAR10_URLS", ["http://127.0.0.1:9/cifar-10-binary.tar.gz"])


# ------------------------------------------------------------------ the output folder
def test_out_that_is_a_file_or_under_a_file(tmp_path):
    spec, f = write_spec(tmp_path), tmp_path / "results.txt"
    f.write_text("mine")
    before = tree(tmp_path)
    for out in (f, f / "sub" / "dir"):
        r = invoke("run", spec, "--out", out, "--quiet")
        assert error(r) == f"error: {f} is a file, not a folder; choose another --out"
    assert tree(tmp_path) == before and f.read_text() == "mine"


def test_out_that_cannot_be_written(tmp_path, monkeypatch):
    """A read-only folder (simulated: the tests may run as root, whom permissions do not stop)."""
    spec, out = write_spec(tmp_path), tmp_path / "ro"
    out.mkdir()
    real_open = os.open

    def refuse(path, *args, **kwargs):
        if str(path).startswith(str(out)):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    r = invoke("run", spec, "--out", out, "--quiet")
    assert error(r) == (f"error: permission denied: cannot write {out / '.lock'}; choose a folder you can write in "
                        "(--out) or make it writable, then re-run the same command to resume (complete runs are kept)")
    assert tree(out) == []


def test_unreadable_and_non_utf8_spec_files(tmp_path, monkeypatch):
    latin = tmp_path / "latin.toml"
    latin.write_bytes('description = "café"\n'.encode("latin-1"))
    r = invoke("run", latin, "--out", tmp_path / "out", "--quiet")
    assert error(r) == f"error: {latin}: not UTF-8 text (byte 0xe9 at position 18); save the spec as UTF-8"
    secret = write_spec(tmp_path, "secret")
    real = Path.read_text

    def refuse(self, *args, **kwargs):
        if self == secret:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", refuse)
    r = invoke("show", secret)
    assert error(r) == f"error: {secret}: cannot read it (Permission denied); check that it is a readable file"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("failure", ["disk full", "runs/ read-only"])
def test_a_write_failing_mid_run_loses_nothing_and_the_same_command_resumes(tmp_path, vglab_cache, monkeypatch,
                                                                            failure):
    """The third run's Parquet file cannot be written (simulated; errno as the OS gives it)."""
    spec, out = write_spec(tmp_path), tmp_path / "out"
    code = errno.ENOSPC if failure == "disk full" else errno.EACCES
    real = store._atomic_via
    writes = []

    def failing(path, write):
        if path.suffix == ".parquet":
            writes.append(path)
            if len(writes) == 7:  # the third run's first table
                raise OSError(code, os.strerror(code), str(path))
        return real(path, write)

    monkeypatch.setattr(store, "_atomic_via", failing)
    r = invoke("run", spec, "--out", out, "--workers", 1, "--quiet")
    bad = writes[-1]
    fix = ("no space left on the device holding {}; free some space" if code == errno.ENOSPC else
           "permission denied: cannot write {}; choose a folder you can write in (--out) or make it writable")
    assert error(r) == "error: " + fix.format(bad) + ", then re-run the same command to resume (complete runs are kept)"
    assert len(store.completed_run_ids(out)) == 2 and not (bad.parent / store.DONE).exists()
    assert not (out / store.LOCK).exists() and not list(out.rglob("*.tmp"))
    complete = {p.name: (p / store.DONE).stat().st_mtime_ns for p in (out / "runs").iterdir() if (p / "DONE").exists()}

    monkeypatch.setattr(store, "_atomic_via", real)
    r = invoke("run", spec, "--out", out, "--workers", 1, "--quiet")
    assert r.exit_code == 0, r.output
    assert len(runs_table(out)) == 8 and json.loads((out / "meta.json").read_text())["invocations"][-1]["trained"] == 6
    assert {k: (out / "runs" / k / store.DONE).stat().st_mtime_ns for k in complete} == complete  # kept as they were


# ------------------------------------------------------------------ options and data
@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["run", "dry-run"])
def test_device_gpu_without_a_gpu_build_of_jax(tmp_path, monkeypatch, dry_run):
    from vglab.train import parallel

    monkeypatch.setattr(parallel, "gpu_platforms_installed", lambda: [])
    monkeypatch.setattr(parallel, "configure_this_process", lambda env: True)  # keep this process on the CPU
    r = invoke("run", write_spec(tmp_path), "--out", tmp_path / "out", "--device", "gpu", "--quiet", *dry_run)
    assert error(r) == ("error: --device gpu needs a GPU build of JAX, and none is installed (pip install -U "
                        "'jax[cuda12]' on a machine with an NVIDIA GPU); or use --device cpu")
    assert not (tmp_path / "out").exists()


def test_missing_dataset_prints_the_whole_message(tmp_path, offline):
    empty = tmp_path / "EMPTY"
    empty.mkdir()
    r = invoke("run", write_spec(tmp_path), "--dataset", "mnist", "--data-dir", empty, "--out", tmp_path / "out", "-q")
    msg = error(r)
    lines = msg.splitlines()
    assert lines[0] == "error: dataset 'mnist' not found; searched:"
    assert lines[1] == f"  {empty / 'mnist'}  (--data-dir)" and "http://127.0.0.1:9/" in msg
    assert lines[-1].startswith("To fix: run `vglab data fetch mnist`")
    assert not (tmp_path / "out").exists()


def test_offline_fetch_prints_the_whole_message(tmp_path, offline):
    r = invoke("data", "fetch", "cifar10", "--cache-dir", tmp_path / "cache", "--quiet")
    lines = error(r).splitlines()
    assert lines[0] == "error: could not download cifar-10-binary.tar.gz:"
    assert lines[1].startswith("  http://127.0.0.1:9/cifar-10-binary.tar.gz: ")
    folder = tmp_path / "cache" / sources.get_source("cifar10").folder
    assert lines[2] == (f"To fix: check the network connection and run this command again, or put the files in "
                        f"{folder} yourself (they are checksum-verified), or point --data-dir or $VGLAB_DATA at a "
                        "folder holding them.")
    assert not list((tmp_path / "cache").rglob("*.tar.gz"))


def test_batch_larger_than_the_training_set_is_refused_before_training(tmp_path):
    """With the default workers it was a worker's 90-line traceback; now the parent refuses."""
    out = tmp_path / "out"
    r = invoke("run", write_spec(tmp_path), "--train-size", 20, "--out", out, "--quiet")
    assert error(r) == ("error: tiny: batch_size = 32 is larger than the training set (20 examples of digits); "
                        "set batch_size to at most 20 or raise train_size")
    assert not out.exists()


def test_a_refused_start_writes_nothing_and_the_corrected_command_runs(tmp_path, vglab_cache):
    spec, out = write_spec(tmp_path), tmp_path / "out"
    r = invoke("run", spec, "--train-size", 5000, "--out", out, "--quiet")
    assert "train_size" in error(r) and not out.exists()
    r = invoke("run", spec, "--train-size", 200, "--seeds", 1, "--epochs", 1, "--out", out, "--workers", 1, "--quiet")
    assert r.exit_code == 0, r.output
    assert len(runs_table(out)) == 4 and (runs_table(out)["train_size"] == 200).all()


def test_a_folder_without_complete_runs_is_never_refused(tmp_path, vglab_cache):
    spec, out = write_spec(tmp_path), tmp_path / "out"
    assert invoke("run", spec, "--seeds", 1, "--epochs", 1, "--out", out, "-w", 1, "-q").exit_code == 0
    for done in out.glob("runs/*/DONE"):  # as if killed before any run was complete
        done.unlink()
    r = invoke("run", spec, "--seeds", 1, "--epochs", 2, "--out", out, "-w", 1, "-q")  # another spec: replaced
    assert r.exit_code == 0, r.output
    assert (runs_table(out)["epochs"] == 2).all() and len(runs_table(out)) == 4
    assert len(json.loads((out / "meta.json").read_text())["invocations"]) == 1  # the old one's record went too


def test_damaged_experiment_toml_and_meta_json(tmp_path, vglab_cache):
    spec, out = write_spec(tmp_path), tmp_path / "out"
    assert invoke("run", spec, "--seeds", 1, "--epochs", 1, "--out", out, "-w", 1, "-q").exit_code == 0
    toml = out / "experiment.toml"
    good = toml.read_text()
    toml.write_text("name = = 1\n")
    r = invoke("report", out)
    assert error(r) == (f"error: {toml} is damaged (Invalid value (at line 1, column 8)); re-run the `vglab run` "
                        "command that made these results: it rewrites the file and keeps the runs")
    # the same command rewrites it and keeps the runs; another spec is refused, naming the damage
    r = invoke("run", spec, "--seeds", 1, "--epochs", 2, "--out", out, "-w", 1, "-q")
    assert error(r) == (f"error: {out} holds 4 complete runs of another experiment and a damaged experiment.toml; "
                        "choose another --out, or pass --overwrite to delete them")
    r = invoke("run", spec, "--seeds", 1, "--epochs", 1, "--out", out, "-w", 1, "-q")
    assert r.exit_code == 0, r.output
    assert toml.read_text() == good and json.loads((out / "meta.json").read_text())["invocations"][-1]["trained"] == 0

    meta = out / "meta.json"
    meta.write_text("{")
    r = invoke("report", out)
    assert error(r) == (f"error: {meta} is damaged (Expecting property name enclosed in double quotes: line 1 column 2 "
                        "(char 1)); re-run the `vglab run` command that made these results: it rewrites the file and "
                        "keeps the runs")
    assert invoke("run", spec, "--seeds", 1, "--epochs", 1, "--out", out, "-w", 1, "-q").exit_code == 0
    assert json.loads(meta.read_text())["invocations"][-1]["skipped"] == 4


def test_overwrite_removes_what_was_made_from_the_deleted_runs(tmp_path, vglab_cache):
    from vglab.report import html

    spec, root = write_spec(tmp_path), tmp_path / "root"
    out = root / "tiny"
    assert invoke("run", spec, "--seeds", 1, "--epochs", 1, "--out", out, "-w", 1, "-q").exit_code == 0
    (out / "report.html").write_text("<p>4 runs of 1 epoch</p>")
    (out / "figures").mkdir()
    (out / "figures" / "loss.png").write_bytes(b"png")
    html.write_index([out], root / "index.html", refresh_pages=False)
    other = tmp_path / "other"
    html.write_index([out], other / "index.html", refresh_pages=False)  # elsewhere, names another folder
    (tmp_path / "keep.html").write_text("unrelated")
    r = invoke("run", spec, "--seeds", 1, "--epochs", 2, "--out", out, "-w", 1, "-q", "--overwrite")
    assert r.exit_code == 0, r.output
    assert not (out / "report.html").exists() and not (out / "figures").exists()
    assert not (root / "index.html").exists()  # its entry for these results was stale
    assert (other / "index.html").exists() and (tmp_path / "keep.html").exists()
    assert len(json.loads((out / "meta.json").read_text())["invocations"]) == 1


# ------------------------------------------------------------------ reproduce --presets
def test_reproduce_presets_empty_or_repeated(tmp_path):
    root = tmp_path / "root"
    r = invoke("reproduce", "--presets", "", "--out", root)
    assert error(r) == ("error: --presets '' names an empty preset; give comma-separated preset names or spec files "
                        "(vglab list), or leave out --presets to run them all")
    r = invoke("reproduce", "--presets", "large-params,,r-sweep", "--out", root)
    assert error(r).startswith("error: --presets 'large-params,,r-sweep' names an empty preset")
    r = invoke("reproduce", "--presets", "large-params, large-params", "--out", root)
    assert error(r) == "error: presets: 'large-params' given more than once; name each experiment once"
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    r = invoke("reproduce", "--presets", f"{write_spec(a)},{write_spec(b)}", "--out", root)
    assert error(r) == (f"error: {a / 'tiny.toml'} and {b / 'tiny.toml'} are both named 'tiny', and each experiment "
                        "gets the folder of its name; set a distinct name = in one of them")
    assert not root.exists()


# ------------------------------------------------------------------ names and limits
@pytest.mark.parametrize("name, safe", [("../../escaped", "escaped"), ("/tmp/vglab-escaped", "tmp-vglab-escaped"),
                                        (".hidden", "hidden"), ("a/b", "a-b"), ("..", "my-experiment")])
def test_a_spec_name_cannot_leave_the_results_folder(tmp_path, monkeypatch, name, safe):
    monkeypatch.chdir(tmp_path)
    f = write_spec(tmp_path, "evil")
    f.write_text(f'name = "{name}"\n' + f.read_text())
    for args in (["run", f, "-q"], ["run", f, "-q", "--overwrite"], ["reproduce", "--presets", f, "-q"]):
        r = invoke(*args)
        assert error(r) == (f"error: {f}: name {name!r} is not a plain folder name: use at most 100 letters, digits, "
                            f"'-', '_' and '.', not starting with '.', e.g. name = \"{safe}\" (the results go to "
                            "--out, else vglab-results/<dataset>/<name>)")
    assert tree(tmp_path) == ["evil.toml"] and not Path("/tmp/vglab-escaped").exists()


def test_a_file_name_that_is_not_a_folder_name(tmp_path):
    f = tmp_path / "my spec.toml"
    f.write_text(write_spec(tmp_path).read_text())
    r = invoke("show", f)
    assert error(r).endswith("; the name comes from the file's name: rename the file or set name = in it")
    assert invoke("show", f, "--dataset", "digits").exit_code == 2


@pytest.mark.parametrize("body, option, words", [
    ('r = "logspace(1e-3, 1e2, 1000000000000)"\npenalty = "l2"', [],
     "r: 'logspace(1e-3, 1e2, 1000000000000)': n = 1000000000000 is above the limit of 1000 values per "
     "logspace/linspace (each value is another configuration to train)"),
    ("seeds = 1000000000000", [], "seeds: 1000000000000 is above the limit of 100 seeds"),
    ("", ["--seeds", 1000], "--seeds: 1000 is above the limit of 100 seeds (every seed repeats every configuration)"),
    ("depth = 10000", [], "depth: 10000 is above the limit of 100 layers (compiling grows with depth"),
    ("width = [8, 100000]", [], "width: 100000 is above the limit of 1024 units per layer"),
    ('alpha = "linspace(1, 5, 40)"\ninit = ["normal(std=1)", "normal(std=2)", "normal(std=3)"]\nseeds = 10', [],
     "the arms give up to 120 configurations x 10 seeds = 1200 is above the limit of 1000 runs per experiment"),
])
def test_sizes_above_the_limits_fail_at_once_with_the_number(tmp_path, body, option, words):
    """Each would build (show) or train for minutes to forever; a 1e12-long sweep or seed
    list would never finish being built, so these fail only if they are checked first."""
    f = tmp_path / "big.toml"
    f.write_text(body + "\n")
    fix = "; lower it, or pass --allow-large (Python: allow_large=True) to go beyond it"
    for cmd in ("show", "run"):
        r = invoke(cmd, f, *option, *(["--out", tmp_path / "out"] if cmd == "run" else []))
        msg = error(r)
        assert words in msg and msg.endswith(fix) and len(msg.splitlines()) == 1, msg
    assert not (tmp_path / "out").exists()


def test_allow_large_lifts_the_limits(tmp_path):
    f = tmp_path / "big.toml"
    f.write_text("depth = 150\nseeds = 101\n")
    assert invoke("show", f).exit_code == 2
    r = invoke("show", f, "--allow-large")
    assert r.exit_code == 0 and "101 runs: 1 configurations x 101 seeds" in r.output, r.output


def test_more_workers_than_cores(tmp_path):
    from vglab.experiments import runner
    from vglab.experiments.spec import SpecError, load_spec
    from vglab.train.parallel import available_cores

    n = len(available_cores())
    r = invoke("run", write_spec(tmp_path), "--workers", n + 1, "--out", tmp_path / "out", "-q")
    assert error(r) == (f"error: --workers {n + 1} is above the limit of {n} worker processes, one per core this "
                        "process may use (each is a process of ~300 MB on its own core; more only share the cores); "
                        "lower it, or pass --allow-large (Python: allow_large=True) to go beyond it")
    assert not (tmp_path / "out").exists()
    spec = load_spec(write_spec(tmp_path))
    with pytest.raises(SpecError, match="--workers"):
        runner._validate_before_writing([spec], runner.placement(n + 1, "local", None, "cpu"), allow_large=False)
    runner._validate_before_writing([spec], runner.placement(n + 1, "local", None, "cpu"), allow_large=True)
    runner._validate_before_writing([spec], runner.placement(64, "ray", "auto", "cpu"), allow_large=False)  # a cluster's cores


# ------------------------------------------------------------------ signals
def test_an_interrupted_then_terminated_run_says_how_to_resume_each_time(tmp_path, vglab_cache):
    """Ctrl-C, then SIGTERM to the same command run again (one sweep serves both signals:
    the second run resumes the first's folder), each once some of its runs are complete: the
    exit code and the one line saying how to resume, complete runs kept, the lock released;
    then the same command trains only the runs not done."""
    spec = write_spec(tmp_path)
    spec.write_text(spec.read_text().replace("epochs = 2", "epochs = 40"))  # ~1 s per unit: time to interrupt
    out, kept = tmp_path / "out", {}
    for sig, code, word in [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]:
        # SIGINT handled in the command, as in a terminal: a shell's background job (pytest ... &)
        # ignores it, a child inherits that, and a Python started with SIGINT ignored keeps ignoring
        # it (no KeyboardInterrupt). A handler, unlike "ignore", is reset to the default by exec.
        handler = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            proc = subprocess.Popen([sys.executable, "-m", "vglab.cli", "run", str(spec), "--out", str(out),
                                     "--workers", "2", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, start_new_session=True)
        finally:
            signal.signal(signal.SIGINT, handler)
        deadline = time.time() + 240
        while len(store.completed_run_ids(out)) <= len(kept) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)  # until this run has completed one of its own
        assert proc.poll() is None, "the run ended before it could be interrupted"
        os.killpg(proc.pid, sig) if sig == signal.SIGINT else proc.send_signal(sig)  # Ctrl-C reaches the whole group
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == code and stderr == f"{word}; re-run the same command to resume\n" and stdout == ""
        done = store.completed_run_ids(out)
        assert len(kept) < len(done) < 8 and not (out / store.LOCK).exists()
        assert {d: (out / store.RUNS / d / store.DONE).stat().st_mtime_ns for d in kept} == kept  # kept as they were
        kept = {d: (out / store.RUNS / d / store.DONE).stat().st_mtime_ns for d in done}
    r = invoke("run", spec, "--out", out, "--workers", "1", "--quiet")  # the same command, in this process (no
    assert r.exit_code == 0, r.output  # three more JAX processes to start): it trains only the runs not done
    assert len(runs_table(out)) == 8
    assert {d: (out / store.RUNS / d / store.DONE).stat().st_mtime_ns for d in kept} == kept


# ------------------------------------------------------------------ scripts
def test_a_script_without_the_main_guard_is_told_to_add_it(tmp_path, vglab_cache):
    """Workers are spawned and import the script: a top-level vglab.run() ran again in each
    (a lock error naming another pid, then "worker 0 died")."""
    from vglab.experiments.runner import MAIN_GUARD

    spec, out = write_spec(tmp_path), tmp_path / "out"
    call = f"vglab.run({str(spec)!r}, out={str(out)!r}, workers=2, seeds=1, progress=False)"
    script = tmp_path / "study.py"
    script.write_text(f"import vglab\n\nres = {call}\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1] == f"RuntimeError: {script}, line 3: {MAIN_GUARD}"
    assert not out.exists()
    script.write_text(f"import vglab\n\ndef main():\n    {call}\n\nif __name__ == '__main__':\n    main()\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(runs_table(out)) == 4


def test_a_spawned_worker_importing_such_a_script_exits_with_the_same_words(monkeypatch):
    import multiprocessing as mp

    from vglab.experiments import runner

    monkeypatch.setattr(mp.current_process(), "_inheriting", True, raising=False)
    with pytest.raises(SystemExit, match="^error: each worker process imports the script"):
        runner._check_main_guard()


def test_a_signal_lost_in_a_gc_callback_is_delivered_again():
    """JAX's gc callback can be running when SIGTERM arrives: Python prints the handler's
    exception as "Exception ignored" and goes on. The CLI's unraisable hook re-sends it."""
    import gc

    from vglab import cli

    got, old_hook, old_handler = [], sys.unraisablehook, signal.getsignal(signal.SIGTERM)

    def raise_in_gc(phase, info):
        if phase == "start" and not got:
            cli._on_sigterm(signal.SIGTERM, None)  # as if the signal arrived here

    signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
    sys.unraisablehook = cli._redeliver_lost_signals
    gc.callbacks.append(raise_in_gc)
    try:
        gc.collect()
        deadline = time.time() + 5
        while not got and time.time() < deadline:
            time.sleep(0.01)
    finally:
        gc.callbacks.remove(raise_in_gc)
        sys.unraisablehook = old_hook
        signal.signal(signal.SIGTERM, old_handler)
    assert got == [signal.SIGTERM]
