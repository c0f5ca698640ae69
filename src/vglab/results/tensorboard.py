"""TensorBoard event files for stored runs: `OUT/tensorboard/<run_id>/events.out.tfevents.*`.

Written with the tensorboard package's own writer and protos (no TensorFlow needed):
- scalars per epoch: `loss/train`, `loss/val`, `loss/penalty`, `loss/total`,
  `accuracy/train`, `accuracy/val` (epoch 0 is the measurement at initialization);
- one histogram per layer and parameter per epoch, `grad_log10|g|/<layer>/<w|b>`, from the
  stored log10|g| bin counts over all the epoch's steps (DESIGN.md): bucket limits are
  the bin edges; exact zeros are counted in a first bucket ending at the lowest edge.

`python -m tensorboard.main --logdir OUT/tensorboard` shows them. A run's folder is
written whole into a temporary folder and renamed into place, so it is complete or absent.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from vglab.results import store

TB = "tensorboard"
SCALARS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_penalty": "loss/penalty",
           "train_total_loss": "loss/total", "train_acc": "accuracy/train", "val_acc": "accuracy/val"}
PARAMS = ("w", "b")


def layer_names(grads) -> list[str]:
    """Layer names in network order, from a `grads` table."""
    if grads is None or len(grads) == 0:
        return []
    return list(grads.drop_duplicates("layer").sort_values("layer_index")["layer"])


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


def write_run(out: Path, run_id: str, epochs, histograms: np.ndarray | None, layers: list[str]) -> Path:
    """Write one run's events into `out/tensorboard/<run_id>/` (replacing an older folder)."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    from vglab.train.probes import hist_edges

    final = Path(out) / TB / run_id
    tmp = final.with_name(f".{run_id}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    writer = EventFileWriter(str(tmp))
    t = 0.0
    start = time.time()
    for row in epochs.sort_values("epoch").itertuples(index=False):
        row = row._asdict()
        t += float(row.get("seconds") or 0.0)
        values = [Summary.Value(tag=tag, simple_value=float(row[col]))
                  for col, tag in SCALARS.items() if col in row and np.isfinite(row[col])]
        writer.add_event(Event(wall_time=start + t, step=int(row["epoch"]), summary=Summary(value=values)))
    if histograms is not None:
        edges = hist_edges()
        for e, per_layer in enumerate(histograms, start=1):  # histograms cover epochs 1..E
            values = [Summary.Value(tag=f"grad_log10|g|/{layer}/{p}", histo=_histogram(per_layer[i][k], edges))
                      for i, layer in enumerate(layers) for k, p in enumerate(PARAMS)]
            writer.add_event(Event(wall_time=start + e, step=e, summary=Summary(value=values)))
    writer.close()
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
    for run_id in res.runs["run_id"] if len(res.runs) else []:
        if only_missing and (out / TB / run_id).is_dir():
            continue
        grads = res.grads[res.grads["run_id"] == run_id]
        try:
            counts, _ = res.histogram(run_id)
        except store.StoreError:
            counts = None
        write_run(out, run_id, res.epochs[res.epochs["run_id"] == run_id], counts, layer_names(grads))
        written.append(run_id)
    return written
