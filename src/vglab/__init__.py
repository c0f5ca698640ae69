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

import functools
import itertools
import sys
import types

__version__ = "0.1.0"

__all__ = ["run", "reproduce", "load_results", "list_presets", "report", "watch", "watch_table", "watch_reset",
           "layer_factors", "Recorder", "critical_sigma_w2", "__version__"]

# Names served lazily from their home modules (watching your own training step).
_LAZY = {"watch": "vglab.train.watch", "watch_table": "vglab.train.watch", "watch_reset": "vglab.train.watch",
         "layer_factors": "vglab.train.watch", "Recorder": "vglab.results.recorder",
         # critical_sigma_w2(activation, alpha, sigma_b2): the σ_w² where χ_1 = 1 (mean-field), e.g. for
         # init = f"orthogonal(sigma_w2={vglab.critical_sigma_w2('tanh', 1.0, 0.05)})"
         "critical_sigma_w2": "vglab.report.theory"}


def list_presets() -> list[dict]:
    """The built-in experiments: one dict (name, description, reference) per preset."""
    from vglab.experiments.spec import list_presets as presets

    return presets()


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


def _python_caller(fn):
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


@_python_caller
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
    `allow_large` lifts the size limits (`vglab.experiments.spec.LIMITS`).
    With several workers, a script must call this under `if __name__ == "__main__":`.
    With `progress`, the plan (estimated time per experiment) is shown before training;
    `dry_run=True` returns that `runner.Plan` without training or writing anything.
    """
    _check_ray_address(executor, address)
    from vglab.experiments import runner
    from vglab.experiments.spec import ExperimentSpec, load_spec

    if data is not None:
        if dataset is not None:
            raise ValueError("give either dataset or data (your own arrays), not both")
        dataset = str(_save_data(data))
    overrides = dict(dataset=dataset, epochs=epochs, seeds=seeds, train_size=train_size)
    if isinstance(spec, ExperimentSpec):
        if any(v is not None for v in overrides.values()) or set:
            raise ValueError("overrides apply to a preset name, spec file or dict; change the ExperimentSpec instead")
    else:
        spec = load_spec(spec, sets=set, allow_large=allow_large, **overrides)
    if dry_run:
        return runner.plan_experiments([spec], None if out is None else [out], workers=workers, executor=executor,
                                       data_dir=data_dir, device=device, address=address)
    path = runner.run_experiments([spec], None if out is None else [out], workers=workers, executor=executor,
                                  address=address, data_dir=data_dir, tensorboard=tensorboard, device=device,
                                  progress=_progress or _default_progress(progress), overwrite=overwrite,
                                  allow_large=allow_large)[0]
    return load_results(path)


def _check_ray_address(executor: str, address: str | None) -> None:
    """An unreachable Ray cluster is refused before the runner's imports (JAX, pandas, Ray:
    3 of the 7 s a refusal took on a busy 2-core machine); the runner checks it again."""
    if executor == "ray" and address:
        from vglab.experiments.ray_executor import check_address

        check_address(address)


def _save_data(data):
    from vglab.data import save_arrays

    if isinstance(data, dict):
        return save_arrays(**data)
    if isinstance(data, (tuple, list)) and len(data) == 4:
        return save_arrays(*data)
    raise ValueError("data is (x_train, y_train, x_test, y_test) or a dict with those keys (and optionally classes)")


@_python_caller
def reproduce(dataset: str = "digits", *, out=None, presets: list[str] | None = None, epochs: int | None = None,
              seeds: int | list[int] | None = None, train_size: int | None = None, data_dir=None,
              workers: int | None = None, executor: str = "local", address: str | None = None,
              tensorboard: bool = False, device: str | None = None, progress: bool = True, overwrite: bool = False,
              report: bool = True, set: list[str] | None = None, allow_large: bool = False,  # noqa: A002
              figure_formats: tuple[str, ...] = ("png",), dry_run: bool = False, _progress=None, _warn=None):
    """Run every preset (or `presets`) on `dataset` into `out/<preset>` (default
    `vglab-results/<dataset>`), sharing one pool of workers, then write each experiment's
    report and `out/index.html`. Returns the index page's path (the root folder when
    `report` is False or the report package is missing; the `runner.Plan` with `dry_run`).
    `figure_formats`: ("png",) or ("png", "svg")."""
    from pathlib import Path

    _check_ray_address(executor, address)
    from vglab.experiments import runner
    from vglab.experiments.spec import REPRODUCE, load_spec, preset_names

    if isinstance(presets, str) or (presets is not None and not presets):
        raise ValueError(f"presets must be a non-empty list of preset names or spec files, got {presets!r}; "
                         "leave it out (None) to run them all")
    names = list(presets) if presets is not None else [p for p in REPRODUCE if p in preset_names()]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"presets: {', '.join(map(repr, repeated))} given more than once; name each experiment once")
    specs = [load_spec(n, sets=set, dataset=dataset, epochs=epochs, seeds=seeds, train_size=train_size,
                       allow_large=allow_large) for n in names]
    for a, b in itertools.combinations(specs, 2):
        if a.name == b.name:
            raise ValueError(f"{a.source} and {b.source} are both named {a.name!r}, and each experiment gets the "
                             "folder of its name; set a distinct name = in one of them")
    from vglab.data.own import dataset_name

    root = Path(out) if out is not None else runner.DEFAULT_ROOT / dataset_name(dataset)
    outs = [root / s.name for s in specs]
    if dry_run:
        return runner.plan_experiments(specs, outs, workers=workers, executor=executor, data_dir=data_dir,
                                       device=device, address=address)
    shown = _progress or _default_progress(progress)
    run = functools.partial(runner.run_experiments, specs, outs, workers=workers, executor=executor, address=address,
                            data_dir=data_dir, tensorboard=tensorboard, device=device, progress=shown,
                            overwrite=overwrite, allow_large=allow_large)
    if not report:
        run()
        return root
    try:
        html = _report_module()
    except ImportError as e:
        (_warn or print)(f"{e}; the results are in {root}")
        run()
        return root
    index = root / "index.html"
    with shown, _ReportWriter(workers, shown, tuple(figure_formats), index) as reports:
        outs = run(on_complete=reports.submit)  # each report is drawn while the other experiments train
        # The index evaluates every claim over all results (seconds): here, while the last
        # pages are drawn, not after; it is written once they all are (it links them).
        page = html.render_index(outs, index, refresh_pages=False)
    from vglab.results.store import atomic_write_text

    atomic_write_text(index, page)
    return index


def _report(path, open: bool = False, figure_formats=("png",)):  # noqa: A002 - mirrors the CLI's --open
    from pathlib import Path

    from vglab.results.store import StoreError

    path = Path(path)
    if not (path / "runs").is_dir() and not (path / "experiment.toml").exists():
        raise StoreError(f"no results directory at {path}; run an experiment first (vglab run PRESET --out {path})")
    page = _report_module().write_report(path, figure_formats=tuple(figure_formats))
    if open:
        import webbrowser

        webbrowser.open(Path(page).resolve().as_uri())
    return page


class _ReportEntry:
    """`vglab.report(path, open=False, figure_formats=("png",))`: write the HTML report of the
    results directory `path` and return the page's path.

    `vglab.report` is also the name of the subpackage `vglab/report/`, and importing it
    would replace this function on the package. So this one object stands for both:
    calling it writes a report; its attributes are the subpackage's (`vglab.report.html`)."""

    def __call__(self, path, open: bool = False, figure_formats=("png",)):  # noqa: A002
        return _report(path, open, figure_formats)

    def __getattr__(self, name):
        import importlib

        return getattr(importlib.import_module("vglab.report"), name)

    def __repr__(self):
        return "<function vglab.report(path, open=False)>"


report = _ReportEntry()


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        if name == "report" and isinstance(value, types.ModuleType):
            return  # importing vglab.report keeps the callable above (the module stays in sys.modules)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

_SUBPACKAGES = ("nn", "data", "train", "experiments", "results")


def __getattr__(name):  # `vglab.nn.activation(...)` after a plain `import vglab`
    if name in _SUBPACKAGES:
        import importlib

        return importlib.import_module(f"vglab.{name}")
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vglab' has no attribute {name!r}")


class _ReportWriter:
    """Writes the report of each experiment whose page is missing or older than its
    results, on as many processes as training uses (a page's figures take seconds to
    draw), as the experiments are submitted; leaving the `with` block waits for all.
    The progress display counts the pages (`reports`, `report_done`)."""

    def __init__(self, workers: int | None, progress=None, figure_formats=("png",), index=None):
        from vglab.experiments.progress import NoProgress
        from vglab.train.parallel import default_workers

        self.n = workers or default_workers()
        self.progress = progress or NoProgress()
        self.kw = {"figure_formats": tuple(figure_formats), "index": index}
        self.pool, self.futures, self.submitted = None, [], 0

    def __enter__(self):
        return self

    def submit(self, d) -> None:
        if _report_is_fresh(d):
            return
        self.submitted += 1
        self.progress.reports(self.submitted)
        if self.n <= 1:
            import time

            t0 = time.perf_counter()
            _write_one_report(d, **self.kw)
            self.progress.report_done(d.name, time.perf_counter() - t0)
            return
        if self.pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(self.n, mp_context=mp.get_context("spawn"), initializer=_ignore_ctrl_c)
        fut = self.pool.submit(_timed_report, d, **self.kw)
        fut.add_done_callback(lambda f, name=d.name: None if f.exception() else
                              self.progress.report_done(name, f.result()[1]))
        self.futures.append(fut)

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=exc[0] is not None)
            if exc[0] is None:
                for f in self.futures:
                    f.result()  # a report that failed raises here
        return False


def _ignore_ctrl_c() -> None:
    """In a report writer: Ctrl-C reaches the whole process group, and the parent stops the pool."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _report_is_fresh(d) -> bool:
    page = d / "report.html"
    return page.exists() and all(p.stat().st_mtime <= page.stat().st_mtime
                                 for p in [d / "experiment.toml", *d.glob("runs/*/DONE")] if p.exists())


def _write_one_report(path, **kw):
    return _report_module().write_report(path, **kw)


def _timed_report(path, **kw):
    import time

    t0 = time.perf_counter()
    return _write_one_report(path, **kw), time.perf_counter() - t0


def _report_module():
    try:
        from vglab.report import html
    except ImportError as e:
        raise ImportError(f"the HTML report is not available (vglab.report.html: {e})") from None
    if not hasattr(html, "write_report") or not hasattr(html, "write_index"):
        raise ImportError("the HTML report is not available (vglab.report.html lacks write_report/write_index)")
    return html


def _default_progress(show: bool):
    from vglab.experiments.progress import for_stream

    return for_stream(show)
