"""One registry: which claims a preset's page checks and which figures it draws.

- The preset's record (`vglab.experiments.presets.Preset`, read from its TOML) names its spec
  file and its `section`: "reference" (the reference study's claims), "why" (the why claims;
  the page draws its own figures) or none (a plain page: runs and the standard figures).
- `CLAIMS`: every claim, the study's (`claims.CLAIMS`) then the why claims (`why.WHY_CLAIMS`);
  each names the presets it is checked on, and its section is theirs (`section_of`).
- `INSTRUMENTS`: every figure; each instrument's `needs` decides whether a page draws it (the
  standard instruments are not drawn on a page that draws its own, `why_figures` are drawn
  on the pages whose preset's record lists them, `Preset.figures`).

So a new preset with one claim is its TOML (with `section = ...`, and `figures = [...]` for its
own page) and one entry in `CLAIMS` or `WHY_CLAIMS`; nothing else names it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from vglab.experiments.presets import in_section, own_page, preset
from vglab.report import claims, why, why_figures
from vglab.report import figures as F
from vglab.report.claims import Claim, preset_of

REFERENCE, WHY = "reference", "why"
CLAIMS: tuple[Claim, ...] = (*claims.CLAIMS, *why.WHY_CLAIMS)


def _standard(inst: F.Instrument) -> F.Instrument:
    """A standard instrument, not drawn on a page that draws its own figures."""
    needs = inst.needs
    return replace(inst, needs=lambda res: None if own_page(preset_of(res)) else needs(res))


INSTRUMENTS: tuple[F.Instrument, ...] = (*map(_standard, F.INSTRUMENTS), *why_figures.INSTRUMENTS)


def section_of(name: str | None) -> str:
    """The report section of a preset ("reference", "why"; "" for none or a spec file's name)."""
    rec = preset(name) if name else None
    return rec.section if rec is not None else ""


def section_claims(section: str) -> tuple[Claim, ...]:
    """The claims of a section: those checked on its presets."""
    names = set(in_section(section))
    return tuple(c for c in CLAIMS if names.intersection(c.presets))


def section_presets(section: str) -> tuple[str, ...]:
    """The presets of a section in the order its claims name them (the order `vglab reproduce
    --presets` is suggested in)."""
    return tuple(dict.fromkeys(p for c in section_claims(section) for p in c.presets))


@dataclass(frozen=True)
class Page:
    """What a results page shows for its preset: its section, the claims checked on it."""

    preset: str
    section: str
    claims: tuple[Claim, ...]
    own_page: bool


def page(name: str) -> Page:
    sec = section_of(name)
    return Page(name, sec, tuple(c for c in section_claims(sec) if claims.relevant(c, name)) if sec else (),
                own_page(name))
