"""What the command line changes in a spec: `--set key.path=value` assignments to any field
(`parse_set`, `apply_sets`), and how an `--epochs` override keeps the number of records.
"""

from __future__ import annotations

import copy
import tomllib
from typing import Any

from pydantic import ValidationError

from vglab.experiments.errors import SpecError
from vglab.experiments.schema import first_error


def parse_set(assignment: str) -> tuple[list, Any]:
    """`key.sub=value` (the CLI's --set) -> (path, value); the value is read as TOML
    (numbers, booleans, strings, lists, inline tables), else taken as a string; path parts
    that are integers index a list (`arms.0.alpha=[1, 2]`)."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(f"--set {assignment!r}: write key=value, e.g. --set epochs=3 or --set optimizer.eps=1e-10")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return [int(p) if p.isdigit() else p for p in key.split(".")], value


def _path(assignment) -> list:
    return parse_set(assignment)[0] if isinstance(assignment, str) else list(assignment[0])


def _step(node, part, nxt, path):
    """The child `part` of `node` on the way to `path`'s end, made when missing."""
    if isinstance(part, int):
        if not isinstance(node, list) or part >= len(node):
            raise SpecError(f"--set {'.'.join(map(str, path))}: there is no element {part} "
                            f"(the spec has {len(node) if isinstance(node, list) else 0})")
        return node[part]
    if isinstance(node.get(part), str) and not isinstance(nxt, int):
        node[part] = {"name": node[part]}  # optimizer = "sgd", then --set optimizer.momentum=0.9
    elif part not in node or not isinstance(node[part], (dict, list)):
        node[part] = [] if isinstance(nxt, int) else {}
    return node[part]


def apply_sets(data: dict, sets) -> dict:
    """A copy of a spec's data with the assignments made (strings or (path, value) pairs)."""
    data = copy.deepcopy(data)
    for assignment in sets or ():
        path, value = parse_set(assignment) if isinstance(assignment, str) else assignment
        node = data
        for i, part in enumerate(path[:-1]):
            node = _step(node, part, path[i + 1], path)
        last = path[-1]
        if isinstance(last, int):
            if not isinstance(node, list) or last >= len(node):
                raise SpecError(f"--set {'.'.join(map(str, path))}: there is no element {last}")
        node[last] = value
    return data


def set_source(e: ValidationError, sets) -> str | None:
    """`--set KEY` when the first error is at a key an assignment of `sets` wrote (a typo on the
    command line is not the spec file's)."""
    loc = first_error(e)[1]
    for assignment in sets or ():
        path = _path(assignment)
        n = min(len(path), len(loc))
        if n and [str(p) for p in path[:n]] == [str(p) for p in loc[:n]]:
            return f"--set {'.'.join(map(str, path))}"
    return None


def scale_records(settings: dict, cli) -> None:
    """An --epochs override keeps the spec's number of records: its record_every scales with
    the epochs (a digits preset's 700 epochs recorded every 35 become --epochs 70 recorded
    every 4, and --epochs 3 every epoch), unless the command line sets record_every too."""
    if cli.epochs is not None and cli.record_every is None and settings["record_every"] > 1:
        settings["record_every"] = max(1, round(settings["record_every"] * cli.epochs / settings["epochs"]))
