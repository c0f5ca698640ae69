"""Experiments: specs (TOML presets and files), their expansion into runs, groups and
units, and the runner that trains them into a results directory.

- `spec.py`: `load_spec(preset_or_file, **overrides) -> ExperimentSpec`, validated.
- `presets/*.toml`: the built-in experiments (`vglab list`).
- `runner.py`: `run_experiment(spec, out)`, resume, locking, meta data, local workers.
- `ray_executor.py`: the same tasks on a Ray cluster.
- `progress.py`: Rich progress bars (or none).
- `api.py`: `vglab.run`, `vglab.load_results`, `vglab.list_presets`; `RunOptions`, what `run` and
  `vglab.reproduce` pass to the runner.
"""

from vglab.experiments.spec import ExperimentSpec, RunSpec, SpecError, Unit, list_presets, load_spec

__all__ = ["ExperimentSpec", "RunSpec", "SpecError", "Unit", "list_presets", "load_spec", "run_experiment",
           "run_experiments"]


def __getattr__(name):  # the runner imports more; load it on first use
    if name in ("run_experiment", "run_experiments"):
        from vglab.experiments import runner

        return getattr(runner, name)
    raise AttributeError(name)
