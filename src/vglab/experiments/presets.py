"""The built-in presets: `presets/*.toml` found by name (`preset_names`, `list_presets`), and
`REPRODUCE`, the list `vglab reproduce` runs in its order. Reading only TOML, so listing the
presets imports neither JAX nor the spec's checks.

`preset(name)` is a preset's record, read from its TOML: its spec file, its `section`, the
report section that checks its claims ("reference": the study's; "why": the why claims), and
its `figures`, the figures its own page draws instead of the standard ones (`own_page`). The
claims name their presets (`vglab.report.registry`); the report draws the figures a record
names; the plan (`experiments.runner`) prices the page by them. So a new preset with a claim
is its TOML (with its section and figures) and one claims entry.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

# `vglab reproduce` runs these, in this order: the reference study's figures, then its open questions.
REPRODUCE = ("large-params", "regularization", "r-sweep", "super-large", "uniform-large", "vs-relu",
             "many-layers", "alpha-sweep", "cnn-large-params", "paper-cnn-large-params", "cnn-many-layers",
             "paper-cnn-many-layers", "rescaling-by-init", "combined")


def presets_dir() -> Path:
    return Path(str(resources.files("vglab.experiments") / "presets"))


def preset_path(name) -> Path | None:
    """The preset file a name means (a bare name, not a path or a .toml file), or None."""
    path = presets_dir() / f"{name}.toml"
    return path if not str(name).endswith(".toml") and "/" not in str(name) and path.exists() else None


def preset_names() -> list[str]:
    names = sorted(p.stem for p in presets_dir().glob("*.toml"))
    return [n for n in REPRODUCE if n in names] + [n for n in names if n not in REPRODUCE]


@dataclass(frozen=True)
class Preset:
    """A built-in preset's record: its spec file and what its TOML says about it."""

    name: str
    path: Path
    description: str = ""
    reference: str = ""
    section: str = ""  # "reference", "why" or "" (no claims: a plain page)
    figures: tuple[str, ...] = ()  # the figures its own page draws (`report.why_figures`), in order

    @property
    def own_page(self) -> bool:
        """Whether its report page draws its own figures instead of the standard instruments."""
        return bool(self.figures)


@functools.lru_cache(maxsize=64)
def preset(name) -> Preset | None:
    """The record of the built-in preset `name`, or None when there is none by that name."""
    path = preset_path(name) if name else None
    if path is None:
        return None
    data = tomllib.loads(path.read_text())
    return Preset(str(name), path, data.get("description", ""), data.get("reference", ""), data.get("section", ""),
                  tuple(data.get("figures", ())))


def own_page(name) -> bool:
    """Whether the built-in preset `name` draws its own report page (False for any other name)."""
    rec = preset(name)
    return rec is not None and rec.own_page


def own_figures(name) -> tuple[str, ...]:
    """The figures the built-in preset `name`'s own page draws (none for any other name)."""
    rec = preset(name)
    return rec.figures if rec is not None else ()


def in_section(section: str) -> tuple[str, ...]:
    """The built-in presets of a report section, in `preset_names` order."""
    return tuple(n for n in preset_names() if preset(n).section == section)


def list_presets() -> list[dict]:
    """name, description, reference of every built-in preset."""
    return [{"name": p.name, "description": p.description, "reference": p.reference}
            for p in map(preset, preset_names())]
