"""vglab: the vanishing-gradient lab.

The Python API mirrors the `vglab` command (imports are lazy, so `import vglab` is fast)::

    import vglab
    vglab.list_presets()                               # [{name, description, reference}, ...]
    res = vglab.run("large-params", dataset="mnist")   # train (or resume), returns the Results
    res.table("epochs").groupby("label").val_acc.last()
    vglab.report(res.path)                             # the HTML report's path
    vglab.load_results("vglab-results/digits/large-params")
    vglab.reproduce(dataset="digits")                  # every preset, then the index page
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

__all__ = ["run", "reproduce", "load_results", "list_presets", "report", "watch", "watch_table", "watch_reset",
           "layer_factors", "Recorder", "critical_sigma_w2", "__version__"]

# Each name's home module, imported on first use.
_HOME = {"run": "vglab.experiments.api", "load_results": "vglab.experiments.api",
         "list_presets": "vglab.experiments.api", "reproduce": "vglab.report.pages", "report": "vglab.report.pages",
         "watch": "vglab.train.watch", "watch_table": "vglab.train.watch", "watch_reset": "vglab.train.watch",
         "layer_factors": "vglab.train.watch", "Recorder": "vglab.results.recorder",
         # critical_sigma_w2(activation, alpha, sigma_b2): the σ_w² where χ_1 = 1 (mean-field), e.g. for
         # init = f"orthogonal(sigma_w2={vglab.critical_sigma_w2('tanh', 1.0, 0.05)})"
         "critical_sigma_w2": "vglab.nn.meanfield"}
_SUBPACKAGES = ("nn", "data", "train", "experiments", "results")


def __getattr__(name):  # `vglab.nn.activation(...)` after a plain `import vglab`
    if name in _SUBPACKAGES:
        return importlib.import_module(f"vglab.{name}")
    if name in _HOME:
        value = globals()[name] = getattr(importlib.import_module(_HOME[name]), name)
        return value
    raise AttributeError(f"module 'vglab' has no attribute {name!r}")


class _Package(types.ModuleType):
    """`vglab.report` is a function (`report.pages.report`) and the subpackage's name:
    importing the subpackage must not put the module in the function's place."""

    def __setattr__(self, name, value):
        if not (name == "report" and isinstance(value, types.ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
