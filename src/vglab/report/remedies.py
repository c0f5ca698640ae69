"""Remedies with evidence: what moved which finding, measured on the same model and data.

A remedy is listed beside a finding only with a measurement behind it: an `Effect`, the
paired difference over seeds (`vglab.report.stats.difference`) between a remedy arm and its
baseline arm of a *remedy sweep*, in the metric of that finding, with the seeds in which the
finding was found in each arm. A remedy sweep is any experiment whose configurations form a
star: one baseline, and every other configuration differs from it in exactly one remedy
setting (`SETTINGS`). `sweep_spec` writes one for a configuration of a results folder
(`vglab doctor PATH --try`: L2 at r ∈ {1e-3, 1e-2, 1e-1}, α = 2, a smaller init, Glorot, orthogonal
at the critical σ_w², He for ReLU, another optimizer).

Where the evidence comes from (`evidence_for`, in this order): the sweep beside the folder
(`PATH-remedies`, what `--try --run` writes: the user's own model and data), then the effects
shipped in `remedy_evidence.json` beside this module, measured by
`python benchmarks/doctor_cases.py --evidence` on the planted cases (the file says which case,
dataset, epochs, seeds and commit each number came from).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from vglab.report import doctor, stats, tables

EVIDENCE_FILE = Path(__file__).with_name("remedy_evidence.json")
SWEEP_SUFFIX = "-remedies"
R_VALUES = (1e-3, 1e-2, 1e-1)

# The remedy settings: runs-table columns that a remedy changes (one per arm of a sweep).
SETTINGS = {"penalty": ("penalty", "r"), "alpha": ("alpha",), "init": ("weight_init_spec", "bias_init"),
            "optimizer": ("optimizer", "learning_rate")}

# Per finding: the metric that measures it on one run (at its last recorded epoch), which
# direction is better, and the least change that counts as a reduction (with the whole interval
# on the better side): a third of the distance between the doctor's threshold and a healthy value.
METRICS = {"vanishing": ("level_min", +1, "lowest hidden layer's gradient level (log10, relative to the output layer)"),
           "exploding": ("level_max", -1, "highest hidden layer's gradient level (log10, relative to the output layer)"),
           "saturated": ("saturated_max", -1, "largest saturated fraction of a hidden layer"),
           "dead": ("zero_frac_max", -1, "largest zero-gradient fraction of a ReLU layer"),
           "frozen": ("frozen_layers", -1, "layers frozen in the last epoch")}
# The engine's gradient probes see the gradient of the total loss, data + penalty: an L1/L2 arm's
# gradient levels, zero fractions and updates include r·θ (weight decay moves a layer that learns
# nothing: L2 r=0.001 "unfroze" the 20x8 tanh net's layers at chance accuracy). Only the findings read
# from the activations are compared for a penalty arm.
PENALTY_BLIND = ("saturated",)
NOT_COMPARABLE = "not comparable (its gradient and updates include the penalty's r·θ)"
# An arm whose runs diverged has nothing left to read after the divergence, so its finding is not
# "gone": SGD with momentum at lr 0.01 on the 20x64 ReLU net at σ_w² = 4 diverged in every seed (NaN).
DIVERGED = "made training diverge"
VERDICTS = ("removed it", "reduced it", "did not move it", DIVERGED, NOT_COMPARABLE)
MEANINGFUL = {"vanishing": 1.0, "exploding": 0.5, "saturated": 0.15, "dead": 0.03, "frozen": 1.0}


@dataclass
class Effect:
    """A remedy arm against its baseline: the change of one finding's metric, paired over seeds."""

    finding: str
    cause: str | None  # the finding's cause in the baseline
    remedy: str  # e.g. "L2 r=0.01", "α=2", "init Glorot uniform"
    change: dict  # the spec keys that make the remedy arm from the baseline
    baseline: str  # the baseline configuration (label)
    source: str  # the sweep's folder or the planted case
    dataset: str
    epochs: int
    metric: str
    baseline_mean: float
    remedy_mean: float
    diff: float
    low: float
    high: float
    seeds: int
    found_baseline: str  # "3/3": seeds in which the finding was found
    found_remedy: str
    acc_diff: float = math.nan  # final validation accuracy, remedy − baseline
    acc_low: float = math.nan
    acc_high: float = math.nan
    moved: bool = False  # removed (gone in every seed) or reduced (see `verdict`)
    verdict: str = "did not move it"  # one of VERDICTS
    activation: str | None = None  # the baseline's model, to choose the closest measurement (`attach`)
    network: str | None = None  # "mlp", "cnn", "model" (own model), "watched" (own loop)
    depth: int | None = None

    def text(self) -> str:
        _, _, what = METRICS[self.finding]
        f = lambda v: f"{v:+.2f}" if np.isfinite(v) else "–"  # noqa: E731
        ci = f" (95 % interval {f(self.low)} to {f(self.high)})" if np.isfinite(self.low) else " (no interval)"
        acc = (f"; final val acc {f(self.acc_diff)}" + (f" ({f(self.acc_low)} to {f(self.acc_high)})"
                                                         if np.isfinite(self.acc_low) else "")
               if np.isfinite(self.acc_diff) else "")
        return (f"{self.remedy} {self.verdict} ({self.finding}): {what} "
                f"{self.baseline_mean:.3g} → {self.remedy_mean:.3g}, {f(self.diff)}{ci}; found in "
                f"{self.found_baseline} → {self.found_remedy} seeds{acc} [{self.baseline} on {self.dataset}, "
                f"{self.epochs} epochs, {self.seeds} paired seeds; {self.source}]")

    def to_json(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------- the sweep spec
def _base_run(path: Path, label: str | None):
    import tomllib

    from vglab.experiments.spec import load_spec

    stored = tomllib.loads((path / "experiment.toml").read_text())
    for k in ("source", "n_runs", "n_groups", "fingerprint"):  # what the store adds to the resolved spec
        stored.pop(k, None)
    spec = load_spec(stored)
    runs = spec.expand()
    labels = list(dict.fromkeys(r.label for r in runs))
    if label is None:
        label = labels[0]
    match = [r for r in runs if r.label == label]
    if not match:
        raise ValueError(f"no configuration {label!r} in {path}; choose one of: {'; '.join(labels)}")
    return spec, match[0]


def _opt_table(run) -> dict:
    return {k: v for k, v in dict(run.optimizer).items()}


def _orthogonal(run, activation: str | None) -> str | None:
    """The orthogonal init at the critical σ_w² (χ₁ = 1, mean field, zero biases as the arm draws them)
    for sigmoid-type activations, He's σ_w² = 2 for ReLU; None where neither applies."""
    from vglab.report import theory

    if activation == "relu":
        return "orthogonal(sigma_w2=2)"
    try:
        sw2 = theory.critical_sigma_w2(str(activation), float(run.alpha), 0.0)
    except (ValueError, KeyError, TypeError):
        return None
    return f"orthogonal(sigma_w2={sw2:.3g})"


def remedy_arms(run, activation: str | None = None) -> list[tuple[str, dict]]:
    """(remedy name, the arm's changed keys) for each remedy of a sweep around `run`, whose activation is
    `activation` (as training stored it: an own model's is known only from its runs; default the spec's).
    A model's own init gets no "smaller init" arm (its law is unknown); the inits are Glorot, orthogonal
    at the critical σ_w² (`_orthogonal`) and He for ReLU."""
    activation = activation or run.activation
    arms = [(f"L2 r={r:g}", {"penalty": "l2", "r": r}) for r in R_VALUES if not (run.penalty == "l2" and run.r == r)]
    if activation != "relu":
        arms.append(("α=2" if run.alpha == 1 else "α=1", {"alpha": 2.0 if run.alpha == 1 else 1.0}))
    from vglab.nn.init import parse

    law = parse(run.weight_init)
    inits = []
    if law.kind in ("normal", "uniform"):
        inits.append(("init ×1/10", law.spec.replace(f"={law.value:g}", f"={law.value / 10:g}")))
    if law.kind != "glorot_uniform":
        inits.append(("init Glorot uniform", "glorot_uniform"))
    ortho = _orthogonal(run, activation)
    if ortho and law.kind not in ("orthogonal", "scaled_orthogonal"):
        inits.append((f"init {ortho}", ortho))
    if activation == "relu" and law.kind != "he_normal":
        inits.append(("init He normal", "he_normal"))
    for name, init in inits:
        try:
            parse(init)
        except ValueError:
            continue
        arms.append((name, {"init": init, "bias_init": None}))
    opt = _opt_table(run)
    if opt.get("name") == "adam":
        arms.append(("SGD momentum 0.9, lr 0.01", {"optimizer": {"name": "sgd", "momentum": 0.9},
                                                   "learning_rate": 0.01}))
    else:
        arms.append(("Adam, lr 0.001", {"optimizer": {"name": "adam"}, "learning_rate": 1e-3}))
    return arms


def sweep_spec(path, label: str | None = None, seeds: int = 3, epochs: int | None = None) -> dict:
    """A remedy sweep (a spec dict) around the configuration `label` of the results folder
    `path` (default: its first), on the same model, data and training settings: the baseline
    arm first, then one arm per remedy (`remedy_arms`)."""
    path = Path(path)
    spec, run = _base_run(path, label)
    base = {"network": run.network, "activation": run.activation, "init": run.weight_init,
            "bias_init": run.bias_init, "penalty": run.penalty, "r": run.r, "alpha": run.alpha,
            "learning_rate": run.learning_rate, "optimizer": _opt_table(run)}
    if run.network in ("mlp", "cnn"):
        base.update(depth=run.depth, width=run.width)
    if run.variant:
        base["variant"] = run.variant
    if run.model:
        model = run.model
        file, _, fn = model.rpartition(":")
        if file.endswith(".py") and not Path(file).is_absolute() and run.base_dir:
            model = f"{(Path(run.base_dir) / file).resolve()}:{fn}"
        base.update(model=model, model_args=dict(run.model_args), input=run.input)
    if base["penalty"] == "none":
        base.pop("r")
    arms = [{k: v for k, v in base.items() if v is not None}]  # None: the spec's default (TOML has no null)
    from vglab.results.store import load

    stored = tables.runs(load(path))
    act = stored.loc[stored["label"] == run.label, "activation"]
    for _, change in remedy_arms(run, act.iloc[0] if len(act) and isinstance(act.iloc[0], str) else None):
        arm = {k: v for k, v in {**base, **change}.items() if v is not None}
        if arm.get("penalty") == "none":
            arm.pop("r", None)
        arms.append(arm)
    out = {"name": path.name + SWEEP_SUFFIX,
           "description": f"vglab doctor --try: remedies for {run.label} of {path.name}",
           "dataset": spec.dataset, "epochs": epochs or spec.epochs, "seeds": seeds, "batch_size": spec.batch_size,
           "probes": list(spec.probes), "record_every": spec.record_every, "probe_every": spec.probe_every,
           "schedule": dict(spec.schedule), "arms": arms}
    if spec.train_size:
        out["train_size"] = spec.train_size
    if spec.pca is not None:
        out["pca"] = spec.pca
    return out


def sweep_dir(path) -> Path:
    """Where `--try --run` trains the sweep of the folder `path`: PATH-remedies beside it."""
    return Path(path).parent / (Path(path).name + SWEEP_SUFFIX)


def suggested_changes(diagnosis, label: str) -> list[str]:
    """For a run vglab did not train (vglab.watch): the remedies measured to move its findings, as
    changes to make in one's own training step. Untested on this model (vglab does not own the loop):
    each line names the closest case it was measured on, with its effect and interval over seeds."""
    fs = [f for f in diagnosis.findings if f.label == label and f.finding]
    out, seen = [], set()
    for f in fs:
        for r in f.remedies:
            if r["moved"] and (f.finding, r["remedy"]) not in seen:
                seen.add((f.finding, r["remedy"]))
                out.append(f"{f.finding} ({f.cause}): {r['text']} ({r['where']})")
    return out or ["no remedy was measured to move these findings: see `vglab doctor` above for what was measured"]


def write_sweep(path, label: str | None = None, seeds: int = 3, epochs: int | None = None) -> Path:
    """Write `sweep_spec` as PATH-remedies.toml beside the folder; returns the file."""
    import tomli_w

    from vglab.results.store import atomic_write_text

    spec = sweep_spec(path, label, seeds, epochs)
    out = Path(path).parent / (Path(path).name + SWEEP_SUFFIX + ".toml")
    atomic_write_text(out, "# the remedy sweep of `vglab doctor --try`; run it with `vglab run` (README: "
                           "'Diagnose a run')\n" + tomli_w.dumps(spec))
    return out


# --------------------------------------------------------------------- effects of a sweep
def _setting(row: pd.Series, cols: tuple[str, ...]) -> tuple:
    out = []
    for c in cols:
        v = row.get(c)
        if isinstance(v, float) and math.isnan(v):
            v = None
        out.append(round(v, 12) if isinstance(v, float) else v)
    return tuple(out)


def star(runs: pd.DataFrame) -> tuple[str, dict[str, str]] | None:
    """(baseline label, {remedy label: the setting it changes}) when the configurations form a
    star around one baseline (each other configuration differs from it in exactly one remedy
    setting and in nothing else), else None."""
    r = runs.copy()
    r.loc[r["penalty"] == "none", "r"] = 0.0
    conf = r.drop_duplicates("label").set_index("label")
    if len(conf) < 2:
        return None
    keys = {lab: {s: _setting(row, cols) for s, cols in SETTINGS.items()} for lab, row in conf.iterrows()}
    fixed = [c for c in ("network", "depth", "width", "variant", "activation", "model", "model_args")
             if c in conf]
    for base, kb in keys.items():
        diffs = {}
        for lab, k in keys.items():
            if lab == base:
                continue
            changed = [s for s in SETTINGS if k[s] != kb[s]]
            same = all(_setting(conf.loc[lab], (c,)) == _setting(conf.loc[base], (c,)) for c in fixed)
            if len(changed) != 1 or not same:
                break
            diffs[lab] = changed[0]
        else:
            return base, diffs
    return None


def _remedy_name(row: pd.Series, setting: str) -> str:
    if setting == "penalty":
        return "no penalty" if row["penalty"] == "none" else f"{str(row['penalty']).upper()} r={row['r']:g}"
    if setting == "alpha":
        return f"α={row['alpha']:g}"
    if setting == "init":
        return f"init {row.get('weight_init') or row.get('weight_init_spec')}"
    return f"{row.get('optimizer')}, lr {row.get('learning_rate'):g}"


@dataclass
class ArmRuns:
    """One arm of a comparison: its runs by seed, the doctor's diagnosis of them, their final accuracy."""

    runs: dict  # seed -> run_id
    diagnosis: object  # a doctor.Diagnosis covering these runs
    acc: dict = field(default_factory=dict)  # seed -> final validation accuracy (may be empty: a watched run)


def _difference(a: dict, b: dict):
    """`stats.difference`, or None where an arm has no finite value (e.g. no accuracy recorded)."""
    try:
        return stats.difference(a, b)
    except ValueError:
        return None


def _diverged(a: ArmRuns) -> bool:
    return any(c.diverged_epoch is not None for c in a.diagnosis.runs if c.run_id in a.runs.values())


def _mean(v: dict) -> float:
    x = [y for y in v.values() if np.isfinite(y)]
    return float(np.mean(x)) if x else math.nan


def compare(kind: str, base: ArmRuns, arm: ArmRuns, remedy: str, change: dict, about: dict,
            penalty: bool = False) -> Effect:
    """The effect of one remedy arm on the finding `kind` of the baseline, paired over seeds: the
    finding's metric (`METRICS`) at each run's last record, the seeds with the finding in each arm,
    the final accuracy, and the verdict. `about`: the Effect's baseline, source, dataset, epochs,
    activation, network, depth."""
    metric, better, _ = METRICS[kind]

    def side(a: ArmRuns):
        last = {c.run_id: c.last for c in a.diagnosis.runs}
        hits = {}
        for f in a.diagnosis.findings:
            if f.finding == kind and f.run_id in a.runs.values():
                hits.setdefault(f.run_id, f)
        return {s: last.get(rid, {}).get(metric, np.nan) for s, rid in a.runs.items()}, hits

    (vb, hb), (va, ha) = side(base), side(arm)
    diff = _difference(va, vb)
    acc = _difference(arm.acc, base.acc) if arm.acc and base.acc else None
    causes = [f.cause for f in hb.values()]
    gone = len(hb) > 0 and len(ha) == 0
    reduced = (diff is not None and diff.has_interval and min(better * diff.low, better * diff.high) > 0
               and better * diff.diff >= MEANINGFUL[kind])
    verdict = "removed it" if gone else ("reduced it" if reduced else "did not move it")
    if _diverged(arm) and not _diverged(base):
        verdict = DIVERGED
    elif penalty and kind not in PENALTY_BLIND:
        verdict = NOT_COMPARABLE
    nan = math.nan
    return Effect(kind, max(set(causes), key=causes.count) if causes else None, remedy, _jsonable(change),
                  about["baseline"], about["source"], about["dataset"], about["epochs"], metric,
                  _mean(vb), _mean(va),
                  diff.diff if diff else nan, diff.low if diff else nan, diff.high if diff else nan,
                  diff.n if diff else 0, f"{len(hb)}/{len(base.runs)}", f"{len(ha)}/{len(arm.runs)}",
                  acc.diff if acc else nan, acc.low if acc else nan, acc.high if acc else nan,
                  verdict in ("removed it", "reduced it"), verdict, about.get("activation"), about.get("network"),
                  about.get("depth"))


def _about(row: pd.Series, base: str, source: str, res) -> dict:
    ds = row.get("dataset")
    if ds is None or (isinstance(ds, float) and math.isnan(ds)):
        ds = res.info.dataset or None
    ep, depth = row.get("epochs"), row.get("depth")
    return {"baseline": base, "source": source, "dataset": str(ds),
            "epochs": int(ep) if ep is not None and pd.notna(ep) else 0,
            "activation": None if pd.isna(row.get("activation")) else str(row.get("activation")),
            "network": None if pd.isna(row.get("network")) else str(row.get("network")),
            "depth": int(depth) if depth is not None and pd.notna(depth) else None}


def effects(res, diagnosis=None, source: str | None = None) -> list[Effect]:
    """The effect of every remedy arm of a sweep (`star`) on every finding of its baseline,
    paired over seeds; [] when `res` is not a sweep or its baseline has no finding."""
    r = tables.runs(res)
    s = star(r)
    if s is None:
        return []
    base, remedies = s
    d = diagnosis or doctor.diagnose(res)
    fin = tables.final(res).set_index("run_id")
    conf = r.drop_duplicates("label").set_index("label")

    def arm_runs(label: str) -> ArmRuns:
        sel = r[r["label"] == label]
        return ArmRuns({int(x["seed"]): x["run_id"] for _, x in sel.iterrows()}, d,
                       {int(x["seed"]): fin.at[x["run_id"], "val_acc"] for _, x in sel.iterrows()})

    b = arm_runs(base)
    kinds = [k for k in doctor.FINDINGS if any(f.finding == k and f.run_id in b.runs.values() for f in d.findings)]
    about = _about(conf.loc[base], base, source or str(res.path), res)
    out = [compare(kind, b, arm_runs(lab), _remedy_name(conf.loc[lab], setting),
                   {k: conf.loc[lab].get(k) for k in SETTINGS[setting]}, about, penalty=setting == "penalty")
           for lab, setting in remedies.items() for kind in kinds]
    return sorted(out, key=lambda e: (e.finding, VERDICTS.index(e.verdict)))


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


# ------------------------------------------------------------------- the evidence
def load_evidence(path=EVIDENCE_FILE) -> list[Effect]:
    """The shipped effects (measured on the planted cases; see the module docstring)."""
    path = Path(path)
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    fields = Effect.__dataclass_fields__
    floats = {k for k, f in fields.items() if f.type == "float"}  # NaN is stored as null
    return [Effect(**{k: (math.nan if v is None and k in floats else v) for k, v in e.items() if k in fields})
            for e in data.get("effects", [])]


def save_evidence(effects_: list[Effect], path=EVIDENCE_FILE, made_by: str = "") -> Path:
    from vglab.results.store import atomic_write_text

    def clean(v):
        return None if isinstance(v, float) and not math.isfinite(v) else v

    doc = {"about": "Remedy effects measured by vglab on planted pathologies (vglab.report.remedies); regenerate "
                    "with the command in made_by.", "made_by": made_by,
           "effects": [{k: clean(v) for k, v in e.to_json().items()} for e in effects_]}
    atomic_write_text(Path(path), json.dumps(doc, indent=1, default=str) + "\n")
    return Path(path)


def evidence_for(path) -> list[Effect]:
    """The effects that back remedies for the folder `path`: its own sweep (PATH-remedies)
    when one was run, then the shipped ones."""
    out = []
    if path is not None:
        sweep = sweep_dir(path)
        if (sweep / "runs").is_dir():
            from vglab.results.store import load

            out += effects(load(sweep), source=str(sweep))
    return out + load_evidence()


def _closeness(e: Effect, f, model: dict, own: str | None) -> tuple:
    """How far the measurement `e` is from the finding `f` on a run of `model` (lower is closer):
    this folder's own sweep first, then the same cause, own loop / own model / built-in network,
    activation, depth."""
    depth = model.get("depth")
    return (e.source != own, not (e.cause == f.cause or f.cause is None), e.network != model.get("network"),
            e.activation != model.get("activation"),
            abs(e.depth - depth) if e.depth is not None and depth is not None else math.inf)


def _entry(e: Effect, f, own: str | None) -> dict:
    here = own is not None and e.source == own
    where = "measured on this model by its remedy sweep" if here else \
        "untested on this model; measured on the closest case" + ("" if e.cause == f.cause or f.cause is None
                                                                  else f" (a {f.finding} caused by {e.cause})")
    return {"remedy": e.remedy, "change": e.change, "moved": e.moved, "verdict": e.verdict, "text": e.text(),
            "tested_on_this_model": here, "where": where,
            "effect": {"metric": e.metric, "diff": e.diff, "low": e.low, "high": e.high, "acc_diff": e.acc_diff,
                       "acc_low": e.acc_low, "acc_high": e.acc_high, "seeds": e.seeds},
            "source": e.source, "dataset": e.dataset, "baseline": e.baseline}


def diagnose(res, evidence=None):
    """`doctor.diagnose(res)` with each finding's remedies attached (`attach`; `evidence`: a
    list of `Effect`s, default the folder's own sweep and the shipped ones)."""
    d = doctor.diagnose(res)
    attach(d, evidence)
    return d


def attach(diagnosis, evidence=None) -> None:
    """Give each finding the remedies measured on a finding of its kind, one measurement per remedy,
    the closest (`_closeness`): measurements of the same cause, or of another cause only when none of
    its cause exists (said in `where`); those that moved it first. Each says whether it was measured
    on this model (the folder's own sweep) or is untested on it."""
    ev = evidence_for(diagnosis.path) if evidence is None else evidence
    own = str(sweep_dir(diagnosis.path)) if diagnosis.path else None
    models = {c.run_id: c.model for c in diagnosis.runs}
    for f in diagnosis.findings:
        match = [e for e in ev if e.finding == f.finding]
        if any(e.cause == f.cause or f.cause is None for e in match):
            match = [e for e in match if e.cause == f.cause or f.cause is None]
        key = lambda e: _closeness(e, f, models.get(f.run_id, {}), own)  # noqa: E731
        best: dict[str, Effect] = {}
        for e in sorted(match, key=key):
            best.setdefault(e.remedy, e)
        f.remedies = [_entry(e, f, own) for e in sorted(best.values(), key=lambda e: (not e.moved, key(e)))]
