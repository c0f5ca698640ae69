"""What is shown: figures (instruments), claim checks, mean-field theory, HTML pages.

    >>> from vglab.report import write_report, write_index
    >>> write_report("results/large-params")          # -> results/large-params/report.html

- `figures.py`: one function per figure type, each `Results -> matplotlib Figure`; `save`;
  `INSTRUMENTS`, the standard figures (what each needs, draws and shows).
- `registry.py`: the one registry: every claim and every instrument, and what a preset's page
  shows (`page`: its section, read from the preset's TOML, and its claims).
- `claims.py`: the reference study's claims as rules over the results -> verdicts.
- `theory.py`: mean-field signal propagation (Poole et al. 2016; Schoenholz et al. 2017): per-layer
  gradient decay, the fixed points q* and c*, χ_1, the depth scale ξ_c and the trainable depth 6 ξ_c.
- `stats.py`: seed-to-seed intervals of a compared difference (paired/Welch t, bootstrap) and
  whether a threshold is met by the means, by the whole interval, or neither.
- `html.py`: offline pages with relative links (`write_report`, `write_index`); `is_fresh`, the staleness rule.
- `pages.py`: `vglab.report` and `vglab.reproduce` (pages written on a process pool while experiments train).
- `tables.py`: small shared views of a Results (final accuracies, label order, arms).
- `doctor.py`: the diagnosis of any results folder (`vglab doctor`): findings per run and layer, cause,
  onset, mean-field context; `remedies.py`: remedy sweeps and their measured effects (the evidence);
  `forest.py`: the index's forest plot of every claim's arms.
"""

__all__ = ["write_report", "write_index"]


def __getattr__(name):  # lazy: `vglab.report.pages` (vglab.report, vglab.reproduce) draws with matplotlib only when asked
    import importlib

    if name in __all__:
        return getattr(importlib.import_module("vglab.report.html"), name)
    try:
        return importlib.import_module(f"vglab.report.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"vglab.report.{name}":
            raise
        raise AttributeError(f"module 'vglab.report' has no attribute {name!r}") from None
