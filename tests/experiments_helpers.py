"""Shared pieces of the experiments / CLI / store / Ray tests: a tiny spec, a private
cache, and a way to run the `vglab` command in a subprocess.

The tiny spec trains on 256 digits for 2 epochs with 4-unit MLPs, so every group costs
about its compile time; the run's JAX compilation cache ($VGLAB_JAX_CACHE, made by the
root conftest.py for the whole pytest run) makes every later process, in either xdist
worker, load those programs instead of compiling them again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Three init kinds = three groups; two seeds = six units (two runs per normal unit).
TINY = """\
description = "tiny test spec"
dataset = "digits"
train_size = 256
epochs = 2
seeds = 2
network = "mlp"
depth = 1
width = 4
probes = {probes}

[[arms]]
init = ["normal(std=1)", "normal(std=10)"]

[[arms]]
init = ["uniform(a=1)", "glorot_uniform"]
"""


def write_spec(folder: Path, name: str = "tiny", probes: str = '["grad_moments"]', extra: str = "") -> Path:
    path = Path(folder) / f"{name}.toml"
    path.write_text(TINY.format(probes=probes) + extra)
    return path


def real_data(folder: str) -> Path:
    """Where the real `folder` (mnist, cifar10) is, as the README promises the slow tests look:
    $VGLAB_DATA, then ../shared/data beside the repository; skip the test when neither holds it."""
    candidates = [Path(p) for p in [os.environ.get("VGLAB_DATA")] if p] + [
        Path(__file__).resolve().parents[1] / ".." / "shared" / "data"]
    for data in candidates:
        if (data / folder).is_dir():
            return data
    pytest.skip(f"needs {folder}/ in $VGLAB_DATA or ../shared/data (looked in {', '.join(map(str, candidates))})")


@pytest.fixture(scope="session")
def vglab_cache(tmp_path_factory) -> Path:
    """One private vglab cache (PCA, the digits split) for the session's processes (compiled
    programs go to the run's $VGLAB_JAX_CACHE)."""
    cache = tmp_path_factory.mktemp("vglab-cache")
    old = os.environ.get("VGLAB_CACHE")
    os.environ["VGLAB_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("VGLAB_CACHE", None)
    else:
        os.environ["VGLAB_CACHE"] = old


def vglab(*args, check: bool = False, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m vglab.cli ARGS` (the environment, with VGLAB_CACHE, is inherited)."""
    proc = subprocess.run([sys.executable, "-m", "vglab.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"vglab {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def epochs_table(out: Path):
    """The epochs table without the timing column, in a canonical order (for equality)."""
    from vglab.results import load

    e = load(out).epochs.drop(columns="seconds")
    return e.sort_values(["run_id", "epoch"]).reset_index(drop=True)


def runs_table(out: Path):
    from vglab.results import load

    r = load(out).runs
    return r.sort_values("run_id").reset_index(drop=True)
