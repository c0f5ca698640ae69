"""What is kept: one directory per experiment, one sub-directory per run.

Layout (see DESIGN.md)::

    OUT/experiment.toml  meta.json  .lock
    OUT/runs/<run_id>/run.json epochs.parquet grads.parquet activations.parquet
                      histograms.npz final_grads.npz DONE

Every file is written to a temporary name and renamed into place, and a run counts
as complete only once its `DONE` marker exists (written last), so a process killed at
any moment leaves either a complete run or one that the next invocation redoes. The one
exception is a run that `vglab.Recorder` writes record by record (run.json says
`"recording": true` until its DONE): `load` reads it as far as its epochs.parquet goes
(a record's last file), so a killed process leaves what it recorded readable. Every
file gets the same mode, 0666 less the user's umask (`vglab.data.files`).
`load` reads only complete runs, into tidy pandas tables that all carry `run_id`.

`OUT/runs.parquet` is the `runs` table of the complete runs in one file, for analysis
tools that read Parquet (pandas, polars, DuckDB), rewritten (atomically) when an
invocation has stored an experiment's runs (`write_runs_table`). `run.json` stays the
source: it is written with its run, and `load` reads it (so a table can never be stale).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vglab.data import files
from vglab.schema import PARAMS, hist_edges

RUNS = "runs"
DONE = "DONE"
RUNS_TABLE = "runs.parquet"
PARQUET_COMPRESSION = "zstd"
LOCK = ".lock"
TABLES = ("epochs", "grads", "activations")
RECORDING = "recording"  # run.json: a Recorder's run that has no DONE yet (see `recording_run_ids`)
# What each table holds (`Results.table(name)`; the columns: DESIGN.md, "results store").
TABLE_HELP = {
    "runs": "one row per run: its configuration (label, network, depth, width, activation, init, penalty, r, "
            "alpha, optimizer, seed, ...) and the facts stored when it was trained (n_params, n_classes, n_in, "
            "input_sq_norm, bias_var, diverged_epoch)",
    "epochs": "one row per run and recorded epoch (0 = at initialization): training and validation loss and "
              "accuracy",
    "grads": "one row per run, recorded epoch, layer and param (w | b): gradient statistics over every step since "
             "the previous record (mean, std, mean |g|, norms, zero and positive fractions, update sizes)",
    "activations": "one row per run, recorded epoch and layer: the layer factors of the backprop product on a fixed "
                   "probe batch of 512 training examples (mean |z|, mean g'(z), saturated fraction, mean log g'(z), "
                   "log spectral norm of W) and the weight norms (distance from the initial W, Frobenius norm)",
}


class StoreError(RuntimeError):
    """A results directory that cannot be used as asked (locked, missing, not a store)."""


# Who is asking: messages name the option the caller can change, `--out` on the command
# line, `out=` from Python (`vglab.run` sets "python" unless the CLI has set "cli" first).
CALLER: ContextVar[str | None] = ContextVar("vglab_caller", default=None)
_OPTIONS = {"out": ("--out", "out="), "overwrite": ("--overwrite", "overwrite=True")}


def option(name: str) -> str:
    """How the caller sets the option `name`: `--out` for the CLI, `out=` from Python."""
    cli, python = _OPTIONS[name]
    return python if CALLER.get() == "python" else cli


def check_folder(out: Path) -> None:
    """`out` and its parents are folders or missing: a file in the way is a StoreError."""
    for p in (Path(out), *Path(out).parents):
        if p.is_dir():
            return
        if p.exists() or p.is_symlink():
            raise StoreError(f"{p} is a file, not a folder; choose another {option('out')}")


# ------------------------------------------------------------------ atomic writes
# One helper for the store, the data cache and the report (`vglab.data.files`).
atomic_write_bytes, atomic_write_text, _atomic_via = files.write_bytes, files.write_text, files.write_via
file_mode, pid_alive = files.file_mode, files.pid_alive


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot store {type(o).__name__} in JSON")


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


# ------------------------------------------------------------------------- runs
def run_dir(out: Path, run_id: str) -> Path:
    return Path(out) / RUNS / run_id


def is_complete(out: Path, run_id: str) -> bool:
    return (run_dir(out, run_id) / DONE).exists()


def completed_run_ids(out: Path) -> set[str]:
    root = Path(out) / RUNS
    if not root.is_dir():
        return set()
    return {p.parent.name for p in root.glob(f"*/{DONE}")}


def recording_run_ids(out: Path) -> set[str]:
    """Runs a `vglab.Recorder` is writing (or was, when its process died): no DONE yet, a
    run.json that says `"recording": true`, and at least one committed record (its
    epochs.parquet, written last of a record's files)."""
    root = Path(out) / RUNS
    if not root.is_dir():
        return set()
    out_ids = set()
    for f in root.glob("*/epochs.parquet"):
        d = f.parent
        if (d / DONE).exists() or not (d / "run.json").exists():
            continue
        try:
            if json.loads((d / "run.json").read_text()).get(RECORDING):
                out_ids.add(d.name)
        except (OSError, ValueError):
            continue
    return out_ids


def readable_run_ids(out: Path) -> set[str]:
    """The runs `load` reads: the complete ones and those being recorded."""
    return completed_run_ids(out) | recording_run_ids(out)


def write_run(out: Path, run_id: str, config: dict, result) -> Path:
    """Store one run (`result` is a `vglab.train.RunResult`); `DONE` is written last."""
    d = run_dir(out, run_id)
    if d.exists():  # an incomplete earlier attempt: start clean
        shutil.rmtree(d)
    d.mkdir(parents=True)
    row = {**config, "run_id": run_id, "diverged_epoch": result.diverged_epoch}
    for name in TABLES:
        table = getattr(result, name).copy()
        table.insert(0, "run_id", run_id)
        write_table(d / f"{name}.parquet", table)
    if result.histograms is not None:
        write_npz(d / "histograms.npz", counts=result.histograms)
    write_npz(d / "final_grads.npz", **result.final_grads)
    write_json(d / "run.json", row)
    atomic_write_text(d / DONE, "")
    return d


def write_table(path: Path, table: pd.DataFrame) -> None:
    """A run's table as Parquet, atomically. pyarrow directly (60 % of DataFrame.to_parquet's
    time); zstd and no stored schema metadata: reads back equal, in 56 % of the bytes (4.9
    instead of 8.8 MB for the 717 tables of `reproduce --dataset digits`)."""
    _atomic_via(path, lambda tmp: pq.write_table(pa.Table.from_pandas(table, preserve_index=False), tmp,
                                                 compression=PARQUET_COMPRESSION, store_schema=False))


def write_npz(path: Path, **arrays) -> None:
    """Arrays into a compressed .npz, atomically."""
    _atomic_via(path, lambda tmp: _savez(tmp, **arrays))


def _savez(path: Path, **arrays) -> None:
    with open(path, "wb") as f:  # an open file keeps numpy from appending ".npz" to the temp name
        np.savez_compressed(f, **arrays)


# ------------------------------------------------------------------------- lock
@contextmanager
def locked(out: Path):
    """Hold `OUT/.lock` while writing; a second writer gets a clear error.

    The lock is the OS's (`flock` on the file), so taking it is one atomic step, and the
    kernel releases it when its holder dies: a lock file left by a killed process is
    simply taken over. (Creating the file and writing the pid in two steps, with an
    empty or dead pid counted as stale, let two of N processes starting together both
    hold it in 12 of 1,000 trials.) Folders created here and left empty (a refused
    start) are removed again."""
    out = Path(out)
    created: list[Path] = []
    try:
        fd = _acquire(out / LOCK, out, created)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        yield out
    finally:
        (out / LOCK).unlink(missing_ok=True)  # before unlocking: a waiter re-checks the path (see _acquire)
        os.close(fd)
        _remove_empty(created)


def _acquire(lock: Path, out: Path, created: list[Path]) -> int:
    """The locked file descriptor of `lock`; `created` gets the folders made for it."""
    import fcntl  # POSIX (Linux, macOS): reading results needs no lock

    for _ in range(100):
        try:
            created += _make_dirs(out)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, file_mode())
        except FileNotFoundError:  # a refused writer removed the folder it had made: make it again
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise
            pid = _read_pid(lock)
            raise StoreError(f"{out} is in use by another vglab process{f' (pid {pid})' if pid else ''}; wait for "
                             f"it to finish, or choose another {option('out')}") from None
        # Locked, but is it still the file at that path? Its holder may have deleted it
        # (released) between our open and flock; then lock the file that is there now.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return fd
        os.close(fd)
    raise StoreError(f"could not take the lock {lock}: it keeps being replaced; is another program deleting it?")


def _read_pid(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None


def _make_dirs(out: Path) -> list[Path]:
    """Create `out` and its missing parents; returns those this call created, outermost first.

    Another process may make or remove the same folders meanwhile (a refused writer removes
    the empty ones it made): one it made is not ours to remove, and one removed under us
    raises FileNotFoundError, for the caller to try again. (`mkdir(exist_ok=True)` raised
    FileExistsError when the folder was gone again by the time it looked: 8 processes
    starting together, with two test processes loading the machine.)"""
    check_folder(out)
    missing = []
    for p in (out, *out.parents):
        if p.is_dir():
            break
        missing.append(p)
    made = []
    for p in reversed(missing):
        try:
            p.mkdir()
        except FileExistsError:
            if not p.is_dir() and p.exists():
                raise StoreError(f"{p} is a file, not a folder; choose another {option('out')}") from None
            continue  # made by another process: not ours
        made.append(p)
    return made


def _remove_empty(dirs: list[Path]) -> None:
    for p in reversed(dirs):  # innermost first
        try:
            p.rmdir()
        except OSError:
            break  # not empty (or gone): keep it and its parents


# ------------------------------------------------------------------------- load
@dataclass(frozen=True)
class Info:
    """What the report shows of an experiment's spec (experiment.toml), typed: its name, the
    built-in preset it ran (none for a spec file), the dataset as given (a built-in's name or a
    path), and its description and reference. Empty strings where the spec does not say."""

    name: str = ""
    preset: str = ""
    dataset: str = ""
    description: str = ""
    reference: str = ""

    @classmethod
    def of(cls, spec: dict | None) -> "Info":
        spec = spec or {}
        return cls(str(spec.get("name") or ""), str(spec.get("preset") or ""), str(spec.get("dataset") or ""),
                   str(spec.get("description") or ""), str(spec.get("reference") or ""))


@dataclass
class Results:
    """Results read into pandas. Only complete runs are included.

    Tables (`table(name)`: that table with each row's run configuration joined on):
    - runs: one row per run: its configuration and the facts stored when it was trained.
    - epochs: one row per run and recorded epoch (0 = at initialization): loss and accuracy.
    - grads: one row per run, recorded epoch, layer and param (w | b): gradient statistics
      over every step since the previous record.
    - activations: one row per run, recorded epoch and layer: the layer factors (mean g'(z),
      saturated fraction, log spectral norm of W) on a probe batch, and weight norms.
    `histogram_table()`: gradient-entry counts per log10|g| bin, summed over the entries of
    each tensor and over the steps of each recorded epoch (entries x steps, not examples).

    One folder (`load`): `path` is it, `spec` its experiment.toml, `meta` its meta.json.
    Several (`load_many`): `path` is None, `specs`/`folders` map each experiment key to its
    spec and folder, and every table has an `experiment` column (rows are keyed by
    experiment and run_id: the same configuration in two experiments has the same run_id)."""

    path: Path | None
    spec: dict
    meta: dict
    runs: pd.DataFrame
    epochs: pd.DataFrame
    grads: pd.DataFrame
    activations: pd.DataFrame
    cache: dict = field(default_factory=dict, repr=False)  # derived tables the report computes once (public)
    folders: dict = field(default_factory=dict, repr=False)  # experiment key -> folder (several folders)
    specs: dict = field(default_factory=dict, repr=False)  # experiment key -> spec (several folders)

    @property
    def info(self) -> "Info":
        """The experiment's facts from its spec, typed (`Info`); empty for several folders."""
        return Info.of(self.spec)

    def run_folder(self, run_id: str, experiment: str | None = None) -> Path:
        """The folder of one run (`experiment` picks it when several folders hold `run_id`)."""
        if self.path is not None:
            return run_dir(self.path, run_id)
        rows = self.runs[self.runs["run_id"] == run_id]
        if experiment is not None:
            rows = rows[rows["experiment"] == experiment]
        keys = sorted(set(rows["experiment"]))
        if not keys:
            raise StoreError(f"no run {run_id!r}" + (f" in experiment {experiment!r}" if experiment else "")
                             + f"; the experiments loaded are {sorted(self.folders)}")
        if len(keys) > 1:
            raise StoreError(f"run {run_id!r} is in several experiments ({', '.join(keys)}); "
                             "pass experiment= to choose one")
        return run_dir(self.folders[keys[0]], run_id)

    def histogram(self, run_id: str, experiment: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(counts[recorded epoch > 0, layer, param, bin], edges in log10|g|); bin 0 counts
        exact zeros. The epochs are those of the `grads` table (`histogram_epochs`)."""
        f = self.run_folder(run_id, experiment) / "histograms.npz"
        if not f.exists():
            raise StoreError(f"run {run_id} has no histograms (trained without the grad_hist probe)")
        with np.load(f) as z:
            counts = z["counts"]
        # A run being recorded may hold one more record here than in its committed tables.
        return counts[: len(self.histogram_epochs(run_id, experiment))], hist_edges()

    def histogram_epochs(self, run_id: str, experiment: str | None = None) -> list[int]:
        """The epochs the rows of `histogram(run_id)` cover, in order (those of `grads`)."""
        g = self.grads[self.grads["run_id"] == run_id]
        if experiment is not None and "experiment" in g:
            g = g[g["experiment"] == experiment]
        return sorted(int(e) for e in g["epoch"].unique())

    def histogram_table(self, run_ids=None, *, experiment: str | None = None, drop_empty: bool = False) -> pd.DataFrame:
        """The gradient histograms as one long table: run_id, epoch, layer, layer_index,
        param, bin, bin_lo, bin_hi, count (and experiment, for several folders). A count is
        of gradient entries over steps: every entry of the tensor at every (probed) step
        of the recorded epoch falls in one bin.

        `bin_lo`/`bin_hi` are log10|g|; bin 0 holds exact zeros (bin_lo = bin_hi = -inf),
        and the first and last ranges also hold the values clipped into them (DESIGN.md).
        `run_ids`: one id or a list (default: every run with histograms)."""
        edges = hist_edges()
        lo = np.concatenate([[-np.inf], edges[:-1]])
        hi = np.concatenate([[-np.inf], edges[1:]])
        runs = self.runs
        if experiment is not None:
            runs = runs[runs["experiment"] == experiment]
        if run_ids is not None:
            runs = runs[runs["run_id"].isin([run_ids] if isinstance(run_ids, str) else list(run_ids))]
        parts = []
        for row in runs.itertuples(index=False):
            exp = getattr(row, "experiment", None) if self.path is None else None
            try:
                counts, _ = self.histogram(row.run_id, exp)
            except StoreError:
                continue
            g = self.grads[self.grads["run_id"] == row.run_id]
            if exp is not None:
                g = g[g["experiment"] == exp]
            epochs = sorted(int(e) for e in g["epoch"].unique())
            layers = g[["layer_index", "layer"]].drop_duplicates().sort_values("layer_index")
            if len(epochs) != counts.shape[0] or len(layers) != counts.shape[1]:
                raise StoreError(f"run {row.run_id}: histograms.npz ({counts.shape[0]} epochs, {counts.shape[1]} layers) "
                                 f"does not match grads.parquet ({len(epochs)} epochs, {len(layers)} layers)")
            n_e, n_l, n_p, n_b = counts.shape
            idx = np.indices(counts.shape).reshape(4, -1)
            frame = pd.DataFrame({
                "run_id": row.run_id,
                "epoch": np.asarray(epochs)[idx[0]],
                "layer": layers["layer"].to_numpy()[idx[1]],
                "layer_index": layers["layer_index"].to_numpy()[idx[1]],
                "param": np.asarray(PARAMS)[idx[2]],
                "bin": idx[3],
                "bin_lo": lo[idx[3]],
                "bin_hi": hi[idx[3]],
                "count": counts.reshape(-1).astype(np.int64),
            })
            if exp is not None:
                frame.insert(0, "experiment", exp)
            parts.append(frame[frame["count"] > 0] if drop_empty else frame)
        if not parts:
            return pd.DataFrame(columns=["run_id", "epoch", "layer", "layer_index", "param", "bin", "bin_lo", "bin_hi",
                                         "count"])
        return pd.concat(parts, ignore_index=True)

    def final_grads(self, run_id: str, experiment: str | None = None) -> dict[str, np.ndarray]:
        """The first and last layer's weight gradients at the end of training."""
        with np.load(self.run_folder(run_id, experiment) / "final_grads.npz") as z:
            return {k: z[k] for k in z.files}

    def table(self, name: str) -> pd.DataFrame:
        """The table `name` (`TABLE_HELP`: runs, epochs, grads, activations), each row with its
        run's configuration joined on (for grouping and plots); `runs` is that table itself."""
        if name not in TABLE_HELP:
            raise StoreError(f"no table {name!r}; the tables are " + "; ".join(f"{k!r} ({v.split(':')[0]})"
                                                                               for k, v in TABLE_HELP.items())
                             + " (gradient histograms: histogram_table())")
        if name == "runs":
            return self.runs.copy()
        t = getattr(self, name)
        on = ["experiment", "run_id"] if "experiment" in t.columns and "experiment" in self.runs.columns else "run_id"
        return t.merge(self.runs, on=on, how="left")


def write_runs_table(out: Path) -> Path | None:
    """Write `OUT/runs.parquet` (atomically) from the complete runs' run.json; None when
    there are none. Call with the lock held."""
    out = Path(out)
    ids = sorted(readable_run_ids(out))
    if not ids:
        (out / RUNS_TABLE).unlink(missing_ok=True)
        return None
    rows = pd.DataFrame([json.loads((run_dir(out, i) / "run.json").read_text()) for i in ids])
    _atomic_via(out / RUNS_TABLE, lambda tmp: pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), tmp,
                                                             compression=PARQUET_COMPRESSION))
    return out / RUNS_TABLE


def load(out: Path) -> Results:
    """Read the results directory `out`."""
    import tomllib

    out = Path(out)
    if not out.is_dir():
        raise StoreError(f"no results directory at {out}; run an experiment first (vglab run PRESET --out {out})")
    spec_file, meta_file = out / "experiment.toml", out / "meta.json"
    rerun = "re-run the `vglab run` command that made these results: it rewrites the file and keeps the runs"
    spec = _read(spec_file, tomllib.loads, rerun) if spec_file.exists() else {}
    meta = _read(meta_file, json.loads, rerun) if meta_file.exists() else {}
    recording = recording_run_ids(out)
    ids = sorted(completed_run_ids(out) | recording)
    retrain = "delete that run's folder and re-run the `vglab run` command that made these results (it trains it again)"
    rows = [_read(run_dir(out, i) / "run.json", json.loads, retrain) for i in ids]
    tables = {}
    for name in TABLES:
        parts = [_read(run_dir(out, i) / f"{name}.parquet", pd.read_parquet, retrain) for i in ids]
        tables[name] = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"run_id": []})
    if recording:  # a record is committed by its epochs row (written last): drop rows of an uncommitted one
        committed = set(zip(tables["epochs"]["run_id"], tables["epochs"]["epoch"]))
        for name in ("grads", "activations"):
            t = tables[name]
            if len(t):
                keep = [r not in recording or (r, e) in committed for r, e in zip(t["run_id"], t["epoch"])]
                tables[name] = t[keep].reset_index(drop=True)
    runs = pd.DataFrame(rows) if rows else pd.DataFrame({"run_id": []})
    return Results(out, spec, meta, runs, tables["epochs"], tables["grads"], tables["activations"])


def _read(path: Path, parse, fix: str):
    """`parse(text)` of a file (`parse(path)` for Parquet); a damaged file is a
    StoreError that names it and says how to repair it."""
    try:
        return parse(path) if path.suffix == ".parquet" else parse(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:  # TOMLDecodeError, JSONDecodeError, UnicodeDecodeError, ArrowInvalid
        if isinstance(e, OSError) and e.errno is not None:
            raise  # the file system's error (permissions, ...), not the file's content
        why = "; ".join(str(e).split("\n")).strip() or type(e).__name__
        raise StoreError(f"{path} is damaged ({why}); {fix}") from None


def read_spec(out: Path) -> dict | None:
    """OUT/experiment.toml as a dict; None if it is missing or damaged (unreadable)."""
    import tomllib

    try:
        return tomllib.loads((Path(out) / "experiment.toml").read_text(encoding="utf-8"))
    except (ValueError, FileNotFoundError, NotADirectoryError):
        return None


def experiment_keys(folders) -> list[str]:
    """One distinct key per results folder: its experiment name, or, where two folders
    share a name (digits/large-params and mnist/large-params), the shortest distinct
    end of their paths."""
    folders = [Path(f).resolve() for f in folders]
    names = []
    for f in folders:
        try:
            import tomllib

            names.append(str(tomllib.loads((f / "experiment.toml").read_text()).get("name") or f.name))
        except (OSError, ValueError):
            names.append(f.name)
    keys = list(names)
    for depth in range(1, 64):
        dup = {k for k in keys if keys.count(k) > 1}
        if not dup:
            return keys
        keys = [("/".join(f.parts[-depth - 1:-1] + (n,)) if k in dup else k) for k, f, n in zip(keys, folders, names)]
    return [str(f) for f in folders]


def load_many(folders) -> Results:
    """Several results folders as one `Results`: each table concatenated, with an
    `experiment` column (see `experiment_keys`) that, with run_id, keys every row."""
    folders = [Path(f) for f in folders]
    if not folders:
        raise StoreError("no results folders given; pass one or more folders written by vglab run / reproduce")
    if len({f.resolve() for f in folders}) != len(folders):
        raise StoreError("a results folder is given twice; pass each folder once")
    loaded = [load(f) for f in folders]
    keys = experiment_keys(folders)
    tables = {}
    for name in ("runs",) + TABLES:
        parts = []
        for key, res in zip(keys, loaded):
            t = getattr(res, name).copy()
            if "experiment" in t.columns:
                t["experiment"] = key
            else:
                t.insert(0, "experiment", key)
            parts.append(t)
        tables[name] = pd.concat(parts, ignore_index=True)
    return Results(None, {}, {}, tables["runs"], tables["epochs"], tables["grads"], tables["activations"],
                   folders=dict(zip(keys, folders)), specs={k: r.spec for k, r in zip(keys, loaded)})
