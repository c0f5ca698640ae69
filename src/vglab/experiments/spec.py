"""Experiment specs: a TOML file, a built-in preset or a dict -> a validated
`ExperimentSpec` -> runs -> groups -> units.

A spec file::

    description = "one line"         # what it is, and which figure of the reference it reproduces
    reference = "Figure 1"
    dataset = "digits"               # run settings: shared by every run of the experiment
    epochs = 20
    seeds = 3                        # 3 means [0, 1, 2]; or a list
    batch_size = 32
    # train_size = 1000              # a fixed stratified subset of the training split
    # probes = "full"                # a tier (norms | moments | full) or a list of probe names
    # record_every = 1               # a table row every k epochs (probes still see every step)
    # probe_every = 1                # per-step gradient probes on every n-th step only
    # schedule = "cosine"            # the learning rate's shape over the run (constant by default)

    network = "mlp"                  # arm defaults: any arm key set here applies to every arm
    depth = 1
    width = 8
    activation = "tanh"
    learning_rate = 0.001            # Adam lr 1e-3, the reference study's recipe
    optimizer = "adam"               # or {name = "sgd", momentum = 0.9}: any Optax optimizer

    [[arms]]                         # an arm is a small cross product of its list values
    init = ["normal(std=10)", "normal(std=1)"]

    [[arms]]
    init = "normal(std=10)"
    penalty = ["l1", "l2"]
    r = "logspace(1e-3, 1e2, 10)"    # also "linspace(a, b, n)"; values rounded to 4 digits

    [datasets.digits]                # run settings that apply on one dataset only
    epochs = 5

`name` (default: the file's name) names the results folder, vglab-results/<dataset>/<name>,
so it must be a plain folder name (`check_name`). Sizes are bounded by `LIMITS`.

Arm keys: network (mlp|cnn|paper_cnn|model), depth, width, variant (paper_cnn only),
activation, init, bias_init (default: the weights' law, zeros for fan-scaled laws; `model`
keeps the model's own init), penalty (none|l1|l2), r, alpha, learning_rate, optimizer (a
name, or a table whose list values are swept), residual (the built-in MLP's skip connections h + s·phi(z) with branch scale s; 0:
none), norm (none|layer: the built-in MLP's LayerNorm before the activation), model (your own
model: "package.module:factory" or "path/file.py:factory"), model_args (a table passed to the factory; list values are
swept), input (features|images: what your model takes). Precedence: built-in defaults <
top-level keys < the arm; run settings: top level < [datasets.<name>] < overrides (the
CLI's --epochs, ...). `dataset` is a built-in name or the path of an .npz (relative paths
are read from the spec file's folder).

A *run* is one configuration with one seed. Runs that differ only in seed, init scale,
alpha, L1/L2 strength, learning rate and the swept optimizer parameters that can be traced
share a *group* (`vglab.train.loop.group_key`): one model, one activation, one pair of init
families, one optimizer. A *unit* is a group's runs with one seed (or, for image models on
CPU, a single run); it is what one `train_group` call trains. Units, not groups, are the
unit of work because XLA's numbers depend (at float32 rounding) on the shape of the
vectorized program: a unit's composition depends on the spec alone, so a run's numbers do
not depend on the worker count, the executor, or on which runs an interrupted sweep had
finished.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

SETTINGS = ("dataset", "epochs", "seeds", "batch_size", "train_size", "probes", "record_every", "probe_every",
            "schedule", "pca")
ARM_KEYS = ("network", "depth", "width", "variant", "activation", "init", "bias_init", "penalty", "r", "alpha",
            "learning_rate", "optimizer", "model", "model_args", "input", "residual", "norm")
ARM_DEFAULTS = {"network": "mlp", "depth": 1, "width": 8, "variant": None, "activation": "tanh",
                "init": "normal(std=1)", "bias_init": None, "penalty": "none", "r": 0.01, "alpha": 1.0,
                "learning_rate": 1e-3, "optimizer": {"name": "adam"}, "model": None, "model_args": {},
                "input": None, "residual": None, "norm": None}  # residual, norm None: the plain MLP (0, "none")
SETTING_DEFAULTS = {"dataset": "digits", "epochs": 15, "seeds": [0, 1, 2], "batch_size": 32, "train_size": None,
                    "probes": ["full"], "record_every": 1, "probe_every": 1, "schedule": {"name": "constant"},
                    "pca": None}
BUILT_IN = ("mlp", "cnn", "paper_cnn")  # the `network` values that are vglab's own networks
INPUTS = ("features", "images")
# `vglab reproduce` runs these, in this order: the reference study's figures, then its open questions.
REPRODUCE = ("large-params", "regularization", "r-sweep", "super-large", "uniform-large", "vs-relu",
             "many-layers", "alpha-sweep", "cnn-large-params", "paper-cnn-large-params", "cnn-many-layers",
             "paper-cnn-many-layers", "rescaling-by-init", "combined")


class SpecError(ValueError):
    """An experiment spec that cannot be used; the message names the key and what to write."""


# ------------------------------------------------------------------ limits
@dataclass(frozen=True)
class Limit:
    """A size past which a spec is almost surely a typo, checked before any work.
    `max` None: the cores this process may use."""

    max: int | None
    what: str  # the quantity counted, as the message names it
    cost: str  # what going past it costs


# One table, checked once (`check_limit`); `allow_large` (CLI: --allow-large) lifts them all.
LIMITS = {
    "runs": Limit(1000, "runs per experiment", "the largest preset has 63; each run trains for seconds to minutes"),
    "sweep": Limit(1000, "values per logspace/linspace", "each value is another configuration to train"),
    "seeds": Limit(100, "seeds", "every seed repeats every configuration"),
    "depth": Limit(100, "layers", "compiling grows with depth: 30-45 s for 20 layers on one core, "
                                  "minutes and gigabytes for thousands"),
    "width": Limit(1024, "units per layer", "a layer's weights grow with its square, times 8 members "
                                            "trained at once on CPU"),
    "workers": Limit(None, "worker processes, one per core this process may use",
                     "each is a process of ~300 MB on its own core; more only share the cores"),
}


def check_limit(key: str, value: int, allow_large: bool = False, where: str = "") -> None:
    """Raise a SpecError if `value` is above `LIMITS[key]` (unless `allow_large`)."""
    limit = LIMITS[key]
    maximum = limit.max
    if maximum is None:
        from vglab.train.parallel import available_cores

        maximum = len(available_cores())
    if value > maximum and not allow_large:
        raise SpecError(f"{where}{value} is above the limit of {maximum} {limit.what} ({limit.cost}); lower it, or "
                        "pass --allow-large (Python: allow_large=True) to go beyond it")


def _check_runs(arms, n_seeds: int, allow_large: bool, where: str = "") -> None:
    combinations = sum(math.prod(len(arm[k]) for k in ARM_KEYS) for arm in arms)  # counted, not expanded
    check_limit("runs", combinations * n_seeds, allow_large,
                f"{where}the arms give up to {combinations} configurations x {n_seeds} seeds = ")


def check_sizes(spec: "ExperimentSpec", allow_large: bool = False) -> None:
    """The name and limits of a spec built in Python (`load_spec` checks them as it reads)."""
    try:
        check_name(spec.name)
    except ValueError as e:
        raise SpecError(str(e)) from None
    check_limit("seeds", len(spec.seeds), allow_large, f"{spec.name}: seeds: ")
    for arm in spec.arms:
        for key in ("depth", "width"):
            for x in arm.get(key, [None]):
                if x is not None:
                    check_limit(key, x, allow_large, f"{spec.name}: {key} = ")
    _check_runs(spec.arms, len(spec.seeds), allow_large, f"{spec.name}: ")


_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


def check_name(name) -> str:
    """An experiment's name is its results folder's name: letters, digits, '-', '_' and
    '.', not starting with '.' (so never '..', '/x' or '../x', which wrote outside)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        safe = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip(".-")[:100] or "my-experiment"
        raise ValueError(f"name {name!r} is not a plain folder name: use at most 100 letters, digits, '-', '_' "
                         f"and '.', not starting with '.', e.g. name = \"{safe}\" (the results go to --out, else "
                         "vglab-results/<dataset>/<name>)")
    return name


# ------------------------------------------------------------------ value checks
def _choice(value, allowed, what):
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose one of {list(allowed)}")
    return value


def _check_network(v):
    return _choice(v, BUILT_IN + ("model",), "network")


def _check_variant(v):
    from vglab.nn.networks import CNN_VARIANTS

    return _choice(v, CNN_VARIANTS, "paper_cnn variant")


def _check_activation(v):
    from vglab.nn import activations, shaping

    if shaping.parse(v) is None:  # a TAT activation is solved once its depth is known (`configurations`)
        activations.get(v)  # raises with the valid names
    return v


CRITICAL = re.compile(r"sigma_w2\s*=\s*critical\b")  # `orthogonal(sigma_w2=critical)`: χ_1 = 1 (resolve_critical)


def _check_init(v):
    from vglab.nn.init import parse

    parse(CRITICAL.sub("sigma_w2=1", str(v)))  # raises with the accepted forms
    return str(v).strip()


def resolve_critical(init: str, activation: str | None, alpha: float, bias_init: str) -> str:
    """`normal(sigma_w2=critical)` / `orthogonal(sigma_w2=critical)` with the σ_w² on the
    order-to-chaos line χ_1 = 1 (`vglab.nn.meanfield.critical_sigma_w2`) for this activation, α
    and the biases' variance σ_b²; other laws unchanged. Rounded to 6 digits (labels show it)."""
    if not CRITICAL.search(init):
        return init
    from vglab.nn import meanfield
    from vglab.nn.init import parse

    where = f"init = {init!r}"
    sigma_b2 = parse(bias_init).variance()
    if not math.isfinite(sigma_b2):
        raise SpecError(f"{where}: the critical sigma_w2 needs a bias law of fixed variance, got bias_init = "
                        f"{bias_init!r}; write e.g. bias_init = \"normal(variance=1e-4)\" or \"zeros\"")
    if activation not in meanfield.ACTIVATIONS:
        raise SpecError(f"{where}: vglab's mean-field theory has no model of activation {activation!r}, so it cannot "
                        f"find its critical sigma_w2; use it with one of {sorted(meanfield.ACTIVATIONS)} or give "
                        "sigma_w2 as a number")
    try:
        crit = meanfield.critical_sigma_w2(activation, float(alpha), float(sigma_b2))
    except ValueError as e:
        raise SpecError(f"{where}: {e}; give sigma_w2 as a number") from None
    return CRITICAL.sub(f"sigma_w2={float(f'{crit:.6g}')!r}", init)


def _check_bias_init(v):
    from vglab.nn.init import parse

    if parse(v).family == "orthogonal":
        raise ValueError(f"{v!r} is a law for weight matrices; give the biases another law, e.g. bias_init = "
                         "\"zeros\" or \"normal(std=0.05)\"")
    return _check_init(v)


def _check_penalty(v):
    from vglab.nn.penalties import PENALTIES

    return _choice(v, PENALTIES, "penalty")


def _check_dataset(v):
    from vglab.data import DATASETS
    from vglab.data.own import is_path

    if isinstance(v, str) and is_path(v):
        if not v.endswith(".npz"):
            raise ValueError(f"an own dataset is an .npz file (x_train, y_train, x_test, y_test), got {v!r}")
        return v
    if v not in DATASETS:
        raise ValueError(f"unknown dataset {v!r}; choose one of {list(DATASETS)}, or give the path of an .npz "
                         "(x_train, y_train, x_test, y_test)")
    return v


def _check_positive_int(name):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        return v
    return check


def _check_r(v):
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"penalty strength r must be a finite number >= 0, got {v}")
    return v


def _check_alpha(v):
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"alpha must be > 0 (the rescaled activation is alpha*phi(z/alpha)), got {v}")
    return v


def _check_lr(v):
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"learning_rate must be a number > 0, got {v}")
    return v


def _check_model(v):
    if callable(v):  # a factory given from Python: named by its module, so workers can import it
        # (a script's own factory is "__main__:name": spawned workers re-import the script as __main__)
        module, name = getattr(v, "__module__", None), getattr(v, "__qualname__", "")
        if module is None or "<" in name:
            raise ValueError(f"model {v!r} is not importable by name (defined inside a function or a lambda); "
                             "define the factory at the top level of a module or script")
        return f"{module}:{name}"
    if not isinstance(v, str) or ":" not in v:
        raise ValueError(f"model must be 'package.module:factory' or 'path/to/file.py:factory', got {v!r}")
    return v


def _check_input(v):
    return _choice(v, INPUTS, "input")


def _check_residual(v):
    from vglab.nn.networks import check_block

    check_block(residual=v)
    return float(v)


def _check_norm(v):
    from vglab.nn.networks import check_block

    check_block(norm=v)
    return v


def _check_optimizer(v) -> dict:
    """A canonical optimizer dict {name, **args} (args validated against Optax's signature)."""
    from vglab.train import optim

    d = {"name": v} if isinstance(v, str) else dict(v)
    name = d.pop("name", "adam")  # a table without a name sets the default optimizer's parameters
    optim.check_name(name)
    return {"name": name, **optim.check_args(name, d)}


_RANGE = re.compile(r"^\s*(logspace|linspace)\s*\(\s*([^,]+),\s*([^,]+),\s*(\d+)\s*\)\s*$")


def _numbers(v, allow_large: bool = False) -> list:
    """A number, a list of numbers, or "logspace(a, b, n)" / "linspace(a, b, n)" (values
    rounded to 4 significant digits, so labels stay short)."""
    if isinstance(v, str):
        m = _RANGE.match(v)
        if not m:
            raise ValueError(f"cannot read {v!r}: write a number, a list, 'logspace(a, b, n)' or 'linspace(a, b, n)'")
        kind, a, b, n = m.group(1), float(m.group(2)), float(m.group(3)), int(m.group(4))
        if n < 1 or (kind == "logspace" and not (a > 0 and b > 0)):
            raise ValueError(f"cannot read {v!r}: n >= 1, and logspace needs a, b > 0")
        check_limit("sweep", n, allow_large, f"{v!r}: n = ")  # before the list is built
        if kind == "logspace":
            a, b = math.log10(a), math.log10(b)
        vals = [a + (b - a) * i / max(n - 1, 1) for i in range(n)]
        return [float(f"{10 ** x if kind == 'logspace' else x:.4g}") for x in vals]
    vals = v if isinstance(v, list) else [v]
    for x in vals:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise ValueError(f"expected a number, got {x!r}")
    return [float(x) for x in vals]


def _listed(v) -> list:
    return v if isinstance(v, list) else [v]


def _table_product(table: dict) -> list[dict]:
    """A table whose list values are swept: its cross product, one dict per combination
    (`{name = "adam", eps = [1e-7, 1e-10]}` -> two dicts)."""
    keys = list(table)
    values = [table[k] if isinstance(table[k], list) else [table[k]] for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def _tables(v) -> list[dict]:
    out = []
    for item in _listed(v):
        if isinstance(item, dict):
            out += _table_product(item)
        else:
            out.append(item)
    return out


ARM_CHECKS = {
    "network": _check_network, "depth": _check_positive_int("depth"), "width": _check_positive_int("width"),
    "variant": _check_variant, "activation": _check_activation, "init": _check_init, "bias_init": _check_bias_init,
    "penalty": _check_penalty, "r": _check_r, "alpha": _check_alpha, "learning_rate": _check_lr,
    "optimizer": _check_optimizer, "model": _check_model, "model_args": dict, "input": _check_input,
    "residual": _check_residual, "norm": _check_norm,
}
NUMERIC_ARM_KEYS = ("r", "alpha", "learning_rate", "residual")
MLP_ONLY = ("residual", "norm")  # arm keys that apply to network = "mlp" only


# ------------------------------------------------------------------ the file's schema
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


Num = float | int
NumOrRange = Num | list[Num] | str  # a number, a list, or "logspace(a, b, n)" / "linspace(a, b, n)"


class _Arm(_Strict):
    """Arm keys: each a value or a list of values (the arm is their cross product)."""

    network: str | list[str] | None = None
    depth: int | list[int] | None = None
    width: int | list[int] | None = None
    variant: str | list[str] | None = None
    activation: str | list[str] | None = None
    init: str | list[str] | None = None
    bias_init: str | list[str] | None = None
    penalty: str | list[str] | None = None
    r: NumOrRange | None = None
    alpha: NumOrRange | None = None
    learning_rate: NumOrRange | None = None
    optimizer: str | dict[str, Any] | list[str | dict[str, Any]] | None = None
    model: Any = None  # "package.module:factory", "path/file.py:factory", or (from Python) the factory
    model_args: dict[str, Any] | list[dict[str, Any]] | None = None
    input: str | list[str] | None = None
    residual: NumOrRange | None = None
    norm: str | list[str] | None = None

    @field_validator(*ARM_KEYS, mode="before")
    @classmethod
    def _values(cls, v, info):
        if v is None:
            return None
        name = info.field_name
        allow_large = bool((info.context or {}).get("allow_large"))
        if name in NUMERIC_ARM_KEYS:
            vals = _numbers(v, allow_large)
        elif name in ("optimizer", "model_args"):
            vals = _tables(v)
            if name == "model_args" and not all(isinstance(x, dict) for x in vals):
                raise ValueError("model_args is a table of the factory's keyword arguments, e.g. {depth = 20}")
        else:
            vals = _listed(v)
        if not vals:
            raise ValueError("an empty list gives no runs; give at least one value")
        vals = [ARM_CHECKS[name](x) for x in vals]
        if name in ("depth", "width"):
            for x in vals:
                check_limit(name, x, allow_large)
        return vals

    def given(self) -> dict:
        """The arm keys set explicitly."""
        return {k: getattr(self, k) for k in ARM_KEYS if k in self.model_fields_set and getattr(self, k) is not None}


class _Settings(_Strict):
    dataset: str | None = None
    epochs: int | None = None
    seeds: int | list[int] | None = None
    batch_size: int | None = None
    train_size: int | None = None
    probes: str | list[str] | None = None
    record_every: int | None = None
    probe_every: int | None = None
    schedule: str | dict[str, Any] | None = None
    pca: bool | float | None = None

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset(cls, v):
        return None if v is None else _check_dataset(v)

    @field_validator("epochs", "batch_size", "train_size", "record_every", "probe_every", mode="before")
    @classmethod
    def _ints(cls, v, info):
        return None if v is None else _check_positive_int(info.field_name)(v)

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v, info):
        if v is None:
            return None
        allow_large = bool((info.context or {}).get("allow_large"))
        if isinstance(v, int) and not isinstance(v, bool):
            check_limit("seeds", _check_positive_int("seeds")(v), allow_large)  # before range(v)
            return list(range(v))
        if isinstance(v, list):
            check_limit("seeds", len(v), allow_large)
        if not isinstance(v, list) or not v or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in v):
            raise ValueError(f"seeds must be a count >= 1 or a non-empty list of integers >= 0, got {v!r}")
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must not repeat, got {v!r}")
        return list(v)

    @field_validator("probes", mode="before")
    @classmethod
    def _probes(cls, v):
        if v is None:
            return None
        from vglab.train import probes

        names = _listed(v)
        probes.resolve(tuple(names))  # raises with the valid names
        return names

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule(cls, v):
        if v is None:
            return None
        from vglab.train.optim import Schedule

        d = {"name": v} if isinstance(v, str) else dict(v)
        name = d.pop("name", "constant")
        Schedule(name, tuple(sorted(d.items())))  # raises with the valid names and parameters
        return {"name": name, **d}

    @field_validator("pca", mode="before")
    @classmethod
    def _pca(cls, v):
        if v is None or v is False:
            return v
        if v is True:
            return 0.95
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            raise ValueError(f"pca is the fraction of training variance the MLP inputs keep, in (0, 1], or false "
                             f"(no PCA), got {v!r}")
        return float(v)


class _SpecFile(_Settings, _Arm):
    name: str | None = None
    description: str = ""
    reference: str = ""
    arms: list[_Arm] | None = None
    datasets: dict[str, _Settings] | None = None

    @field_validator("datasets")
    @classmethod
    def _dataset_tables(cls, v):
        for name in v or {}:
            _check_dataset(name)
        return v


def json_schema() -> dict:
    """The JSON schema of a spec file (editors complete TOML against it, e.g. with a
    `#:schema ./vglab-spec.schema.json` line), with the allowed names filled in from the
    registries they come from."""
    from vglab.data import DATASETS
    from vglab.nn import activations
    from vglab.nn.networks import NORMS
    from vglab.nn.penalties import PENALTIES
    from vglab.train import optim, probes

    from vglab.nn.init import SPEC_HELP as INIT_HELP

    schema = _SpecFile.model_json_schema()
    schema["title"] = "vglab experiment spec"
    schema["description"] = __doc__.split("\n\n")[0].replace("\n", " ")
    enums = {"network": list(BUILT_IN) + ["model"], "activation": sorted(activations.ACTIVATIONS),
             "penalty": list(PENALTIES), "variant": ["parameters", "layers"], "input": list(INPUTS),
             "norm": list(NORMS),
             "probes": list(probes.TIERS) + ["all"] + list(probes.ALL)}
    described = {"dataset": f"{', '.join(DATASETS)}, or the path of an .npz",
                 "optimizer": f"one of {', '.join(optim.OPTIMIZERS)}, or a table {{name = ..., <parameter> = ...}}",
                 "init": INIT_HELP + "; sigma_w2=critical: the order-to-chaos sigma_w2 of the configuration's "
                         "activation, alpha and bias law",
                 "activation": f"one of {', '.join(sorted(activations.ACTIVATIONS))}, or kernel-shaped (TAT): "
                               "tat(<name>, tau=0.3, depth=L) (an MLP's depth fills in a missing L)",
                 "residual": "the built-in MLP's branch scale s: hidden layers compute h + s·phi(z) (0: no skip)",
                 "schedule": f"one of {', '.join(optim.SCHEDULES)}, or a table {{name = ..., <parameter> = ...}}"}

    def fill(props: dict) -> None:
        for key, prop in props.items():
            if key in enums:
                one = {"type": "string", "enum": enums[key]}
                prop["anyOf"] = [one, {"type": "array", "items": one}, {"type": "null"}]
                if key == "activation":  # or kernel-shaped: tat(<name>, ...)
                    shaped = {"type": "string", "pattern": r"^\s*tat\s*\("}
                    prop["anyOf"] = [one, shaped, {"type": "array", "items": {"anyOf": [one, shaped]}}, {"type": "null"}]
            if key in described:
                prop["description"] = described[key]

    fill(schema["properties"])
    for sub in schema.get("$defs", {}).values():
        fill(sub.get("properties", {}))
    return schema


# ------------------------------------------------------------------ what a run trains
@dataclass(frozen=True)
class ModelSpec:
    """What a run's model is, resolved: a built-in network or your own model's factory with
    its arguments. Hashable (a compiled program's key); `build` makes the model."""

    network: str  # mlp | cnn | paper_cnn | model
    depth: int | None = None
    width: int | None = None
    variant: str | None = None
    activation: str | None = "tanh"  # None: your model's own (not passed to its factory)
    model: str | None = None  # the factory reference, for network = "model"
    model_args: tuple[tuple[str, Any], ...] = ()
    input: str = "features"  # what the model takes: flat features or images
    base_dir: str | None = None  # where a relative factory path is read from
    residual: float = 0.0  # the built-in MLP's options (vglab.nn.networks)
    norm: str = "none"

    @property
    def kind(self) -> str:
        """The data preparation it needs (`vglab.data.prepare`'s kind)."""
        return "mlp" if self.input == "features" else "cnn"

    @property
    def name(self) -> str:
        from vglab.nn.networks import block_suffix

        return arch_name(self.network, self.depth, self.width, self.variant, self.model, self.model_args) \
            + block_suffix(self.residual, self.norm)

    def build(self, in_shape, n_classes: int):
        """The `vglab.nn.model.Model` for data of this example shape and class count."""
        from vglab.nn import build

        if self.network != "model":
            return build(self.network, in_shape, depth=self.depth or 1, width=self.width or 8, variant=self.variant,
                         activation=self.activation, n_out=n_classes, residual=self.residual, norm=self.norm)
        from vglab.nn.adapters import build_from_factory

        return build_from_factory(self.model, dict(self.model_args), in_shape=tuple(in_shape), n_classes=n_classes,
                                  activation=self.activation, base_dir=self.base_dir)


# ------------------------------------------------------------------ runs
@dataclass(frozen=True)
class RunSpec:
    """One run: one configuration with one seed, every value resolved."""

    experiment: str
    label: str  # the configuration without the seed, for people (not part of the run id)
    dataset: str  # a built-in name or an .npz path (absolute)
    network: str
    depth: int | None  # None for paper_cnn (its variant fixes the layers) and your own models
    width: int | None
    variant: str | None  # paper_cnn only
    activation: str | None  # None: your own model's, not set by the spec (known once it is built)
    alpha: float
    weight_init: str  # canonical spec, e.g. "normal(std=10)"
    bias_init: str  # canonical spec, resolved (never None)
    penalty: str
    r: float
    seed: int
    epochs: int
    batch_size: int
    learning_rate: float
    train_size: int | None
    probes: tuple[str, ...]
    optimizer: tuple[tuple[str, Any], ...] = (("eps", 1e-7), ("name", "adam"))  # canonical, sorted items
    schedule: tuple[tuple[str, Any], ...] = (("name", "constant"),)
    record_every: int = 1
    probe_every: int = 1
    model: str | None = None
    model_args: tuple[tuple[str, Any], ...] = ()
    input: str = "features"
    pca: float | bool | None = None
    data_sha: str | None = None  # content hash of an own .npz dataset
    residual: float = 0.0  # the built-in MLP's options; left out of the run id at these defaults
    norm: str = "none"
    traced: tuple[str, ...] = field(default=(), compare=False)  # optimizer parameters swept in one program
    init_given: str = field(default="", compare=False)  # as written (for the label's convention)
    base_dir: str | None = field(default=None, compare=False)

    def config_dict(self) -> dict:
        """Everything that determines the run's numbers (what the run id hashes)."""
        d = asdict(self)
        for k in ("experiment", "label", "init_given", "traced", "base_dir"):
            d.pop(k)
        d["probes"] = list(self.probes)
        for k in ("optimizer", "schedule", "model_args"):
            d[k] = dict(getattr(self, k))
        if self.data_sha is None:
            d.pop("data_sha")
        for k in MLP_ONLY:  # runs stored before these options keep their ids
            if d[k] == MLP_DEFAULTS[k]:
                d.pop(k)
        return d

    @property
    def run_id(self) -> str:
        """Readable and deterministic: `<slug>-s<seed>-<hash of the full config>`."""
        digest = hashlib.sha1(json.dumps(self.config_dict(), sort_keys=True, default=str).encode()).hexdigest()[:8]
        return f"{self._slug()}-s{self.seed}-{digest}"

    def _slug(self) -> str:
        parts = [self.model_spec().name] + ([self.activation] if self.activation else [])
        if self.alpha != 1:
            parts.append(f"a{self.alpha:g}")
        parts.append(_init_slug(self.init_given or self.weight_init))
        if self.bias_init != default_bias(self.weight_init):
            parts.append("bias-" + _init_slug(self.bias_init))
        if self.penalty != "none":
            parts.append(f"{self.penalty}-r{self.r:g}")
        opt = dict(self.optimizer)
        if opt["name"] != "adam":
            parts.append(opt["name"])
        if self.learning_rate != 1e-3:
            parts.append(f"lr{self.learning_rate:g}")
        text = " ".join(parts).lower().replace("e+", "e")  # 1e+12 -> 1e12: not 1e-12 (both gave 1e-12)
        return re.sub(r"-+", "-", re.sub(r"[^a-z0-9.]+", "-", text)).strip("-")

    def model_spec(self) -> ModelSpec:
        return ModelSpec(self.network, self.depth, self.width, self.variant, self.activation, self.model,
                         self.model_args, self.input, self.base_dir, self.residual, self.norm)

    def optimizer_setting(self):
        """The group's `vglab.train.optim.Optimizer` (constants, traced names, schedule)."""
        from vglab.train.optim import Optimizer, Schedule

        opt = dict(self.optimizer)
        name = opt.pop("name")
        sched = dict(self.schedule)
        return Optimizer(name, tuple(sorted((k, v) for k, v in opt.items() if k not in self.traced)),
                         tuple(sorted(self.traced)), Schedule(sched.pop("name"), tuple(sorted(sched.items()))))

    @property
    def group_key(self) -> tuple:
        """Runs with equal keys share one vectorized program (see vglab.train.loop.group_key)."""
        from vglab.nn.init import parse

        return (self.model_spec(), parse(self.weight_init).kind, parse(self.bias_init).kind,
                self.optimizer_setting())

    @property
    def group(self) -> str:
        """The group's readable name, e.g. `mlp-20x8-tanh-normal` (with a short hash when its
        optimizer or model arguments are not the defaults, so that names stay unique)."""
        from vglab.nn.init import parse

        w_kind, b_kind = parse(self.weight_init).kind, parse(self.bias_init).kind
        name = "-".join(p for p in (self.model_spec().name, self.activation, w_kind) if p)
        if b_kind != parse(default_bias(self.weight_init)).kind:
            name += f"-bias-{b_kind}"
        opt = self.optimizer_setting()
        if opt.name != "adam" or dict(opt.static) != {"eps": 1e-7} or opt.schedule.name != "constant" or opt.traced:
            tag = hashlib.sha1(repr((opt, self.model_args)).encode()).hexdigest()[:4]
            name += f"-{opt.name}-{tag}"
        elif self.model_args:
            name += "-" + hashlib.sha1(repr(self.model_args).encode()).hexdigest()[:4]
        return re.sub(r"[^a-z0-9.]+", "-", name.lower())

    def member(self):
        """The `vglab.train.Member` that trains this run."""
        from vglab.nn.init import parse
        from vglab.nn.penalties import strengths
        from vglab.train import Member

        l1, l2 = strengths(self.penalty, self.r)
        opt = dict(self.optimizer)
        return Member(seed=self.seed, weight_init=parse(self.weight_init), bias_init=parse(self.bias_init),
                      alpha=self.alpha, l1=l1, l2=l2, learning_rate=self.learning_rate,
                      optimizer_args=tuple(sorted((k, float(opt[k])) for k in self.traced)))

    def train_config(self):
        """The `vglab.train.TrainConfig` this run's group shares."""
        from vglab.train import TrainConfig

        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate,
                           optimizer=self.optimizer_setting(), probes=self.probes, probe_every=self.probe_every,
                           record_every=self.record_every)

    def row(self, n_params: int, n_train: int, n_classes: int | None = None, facts: dict | None = None) -> dict:
        """The run's row of the `runs` table (DESIGN.md), without run_id and diverged_epoch
        (added by `results.store.write_run`). `facts`: what training measured and the
        report reads back instead of re-deriving it (`n_in`, `input_sq_norm`, the
        `activation` your model uses)."""
        from vglab.data.own import dataset_column
        from vglab.nn.init import parse

        law, bias = parse(self.weight_init), parse(self.bias_init)
        return {
            "experiment": self.experiment, "label": self.label, "group": self.group,
            "dataset": dataset_column(self.dataset),
            "network": self.network, "depth": self.depth, "width": self.width, "variant": self.variant,
            "activation": self.activation or (facts or {}).get("activation") or "unknown", "alpha": self.alpha,
            "weight_init": init_label(self.init_given or self.weight_init, self.weight_init),
            "weight_init_spec": law.spec,
            "weight_init_kind": law.kind,
            "init_scale": float("nan") if law.fan_scaled or law.value is None else float(law.value),
            "bias_init": bias.label, "bias_init_spec": bias.spec, "bias_var": bias.variance(),
            "penalty": self.penalty, "r": self.r, "seed": self.seed,
            "epochs": self.epochs, "batch_size": self.batch_size, "learning_rate": self.learning_rate,
            "optimizer": self.optimizer_setting().label, "optimizer_spec": json.dumps(dict(self.optimizer)),
            "model": self.model, "model_args": json.dumps(dict(self.model_args), default=str), "input": self.input,
            "residual": self.residual, "norm": self.norm,
            "record_every": self.record_every, "train_size": n_train, "n_params": n_params, "n_classes": n_classes,
            "n_in": (facts or {}).get("n_in"), "input_sq_norm": (facts or {}).get("input_sq_norm"),
        }


@dataclass(frozen=True)
class Unit:
    """A group's runs with one seed: what one `train_group` call trains."""

    experiment: str
    group: str
    seed: int
    runs: tuple[RunSpec, ...]
    alone: bool = False  # one run per unit (see ExperimentSpec.units)
    part: int | None = None  # the seed's runs are split into parts (see ExperimentSpec.units)

    @property
    def id(self) -> str:
        base = f"{self.experiment}/{self.group}/s{self.seed}"
        if self.alone:
            return f"{base}/{self.runs[0].run_id}"
        return base if self.part is None else f"{base}/p{self.part}"


def arch_name(network: str, depth=None, width=None, variant=None, model=None, model_args=()) -> str:
    if network == "mlp":
        return f"mlp {depth}x{width}"
    if network == "cnn":
        return f"cnn 4conv+{depth}x{width}"
    if network == "paper_cnn":
        return f"paper_cnn({variant})"
    ref = str(model).rsplit("/", 1)[-1].replace(".py:", ":").removeprefix("__main__:")
    args = ", ".join(f"{k}={v}" for k, v in model_args)
    return f"{ref}({args})" if args else ref


def init_label(spec: str, resolved: str | None = None) -> str:
    """`N(0, std=10)`; a law written with variance= keeps it: `N(0, var=10)`; a critical one
    (`resolved`: its spec with the number) says so: `orthogonal(σ_w²=1.00046, critical)`."""
    from vglab.nn.init import parse

    if CRITICAL.search(spec):
        return parse(resolved).label[:-1] + ", critical)"
    m = re.match(r"^\s*normal\s*\(\s*(?:variance|var)\s*=\s*([^)]+)\)\s*$", spec)
    return f"N(0, var={float(m.group(1)):g})" if m else parse(spec).label


def _init_slug(spec: str) -> str:
    """`normal(std=10)` -> `std10`, `normal(variance=10)` -> `var10`, `uniform(a=10)` -> `u10`,
    `orthogonal(gain=2)` -> `orth2`, `orthogonal(sigma_w2=critical)` -> `orth-crit`."""
    from vglab.nn.init import parse

    if CRITICAL.search(spec):
        return "orth-crit" if parse(CRITICAL.sub("sigma_w2=1", spec)).family == "orthogonal" else "sw-crit"
    law = parse(spec)
    if law.kind == "normal":
        m = re.match(r"^\s*normal\s*\(\s*(?:variance|var)\s*=\s*([^)]+)\)\s*$", spec)
        return f"var{float(m.group(1)):g}" if m else f"std{law.value:g}"
    if law.kind == "uniform":
        return f"u{law.value:g}"
    if law.family == "orthogonal":  # `orth2`, `orth-sw1.5`
        return f"orth{law.value:g}" if law.kind == "orthogonal" else f"orth-sw{law.value:g}"
    return law.kind.replace("_uniform", "").replace("_normal", "")


def default_bias(weight_init: str) -> str:
    from vglab.nn.init import default_bias_init, parse

    return default_bias_init(parse(weight_init)).spec


MLP_DEFAULTS = {"residual": 0.0, "norm": "none"}  # what residual, norm None resolve to


def _shaped_activation(activation, network: str, depth):
    """A TAT activation's canonical name, `tat(tanh, tau=0.3, depth=L)`: an MLP's depth fills in
    a missing L (other networks must give it: load_spec checks)."""
    from vglab.nn import shaping

    parsed = shaping.parse(activation) if activation else None
    if parsed is None:
        return activation
    base, tau, given = parsed
    return shaping.canonical(base, tau, given if given is not None else depth)


def _block_label(residual: float, norm: str) -> str:
    """`residual s=0.5 · LayerNorm`; empty for the plain MLP."""
    return " · ".join(p for p in (f"residual s={residual:g}" if residual else "",
                                  "LayerNorm" if norm == "layer" else "") if p)


def _activation_label(activation: str | None, alpha: float) -> str:
    """`tanh`, `rescaled tanh α=2`; your model's own activation (None) is not named here
    (the runs table's `activation` column says what the model uses)."""
    if activation is None:
        return "" if alpha == 1 else f"rescaled α={alpha:g}"
    return activation if alpha == 1 else f"rescaled {activation} α={alpha:g}"


def _freeze(d: dict) -> tuple:
    return tuple(sorted((k, _hashable(v)) for k, v in d.items()))


def _hashable(v):
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return _freeze(v)
    return v


# ------------------------------------------------------------------ the spec
@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    description: str
    reference: str
    dataset: str
    epochs: int
    seeds: tuple[int, ...]
    batch_size: int
    train_size: int | None
    probes: tuple[str, ...]
    arms: tuple[dict, ...]  # each: arm key -> list of values, defaults resolved
    preset: str | None = None  # the built-in preset it came from
    source: str = ""  # the file it was read from
    record_every: int = 1
    probe_every: int = 1
    schedule: dict = field(default_factory=lambda: {"name": "constant"})
    pca: float | bool | None = None
    base_dir: str | None = None  # relative paths (dataset, model files) are read from here

    @property
    def learning_rate(self) -> float | None:
        """The learning rate every run uses, or None when the experiment sweeps it."""
        rates = {c["learning_rate"] for c in self.configurations()}
        return rates.pop() if len(rates) == 1 else None

    def configurations(self) -> list[dict]:
        """The distinct configurations (arm cross products, normalized, first seen kept)."""
        from vglab.nn.init import parse

        seen, out = set(), []
        for arm in self.arms:
            for values in itertools.product(*(arm[k] for k in ARM_KEYS)):
                c = dict(zip(ARM_KEYS, values))
                if c["activation"] is None and c["network"] != "model":
                    c["activation"] = ARM_DEFAULTS["activation"]
                if c["penalty"] == "none":
                    c["r"] = 0.0
                if c["network"] == "paper_cnn":
                    c["depth"] = c["width"] = None
                    c["variant"] = c["variant"] or "parameters"
                else:
                    c["variant"] = None
                if c["network"] == "model":
                    c["depth"] = c["width"] = None
                    c["input"] = c["input"] or "features"
                else:
                    c["model"], c["model_args"] = None, {}
                    c["input"] = "features" if c["network"] == "mlp" else "images"
                for k in MLP_ONLY:
                    c[k] = MLP_DEFAULTS[k] if c[k] is None else c[k]
                c["activation"] = _shaped_activation(c["activation"], c["network"], c["depth"])
                c["init_given"] = c["init"]
                c["bias_init"] = parse(c["bias_init"]).spec if c["bias_init"] else \
                    default_bias(CRITICAL.sub("sigma_w2=1", c["init"]))
                c["init"] = parse(resolve_critical(c["init"], c["activation"], c["alpha"], c["bias_init"])).spec
                key = tuple((k, _hashable(v)) for k, v in c.items() if k != "init_given")
                if key not in seen:
                    seen.add(key)
                    out.append(c)
        return out

    def swept_optimizer_args(self) -> dict[str, set[str]]:
        """Per optimizer name, the parameters whose value differs between configurations."""
        values: dict[str, dict[str, set]] = {}
        for c in self.configurations():
            opt = dict(c["optimizer"])
            name = opt.pop("name")
            for k, v in opt.items():
                values.setdefault(name, {}).setdefault(k, set()).add(_hashable(v))
        return {name: {k for k, vs in args.items() if len(vs) > 1} for name, args in values.items()}

    def expand(self) -> list[RunSpec]:
        """Every run: configurations in arm order, each with every seed. Worked out once per
        spec (a `vglab run` asked 8 times: groups, units, to_dict, the plan, meta.json)."""
        if "_runs" not in self.__dict__:
            object.__setattr__(self, "_runs", tuple(self._expand()))
        return list(self.__dict__["_runs"])

    def _expand(self) -> list[RunSpec]:
        from vglab.nn.init import parse
        from vglab.train import optim

        configs = self.configurations()
        archs = {(c["network"], c["depth"], c["width"], c["variant"], c["model"], _freeze(c["model_args"]))
                 for c in configs}
        opts = {_freeze(c["optimizer"]) for c in configs}
        rates = {c["learning_rate"] for c in configs}
        swept = self.swept_optimizer_args()
        data_sha = None
        if _is_path(self.dataset):
            from vglab.data.own import fingerprint

            data_sha = fingerprint(self.dataset) if Path(self.dataset).is_file() else None
        runs, labels = [], {}
        for c in configs:
            # The architecture (optimizer, learning rate) is named only when the experiment has more than one.
            margs = _freeze(c["model_args"])
            parts = [arch_name(c["network"], c["depth"], c["width"], c["variant"], c["model"], margs)] \
                if len(archs) > 1 else []
            parts += [p for p in (_block_label(c["residual"], c["norm"]), _activation_label(c["activation"], c["alpha"]),
                                  init_label(c["init_given"], c["init"])) if p]
            if c["bias_init"] != default_bias(c["init"]):
                parts.append("bias " + parse(c["bias_init"]).label)
            if c["penalty"] != "none":
                parts.append(f"{c['penalty'].upper()} r={c['r']:g}")
            opt = dict(c["optimizer"])
            name = opt["name"]
            traced = tuple(sorted(k for k in swept.get(name, ()) if optim.traceable(name, k)))
            if len(opts) > 1:
                args = {k: v for k, v in opt.items() if k != "name" and v != optim.parameters(name).get(k)}
                parts.append(name + (f"({', '.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}' for k, v in sorted(args.items()))})"
                                     if args else ""))
            if len(rates) > 1:
                parts.append(f"lr={c['learning_rate']:g}")
            label = " · ".join(parts)
            if labels.setdefault(label, c) is not c:
                raise SpecError(f"two configurations of {self.name} read the same, {label!r}; values that differ "
                                "only beyond 6 significant digits cannot be told apart in tables and figures")
            for seed in self.seeds:
                runs.append(RunSpec(
                    experiment=self.name, label=label, dataset=self.dataset, network=c["network"],
                    depth=c["depth"], width=c["width"], variant=c["variant"], activation=c["activation"],
                    alpha=float(c["alpha"]), weight_init=c["init"], bias_init=c["bias_init"], penalty=c["penalty"],
                    r=float(c["r"]), seed=seed, epochs=self.epochs, batch_size=self.batch_size,
                    learning_rate=float(c["learning_rate"]), train_size=self.train_size, probes=self.probes,
                    optimizer=_freeze(opt), schedule=_freeze(self.schedule), record_every=self.record_every,
                    probe_every=self.probe_every, model=c["model"], model_args=margs, input=c["input"],
                    pca=self.pca, data_sha=data_sha, residual=float(c["residual"]), norm=c["norm"],
                    traced=traced, init_given=c["init_given"],
                    base_dir=self.base_dir))
        return runs

    def groups(self) -> dict[str, list[RunSpec]]:
        """Runs by group name (in order of first appearance)."""
        out: dict[str, list[RunSpec]] = {}
        keys: dict[str, tuple] = {}
        for run in self.expand():
            if keys.setdefault(run.group, run.group_key) != run.group_key:
                raise SpecError(f"two groups of {self.name} would share the name {run.group!r}; "
                                "give the configurations distinct model or optimizer settings")
            out.setdefault(run.group, []).append(run)
        return out

    def units(self, one_run_inputs: tuple[str, ...] = (), max_runs: int | None = None) -> list[Unit]:
        """Every group's runs split by seed, and in parts of at most `max_runs`; runs of models
        taking an input in `one_run_inputs` get a unit each. (The runner uses both on CPU: a
        vmapped convolution over members is a grouped convolution, about twice as slow as
        one member at a time; MLP units of at most 8 runs all share one 8-member program.)"""
        units = []
        for group, runs in self.groups().items():
            for seed in self.seeds:
                mine = tuple(r for r in runs if r.seed == seed)
                if mine and mine[0].input in one_run_inputs:
                    units += [Unit(self.name, group, seed, (r,), alone=True) for r in mine]
                elif max_runs is not None and len(mine) > max_runs:
                    units += [Unit(self.name, group, seed, mine[i:i + max_runs], part=i // max_runs)
                              for i in range(0, len(mine), max_runs)]
                elif mine:
                    units.append(Unit(self.name, group, seed, mine))
        return units

    def to_dict(self) -> dict:
        """The resolved spec (experiment.toml); TOML has no null, so None values are left out."""
        d = {"name": self.name, "preset": self.preset, "description": self.description,
             "reference": self.reference, "source": self.source, "dataset": self.dataset,
             "epochs": self.epochs, "seeds": list(self.seeds), "batch_size": self.batch_size,
             "learning_rate": self.learning_rate, "train_size": self.train_size, "probes": list(self.probes),
             "record_every": self.record_every, "probe_every": self.probe_every, "schedule": dict(self.schedule),
             "pca": self.pca, "arms": [_arm_dict(arm) for arm in self.arms]}
        runs = self.expand()
        d.update(n_runs=len(runs), n_groups=len(self.groups()),
                 fingerprint=hashlib.sha1("\n".join(sorted(r.run_id for r in runs)).encode()).hexdigest()[:12])
        return _drop_none(d)

    def to_spec_file(self) -> dict:
        """This experiment as a spec file (what `vglab show --toml` prints): loading it back
        gives the same runs."""
        d = {"name": self.name, "description": self.description, "reference": self.reference,
             "dataset": self.dataset, "epochs": self.epochs, "seeds": list(self.seeds),
             "batch_size": self.batch_size, "train_size": self.train_size, "probes": list(self.probes),
             "record_every": self.record_every, "probe_every": self.probe_every, "schedule": dict(self.schedule),
             "pca": self.pca, "arms": [_arm_dict(arm) for arm in self.arms]}
        from vglab.train.probes import TIERS

        tier = [t for t, names in TIERS.items() if set(names) == set(self.probes)]
        if tier:
            d["probes"] = tier[-1]
        return _drop_none(d)


def _arm_dict(arm: dict) -> dict:
    """An arm's resolved values as a spec file writes them: the keys that apply to its networks."""
    networks = set(arm["network"])
    skip = set()
    if not networks & {"mlp", "cnn"}:
        skip |= {"depth", "width"}
    if "model" not in networks:
        skip |= {"model", "model_args", "input"}
    out = {}
    for k, v in arm.items():
        if k in skip or v == [None] or (k == "model_args" and v == [{}]):
            continue
        out[k] = v[0] if len(v) == 1 else v
    return out


def _drop_none(d):
    if isinstance(d, dict):
        return {k: _drop_none(v) for k, v in d.items() if v is not None}
    if isinstance(d, list):
        return [_drop_none(v) for v in d]
    return d


def _is_path(dataset: str) -> bool:
    from vglab.data.own import is_path

    return is_path(dataset)


# ------------------------------------------------------------------ loading
def presets_dir() -> Path:
    return Path(str(resources.files("vglab.experiments") / "presets"))


def preset_names() -> list[str]:
    names = sorted(p.stem for p in presets_dir().glob("*.toml"))
    return [n for n in REPRODUCE if n in names] + [n for n in names if n not in REPRODUCE]


def list_presets() -> list[dict]:
    """name, description, reference of every built-in preset."""
    out = []
    for name in preset_names():
        data = tomllib.loads((presets_dir() / f"{name}.toml").read_text())
        out.append({"name": name, "description": data.get("description", ""), "reference": data.get("reference", "")})
    return out


def _where(loc: tuple) -> str:
    s = ""
    for part in loc:
        s += f"[{part}]" if isinstance(part, int) else (f".{part}" if s else str(part))
    return s


def _one_line(e: ValidationError, source: str) -> str:
    """The first validation error as one line that names the key and says what to write."""
    errors = [err for err in e.errors() if not _is_union_noise(err)] or e.errors()
    err = errors[0]
    loc = tuple(p for p in err["loc"] if not _is_type_tag(p))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if err["type"] == "extra_forbidden":
        key, where = loc[-1], _where(loc[:-1])
        if where.startswith("datasets."):
            allowed = SETTINGS[1:]
        elif where.startswith("arms"):
            allowed = ARM_KEYS
        else:
            allowed = ("name", "description", "reference") + SETTINGS + ARM_KEYS + ("arms", "datasets")
        place = f" in {where}" if where else ""
        return f"{source}: unknown key {key!r}{place}; allowed keys: {', '.join(allowed)}{more}"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] not in ("value_error",) and "input" in err:
        msg += f", got {err['input']!r}"
    return f"{source}: {_where(loc)}: {msg}{more}"


def _is_type_tag(part) -> bool:
    """pydantic's location entries that name a union member (`list[str]`, `str`), not a key."""
    return isinstance(part, str) and (part in ("str", "int", "float", "bool", "dict[str,any]", "function-after")
                                      or "[" in part)


def _is_union_noise(err) -> bool:
    return err["type"] in ("string_type", "int_type", "float_type", "list_type", "dict_type", "bool_type",
                           "int_from_float", "int_parsing", "float_parsing") and err.get("ctx") is None \
        and any(_is_type_tag(p) for p in err["loc"])


def _read(name_or_path) -> tuple[dict, str, str | None, str, str | None]:
    """(toml data, source, preset name or None, default experiment name, base dir)."""
    path = Path(str(name_or_path))
    preset = presets_dir() / f"{name_or_path}.toml"
    if not str(name_or_path).endswith(".toml") and "/" not in str(name_or_path) and preset.exists():
        path, name, is_preset = preset, str(name_or_path), True
    elif path.is_file():
        name, is_preset = path.stem, False
    else:
        raise SpecError(f"no preset or spec file named {str(name_or_path)!r}; presets: {', '.join(preset_names())} "
                        "(or give the path of a .toml file)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: invalid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at position {e.start}); "
                        "save the spec as UTF-8") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read it ({e.strerror or e}); check that it is a readable file") from None
    base = None if is_preset else str(path.resolve().parent)
    return data, str(path), name if is_preset else None, name, base


def parse_set(assignment: str) -> tuple[list, Any]:
    """`key.sub=value` (the CLI's --set) -> (path, value); the value is read as TOML
    (numbers, booleans, strings, lists, inline tables), else taken as a string; path parts
    that are integers index a list (`arms.0.alpha=[1, 2]`)."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(f"--set {assignment!r}: write key=value, e.g. --set epochs=3 or --set optimizer.eps=1e-10")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return [int(p) if p.isdigit() else p for p in key.split(".")], value


def _apply_sets(data: dict, sets) -> dict:
    data = copy.deepcopy(data)
    for assignment in sets or ():
        path, value = parse_set(assignment) if isinstance(assignment, str) else assignment
        node = data
        for i, part in enumerate(path[:-1]):
            nxt = path[i + 1]
            if isinstance(part, int):
                if not isinstance(node, list) or part >= len(node):
                    raise SpecError(f"--set {'.'.join(map(str, path))}: there is no element {part} "
                                    f"(the spec has {len(node) if isinstance(node, list) else 0})")
                node = node[part]
            else:
                if isinstance(node.get(part), str) and not isinstance(nxt, int):
                    node[part] = {"name": node[part]}  # optimizer = "sgd", then --set optimizer.momentum=0.9
                elif part not in node or not isinstance(node[part], (dict, list)):
                    node[part] = [] if isinstance(nxt, int) else {}
                node = node[part]
        last = path[-1]
        if isinstance(last, int):
            if not isinstance(node, list) or last >= len(node):
                raise SpecError(f"--set {'.'.join(map(str, path))}: there is no element {last}")
        node[last] = value
    return data


def _set_source(e: ValidationError, sets) -> str | None:
    """`--set KEY` when the first error is at a key an assignment of `sets` wrote (a typo on the
    command line is not the spec file's)."""
    err = ([x for x in e.errors() if not _is_union_noise(x)] or e.errors())[0]
    loc = [p for p in err["loc"] if not _is_type_tag(p)]
    for assignment in sets or ():
        path = parse_set(assignment)[0] if isinstance(assignment, str) else list(assignment[0])
        n = min(len(path), len(loc))
        if n and [str(p) for p in path[:n]] == [str(p) for p in loc[:n]]:
            return f"--set {'.'.join(map(str, path))}"
    return None


def _scale_records(settings: dict, cli) -> None:
    """An --epochs override keeps the spec's number of records: its record_every scales with
    the epochs (a digits preset's 700 epochs recorded every 35 become --epochs 70 recorded
    every 4, and --epochs 3 every epoch), unless the command line sets record_every too."""
    if cli.epochs is not None and cli.record_every is None and settings["record_every"] > 1:
        settings["record_every"] = max(1, round(settings["record_every"] * cli.epochs / settings["epochs"]))


def load_spec(name_or_path, sets=None, *, allow_large: bool = False, **overrides) -> ExperimentSpec:
    """Read a built-in preset (by name), a spec file or a spec dict, apply `sets` (a list of
    "key=value" assignments to any field, the CLI's --set) and `overrides` of the run
    settings (dataset, epochs, seeds, batch_size, train_size, probes, record_every,
    probe_every, schedule, pca; None means keep), and validate everything (sizes against
    `LIMITS` unless `allow_large`)."""
    if isinstance(name_or_path, dict):
        data, source, preset, default_name, base = dict(name_or_path), "spec", None, None, os.getcwd()
    else:
        data, source, preset, default_name, base = _read(name_or_path)
    data = _apply_sets(data, sets)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - set(SETTINGS)
    if unknown:
        raise SpecError(f"cannot override {sorted(unknown)}; overridable: {', '.join(SETTINGS)} "
                        "(set any other key with --set key=value)")
    context = {"allow_large": allow_large}
    try:
        spec = _SpecFile.model_validate(data, context=context)
    except ValidationError as e:
        raise SpecError(_one_line(e, _set_source(e, sets) or source)) from None
    name = spec.name or default_name
    if name is None:
        raise SpecError(f"{source}: a spec given as a dict needs a name (name = 'my-experiment')")
    try:
        check_name(name)
    except ValueError as e:
        fix = "" if spec.name else f"; the name comes from the file's name: rename the file or set name = in it"
        raise SpecError(f"{source}: {e}{fix}") from None
    try:
        cli = _Settings.model_validate(overrides, context=context)
    except ValidationError as e:
        err = e.errors()[0]
        option = "--" + str(err["loc"][0]).replace("_", "-")
        raise SpecError(f"{option}: {err['msg'].removeprefix('Value error, ')}") from None
    dataset = cli.dataset or spec.dataset or SETTING_DEFAULTS["dataset"]
    settings = dict(SETTING_DEFAULTS)
    for layer in (spec, (spec.datasets or {}).get(dataset), cli):
        if layer is not None:
            if layer is cli:
                _scale_records(settings, cli)
            settings.update({k: getattr(layer, k) for k in SETTINGS if getattr(layer, k) is not None})
    if _is_path(dataset):
        path = Path(dataset).expanduser()
        if not path.is_absolute():
            path = Path(base or os.getcwd()) / path
        if not path.is_file():
            raise SpecError(f"{source}: dataset file {path} not found; give the path of an .npz holding x_train, "
                            "y_train, x_test, y_test (relative paths are read from the spec file's folder)")
        from vglab.data.own import load_npz

        load_npz(path)  # its arrays are checked now, before anything is written
        dataset = str(path.resolve())
    settings["dataset"] = dataset
    from vglab.train import probes

    settings["probes"] = list(probes.resolve(tuple(settings["probes"])))
    if settings["record_every"] > settings["epochs"]:
        raise SpecError(f"{source}: record_every = {settings['record_every']} is more than epochs = "
                        f"{settings['epochs']}; records would only be made at the start and the end. "
                        "Lower record_every or raise epochs")

    top = spec.given()
    arms = []
    for i, arm in enumerate(spec.arms or [_Arm()]):
        mine = arm.given()
        resolved = {k: [v] if not isinstance(v, list) else v for k, v in ARM_DEFAULTS.items()}
        resolved["optimizer"] = [_check_optimizer(ARM_DEFAULTS["optimizer"])]
        resolved.update(top)
        resolved.update(mine)
        where = f"arms[{i}]" if spec.arms else "top level"
        if "model" in mine or ("model" in top and "network" not in mine):
            if "network" not in mine and "network" not in top:
                resolved["network"] = ["model"]
        networks = set(resolved["network"])
        if "model" in networks and "activation" not in mine and "activation" not in top:
            resolved["activation"] = [None]  # your model's own; the built-in networks' default is filled in later
        if "model" in networks and resolved["model"] == [None]:
            raise SpecError(f"{source}: {where}: network = 'model' needs model = 'package.module:factory' "
                            "(or 'path/to/file.py:factory')")
        if "variant" in mine and "paper_cnn" not in networks:
            raise SpecError(f"{source}: {where}.variant applies to network = 'paper_cnn' only")
        for k in ("depth", "width"):
            if k in mine and networks == {"paper_cnn"}:
                raise SpecError(f"{source}: {where}.{k} does not apply to paper_cnn (its variant fixes the layers); "
                                "drop it or use network = 'cnn'")
            if k in mine and networks == {"model"}:
                raise SpecError(f"{source}: {where}.{k} does not apply to your own model; pass it to the factory "
                                f"in model_args = {{{k} = ...}}")
        if networks != {"mlp"}:
            from vglab.nn import shaping

            for act in resolved["activation"]:
                if act and shaping.parse(act) is not None and shaping.parse(act)[2] is None:
                    raise SpecError(f"{source}: {where}: activation {act!r} takes the MLP's depth; for "
                                    f"{sorted(networks)} give the number of nonlinear layers, e.g. "
                                    f"{shaping.canonical(shaping.parse(act)[0], shaping.parse(act)[1], 20)!r}")
        for k in MLP_ONLY:
            if k in mine and networks != {"mlp"}:
                raise SpecError(f"{source}: {where}.{k} applies to network = 'mlp' only (the built-in MLP), and "
                                f"this arm has {sorted(networks)}; drop it or set network = 'mlp'")
        if ("model_args" in mine or "input" in mine) and "model" not in networks:
            raise SpecError(f"{source}: {where}: model_args and input apply to network = 'model' only")
        arms.append(resolved)
    for k in MLP_ONLY:
        if k in top and any(arm["network"] != ["mlp"] and k not in (spec.arms or [_Arm()])[i].given()
                            for i, arm in enumerate(arms)):
            raise SpecError(f"{source}: {k} applies to network = 'mlp' only (the built-in MLP), and an arm uses "
                            "another network; set it in the MLP arms instead")
    if "variant" in top and not any("paper_cnn" in arm["network"] for arm in arms):
        raise SpecError(f"{source}: variant applies to network = 'paper_cnn' only, and no arm uses it")
    _check_runs(arms, len(settings["seeds"]), allow_large, f"{source}: ")
    return ExperimentSpec(
        name=name, description=spec.description, reference=spec.reference,
        dataset=dataset, epochs=settings["epochs"], seeds=tuple(settings["seeds"]),
        batch_size=settings["batch_size"], train_size=settings["train_size"], probes=tuple(settings["probes"]),
        arms=tuple(arms), preset=preset, source=source, record_every=settings["record_every"],
        probe_every=settings["probe_every"], schedule=dict(settings["schedule"]), pca=settings["pca"],
        base_dir=base)
