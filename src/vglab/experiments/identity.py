"""How runs and groups are named: run ids (`<slug>-s<seed>-<hash>`), group names, and the
labels people read. A run id is a results folder's key, so these rules must not change for
existing runs: an interrupted sweep resumes by them (tests/test_experiments_resume.py holds
ids of stored runs fixed). Functions of a `RunSpec`'s fields; nothing here builds one.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict

from vglab.experiments.schema import CRITICAL, without_id_defaults
from vglab.nn.init import default_bias_init
from vglab.nn.init import parse as parse_init
from vglab.nn.networks import arch_name
from vglab.train import optim

ADAM = {"name": "adam", **optim.DEFAULTS["adam"]}  # the default optimizer, left out of slugs and group names
_VARIANCE = re.compile(r"^\s*normal\s*\(\s*(?:variance|var)\s*=\s*([^)]+)\)\s*$")


def freeze(d: dict) -> tuple:
    """A dict as sorted items, its lists and dicts made hashable too (a run's optimizer,
    schedule and model arguments; the keys that tell configurations apart)."""
    return tuple(sorted((k, hashable(v)) for k, v in d.items()))


def hashable(v):
    if isinstance(v, list):
        return tuple(hashable(x) for x in v)
    if isinstance(v, dict):
        return freeze(v)
    return v


def default_bias(weight_init: str) -> str:
    """The bias law a weight law gets when the spec names none (`init.default_bias_init`)."""
    return default_bias_init(parse_init(weight_init)).spec


def init_label(spec: str, resolved: str | None = None) -> str:
    """`N(0, std=10)`; a law written with variance= keeps it: `N(0, var=10)`; a critical one
    (`resolved`: its spec with the number) says so: `orthogonal(σ_w²=1.00046, critical)`."""
    if CRITICAL.search(spec):
        return parse_init(resolved).label[:-1] + ", critical)"
    m = _VARIANCE.match(spec)
    return f"N(0, var={float(m.group(1)):g})" if m else parse_init(spec).label


def init_slug(spec: str) -> str:
    """`normal(std=10)` -> `std10`, `normal(variance=10)` -> `var10`, `uniform(a=10)` -> `u10`,
    `orthogonal(gain=2)` -> `orth2`, `orthogonal(sigma_w2=critical)` -> `orth-crit`."""
    if CRITICAL.search(spec):
        return "orth-crit" if parse_init(CRITICAL.sub("sigma_w2=1", spec)).family == "orthogonal" else "sw-crit"
    law = parse_init(spec)
    if law.kind == "normal":
        m = _VARIANCE.match(spec)
        return f"var{float(m.group(1)):g}" if m else f"std{law.value:g}"
    if law.kind == "uniform":
        return f"u{law.value:g}"
    if law.family == "orthogonal":  # `orth2`, `orth-sw1.5`
        return f"orth{law.value:g}" if law.kind == "orthogonal" else f"orth-sw{law.value:g}"
    return law.kind.replace("_uniform", "").replace("_normal", "")


def block_label(residual: float, norm: str) -> str:
    """`residual s=0.5 · LayerNorm`; empty for the plain MLP."""
    return " · ".join(p for p in (f"residual s={residual:g}" if residual else "",
                                  "LayerNorm" if norm == "layer" else "") if p)


def activation_label(activation: str | None, alpha: float) -> str:
    """`tanh`, `rescaled tanh α=2`; your model's own activation (None) is not named here
    (the runs table's `activation` column says what the model uses)."""
    if activation is None:
        return "" if alpha == 1 else f"rescaled α={alpha:g}"
    return activation if alpha == 1 else f"rescaled {activation} α={alpha:g}"


def config_dict(run) -> dict:
    """Everything that determines a run's numbers (what its id hashes): its fields less the
    names for people, with the keys added later left out at their old behaviour."""
    d = asdict(run)
    for k in ("experiment", "label", "init_given", "traced", "base_dir"):
        d.pop(k)
    d["probes"] = list(run.probes)
    for k in ("optimizer", "schedule", "model_args"):
        d[k] = dict(getattr(run, k))
    if run.data_sha is None:
        d.pop("data_sha")
    return without_id_defaults(d)


def run_id(run) -> str:
    """Readable and deterministic: `<slug>-s<seed>-<hash of the full config>`."""
    digest = hashlib.sha1(json.dumps(config_dict(run), sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{slug(run)}-s{run.seed}-{digest}"


def slug(run) -> str:
    """The run id's readable part: what differs from the defaults, e.g. `mlp-20x8-tanh-std10-l2-r0.01`."""
    parts = [run.model_spec().name] + ([run.activation] if run.activation else [])
    if run.alpha != 1:
        parts.append(f"a{run.alpha:g}")
    parts.append(init_slug(run.init_given or run.weight_init))
    if run.bias_init != default_bias(run.weight_init):
        parts.append("bias-" + init_slug(run.bias_init))
    if run.penalty != "none":
        parts.append(f"{run.penalty}-r{run.r:g}")
    opt = dict(run.optimizer)
    if opt["name"] != ADAM["name"]:
        parts.append(opt["name"])
    if run.learning_rate != 1e-3:
        parts.append(f"lr{run.learning_rate:g}")
    text = " ".join(parts).lower().replace("e+", "e")  # 1e+12 -> 1e12: not 1e-12 (both gave 1e-12)
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9.]+", "-", text)).strip("-")


def group_name(run) -> str:
    """The group's readable name, e.g. `mlp-20x8-tanh-normal` (with a short hash when its
    optimizer or model arguments are not the defaults, so that names stay unique)."""
    w_kind, b_kind = parse_init(run.weight_init).kind, parse_init(run.bias_init).kind
    name = "-".join(p for p in (run.model_spec().name, run.activation, w_kind) if p)
    if b_kind != parse_init(default_bias(run.weight_init)).kind:
        name += f"-bias-{b_kind}"
    opt = run.optimizer_setting()
    if {"name": opt.name, **dict(opt.static)} != ADAM or opt.schedule.name != "constant" or opt.traced:
        tag = hashlib.sha1(repr((opt, run.model_args)).encode()).hexdigest()[:4]
        name += f"-{opt.name}-{tag}"
    elif run.model_args:
        name += "-" + hashlib.sha1(repr(run.model_args).encode()).hexdigest()[:4]
    return re.sub(r"[^a-z0-9.]+", "-", name.lower())


def config_label(c: dict, varies: dict[str, bool], opt_args: dict) -> str:
    """A configuration's label, e.g. `mlp 20x8 · tanh · N(0, std=10) · L2 r=0.01`: the
    architecture, optimizer and learning rate are named only when the experiment has more
    than one (`varies`); `opt_args` are the optimizer's parameters that differ from Optax's."""
    parts = [arch_name(c["network"], c["depth"], c["width"], c["variant"], c["model"], freeze(c["model_args"]))] \
        if varies["arch"] else []
    parts += [p for p in (block_label(c["residual"], c["norm"]), activation_label(c["activation"], c["alpha"]),
                          init_label(c["init_given"], c["init"])) if p]
    if c["bias_init"] != default_bias(c["init"]):
        parts.append("bias " + parse_init(c["bias_init"]).label)
    if c["penalty"] != "none":
        parts.append(f"{c['penalty'].upper()} r={c['r']:g}")
    if varies["optimizer"]:
        args = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(opt_args.items()))
        parts.append(c["optimizer"]["name"] + (f"({args})" if args else ""))
    if varies["learning_rate"]:
        parts.append(f"lr={c['learning_rate']:g}")
    return " · ".join(parts)
