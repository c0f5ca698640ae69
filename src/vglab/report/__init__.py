"""What is shown: figures (instruments), claim checks, mean-field theory, HTML pages.

    >>> from vglab.report import write_report, write_index
    >>> write_report("results/large-params")          # -> results/large-params/report.html

- `figures.py`: one function per figure type, each `Results -> matplotlib Figure`; `save`.
- `claims.py`: the reference study's claims as rules over the results -> verdicts.
- `theory.py`: the mean-field prediction of per-layer gradient decay (Schoenholz et al. 2017).
- `html.py`: self-contained pages (`write_report`, `write_index`).
- `tables.py`: small shared views of a Results (final accuracies, label order, arms).
"""

from vglab.report.html import write_index, write_report

__all__ = ["write_report", "write_index"]
