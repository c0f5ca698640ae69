"""Small views of a `Results` shared by the figures, the claims and the pages.

Runs are grouped by `label` (the configuration without the seed); arms are picked
by the `runs` columns (DESIGN.md), never by parsing labels.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd

N_CLASSES = {"digits": 10, "mnist": 10, "cifar10": 10}
ORDER_COLUMNS = ("network", "variant", "depth", "width", "activation", "weight_init_kind", "init_scale",
                 "penalty", "r", "alpha")


def _norm_spec(spec) -> str | None:
    if spec is None or (isinstance(spec, float) and math.isnan(spec)):
        return None
    try:
        from vglab.nn.init import parse

        return parse(str(spec)).spec
    except Exception:
        return str(spec)


def runs(res) -> pd.DataFrame:
    """The runs table with the columns the report relies on filled in (defaults when absent).
    The activation is what training stored: a folder with none (a watched model's) gets
    None, never the built-in default (a guess that made the doctor keep its own copy)."""
    r = res.runs.copy()
    defaults = {"label": None, "seed": 0, "network": "mlp", "depth": np.nan, "width": np.nan, "variant": None,
                "activation": None, "alpha": 1.0, "weight_init": None, "weight_init_spec": None,
                "weight_init_kind": None, "init_scale": np.nan, "penalty": "none", "r": 0.0, "dataset": None,
                "diverged_epoch": None}
    for col, val in defaults.items():
        if col not in r.columns:
            r[col] = val
    if len(r):
        r["label"] = r["label"].fillna(r["run_id"])
        r["alpha"] = pd.to_numeric(r["alpha"], errors="coerce").fillna(1.0)
        r["r"] = pd.to_numeric(r["r"], errors="coerce").fillna(0.0)
        r["penalty"] = r["penalty"].fillna("none").astype(str).str.lower()
        r.loc[r["penalty"] == "none", "r"] = 0.0
        r.loc[r["r"] == 0, "penalty"] = "none"
        r["spec"] = r["weight_init_spec"].map(_norm_spec)
    else:
        r["spec"] = []
    return r


def arch_name(runs_: pd.DataFrame) -> str:
    """The architecture of runs (of one architecture) as their labels and run ids name it
    (`vglab.schema.arch_name`, the rule's one home), from their stored columns: `mlp 20x8`."""
    from vglab.schema import arch_name as name

    r = runs_.iloc[0]
    size = lambda k: int(r[k]) if pd.notna(r.get(k)) else None  # noqa: E731 - a paper_cnn has none
    args = json.loads(r["model_args"]) if isinstance(r.get("model_args"), str) else {}
    return name(str(r.get("network")), size("depth"), size("width"), r.get("variant"), r.get("model"),
                tuple(sorted(args.items())))


def label_order(res_or_runs) -> list[str]:
    """Labels in a stable, meaningful order (architecture, activation, init, penalty, r, alpha)."""
    r = res_or_runs if isinstance(res_or_runs, pd.DataFrame) else runs(res_or_runs)
    if not len(r):
        return []
    cols = [c for c in ORDER_COLUMNS if c in r.columns]
    key = r[cols + ["label"]].copy()
    for c in cols:
        if key[c].dtype == object:
            key[c] = key[c].astype(str)
    key = key.sort_values(cols + ["label"], na_position="first", kind="stable")
    return list(dict.fromkeys(key["label"]))


def n_classes(res) -> int:
    """The number of classes the runs were trained on, as the runner stored it (`runs.n_classes`,
    from the prepared data): chance is 1/n_classes. (Worked out from the dataset's name, an
    own 2- or 3-class dataset got chance 0.1.) Runs stored before that column: the built-in
    dataset's count; an own dataset then raises, saying how to store it."""
    r = res.runs
    if "n_classes" in r.columns:
        stored = pd.to_numeric(r["n_classes"], errors="coerce").dropna()
        if len(stored):
            return int(stored.mode().iloc[0])  # one count per experiment (several folders: the commonest)
    if watched(res):
        raise ValueError(f"{res.path or 'these results'}: runs recorded with vglab.Recorder from your own loop store "
                         "no class count; pass n_classes in the Recorder's config to get a chance level")
    ds = r["dataset"].iloc[0] if len(r) and "dataset" in r.columns else None
    if str(ds) in N_CLASSES:
        return N_CLASSES[str(ds)]
    raise ValueError(f"{res.path or 'these results'}: the runs do not say how many classes they were trained on "
                     "(no n_classes in run.json: stored by an older vglab); delete the runs folder and re-run the same "
                     "`vglab run` command to store them again")


def watched(res) -> bool:
    """Whether the runs were recorded from the user's own loop (`vglab.Recorder`: run.json's
    `x_unit` is "step"), not trained by vglab: their loss is the user's, their accuracy and
    class count whatever the user recorded."""
    r = res.runs
    return "x_unit" in r.columns and bool((r["x_unit"].astype(str) == "step").any())


def chance(res) -> float | None:
    """1/n_classes, or None for runs that store no class count (a watched run of a regression
    net or language model): figures then draw no chance line."""
    try:
        return 1.0 / n_classes(res)
    except ValueError:
        if watched(res):
            return None
        raise


def final(res) -> pd.DataFrame:
    """One row per run: its configuration and the metrics of its last epoch."""
    r = runs(res)
    e = res.epochs
    if not len(e) or not len(r):
        return r.assign(epoch=[], val_acc=[], val_loss=[], train_acc=[], train_loss=[])
    last = e.sort_values("epoch").groupby("run_id").tail(1)
    cols = [c for c in ("run_id", "epoch", "val_acc", "val_loss", "train_acc", "train_loss") if c in last.columns]
    return r.merge(last[cols], on="run_id", how="left")


def summary(res) -> pd.DataFrame:
    """One row per label: seeds, final validation accuracy mean/std/min/max over the runs
    that did not diverge (NaN when all did; std NaN with one run), how many diverged and
    at which epochs (e.g. "3, 5")."""
    f = final(res)
    rows = []
    for label in label_order(f):
        g = f[f["label"] == label]
        diverged = g["diverged_epoch"].notna() if "diverged_epoch" in g else pd.Series(False, index=g.index)
        acc = g.loc[~diverged, "val_acc"].astype(float)
        at = sorted(int(e) for e in g.loc[diverged, "diverged_epoch"]) if diverged.any() else []
        rows.append({"label": label, "seeds": int(g["seed"].nunique()), "runs": len(g),
                     "val_acc_mean": acc.mean(), "val_acc_std": acc.std(ddof=0) if len(acc) > 1 else np.nan,
                     "val_acc_min": acc.min(), "val_acc_max": acc.max(), "diverged": int(diverged.sum()),
                     "diverged_at": ", ".join(map(str, at)),
                     "epochs": int(g["epoch"].max()) if g["epoch"].notna().any() else 0})
    return pd.DataFrame(rows)


def first_recorded_epoch(res) -> int | None:
    """The first epoch after initialization with recorded gradient statistics: 1, unless
    the runs record every k epochs (then k: its statistics cover the steps of epochs 1..k)."""
    g = res.grads
    if g is None or g.empty or "epoch" not in g:
        return None
    e = g.loc[g["epoch"] > 0, "epoch"]
    return int(e.min()) if len(e) else None


def last_span(res) -> str:
    """The steps the last recorded gradient statistics cover: "epoch 20", or "epochs 571–600"
    when the runs record every k epochs."""
    g = res.grads
    if g is None or g.empty:
        return "the last epoch"
    ep = sorted(int(e) for e in g["epoch"].unique() if e > 0)
    if not ep:
        return "the last epoch"
    prev = ep[-2] if len(ep) > 1 else 0
    return f"epoch {ep[-1]}" if ep[-1] - prev == 1 else f"epochs {prev + 1}–{ep[-1]}"


def x_unit(res) -> str:
    """What the `epoch` column counts: "step" when every run's run.json says so (`x_unit`,
    written by `vglab.Recorder` for a watched training step), else "epoch" (the engine's)."""
    u = res.runs["x_unit"] if "x_unit" in res.runs.columns else None
    return "step" if u is not None and len(u) and (u == "step").all() else "epoch"


def in_x_unit(res, text: str) -> str:
    """`text` (an axis label, title or caption written in epochs) in the runs' `x_unit`."""
    if x_unit(res) == "epoch":
        return text
    return re.sub(r"\b([Ee])poch(s?)\b", lambda m: ("Step" if m.group(1) == "E" else "step") + m.group(2), text)


def epoch_span(epoch: int | None) -> str:
    """How a recorded epoch's gradient statistics are to be read: "epoch 1", or "epochs 1–30"."""
    if epoch is None:
        return "the first epoch"
    return "epoch 1" if epoch == 1 else f"epochs 1–{epoch}"


def arms(r: pd.DataFrame, **where) -> pd.DataFrame:
    """Rows of the (normalized) runs table `r` matching every condition. Values compare
    as numbers with tolerance when numeric; `spec` is normalized ('normal(std=10.0)' ==
    'normal(std=10)'); a callable is applied to the column."""
    m = pd.Series(True, index=r.index)
    for col, want in where.items():
        if col not in r.columns:
            return r.iloc[0:0]
        v = r[col]
        if callable(want):
            m &= v.map(want).astype(bool)
        elif col == "spec":
            m &= v == _norm_spec(want)
        elif isinstance(want, (int, float)) and not isinstance(want, bool):
            m &= np.isclose(pd.to_numeric(v, errors="coerce").astype(float), float(want), rtol=1e-6, atol=1e-12)
        else:
            m &= v.astype(str) == str(want)
    return r[m]


def per_seed(table: pd.DataFrame, value: str, index: str = "epoch") -> pd.DataFrame:
    """Pivot a per-epoch table to [index] x [run_id]."""
    return table.groupby([index, "run_id"])[value].mean().unstack("run_id")


def fmt_acc(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"
