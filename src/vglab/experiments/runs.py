"""What a run trains, resolved: `ModelSpec` (the model), `RunSpec` (one configuration with
one seed, every value resolved once for the later stages: its model, optimizer, train
config, member and row of the runs table) and `Unit` (what one `train_group` call trains).
Their names and ids come from `identity`; they are made by `ExperimentSpec.expand`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from vglab.data.own import dataset_column
from vglab.experiments import identity
from vglab.nn.networks import build
from vglab.nn.adapters import build_from_factory
from vglab.nn.init import parse as parse_init
from vglab.nn.networks import DEFAULT_ACTIVATION, DEFAULT_DEPTH, DEFAULT_WIDTH, arch_name, block_suffix
from vglab.nn.penalties import strengths
from vglab.train import Member, TrainConfig
from vglab.train.optim import Optimizer, Schedule


@dataclass(frozen=True)
class ModelSpec:
    """What a run's model is, resolved: a built-in network or your own model's factory with
    its arguments. Hashable (a compiled program's key); `build` makes the model."""

    network: str  # mlp | cnn | paper_cnn | model
    depth: int | None = None
    width: int | None = None
    variant: str | None = None
    activation: str | None = DEFAULT_ACTIVATION  # None: your model's own (not passed to its factory)
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
        return arch_name(self.network, self.depth, self.width, self.variant, self.model, self.model_args) \
            + block_suffix(self.residual, self.norm)

    def build(self, in_shape, n_classes: int):
        """The `vglab.nn.model.Model` for data of this example shape and class count."""
        if self.network != "model":
            return build(self.network, in_shape, depth=self.depth or DEFAULT_DEPTH, width=self.width or DEFAULT_WIDTH,
                         variant=self.variant, activation=self.activation, n_out=n_classes, residual=self.residual,
                         norm=self.norm)
        return build_from_factory(self.model, dict(self.model_args), in_shape=tuple(in_shape), n_classes=n_classes,
                                  activation=self.activation, base_dir=self.base_dir)


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
    optimizer: tuple[tuple[str, Any], ...] = identity.freeze(identity.ADAM)  # canonical, sorted items
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
    label_smoothing: float = 0.0  # the loss's (vglab.train.loop); left out of the run id at 0
    traced: tuple[str, ...] = field(default=(), compare=False)  # optimizer parameters swept in one program
    init_given: str = field(default="", compare=False)  # as written (for the label's convention)
    base_dir: str | None = field(default=None, compare=False)

    def config_dict(self) -> dict:
        """Everything that determines the run's numbers (what the run id hashes)."""
        return identity.config_dict(self)

    @property
    def run_id(self) -> str:
        """Readable and deterministic: `<slug>-s<seed>-<hash of the full config>`."""
        return identity.run_id(self)

    def model_spec(self) -> ModelSpec:
        return ModelSpec(self.network, self.depth, self.width, self.variant, self.activation, self.model,
                         self.model_args, self.input, self.base_dir, self.residual, self.norm)

    def optimizer_setting(self) -> Optimizer:
        """The group's `vglab.train.optim.Optimizer` (constants, traced names, schedule)."""
        opt = dict(self.optimizer)
        name = opt.pop("name")
        sched = dict(self.schedule)
        return Optimizer(name, tuple(sorted((k, v) for k, v in opt.items() if k not in self.traced)),
                         tuple(sorted(self.traced)), Schedule(sched.pop("name"), tuple(sorted(sched.items()))))

    @property
    def group_key(self) -> tuple:
        """Runs with equal keys share one vectorized program (see vglab.train.loop.group_key)."""
        return (self.model_spec(), parse_init(self.weight_init).kind, parse_init(self.bias_init).kind,
                self.optimizer_setting())

    @property
    def group(self) -> str:
        """The group's readable name (`identity.group_name`), e.g. `mlp-20x8-tanh-normal`."""
        return identity.group_name(self)

    def member(self) -> Member:
        """The `vglab.train.Member` that trains this run."""
        l1, l2 = strengths(self.penalty, self.r)
        opt = dict(self.optimizer)
        return Member(seed=self.seed, weight_init=parse_init(self.weight_init), bias_init=parse_init(self.bias_init),
                      alpha=self.alpha, l1=l1, l2=l2, learning_rate=self.learning_rate,
                      optimizer_args=tuple(sorted((k, float(opt[k])) for k in self.traced)))

    def train_config(self) -> TrainConfig:
        """The `vglab.train.TrainConfig` this run's group shares."""
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate,
                           optimizer=self.optimizer_setting(), probes=self.probes, probe_every=self.probe_every,
                           record_every=self.record_every, label_smoothing=self.label_smoothing)

    def row(self, n_params: int, n_train: int, n_classes: int | None = None, facts: dict | None = None) -> dict:
        """The run's row of the `runs` table (DESIGN.md), without run_id and diverged_epoch
        (added by `results.store.write_run`). `facts`: what training measured and the
        report reads back instead of re-deriving it (`n_in`, `input_sq_norm`, the
        `activation` your model uses)."""
        law, bias, facts = parse_init(self.weight_init), parse_init(self.bias_init), facts or {}
        return {
            "experiment": self.experiment, "label": self.label, "group": self.group,
            "dataset": dataset_column(self.dataset),
            "network": self.network, "depth": self.depth, "width": self.width, "variant": self.variant,
            "activation": self.activation or facts.get("activation") or "unknown", "alpha": self.alpha,
            "weight_init": identity.init_label(self.init_given or self.weight_init, self.weight_init),
            "weight_init_spec": law.spec,
            "weight_init_kind": law.kind,
            "init_scale": float("nan") if law.fan_scaled or law.value is None else float(law.value),
            "bias_init": bias.label, "bias_init_spec": bias.spec, "bias_var": bias.variance(),
            "penalty": self.penalty, "r": self.r, "seed": self.seed,
            "epochs": self.epochs, "batch_size": self.batch_size, "learning_rate": self.learning_rate,
            "optimizer": self.optimizer_setting().label, "optimizer_spec": json.dumps(dict(self.optimizer)),
            "model": self.model, "model_args": json.dumps(dict(self.model_args), default=str), "input": self.input,
            "residual": self.residual, "norm": self.norm,
            "record_every": self.record_every, "label_smoothing": self.label_smoothing, "train_size": n_train, "n_params": n_params, "n_classes": n_classes,
            "n_in": facts.get("n_in"), "input_sq_norm": facts.get("input_sq_norm"),
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
