"""Writing report pages from Python: one experiment's, or every page of a `reproduce` root
and its index (`report`, which is `vglab.report`), and every preset's while they train
(`reproduce`, which is `vglab.reproduce`), on a pool of processes (`ReportWriter`); both
draw a root's pages and index the one way (`_pages_and_index`). Whether a page is up to
date is `html.is_fresh` (the one rule).

The HTML module is imported when a page is drawn (`html_module`), so a command that draws
none (`reproduce(report=False)`, a dry run) does not import matplotlib.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

from vglab.experiments.api import RunOptions, default_progress, python_caller, reproduce_specs


def html_module():
    """`vglab.report.html`, or an ImportError that says the report is not available."""
    try:
        from vglab.report import html
    except ImportError as e:
        raise ImportError(f"the HTML report is not available (vglab.report.html: {e})") from None
    if not hasattr(html, "write_report") or not hasattr(html, "write_index"):
        raise ImportError("the HTML report is not available (vglab.report.html lacks write_report/write_index)")
    return html


def is_results_dir(path: Path) -> bool:
    """An experiment's folder: its runs, or at least its experiment.toml (no run done yet)."""
    return (path / "runs").is_dir() or (path / "experiment.toml").exists()


def experiment_dirs(root: Path) -> list[Path]:
    """The experiment folders of a `reproduce` root (one per preset), in `reproduce`'s order:
    the presets' list, then the others by name."""
    from vglab.experiments.presets import preset_names

    order = {n: i for i, n in enumerate(preset_names())}
    dirs = [d for d in Path(root).iterdir() if d.is_dir() and is_results_dir(d)] if Path(root).is_dir() else []
    return sorted(dirs, key=lambda d: (order.get(d.name, len(order)), d.name))


def write(path, open: bool = False, figure_formats=("png",), workers: int | None = None,  # noqa: A002
          progress: bool = True, _progress=None):
    """Write the HTML report of the results directory `path`, or of every experiment of the
    `reproduce` root `path` and its index; returns the page's path (the index's)."""
    path = Path(path)
    if is_results_dir(path):
        page = html_module().write_report(path, figure_formats=tuple(figure_formats))
    elif experiment_dirs(path):
        page = write_root(path, figure_formats, workers, _progress or default_progress(progress))
    else:
        raise _no_results(path)
    if open:
        import webbrowser

        webbrowser.open(Path(page).resolve().as_uri())
    return page


def _no_results(path: Path):
    """The error for a folder that is neither an experiment's nor a `reproduce` root (naming
    the roots inside it, when it holds several: `vglab-results`)."""
    from vglab.results.store import StoreError

    roots = [d for d in sorted(path.iterdir()) if d.is_dir() and experiment_dirs(d)] if path.is_dir() else []
    if roots:
        return StoreError(f"no results directory at {path}; it holds the reproduce roots "
                          f"{', '.join(str(d) for d in roots)}: give one of them")
    return StoreError(f"no results directory at {path}: it holds neither runs/ nor experiment folders; run an "
                      f"experiment first (vglab run PRESET --out {path}, or vglab reproduce --out {path})")


def write_root(root, figure_formats=("png",), workers: int | None = None, progress=None) -> Path:
    """Redraw every experiment page of the `reproduce` root `root` (on `workers` processes) and
    its index, as `reproduce` draws them; returns the index's path."""
    root = Path(root)
    dirs = experiment_dirs(root)

    def submit_all(submit):
        for d in dirs:
            submit(d)
        return dirs

    index, shown = root / html_module().INDEX, progress or default_progress(False)
    with shown:
        return _pages_and_index(index, ReportWriter(workers, shown, figure_formats, index, redraw=True), submit_all)


def _pages_and_index(index: Path, writer: "ReportWriter", experiments) -> Path:
    """Draw each experiment's page on `writer` as `experiments(writer.submit)` hands it over
    (returning the folders), then the index over them: written once every page is (it links
    them), so a page that fails leaves no index."""
    from vglab.data.files import write_text

    with writer:
        done = experiments(writer.submit)
        # The index evaluates every claim over all results (seconds): here, while the last
        # pages are drawn, not after.
        page = html_module().render_index(done, index, refresh_pages=False)
    write_text(index, page)
    return index


class ReportEntry:
    """`vglab.report(path, open=False, figure_formats=("png",), workers=None, progress=True)`:
    write the HTML report of the results directory `path` and return the page's path; of a
    `reproduce` root, redraw every experiment's page (on `workers` processes, the pages
    counted on stderr unless `progress` is False) and the index, and return the index's path.

    `vglab.report` is also the name of the subpackage `vglab/report/`, and importing it
    would replace this function on the package (`vglab/__init__.py` keeps it). So this one
    object stands for both: calling it writes a report; its attributes are the
    subpackage's (`vglab.report.html`)."""

    def __call__(self, path, open: bool = False, figure_formats=("png",), workers: int | None = None,  # noqa: A002
                 progress: bool = True, _progress=None):
        return write(path, open, figure_formats, workers, progress, _progress)

    def __getattr__(self, name):
        return getattr(importlib.import_module("vglab.report"), name)

    def __repr__(self):
        return "<function vglab.report(path, open=False)>"


report = ReportEntry()


@python_caller
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
    options = RunOptions(workers, executor, address, device, data_dir, tensorboard, overwrite, allow_large)
    options.check_address()
    specs, root, outs = reproduce_specs(dataset, presets, out, set, allow_large, epochs=epochs, seeds=seeds,
                                        train_size=train_size)
    if dry_run:
        return options.plan(specs, outs)
    shown = _progress or default_progress(progress)
    try:
        html = html_module() if report else None
    except ImportError as e:
        (_warn or print)(f"{e}; the results are in {root}")
        html = None
    if html is None:
        options.train(specs, outs, shown)
        return root
    index = root / html.INDEX
    with shown:  # pages drawn while other experiments train
        return _pages_and_index(index, ReportWriter(workers, shown, figure_formats, index),
                                lambda submit: options.train(specs, outs, shown, on_complete=submit))


class ReportWriter:
    """Writes the report of each experiment whose page is missing or older than its
    results (every one with `redraw`), on as many processes as training uses (a page's
    figures take seconds to draw), as the experiments are submitted; leaving the `with`
    block waits for all.
    The progress display counts the pages (`reports`, `report_done`)."""

    def __init__(self, workers: int | None, progress=None, figure_formats=("png",), index=None, redraw: bool = False):
        from vglab.experiments.progress import NoProgress
        from vglab.train.parallel import default_workers

        self.n = workers or default_workers()
        self.progress = progress or NoProgress()
        self.kw = {"figure_formats": tuple(figure_formats), "index": index}
        self.redraw = redraw  # every page submitted, fresh or not (`vglab report ROOT`)
        self.pool, self.futures, self.submitted = None, [], 0

    def __enter__(self):
        return self

    def submit(self, d) -> None:
        if not self.redraw and html_module().is_fresh(d):
            return
        self.submitted += 1
        self.progress.reports(self.submitted)
        if self.n <= 1:
            _, seconds = _timed_report(d, **self.kw)
            self.progress.report_done(d.name, seconds)
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


def _timed_report(path, **kw):
    t0 = time.perf_counter()
    return html_module().write_report(path, **kw), time.perf_counter() - t0
