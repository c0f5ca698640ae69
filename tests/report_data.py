"""Build small, real results directories for the report tests (and for looking at figures).

Runs the real engine (`vglab.train.train_group` on the embedded digits set) and stores
every run with `vglab.results.store.write_run`, with run rows carrying exactly the
`runs` columns of DESIGN.md and an `experiment.toml` with `preset` and `dataset`, as the
experiments runner writes them. Doubles as the contract between the store and the report.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

# The `runs` columns of DESIGN.md (diverged_epoch is added by write_run).
RUN_COLUMNS = (
    "run_id", "experiment", "label", "group", "dataset", "network", "depth", "width", "variant",
    "activation", "alpha", "weight_init", "weight_init_spec", "weight_init_kind", "init_scale",
    "bias_init", "penalty", "r", "seed", "epochs", "batch_size", "learning_rate", "train_size",
    "n_params", "n_classes", "n_in", "input_sq_norm", "bias_init_spec", "bias_var",
)


@dataclass(frozen=True)
class Arm:
    """One configuration (without the seed)."""

    init: str = "normal(std=1)"
    penalty: str = "none"  # none | l1 | l2
    r: float = 0.0
    alpha: float = 1.0


@dataclass
class Group:
    """Arms trained together: one network (mlp depth x width, one activation), one init family."""

    depth: int
    width: int
    arms: list[Arm]
    activation: str = "tanh"
    seeds: tuple[int, ...] = (0, 1)
    extra: dict = field(default_factory=dict)


def label_of(activation: str, alpha: float, depth: int, width: int, init_label: str, penalty: str, r: float) -> str:
    act = activation if alpha == 1 else f"{activation} α={alpha:g}"
    pen = "no penalty" if penalty == "none" else f"{penalty.upper()} r={r:g}"
    return f"{act} · mlp {depth}x{width} · {init_label} · {pen}"


def train(groups: list[Group], *, epochs: int = 3, train_size: int | None = 400, dataset: str = "digits",
          verbose: bool = False) -> list[tuple[Arm, int, dict, object]]:
    """Train `groups`; returns (arm, group index, run row without run_id/experiment, RunResult) per run."""
    from vglab.data import prepare
    from vglab.nn.init import parse
    from vglab.nn.networks import mlp
    from vglab.train import Member, TrainConfig, train_group

    import numpy as np

    arrays = prepare(dataset, "mlp", train_size=train_size)
    config = TrainConfig(epochs=epochs)
    x = np.asarray(arrays.x_train, np.float64)  # the facts the runner stores with each run
    facts = {"n_classes": int(arrays.n_classes), "n_in": int(x.shape[1]),
             "input_sq_norm": float(np.mean(np.sum(x * x, axis=1)))}
    out = []
    for gi, g in enumerate(groups):
        net = mlp(g.depth, g.width, arrays.x_train.shape[1], arrays.n_classes, g.activation)
        members, rows = [], []
        for seed in g.seeds:
            for arm in g.arms:
                law = parse(arm.init)
                members.append(Member(seed=seed, weight_init=law, alpha=arm.alpha,
                                      l1=arm.r if arm.penalty == "l1" else 0.0,
                                      l2=arm.r if arm.penalty == "l2" else 0.0))
                rows.append((arm, {
                    "label": label_of(g.activation, arm.alpha, g.depth, g.width, law.label, arm.penalty, arm.r),
                    "group": f"g{gi}", "dataset": dataset, "network": "mlp", "depth": g.depth,
                    "width": g.width, "variant": None, "activation": g.activation, "alpha": float(arm.alpha),
                    "weight_init": law.label, "weight_init_spec": law.spec, "weight_init_kind": law.kind,
                    "init_scale": float("nan") if law.fan_scaled else float(law.value),
                    "bias_init": members[-1].bias_law.label, "bias_init_spec": members[-1].bias_law.spec,
                    "bias_var": members[-1].bias_law.variance(), "penalty": arm.penalty,
                    "r": float(arm.r) if arm.penalty != "none" else 0.0, "seed": seed, "epochs": epochs,
                    "batch_size": config.batch_size, "learning_rate": config.learning_rate,
                    "train_size": train_size, "n_params": net.n_params, **facts,
                }))
        t0 = time.time()
        results = train_group(net, arrays, members, config)
        if verbose:
            print(f"group {gi} ({net.name}, {len(members)} members): {time.time() - t0:.1f}s", flush=True)
        out += [(arm, gi, row, res) for (arm, row), res in zip(rows, results)]
    return out


def write(out: Path, preset: str, runs, *, dataset: str = "digits", epochs: int = 3, train_size: int | None = 400,
          seconds: float = 0.0) -> Path:
    """Store trained `runs` (from `train`) as the results directory of `preset`."""
    import jax
    import numpy
    import pandas

    from vglab.results import store

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for n, (_, _, row, res) in enumerate(runs):
        run_id = f"{preset}-{n:04d}"
        store.write_run(out, run_id, {"run_id": run_id, "experiment": preset, **row}, res)
    (out / "experiment.toml").write_text(
        f'preset = "{preset}"\ndataset = "{dataset}"\nepochs = {epochs}\ntrain_size = {train_size or 0}\n'
        f'description = "test fixture for the report"\n'
    )
    (out / "meta.json").write_text(json.dumps({
        "versions": {"vglab": "test", "jax": jax.__version__, "numpy": numpy.__version__, "pandas": pandas.__version__},
        "seconds": round(seconds, 2),
    }, indent=2))
    return out


def build(out: Path, preset: str, groups: list[Group], *, epochs: int = 3, train_size: int | None = 400,
          dataset: str = "digits", verbose: bool = False) -> Path:
    """Train `groups` and store them under `out` as the results of `preset`."""
    t0 = time.time()
    runs = train(groups, epochs=epochs, train_size=train_size, dataset=dataset, verbose=verbose)
    return write(out, preset, runs, dataset=dataset, epochs=epochs, train_size=train_size, seconds=time.time() - t0)


# ------------------------------------------------------------- the test fixture
N10, N1, N005 = "normal(std=10)", "normal(std=1)", "normal(std=0.05)"
FIXTURE_GROUPS = [
    Group(4, 8, [Arm(N1), Arm(N10), Arm(N10, "l1", 0.01), Arm(N10, "l2", 0.001), Arm(N10, "l2", 0.01),
                 Arm(N10, "l2", 0.3), Arm(N10, alpha=2.0), Arm(N10, "l2", 0.01, 2.0), Arm(N005), Arm(N005, alpha=2.0)]),
    Group(1, 8, [Arm(N005)]),
    Group(4, 8, [Arm("glorot_uniform")], activation="relu"),
]
# which arms (group index, Arm) each preset's directory holds
FIXTURE_PRESETS = {
    "large-params": lambda a, gi: gi == 0 and a.penalty == "none" and a.alpha == 1 and a.init in (N1, N10),
    "regularization": lambda a, gi: gi == 0 and a.alpha == 1 and a.init in (N1, N10) and a.r in (0, 0.01),
    "r-sweep": lambda a, gi: gi == 0 and a.alpha == 1 and a.init == N10,
    "vs-relu": lambda a, gi: (gi == 0 and a.alpha == 1 and a.init == N10 and a.r in (0, 0.01)) or gi == 2,
    "many-layers": lambda a, gi: a.init == N005 and a.penalty == "none",
    "rescaling-by-init": lambda a, gi: gi == 0 and a.penalty == "none" and a.init in (N005, N10),
    "combined": lambda a, gi: gi == 0 and a.init == N10 and a.r in (0, 0.01) and a.penalty != "l1",
    "alpha-sweep": lambda a, gi: gi == 0 and a.init == N005,
    "super-large": lambda a, gi: gi == 0 and a.init == N10 and a.alpha == 1 and a.r in (0, 0.01) and a.penalty != "l1",
    "uniform-large": lambda a, gi: gi == 0 and a.init == N10 and a.alpha == 1 and a.r in (0, 0.01),
}
FIXTURE_EPOCHS, FIXTURE_TRAIN_SIZE = 3, 400


def build_fixture(root: Path, verbose: bool = False) -> dict[str, Path]:
    """Train the fixture groups once (three compiled groups) and store one results directory
    per preset under `root`, each holding the arms that preset compares."""
    t0 = time.time()
    runs = train(FIXTURE_GROUPS, epochs=FIXTURE_EPOCHS, train_size=FIXTURE_TRAIN_SIZE, verbose=verbose)
    seconds = time.time() - t0
    out = {}
    for preset, keep in FIXTURE_PRESETS.items():
        mine = [r for r in runs if keep(r[0], r[1])]
        out[preset] = write(Path(root) / preset, preset, mine, epochs=FIXTURE_EPOCHS,
                            train_size=FIXTURE_TRAIN_SIZE, seconds=seconds)
    return out


_BUILT: dict = {}
# What the fixture's content depends on: rebuilt (not reused from the pytest cache) when any
# changes. Whole packages, not a list of files, so that a module the training starts to use is
# never left out (a hand-kept list missed nn/formulas.py; test_report_html checks the imports).
_PACKAGES = ("data", "nn", "train", "results")


def _sources() -> list[str]:
    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "src" / "vglab").glob("*.py")) + [  # the package face and vglab.schema
        p for pkg in _PACKAGES for p in sorted((root / "src" / "vglab" / pkg).rglob("*"))
        if p.suffix in (".py", ".json") and "__pycache__" not in p.parts]
    return ["tests/report_data.py"] + [p.relative_to(root).as_posix() for p in files]


def _key() -> str:
    import hashlib

    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for rel in _sources():
        f = root / rel
        h.update(rel.encode() + (f.read_bytes() if f.exists() else b"-"))
    return h.hexdigest()[:16]


_LOCK = "build.lock"


@contextlib.contextmanager
def _locked(folder: Path):
    """Hold an exclusive lock on `folder` (a file lock: released if the process dies). The
    fixture takes ~50 s of CPU to build; two xdist workers that both miss the cache used to
    build it twice at once."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / _LOCK, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def fixture_dirs(cache_root: Path | None = None) -> dict[str, Path]:
    """The fixture, built once per test process. With `cache_root` (pytest's cache folder)
    it is kept there between sessions, keyed by a hash of the sources it depends on; else
    it lives in a temporary folder removed at exit."""
    if "dirs" in _BUILT:
        return _BUILT["dirs"]
    import shutil
    import tempfile

    if cache_root is not None:
        final = Path(cache_root) / _key()
        with _locked(Path(cache_root)):  # the other xdist worker waits for this build, not repeats it
            if not (final / "COMPLETE").exists():
                for old in Path(cache_root).iterdir():
                    if old.name != _LOCK:
                        shutil.rmtree(old, ignore_errors=True)  # stale builds
                work = Path(tempfile.mkdtemp(prefix="build-", dir=cache_root))
                build_fixture(work)
                (work / "COMPLETE").write_text("")
                work.rename(final)
        _BUILT["dirs"] = {p: final / p for p in FIXTURE_PRESETS}
        return _BUILT["dirs"]
    import atexit

    root = Path(tempfile.mkdtemp(prefix="vglab-report-fixture-"))
    atexit.register(shutil.rmtree, root, True)
    _BUILT["dirs"] = build_fixture(root)
    return _BUILT["dirs"]


def copy_of(preset: str, dest: Path) -> Path:
    """A private, editable copy of one fixture directory (without any report in it)."""
    import shutil

    src = _BUILT["dirs"][preset]
    return Path(shutil.copytree(src, Path(dest) / preset, ignore=shutil.ignore_patterns("report.html", "figures")))


try:  # the session fixture the report tests share
    import pytest

    @pytest.fixture(scope="session")
    def report_dirs(request) -> dict[str, Path]:
        """{preset: results directory} of the real-engine fixture (read-only: use `copy_of` to edit)."""
        cache = getattr(request.config, "cache", None)
        return fixture_dirs(cache.mkdir("vglab-report-fixture") if cache is not None else None)
except ImportError:  # used outside pytest (dev scripts)
    pass
