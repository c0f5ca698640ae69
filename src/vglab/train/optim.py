"""The optimizer as a setting: any Optax optimizer by name, with its parameters, a
learning rate that may differ between the members of one vmapped group, and an
optional learning-rate schedule.

How the learning rate enters. Every optimizer here ends with Optax's
`scale_by_learning_rate`, so its update is linear in the learning rate: the engine builds
it with `learning_rate=1` (or the schedule's shape, peaking at 1) and multiplies each
member's update by that member's rate. A sweep over learning rates is then one compiled
program. Multiplying by -1 is exact, so for Adam the update is bit for bit what
`optax.adam(lr)` gives. The list of names below is measured: optimizers whose update
is not linear in the rate (`fromage`), need a loss function (`lbfgs`) or a random key
(`noisy_sgd`) are left out.

Other numeric parameters (Adam's `eps`, SGD's `momentum`) may be swept too: a parameter
whose value differs between the members of a group is passed as a traced value if the
optimizer can take one (checked once by tracing it), else the members are split into
groups by its value (`static_key`). A parameter every member shares stays a Python
constant, so the default program is unchanged.

Defaults are Optax's, except Adam's eps = 1e-7: Keras' default, which the reference
study trained with.
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import optax

OPTIMIZERS = ("adam", "adamw", "sgd", "momentum", "nesterov", "rmsprop", "adagrad", "adadelta", "adamax",
              "adamaxw", "amsgrad", "nadam", "nadamw", "radam", "adabelief", "yogi", "lion", "lamb", "lars",
              "novograd", "sm3", "sign_sgd", "signum", "adan", "rprop", "adafactor", "optimistic_adam_v2",
              "optimistic_gradient_descent")
# vglab names for common settings of Optax optimizers: (optax name, default parameters).
ALIASES = {"momentum": ("sgd", {"momentum": 0.9}), "nesterov": ("sgd", {"momentum": 0.9, "nesterov": True})}
DEFAULTS = {"adam": {"eps": 1e-7}}  # Keras' eps: the reference study's recipe
SCHEDULES = ("constant", "cosine", "warmup_cosine", "exponential", "linear")


class OptimizerError(ValueError):
    """An optimizer setting that cannot be used; the message names the parameter and the fix."""


def _factory(name: str):
    base = ALIASES.get(name, (name, {}))[0]
    return getattr(optax, base)


def _defaults(name: str) -> dict:
    return {**ALIASES.get(name, (name, {}))[1], **DEFAULTS.get(name, {})}


def parameters(name: str) -> dict:
    """The parameters `name` accepts (besides learning_rate), with their defaults."""
    check_name(name)
    return dict(_parameters(name))


@functools.lru_cache(maxsize=None)
def _parameters(name: str) -> tuple:
    sig = inspect.signature(_factory(name))
    out = {k: (p.default if p.default is not inspect.Parameter.empty else None)
           for k, p in sig.parameters.items() if k != "learning_rate" and p.kind != p.VAR_KEYWORD}
    out.update(_defaults(name))
    return tuple(out.items())


def check_name(name: str) -> str:
    if name not in OPTIMIZERS:
        raise OptimizerError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)} "
                             "(Optax's optimizers by name; the learning rate is set with learning_rate)")
    return name


def check_args(name: str, args: dict) -> dict:
    """Validate `args` against the optimizer's signature; returns them with vglab's defaults."""
    allowed = parameters(name)
    for k, v in args.items():
        if k == "learning_rate":
            raise OptimizerError(f"optimizer.learning_rate: set the learning rate with the top-level key "
                                 "learning_rate (it can be swept), not inside the optimizer table")
        if k not in allowed:
            raise OptimizerError(f"optimizer {name!r} has no parameter {k!r}; its parameters: "
                                 f"{', '.join(sorted(allowed))}")
        if isinstance(v, float) and not math.isfinite(v):
            raise OptimizerError(f"optimizer.{k} must be finite, got {v}")
    return {**_defaults(name), **args}


@functools.lru_cache(maxsize=256)
def traceable(name: str, arg: str) -> bool:
    """Whether `arg` of optimizer `name` can be a traced value (so members may differ in it
    within one program): tried once on a tiny pytree."""
    allowed = parameters(name)
    default = allowed.get(arg)
    if isinstance(default, bool) or not isinstance(default, (int, float, type(None))):
        return False
    params = {"w": jnp.zeros((2, 2))}

    def run(v):
        opt = _factory(name)(learning_rate=1.0, **{**_defaults(name), arg: v})
        state = opt.init(params)
        return opt.update(params, state, params)[0]

    try:
        jax.eval_shape(run, jax.ShapeDtypeStruct((), jnp.float32))
        return True
    except Exception:  # noqa: BLE001 - any failure means: keep it a Python constant
        return False


@dataclass(frozen=True)
class Schedule:
    """The learning rate's shape over the run's steps, peaking at 1 (it multiplies each
    member's learning rate). `constant`; `cosine` (from 1 to `final` over the run);
    `warmup_cosine` (linear from 0 over `warmup` steps, then cosine to `final`);
    `exponential` (times `rate` every `every` steps); `linear` (from 1 to `final`)."""

    name: str = "constant"
    args: tuple[tuple[str, float], ...] = ()

    ARGS = {"constant": {}, "cosine": {"final": 0.0}, "warmup_cosine": {"warmup": 0.05, "final": 0.0},
            "exponential": {"rate": 0.5, "every": 0.25}, "linear": {"final": 0.0}}

    def __post_init__(self):
        if self.name not in SCHEDULES:
            raise OptimizerError(f"unknown schedule {self.name!r}; choose one of {', '.join(SCHEDULES)}")
        unknown = [k for k, _ in self.args if k not in self.ARGS[self.name]]
        if unknown:
            raise OptimizerError(f"schedule {self.name!r} has no parameter {unknown[0]!r}; its parameters: "
                                 f"{', '.join(self.ARGS[self.name]) or 'none'}")

    def fn(self, total_steps: int):
        """The schedule as an Optax schedule over `total_steps`, or 1.0 (constant).
        `warmup` and `every` are fractions of the run when below 1, else step counts."""
        a = {**self.ARGS[self.name], **dict(self.args)}
        steps = lambda v: max(1, int(round(v * total_steps)) if v < 1 else int(v))  # noqa: E731
        if self.name == "constant":
            return 1.0
        if self.name == "cosine":
            return optax.cosine_decay_schedule(1.0, total_steps, alpha=a["final"])
        if self.name == "warmup_cosine":
            return optax.warmup_cosine_decay_schedule(0.0, 1.0, steps(a["warmup"]), total_steps, end_value=a["final"])
        if self.name == "exponential":
            return optax.exponential_decay(1.0, steps(a["every"]), a["rate"], staircase=True)
        return optax.linear_schedule(1.0, a["final"], total_steps)


@dataclass(frozen=True)
class Optimizer:
    """What a group's members share of their optimizer: its name, the parameters that are
    Python constants (`static`), the names of those given per member (`traced`), and the
    schedule. Hashable: it is part of a compiled program's key."""

    name: str = "adam"
    static: tuple[tuple[str, object], ...] = tuple(DEFAULTS["adam"].items())
    traced: tuple[str, ...] = ()
    schedule: Schedule = field(default_factory=Schedule)
    total_steps: int | None = None  # the run's optimizer steps (only schedules other than constant need it)

    def __post_init__(self):
        check_name(self.name)

    def transformation(self, traced_values: dict | None = None) -> optax.GradientTransformation:
        """The Optax transformation with learning rate 1 (or the schedule's shape); `traced_values`
        gives the member's values of `traced` (traced arrays inside a program)."""
        lr = self.schedule.fn(self.total_steps or 1)
        args = dict(self.static)
        for k in self.traced:
            args[k] = (traced_values or {}).get(k, parameters(self.name).get(k))
        return _factory(self.name)(learning_rate=lr, **args)

    @property
    def label(self) -> str:
        shown = {k: v for k, v in self.static if v != parameters(self.name).get(k) or k in DEFAULTS.get(self.name, {})}
        inner = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
        s = f"{self.name}({inner})" if inner else self.name
        if self.schedule.name != "constant":
            s += f" · {self.schedule.name} schedule"
        return s


def scale_updates(updates, lr):
    """The member's update: the rate-1 update times its learning rate."""
    return jax.tree_util.tree_map(lambda u: u * lr, updates)


def static_key(name: str, args: dict, swept: set[str]) -> tuple:
    """What of an optimizer setting must be equal within a group: every parameter except
    those swept in the experiment that can be traced."""
    return (name,) + tuple(sorted((k, _hashable(v)) for k, v in args.items()
                                  if not (k in swept and traceable(name, k))))


def _hashable(v):
    if isinstance(v, (list, tuple)):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, np.generic):
        return v.item()
    return v
