"""What is kept: one directory per experiment, one sub-directory per run.

Layout (see DESIGN.md)::

    OUT/experiment.toml  meta.json  .lock
    OUT/runs/<run_id>/run.json epochs.parquet grads.parquet activations.parquet
                      histograms.npz final_grads.npz DONE

Every file is written to a temporary name and renamed into place, and a run counts
as complete only once its `DONE` marker exists (written last), so a process killed at
any moment leaves either a complete run or one that the next invocation redoes.
`load` reads only complete runs, into tidy pandas tables that all carry `run_id`.

`OUT/runs.parquet` is the `runs` table of the complete runs in one file, for analysis
tools that read Parquet (pandas, polars, DuckDB), rewritten (atomically) when an
invocation has stored an experiment's runs (`write_runs_table`). `run.json` stays the
source: it is written with its run, and `load` reads it (so a table can never be stale).
"""

from __future__ import annotations

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
RUNS_TABLE = "runs.parquet"
PARQUET_COMPRESSION = "zstd"
TABLES = ("epochs", "grads", "activations")


class StoreError(RuntimeError):
    """A results directory that cannot be used as asked (locked, missing, not a store)."""


# ------------------------------------------------------------------ atomic writes
def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
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
        # pyarrow directly (60 % of DataFrame.to_parquet's time); zstd and no stored schema
        # metadata: reads back equal, in 56 % of the bytes (4.9 instead of 8.8 MB for the
        # 717 tables of `reproduce --dataset digits`)
        _atomic_via(d / f"{name}.parquet", lambda tmp, t=table: pq.write_table(
            pa.Table.from_pandas(t, preserve_index=False), tmp, compression=PARQUET_COMPRESSION, store_schema=False))
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
    """Hold `OUT/.lock` while writing; a second writer gets a clear error, and a lock
    left by a killed process (its pid no longer alive) is taken over."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lock = out / ".lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            pid = _read_pid(lock)
            if pid is not None and _alive(pid):
                raise StoreError(
                    f"{out} is in use by another vglab process (pid {pid}); wait for it to finish, "
                    f"or choose another --out. If no such process is running, delete {lock}."
                ) from None
            lock.unlink(missing_ok=True)  # stale: its owner died
    else:
        raise StoreError(f"could not take the lock {lock}; delete it if no vglab process is running")
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield out
    finally:
        lock.unlink(missing_ok=True)


def _read_pid(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip() or "x")
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------------- load
@dataclass
class Results:
    """Results read into pandas. Only complete runs are included.

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
    _cache: dict = field(default_factory=dict, repr=False)
    folders: dict = field(default_factory=dict, repr=False)  # experiment key -> folder (several folders)
    specs: dict = field(default_factory=dict, repr=False)  # experiment key -> spec (several folders)

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
        from vglab.train.probes import hist_edges  # the bin convention lives with the probe

        f = self.run_folder(run_id, experiment) / "histograms.npz"
        if not f.exists():
            raise StoreError(f"run {run_id} has no histograms (trained without the grad_hist probe)")
        with np.load(f) as z:
            return z["counts"], hist_edges()

    def histogram_epochs(self, run_id: str, experiment: str | None = None) -> list[int]:
        """The epochs the rows of `histogram(run_id)` cover, in order (those of `grads`)."""
        g = self.grads[self.grads["run_id"] == run_id]
        if experiment is not None and "experiment" in g:
            g = g[g["experiment"] == experiment]
        return sorted(int(e) for e in g["epoch"].unique())

    def histogram_table(self, run_ids=None, *, experiment: str | None = None, drop_empty: bool = False) -> pd.DataFrame:
        """The gradient histograms as one long table: run_id, epoch, layer, layer_index,
        param, bin, bin_lo, bin_hi, count (and experiment, for several folders).

        `bin_lo`/`bin_hi` are log10|g|; bin 0 holds exact zeros (bin_lo = bin_hi = -inf),
        and the first and last ranges also hold the values clipped into them (DESIGN.md).
        `run_ids`: one id or a list (default: every run with histograms)."""
        from vglab.train.loop import PARAMS  # the histogram's param axis
        from vglab.train.probes import hist_edges

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
        """A per-epoch table joined with the run configuration (for grouping and plots)."""
        t = getattr(self, name)
        on = ["experiment", "run_id"] if "experiment" in t.columns and "experiment" in self.runs.columns else "run_id"
        return t.merge(self.runs, on=on, how="left")


def write_runs_table(out: Path) -> Path | None:
    """Write `OUT/runs.parquet` (atomically) from the complete runs' run.json; None when
    there are none. Call with the lock held."""
    out = Path(out)
    ids = sorted(completed_run_ids(out))
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
    spec = tomllib.loads(spec_file.read_text()) if spec_file.exists() else {}
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    ids = sorted(completed_run_ids(out))
    tables = {}
    for name in TABLES:
        parts = [pd.read_parquet(run_dir(out, i) / f"{name}.parquet") for i in ids]
        tables[name] = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"run_id": []})
    rows = [json.loads((run_dir(out, i) / "run.json").read_text()) for i in ids]
    runs = pd.DataFrame(rows) if rows else pd.DataFrame({"run_id": []})
    return Results(out, spec, meta, runs, tables["epochs"], tables["grads"], tables["activations"])


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
