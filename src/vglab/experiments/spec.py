"""Experiment specs: a TOML file, a built-in preset or a dict -> a validated
`ExperimentSpec` -> runs -> groups -> units.

This module reads a spec (`load_spec`: the file or preset, `--set` assignments, overrides of
the run settings, every check before anything is built) and re-exports the names of the
modules that do one job each, so `vglab.experiments.spec` stays the one import for callers:

- `schema`: the spec file's keys, defaults and constraints (pydantic, one table), `LIMITS`,
  `SpecError`, `json_schema`; the spec file's format is described there.
- `expansion`: `ExperimentSpec` -> configurations -> runs -> groups -> units.
- `runs`: `ModelSpec`, `RunSpec`, `Unit`: what a run trains, resolved.
- `identity`: run ids, slugs, group names and labels.
- `presets`: the built-in presets and the `reproduce` list.
- `overrides`: the CLI's `--set` and how `--epochs` keeps the records.
- `errors`: `SpecError`, importable without the checks (and JAX).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pydantic import ValidationError

from vglab.data.own import is_path, load_npz
from vglab.experiments.expansion import ExperimentSpec, resolve_critical, shaped_activation
from vglab.experiments.identity import arch_name, default_bias, init_label
from vglab.experiments.overrides import apply_sets, parse_set, scale_records, set_source
from vglab.experiments.presets import REPRODUCE, list_presets, preset_names, preset_path, presets_dir
from vglab.experiments.runs import ModelSpec, RunSpec, Unit
from vglab.experiments.errors import SpecError
from vglab.experiments.schema import (ARM_DEFAULTS, ARM_KEYS, BUILT_IN, CRITICAL, INPUTS, LIMITS, MLP_DEFAULTS, MLP_ONLY,
                                      SETTING_DEFAULTS, SETTINGS, Arm, Limit, Settings, SpecFile,
                                      check_limit, check_name, check_optimizer, count_runs, json_schema, one_line)
from vglab.nn import shaping
from vglab.train.probes import resolve as resolve_probes

__all__ = ["ARM_DEFAULTS", "ARM_KEYS", "BUILT_IN", "CRITICAL", "INPUTS", "LIMITS", "MLP_DEFAULTS", "MLP_ONLY",
           "REPRODUCE", "SETTINGS", "SETTING_DEFAULTS", "ExperimentSpec", "Limit", "ModelSpec", "RunSpec", "SpecError",
           "Unit", "arch_name", "check_limit", "check_name", "check_sizes", "default_bias", "init_label",
           "json_schema", "list_presets", "load_spec", "parse_set", "preset_names", "presets_dir",
           "resolve_critical", "shaped_activation"]


def check_sizes(spec: ExperimentSpec, allow_large: bool = False) -> None:
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
    count_runs(spec.arms, len(spec.seeds), allow_large, f"{spec.name}: ")


def _read(name_or_path) -> tuple[dict, str, str | None, str, str | None]:
    """(toml data, source, preset name or None, default experiment name, base dir)."""
    path = preset_path(name_or_path)
    is_preset = path is not None
    if is_preset:
        name = str(name_or_path)
    elif Path(str(name_or_path)).is_file():
        path = Path(str(name_or_path))
        name = path.stem
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


def _validated(data: dict, sets, overrides: dict, source: str, context: dict) -> SpecFile:
    """The spec file validated against the schema (a message that names `--set KEY` when the
    command line wrote the bad value)."""
    unknown = set(overrides) - set(SETTINGS)
    if unknown:
        raise SpecError(f"cannot override {sorted(unknown)}; overridable: {', '.join(SETTINGS)} "
                        "(set any other key with --set key=value)")
    try:
        spec = SpecFile.model_validate(data, context=context)
    except ValidationError as e:
        raise SpecError(one_line(e, set_source(e, sets) or source)) from None
    return spec


def _cli(overrides: dict, context: dict) -> Settings:
    """The overrides of the run settings, validated (the message names the `--option`)."""
    try:
        cli = Settings.model_validate(overrides, context=context)
    except ValidationError as e:
        err = e.errors()[0]
        option = "--" + str(err["loc"][0]).replace("_", "-")
        raise SpecError(f"{option}: {err['msg'].removeprefix('Value error, ')}") from None
    return cli


def _name(spec: SpecFile, default_name: str | None, source: str) -> str:
    name = spec.name or default_name
    if name is None:
        raise SpecError(f"{source}: a spec given as a dict needs a name (name = 'my-experiment')")
    try:
        return check_name(name)
    except ValueError as e:
        fix = "" if spec.name else "; the name comes from the file's name: rename the file or set name = in it"
        raise SpecError(f"{source}: {e}{fix}") from None


def _own_dataset(dataset: str, base: str | None, source: str) -> str:
    """An .npz dataset's absolute path, its arrays checked now (before anything is written)."""
    path = Path(dataset).expanduser()
    if not path.is_absolute():
        path = Path(base or os.getcwd()) / path
    if not path.is_file():
        raise SpecError(f"{source}: dataset file {path} not found; give the path of an .npz holding x_train, "
                        "y_train, x_test, y_test (relative paths are read from the spec file's folder)")
    load_npz(path)
    return str(path.resolve())


def _settings(spec: SpecFile, cli: Settings, source: str, base: str | None) -> dict:
    """The run settings: defaults < top level < [datasets.<name>] < overrides."""
    dataset = cli.dataset or spec.dataset or SETTING_DEFAULTS["dataset"]
    settings = dict(SETTING_DEFAULTS)
    for layer in (spec, (spec.datasets or {}).get(dataset), cli):
        if layer is not None:
            if layer is cli:
                scale_records(settings, cli)
            settings.update({k: getattr(layer, k) for k in SETTINGS if getattr(layer, k) is not None})
    settings["dataset"] = _own_dataset(dataset, base, source) if is_path(dataset) else dataset
    settings["probes"] = list(resolve_probes(tuple(settings["probes"])))
    if settings["record_every"] > settings["epochs"]:
        raise SpecError(f"{source}: record_every = {settings['record_every']} is more than epochs = "
                        f"{settings['epochs']}; records would only be made at the start and the end. "
                        "Lower record_every or raise epochs")
    return settings


def _check_arm(where: str, mine: dict, networks: set, activations: list) -> None:
    """An arm's keys that do not apply to its networks, with the fix."""
    if "variant" in mine and "paper_cnn" not in networks:
        raise SpecError(f"{where}.variant applies to network = 'paper_cnn' only")
    for k in ("depth", "width"):
        if k in mine and networks == {"paper_cnn"}:
            raise SpecError(f"{where}.{k} does not apply to paper_cnn (its variant fixes the layers); "
                            "drop it or use network = 'cnn'")
        if k in mine and networks == {"model"}:
            raise SpecError(f"{where}.{k} does not apply to your own model; pass it to the factory "
                            f"in model_args = {{{k} = ...}}")
    if networks != {"mlp"}:
        for act in activations:
            parsed = shaping.parse(act) if act else None
            if parsed is not None and parsed[2] is None:
                raise SpecError(f"{where}: activation {act!r} takes the MLP's depth; for {sorted(networks)} give "
                                f"the number of nonlinear layers, e.g. {shaping.canonical(parsed[0], parsed[1], 20)!r}")
    for k in MLP_ONLY:
        if k in mine and networks != {"mlp"}:
            raise SpecError(f"{where}.{k} applies to network = 'mlp' only (the built-in MLP), and "
                            f"this arm has {sorted(networks)}; drop it or set network = 'mlp'")
    if ("model_args" in mine or "input" in mine) and "model" not in networks:
        raise SpecError(f"{where}: model_args and input apply to network = 'model' only")


def _arm(mine: dict, top: dict, where: str) -> dict:
    """One arm's values: defaults < top level < the arm, each a list."""
    resolved = {k: [v] if not isinstance(v, list) else v for k, v in ARM_DEFAULTS.items()}
    resolved["optimizer"] = [check_optimizer(ARM_DEFAULTS["optimizer"])]
    resolved.update(top)
    resolved.update(mine)
    if ("model" in mine or ("model" in top and "network" not in mine)) and "network" not in mine | top:
        resolved["network"] = ["model"]
    networks = set(resolved["network"])
    if "model" in networks and "activation" not in mine and "activation" not in top:
        resolved["activation"] = [None]  # your model's own; the built-in networks' default is filled in later
    if "model" in networks and resolved["model"] == [None]:
        raise SpecError(f"{where}: network = 'model' needs model = 'package.module:factory' "
                        "(or 'path/to/file.py:factory')")
    _check_arm(where, mine, networks, resolved["activation"])
    return resolved


def _arms(spec: SpecFile, source: str) -> list[dict]:
    top, given = spec.given(), [arm.given() for arm in spec.arms or [Arm()]]
    arms = [_arm(mine, top, f"{source}: " + (f"arms[{i}]" if spec.arms else "top level"))
            for i, mine in enumerate(given)]
    for k in MLP_ONLY:
        if k in top and any(arm["network"] != ["mlp"] and k not in mine for arm, mine in zip(arms, given)):
            raise SpecError(f"{source}: {k} applies to network = 'mlp' only (the built-in MLP), and an arm uses "
                            "another network; set it in the MLP arms instead")
    if "variant" in top and not any("paper_cnn" in arm["network"] for arm in arms):
        raise SpecError(f"{source}: variant applies to network = 'paper_cnn' only, and no arm uses it")
    return arms


def load_spec(name_or_path, sets=None, *, allow_large: bool = False, **overrides) -> ExperimentSpec:
    """Read a built-in preset (by name), a spec file or a spec dict, apply `sets` (a list of
    "key=value" assignments to any field, the CLI's --set) and `overrides` of the run
    settings (`SETTINGS`: dataset, epochs, seeds, ...; None means keep), and validate
    everything (sizes against `LIMITS` unless `allow_large`)."""
    if isinstance(name_or_path, dict):
        data, source, preset, default_name, base = dict(name_or_path), "spec", None, None, os.getcwd()
    else:
        data, source, preset, default_name, base = _read(name_or_path)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    context = {"allow_large": allow_large}
    spec = _validated(apply_sets(data, sets), sets, overrides, source, context)
    name = _name(spec, default_name, source)
    cli = _cli(overrides, context)
    settings = _settings(spec, cli, source, base)
    arms = _arms(spec, source)
    count_runs(arms, len(settings["seeds"]), allow_large, f"{source}: ")
    settings.update(seeds=tuple(settings["seeds"]), probes=tuple(settings["probes"]),
                    schedule=dict(settings["schedule"]))
    return ExperimentSpec(name=name, description=spec.description, reference=spec.reference, arms=tuple(arms),
                          preset=preset, source=source, base_dir=base, **settings)
