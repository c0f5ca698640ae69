"""The `vglab` command: a thin shell over the Python API (`vglab.run`, ...).

    vglab list                                  the built-in experiments
    vglab show large-params                     what an experiment will run
    vglab run large-params --dataset mnist      train it (resumes where it stopped)
    vglab reproduce                             every preset on digits, then the report
    vglab report vglab-results/digits/large-params --open
    vglab data fetch mnist / vglab data info

Exit codes: 0 done, 1 failure (a bug, a crashed worker), 2 a problem the user can fix:
an invalid spec or option, a size above a limit, missing data, an output directory in use
by another process or that cannot be written (read-only, disk full); 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM). A problem the user can fix is printed whole, without
a traceback (VGLAB_DEBUG=1 shows it).
"""

from __future__ import annotations

import _thread
import contextlib
import errno
import os
import signal
import sys
import threading
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="vglab — the vanishing-gradient lab: why gradients vanish in sigmoid-type networks, and which "
                       "remedies work (Ven & Lederer 2021), measured.")
data_app = typer.Typer(no_args_is_help=True, help="The datasets: fetch them, see where they are.")
app.add_typer(data_app, name="data")
out = Console()
err = Console(stderr=True)


def _ignore_ctrl_c_when_spawned() -> None:
    """A worker or report writer this command spawns imports this module first (as the
    parent's main module). Ctrl-C reaches the whole process group and the parent stops
    them all: in them it only added a KeyboardInterrupt traceback under its message."""
    import multiprocessing as mp

    if getattr(mp.current_process(), "_inheriting", False):
        signal.signal(signal.SIGINT, signal.SIG_IGN)


_ignore_ctrl_c_when_spawned()


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    gpu = "gpu"


class Executor(str, Enum):
    local = "local"
    ray = "ray"


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that locks, workers and Ray are released."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _redeliver_lost_signals(unraisable) -> None:
    """`sys.unraisablehook`: an exception raised by a signal handler while Python runs a gc
    callback or a `__del__` (JAX registers a gc callback) is printed as "Exception ignored"
    and lost, and the command went on to finish with exit 0. Deliver the signal again a
    moment later, when the main thread is back in ordinary code."""
    sig = {Terminated: signal.SIGTERM, KeyboardInterrupt: signal.SIGINT}.get(unraisable.exc_type)
    if sig is None:
        sys.__unraisablehook__(unraisable)
        return
    threading.Timer(0.01, _thread.interrupt_main, (sig,)).start()


RESUME = "re-run the same command to resume"


@contextlib.contextmanager
def _user_errors(resumable: bool = False):
    """Problems the user can fix are printed whole, without traceback, with exit code 2;
    bugs keep their traceback. `resumable`: the command resumes when run again."""
    from rich.markup import escape

    from vglab.data import DataError
    from vglab.experiments.errors import SpecError
    from vglab.results.store import CALLER, StoreError

    def fail(msg: str, code: int):
        err.print(f"[red]error:[/red] {escape(msg)}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(code) from None

    token = CALLER.set("cli")  # messages name the options (--out), not the Python arguments
    try:
        yield
    except KeyboardInterrupt:
        err.print(f"interrupted; {RESUME}" if resumable else "interrupted", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    except Terminated:
        err.print(f"terminated; {RESUME}" if resumable else "terminated", highlight=False, soft_wrap=True)
        raise typer.Exit(128 + signal.SIGTERM) from None
    except (SpecError, StoreError, DataError, ValueError, ImportError, OSError) as e:
        if os.environ.get("VGLAB_DEBUG"):
            raise
        if isinstance(e, OSError) and e.errno is not None:
            fail(_os_error(e, resumable), 2)
        fail(str(e).strip() or type(e).__name__, 2)
    finally:
        CALLER.reset(token)


def _os_error(e: OSError, resumable: bool) -> str:
    """A file system error as what happened, to which file, and what to do."""
    path = e.filename if e.filename is not None else "a file"
    then = f", then {RESUME} (complete runs are kept)" if resumable else ""
    if e.errno == errno.ENOSPC:
        return f"no space left on the device holding {path}; free some space{then}"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "read-only file system" if e.errno == errno.EROFS else "permission denied"
        return f"{why}: cannot write {path}; choose a folder you can write in (--out) or make it writable{then}"
    if e.errno == errno.EEXIST:
        return f"{path} exists and is not a folder; choose another --out"
    if e.errno == errno.ENOTDIR:
        return f"{path}: part of this path is a file, not a folder; choose another --out"
    if e.errno == errno.ENOENT:
        return f"{path}: no such file or folder"
    return f"{path}: {e.strerror or e}{then}"


def _set_device(device: Device) -> None:
    """Choose JAX's platform before JAX starts (here and in every worker)."""
    if device is not Device.auto:
        from vglab.train.parallel import configure_this_process, gpu_platform

        configure_this_process({"JAX_PLATFORMS": gpu_platform() if device is Device.gpu else "cpu"})


# ------------------------------------------------------------------ options shared by run and reproduce
DATASET = typer.Option(None, "--dataset", "-d", help="digits (embedded), mnist, cifar10, or the path of your own .npz "
                                                     "(x_train, y_train, x_test, y_test) (default: the spec's, else digits).")
EPOCHS = typer.Option(None, "--epochs", "-e", min=1, help="Override the number of epochs.")
SEEDS = typer.Option(None, "--seeds", "-s", min=1, help="Override the number of seeds (0..N-1).")
TRAIN_SIZE = typer.Option(None, "--train-size", min=1, help="Train on a fixed stratified subset of this many examples.")
DATA_DIR = typer.Option(None, "--data-dir", help="Folder with the dataset files (else $VGLAB_DATA, the cache, a download).")
DEVICE = typer.Option(Device.auto, "--device", case_sensitive=False, help="JAX platform: cpu, gpu or auto.")
WORKERS = typer.Option(None, "--workers", "-w", min=1,
                       help="Worker processes (default: one per core; 1 trains in this process). With --address: "
                            "at most this many Ray tasks at once (default: one per CPU of the cluster).")
EXECUTOR = typer.Option(Executor.local, "--executor", case_sensitive=False,
                        help="local worker processes, or a Ray cluster.")
ADDRESS = typer.Option(None, "--address", help="Ray cluster address, HOST:PORT of its head (checked before anything "
                                                "is written; default: start a local Ray instance).")
TENSORBOARD = typer.Option(False, "--tensorboard", help="Also write TensorBoard events to OUT/tensorboard/.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars.")
SET = typer.Option(None, "--set", help="Set any spec field, e.g. --set optimizer.eps=1e-10 or "
                                       "--set arms.0.alpha=[1,2] (repeatable; values are read as TOML).")
OVERWRITE = typer.Option(False, "--overwrite", help="Delete results of a different spec found in OUT.")
DRY_RUN = typer.Option(False, "--dry-run", help="Print the plan (runs, estimated time per experiment) and exit.")
SVG = typer.Option(False, "--svg", help="Also store every figure as SVG (default: PNG only).")
ALLOW_LARGE = typer.Option(False, "--allow-large",
                           help="Go beyond the size limits (runs, seeds, sweep length, depth, width, workers).")


def _progress(quiet: bool):
    """Bars on a terminal; plain lines when stderr is a file or a pipe (a log shows progress)."""
    from vglab.experiments.progress import for_stream

    return for_stream(not quiet, err)


def _print_plan(plan) -> None:
    for line in plan.lines():
        out.print(line, highlight=False, soft_wrap=True, markup=False)


def _print_ending(results_dirs: list[Path], last: str) -> None:
    """The end of `run` and `reproduce` on stderr: the claims' verdict counts, the diagnosis
    headline of each experiment (`vglab.report.doctor.ending`), then where the report is."""
    from rich.markup import escape

    try:
        from vglab.report.doctor import ending

        for line in ending(results_dirs):
            err.print(escape(line), soft_wrap=True, highlight=False)
    except Exception as e:  # the summary must not turn a finished run into a failure
        err.print(f"[yellow]warning:[/yellow] no summary: {escape(f'{type(e).__name__}: {e}')}", highlight=False)
    err.print(last, soft_wrap=True, highlight=False)


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_cell(x)}" for k, x in v.items()) if v else "-"
    return str(v)


# ------------------------------------------------------------------ commands
@app.command("list")
def list_cmd():
    """List the built-in experiments (presets).

    Example: [bold]vglab list[/bold]
    """
    from rich.table import Table

    import vglab

    table = Table("preset", "reproduces", "description", box=None, show_lines=False)
    for p in vglab.list_presets():
        table.add_row(f"[bold]{p['name']}[/bold]", p["reference"].split(" of the ")[0], p["description"])
    out.print(table)


def _arms_table(spec):
    """`vglab show`'s arms: the keys any arm sets, "-" where one means nothing."""
    from rich.table import Table

    from vglab.experiments.schema import ARM_KEYS

    arms = Table(title="arms (each a cross product)", title_justify="left", box=None)
    keys = [k for k in ARM_KEYS if k == "activation" or any(arm[k] not in ([None], [{}]) for arm in spec.arms)]
    arms.add_column("#")
    for k in keys:
        arms.add_column(k)
    for i, arm in enumerate(spec.arms):
        cells = [", ".join(_cell(v) for v in arm[k]) for k in keys]
        if arm["penalty"] == ["none"] and "r" in keys:
            cells[keys.index("r")] = "-"  # r means nothing without a penalty
        if set(arm["network"]) == {"model"}:  # your model: its factory sets its layers, its activation is its own
            for k in ("depth", "width"):
                if k in keys:
                    cells[keys.index(k)] = "-"
        if arm["activation"] == [None]:
            cells[keys.index("activation")] = "model's own"
        arms.add_row(str(i), *cells)
    return arms


def _runs_table(spec):
    """`vglab show`'s runs: one row per configuration, with its group and seed 0's run id."""
    from rich.table import Table

    groups = spec.groups()
    runs = Table(title=f"{len(spec.expand())} runs: {len(spec.configurations())} configurations x {len(spec.seeds)} "
                       f"seeds, in {len(groups)} vectorized groups", title_justify="left", box=None)
    for col in ("configuration (label)", "group", "seeds", "run id (seed 0)"):
        runs.add_column(col)
    for group, members in groups.items():
        by_label: dict[str, list] = {}
        for r in members:
            by_label.setdefault(r.label, []).append(r)
        for label, rs in by_label.items():
            runs.add_row(label, group, ",".join(str(r.seed) for r in rs), rs[0].run_id)
    return runs


@app.command()
def show(preset: str = typer.Argument(..., help="A preset name or a spec .toml file."),
         dataset: Optional[str] = DATASET, epochs: Optional[int] = EPOCHS, seeds: Optional[int] = SEEDS,
         train_size: Optional[int] = TRAIN_SIZE, set_: Optional[list[str]] = SET, allow_large: bool = ALLOW_LARGE,
         toml: bool = typer.Option(False, "--toml", help="Print the experiment as a spec file to start your own from.")):
    """Show what an experiment runs: its settings, arms, runs and groups.

    Examples: [bold]vglab show r-sweep[/bold] · [bold]vglab show my-spec.toml --dataset mnist[/bold] ·
    [bold]vglab show r-sweep --toml > mine.toml[/bold]
    """
    from vglab.experiments.spec import load_spec

    with _user_errors():
        spec = load_spec(preset, sets=set_, dataset=dataset, epochs=epochs, seeds=seeds, train_size=train_size,
                         allow_large=allow_large)
    if toml:
        import tomli_w

        typer.echo(f"# vglab spec, from `vglab show {preset} --toml`; format: README.md, 'Experiment specs'\n"
                   + tomli_w.dumps(spec.to_spec_file()), nl=False)
        return
    out.print(f"[bold]{spec.name}[/bold]: {spec.description}")
    if spec.reference:
        out.print(f"reproduces: {spec.reference}")
    runs = spec.expand()
    optimizers = sorted({r.optimizer_setting().label for r in runs})
    rates = sorted({r.learning_rate for r in runs})
    records = f" · a record every {spec.record_every} epochs" if spec.record_every > 1 else ""
    out.print(f"dataset {spec.dataset} · {spec.epochs} epochs{records} · seeds {list(spec.seeds)} · batch "
              f"{spec.batch_size} · {' / '.join(optimizers)} lr {', '.join(f'{r:g}' for r in rates)} · train size "
              f"{spec.train_size or 'all'} · probes {', '.join(spec.probes)}"
              + (f" (every {spec.probe_every} steps)" if spec.probe_every > 1 else ""), soft_wrap=True)
    out.print(_arms_table(spec))
    models = sorted({m for arm in spec.arms for m in arm["model"] if m and not m.startswith("vglab.")})
    if models:
        out.print(f"note: this spec names your own model ({', '.join(models)}): vglab imports that code and runs it "
                  "to build the model, for `vglab run` (even with --dry-run) and in every worker, as any Python "
                  "script would; run specs only from people you trust.", highlight=False, soft_wrap=True,
                  markup=False)
    out.print(_runs_table(spec))


@app.command()
def run(preset: str = typer.Argument(..., help="A preset name (vglab list) or a spec .toml file."),
        dataset: Optional[str] = DATASET, epochs: Optional[int] = EPOCHS, seeds: Optional[int] = SEEDS,
        out_dir: Optional[Path] = typer.Option(None, "--out", "-o",
                                               help="Results directory (default: vglab-results/DATASET/PRESET)."),
        data_dir: Optional[Path] = DATA_DIR, device: Device = DEVICE, train_size: Optional[int] = TRAIN_SIZE,
        workers: Optional[int] = WORKERS, executor: Executor = EXECUTOR, address: Optional[str] = ADDRESS,
        tensorboard: bool = TENSORBOARD, quiet: bool = QUIET, overwrite: bool = OVERWRITE,
        set_: Optional[list[str]] = SET, allow_large: bool = ALLOW_LARGE, dry_run: bool = DRY_RUN):
    """Train an experiment into a results directory; re-running the same command resumes.

    Complete runs are kept and the rest are trained; Ctrl-C or a kill loses at most the runs in flight.

    Examples:
      [bold]vglab run large-params[/bold]
      [bold]vglab run r-sweep --dataset mnist --data-dir /data --tensorboard[/bold]
      [bold]vglab run my-spec.toml --epochs 3 --seeds 1 --workers 1[/bold]
      [bold]vglab run alpha-sweep --executor ray --address auto[/bold]
    """
    import vglab

    with _user_errors(resumable=True):
        _set_device(device)
        res = vglab.run(preset, dataset=dataset, epochs=epochs, seeds=seeds, train_size=train_size, set=set_, out=out_dir,
                        data_dir=data_dir, workers=workers, executor=executor.value, address=address,
                        tensorboard=tensorboard, device=device.value, progress=not quiet, overwrite=overwrite,
                        allow_large=allow_large, dry_run=dry_run, _progress=_progress(quiet))
    if dry_run:
        _print_plan(res)
        return
    if not quiet:
        _print_ending([Path(res.path)], f"{len(res.runs)} runs complete; report: [bold]vglab report {res.path}[/bold]")
    typer.echo(str(res.path))


@app.command()
def reproduce(dataset: str = typer.Option("digits", "--dataset", "-d", help="digits (embedded), mnist or cifar10."),
              out_dir: Optional[Path] = typer.Option(None, "--out", "-o",
                                                     help="Root folder (default: vglab-results/DATASET); each "
                                                          "experiment goes to OUT/PRESET, the index to OUT/index.html."),
              presets: Optional[str] = typer.Option(None, "--presets", help="Comma-separated subset of presets."),
              epochs: Optional[int] = EPOCHS, seeds: Optional[int] = SEEDS, train_size: Optional[int] = TRAIN_SIZE,
              data_dir: Optional[Path] = DATA_DIR, device: Device = DEVICE, workers: Optional[int] = WORKERS,
              executor: Executor = EXECUTOR, address: Optional[str] = ADDRESS, tensorboard: bool = TENSORBOARD,
              quiet: bool = QUIET, overwrite: bool = OVERWRITE, set_: Optional[list[str]] = SET,
              allow_large: bool = ALLOW_LARGE,
              report: bool = typer.Option(True, "--report/--no-report", help="Write the HTML report and index."),
              svg: bool = SVG, dry_run: bool = DRY_RUN):
    """Run every preset on one dataset, then write each experiment's report and the index page.

    The presets are the reference study's figures, then its open questions; all share one pool of workers.

    Examples:
      [bold]vglab reproduce[/bold]                      (digits, a few minutes on a laptop)
      [bold]vglab reproduce --dataset mnist --data-dir /data[/bold]
    """
    import vglab

    with _user_errors(resumable=True):
        _set_device(device)
        names = None if presets is None else [p.strip() for p in presets.split(",")]
        if names is not None and not all(names):
            raise ValueError(f"--presets {presets!r} names an empty preset; give comma-separated preset names or "
                             "spec files (vglab list), or leave out --presets to run them all")
        index = vglab.reproduce(dataset=dataset, out=out_dir, presets=names, epochs=epochs, seeds=seeds,
                                train_size=train_size, data_dir=data_dir, workers=workers, executor=executor.value,
                                address=address, tensorboard=tensorboard, device=device.value,
                                progress=not quiet, overwrite=overwrite, report=report, set=set_,
                                allow_large=allow_large, _progress=_progress(quiet),
                                figure_formats=("png", "svg") if svg else ("png",), dry_run=dry_run,
                                _warn=lambda m: err.print(f"[yellow]warning:[/yellow] {m}", highlight=False))
    if dry_run:
        _print_plan(index)
        return
    if not quiet:
        root = Path(index) if Path(index).is_dir() else Path(index).parent
        _print_ending(sorted(p.parent for p in root.glob("*/experiment.toml")), f"report: [bold]{index}[/bold]")
    typer.echo(str(index))


@app.command()
def schema():
    """Print the JSON schema of a spec file (for editors that complete TOML against a schema).

    Example: [bold]vglab schema > vglab-spec.schema.json[/bold], then start your spec with
    [bold]#:schema ./vglab-spec.schema.json[/bold]
    """
    import json

    from vglab.experiments.schema import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


@app.command()
def report(results_dir: Path = typer.Argument(..., help="A results directory (vglab run ... --out DIR), or a "
                                                        "reproduce root (vglab reproduce --out DIR)."),
           open_: bool = typer.Option(False, "--open", help="Open the page in a browser."), svg: bool = SVG,
           workers: Optional[int] = typer.Option(None, "--workers", "-w", min=1,
                                                 help="Of a reproduce root: processes drawing its pages (default: "
                                                      "one per core; 1 draws in this process)."),
           quiet: bool = QUIET):
    """Write the HTML report of a results directory and print its path. Of a reproduce root:
    redraw every experiment's page and the index, and print the index's path.

    Examples:
      [bold]vglab report vglab-results/digits/large-params --open[/bold]
      [bold]vglab report vglab-results/digits[/bold]      (every page of vglab reproduce, and its index)
    """
    import vglab

    with _user_errors():
        page = vglab.report(results_dir, open=open_, figure_formats=("png", "svg") if svg else ("png",),
                            workers=workers, _progress=_progress(quiet))
    typer.echo(str(page))


@app.command()
def doctor(results_dir: Path = typer.Argument(..., help="A results directory (a preset's, your own model's, a "
                                                        "vglab.Recorder's)."),
           json_: bool = typer.Option(False, "--json", help="Print the findings as one JSON list (for other tools)."),
           try_: bool = typer.Option(False, "--try", help="Write a remedy sweep on the same model and data "
                                                          "(RESULTS-remedies.toml)."),
           run_: bool = typer.Option(False, "--run", help="With --try: run the sweep and say which remedy moved "
                                                          "which finding."),
           label: Optional[str] = typer.Option(None, "--label", help="With --try: the configuration to treat "
                                                                     "(default: the first with a finding)."),
           seeds: int = typer.Option(3, "--seeds", min=2, help="With --try: seeds of the sweep (intervals need 2+)."),
           epochs: Optional[int] = EPOCHS, workers: Optional[int] = WORKERS, quiet: bool = QUIET):
    """Diagnose a results directory: per run and layer, vanishing / exploding / saturated / dead /
    frozen, the cause, from which epoch, and the remedies measured to move it.

    Examples:
      [bold]vglab doctor vglab-results/digits/many-layers[/bold]
      [bold]vglab doctor vglab-results/digits/many-layers --json[/bold]
      [bold]vglab doctor vglab-results/digits/many-layers --try --run[/bold]
    """
    import json

    from vglab.report import doctor as doctor_mod
    from vglab.report import remedies
    from vglab.results.store import StoreError, load

    def say(line: str) -> None:
        out.print(line, highlight=False, soft_wrap=True, markup=False)

    with _user_errors(resumable=run_):
        if run_ and not try_:
            raise ValueError("--run runs the remedy sweep of --try; give both (vglab doctor PATH --try --run)")
        if not (results_dir / "runs").is_dir():
            raise StoreError(f"no results directory at {results_dir} (no runs/ folder); give a folder written by "
                             "vglab run, vglab reproduce or vglab.Recorder")
        d = remedies.diagnose(load(results_dir))
        if json_ and not try_:
            typer.echo(json.dumps(d.to_json(), indent=1))
            return
        for line in [f"vglab doctor {results_dir} ({len(d.runs)} runs)"] + d.lines():
            say(line)
        eff = remedies.effects(load(results_dir), d)
        if eff:
            say("\nremedy sweep (each arm against the baseline, paired over seeds):")
            for e in eff:
                say("  " + e.text())
        if try_:
            _doctor_try(results_dir, d, label, seeds, epochs, run_, workers, quiet, say)


def _doctor_try(results_dir: Path, d, label, seeds: int, epochs, run_: bool, workers, quiet: bool, say) -> None:
    """`vglab doctor --try [--run]`: the remedy sweep of one configuration (written; with --run trained and
    its effects printed), or, for a folder vglab did not train, the suggested changes."""
    from vglab.report import doctor as doctor_mod
    from vglab.report import remedies

    treat = label or next((f.label for f in d.findings if f.finding), None)
    if treat is None:
        say("\n--try: no configuration has a finding; give --label to sweep remedies anyway")
        return
    if not (results_dir / "experiment.toml").exists():
        say(f"\n--try: {results_dir} was not trained by vglab (no experiment.toml), so vglab cannot run its "
            "loop; suggested changes to your own training step, untested on this model (each with the "
            "evidence measured on the closest case):")
        for line in remedies.suggested_changes(d, treat):
            say("  " + line)
        return
    spec_file = remedies.write_sweep(results_dir, treat, seeds=seeds, epochs=epochs)
    say(f"\nremedy sweep for {treat}: {spec_file}")
    if not run_:
        say(f"run it: vglab run {spec_file} --out {remedies.sweep_dir(results_dir)}")
        return
    import vglab

    res = vglab.run(str(spec_file), out=remedies.sweep_dir(results_dir), workers=workers, progress=not quiet,
                    _progress=_progress(quiet))
    eff = remedies.effects(res, doctor_mod.diagnose(res))
    say(f"\nwhich remedy moved which finding ({res.path}; paired over {seeds} seeds):")
    for e in eff or []:
        say("  " + e.text())
    if not eff:
        say("  the baseline of the sweep has no finding in these runs")
    say(f"report: {vglab.report(res.path)}")


@data_app.command("fetch")
def data_fetch(name: str = typer.Argument(..., help="digits, mnist or cifar10."),
               cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where to keep it (default: "
                                                                                   "$VGLAB_CACHE or ~/.cache/vglab)."),
               quiet: bool = QUIET):
    """Download a dataset into the cache (checksum-verified; skipped when already there).

    Example: [bold]vglab data fetch mnist[/bold]
    """
    from vglab.data import DataError, default_cache_dir, fetch
    from vglab.data.sources import get_source

    with _user_errors():
        try:
            path = fetch(name, cache_dir=cache_dir, quiet=quiet)
        except DataError as e:
            where = Path(cache_dir or default_cache_dir()) / (get_source(name).folder or "")
            raise DataError(f"{e}\nTo fix: check the network connection and run this command again, or put the "
                            f"files in {where} yourself (they are checksum-verified), or point --data-dir or "
                            "$VGLAB_DATA at a folder holding them.") from None
    typer.echo(str(path))


@data_app.command("info")
def data_info(data_dir: Optional[Path] = DATA_DIR,
              verify: bool = typer.Option(True, "--verify/--no-verify", help="Check the files' checksums.")):
    """Show where each dataset is (or that it is missing), its size and checksum status.

    Example: [bold]vglab data info --data-dir /data[/bold]
    """
    from rich.table import Table

    from vglab.data import info

    with _user_errors():
        rows = info(data_dir, verify_checksums=verify)
    table = Table("dataset", "status", "train", "test", "image", "MB", "found in", "path / problem", box=None)
    colors = {"ok": "green", "embedded": "green", "unverified": "yellow", "missing": "red", "corrupt": "red"}
    for r in rows:
        c = colors.get(r["status"], "white")
        table.add_row(r["name"], f"[{c}]{r['status']}[/{c}]", f"{r['n_train']:,}", f"{r['n_test']:,}",
                      "x".join(map(str, r["image_shape"])), f"{r['bytes'] / 1e6:.1f}", r["found_in"] or "-",
                      "; ".join(r["problems"]) or (r["path"] or ""))
    out.print(table)


def main() -> None:
    """Entry point (`vglab`, `python -m vglab.cli`)."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    sys.unraisablehook = _redeliver_lost_signals
    try:
        app()
    except Terminated:  # outside a command's own handling (_user_errors)
        err.print("terminated", highlight=False)
        raise SystemExit(128 + signal.SIGTERM) from None


if __name__ == "__main__":
    main()
