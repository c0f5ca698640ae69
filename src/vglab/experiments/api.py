"""The Python face of training: `vglab.run`, `vglab.load_results`, `vglab.list_presets`,
and what `vglab.reproduce` (in `vglab.report.pages`, which also draws) shares with `run`:
the options that travel together to the runner (`RunOptions`) and the checks made before
the runner's imports.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from pathlib import Path

from vglab.experiments.presets import REPRODUCE, preset_names
from vglab.experiments.presets import list_presets as _presets


def list_presets() -> list[dict]:
    """The built-in experiments: one dict (name, description, reference) per preset."""
    return _presets()


def load_results(path, *more):
    """Read a results directory into a `vglab.results.Results` (pandas tables).

    Several folders (`load_results(a, b)` or a list) are read into one `Results` whose
    tables are concatenated, with an `experiment` column naming each row's folder::

        res = vglab.load_results("vglab-results/digits/large-params", "vglab-results/mnist/large-params")
        res.table("epochs").groupby(["experiment", "label", "epoch"]).val_acc.mean()

    `res.table(name)`, each row joined with its run's configuration:
    "runs" (one row per run: configuration, n_classes, n_params, ...), "epochs" (loss and
    accuracy per recorded epoch, 0 = at initialization), "grads" (per layer and w|b: gradient
    statistics over the steps since the previous record), "activations" (per layer: the
    layer factors g'(z), saturation and weight norms on a 512-example probe batch);
    `res.histogram_table()`: gradient entries x steps per log10|g| bin. See
    `help(vglab.results.Results)`.
    """
    from vglab.results import load, load_many

    if more or isinstance(path, (list, tuple)):
        return load_many(([*path] if isinstance(path, (list, tuple)) else [path]) + list(more))
    return load(path)


def python_caller(fn):
    """Messages raised inside name the Python arguments (`out=`), unless the CLI called."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        from vglab.results.store import CALLER

        token = CALLER.set("python") if CALLER.get() is None else None
        try:
            return fn(*args, **kwargs)
        finally:
            if token is not None:
                CALLER.reset(token)
    return call


@dataclass(frozen=True)
class RunOptions:
    """What `run` and `reproduce` pass to the runner, the same for every experiment of a
    command: where it trains (`workers`, `executor`, `address`, `device`: see
    `runner.Placement`), where the data are read, and what may be written."""

    workers: int | None = None
    executor: str = "local"
    address: str | None = None
    device: str | None = None
    data_dir: object = None
    tensorboard: bool = False
    overwrite: bool = False
    allow_large: bool = False

    def check_address(self) -> None:
        """An unreachable Ray cluster is refused before the runner's imports (JAX, pandas, Ray:
        3 of the 7 s a refusal took on a busy 2-core machine); the runner checks it again."""
        if self.executor == "ray" and self.address:
            from vglab.experiments.ray_executor import check_address

            check_address(self.address)

    def plan(self, specs, outs):
        """The runner's `Plan` for `specs` into `outs` (None: the default folders)."""
        from vglab.experiments import runner

        return runner.plan_experiments(specs, outs, workers=self.workers, executor=self.executor,
                                       data_dir=self.data_dir, device=self.device, address=self.address)

    def train(self, specs, outs, progress, on_complete=None) -> list[Path]:
        """Train the pending runs of `specs` into `outs`; returns the folders."""
        from vglab.experiments import runner

        return runner.run_experiments(specs, outs, workers=self.workers, executor=self.executor,
                                      address=self.address, data_dir=self.data_dir, tensorboard=self.tensorboard,
                                      device=self.device, progress=progress, overwrite=self.overwrite,
                                      on_complete=on_complete, allow_large=self.allow_large)


def default_progress(show: bool):
    from vglab.experiments.progress import for_stream

    return for_stream(show)


@python_caller
def run(spec, *, dataset: str | None = None, epochs: int | None = None, seeds: int | list[int] | None = None,
        train_size: int | None = None, data=None, set: list[str] | None = None, out=None, data_dir=None,  # noqa: A002
        workers: int | None = None, executor: str = "local", address: str | None = None, tensorboard: bool = False,
        device: str | None = None, progress: bool = True, overwrite: bool = False, allow_large: bool = False,
        dry_run: bool = False,
        _progress=None):
    """Train an experiment and return its `Results`. Re-running resumes: complete runs are kept.

    `spec`: a preset name, a spec .toml path, a dict with the keys of a spec file (validated
    the same way; it needs a `name`) or an `ExperimentSpec`. `data`: your own arrays,
    `(x_train, y_train, x_test, y_test)` or a dict of them (see `vglab.data.own`), instead
    of `dataset`. `set`: assignments to any spec field, like the CLI's --set
    (["optimizer.eps=1e-10", "arms.0.alpha=[1, 2]"]). `out` defaults to
    `vglab-results/<dataset>/<name>` (an own .npz: its stem; `data=` arrays: `arrays-<hash>`);
    `workers` to one process per core (1 trains in this process); `executor` is "local" or
    "ray" (`address`: a cluster, else a local Ray instance); `device` "cpu" | "gpu" | "auto"
    must be chosen before JAX starts.
    `allow_large` lifts the size limits (`vglab.experiments.schema.LIMITS`).
    With several workers, a script must call this under `if __name__ == "__main__":`.
    With `progress`, the plan (estimated time per experiment) is shown before training;
    `dry_run=True` returns that `runner.Plan` without training or writing anything.
    """
    options = RunOptions(workers, executor, address, device, data_dir, tensorboard, overwrite, allow_large)
    options.check_address()
    spec = _one_spec(spec, data, set, allow_large, dataset=dataset, epochs=epochs, seeds=seeds, train_size=train_size)
    outs = None if out is None else [out]
    if dry_run:
        return options.plan([spec], outs)
    return load_results(options.train([spec], outs, _progress or default_progress(progress))[0])


def _one_spec(spec, data, sets, allow_large: bool, **overrides):
    """`run`'s spec: loaded (a preset, file or dict, with the overrides) or as given."""
    from vglab.experiments.spec import ExperimentSpec, load_spec

    if data is not None:
        if overrides["dataset"] is not None:
            raise ValueError("give either dataset or data (your own arrays), not both")
        overrides["dataset"] = str(_save_data(data))
    if isinstance(spec, ExperimentSpec):
        if any(v is not None for v in overrides.values()) or sets:
            raise ValueError("overrides apply to a preset name, spec file or dict; change the ExperimentSpec instead")
        return spec
    return load_spec(spec, sets=sets, allow_large=allow_large, **overrides)


def _save_data(data):
    from vglab.data import save_arrays

    if isinstance(data, dict):
        return save_arrays(**data)
    if isinstance(data, (tuple, list)) and len(data) == 4:
        return save_arrays(*data)
    raise ValueError("data is (x_train, y_train, x_test, y_test) or a dict with those keys (and optionally classes)")


def reproduce_specs(dataset: str, presets, out, sets, allow_large: bool, **overrides):
    """`reproduce`'s experiments, checked: (specs, the root folder, each one's folder)."""
    from vglab.data.own import dataset_name
    from vglab.experiments import runner
    from vglab.experiments.spec import load_spec

    if isinstance(presets, str) or (presets is not None and not presets):
        raise ValueError(f"presets must be a non-empty list of preset names or spec files, got {presets!r}; "
                         "leave it out (None) to run them all")
    names = list(presets) if presets is not None else [p for p in REPRODUCE if p in preset_names()]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"presets: {', '.join(map(repr, repeated))} given more than once; name each experiment once")
    specs = [load_spec(n, sets=sets, dataset=dataset, allow_large=allow_large, **overrides) for n in names]
    for a, b in itertools.combinations(specs, 2):
        if a.name == b.name:
            raise ValueError(f"{a.source} and {b.source} are both named {a.name!r}, and each experiment gets the "
                             "folder of its name; set a distinct name = in one of them")
    root = Path(out) if out is not None else runner.DEFAULT_ROOT / dataset_name(dataset)
    return specs, root, [root / s.name for s in specs]
