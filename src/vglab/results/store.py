"""What is kept: one directory per experiment, one sub-directory per run.

Layout (see DESIGN.md)::

    OUT/experiment.toml  meta.json  .lock
    OUT/runs/<run_id>/run.json epochs.parquet grads.parquet activations.parquet
                      histograms.npz final_grads.npz DONE

Every file is written to a temporary name and renamed into place, and a run counts
as complete only once its `DONE` marker exists (written last), so a process killed at
any moment leaves either a complete run or one that the next invocation redoes. Every
file gets the same mode, 0666 less the user's umask (`file_mode`).
`load` reads only complete runs, into tidy pandas tables that all carry `run_id`.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

RUNS = "runs"
DONE = "DONE"
LOCK = ".lock"
TABLES = ("epochs", "grads", "activations")


class StoreError(RuntimeError):
    """A results directory that cannot be used as asked (locked, missing, not a store)."""


# ------------------------------------------------------------------ atomic writes
def file_mode() -> int:
    """0666 less the umask: what `open` gives a new file. `mkstemp` creates its files
    0600 whatever the umask, which left experiment.toml, meta.json, run.json and DONE
    unreadable to a group that could read the Parquet files beside them."""
    try:  # Linux >= 4.7 shows the umask without changing it (os.umask sets it, process-wide)
        with open("/proc/self/status") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _atomic_via(path: Path, write) -> None:
    """Let `write(tmp_path)` produce the file, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
        # pyarrow directly: the same file as DataFrame.to_parquet, in 60 % of its time
        _atomic_via(d / f"{name}.parquet", lambda tmp, t=table: pq.write_table(pa.Table.from_pandas(t, preserve_index=False), tmp))
    if result.histograms is not None:
        _atomic_via(d / "histograms.npz", lambda tmp: _savez(tmp, counts=result.histograms))
    _atomic_via(d / "final_grads.npz", lambda tmp: _savez(tmp, **result.final_grads))
    write_json(d / "run.json", row)
    atomic_write_text(d / DONE, "")
    return d


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
        created += _make_dirs(out)
        try:
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
                             "it to finish, or choose another --out") from None
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
    """Create `out` and its missing parents; returns those created, outermost first."""
    missing = []
    for p in (out, *out.parents):
        if p.is_dir():
            break
        if p.exists() or p.is_symlink():
            raise StoreError(f"{p} is a file, not a folder; choose another --out")
        missing.append(p)
    for p in reversed(missing):
        p.mkdir(exist_ok=True)
    return missing[::-1]


def _remove_empty(dirs: list[Path]) -> None:
    for p in reversed(dirs):  # innermost first
        try:
            p.rmdir()
        except OSError:
            break  # not empty (or gone): keep it and its parents


# ------------------------------------------------------------------------- load
@dataclass
class Results:
    """A results directory read into pandas. Only complete runs are included."""

    path: Path
    spec: dict
    meta: dict
    runs: pd.DataFrame
    epochs: pd.DataFrame
    grads: pd.DataFrame
    activations: pd.DataFrame
    _cache: dict = field(default_factory=dict, repr=False)

    def histogram(self, run_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(counts[epoch 1..E, layer, param, bin], edges in log10|g|); bin 0 counts exact zeros."""
        from vglab.train.probes import hist_edges  # the bin convention lives with the probe

        f = run_dir(self.path, run_id) / "histograms.npz"
        if not f.exists():
            raise StoreError(f"run {run_id} has no histograms (trained without the grad_hist probe)")
        with np.load(f) as z:
            return z["counts"], hist_edges()

    def final_grads(self, run_id: str) -> dict[str, np.ndarray]:
        """The first and last layer's weight gradients at the end of training."""
        with np.load(run_dir(self.path, run_id) / "final_grads.npz") as z:
            return {k: z[k] for k in z.files}

    def table(self, name: str) -> pd.DataFrame:
        """A per-epoch table joined with the run configuration (for grouping and plots)."""
        return getattr(self, name).merge(self.runs, on="run_id", how="left")


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
    ids = sorted(completed_run_ids(out))
    retrain = "delete that run's folder and re-run the `vglab run` command that made these results (it trains it again)"
    rows = [_read(run_dir(out, i) / "run.json", json.loads, retrain) for i in ids]
    tables = {}
    for name in TABLES:
        parts = [_read(run_dir(out, i) / f"{name}.parquet", pd.read_parquet, retrain) for i in ids]
        tables[name] = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"run_id": []})
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
    except (ValueError, FileNotFoundError):
        return None
