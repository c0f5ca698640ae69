"""The spec file's schema: every key a spec may set, its default and its constraint, in one
table (the pydantic models below; each field declares a `Rule`). The key lists
(`SETTINGS`, `ARM_KEYS`), the defaults, the JSON schema (`vglab schema`) and what
`ExperimentSpec.to_dict` writes are read from it, so a new setting is one field here plus
the code that uses it. (Not to be confused with `vglab.schema`, the results' NumPy schema.)

A spec file::

    description = "one line"         # what it is, and which figure of the reference it reproduces
    reference = "Figure 1"
    # section = "reference"          # built-in presets only: the report section that checks its claims
    # figures = ["twin_curves"]      # built-in "why" presets only: the figures its own page draws
    dataset = "digits"               # run settings: shared by every run of the experiment
    epochs = 20
    seeds = 3                        # 3 means [0, 1, 2]; or a list
    batch_size = 32
    # train_size = 1000              # a fixed stratified subset of the training split
    # probes = "full"                # a tier (norms | moments | full) or a list of probe names
    # record_every = 1               # a table row every k epochs (probes still see every step)
    # probe_every = 1                # per-step gradient probes on every n-th step only
    # schedule = "cosine"            # the learning rate's shape over the run (constant by default)
    # label_smoothing = 0.1          # the training loss's target (1 - x)·one-hot + x/classes (0 by default)

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
name, or a table whose list values are swept), residual (the built-in MLP's skip connections
h + s·phi(z) with branch scale s; 0: none), norm (none|layer: the built-in MLP's LayerNorm
before the activation), model (your own model: "package.module:factory" or
"path/file.py:factory"), model_args (a table passed to the factory; list values are swept),
input (features|images: what your model takes). Precedence: built-in defaults < top-level
keys < the arm; run settings: top level < [datasets.<name>] < overrides (the CLI's --epochs,
...). `dataset` is a built-in name or the path of an .npz (relative paths are read from the
spec file's folder).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from vglab.data import DATASETS
from vglab.data.own import is_path
from vglab.experiments.errors import SpecError
from vglab.nn import activations, shaping
from vglab.nn.init import SPEC_HELP as INIT_HELP
from vglab.nn.init import parse as parse_init
from vglab.nn.networks import (CNN_VARIANTS, DEFAULT_ACTIVATION, DEFAULT_DEPTH, DEFAULT_WIDTH, NETWORKS, NORMS,
                               check_block)
from vglab.nn.penalties import PENALTIES
from vglab.train import optim, probes
from vglab.train.parallel import available_cores

SUMMARY = "Experiment specs: a TOML file, a built-in preset or a dict -> a validated `ExperimentSpec` -> runs -> " \
          "groups -> units."
BUILT_IN = NETWORKS  # the `network` values that are vglab's own networks
INPUTS = ("features", "images")
CRITICAL = re.compile(r"sigma_w2\s*=\s*critical\b")  # `orthogonal(sigma_w2=critical)`: χ_1 = 1 (resolve_critical)
_UNSET = object()


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
    maximum = len(available_cores()) if limit.max is None else limit.max
    if value > maximum and not allow_large:
        raise SpecError(f"{where}{value} is above the limit of {maximum} {limit.what} ({limit.cost}); lower it, or "
                        "pass --allow-large (Python: allow_large=True) to go beyond it")


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
    return _choice(v, CNN_VARIANTS, "paper_cnn variant")


def _check_activation(v):
    if shaping.parse(v) is None:  # a TAT activation is solved once its depth is known (`configurations`)
        activations.get(v)  # raises with the valid names
    return v


def _check_init(v):
    parse_init(CRITICAL.sub("sigma_w2=1", str(v)))  # raises with the accepted forms
    return str(v).strip()


def _check_bias_init(v):
    if parse_init(v).family == "orthogonal":
        raise ValueError(f"{v!r} is a law for weight matrices; give the biases another law, e.g. bias_init = "
                         "\"zeros\" or \"normal(std=0.05)\"")
    return _check_init(v)


def _check_penalty(v):
    return _choice(v, PENALTIES, "penalty")


def _check_dataset(v):
    if isinstance(v, str) and is_path(v):
        if not v.endswith(".npz"):
            raise ValueError(f"an own dataset is an .npz file (x_train, y_train, x_test, y_test), got {v!r}")
        return v
    if v not in DATASETS:
        raise ValueError(f"unknown dataset {v!r}; choose one of {list(DATASETS)}, or give the path of an .npz "
                         "(x_train, y_train, x_test, y_test)")
    return v


def _positive_int(name):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        return v
    return check


def _sized_int(name):
    """A positive integer bounded by `LIMITS[name]` (depth, width)."""
    def check(v, allow_large=False):
        check_limit(name, _positive_int(name)(v), allow_large)
        return v
    return check


def _finite(what: str, positive: bool):
    def check(v):
        if not (math.isfinite(v) and (v > 0 if positive else v >= 0)):
            raise ValueError(f"{what}, got {v}")
        return v
    return check


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


def _check_model_args(v):
    if not isinstance(v, dict):
        raise ValueError("model_args is a table of the factory's keyword arguments, e.g. {depth = 20}")
    return dict(v)


def _check_input(v):
    return _choice(v, INPUTS, "input")


def _check_residual(v):
    check_block(residual=v)
    return float(v)


def _check_norm(v):
    check_block(norm=v)
    return v


def check_optimizer(v) -> dict:
    """A canonical optimizer dict {name, **args} (args validated against Optax's signature)."""
    d = {"name": v} if isinstance(v, str) else dict(v)
    name = d.pop("name", "adam")  # a table without a name sets the default optimizer's parameters
    optim.check_name(name)
    return {"name": name, **optim.check_args(name, d)}


def _check_seeds(v, allow_large=False):
    if isinstance(v, int) and not isinstance(v, bool):
        check_limit("seeds", _positive_int("seeds")(v), allow_large)  # before range(v)
        return list(range(v))
    if isinstance(v, list):
        check_limit("seeds", len(v), allow_large)
    if not isinstance(v, list) or not v or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in v):
        raise ValueError(f"seeds must be a count >= 1 or a non-empty list of integers >= 0, got {v!r}")
    if len(set(v)) != len(v):
        raise ValueError(f"seeds must not repeat, got {v!r}")
    return list(v)


def _check_probes(v):
    names = listed(v)
    probes.resolve(tuple(names))  # raises with the valid names
    return names


def _check_schedule(v):
    d = {"name": v} if isinstance(v, str) else dict(v)
    name = d.pop("name", "constant")
    optim.Schedule(name, tuple(sorted(d.items())))  # raises with the valid names and parameters
    return {"name": name, **d}


def _check_label_smoothing(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        raise ValueError(f"label_smoothing is the weight of the uniform target in the loss, 0 <= x < 1 (0: the plain "
                         f"cross-entropy), got {v!r}")
    return float(v)


def _check_pca(v):
    if v is False:
        return v
    if v is True:
        return 0.95
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
        raise ValueError(f"pca is the fraction of training variance the MLP inputs keep, in (0, 1], or false "
                         f"(no PCA), got {v!r}")
    return float(v)


_RANGE = re.compile(r"^\s*(logspace|linspace)\s*\(\s*([^,]+),\s*([^,]+),\s*(\d+)\s*\)\s*$")


def numbers(v, allow_large: bool = False) -> list:
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


def listed(v) -> list:
    return v if isinstance(v, list) else [v]


def tables(v) -> list:
    """Each table's cross product of its list values (`{name = "adam", eps = [1e-7, 1e-10]}`
    -> two dicts); other items as they are."""
    out = []
    for item in listed(v):
        if isinstance(item, dict):
            keys = list(item)
            out += [dict(zip(keys, combo)) for combo in itertools.product(*(listed(item[k]) for k in keys))]
        else:
            out.append(item)
    return out


# ------------------------------------------------------------------ the one table
@dataclass(frozen=True)
class Rule:
    """What one key of a spec is: its default, its check (a value -> its canonical form,
    or a ValueError that says what to write), how a written value is read, and how runs made
    before the key existed keep their ids."""

    default: Any
    check: Callable = lambda v: v
    read: Callable | None = None  # an arm key's values from what is written (default: a value or a list)
    sized: bool = False  # `check` takes `allow_large` (a size bounded by LIMITS)
    id_default: Any = _UNSET  # added after results existed: left out of run ids and experiment.toml at this value
    only: str | None = None  # the one built-in network an arm key applies to


def rule(model: type[BaseModel], key: str) -> Rule:
    return next(m for m in model.model_fields[key].metadata if isinstance(m, Rule))


def _validate(model, v, info):
    """Every key's validation: its rule's reading and check (None: not given)."""
    if v is None:
        return None
    r = rule(model, info.field_name)
    allow_large = bool((info.context or {}).get("allow_large"))
    check = (lambda x: r.check(x, allow_large)) if r.sized else r.check
    if not issubclass(model, Arm):
        return check(v)
    vals = r.read(v, allow_large) if r.read is numbers else (r.read or listed)(v)
    if not vals:
        raise ValueError("an empty list gives no runs; give at least one value")
    return [check(x) for x in vals]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


Num = float | int
NumOrRange = Num | list[Num] | str  # a number, a list, or "logspace(a, b, n)" / "linspace(a, b, n)"


class Arm(_Strict):
    """Arm keys: each a value or a list of values (the arm is their cross product)."""

    network: Annotated[str | list[str] | None, Rule("mlp", _check_network)] = None
    depth: Annotated[int | list[int] | None, Rule(DEFAULT_DEPTH, _sized_int("depth"), sized=True)] = None
    width: Annotated[int | list[int] | None, Rule(DEFAULT_WIDTH, _sized_int("width"), sized=True)] = None
    variant: Annotated[str | list[str] | None, Rule(None, _check_variant)] = None
    activation: Annotated[str | list[str] | None, Rule(DEFAULT_ACTIVATION, _check_activation)] = None
    init: Annotated[str | list[str] | None, Rule("normal(std=1)", _check_init)] = None
    bias_init: Annotated[str | list[str] | None, Rule(None, _check_bias_init)] = None
    penalty: Annotated[str | list[str] | None, Rule("none", _check_penalty)] = None
    r: Annotated[NumOrRange | None, Rule(0.01, _finite("penalty strength r must be a finite number >= 0", False),
                                         numbers)] = None
    alpha: Annotated[NumOrRange | None, Rule(1.0, _finite(
        "alpha must be > 0 (the rescaled activation is alpha*phi(z/alpha))", True), numbers)] = None
    learning_rate: Annotated[NumOrRange | None, Rule(1e-3, _finite("learning_rate must be a number > 0", True),
                                                     numbers)] = None
    optimizer: Annotated[str | dict[str, Any] | list[str | dict[str, Any]] | None,
                         Rule({"name": "adam"}, check_optimizer, tables)] = None
    # "package.module:factory", "path/file.py:factory", or (from Python) the factory
    model: Annotated[Any, Rule(None, _check_model)] = None
    model_args: Annotated[dict[str, Any] | list[dict[str, Any]] | None, Rule({}, _check_model_args, tables)] = None
    input: Annotated[str | list[str] | None, Rule(None, _check_input)] = None
    # residual, norm None: the plain MLP (0, "none"); runs stored before them keep their ids
    residual: Annotated[NumOrRange | None, Rule(None, _check_residual, numbers, id_default=0.0, only="mlp")] = None
    norm: Annotated[str | list[str] | None, Rule(None, _check_norm, id_default="none", only="mlp")] = None

    @field_validator("*", mode="before")
    @classmethod
    def _values(cls, v, info):
        return _validate(Arm, v, info)

    def given(self) -> dict:
        """The arm keys set explicitly."""
        return {k: getattr(self, k) for k in ARM_KEYS if k in self.model_fields_set and getattr(self, k) is not None}


class Settings(_Strict):
    """Run settings: one value each, shared by every run of the experiment."""

    dataset: Annotated[str | None, Rule("digits", _check_dataset)] = None
    epochs: Annotated[int | None, Rule(15, _positive_int("epochs"))] = None
    seeds: Annotated[int | list[int] | None, Rule([0, 1, 2], _check_seeds, sized=True)] = None
    batch_size: Annotated[int | None, Rule(32, _positive_int("batch_size"))] = None
    train_size: Annotated[int | None, Rule(None, _positive_int("train_size"))] = None
    probes: Annotated[str | list[str] | None, Rule(["full"], _check_probes)] = None
    record_every: Annotated[int | None, Rule(1, _positive_int("record_every"))] = None
    probe_every: Annotated[int | None, Rule(1, _positive_int("probe_every"))] = None
    schedule: Annotated[str | dict[str, Any] | None, Rule({"name": "constant"}, _check_schedule)] = None
    pca: Annotated[bool | float | None, Rule(None, _check_pca)] = None
    label_smoothing: Annotated[float | None, Rule(0.0, _check_label_smoothing, id_default=0.0)] = None

    @field_validator("*", mode="before")
    @classmethod
    def _values(cls, v, info):
        return _validate(Settings, v, info)


class SpecFile(Settings, Arm):
    name: str | None = None
    description: str = ""
    reference: str = ""
    # A built-in preset's report section (`experiments.presets.Preset`): "reference" (the study's
    # claims), "why" (the why claims, and the page draws its own figures) or none.
    section: Literal["", "reference", "why"] = ""
    # The figures a "why" preset's own page draws (`report.why_figures.INSTRUMENTS`' names):
    # its record says what its page shows, and the plan prices those figures.
    figures: list[str] = []
    arms: list[Arm] | None = None
    datasets: dict[str, Settings] | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _values(cls, v, info):
        if info.field_name in Settings.model_fields:
            return _validate(Settings, v, info)
        if info.field_name in Arm.model_fields:
            return _validate(Arm, v, info)
        return v

    @field_validator("datasets")
    @classmethod
    def _dataset_tables(cls, v):
        for name in v or {}:
            _check_dataset(name)
        return v


# Read from the table: the key lists, the defaults, the keys of one network only.
SETTINGS = tuple(Settings.model_fields)
ARM_KEYS = tuple(Arm.model_fields)
# The file's own keys (what it is, its record as a preset), before the settings in messages.
FILE_KEYS = tuple(k for k in SpecFile.model_fields if k not in SETTINGS + ARM_KEYS + ("arms", "datasets"))
SETTING_DEFAULTS = {k: rule(Settings, k).default for k in SETTINGS}
ARM_DEFAULTS = {k: rule(Arm, k).default for k in ARM_KEYS}
MLP_ONLY = tuple(k for k in ARM_KEYS if rule(Arm, k).only == "mlp")  # arm keys of network = "mlp" only
MLP_DEFAULTS = {k: rule(Arm, k).id_default for k in MLP_ONLY}  # what residual, norm None resolve to
# Keys added after results existed, with the value at which run ids and experiment.toml leave them out.
ID_DEFAULTS = {k: r.id_default for model, keys in ((Settings, SETTINGS), (Arm, ARM_KEYS)) for k in keys
               if (r := rule(model, k)).id_default is not _UNSET}


def without_id_defaults(d: dict) -> dict:
    """`d` less the keys at the value they had before they existed (so old ids and files stay)."""
    return {k: v for k, v in d.items() if not (k in ID_DEFAULTS and v == ID_DEFAULTS[k])}


def count_runs(arms, n_seeds: int, allow_large: bool, where: str = "") -> None:
    """The runs the arms give, counted (not expanded), against `LIMITS["runs"]`."""
    combinations = sum(math.prod(len(arm[k]) for k in ARM_KEYS) for arm in arms)
    check_limit("runs", combinations * n_seeds, allow_large,
                f"{where}the arms give up to {combinations} configurations x {n_seeds} seeds = ")


# ------------------------------------------------------------------ messages
def _where(loc: tuple) -> str:
    s = ""
    for part in loc:
        s += f"[{part}]" if isinstance(part, int) else (f".{part}" if s else str(part))
    return s


def _is_type_tag(part) -> bool:
    """pydantic's location entries that name a union member (`list[str]`, `str`), not a key."""
    return isinstance(part, str) and (part in ("str", "int", "float", "bool", "dict[str,any]", "function-after")
                                      or "[" in part)


def _is_union_noise(err) -> bool:
    return err["type"] in ("string_type", "int_type", "float_type", "list_type", "dict_type", "bool_type",
                           "int_from_float", "int_parsing", "float_parsing") and err.get("ctx") is None \
        and any(_is_type_tag(p) for p in err["loc"])


def first_error(e: ValidationError) -> tuple[dict, list, int]:
    """(the first error that is not a union member's noise, its key path, how many errors)."""
    errors = [err for err in e.errors() if not _is_union_noise(err)] or e.errors()
    return errors[0], [p for p in errors[0]["loc"] if not _is_type_tag(p)], len(errors)


def one_line(e: ValidationError, source: str) -> str:
    """The first validation error as one line that names the key and says what to write."""
    err, loc, n = first_error(e)
    more = f" (and {n - 1} more)" if n > 1 else ""
    if err["type"] == "extra_forbidden":
        key, where = loc[-1], _where(tuple(loc[:-1]))
        if where.startswith("datasets."):
            allowed = SETTINGS[1:]
        elif where.startswith("arms"):
            allowed = ARM_KEYS
        else:
            allowed = FILE_KEYS + SETTINGS + ARM_KEYS + ("arms", "datasets")
        place = f" in {where}" if where else ""
        return f"{source}: unknown key {key!r}{place}; allowed keys: {', '.join(allowed)}{more}"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] not in ("value_error",) and "input" in err:
        msg += f", got {err['input']!r}"
    return f"{source}: {_where(tuple(loc))}: {msg}{more}"


# ------------------------------------------------------------------ JSON schema
_ENUMS = {"network": list(BUILT_IN) + ["model"], "activation": sorted(activations.ACTIVATIONS),
          "penalty": list(PENALTIES), "variant": list(CNN_VARIANTS), "input": list(INPUTS), "norm": list(NORMS),
          "probes": list(probes.TIERS) + ["all"] + list(probes.ALL)}
_DESCRIBED = {
    "dataset": f"{', '.join(DATASETS)}, or the path of an .npz",
    "optimizer": f"one of {', '.join(optim.OPTIMIZERS)}, or a table {{name = ..., <parameter> = ...}}",
    "init": INIT_HELP + "; sigma_w2=critical: the order-to-chaos sigma_w2 of the configuration's activation, alpha "
                        "and bias law",
    "activation": f"one of {', '.join(sorted(activations.ACTIVATIONS))}, or kernel-shaped (TAT): "
                  "tat(<name>, tau=0.3, depth=L) (an MLP's depth fills in a missing L)",
    "residual": "the built-in MLP's branch scale s: hidden layers compute h + s·phi(z) (0: no skip)",
    "schedule": f"one of {', '.join(optim.SCHEDULES)}, or a table {{name = ..., <parameter> = ...}}"}


def _fill(props: dict) -> None:
    for key, prop in props.items():
        if key in _ENUMS:
            one = {"type": "string", "enum": _ENUMS[key]}
            prop["anyOf"] = [one, {"type": "array", "items": one}, {"type": "null"}]
            if key == "activation":  # or kernel-shaped: tat(<name>, ...)
                shaped = {"type": "string", "pattern": r"^\s*tat\s*\("}
                prop["anyOf"] = [one, shaped, {"type": "array", "items": {"anyOf": [one, shaped]}}, {"type": "null"}]
        if key in _DESCRIBED:
            prop["description"] = _DESCRIBED[key]


def json_schema() -> dict:
    """The JSON schema of a spec file (editors complete TOML against it, e.g. with a
    `#:schema ./vglab-spec.schema.json` line), with the allowed names filled in from the
    registries they come from."""
    schema = SpecFile.model_json_schema()
    schema["title"] = "vglab experiment spec"
    schema["description"] = SUMMARY
    _fill(schema["properties"])
    for sub in schema.get("$defs", {}).values():
        _fill(sub.get("properties", {}))
    return schema
