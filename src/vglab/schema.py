"""The results format's shared facts, NumPy only: the lowest module of vglab (every floor
may import it; it imports nothing of vglab). The probes and the model layout write by them,
the results store reads by them, so reading results never imports JAX.

- `PARAMS`: a layer's tensors, in the order of a histogram's param axis ("w", then "b").
- The gradient histogram: bin 0 counts exact zeros, bins 1..`HIST_BINS` split log10|g| over
  `HIST_LOG10_RANGE` evenly (`hist_edges`), values outside clipped into the end bins.
- The report's sizes that the plan prices before training (`experiments.runner`'s cost model)
  and the report draws by: `REPORT_PANELS`, `VANISH_DECADES`, `EXPLODE_DECADES`. They live
  here, below both, so neither keeps a copy of the other's.
"""

from __future__ import annotations

import numpy as np

PARAMS = ("w", "b")
HIST_LOG10_RANGE = (-12.0, 2.0)  # histogram of log10|g|: 1e-12 .. 1e2
HIST_BINS = 60

REPORT_PANELS = 6  # a per-configuration panel figure draws at most this many configurations
VANISH_DECADES = 3.0  # the doctor: a hidden layer's mean |gradient| this many decades below the output layer's
EXPLODE_DECADES = 1.0  # ... or this many above


def hist_edges() -> np.ndarray:
    """Edges (in log10|g|) of the HIST_BINS gradient-magnitude bins; bin 0 of a stored
    histogram counts exact zeros, bins 1..HIST_BINS these ranges (values outside clipped).
    The bins are exact for the float32 edges `10.0 ** hist_edges()` (`train.probes.hist_bins`)."""
    return np.linspace(*HIST_LOG10_RANGE, HIST_BINS + 1)


def arch_name(network: str, depth=None, width=None, variant=None, model=None, model_args=()) -> str:
    """A network's short name in labels and run ids: `mlp 20x8`, `cnn 4conv+1x8`,
    `paper_cnn(layers)`, your model's `file:factory(k=v)` (`model_args`: sorted items)."""
    if network == "mlp":
        return f"mlp {depth}x{width}"
    if network == "cnn":
        return f"cnn 4conv+{depth}x{width}"
    if network == "paper_cnn":
        return f"paper_cnn({variant})"
    ref = str(model).rsplit("/", 1)[-1].replace(".py:", ":").removeprefix("__main__:")
    args = ", ".join(f"{k}={v}" for k, v in model_args)
    return f"{ref}({args})" if args else ref
