"""Experiment specs: a TOML file (or built-in preset) -> a validated `ExperimentSpec` ->
runs -> groups -> units.

A spec file::

    description = "one line"         # what it is, and which figure of the reference it reproduces
    reference = "Figure 1"
    dataset = "digits"               # run settings: shared by every run of the experiment
    epochs = 20
    seeds = 3                        # 3 means [0, 1, 2]; or a list
    batch_size = 32
    learning_rate = 0.001
    # train_size = 1000              # a fixed stratified subset of the training split
    # probes = "all"                 # or a list of names (vglab.train.probes)

    network = "mlp"                  # arm defaults: any arm key set here applies to every arm
    depth = 1
    width = 8
    activation = "tanh"

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

Arm keys: network (mlp|cnn|paper_cnn), depth, width, variant (paper_cnn only), activation,
init, bias_init (default: the weights' law, zeros for fan-scaled laws), penalty
(none|l1|l2), r, alpha. Precedence: built-in defaults < top-level keys < the arm; run
settings: top level < [datasets.<name>] < overrides (the CLI's --epochs, ...).

A *run* is one configuration with one seed. Runs that differ only in seed, init scale,
alpha and L1/L2 strength share a *group* (`vglab.train.loop.group_key`): one network,
one activation, one pair of init families. A *unit* is a group's runs with one seed (or,
for CNNs on CPU, a single run); it is what one `train_group` call trains. Units, not groups, are the unit of work because
XLA's numbers depend (at float32 rounding) on the shape of the vectorized program: a
unit's composition depends on the spec alone, so a run's numbers do not depend on the
worker count, the executor, or on which runs an interrupted sweep had finished.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

SETTINGS = ("dataset", "epochs", "seeds", "batch_size", "learning_rate", "train_size", "probes")
ARM_KEYS = ("network", "depth", "width", "variant", "activation", "init", "bias_init", "penalty", "r", "alpha")
ARM_DEFAULTS = {"network": "mlp", "depth": 1, "width": 8, "variant": None, "activation": "tanh",
                "init": "normal(std=1)", "bias_init": None, "penalty": "none", "r": 0.01, "alpha": 1.0}
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
    from vglab.nn.networks import NETWORKS

    return _choice(v, NETWORKS, "network")


def _check_variant(v):
    from vglab.nn.networks import CNN_VARIANTS

    return _choice(v, CNN_VARIANTS, "paper_cnn variant")


def _check_activation(v):
    from vglab.nn import activations

    activations.get(v)  # raises with the valid names
    return v


def _check_init(v):
    from vglab.nn.init import parse

    parse(v)  # raises with the accepted forms
    return str(v).strip()


def _check_penalty(v):
    from vglab.nn.penalties import PENALTIES

    return _choice(v, PENALTIES, "penalty")


def _check_dataset(v):
    from vglab.data import DATASETS

    return _choice(v, tuple(DATASETS), "dataset")


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


ARM_CHECKS = {
    "network": _check_network, "depth": _check_positive_int("depth"), "width": _check_positive_int("width"),
    "variant": _check_variant, "activation": _check_activation, "init": _check_init, "bias_init": _check_init,
    "penalty": _check_penalty, "r": _check_r, "alpha": _check_alpha,
}


# ------------------------------------------------------------------ the file's schema
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class _Arm(_Strict):
    """Arm keys: each a value or a list of values (the arm is their cross product)."""

    network: Any = None
    depth: Any = None
    width: Any = None
    variant: Any = None
    activation: Any = None
    init: Any = None
    bias_init: Any = None
    penalty: Any = None
    r: Any = None
    alpha: Any = None

    @field_validator(*ARM_KEYS, mode="before")
    @classmethod
    def _values(cls, v, info):
        if v is None:
            return None
        allow_large = bool((info.context or {}).get("allow_large"))
        vals = _numbers(v, allow_large) if info.field_name in ("r", "alpha") else _listed(v)
        if not vals:
            raise ValueError("an empty list gives no runs; give at least one value")
        vals = [ARM_CHECKS[info.field_name](x) for x in vals]
        if info.field_name in ("depth", "width"):
            for x in vals:
                check_limit(info.field_name, x, allow_large)
        return vals

    def given(self) -> dict:
        """The arm keys set explicitly."""
        return {k: getattr(self, k) for k in ARM_KEYS if k in self.model_fields_set and getattr(self, k) is not None}


class _Settings(_Strict):
    dataset: Any = None
    epochs: Any = None
    seeds: Any = None
    batch_size: Any = None
    learning_rate: Any = None
    train_size: Any = None
    probes: Any = None

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v):
        return None if v is None else _check_dataset(v)

    @field_validator("epochs", "batch_size", "train_size")
    @classmethod
    def _ints(cls, v, info):
        return None if v is None else _check_positive_int(info.field_name)(v)

    @field_validator("learning_rate")
    @classmethod
    def _lr(cls, v):
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            raise ValueError(f"learning_rate must be a number > 0, got {v!r}")
        return float(v)

    @field_validator("seeds")
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

    @field_validator("probes")
    @classmethod
    def _probes(cls, v):
        if v is None:
            return None
        from vglab.train import probes

        names = list(probes.ALL) if v == "all" or v == ["all"] else _listed(v)
        probes.select(tuple(names))  # raises with the valid names
        return names


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


# ------------------------------------------------------------------ runs
@dataclass(frozen=True)
class RunSpec:
    """One run: one configuration with one seed, every value resolved."""

    experiment: str
    label: str  # the configuration without the seed, for people (not part of the run id)
    dataset: str
    network: str
    depth: int | None  # None for paper_cnn (its variant fixes the layers)
    width: int | None
    variant: str | None  # paper_cnn only
    activation: str
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
    init_given: str = field(default="", compare=False)  # as written (for the label's convention)

    def config_dict(self) -> dict:
        """Everything that determines the run's numbers (what the run id hashes)."""
        d = asdict(self)
        for k in ("experiment", "label", "init_given"):
            d.pop(k)
        d["probes"] = list(self.probes)
        return d

    @property
    def run_id(self) -> str:
        """Readable and deterministic: `<slug>-s<seed>-<hash of the full config>`."""
        digest = hashlib.sha1(json.dumps(self.config_dict(), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self._slug()}-s{self.seed}-{digest}"

    def _slug(self) -> str:
        from vglab.nn.init import parse

        parts = [arch_name(self.network, self.depth, self.width, self.variant), self.activation]
        if self.alpha != 1:
            parts.append(f"a{self.alpha:g}")
        parts.append(_init_slug(self.init_given or self.weight_init))
        if self.bias_init != default_bias(self.weight_init):
            parts.append("bias-" + _init_slug(self.bias_init))
        if self.penalty != "none":
            parts.append(f"{self.penalty}-r{self.r:g}")
        text = " ".join(parts).lower().replace("e+", "e")  # 1e+12 -> 1e12: not 1e-12 (both gave 1e-12)
        return re.sub(r"-+", "-", re.sub(r"[^a-z0-9.]+", "-", text)).strip("-")

    @property
    def group_key(self) -> tuple:
        """Runs with equal keys share one vectorized program (see vglab.train.loop.group_key)."""
        from vglab.nn.init import parse

        return (self.network, self.depth, self.width, self.variant, self.activation,
                parse(self.weight_init).kind, parse(self.bias_init).kind)

    @property
    def group(self) -> str:
        """The group's readable name, e.g. `mlp-20x8-tanh-normal`."""
        net, depth, width, variant, act, w_kind, b_kind = self.group_key
        name = f"{arch_name(net, depth, width, variant)}-{act}-{w_kind}"
        from vglab.nn.init import parse

        if b_kind != parse(default_bias(self.weight_init)).kind:
            name += f"-bias-{b_kind}"
        return re.sub(r"[^a-z0-9.]+", "-", name.lower())

    def member(self):
        """The `vglab.train.Member` that trains this run."""
        from vglab.nn.init import parse
        from vglab.nn.penalties import strengths
        from vglab.train import Member

        l1, l2 = strengths(self.penalty, self.r)
        return Member(seed=self.seed, weight_init=parse(self.weight_init), bias_init=parse(self.bias_init),
                      alpha=self.alpha, l1=l1, l2=l2)

    def row(self, n_params: int, n_train: int) -> dict:
        """The run's row of the `runs` table (DESIGN.md), without run_id and diverged_epoch
        (added by `results.store.write_run`)."""
        from vglab.nn.init import parse

        law, bias = parse(self.weight_init), parse(self.bias_init)
        return {
            "experiment": self.experiment, "label": self.label, "group": self.group, "dataset": self.dataset,
            "network": self.network, "depth": self.depth, "width": self.width, "variant": self.variant,
            "activation": self.activation, "alpha": self.alpha,
            "weight_init": init_label(self.init_given or self.weight_init), "weight_init_spec": law.spec,
            "weight_init_kind": law.kind, "init_scale": float("nan") if law.fan_scaled else float(law.value),
            "bias_init": bias.label, "penalty": self.penalty, "r": self.r, "seed": self.seed,
            "epochs": self.epochs, "batch_size": self.batch_size, "learning_rate": self.learning_rate,
            "train_size": n_train, "n_params": n_params,
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


def arch_name(network: str, depth, width, variant) -> str:
    if network == "mlp":
        return f"mlp {depth}x{width}"
    if network == "cnn":
        return f"cnn 4conv+{depth}x{width}"
    return f"paper_cnn({variant})"


def init_label(spec: str) -> str:
    """`N(0, std=10)`; a law written with variance= keeps it: `N(0, var=10)`."""
    from vglab.nn.init import parse

    m = re.match(r"^\s*normal\s*\(\s*(?:variance|var)\s*=\s*([^)]+)\)\s*$", spec)
    return f"N(0, var={float(m.group(1)):g})" if m else parse(spec).label


def _init_slug(spec: str) -> str:
    """`normal(std=10)` -> `std10`, `normal(variance=10)` -> `var10`, `uniform(a=10)` -> `u10`."""
    from vglab.nn.init import parse

    law = parse(spec)
    if law.kind == "normal":
        m = re.match(r"^\s*normal\s*\(\s*(?:variance|var)\s*=\s*([^)]+)\)\s*$", spec)
        return f"var{float(m.group(1)):g}" if m else f"std{law.value:g}"
    if law.kind == "uniform":
        return f"u{law.value:g}"
    return law.kind.replace("_uniform", "").replace("_normal", "")


def default_bias(weight_init: str) -> str:
    from vglab.nn.init import parse
    from vglab.train.loop import default_bias_init

    return default_bias_init(parse(weight_init)).spec


def _activation_label(activation: str, alpha: float) -> str:
    return activation if alpha == 1 else f"rescaled {activation} α={alpha:g}"


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
    learning_rate: float
    train_size: int | None
    probes: tuple[str, ...]
    arms: tuple[dict, ...]  # each: arm key -> list of values, defaults resolved
    preset: str | None = None  # the built-in preset it came from
    source: str = ""  # the file it was read from

    def configurations(self) -> list[dict]:
        """The distinct configurations (arm cross products, normalized, first seen kept)."""
        from vglab.nn.init import parse

        seen, out = set(), []
        for arm in self.arms:
            for values in itertools.product(*(arm[k] for k in ARM_KEYS)):
                c = dict(zip(ARM_KEYS, values))
                if c["penalty"] == "none":
                    c["r"] = 0.0
                if c["network"] == "paper_cnn":
                    c["depth"] = c["width"] = None
                    c["variant"] = c["variant"] or "parameters"
                else:
                    c["variant"] = None
                c["init_given"] = c["init"]
                c["init"] = parse(c["init"]).spec
                c["bias_init"] = parse(c["bias_init"]).spec if c["bias_init"] else default_bias(c["init"])
                key = tuple((k, v) for k, v in c.items() if k != "init_given")
                if key not in seen:
                    seen.add(key)
                    out.append(c)
        return out

    def expand(self) -> list[RunSpec]:
        """Every run: configurations in arm order, each with every seed."""
        from vglab.nn.init import parse

        configs = self.configurations()
        archs = {(c["network"], c["depth"], c["width"], c["variant"]) for c in configs}
        runs, labels = [], {}
        for c in configs:
            # The architecture is named only when the experiment has more than one.
            parts = [arch_name(c["network"], c["depth"], c["width"], c["variant"])] if len(archs) > 1 else []
            parts += [_activation_label(c["activation"], c["alpha"]), init_label(c["init_given"])]
            if c["bias_init"] != default_bias(c["init"]):
                parts.append("bias " + parse(c["bias_init"]).label)
            if c["penalty"] != "none":
                parts.append(f"{c['penalty'].upper()} r={c['r']:g}")
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
                    learning_rate=self.learning_rate, train_size=self.train_size, probes=self.probes,
                    init_given=c["init_given"]))
        return runs

    def groups(self) -> dict[str, list[RunSpec]]:
        """Runs by group name (in order of first appearance)."""
        out: dict[str, list[RunSpec]] = {}
        for run in self.expand():
            out.setdefault(run.group, []).append(run)
        return out

    def units(self, one_run_networks: tuple[str, ...] = (), max_runs: int | None = None) -> list[Unit]:
        """Every group's runs split by seed, and in parts of at most `max_runs`; runs of the
        networks in `one_run_networks` get a unit each. (The runner uses both on CPU: a
        vmapped convolution over members is a grouped convolution, about twice as slow as
        one member at a time; MLP units of at most 8 runs all share one 8-member program.)"""
        units = []
        for group, runs in self.groups().items():
            for seed in self.seeds:
                mine = tuple(r for r in runs if r.seed == seed)
                if mine and mine[0].network in one_run_networks:
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
             "arms": [{k: v for k, v in arm.items() if v != [None]} for arm in self.arms]}
        runs = self.expand()
        d.update(n_runs=len(runs), n_groups=len(self.groups()),
                 fingerprint=hashlib.sha1("\n".join(sorted(r.run_id for r in runs)).encode()).hexdigest()[:12])
        return {k: v for k, v in d.items() if v is not None}


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
    err = e.errors()[0]
    loc = tuple(err["loc"])
    more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
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


def _read(name_or_path) -> tuple[dict, str, str | None, str]:
    """(toml data, source, preset name or None, default experiment name)."""
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
    return data, str(path), name if is_preset else None, name


def load_spec(name_or_path, *, allow_large: bool = False, **overrides) -> ExperimentSpec:
    """Read a built-in preset (by name) or a spec file, apply `overrides` of the run
    settings (dataset, epochs, seeds, batch_size, learning_rate, train_size, probes; None
    means keep) and validate everything (sizes against `LIMITS` unless `allow_large`)."""
    data, source, preset, default_name = _read(name_or_path)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - set(SETTINGS)
    if unknown:
        raise SpecError(f"cannot override {sorted(unknown)}; overridable: {', '.join(SETTINGS)}")
    context = {"allow_large": allow_large}
    try:
        spec = _SpecFile.model_validate(data, context=context)
    except ValidationError as e:
        raise SpecError(_one_line(e, source)) from None
    try:
        check_name(spec.name or default_name)
    except ValueError as e:
        fix = "" if spec.name else f"; the name comes from the file's name: rename the file or set name = in it"
        raise SpecError(f"{source}: {e}{fix}") from None
    try:
        cli = _Settings.model_validate(overrides, context=context)
    except ValidationError as e:
        err = e.errors()[0]
        option = "--" + str(err["loc"][0]).replace("_", "-")
        raise SpecError(f"{option}: {err['msg'].removeprefix('Value error, ')}") from None
    dataset = cli.dataset or spec.dataset or "digits"
    settings = {"dataset": "digits", "epochs": 15, "seeds": [0, 1, 2], "batch_size": 32, "learning_rate": 1e-3,
                "train_size": None, "probes": None}
    for layer in (spec, (spec.datasets or {}).get(dataset), cli):
        if layer is not None:
            settings.update({k: getattr(layer, k) for k in SETTINGS if getattr(layer, k) is not None})
    settings["dataset"] = dataset
    if settings["probes"] is None:
        from vglab.train import probes

        settings["probes"] = list(probes.ALL)

    top = spec.given()
    arms = []
    for i, arm in enumerate(spec.arms or [_Arm()]):
        mine = arm.given()
        resolved = {k: [v] if not isinstance(v, list) else v for k, v in ARM_DEFAULTS.items()}
        resolved.update(top)
        resolved.update(mine)
        where = f"arms[{i}]" if spec.arms else "top level"
        networks = set(resolved["network"])
        if "variant" in mine and "paper_cnn" not in networks:
            raise SpecError(f"{source}: {where}.variant applies to network = 'paper_cnn' only")
        for k in ("depth", "width"):
            if k in mine and networks == {"paper_cnn"}:
                raise SpecError(f"{source}: {where}.{k} does not apply to paper_cnn (its variant fixes the layers); "
                                "drop it or use network = 'cnn'")
        arms.append(resolved)
    if "variant" in top and not any("paper_cnn" in arm["network"] for arm in arms):
        raise SpecError(f"{source}: variant applies to network = 'paper_cnn' only, and no arm uses it")
    _check_runs(arms, len(settings["seeds"]), allow_large, f"{source}: ")
    return ExperimentSpec(
        name=spec.name or default_name, description=spec.description, reference=spec.reference,
        dataset=dataset, epochs=settings["epochs"], seeds=tuple(settings["seeds"]),
        batch_size=settings["batch_size"], learning_rate=settings["learning_rate"],
        train_size=settings["train_size"], probes=tuple(settings["probes"]), arms=tuple(arms),
        preset=preset, source=source)
