"""A validated spec and its expansion: `ExperimentSpec` -> configurations -> runs -> groups
-> units.

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

import hashlib
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

from vglab.data.own import fingerprint, is_path
from vglab.experiments.identity import config_label, default_bias, freeze, hashable
from vglab.experiments.runs import RunSpec, Unit
from vglab.experiments.errors import SpecError
from vglab.experiments.schema import (ARM_DEFAULTS, ARM_KEYS, CRITICAL, MLP_DEFAULTS, MLP_ONLY, SETTINGS,
                                      without_id_defaults)
from vglab.nn import meanfield, shaping
from vglab.nn.init import parse as parse_init
from vglab.nn.networks import DEFAULT_VARIANT
from vglab.train import optim
from vglab.train.probes import TIERS


def resolve_critical(init: str, activation: str | None, alpha: float, bias_init: str) -> str:
    """`normal(sigma_w2=critical)` / `orthogonal(sigma_w2=critical)` with the σ_w² on the
    order-to-chaos line χ_1 = 1 (`vglab.nn.meanfield.critical_sigma_w2`) for this activation, α
    and the biases' variance σ_b²; other laws unchanged. Rounded to 6 digits (labels show it)."""
    if not CRITICAL.search(init):
        return init
    where = f"init = {init!r}"
    sigma_b2 = parse_init(bias_init).variance()
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


def shaped_activation(activation, network: str, depth):
    """A TAT activation's canonical name, `tat(tanh, tau=0.3, depth=L)`: an MLP's depth fills in
    a missing L (other networks must give it: load_spec checks)."""
    parsed = shaping.parse(activation) if activation else None
    if parsed is None:
        return activation
    base, tau, given = parsed
    return shaping.canonical(base, tau, given if given is not None else depth)


def _resolve(c: dict) -> dict:
    """One combination of an arm's values with every value resolved (the keys that do not
    apply to its network emptied, defaults filled in, a critical init solved)."""
    if c["activation"] is None and c["network"] != "model":
        c["activation"] = ARM_DEFAULTS["activation"]
    if c["penalty"] == "none":
        c["r"] = 0.0
    if c["network"] == "paper_cnn":
        c["depth"] = c["width"] = None
        c["variant"] = c["variant"] or DEFAULT_VARIANT
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
    c["activation"] = shaped_activation(c["activation"], c["network"], c["depth"])
    c["init_given"] = c["init"]
    c["bias_init"] = parse_init(c["bias_init"]).spec if c["bias_init"] else \
        default_bias(CRITICAL.sub("sigma_w2=1", c["init"]))
    c["init"] = parse_init(resolve_critical(c["init"], c["activation"], c["alpha"], c["bias_init"])).spec
    return c


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
    label_smoothing: float = 0.0

    @property
    def learning_rate(self) -> float | None:
        """The learning rate every run uses, or None when the experiment sweeps it."""
        rates = {c["learning_rate"] for c in self.configurations()}
        return rates.pop() if len(rates) == 1 else None

    def configurations(self) -> list[dict]:
        """The distinct configurations (arm cross products, normalized, first seen kept)."""
        seen, out = set(), []
        for arm in self.arms:
            for values in itertools.product(*(arm[k] for k in ARM_KEYS)):
                c = _resolve(dict(zip(ARM_KEYS, values)))
                key = tuple((k, hashable(v)) for k, v in c.items() if k != "init_given")
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
                values.setdefault(name, {}).setdefault(k, set()).add(hashable(v))
        return {name: {k for k, vs in args.items() if len(vs) > 1} for name, args in values.items()}

    def expand(self) -> list[RunSpec]:
        """Every run: configurations in arm order, each with every seed. Worked out once per
        spec (a `vglab run` asked 8 times: groups, units, to_dict, the plan, meta.json)."""
        if "_runs" not in self.__dict__:
            object.__setattr__(self, "_runs", tuple(self._expand()))
        return list(self.__dict__["_runs"])

    def run_settings(self) -> dict:
        """The run settings every RunSpec of this experiment carries (hashable)."""
        d = {k: getattr(self, k) for k in SETTINGS if k != "seeds"}
        d.update(probes=tuple(self.probes), schedule=freeze(self.schedule))
        data_sha = fingerprint(self.dataset) if is_path(self.dataset) and Path(self.dataset).is_file() else None
        return {**d, "data_sha": data_sha}

    def _expand(self) -> list[RunSpec]:
        configs = self.configurations()
        varies = {"arch": len({(c["network"], c["depth"], c["width"], c["variant"], c["model"],
                                freeze(c["model_args"])) for c in configs}) > 1,
                  "optimizer": len({freeze(c["optimizer"]) for c in configs}) > 1,
                  "learning_rate": len({c["learning_rate"] for c in configs}) > 1}
        swept, settings = self.swept_optimizer_args(), self.run_settings()
        runs, labels = [], {}
        for c in configs:
            opt = dict(c["optimizer"])
            name = opt["name"]
            traced = tuple(sorted(k for k in swept.get(name, ()) if optim.traceable(name, k)))
            label = config_label(c, varies, {k: v for k, v in opt.items()
                                             if k != "name" and v != optim.parameters(name).get(k)})
            if labels.setdefault(label, c) is not c:
                raise SpecError(f"two configurations of {self.name} read the same, {label!r}; values that differ "
                                "only beyond 6 significant digits cannot be told apart in tables and figures")
            arm = {k: c[k] for k in ("network", "depth", "width", "variant", "activation", "penalty", "model",
                                     "input", "norm", "init_given", "bias_init")}
            runs += [RunSpec(experiment=self.name, label=label, seed=seed, **settings, **arm,
                             alpha=float(c["alpha"]), weight_init=c["init"], r=float(c["r"]),
                             learning_rate=float(c["learning_rate"]), optimizer=freeze(opt),
                             model_args=freeze(c["model_args"]), residual=float(c["residual"]), traced=traced,
                             base_dir=self.base_dir)
                     for seed in self.seeds]
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

    def settings(self) -> dict:
        """The run settings as a spec file writes them (lists, tables; keys at the value
        they had before they existed left out, so an old experiment.toml reads the same)."""
        d = {k: getattr(self, k) for k in SETTINGS}
        d.update(seeds=list(self.seeds), probes=list(self.probes), schedule=dict(self.schedule))
        return without_id_defaults(d)

    def to_dict(self) -> dict:
        """The resolved spec (experiment.toml); TOML has no null, so None values are left out."""
        d = {"name": self.name, "preset": self.preset, "description": self.description,
             "reference": self.reference, "source": self.source}
        for k, v in self.settings().items():
            d[k] = v
            if k == "batch_size":  # where experiment.toml has always had it
                d["learning_rate"] = self.learning_rate
        d["arms"] = [_arm_dict(arm) for arm in self.arms]
        runs = self.expand()
        d.update(n_runs=len(runs), n_groups=len(self.groups()),
                 fingerprint=hashlib.sha1("\n".join(sorted(r.run_id for r in runs)).encode()).hexdigest()[:12])
        return _drop_none(d)

    def to_spec_file(self) -> dict:
        """This experiment as a spec file (what `vglab show --toml` prints): loading it back
        gives the same runs."""
        d = {"name": self.name, "description": self.description, "reference": self.reference, **self.settings(),
             "arms": [_arm_dict(arm) for arm in self.arms]}
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
