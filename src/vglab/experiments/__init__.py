"""Experiments: specs (TOML presets and files), their expansion into runs, groups and
units, and the runner that trains them into a results directory.

- `spec.py`: `load_spec(preset_or_file, **overrides) -> ExperimentSpec`, validated (and the
  names below re-exported); one job each: `schema.py` (the spec's keys, defaults and
  constraints), `expansion.py` (spec -> runs -> groups -> units), `runs.py` (`RunSpec`,
  `ModelSpec`, `Unit`), `identity.py` (run ids, group names, labels), `presets.py` (the
  built-in presets, the reproduce list), `overrides.py` (`--set`), `errors.py` (`SpecError`).
- `presets/*.toml`: the built-in experiments (`vglab list`).
- `runner.py`: `run_experiment(spec, out)`, resume, locking, meta data, local workers.
- `ray_executor.py`: the same tasks on a Ray cluster.
- `progress.py`: Rich progress bars (or none).
- `api.py`: `vglab.run`, `vglab.load_results`, `vglab.list_presets`; `RunOptions`, what `run` and
  `vglab.reproduce` pass to the runner.
"""

import importlib

# Each name's home, imported on first use: the spec's checks import JAX (through vglab.nn and
# vglab.train), and `vglab list` reads only the presets' TOML.
_HOME = {"ExperimentSpec": "expansion", "RunSpec": "runs", "Unit": "runs", "SpecError": "errors",
         "list_presets": "presets", "load_spec": "spec", "run_experiment": "runner", "run_experiments": "runner"}
__all__ = list(_HOME)


def __getattr__(name):
    if name in _HOME:
        return getattr(importlib.import_module(f"vglab.experiments.{_HOME[name]}"), name)
    raise AttributeError(f"module 'vglab.experiments' has no attribute {name!r}")
