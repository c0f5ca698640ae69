"""The built-in presets: `presets/*.toml` found by name (`preset_names`, `list_presets`), and
`REPRODUCE`, the list `vglab reproduce` runs in its order. Reading only TOML, so listing the
presets imports neither JAX nor the spec's checks.
"""

from __future__ import annotations

import tomllib
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


def list_presets() -> list[dict]:
    """name, description, reference of every built-in preset."""
    out = []
    for name in preset_names():
        data = tomllib.loads((presets_dir() / f"{name}.toml").read_text())
        out.append({"name": name, "description": data.get("description", ""), "reference": data.get("reference", "")})
    return out
