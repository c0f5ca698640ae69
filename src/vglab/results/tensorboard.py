"""TensorBoard event files for runs: `OUT/tensorboard/<run_id>/events.out.tfevents.*`.

Written with the tensorboard package's own writer and protos (no TensorFlow needed), per
recorded epoch (epoch 0 is the measurement at initialization):
- scalars `loss/train`, `loss/val`, `loss/penalty`, `loss/total`, `accuracy/train`, `accuracy/val`;
- per layer, one section per quantity so layers compare side by side:
  `grad_norm/<layer>` and `grad_std/<layer>` (weights, over every step since the last
  record), `saturated_frac/<layer>`, `mean_log_phi_prime/<layer>` and `log_weight_norm/<layer>`
  (natural logs, on the probe batch; hidden layers only for the first two);
- one histogram per layer and parameter, `grad_log10|g|/<layer>/<w|b>`, from the stored
  log10|g| bin counts (DESIGN.md): bucket limits are the bin edges; exact zeros are
  counted in a first bucket ending at the lowest edge;
- the run's HParams (network or model, depth, width, variant, activation, init, alpha,
  penalty, r, seed, optimizer, learning_rate, dataset, epochs), so TensorBoard's HParams
  tab can filter and compare runs.

While training (`vglab run --tensorboard`) the runner writes each epoch as it arrives
(`RunWriter.add_metrics`, flushed at once); `export` writes the events of stored runs from
their tables (`python -m tensorboard.main --logdir OUT/tensorboard` shows either).
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import numpy as np

from vglab.results import store
from vglab.schema import PARAMS, hist_edges

TB = "tensorboard"
SCALARS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_penalty": "loss/penalty",
           "train_total_loss": "loss/total", "train_acc": "accuracy/train", "val_acc": "accuracy/val"}
# per-layer scalars: (table, column) -> tag section; grads quantities are of the weights
LAYER_SCALARS = {("grads", "grad_norm_mean"): "grad_norm", ("grads", "grad_std"): "grad_std",
                 ("activations", "saturated_frac"): "saturated_frac",
                 ("activations", "log_deriv_mean"): "mean_log_phi_prime",
                 ("activations", "log_weight_norm"): "log_weight_norm"}
HPARAMS = ("network", "model", "depth", "width", "variant", "activation", "weight_init", "alpha", "penalty", "r",
           "seed", "optimizer", "learning_rate", "dataset", "epochs")


def layer_names(grads) -> list[str]:
    """Layer names in network order, from a `grads` table."""
    if grads is None or len(grads) == 0:
        return []
    return list(grads.drop_duplicates("layer").sort_values("layer_index")["layer"])


def hparams_of(row: dict) -> dict:
    """A run's HParams from its `runs` row (values TensorBoard accepts: str, float, int, bool;
    settings a network does not have, e.g. a paper_cnn's depth, are left out)."""
    out = {}
    for k in HPARAMS:
        v = row.get(k)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if isinstance(v, np.generic):
            v = v.item()
        out["init" if k == "weight_init" else k] = v if isinstance(v, (str, bool, int, float)) else str(v)
    return out


def hist_tag(layer: str, param: str) -> str:
    """The tag of a layer's tensor's log10|g| histogram."""
    return f"grad_log10|g|/{layer}/{param}"


def _histogram(counts: np.ndarray, edges: np.ndarray):
    from tensorboard.compat.proto.summary_pb2 import HistogramProto

    counts = np.asarray(counts, dtype=float)
    centers = np.concatenate([[edges[0]], (edges[:-1] + edges[1:]) / 2])  # zeros sit at the lowest edge
    n = counts.sum()
    nonzero = np.flatnonzero(counts)
    return HistogramProto(
        min=float(centers[nonzero[0]]) if n else 0.0, max=float(centers[nonzero[-1]]) if n else 0.0, num=float(n),
        sum=float((counts * centers).sum()), sum_squares=float((counts * centers**2).sum()),
        bucket_limit=[float(edges[0])] + [float(e) for e in edges[1:]], bucket=[float(c) for c in counts])


class RunWriter:
    """One run's events, epoch by epoch, into `out/tensorboard/<run_id>/` (a new folder:
    an older one is replaced). Every `add_*` is flushed, so a running TensorBoard sees it.
    `layers`: layer names in network order; `tensors`: the (layer, param) of each gradient
    tensor, in the engine's order (a layer may have no bias)."""

    def __init__(self, out: Path, run_id: str, hparams: dict, layers: list[str], tensors=(),
                 folder: Path | None = None):
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.plugins.hparams import summary_v2 as hp
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.folder = folder or Path(out) / TB / run_id
        shutil.rmtree(self.folder, ignore_errors=True)
        self.writer = EventFileWriter(str(self.folder))
        self.layers = list(layers)
        self.tensors = [tuple(t) for t in tensors]
        self.start = time.time()
        self._event = Event
        if hparams:
            self.writer.add_event(Event(wall_time=self.start, step=0,
                                        summary=hp.hparams_pb(hparams, trial_id=run_id, start_time_secs=self.start)))
        self.writer.flush()

    def add(self, epoch: int, scalars: dict[str, float], histograms: dict[str, np.ndarray] | None = None,
            wall_time: float | None = None) -> None:
        """One epoch: finite scalars by tag, and histogram counts by tag."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=tag, simple_value=float(v)) for tag, v in scalars.items() if np.isfinite(v)]
        if histograms:
            edges = hist_edges()
            values += [Summary.Value(tag=tag, histo=_histogram(c, edges)) for tag, c in histograms.items()]
        self.writer.add_event(self._event(wall_time=wall_time or time.time(), step=int(epoch), summary=Summary(value=values)))
        self.writer.flush()

    def add_metrics(self, epoch: int, metrics: dict, k: int) -> None:
        """One record from the engine (`train_group`'s `on_epoch`): member k's values. Layer
        quantities are [member, layer], gradient quantities [member, tensor]."""
        scalars = {tag: metrics[col][k] for col, tag in SCALARS.items() if col in metrics}
        for (table, col), section in LAYER_SCALARS.items():
            if col not in metrics:
                continue
            if table == "activations":
                for i, layer in enumerate(self.layers):
                    scalars[f"{section}/{layer}"] = metrics[col][k][i]
            elif epoch > 0:  # gradients are measured over the steps since the last record: none at epoch 0
                for t, (layer, param) in enumerate(self.tensors):
                    if param == "w":
                        scalars[f"{section}/{layer}"] = metrics[col][k][t]
        hists = {}
        if "grad_hist" in metrics and epoch > 0:
            hists = {hist_tag(layer, param): metrics["grad_hist"][k][t]
                     for t, (layer, param) in enumerate(self.tensors)}
        self.add(epoch, scalars, hists)

    def close(self) -> None:
        self.writer.close()


def layer_scalars(grads, activations) -> dict[int, dict[str, float]]:
    """{epoch: {tag: value}} of the per-layer scalars, from a run's stored tables."""
    out: dict[int, dict[str, float]] = {}
    tables = {"grads": grads[grads["param"] == "w"] if grads is not None and len(grads) else None,
              "activations": activations if activations is not None and len(activations) else None}
    for (table, col), section in LAYER_SCALARS.items():
        t = tables[table]
        if t is None or col not in t:
            continue
        for e, layer, v in zip(t["epoch"], t["layer"], t[col]):
            out.setdefault(int(e), {})[f"{section}/{layer}"] = float(v)
    return out


def write_run(out: Path, run_id: str, epochs, histograms: np.ndarray | None, layers: list[str], *, grads=None,
              activations=None, hparams: dict | None = None) -> Path:
    """Write one stored run's events into `out/tensorboard/<run_id>/` (replacing an older
    folder): written whole into a temporary folder and renamed into place."""
    final = Path(out) / TB / run_id
    tmp = final.with_name(f".{run_id}.tmp")
    w = RunWriter(out, run_id, hparams or {}, layers, folder=tmp)
    present = None  # the (layer, param) tensors the grads table holds (a layer may have no bias)
    if grads is not None and len(grads):
        present = set(zip(grads["layer"], grads["param"]))
    per_layer = layer_scalars(grads, activations)
    hist_epochs = sorted(e for e in (grads["epoch"].unique() if grads is not None and len(grads) else []))
    if histograms is not None and len(hist_epochs) != len(histograms):
        hist_epochs = list(range(1, len(histograms) + 1))  # grads not given: one row per epoch 1..E
    hist_at = dict(zip((int(e) for e in hist_epochs), histograms)) if histograms is not None else {}
    t = 0.0
    for row in epochs.sort_values("epoch").itertuples(index=False):
        row = row._asdict()
        t += float(row.get("seconds") or 0.0)
        e = int(row["epoch"])
        scalars = {tag: row[col] for col, tag in SCALARS.items() if col in row}
        scalars.update(per_layer.get(e, {}))
        hists = {}
        if e in hist_at:
            hists = {hist_tag(layer, p): hist_at[e][i][j]
                     for i, layer in enumerate(layers) for j, p in enumerate(PARAMS)
                     if present is None or (layer, p) in present}
        w.add(e, scalars, hists, wall_time=w.start + t)
    w.close()
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def export(out: Path, only_missing: bool = True) -> list[str]:
    """Write events for the complete runs of `out` from the stored tables (those without
    a folder yet, or all); returns the run ids written."""
    out = Path(out)
    res = store.load(out)
    written = []
    for row in res.runs.to_dict("records") if len(res.runs) else []:
        run_id = row["run_id"]
        if only_missing and (out / TB / run_id).is_dir():
            continue
        grads = res.grads[res.grads["run_id"] == run_id]
        try:
            counts, _ = res.histogram(run_id)
        except store.StoreError:
            counts = None
        write_run(out, run_id, res.epochs[res.epochs["run_id"] == run_id], counts, layer_names(grads), grads=grads,
                  activations=res.activations[res.activations["run_id"] == run_id], hparams=hparams_of(row))
        written.append(run_id)
    return written
