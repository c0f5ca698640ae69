"""Record a watched training run (`vglab.watch`) into an ordinary results folder.

    rec = vglab.Recorder("runs/my-lm", config={"lr": 1e-3, "seed": 0})
    for step in ...:
        params, state = train_step(params, state, batch)
        if step % 100 == 0:
            rec.record(step, state, metrics={"train_loss": loss})
            state = vglab.watch_reset(state)
    rec.close()                       # DONE: the run is complete
    vglab.load_results("runs/my-lm")  # and `vglab report runs/my-lm`

The folder has the store's layout (`vglab.results.store`, DESIGN.md): one run per
watched model (per member under `jax.vmap`: `<run_id>-m<k>`), with run.json, epochs,
grads, activations tables and histograms.npz, plus runs.parquet and meta.json. The
`epoch` column holds the step given to `record` (run.json: `"x_unit": "step"`); a
record's `grads` rows are the means over the steps measured since the last
`watch_reset` (`watch_table`).

Why it survives a kill: every record rewrites the run's files atomically (each to a
temporary name, renamed into place), histograms first and epochs.parquet last, and
run.json says `"recording": true` until `close` writes DONE; `load` reads such a run up to
its last committed epochs row. So a process killed at any moment leaves a folder that
`load_results` reads, holding every record before the last `record` call.
The folder's lock (`store.locked`) is held from the constructor to `close` (the kernel
releases it if the process dies).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from vglab.results import store
from vglab.schema import PARAMS
from vglab.train import probes
from vglab.train import watch as watch_mod
from vglab.train.loop import EPOCH_METRICS

_SCALARS = (str, int, float, bool, type(None), np.integer, np.floating, np.bool_)


def _check_config(config) -> dict:
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict of settings (name -> value), got {type(config).__name__}")
    for k, v in config.items():
        if not isinstance(k, str):
            raise ValueError(f"config keys must be strings, got {k!r}")
        values = v if isinstance(v, (list, tuple)) else [v]
        if not all(isinstance(x, _SCALARS) for x in values):
            raise ValueError(f"config[{k!r}] = {v!r}: a setting is a str, int, float, bool or None, or a list of "
                             "them with one value per vmapped member")
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()}


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class _Run:
    """One member's run: its row, tables so far and TensorBoard writer."""

    def __init__(self, run_id: str, row: dict):
        self.run_id, self.row = run_id, row
        self.epochs, self.grads, self.activations, self.hists = [], [], [], []
        self.tb = None


class Recorder:
    """Append watched records to the results folder `out` (see the module docstring).

    `config`: the run's settings (str/int/float/bool values; a list gives one value per
    vmapped member, e.g. `seed=[0, 1, 2, 3]`): stored in run.json / runs.parquet and shown
    as TensorBoard HParams. Its `run_id` and `label` keys, when given, name the run and its
    configuration; else the run id is `watch-<hash of config>` and the label the run id.
    `tensorboard`: write live events into `out/tensorboard/<run_id>/` (per-layer scalars,
    log10|g| histograms, HParams). An earlier run of the same id is kept: the constructor
    refuses unless `overwrite=True`."""

    def __init__(self, out, config: dict | None = None, tensorboard: bool = True, *, overwrite: bool = False):
        self.config = _check_config(config)
        self.out = Path(out)
        self.tensorboard = bool(tensorboard)
        settings = {k: v for k, v in self.config.items() if k not in ("run_id", "label")}
        digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
        self.base_id = str(self.config.get("run_id") or f"watch-{digest}")
        if not self.base_id or "/" in self.base_id or self.base_id.startswith("."):
            raise ValueError(f"run_id {self.base_id!r} cannot name a folder; use letters, digits, '-' and '_'")
        self._lock = store.locked(self.out)
        self._lock.__enter__()
        try:
            runs = self.out / store.RUNS
            old = sorted(p.name for p in runs.glob(f"{self.base_id}*") if p.name == self.base_id
                         or p.name.startswith(self.base_id + "-m")) if runs.is_dir() else []
            if old and not overwrite:
                raise store.StoreError(f"{self.out} already holds run {old[0]!r} of this config; pass another run_id "
                                       "in config, another out, or overwrite=True to replace it")
            for name in old:
                shutil.rmtree(runs / name)
                if (self.out / "tensorboard" / name).is_dir():
                    shutil.rmtree(self.out / "tensorboard" / name)
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        self.runs: list[_Run] | None = None
        self.started, self._last = _now(), time.perf_counter()
        self.n_records, self.closed = 0, False
        self._write_meta()

    # ------------------------------------------------------------------ recording
    def record(self, step: int, state, metrics: dict | None = None, *, factors: pd.DataFrame | None = None) -> None:
        """Append one record at `step`: the watched state's per-layer table (`watch_table`:
        the means since the last `watch_reset`), its histograms (tier "full"), `metrics`
        ({name: scalar, or one value per member}: columns of the `epochs` table; name them
        train_loss, val_loss, train_acc, val_acc to get the report's curves) and `factors`
        (a `layer_factors` table, with a `member` column under vmap: the `activations`
        table). Written at once (see the module docstring)."""
        if self.closed:
            raise store.StoreError("this Recorder is closed; make a new one to record more")
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be an integer >= 0, got {step!r}")
        reading = watch_mod.read(state)
        n_members = math.prod(reading.lead)
        metrics = self._check_metrics(metrics, n_members)
        if self.runs is None:
            self._start(reading, n_members)
        elif len(self.runs) != n_members:
            raise ValueError(f"this Recorder records {len(self.runs)} members; the state has {n_members}")
        if self.runs[0].epochs and step <= self.runs[0].epochs[-1]["epoch"]:
            raise ValueError(f"step {step} is not after the last recorded step {self.runs[0].epochs[-1]['epoch']}; "
                             "record steps in increasing order")
        now = time.perf_counter()
        seconds, self._last = now - self._last, now
        layers, tensors = _watched_layers(reading.plan)
        table = reading.table
        for k, run in enumerate(self.runs):
            g = table[table["member"] == k] if reading.lead else table
            grads = g[["layer", "layer_index", "param", *probes.grad_columns(g.columns)]].copy()
            grads.insert(0, "epoch", int(step))
            acts = self._factors(factors, k, reading.plan, n_members, int(step))
            m = {name: float(v[k]) for name, v in metrics.items()}
            finite = bool(np.all(np.isfinite(grads.select_dtypes("number").to_numpy())) and
                          all(np.isfinite(v) for v in m.values()))
            if not finite and run.row["diverged_epoch"] is None:
                run.row["diverged_epoch"] = int(step)
            run.epochs.append({"epoch": int(step), "seconds": seconds, "diverged": run.row["diverged_epoch"] is not None,
                               **{c: np.nan for c in EPOCH_METRICS}, **m})
            run.grads.append(grads)
            if acts is not None:
                run.activations.append(acts)
            if reading.hist is not None:
                per_tensor = reading.hist.reshape((n_members,) + reading.hist.shape[len(reading.lead):])[k]
                counts = np.zeros((len(layers), len(PARAMS), per_tensor.shape[-1]), np.int64)
                for t, (layer, param) in enumerate(tensors):
                    counts[layers.index(layer), PARAMS.index(param)] = per_tensor[t]
                run.hists.append(counts)
            self._write(run)
            if run.tb is not None:
                self._tensorboard(run, int(step), m, grads, acts, counts if reading.hist is not None else None, layers)
        self.n_records += 1
        store.write_runs_table(self.out)

    def close(self, complete: bool = True) -> None:
        """Mark every run complete (DONE), write runs.parquet and meta.json, release the
        folder. Idempotent. `with Recorder(...) as rec:` calls it; when the block raises,
        with `complete=False`: the runs stay readable, marked as still recording (no DONE)."""
        if self.closed:
            return
        try:
            for run in self.runs or []:
                if complete:
                    run.row[store.RECORDING] = False
                    store.write_json(store.run_dir(self.out, run.run_id) / "run.json", run.row)
                    store.atomic_write_text(store.run_dir(self.out, run.run_id) / store.DONE, "")
                if run.tb is not None:
                    run.tb.close()
            if complete:
                store.write_runs_table(self.out)
                self._write_meta(finished=_now())
        finally:
            self.closed = True
            self._lock.__exit__(None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(complete=exc_type is None)
        return False

    # ------------------------------------------------------------------ helpers
    def _start(self, reading, n_members: int) -> None:
        per_member = {k: v for k, v in self.config.items() if isinstance(v, list)}
        bad = {k: len(v) for k, v in per_member.items() if len(v) != n_members}
        if bad:
            raise ValueError(f"config lists {bad} must give one value per member; the watched state has {n_members} "
                             "member(s)")
        plan = reading.plan
        common = {"x_unit": "step", "tier": _tier_of(plan.quantities), "every": plan.every,
                  "n_params": int(sum(t.size for t in plan.tensors)), "diverged_epoch": None, store.RECORDING: True}
        self.runs = []
        for k in range(n_members):
            row = {key: _plain(v[k] if key in per_member else v) for key, v in self.config.items()}
            run_id = self.base_id if not reading.lead else f"{self.base_id}-m{k}"
            if "label" not in row:
                extra = [f"{key}={row[key]}" for key in per_member if key != "seed"]
                row["label"] = " ".join([self.base_id, *extra])
            if reading.lead:
                row["member"] = k
            row.update(common, run_id=run_id)
            run = _Run(run_id, row)
            store.write_json(store.run_dir(self.out, run_id) / "run.json", row)
            if self.tensorboard:
                from vglab.results import tensorboard as tb

                layers, tensors = _watched_layers(plan)
                hparams = {key: v for key, v in row.items() if key not in common and key != "run_id" and v is not None}
                run.tb = tb.RunWriter(self.out, run_id, hparams, layers, tensors)
            self.runs.append(run)

    @staticmethod
    def _check_metrics(metrics, n_members: int) -> dict:
        out = {}
        for name, v in (metrics or {}).items():
            if not isinstance(name, str) or name in ("epoch", "seconds", "diverged"):
                raise ValueError(f"metric name {name!r}: use a string other than epoch, seconds, diverged")
            a = np.asarray(v, np.float64).reshape(-1)
            if a.size == 1:
                a = np.repeat(a, n_members)
            if a.size != n_members:
                raise ValueError(f"metric {name!r} has {a.size} values; give one, or one per member ({n_members})")
            out[name] = a
        return out

    @staticmethod
    def _factors(factors, k: int, plan, n_members: int, step: int):
        if factors is None:
            return None
        if not isinstance(factors, pd.DataFrame) or "layer" not in factors:
            raise ValueError("factors must be the DataFrame that vglab.layer_factors returns")
        f = factors
        if "member" in f:
            f = f[f["member"] == k].drop(columns="member")
        elif n_members > 1:
            raise ValueError(f"the state has {n_members} members: give factors a member column (one layer_factors "
                             "table per member, concatenated)")
        index = {name: i for i, name in enumerate(plan.layout.names)}
        unknown = sorted(set(f["layer"]) - set(index))
        if unknown:
            raise ValueError(f"factors name layers {unknown} that the watched parameters do not have "
                             f"({list(index)}); measure layer_factors on the same parameters")
        f = f.copy()
        f["layer_index"] = [index[n] for n in f["layer"]]  # the watched layout's numbering (as in grads)
        f.insert(0, "epoch", step)
        return f.sort_values("layer_index").reset_index(drop=True)

    def _write(self, run: _Run) -> None:
        """A record's files, each atomic; epochs.parquet last (it commits the record)."""
        d = store.run_dir(self.out, run.run_id)
        if run.hists:
            store.write_npz(d / "histograms.npz", counts=np.stack(run.hists))
        if run.activations:
            store.write_table(d / "activations.parquet", _with_id(pd.concat(run.activations, ignore_index=True), run))
        elif not (d / "activations.parquet").exists():
            store.write_table(d / "activations.parquet", _with_id(pd.DataFrame({"epoch": pd.Series([], "int64"),
                                                                                  "layer": pd.Series([], object)}), run))
        store.write_table(d / "grads.parquet", _with_id(pd.concat(run.grads, ignore_index=True), run))
        if run.row["diverged_epoch"] is not None and len(run.epochs) and run.epochs[-1]["epoch"] == run.row["diverged_epoch"]:
            store.write_json(d / "run.json", run.row)
        store.write_table(d / "epochs.parquet", _with_id(pd.DataFrame(run.epochs), run))

    def _tensorboard(self, run, step, metrics, grads, acts, counts, layers) -> None:
        from vglab.results import tensorboard as tb

        scalars = {tb.SCALARS.get(name, f"metrics/{name}"): v for name, v in metrics.items()}
        scalars.update(tb.layer_scalars(grads, acts).get(step, {}))
        hists = {}
        if counts is not None:
            hists = {tb.hist_tag(layer, p): counts[i, j] for i, layer in enumerate(layers)
                     for j, p in enumerate(PARAMS) if counts[i, j].any()}
        run.tb.add(step, scalars, hists)

    def _write_meta(self, finished: str | None = None) -> None:
        from importlib import metadata

        versions = {}
        for n in ("vglab", "jax", "optax"):
            try:
                versions[n] = metadata.version(n)
            except metadata.PackageNotFoundError:
                continue
        store.write_json(self.out / "meta.json", {"created_by": "vglab.Recorder", "started": self.started,
                                                  "finished": finished, "records": self.n_records,
                                                  "versions": versions})


def _with_id(table: pd.DataFrame, run: _Run) -> pd.DataFrame:
    table = table.copy()
    table.insert(0, "run_id", run.run_id)
    return table


def _watched_layers(plan) -> tuple[list[str], list[tuple[str, str]]]:
    """The watched layers (in layer order) and the (layer, param) of each watched tensor."""
    tensors = [(t.layer, t.param) for t in plan.tensors]
    return list(dict.fromkeys(layer for layer, _ in tensors)), tensors


def _tier_of(quantities) -> str:
    return next((t for t in watch_mod.TIER_NAMES if watch_mod.tier_quantities(t) == tuple(quantities)), "custom")
