"""Experiments: specs (TOML presets and files), their expansion into runs, groups and
units, and the runner that trains them into a results directory.

- `spec.py`: `load_spec(preset_or_file, **overrides) -> ExperimentSpec`, validated (and the
  names below re-exported); one job each: `schema.py` (the spec's keys, defaults and
  constraints), `expansion.py` (spec -> runs -> groups -> units), `runs.py` (`RunSpec`,
  `ModelSpec`, `Unit`), `identity.py` (run ids, group names, labels), `presets.py` (the
  built-in presets, the reproduce list), `overrides.py` (`--set`).
- `presets/*.toml`: the built-in experiments (`vglab list`).
- `runner.py`: `run_experiment(spec, out)`, resume, locking, meta data, local workers.
- `ray_executor.py`: the same tasks on a Ray cluster.
- `progress.py`: Rich progress bars (or none).
- `api.py`: `vglab.run`, `vglab.load_results`, `vglab.list_presets`; `RunOptions`, what `run` and
  `vglab.reproduce` pass to the runner.
"""

from vglab.experiments.expansion import ExperimentSpec
from vglab.experiments.presets import list_presets
from vglab.experiments.runs import RunSpec, Unit
from vglab.experiments.schema import SpecError
from vglab.experiments.spec import load_spec

__all__ = ["ExperimentSpec", "RunSpec", "SpecError", "Unit", "list_presets", "load_spec", "run_experiment",
           "run_experiments"]


def __getattr__(name):  # the runner imports more; load it on first use
    if name in ("run_experiment", "run_experiments"):
        from vglab.experiments import runner

        return getattr(runner, name)
    raise AttributeError(name)
