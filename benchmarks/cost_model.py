"""The runner's cost model against measurements, and its calibration.

    PYTHONPATH=src python benchmarks/cost_model.py --compare RESULTS...     # estimate vs measured, per term
    PYTHONPATH=src python benchmarks/cost_model.py --compare RESULTS... --costs OLD.json   # another calibration's plan
    PYTHONPATH=src python benchmarks/cost_model.py --calibrate RESULTS...   # fit costs.json's "cpu" from them
    PYTHONPATH=src python benchmarks/cost_model.py --calibrate RESULTS... --terms report   # only those terms
    PYTHONPATH=src python benchmarks/cost_model.py --programs [PROGRAM...]  # one program, cold compile, per epoch

RESULTS: a results folder (`vglab run --out`) or a folder of them (`vglab reproduce --out`);
MNIST's need `--data-dir DIR` (the plan prepares the data). Every run records in its
meta.json, per task, the worker's CPU seconds (compiling, each unit) and the program's
features (`runner.task_features`), and the report page its CPU seconds; the plan is made
again for a fresh folder (the same specs and workers) and set against them.

--compare prints, per experiment, the plan's compile, train and report seconds (one core)
against the measured CPU seconds, and per results root the wall time: the plan's, the
measured one and, since a shared machine inflates wall time, the measured CPU seconds
scheduled on the workers as the plan schedules its estimates ("idle" column). A model
several experiments train is compiled by whichever task the scheduler starts first, so
both sides split each program family's compiles and loads evenly between its experiments
(`ATTRIBUTION`, `runner.compile_shares`); a term under `NOISE_FLOOR_S` on both sides is
within the band (its ratio is noise), and the last line lists the terms outside 2x.

--calibrate fits the CPU constants (least squares of the relative error, i.e. about log
space, non-negative, each constant pulled weakly towards its current value so that one
these runs cannot see stays put; `--terms` names the terms to fit, the others' constants
are kept), prints each term's residuals (estimate / measured per sample: per report page)
and, with --write, writes them into
src/vglab/experiments/costs.json with the machine, date and versions they were measured on.

--programs (the older per-program check): per built-in program, CPU seconds of a cold
compile, one epoch and one record in a fresh process pinned to one core; `--device gpu`
(on a GPU machine) times one process in wall seconds against `runner.GPU_COSTS`.
    PYTHONPATH=src python benchmarks/cost_model.py --programs large-params:mnist cnn-large-params:mnist:3200
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

DEFAULT = ["large-params:digits", "combined:digits", "many-layers:digits", "cnn-large-params:digits",
           "paper-cnn-large-params:digits", "cnn-many-layers:digits", "paper-cnn-many-layers:digits"]
PRIOR_WEIGHT = 1e-3  # a constant the runs cannot tell apart stays at its current value (1 per measured task)
# A term under this many CPU seconds on both sides counts as within the band (its ratio is
# noise): loading one cached program, the same work each time, took 0.0-1.8 s of CPU over
# the 40 loads of the calibration runs (95th percentile 1.8 s, shared 2-core machine), and
# the first task's compile/train split (JAX's wall seconds times the core's share) moved
# 1.5-6 s between identical tasks. `--compare` prints the loads' spread of its folders.
NOISE_FLOOR_S = 2.0
ATTRIBUTION = ("compile: each model's programs (one family: same data, network, grid and probes; optimizers and "
               "penalties are variants) counted once, the sum of its tasks' compiles and cache loads, split evenly "
               "between the experiments that train it, on both sides (which one compiles it first is the schedule's "
               "choice)")


# ------------------------------------------------------------------ results folders
def experiment_folders(paths: list[str | Path]) -> dict[Path, list[Path]]:
    """{results root: its experiment folders (those with meta.json)}."""
    out: dict[Path, list[Path]] = {}
    for p in map(Path, paths):
        if (p / "meta.json").exists():
            out.setdefault(p.parent, []).append(p)
        else:
            found = sorted(d for d in p.iterdir() if (d / "meta.json").exists()) if p.is_dir() else []
            if not found:
                raise SystemExit(f"error: {p} holds no results folder (no meta.json in it or below it); "
                                 "give a folder of `vglab run --out` or `vglab reproduce --out`")
            out.setdefault(p, []).extend(found)
    for root, folders in out.items():  # an experiment still training (or killed) has no finished record yet
        done = [f for f in folders if any(c.get("tasks") for c in json.loads((f / "meta.json").read_text())
                                          .get("invocations", []))]
        if len(done) < len(folders):
            print(f"note: {root}: left out, not trained yet: {', '.join(f.name for f in folders if f not in done)}",
                  file=sys.stderr)
        out[root] = done
    return {root: folders for root, folders in out.items() if folders}


def _last_training(meta: dict) -> dict:
    """The last invocation that trained (its tasks are what the folder's runs cost)."""
    calls = [c for c in meta.get("invocations", []) if c.get("tasks")]
    if not calls:
        raise SystemExit("error: a meta.json records no trained task; run the experiment (into a fresh folder)")
    return calls[-1]


def measured(folder: Path) -> dict:
    """CPU seconds of one experiment as meta.json records them: compiling (or loading) its
    programs, training its units, drawing its page; per task too."""
    meta = json.loads((folder / "meta.json").read_text())
    call = _last_training(meta)
    tasks = {}
    for t in call["tasks"]:
        if "unit_cpu_seconds" not in t:
            raise SystemExit(f"error: {folder}/meta.json has no per-task CPU seconds (made by an older vglab); "
                             "run the experiment again into a fresh folder")
        tasks[t["task"]] = {"compile": t["compile_cpu_seconds"], "train": sum(t["unit_cpu_seconds"]) - t["compile_cpu_seconds"],
                            "units": t["units"], "features": t.get("features") or {}, "cache_hits": t.get("cache_hits")}
    report = meta.get("report") or {}
    return {"compile": sum(t["compile"] for t in tasks.values()), "train": sum(t["train"] for t in tasks.values()),
            "report": report.get("cpu_seconds"), "report_written": report.get("written"), "tasks": tasks,
            "report_figures": sum(report["figures"].values()) if "figures" in report else None,
            "report_figure_seconds": report.get("figures", {}),
            "started": call["started"], "workers": call["workers"], "load": call.get("load_average"),
            "machine": meta.get("machine", {}), "versions": meta.get("versions", {})}


def replan(folders: list[Path], workers: int, data_dir):
    """The plan of these experiments into fresh folders (what `vglab reproduce` printed
    before it trained them, with the current constants)."""
    from vglab.experiments import runner
    from vglab.experiments.spec import load_spec
    from vglab.results import store

    specs = []
    for f in folders:
        d = store.read_spec(f)
        spec = load_spec(d.get("preset") or d["source"], dataset=d["dataset"], epochs=d["epochs"], seeds=d["seeds"],
                         train_size=d.get("train_size"))
        if spec.to_dict()["fingerprint"] != d["fingerprint"]:
            raise SystemExit(f"error: {f}: its experiment.toml is not its preset with dataset, epochs, seeds and "
                             "train_size set (a --set?); compare folders made by plain `vglab run`/`reproduce`")
        specs.append(spec)
    with tempfile.TemporaryDirectory() as tmp:
        return runner.plan_experiments(specs, [Path(tmp) / s.name for s in specs], workers=workers, device="cpu",
                                       data_dir=data_dir)


def task_rows(plan, folders: list[Path], ms: list[dict]) -> list[dict]:
    """Per measured task: its experiment, program family and program (as meta.json recorded
    them; runs recorded before they were: the fresh plan's for the same task, else for its
    experiment and group), compile CPU seconds, features and cache hits."""
    recorded = all("family" in t["features"] for m in ms for t in m["tasks"].values())
    rows = []
    for f, m in zip(folders, ms):
        for key, t in m["tasks"].items():
            names = t["features"] if recorded else plan.task_features.get(key) or next(
                (v for k, v in plan.task_features.items() if k.split("/")[:2] == key.split("/")[:2]),
                {"family": key, "program": key})
            rows.append({"experiment": f.name, "key": key, "family": names["family"], "program": names["program"],
                         "seconds": t["compile"], "features": t["features"] or plan.task_features.get(key) or {},
                         "cache_hits": t["cache_hits"]})
    return rows


def noise(ms: list[dict]) -> str:
    """The spread of the folders' cache loads (tasks not first of their program): the same
    work each time, so what a CPU-seconds term varies by on its own."""
    import numpy as np

    loads = [t["compile"] for m in ms for t in m["tasks"].values() if not (t["features"] or {}).get("first", True)]
    if not loads:
        return f"noise floor {NOISE_FLOOR_S:g} s (these folders have no cache load to show the spread)"
    return (f"noise floor {NOISE_FLOOR_S:g} s: a term under it on both sides counts as within 2x; here loading a "
            f"cached program took {min(loads):.1f}-{max(loads):.1f} s of CPU over {len(loads)} loads (95th percentile "
            f"{np.percentile(loads, 95):.1f} s)")


def in_band(est, meas) -> bool:
    """Within 2x, or both under the noise floor."""
    est, meas = est or 0.0, meas or 0.0
    return (est < NOISE_FLOOR_S and meas < NOISE_FLOOR_S) or (meas > 0 and 0.5 <= est / meas <= 2)


def _iso(s: str) -> float:
    return datetime.fromisoformat(s).timestamp()


def measured_wall(root: Path, ms: list[dict]) -> float | None:
    """From the first invocation's start to the last page written (the index page, if any)."""
    ends = [_iso(m["report_written"]) for m in ms if m["report_written"]]
    index = root / "index.html"
    if index.exists():
        ends.append(index.stat().st_mtime)
    return max(ends) - min(_iso(m["started"]) for m in ms) if ends else None


def idle_wall(plan, ms: list[dict]) -> float:
    """The measured CPU seconds scheduled as the plan schedules its estimates: each task (in
    the plan's order; tasks the plan now splits otherwise after them, largest first) on the
    worker free first, each page once its experiment is trained."""
    cost = {k: t["compile"] + t["train"] for m in ms for k, t in m["tasks"].items()}
    order = [k for k in plan.task_features if k in cost]
    order += sorted(set(cost) - set(order), key=lambda k: -cost[k])
    free, ends = [0.0] * plan.workers, {}
    for key in order:
        w = free.index(min(free))
        free[w] += cost.get(key, 0.0)
        ends[key.split("/")[0]] = free[w]
    pages = {r.experiment: m["report"] or 0.0 for r, m in zip(plan.rows, ms)}
    for name in sorted(ends, key=ends.get):
        w = free.index(min(free))
        free[w] = max(free[w], ends[name]) + pages.get(name, 0.0)
    return max(free)


# ------------------------------------------------------------------ --compare
def _dur(s) -> str:
    if s is None:
        return "-"
    s = round(float(s))  # whole seconds first: 119.6 s is 2:00, not 1:60
    return f"{s} s" if s < 60 else f"{s // 60}:{s % 60:02d}"


def _ratio(est, meas) -> str:
    """estimate / measured, marked: '~' both under the noise floor (within the band whatever
    the ratio), '!' outside 2x."""
    mark = "~" if (est or 0) < NOISE_FLOOR_S and (meas or 0) < NOISE_FLOOR_S else " " if in_band(est, meas) else "!"
    return f"{'-' if not est or not meas else f'{est / meas:.2f}'}{mark}"


def measured_shares(plan, folders: list[Path], ms: list[dict]) -> list[dict]:
    """`ms` with each experiment's compile its share of the programs it uses, as the plan
    counts it (`runner.compile_shares`: a family's seconds split evenly between its users)."""
    from vglab.experiments import runner

    shares = runner.compile_shares(task_rows(plan, folders, ms))
    return [{**m, "compile": shares.get(f.name, 0.0)} for f, m in zip(folders, ms)]


def _table(root, folders, plan, ms, out) -> list[dict]:
    """Print one results root's table; return its rows."""
    rows = []
    load = [m["load"][0] for m in ms if m.get("load")]
    print(f"\n{root} ({len(folders)} experiments, {plan.workers} workers"
          + (f", load average at the end {max(load):.1f} on {ms[0]['machine'].get('cpu_count')} cores" if load else "")
          + "): estimate vs measured CPU seconds (ratio = estimate / measured; ~ both under the noise floor, "
            "! outside 2x)", file=out)
    print(f"  {'experiment':<24} {'compile':>7} {'(meas)':>7} {'ratio':>6}  {'train':>7} {'(meas)':>7} {'ratio':>6}"
          f"  {'report':>7} {'(meas)':>7} {'ratio':>6}", file=out)
    tot = {"compile": [0.0, 0.0], "train": [0.0, 0.0], "report": [0.0, 0.0]}
    for r, m in zip(plan.rows, ms):
        cells = []
        for term, est in (("compile", r.compile_s), ("train", r.train_s), ("report", r.report_s)):
            cells.append(f"{_dur(est):>7} {_dur(m[term]):>7} {_ratio(est, m[term]):>6}")
            rows.append({"root": str(root), "experiment": r.experiment, "term": term, "estimate": est,
                         "measured": m[term]})
            tot[term][0] += est
            tot[term][1] += m[term] or 0.0
        print(f"  {r.experiment:<24} " + "  ".join(cells), file=out)
    print(f"  {'all':<24} " + "  ".join(f"{_dur(e):>7} {_dur(mm):>7} {_ratio(e, mm):>6}" for e, mm in tot.values()),
          file=out)
    for term, (e, mm) in tot.items():
        rows.append({"root": str(root), "experiment": "all", "term": term, "estimate": e, "measured": mm})
    wall, idle = measured_wall(root, ms), idle_wall(plan, ms)
    rows.append({"root": str(root), "experiment": "all", "term": "wall", "estimate": plan.wall_s,
                 "measured": wall, "idle": idle})
    print(f"  wall: plan {_dur(plan.wall_s)}, measured {_dur(wall)} (ratio {_ratio(plan.wall_s, wall).strip()}); the "
          f"measured CPU seconds on {plan.workers} idle workers: {_dur(idle)} "
          f"(ratio {_ratio(plan.wall_s, idle).strip()})", file=out)
    print(f"  {noise(ms)}", file=out)
    return rows


def compare(paths, data_dir=None, out=sys.stdout) -> list[dict]:
    """Print and return the rows (experiment, term, estimate, measured) of every results root."""
    rows = []
    print(ATTRIBUTION, file=out)
    for root, folders in experiment_folders(paths).items():
        ms = [measured(f) for f in folders]
        plan = replan(folders, ms[0]["workers"], data_dir)
        rows += _table(root, folders, plan, measured_shares(plan, folders, ms), out)
    summary(rows, out)
    outside = [f"{Path(r['root']).name}/{r['experiment']} {r['term']}" for r in rows
               if r["term"] != "wall" and not in_band(r["estimate"], r["measured"])]
    print(f"\nterms outside 2x (beyond the {NOISE_FLOOR_S:g} s noise floor): {', '.join(outside) or 'none'}", file=out)
    return rows


def summary(rows: list[dict], out=sys.stdout) -> None:
    """One line per results root and term: the plan against the measurement (CPU seconds of
    one core for compile, train and report; for wall, the measured CPU seconds scheduled on
    the workers and, in brackets, the measured wall time, which a shared machine inflates)."""
    print(f"\n{'results':<28} {'term':<8} {'plan':>7} {'measured':>9} {'ratio':>6}", file=out)
    for r in rows:
        if r["experiment"] != "all":
            continue
        meas = r.get("idle", r["measured"])
        extra = f"  (wall {_dur(r['measured'])}, ratio {_ratio(r['estimate'], r['measured']).strip()})" if "idle" in r \
            else ""
        print(f"{Path(r['root']).name:<28} {r['term']:<8} {_dur(r['estimate']):>7} {_dur(meas):>9} "
              f"{_ratio(r['estimate'], meas):>6}{extra}", file=out)


# ------------------------------------------------------------------ --calibrate
def _fit(a, b, prior, names, w=None):
    """Non-negative x minimizing sum(w ((a x - b) / b)^2) + PRIOR_WEIGHT^2 * sum((x - prior) / prior)^2,
    then scaled so that the weighted geometric mean of estimate / measured is 1."""
    import numpy as np
    from scipy.optimize import nnls

    a, b, prior = np.asarray(a, float), np.asarray(b, float), np.asarray(prior, float)
    w = np.sqrt(np.ones(len(b)) if w is None else np.asarray(w, float))
    keep = b > 0
    a, b = a[keep] * (w[keep] / b[keep])[:, None], w[keep]
    scale = np.where(prior > 0, prior, 1.0)  # solve in units of the prior: comparable columns
    a = a * scale
    a = np.vstack([a, PRIOR_WEIGHT * np.eye(len(prior))])
    b = np.concatenate([b, PRIOR_WEIGHT * (prior > 0)])
    x, _ = nnls(a, b)
    # The relative error penalizes estimating high more than low: centre the log ratios
    # (one factor for the term, so estimate / measured is 1 in the geometric mean).
    n = int(keep.sum())
    ratio = (a[:n] @ x) / b[:n]
    if n and (ratio > 0).all():
        x = x * np.exp(-np.sum(w[keep] ** 2 * np.log(ratio)) / np.sum(w[keep] ** 2))
    return dict(zip(names, x * scale))


def _families(rows: list[dict]) -> list[tuple[dict, int, int, float]]:
    """Per program family compiled in these runs (`task_rows`): (the features of its first
    task, its programs, its tasks, the CPU seconds of all its compiles and loads). A family
    whose every task loaded from a warm cache (another study's) is left out."""
    fams: dict[str, list[dict]] = {}
    for r in rows:
        fams.setdefault(r["family"], []).append(r)
    out = []
    for rs in fams.values():
        if all(r["cache_hits"] for r in rs) or not rs[0]["features"]:
            continue
        first = min(rs, key=lambda r: r["features"].get("penalties", 0))["features"]
        out.append((first, len({r["program"] for r in rs}), len(rs), sum(r["seconds"] for r in rs)))
    return out


def samples(paths, data_dir=None) -> dict:
    """What the folders' meta.json recorded, as the fit reads it: program families' compiles
    (`_families`), cache loads, tasks' training (features, units, CPU seconds), pages
    (features, CPU seconds); and the machine and versions they were measured with."""
    out = {"families": [], "loads": [], "tasks": [], "pages": [], "sources": [], "machine": {}, "versions": {},
           "weights": {"families": [], "tasks": [], "pages": []}}
    for root, folders in experiment_folders(paths).items():
        counts = {k: len(out[k]) for k in out["weights"]}
        ms = [measured(f) for f in folders]
        plan = replan(folders, ms[0]["workers"], data_dir)
        out["sources"].append(str(root))
        rows = task_rows(plan, folders, ms)
        out["families"] += _families(rows)
        out["loads"] += [r["seconds"] for r in rows if not r["features"].get("first", True)]
        for r, m in zip(plan.rows, ms):
            out["machine"], out["versions"] = m["machine"], m["versions"]
            for key, t in m["tasks"].items():
                f = t["features"] or plan.task_features.get(key)
                if f:
                    out["tasks"].append(({"penalties": 0, **f}, t["units"], t["train"]))
            pf = plan.report_features.get(r.experiment)
            if m["report"] and pf:
                out["pages"].append(({**pf, "name": f"{root.name}/{r.experiment}", "figures_s": m["report_figures"],
                                      "figure_seconds": m["report_figure_seconds"]}, m["report"]))
        for k, n in counts.items():  # each results root weighs the same: a small run counts as much as a study
            out["weights"][k] += [1 / (len(out[k]) - n)] * (len(out[k]) - n)
    return out


def _fit_compile(data: dict, c) -> dict:
    """Compile constants from the families' totals: the first program, the variants, the loads."""
    import numpy as np

    from vglab.experiments import runner

    load = float(np.mean(data["loads"])) if data["loads"] else c.load_s
    a = [[1.0, f["dense_layers"] - f.get("scanned_layers", 0), f["conv_layers"], f["conv_macs"], f.get("penalties", 0),
          n_prog - 1, (n_prog - 1) * runner.compiled_layers(f), n_tasks - n_prog]
         for f, n_prog, n_tasks, _ in data["families"]]
    x = _fit(a, [sec for *_, sec in data["families"]],
             [c.compile_s, c.compile_s_per_layer["dense"], c.compile_s_per_layer["conv"], c.compile_s_per_conv_mac,
              max(c.compile_s_per_penalty, 0.1), max(c.variant_s or 0.0, 1.0), max(c.variant_s_per_layer, 0.1),
              max(load, 0.1)],
             ["c0", "cd", "cc", "cm", "cp", "v0", "vl", "ld"], data.get("weights", {}).get("families"))
    return {"compile_s": x["c0"], "compile_s_per_layer": {"dense": x["cd"], "conv": x["cc"]},
            "compile_s_per_conv_mac": x["cm"], "compile_s_per_penalty": x["cp"], "variant_s": x["v0"],
            "variant_s_per_layer": x["vl"], "load_s": x["ld"]}


def _fit_pages(data: dict, c) -> dict:
    """Report constants from the pages' CPU seconds (`runner.report_seconds`' terms). A page
    that records its figures' CPU seconds ("figures_s", meta.json's report "figures") is
    split: the figures against the figure terms, the rest (loading, the Diagnosis, the
    claims, the HTML) against the runs and flagged cells; fitted together the two confound (the
    deep nets have both many layers to draw and many flagged cells)."""
    from vglab.experiments import runner

    per_config = _fit_figure_configs(data, c)
    rest, figs = [], []
    for f, _ in data["pages"]:
        std, panels = not f.get("own_page"), min(f["configs"], runner.REPORT_PANELS)
        rest.append([1.0, f["runs"], f.get("flagged", 0)])
        figs.append([std * panels * f["layers"], std * panels, std * f["configs"] * (f["layers"] >= 3),
                     float(bool(f.get("own_page")))])
    prior = ([c.report_s, max(c.report_s_per_run, 1e-3), max(c.report_s_per_flagged_cell, 1e-3)],
             [max(c.report_s_per_panel, 1e-2), max(c.report_s_per_config_panel, 0.1), max(c.report_s_per_config, 0.05),
              max(c.report_s_own_page, 1.0)])
    names = (["p0", "pr", "pf"], ["pp", "pc", "pk", "po"])
    w, seconds = data.get("weights", {}).get("pages"), [sec for _, sec in data["pages"]]
    # the figures priced per configuration are taken out of the pages' figure seconds first
    drawn = [None if f.get("figures_s") is None else
             f["figures_s"] - sum(f.get("figure_seconds", {}).get(n, 0.0) for n in per_config)
             for f, _ in data["pages"]]
    if data["pages"] and all(d is not None for d in drawn):
        x = {**_fit(rest, [s - d for s, d in zip(seconds, drawn)], prior[0], names[0], w),
             **_fit(figs, drawn, prior[1], names[1], w)}
    else:
        x = _fit([a + b for a, b in zip(rest, figs)], seconds, prior[0] + prior[1], names[0] + names[1], w)
    return {"report_s": x["p0"], "report_s_per_run": x["pr"], "report_s_per_flagged_cell": x["pf"], "report_s_per_panel": x["pp"], "report_s_per_config_panel": x["pc"],
            "report_s_per_config": x["pk"], "report_s_own_page": x["po"], "report_s_per_figure_config": per_config}


def _fit_figure_configs(data: dict, c) -> dict:
    """The own-page figures priced per configuration (those named in the prior,
    `report_s_per_figure_config`): their recorded CPU seconds over the configurations of the
    pages that drew them (the prior where no page recorded one)."""
    out = {}
    for name, prior in c.report_s_per_figure_config.items():
        drew = [(f["figure_seconds"][name], f["configs"]) for f, _ in data["pages"] if name in f.get("figure_seconds", {})]
        out[name] = sum(s for s, _ in drew) / sum(n for _, n in drew) if drew else prior
    return out


def _fit_train(data: dict, c) -> dict:
    """Training constants from the tasks' CPU seconds (`runner.estimate`'s unit term)."""
    from vglab.experiments import runner

    a = []
    for f, u, _ in data["tasks"]:
        fwd = 3 * f["steps"] * f["members"] * f["batch_size"] + f["records"] * f["members"] * (
            f["n_test"] + runner.PROBE_BATCH)
        a.append([u * f["steps"], u * f["steps"] * f["dense_layers"], u * f["steps"] * f["conv_layers"],
                  u * fwd * f["dense_macs"], u * fwd * f["conv_macs"], u * f["records"],
                  u * f["records"] * f["dense_layers"], u * f["records"] * f["conv_layers"]])
    # A scanned group's extra step time is the engine's own estimate (`scan_step_s`), not fitted.
    train = _fit(a, [s - u * f["steps"] * f.get("scan_step_s", 0.0) for f, u, s in data["tasks"]],
                 [c.step_overhead_s, c.layer_step_s["dense"], c.layer_step_s["conv"], 1 / c.macs_per_s["dense"],
                  1 / c.macs_per_s["conv"], c.record_s, c.layer_record_s["dense"], c.layer_record_s["conv"]],
                 ["so", "sd", "sc", "md", "mc", "r0", "rd", "rc"], data.get("weights", {}).get("tasks"))
    return {"step_overhead_s": train["so"], "layer_step_s": {"dense": train["sd"], "conv": train["sc"]},
            "macs_per_s": {"dense": 1 / max(train["md"], 1e-15), "conv": 1 / max(train["mc"], 1e-15)},
            "record_s": train["r0"], "layer_record_s": {"dense": train["rd"], "conv": train["rc"]}}


TERMS = ("compile", "train", "report")


def fit(data: dict, prior, terms=TERMS) -> dict:
    """The CostModel constants of `terms` that best reproduce `data` (`samples`), starting
    from `prior` (a CostModel): each term is linear in its constants, fitted apart (`_fit`)."""
    parts = {"compile": _fit_compile, "train": _fit_train, "report": _fit_pages}
    constants = {k: v for t in terms for k, v in parts[t](data, prior).items()}
    return json.loads(json.dumps(constants, default=float), parse_float=lambda x: float(f"{float(x):.3g}"))


def residuals(data: dict, costs, out=sys.stdout) -> None:
    """Estimate / measured of each sample the fit saw, with `costs` (a CostModel): per term
    the spread, and each report page (the term with the fewest samples)."""
    import numpy as np

    from vglab.experiments import runner

    fams = [(runner.estimate(f, costs)[0] + (n_prog - 1) * runner.variant_seconds(f, costs)
             + (n_tasks - n_prog) * costs.load_s, s) for f, n_prog, n_tasks, s in data["families"]]
    tasks = [(runner.estimate(f, costs)[1] * u, s) for f, u, s in data["tasks"]]
    pages = [(runner.report_seconds(f, costs), s) for f, s in data["pages"]]
    print("fit residuals (estimate / measured CPU seconds, in-sample):", file=out)
    for name, pairs in (("compile (families)", fams), ("train (tasks)", tasks), ("report (pages)", pages)):
        r = np.array([e / m for e, m in pairs if m > 0])
        if len(r):
            print(f"  {name:<20} n={len(r):<3} geometric mean {np.exp(np.log(r).mean()):.2f}, "
                  f"min {r.min():.2f}, max {r.max():.2f}, outside 2x: {int(((r < 0.5) | (r > 2)).sum())}", file=out)
    for (f, s), (e, _) in zip(data["pages"], pages):
        print(f"    {f.get('name', '?'):<34} runs {f['runs']:>4} flagged {f.get('flagged', 0):>6} layers {f['layers']:>3} "
              f"configs {f['configs']:>4}{' own page' if f.get('own_page') else '':<9} {e:6.1f} s / {s:6.1f} s = "
              f"{e / s:.2f}", file=out)


def calibrate(paths, data_dir=None, write: bool = False, out=sys.stdout, costs_file: Path | None = None,
              terms=TERMS) -> dict:
    """Fit the CPU constants of `terms` from the folders' meta.json (see the module
    docstring), the others kept; print the fit's residuals; with `write`, into costs.json's
    "cpu" (or `costs_file`)."""
    from dataclasses import replace

    from vglab.experiments import runner

    path = costs_file or runner.COSTS_FILE
    full = json.loads(path.read_text())
    data = samples(paths, data_dir)
    machine, versions = data["machine"], data["versions"]
    entry = {"calibrated": f"one CPU core ({_cpu_name()}, {machine.get('cpu_count', '?')} cores), "
                           f"jax {versions.get('jax', '?')}, {datetime.now(timezone.utc):%Y-%m-%d}",
             "notes": (f"Fitted by benchmarks/cost_model.py --calibrate from {', '.join(data['sources'])}: "
                       f"{len(data['families'])} program families' compiles, {len(data['loads'])} cache loads, "
                       f"{len(data['tasks'])} "
                       f"tasks' training, {len(data['pages'])} report pages, in CPU seconds (process time), so that "
                       "a shared machine's inflated wall time does not enter. Another machine: CPU seconds scale "
                       "with its single-core speed; compare a run made there (--compare) and re-fit (--calibrate)."
                       + ("" if tuple(terms) == TERMS else f" This fit: {', '.join(terms)}; the other terms' constants "
                          "kept from the fit before.")),
             "constants": {**full["cpu"]["constants"], **fit(data, runner.CPU_COSTS, terms)}}
    print(json.dumps(entry, indent=2), file=out)
    residuals(data, replace(runner.CPU_COSTS, **entry["constants"]), out)
    if write:
        full["cpu"] = entry
        path.write_text(json.dumps(full, indent=2) + "\n")
        print(f"written: {path}", file=out)
    return entry


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU"


# ------------------------------------------------------------------ --programs
def measure(preset: str, dataset: str, epochs: int, train_size: int | None = None, gpu: bool = False) -> dict:
    """In this process: the first group of `preset`, one unit as the runner trains it (on the
    CPU: at most MLP_SLOTS runs, a CNN run alone; on a GPU: the group's runs of one seed)."""
    from vglab.experiments import runner
    from vglab.experiments.spec import load_spec
    from vglab.train import train_group

    spec = load_spec(preset, dataset=dataset, epochs=epochs, seeds=[0], train_size=train_size,
                     sets=[f"record_every={epochs}"])
    run = spec.expand()[0]
    key = runner._data_key(run, None)
    arrays = runner._arrays(key)
    model = run.model_spec().build(arrays.x_train.shape[1:], arrays.n_classes)
    group = [r.member() for r in spec.expand() if r.group == run.group]
    members = group if gpu else group[:runner.MLP_SLOTS] if key.kind == "mlp" else group[:1]
    slots = runner.grid_slots(key.kind, len(members), model)
    clock = time.perf_counter if gpu else time.process_time
    costs = runner.cost_model(gpu)

    def call():
        marks = []
        t0 = clock()
        train_group(model, arrays, members, run.train_config(), min_slots=slots,
                    on_epoch=lambda e, m: marks.append(clock()))
        return t0, marks, clock()

    t0, _, t1 = call()
    cold = t1 - t0
    t0, marks, _ = call()
    record = marks[0] - t0
    epoch = (marks[1] - marks[0] - record) / epochs
    f = runner.task_features(model, spec, arrays.x_train.shape[0], arrays.x_test.shape[0], slots)
    compile_s, _ = runner.estimate(f, costs)
    return {"program": f"{preset}:{dataset}", "steps": f["steps"] // epochs, "slots": slots, "cold_s": cold,
            "epoch_s": epoch, "record_s": record, "est_compile_s": compile_s,
            "est_epoch_s": f["steps"] // epochs * runner._step_seconds(f, costs),
            "est_record_s": runner._record_seconds(f, costs)}


def programs(argv: list[str], gpu: bool) -> None:
    print(f"{'program':34} {'steps':>6} {'compile s':>10} {'(est)':>7} {'epoch s':>9} {'(est)':>9} {'ratio':>6} "
          f"{'record s':>9} {'(est)':>7}")
    for item in argv or DEFAULT:
        preset, dataset, *size = item.split(":")
        epochs = 2 if dataset != "digits" else (3 if "cnn" in preset else 20)
        env = {**os.environ, "VGLAB_JAX_CACHE": tempfile.mkdtemp(prefix="vglab-cost-")}
        cmd = [sys.executable, __file__, "--device", "gpu" if gpu else "cpu", "--one", preset, dataset, str(epochs),
               size[0] if size else "0"]
        if not gpu:  # one pinned, single-threaded core: a worker of `vglab run`
            env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            if hasattr(os, "sched_getaffinity"):
                cmd = ["taskset", "-c", str(min(os.sched_getaffinity(0))), *cmd]
        line = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout.strip().splitlines()[-1]
        m = json.loads(line)
        print(f"{m['program']:34} {m['steps']:>6} {m['cold_s']:>10.1f} {m['est_compile_s']:>7.1f} "
              f"{m['epoch_s']:>9.4f} {m['est_epoch_s']:>9.4f} {m['est_epoch_s'] / m['epoch_s']:>6.2f} "
              f"{m['record_s']:>9.3f} {m['est_record_s']:>7.3f}", flush=True)


def main(argv: list[str]) -> None:
    gpu = argv[:2] == ["--device", "gpu"]
    if argv[:2] in (["--device", "gpu"], ["--device", "cpu"]):
        argv = argv[2:]
    data_dir = None
    if "--data-dir" in argv:
        i = argv.index("--data-dir")
        data_dir, argv = argv[i + 1], argv[:i] + argv[i + 2:]
    if "--costs" in argv:  # another calibration (e.g. the one before a re-fit): the plan with its constants
        from vglab.experiments import runner

        i = argv.index("--costs")
        runner.CPU_COSTS, argv = runner.load_costs("cpu", Path(argv[i + 1])), argv[:i] + argv[i + 2:]
    if argv and argv[0] == "--one":
        preset, dataset, epochs, size = argv[1], argv[2], int(argv[3]), int(argv[4]) or None
        print(json.dumps(measure(preset, dataset, epochs, size, gpu)))
    elif argv and argv[0] == "--compare":
        compare(argv[1:], data_dir)
    elif argv and argv[0] == "--calibrate":
        terms = TERMS
        if "--terms" in argv:  # e.g. --terms report: refit those, keep the others' constants
            i = argv.index("--terms")
            terms, argv = tuple(argv[i + 1].split(",")), argv[:i] + argv[i + 2:]
            if not set(terms) <= set(TERMS):
                raise SystemExit(f"error: --terms {','.join(terms)}: choose from {','.join(TERMS)} (comma-separated)")
        write = "--write" in argv
        calibrate([a for a in argv[1:] if a != "--write"], data_dir, write, terms=terms)
    else:
        programs(argv[1:] if argv and argv[0] == "--programs" else argv, gpu)


if __name__ == "__main__":
    main(sys.argv[1:])
