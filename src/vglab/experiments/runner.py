"""Run experiments into results directories: plan, train (local workers or Ray), store.

`run_experiments(specs, outs)` in order:
0. Check what can be checked without the folders (`_validate_before_writing`): names,
   sizes against `schema.LIMITS`, workers, the device, the script's main guard.
1. Lock every output directory (`store.locked`): a second writer fails at once.
2. Check `experiment.toml`: a directory holds one experiment; a different spec there is
   refused if the folder holds complete runs (unless `overwrite`, which deletes them);
   one without complete runs is simply replaced.
3. Find the pending runs (those without DONE). A unit (a group's runs with one seed, see
   expansion.py) with any pending run is trained again whole, so that every run's numbers are
   what an uninterrupted sweep computes; only its missing runs are written.
4. Prepare each dataset once here: fails early if it is missing, fits the PCA once
   (cached on disk) instead of once per worker, and gives the input shape; a batch larger
   than the training set fails here too. Only then is anything written: the resolved
   spec (experiment.toml), the deletions of `overwrite`, meta.json.
5. Form tasks: a group's pending units run in one task (one compile). A unit that takes
   longer to train than its group takes to compile gets a task of its own, and tasks
   are split further while there are fewer of them than workers. Order: each program's
   first task (largest first), then the experiments with the biggest reports (see `_tasks`).
6. Train them (`vglab.train.parallel.run_tasks`, which keeps each program on one worker,
   or Ray) and write each unit's runs the
   moment it arrives (`store.write_run`: atomic files, DONE last) plus, on request,
   TensorBoard events. A SIGKILL loses at most the units in flight.
7. meta.json: versions, machine, and one record per invocation (timings, tasks).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import html
import json
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from vglab.experiments.errors import SpecError
from vglab.experiments.expansion import ExperimentSpec
from vglab.experiments.presets import own_figures
from vglab.experiments.progress import NoProgress
from vglab.experiments.runs import Unit
from vglab.experiments.schema import SETTINGS, check_limit
from vglab.experiments.spec import check_sizes, load_spec
from vglab.results import store
from vglab.schema import EXPLODE_DECADES, REPORT_PANELS, VANISH_DECADES
from vglab.train import parallel
from vglab.train.flat import Flat
from vglab.train.loop import penalty_terms, scan_cost

EXECUTORS = ("local", "ray")
ONE_RUN_INPUTS = ("images",)  # image models are trained one run per unit on CPU (see ExperimentSpec.units)
DEFAULT_ROOT = Path("vglab-results")
@dataclass(frozen=True)
class CostModel:
    """Seconds a task takes on one worker (`estimate`): to order tasks, decide splits, print
    the plan and the progress ETA. A step costs `step_overhead_s`, plus `layer_step_s` per
    layer (many small ops), plus its multiply-accumulates (forward + backward = 3 forwards)
    at `macs_per_s`; a record (validation, the probe batch's layer factors) likewise;
    compiling a group's programs `compile_s` plus per layer, plus per convolution MAC; a
    variant of a model already compiled (another optimizer or penalty: only its training
    step is new, the evaluation and probe programs are shared) `variant_s` plus
    `variant_s_per_layer` per layer (measured: 7 s for a 20x8 MLP whose first program took
    17 s, 3.5 s for a 1x8 one, on one core). A report page (`report_seconds`, drawn on one
    CPU core): `report_s`, plus `report_s_per_run` (reading each run's tables, the
    Diagnosis' per-run tables), plus `report_s_per_flagged_cell` per (run, record, hidden
    layer) whose gradient vanished or exploded, where the Diagnosis looks up the layer
    factors (1.1 ms a cell; before the Diagnosis read each run's factors once per record,
    34 s of alpha-sweep's 41 s page on digits went to its 6831 such cells of 8100). Which
    vanish is known only after training: the plan counts those the mean-field theory predicts at init
    (`flagged_cells`, `report_features`' "flagged"), plus
    `report_s_per_panel` per configuration and layer and `report_s_per_config_panel` per
    configuration, the configurations capped at REPORT_PANELS (the report draws at most
    that many per figure), plus `report_s_per_config` per configuration uncapped (the
    gradient-flow heatmap draws every one: 2.5 s of rescaling-by-init's 14 s page on MNIST);
    a preset that draws its own page (`presets.Preset.figures`) its own few figures instead,
    `report_s_own_page`, plus per figure that costs by configuration
    `report_s_per_figure_config[name]` per configuration (deep-remedies' Jacobian spectra draw
    each deep configuration's init again and differentiate it: most of its page).
    The constants live in costs.json (`COSTS_FILE`), fitted by `benchmarks/cost_model.py
    --calibrate` from the CPU seconds that runs record in meta.json."""

    calibrated: str  # where and how the constants were measured
    compile_s: float
    compile_s_per_layer: dict
    compile_s_per_conv_mac: float
    step_overhead_s: float
    layer_step_s: dict
    macs_per_s: dict
    record_s: float
    layer_record_s: dict
    load_s: float  # a program another task compiled, loaded from the compilation cache
    compile_s_per_penalty: float = 0.0  # each penalty term (L1, L2) the program computes
    report_s: float = 0.0
    report_s_per_run: float = 0.0
    report_s_per_flagged_cell: float = 0.0  # the Diagnosis, per (run, record, layer) expected to vanish or explode
    report_s_per_panel: float = 0.0
    report_s_per_config_panel: float = 0.0
    report_s_per_config: float = 0.0
    report_s_own_page: float = 0.0  # a page that draws its own figures instead (`presets.Preset.figures`)
    report_s_per_figure_config: dict = field(default_factory=dict)  # own figure name -> seconds per configuration
    variant_s: float | None = None  # None: not calibrated (the GPU's), a variant costs a full compile
    variant_s_per_layer: float = 0.0


# The calibrations, one home: costs.json beside this file ("cpu": one core, the unit of every
# CPU plan; "gpu": one process on a GPU, reports still drawn on the CPU). Each says what it
# was measured on ("calibrated", "machine", "date", "versions") and how it was fitted.
COSTS_FILE = Path(__file__).with_name("costs.json")
# The share of a network's cells flagged where the theory cannot say: the calibration runs'
# CNNs had 21-75 % (digits: cnn-large-params 50 of 240, paper-cnn-many-layers 518 of 900).
UNPREDICTED_SHARE = 0.5


def load_costs(device: str, path: Path = COSTS_FILE) -> CostModel:
    """The calibration for `device` ("cpu" | "gpu") from `path`."""
    entry = json.loads(Path(path).read_text(encoding="utf-8"))[device]
    names = {f for f in CostModel.__dataclass_fields__}
    return CostModel(calibrated=entry["calibrated"], **{k: v for k, v in entry["constants"].items() if k in names})


CPU_COSTS = load_costs("cpu")
GPU_COSTS = load_costs("gpu")


def cost_model(on_gpu: bool) -> CostModel:
    """The calibration for where a task trains."""
    return GPU_COSTS if on_gpu else CPU_COSTS


PROBE_BATCH = 512
# On CPU, MLP units hold at most 8 runs. A small net's unit trains as a grid of 8 members
# (the copies are trained and discarded): its extra members cost little, while every
# distinct grid size is another program to compile (10-30 s on one core). A large net's
# members cost their multiply-adds each, so its unit trains exactly its runs.
MLP_SLOTS = 8
PAD_MACS = 16384  # multiply-adds per example of one member, up to which a unit is padded (`grid_slots`)


def grid_slots(kind: str, runs: int, network) -> int:
    """Members a unit (a task's units) of at most `runs` runs of `network` trains with: MLP
    units of nets of at most `PAD_MACS` multiply-adds per member and example are padded to
    `MLP_SLOTS`; all others train exactly their runs. Measured (CPU seconds per digits epoch
    with its record, batch 64, one single-threaded worker, deep-remedies' groups, 2026-12-07;
    members = max(runs, slots)): 20x8 (1.5 k MACs) 0.027 with 1 member, 0.079 with 8; 20x32
    (21 k) 0.087 with 3, 0.23 with 8; 20x64 (80 k) 0.16 / 0.68; 20x128 (316 k) 0.76 / 2.5;
    50x128 (808 k) 2.3 / 7.1. Padding a 20x8 unit costs 0.4 s over 8 digits epochs, against
    the ~17 s compile of another grid size that it saves; from ~16 k MACs on (20x32: 1.6 s on
    digits, ~11 s on 10000 MNIST examples) it costs a compile's worth per unit. Every
    reference preset's net is far below (at most 20x8: 7.6 k MACs on MNIST's raw pixels)."""
    if kind != "mlp":
        return runs
    return max(runs, MLP_SLOTS) if sum(_macs(network).values()) <= PAD_MACS else runs


def default_out(spec: ExperimentSpec, root: Path | str = DEFAULT_ROOT) -> Path:
    """`vglab-results/<dataset>/<experiment>`, the dataset by its short name (an .npz file's
    stem, `arrays-<hash>` for arrays from Python: `vglab.data.own.dataset_name`)."""
    from vglab.data.own import dataset_name

    return Path(root) / dataset_name(spec.dataset) / spec.name


# ------------------------------------------------------------------ worker side
@dataclass(frozen=True)
class DataKey:
    """What a prepared dataset depends on (one `prepare` per key and process)."""

    dataset: str
    kind: str  # mlp (flat features) | cnn (images)
    data_dir: str | None
    train_size: int | None
    pca: float | bool | None  # None: the dataset's default


@functools.lru_cache(maxsize=2)
def _arrays(key: DataKey):
    """The prepared dataset, memoized per process. One BLAS thread: the PCA projection's
    float32 rounding depends on how many threads split the matrix product, and a worker
    has one, so this process must too for the same numbers."""
    from threadpoolctl import threadpool_limits

    from vglab.data import prepare

    variance = "auto" if key.pca is None else (key.pca or None)
    with threadpool_limits(limits=1):
        return prepare(key.dataset, key.kind, key.data_dir, variance=variance, train_size=key.train_size)


@functools.lru_cache(maxsize=2)
def _input_facts(key: DataKey) -> dict:
    """What the report's theory needs of the inputs as the model sees them, measured here
    and stored with each run: the input width n_in and E‖x‖² over the training inputs."""
    import numpy as np

    x = np.asarray(_arrays(key).x_train, np.float64).reshape(len(_arrays(key).x_train), -1)
    return {"n_in": int(x.shape[1]), "input_sq_norm": float(np.mean(np.sum(x * x, axis=1)))}


def _data_key(run, data_dir) -> DataKey:
    return DataKey(run.dataset, run.model_spec().kind, None if data_dir is None else str(data_dir), run.train_size,
                   run.pca)


@dataclass(frozen=True)
class EpochEvent:
    """What a task emits after each recorded epoch of a unit (epoch 0: at initialization).
    `metrics` (the engine's per-member numpy arrays, final gradients left out) only when
    the task asked for them (`Task.live`: live TensorBoard events)."""

    unit: str
    epoch: int
    epochs: int  # the unit's last epoch
    layers: tuple[str, ...] = ()  # layer names, in network order (with metrics)
    tensors: tuple[tuple[str, str], ...] = ()  # (layer, param) of each gradient tensor (with metrics)
    metrics: dict | None = None


def _live_metrics(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith("final_grad")}


@dataclass(frozen=True)
class Task:
    """What a worker trains: one group's units (same model, data and training config)."""

    data: DataKey
    model: object  # vglab.experiments.runs.ModelSpec
    config: object  # vglab.train.TrainConfig, shared by the units' runs
    units: tuple  # ((unit id, (Member, ...)), ...)
    slots: int  # the grid's members, every unit's (`grid_slots` of the task's group: one program)
    live: bool = False  # emit each record's metrics (live TensorBoard events)


@dataclass(frozen=True)
class PlannedTask:
    """A task as the runner schedules it: `task` is what a worker trains."""

    seconds: float  # estimated: compiling its program (if first) and training its units, one core
    key: str  # its name in the progress display and meta.json: "<first unit id>+<more units>"
    task: Task
    units: tuple[Unit, ...]
    program: tuple  # what its compiled programs depend on: tasks of one program share them
    experiment: int  # index of its experiment (job)


@dataclass(frozen=True)
class Placement:
    """Where a command's tasks run, resolved once (`placement`): the executor, a Ray
    cluster's address, the device asked for, the workers asked for (None: the default) and
    how many there are, and whether they train on a GPU."""

    executor: str = "local"
    address: str | None = None
    device: str | None = None
    workers: int | None = None
    n_workers: int = 1
    on_gpu: bool = False

    @property
    def on_this_machine(self) -> bool:
        return self.executor == "local" or not self.address


def placement(workers: int | None = None, executor: str = "local", address: str | None = None,
              device: str | None = None) -> Placement:
    """The checked `Placement` of these options (a cluster's workers are known once connected)."""
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {list(EXECUTORS)}")
    if address and executor != "ray":
        raise ValueError("--address names a Ray cluster; use it with --executor ray")
    if device not in (None, "auto", "cpu", "gpu"):
        raise ValueError(f"unknown device {device!r}; choose one of ['auto', 'cpu', 'gpu']")
    on_gpu = device == "gpu" or (device in (None, "auto") and _gpu_likely())
    return Placement(executor, address, device, workers, _resolve_workers(workers, executor, device), on_gpu)


def train_task(task: Task, emit) -> dict:
    """Train a task's units one after another (in a worker, a Ray task or this process).

    Emits ("epoch", EpochEvent) after every recorded epoch, ("compiled", None) once its programs
    have all run (so they are in the compilation cache: after the first unit), and ("unit", {...}) with a unit's
    `RunResult`s as soon as it is trained; returns what the backend was."""
    import jax

    from vglab.train import train_group

    compile0, hits0, cpu0, wall0 = parallel.compile_seconds(), parallel.cache_hits(), time.process_time(), time.perf_counter()
    arrays = _arrays(task.data)
    model = task.model.build(arrays.x_train.shape[1:], arrays.n_classes)
    n_params = model.layout().n_params
    layout = model.layout()
    layers = tuple(layout.names) if task.live else ()
    tensors = tuple((t.layer, t.param) for t in layout.tensors) if task.live else ()

    def on_epoch(unit_id, epoch, metrics):
        emit("epoch", EpochEvent(unit_id, int(epoch), task.config.epochs, layers, tensors,
                                 _live_metrics(metrics) if task.live else None))

    unit_cpu, share = [], 1.0
    for i, (unit_id, members) in enumerate(task.units):
        t0, c0 = time.perf_counter(), time.process_time()
        results = train_group(model, arrays, list(members), task.config, min_slots=task.slots,
                              on_epoch=functools.partial(on_epoch, unit_id))
        unit_cpu.append(time.process_time() - c0)
        if i == 0:  # epoch, observe and end_grads have all run
            emit("compiled")
            share = min(1.0, (time.process_time() - cpu0) / max(time.perf_counter() - wall0, 1e-9))
        emit("unit", {"unit": unit_id, "results": results, "seconds": time.perf_counter() - t0,
                      "cpu_seconds": unit_cpu[-1], "n_params": n_params, "n_train": int(arrays.x_train.shape[0]),
                      "n_classes": int(arrays.n_classes),
                      "facts": {**_input_facts(task.data), "activation": model.activation}})
    compile_s = parallel.compile_seconds() - compile0
    # CPU seconds (this process's) are what the cost model is calibrated in: on a shared
    # machine wall time is inflated by the others. JAX reports compiling in wall seconds;
    # times the share of a core this process had while compiling (the first unit) it is CPU.
    compile_cpu = min(compile_s * share, unit_cpu[0] if unit_cpu else compile_s)
    return {"backend": jax.default_backend(), "device": str(jax.devices()[0]), "pid": os.getpid(),
            "compile_seconds": compile_s, "compile_cpu_seconds": compile_cpu, "cache_hits": parallel.cache_hits() - hits0,
            "cpu_seconds": time.process_time() - cpu0, "unit_cpu_seconds": unit_cpu}


# ------------------------------------------------------------------ planning
@dataclass
class _Job:
    """One experiment being run: its spec, directory and pending work."""

    spec: ExperimentSpec
    out: Path
    done: set[str]
    units: list[Unit] = field(default_factory=list)  # units with a pending run
    unit_seconds: float = 0.0
    written: int = 0
    skipped: int = 0  # complete before this invocation

    @property
    def pending_runs(self) -> int:
        return sum(r.run_id not in self.done for u in self.units for r in u.runs)


def _check_out(spec: ExperimentSpec, out: Path, overwrite: bool) -> tuple[set[str], bool]:
    """(ids of the complete runs, whether the folder's old contents go): `out` must hold
    this experiment, nothing, or no complete run. Reads only. Call with the lock held."""
    new = spec.to_dict()
    f = out / "experiment.toml"
    done = store.completed_run_ids(out)
    old = store.read_spec(out)  # None: missing or damaged
    if not done:  # nothing to keep: an old experiment.toml (and what was made with it) is replaced
        return done, f.exists() and (old is None or old.get("fingerprint") != new["fingerprint"])
    ours = {r.run_id for r in spec.expand()}
    # A damaged or missing experiment.toml beside runs of this very spec is rewritten.
    foreign = old.get("fingerprint") != new["fingerprint"] if old is not None else not done <= ours
    if foreign:
        if not overwrite:
            if old is None:
                why = (f"{len(done)} complete runs of another experiment and "
                       f"{'a damaged' if f.exists() else 'no'} experiment.toml")
            else:
                keys = ("name", *SETTINGS, "learning_rate", "arms")
                diff = [k for k in keys if old.get(k) != new.get(k)] or ["runs"]
                why = f"results of a different experiment (differs in: {', '.join(diff)})"
            raise store.StoreError(f"{out} holds {why}; choose another {store.option('out')}, or pass "
                                   f"{store.option('overwrite')} to delete them")
        return set(), True
    return done, False


def _clear_out(out: Path) -> None:
    """Delete what a folder holds about another experiment: its runs and everything made
    from them (TensorBoard events, meta.json, the report and its figures, and the
    `reproduce` index beside it when that links to this report)."""
    for sub in (store.RUNS, "tensorboard", "figures"):
        shutil.rmtree(out / sub, ignore_errors=True)
    for name in ("meta.json", "report.html"):
        (out / name).unlink(missing_ok=True)
    index = out.parent / "index.html"
    with contextlib.suppress(OSError, ValueError):
        if f'href="{html.escape(out.name)}/report.html' in index.read_text(encoding="utf-8"):
            index.unlink()


def _open_out(spec: ExperimentSpec, out: Path) -> None:
    """Write experiment.toml (kept when unchanged: reports compare their time against it)."""
    import tomli_w

    f = out / "experiment.toml"
    text = tomli_w.dumps(spec.to_dict())
    if not f.exists() or store.read_spec(out) is None or f.read_text(encoding="utf-8") != text:
        store.atomic_write_text(f, text)


def _macs(network) -> dict[str, int]:
    """Multiply-accumulates of one forward pass of one example, by layer kind (your own
    models: every weight used once per example, a rough floor)."""
    macs = {"dense": 0, "conv": 0}
    if not hasattr(network, "layers"):
        return {"dense": network.layout().n_params, "conv": 0}
    h, w = (network.in_shape[:2] if len(network.in_shape) == 3 else (1, 1))
    for layer in network.layers:
        if layer.kind == "conv":
            macs["conv"] += h * w * layer.fan_in * layer.w_shape[-1]
            if layer.pool_after:
                h, w = h // 2, w // 2
        else:
            macs["dense"] += layer.fan_in * layer.fan_out
    return macs


def _layer_kinds(network) -> dict[str, int]:
    """How many dense and conv layers (your own models: all counted as dense)."""
    if not hasattr(network, "layers"):
        return {"dense": len(network.layout().layers), "conv": 0}
    kinds = {"dense": 0, "conv": 0}
    for layer in network.layers:
        kinds["conv" if layer.kind == "conv" else "dense"] += 1
    return kinds


def task_features(network, spec: ExperimentSpec, n_train: int, n_test: int, members: int, penalties: int = 0) -> dict:
    """What the cost model reads of a group's program and one unit of `members` (recorded
    per task in meta.json, where `benchmarks/cost_model.py --calibrate` fits the constants).
    `scanned_layers` and `scan_step_s`: the engine's choice to scan the model's runs of
    identical layers (`train.loop.scan_pays`), which it compiles once per run and steps
    through more slowly."""
    layers, macs = _layer_kinds(network), _macs(network)
    records = len(set(range(spec.record_every, spec.epochs + 1, spec.record_every)) | {spec.epochs}) + 1
    steps = spec.epochs * (n_train // spec.batch_size)
    scan = _scan_cost(network, members)
    scanned = scan is not None and scan.saved_s > steps * scan.step_s
    return {"dense_layers": layers["dense"], "conv_layers": layers["conv"], "dense_macs": macs["dense"],
            "conv_macs": macs["conv"], "members": members, "batch_size": spec.batch_size,
            "steps": steps, "records": records, "n_test": n_test, "penalties": penalties,
            "scanned_layers": scan.scanned_layers if scanned else 0, "scan_step_s": scan.step_s if scanned else 0.0}


def _scan_cost(network, members: int):
    """The engine's `ScanCost` of a model with runs of identical layers (None without)."""
    if not getattr(network, "layer_runs", None):
        return None
    flat = Flat.of(network.layout(), swap_matrices=network.weight_layout == "in_out").with_runs(network.layer_runs)
    return scan_cost(flat, members) if flat.runs is not None else None


def compiled_layers(f: dict) -> int:
    """The dense and conv layers a program compiles one by one (a scanned run: once)."""
    return f["dense_layers"] - f.get("scanned_layers", 0) + f["conv_layers"]


def _step_seconds(f: dict, costs: CostModel) -> float:
    """One optimizer step of a unit (one worker)."""
    forward = f["dense_macs"] / costs.macs_per_s["dense"] + f["conv_macs"] / costs.macs_per_s["conv"]  # one example
    return (costs.step_overhead_s + f["dense_layers"] * costs.layer_step_s["dense"]
            + f["conv_layers"] * costs.layer_step_s["conv"] + f.get("scan_step_s", 0.0)
            + 3 * f["members"] * f["batch_size"] * forward)  # forward + backward: about 3 forwards


def _record_seconds(f: dict, costs: CostModel) -> float:
    """One record: validation on the test set, the probe batch's layer factors (one worker)."""
    forward = f["dense_macs"] / costs.macs_per_s["dense"] + f["conv_macs"] / costs.macs_per_s["conv"]
    return (costs.record_s + f["dense_layers"] * costs.layer_record_s["dense"]
            + f["conv_layers"] * costs.layer_record_s["conv"] + f["members"] * (f["n_test"] + PROBE_BATCH) * forward)


def estimate(f: dict, costs: CostModel = CPU_COSTS) -> tuple[float, float]:
    """(seconds to compile the group's programs, seconds to train one unit) on one worker,
    from a task's features (`task_features`) and `costs`."""
    compile_s = (costs.compile_s + (f["dense_layers"] - f.get("scanned_layers", 0)) * costs.compile_s_per_layer["dense"]
                 + f["conv_layers"] * costs.compile_s_per_layer["conv"] + costs.compile_s_per_conv_mac * f["conv_macs"]
                 + costs.compile_s_per_penalty * f.get("penalties", 0))
    return compile_s, f["steps"] * _step_seconds(f, costs) + f["records"] * _record_seconds(f, costs)


def variant_seconds(f: dict, costs: CostModel = CPU_COSTS) -> float:
    """Compiling a program whose model (`program_family`) another program compiled already:
    its training step (another optimizer, penalty or batch size); the rest is shared."""
    if costs.variant_s is None:
        return estimate(f, costs)[0]
    return costs.variant_s + costs.variant_s_per_layer * compiled_layers(f)


def program_family(program: tuple) -> tuple:
    """What a task's compiled programs (`_tasks`' program: data, model, grid, config,
    penalties) share with other programs of the same model: the evaluation and probe
    programs depend on the data, network, grid and probes, not on the optimizer or the
    penalties (measured: super-large's program after large-params' compiled in 1.1 s of 2.2)."""
    data, model, slots, config = program[:4]
    return data, model, slots, config.probes, config.probe_batch_size, config.eval_chunk


def _key_hash(x) -> str:
    """A short name for a program or family, recorded with a task's features in meta.json."""
    return hashlib.sha1(repr(x).encode()).hexdigest()[:12]


def compile_shares(tasks: list[dict]) -> dict[str, float]:
    """Seconds of compiling (and loading from the cache) per experiment, from
    [{"experiment", "family", "seconds"}] (one per task): each program family's seconds
    summed and split evenly between the experiments that train it. Which experiment's
    task compiles a shared model first depends on the schedule; split, the plan and a
    run's measurement (`benchmarks/cost_model.py`) count the same thing."""
    total: dict[str, float] = {}
    users: dict[str, set] = {}
    for t in tasks:
        total[t["family"]] = total.get(t["family"], 0.0) + t["seconds"]
        users.setdefault(t["family"], set()).add(t["experiment"])
    out: dict[str, float] = {}
    for fam, seconds in total.items():
        for name in users[fam]:
            out[name] = out.get(name, 0.0) + seconds / len(users[fam])
    return out


def _costs(network, spec: ExperimentSpec, n_train: int, n_test: int, members: int,
           costs: CostModel = CPU_COSTS, penalties: int = 0) -> tuple[float, float]:
    """(seconds to compile the group's programs, seconds to train one unit of `members`)
    on one worker, from `costs`."""
    return estimate(task_features(network, spec, n_train, n_test, members, penalties), costs)


@dataclass
class _Draft:
    """A task being formed: a chunk of one group's units and the group's estimates."""

    compile_s: float
    unit_s: float
    slots: int  # `grid_slots` of the group
    experiment: int
    data: DataKey
    model: object
    config: object
    units: list[Unit]


def _drafts(jobs: list[_Job], data_dir, shapes: dict, costs: CostModel) -> tuple[list[_Draft], dict[int, int]]:
    """Per group, one draft of all its pending units (one compile), or one per unit when a
    unit trains longer than its group compiles; and each experiment's deepest network's layers."""
    drafts, layers = [], {}
    for j, job in enumerate(jobs):
        by_group: dict[str, list[Unit]] = {}
        for unit in job.units:
            by_group.setdefault(unit.group, []).append(unit)
        for units in by_group.values():
            r = units[0].runs[0]
            data, model = _data_key(r, data_dir), r.model_spec()
            arrays = shapes[data]
            network = model.build(arrays.x_train.shape[1:], arrays.n_classes)
            layers[j] = max(layers.get(j, 0), len(network.layout().layers))
            slots = grid_slots(data.kind, max(len(u.runs) for u in units), network)
            compile_s, unit_s = _costs(network, job.spec, arrays.x_train.shape[0], arrays.x_test.shape[0], slots,
                                       costs, len(penalty_terms([r.member() for u in units for r in u.runs])))
            for chunk in [[u] for u in units] if unit_s > compile_s else [units]:
                drafts.append(_Draft(compile_s, unit_s, slots, j, data, model, r.train_config(), chunk))
    return drafts, layers


def _planned(d: _Draft, live: bool) -> PlannedTask:
    task = Task(d.data, d.model, d.config, tuple((u.id, tuple(r.member() for r in u.runs)) for u in d.units),
                d.slots, live)
    key = f"{d.units[0].id}+{len(d.units) - 1}" if len(d.units) > 1 else d.units[0].id
    # What the compiled programs depend on (not the init family, the learning rate, the
    # number of epochs or records: see train.loop.train_group).
    program = (d.data, d.model, d.slots,
               replace(d.config, epochs=1, record_every=1, learning_rate=1e-3),
               penalty_terms([m for _, members in task.units for m in members]))
    return PlannedTask(d.compile_s + d.unit_s * len(d.units), key, task, tuple(d.units), program, d.experiment)


def _tasks(jobs: list[_Job], data_dir, workers: int, shapes: dict, costs: CostModel = CPU_COSTS,
           live: bool = False) -> list[PlannedTask]:
    """The tasks, in order: the first task of every program largest first, then the others
    by experiment, those with the most to draw in their report first, each largest first.
    `live`: the tasks emit each record's metrics (live TensorBoard events)."""
    drafts, layers = _drafts(jobs, data_dir, shapes, costs)
    # Fewer tasks than workers: split the biggest (a second compile beats an idle core).
    while len(drafts) < workers and any(len(d.units) > 1 for d in drafts):
        big = max((d for d in drafts if len(d.units) > 1), key=lambda d: d.unit_s * len(d.units))
        half = len(big.units) // 2
        drafts.append(replace(big, units=big.units[half:]))
        big.units = big.units[:half]
    # Each program's first task before any program's second: workers that start tasks of
    # one program together both compile it (tens of seconds on one core each); after its
    # first task, a program loads from the compilation cache.
    firsts, rest, seen = [], [], set()
    for t in sorted((_planned(d, live) for d in drafts), key=lambda t: -t.seconds):
        (rest if t.program in seen else firsts).append(t)
        seen.add(t.program)
    # An experiment's report is drawn (on one core) once its last task is done. Its figures
    # draw a line or panel per configuration and layer, so experiments with many of both
    # finish first, while the others still train; those with small reports end the sweep.
    drawing = {j: layers.get(j, 0) * len({r.label for u in job.units for r in u.runs}) for j, job in enumerate(jobs)}
    rest.sort(key=lambda t: (-drawing[t.experiment], t.experiment, -t.seconds))
    return firsts + rest


def _prepare_data(jobs: list[_Job], data_dir) -> dict:
    """Each dataset prepared once here (see step 4), and every group's model built and
    checked against it (shapes only): a factory that fails, a model whose output is not
    [batch, n_classes], is reported before anything trains."""
    from vglab.nn.adapters import check_activation
    from vglab.nn.model import check_output

    shapes, models = {}, {}
    for job in jobs:
        for unit in job.units:
            run = unit.runs[0]
            key = _data_key(run, data_dir)
            if key not in shapes:
                shapes[key] = _arrays(key)
            if (key, run.model_spec()) not in models:
                arrays = shapes[key]
                with _takes_images_hint(run, arrays):
                    model = run.model_spec().build(arrays.x_train.shape[1:], arrays.n_classes)
                    model.layout(arrays.x_train[:2])  # the model's parameters can be read as layers
                    check_output(model, jax_shapes(model), arrays.x_train[:2], arrays.n_classes)
                if run.network == "model":
                    check_activation(model, run.activation, run.model)
                models[key, run.model_spec()] = model
            model = models[key, run.model_spec()]
            alphas = sorted({r.alpha for r in unit.runs if r.alpha != 1})
            if alphas and not model.accepts_alpha:  # known once the forward pass was traced (layout)
                raise SpecError(f"{job.spec.name}: model {run.model or model.name!r} does not take alpha (the rescaled activation), and "
                                f"the spec asks for alpha = {', '.join(f'{a:g}' for a in alphas)}; build the model's "
                                "nonlinearity with vglab.nn.activation(...) or give its apply an alpha argument, "
                                "or drop the alpha sweep")
    return shapes


@contextlib.contextmanager
def _takes_images_hint(run, arrays):
    """A model given flat features that fails to build on them, while its parameters hold
    a convolution kernel (rank 4) or it fails on a rank mismatch, most likely takes
    images: say so instead of the shape error from deep inside it."""
    try:
        yield
    except Exception as e:
        from vglab.nn.model import ModelError

        if isinstance(e, ModelError) or not isinstance(e, (ValueError, TypeError)) or run.network != "model" \
                or run.input != "features":
            raise  # vglab's own message says what to change; another error (a name, an import) is a bug in the model

        raise ModelError(f"model {run.model!r} failed on flat inputs of shape {tuple(arrays.x_train.shape[1:])} "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); if this model takes "
                         "images: set input = \"images\" in the spec (it then gets (H, W, C) examples)") from None


def jax_shapes(model):
    """The shapes of `model`'s parameters (nothing is computed)."""
    import jax

    return jax.eval_shape(model.init, jax.random.key(0))


# ------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class PlanRow:
    """One experiment's share of the work, from the cost model."""

    experiment: str
    dataset: str
    runs: int  # to train now
    done: int  # complete before this invocation
    groups: int
    compile_s: float  # its share of compiling the programs it uses (`compile_shares`; one core)
    train_s: float  # training (one core)
    report_s: float  # drawing its report page (one core)


@dataclass(frozen=True)
class Plan:
    """What an invocation will do and how long it should take on this machine (`lines()`
    says it; the CLI prints it before training, and alone with --dry-run)."""

    rows: tuple[PlanRow, ...]
    workers: int
    device: str  # "cpu" | "gpu"
    wall_s: float  # training and reports, scheduled on the workers (on a GPU: reports on the CPU's cores)
    group_seconds: dict = field(default_factory=dict, compare=False)  # "<experiment>/<group>" -> compile + train
    cluster: str = ""  # the Ray cluster the workers are on (`ray_executor.Cluster.describe`), else ""
    task_features: dict = field(default_factory=dict, compare=False)  # task key -> `task_features` + "first"
    report_features: dict = field(default_factory=dict, compare=False)  # experiment -> `report_features`

    @property
    def cpu_s(self) -> float:
        return sum(r.compile_s + r.train_s + r.report_s for r in self.rows)

    def lines(self) -> list[str]:
        runs, done = sum(r.runs for r in self.rows), sum(r.done for r in self.rows)
        head = (f"plan: {len(self.rows)} experiment{'s' if len(self.rows) != 1 else ''}, {runs} runs to train"
                + (f" ({done} complete already)" if done else "") + f" on {self.workers} "
                + ("GPU " if self.device == "gpu" else "CPU ") + f"worker{'s' if self.workers != 1 else ''}"
                + (f" ({self.cluster})" if self.cluster else ""))
        costs = cost_model(self.device == "gpu")
        out = [head + f" (estimates from the cost model, calibrated on {costs.calibrated}, within about 2x"
               + ("; other GPUs differ)" if self.device == "gpu" else ")"),
               f"  {'experiment':<24} {'runs':>5} {'compile':>9} {'train':>9} {'report':>8}"]
        for r in self.rows:
            out.append(f"  {r.experiment:<24} {r.runs:>5} {_dur(r.compile_s):>9} {_dur(r.train_s):>9} {_dur(r.report_s):>8}")
        if self.device == "gpu":
            out.append(f"  estimated time: {_dur(self.wall_s)} (reports drawn on the CPU's cores while training goes on)")
            return out
        out.append(f"  estimated time: {_dur(self.wall_s)} ({_dur(self.cpu_s)} of CPU time on {self.workers} "
                   f"core{'s' if self.workers != 1 else ''})")
        slow = [r for r in self.rows if r.train_s > LONG_S]
        if slow or self.wall_s > LONG_S:
            names = ", ".join(f"{r.experiment} ({_dur(r.train_s)})" for r in sorted(slow, key=lambda r: -r.train_s))
            out.append(f"note: this takes hours on this CPU{': mostly ' + names if names else ''}. Ways out: a GPU "
                       "(--device gpu, with a CUDA build of JAX), fewer training examples (--train-size 5000), "
                       "fewer presets (--presets large-params,regularization) or fewer epochs/seeds "
                       "(--epochs, --seeds). --dry-run prints this plan without training.")
        return out


LONG_S = 3600.0  # a plan longer than this gets the note with the ways out


def _dur(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s // 60 % 60:02d} min"


def report_features(job: _Job, layers: int, flagged: float = 0.0) -> dict:
    """What a report page's cost depends on (`report_seconds`): its runs (all of the
    experiment's: the page shows every one), configurations, the deepest network's layers,
    and the Diagnosis' flagged cells (`flagged_cells`, summed over the pending runs' tasks,
    scaled to all)."""
    runs = job.spec.expand()
    figures = own_figures(job.spec.preset)
    return {"runs": len(runs), "configs": len({r.label for r in runs}), "layers": layers,
            "flagged": round(flagged * len(runs) / max(job.pending_runs, 1)), "own_page": bool(figures),
            "figures": list(figures)}


def flagged_cells(payload: Task, records: int, layers: int) -> float:
    """The (run, record with a gradient, hidden layer) cells of a task where the report's
    Diagnosis is expected to find a vanishing or exploding gradient and looks up its
    layer factors (`flagged_layers`). Only where the gradient levels are recorded (the
    `grad_moments` probe; trainability's `grad_norm` alone gives none); the first record
    (the init) has no gradient."""
    if "grad_moments" not in getattr(payload.config, "probes", ()):
        return 0.0
    hidden = max(layers - 1, 0)
    return (records - 1) * sum(flagged_layers(payload.model, m, hidden) for _, ms in payload.units for m in ms)


def flagged_layers(model, member, hidden: int) -> float:
    """Hidden layers of a run whose gradient level, relative to the output layer's, the
    mean-field theory puts past the Diagnosis' thresholds at init: k layers below the output,
    E||delta||^2 has changed by chi_1^k, the mean |gradient| by about chi_1^(k/2) (alpha-sweep's
    20x8 tanh net at N(0, std=0.05): 17 of 20 layers predicted, 84 % of its cells measured;
    many-layers 1530 predicted, 1518-1550 measured). A network the theory does not describe
    (convolutions, residual, normalized, your own model): `UNPREDICTED_SHARE` of its layers."""
    from vglab.nn import meanfield

    if model.network != "mlp" or model.activation not in meanfield.ACTIVATIONS or model.residual or model.norm != "none":
        return UNPREDICTED_SHARE * hidden
    w = model.width
    return _flagged(model.activation, float(member.alpha), w * member.weight_init.variance(w, w),
                    member.bias_law.variance(w, w), hidden)


@functools.lru_cache(maxsize=256)
def _flagged(activation: str, alpha: float, sigma_w2: float, sigma_b2: float, hidden: int) -> float:
    import numpy as np

    from vglab.nn import meanfield

    try:
        with np.errstate(all="ignore"):
            chi = meanfield.chi_1(activation, alpha, sigma_w2, sigma_b2)
        step = 0.5 * math.log10(chi)
    except (ValueError, ArithmeticError):  # no finite fixed point (ReLU at sigma_w^2 > 2), a zero or NaN variance
        return UNPREDICTED_SHARE * hidden
    if not math.isfinite(step):
        return UNPREDICTED_SHARE * hidden
    return sum(1 for k in range(1, hidden + 1) if k * step <= -VANISH_DECADES or k * step >= EXPLODE_DECADES)


def report_seconds(f: dict, costs: CostModel = CPU_COSTS) -> float:
    """Drawing one report page (one CPU core), from `report_features`: see `CostModel`."""
    panels = min(f["configs"], REPORT_PANELS)
    own = costs.report_s_own_page + f["configs"] * sum(costs.report_s_per_figure_config.get(n, 0.0)
                                                       for n in f.get("figures", ()))
    figures = own if f.get("own_page") else (
        costs.report_s_per_panel * panels * f["layers"] + costs.report_s_per_config_panel * panels
        + costs.report_s_per_config * f["configs"] * (f["layers"] >= 3))  # the heatmap needs 2 hidden layers
    diagnosis = costs.report_s_per_flagged_cell * f.get("flagged", 0)
    return costs.report_s + costs.report_s_per_run * f["runs"] + diagnosis + figures


def _plan(jobs: list[_Job], tasks: list[PlannedTask], shapes: dict, place: Placement, cluster=None) -> Plan:
    """Each experiment's estimated compile, train and report time, and the wall time of
    the tasks (in their order) and reports scheduled on `workers` cores (on a GPU: the
    tasks on its workers, the reports on the CPU's cores): a program is compiled by its
    first task and loaded (`CostModel.load_s`) by the others, a variant of a model compiled
    already costs `variant_seconds`; an experiment's compile is its share (`compile_shares`)."""
    workers, on_gpu = place.n_workers, place.on_gpu
    costs = cost_model(on_gpu)
    train_s, layers, flagged = [0.0] * len(jobs), [0] * len(jobs), [0.0] * len(jobs)
    group_s: dict[str, float] = {}
    features: dict[str, dict] = {}
    free, compiled, families, ends, shared = [0.0] * max(workers, 1), set(), set(), {}, []
    for t in tasks:
        j, payload, chunk, program = t.experiment, t.task, t.units, t.program
        spec = jobs[j].spec
        arrays = shapes[payload.data]
        network = payload.model.build(arrays.x_train.shape[1:], arrays.n_classes)
        depth = len(network.layout().layers)
        layers[j] = max(layers[j], depth)
        f = task_features(network, spec, arrays.x_train.shape[0], arrays.x_test.shape[0],
                          payload.slots,
                          len(program[-1]))
        c, u = estimate(f, costs)
        flagged[j] += flagged_cells(payload, f["records"], depth)
        family = program_family(program)
        features[t.key] = {**f, "first": program not in compiled, "program": _key_hash(program),
                           "family": _key_hash(family)}
        c = costs.load_s if program in compiled else c if family not in families else variant_seconds(f, costs)
        compiled.add(program)
        families.add(family)
        shared.append({"experiment": j, "family": features[t.key]["family"], "seconds": c})
        train_s[j] += u * len(chunk)
        g = f"{spec.name}/{chunk[0].group}"
        group_s[g] = group_s.get(g, 0.0) + c + u * len(chunk)
        w = free.index(min(free))
        free[w] += c + u * len(chunk)
        ends[j] = free[w]
    pages = {job.spec.name: report_features(job, layers[j], flagged[j]) for j, job in enumerate(jobs) if job.units}
    report_s = [report_seconds(pages[job.spec.name], cost_model(False)) if job.units else 0.0  # on the CPU
                for j, job in enumerate(jobs)]
    drawers = [0.0] * parallel.default_workers() if on_gpu else free  # on a GPU, reports go to the CPU's cores
    for j in sorted(ends, key=ends.get):  # each report starts once its experiment is trained
        w = drawers.index(min(drawers))
        drawers[w] = max(drawers[w], ends[j]) + report_s[j]
    compile_s = compile_shares(shared)
    rows = tuple(PlanRow(job.spec.name, job.spec.dataset, job.pending_runs, job.skipped,
                         len({u.group for u in job.units}), compile_s.get(j, 0.0), train_s[j], report_s[j])
                 for j, job in enumerate(jobs))
    return Plan(rows, workers, "gpu" if on_gpu else "cpu", max(free + drawers), group_s,
                cluster=cluster.describe() if cluster else "", task_features=features, report_features=pages)


def plan_experiments(specs: list[ExperimentSpec], outs: list[Path | str] | None = None, *, workers: int | None = None,
                     executor: str = "local", data_dir=None, device: str | None = None,
                     address: str | None = None) -> Plan:
    """The plan of `run_experiments` with the same arguments, without training or writing
    anything (the data are prepared, which fits and caches the PCA once). Runs complete in
    `outs` count as done when the folder holds the same experiment. With `address`, the
    plan is for that Ray cluster's CPUs (connected to read them)."""
    outs = [Path(o) for o in outs] if outs is not None else [default_out(s) for s in specs]
    for out in outs:
        store.check_folder(out)  # a file in the way: the same error as a run gives
    place = placement(workers, executor, address, device)
    _check_device(device)  # the data are prepared on the chosen platform
    with _cluster(executor, address) as cluster:
        place = replace(place, n_workers=cluster.workers(workers)) if cluster else place
    jobs = []
    for spec, out in zip(specs, outs):
        old = store.read_spec(out)
        same = old is not None and old.get("fingerprint") == spec.to_dict()["fingerprint"]
        jobs.append(_job(spec, out, store.completed_run_ids(out) if same else set(), place))
    shapes = _prepare_data(jobs, data_dir)
    return _plan(jobs, _tasks(jobs, data_dir, place.n_workers, shapes, cost_model(place.on_gpu)), shapes, place,
                 cluster)


def _job(spec: ExperimentSpec, out: Path, done: set[str], place: Placement) -> _Job:
    """The experiment's units with a pending run (on a CPU: image models one run per unit,
    MLP units of at most `MLP_SLOTS` runs)."""
    units = spec.units() if place.on_gpu else spec.units(one_run_inputs=ONE_RUN_INPUTS, max_runs=MLP_SLOTS)
    return _Job(spec, out, done, [u for u in units if any(r.run_id not in done for r in u.runs)], skipped=len(done))


def _cluster(executor: str, address: str | None):
    """A context: connected to the Ray cluster at `address` (its `ray_executor.Cluster`),
    else nothing (None). An unreachable address is a ValueError within seconds."""
    if executor != "ray" or not address:
        return contextlib.nullcontext()
    from vglab.experiments import ray_executor

    return ray_executor.connected(address)


# ------------------------------------------------------------------ meta data
@functools.lru_cache(maxsize=4)  # read once per process: each lookup scans the installed packages
def _versions(executor: str) -> dict:
    from importlib import metadata

    names = ["vglab", "jax", "jaxlib", "optax", "numpy", "pandas", "pyarrow", "scikit-learn", "pydantic"]
    if executor == "ray":
        names.append("ray")
    out = {"python": platform.python_version()}
    for n in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[n] = metadata.version(n)
    return out


def _machine() -> dict:
    return {"platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor(),
            "hostname": platform.node(), "cpu_count": os.cpu_count(), "cores_available": len(parallel.available_cores())}


def _write_meta(out: Path, invocation: dict, executor: str) -> None:
    f = out / "meta.json"
    try:
        meta = json.loads(f.read_text())
    except (OSError, ValueError):
        meta = {}
    calls = [c for c in meta.get("invocations", []) if c.get("started") != invocation["started"]]
    meta.update(vglab=_versions(executor).get("vglab"), versions=_versions(executor), machine=_machine(),
                invocations=calls + [invocation])
    meta["seconds"] = round(sum(c.get("seconds") or 0 for c in meta["invocations"]), 2)
    store.write_json(f, meta)


def _load_average() -> list[float] | None:
    """The machine's 1, 5 and 15 minute load: how many others shared it (wall times inflate)."""
    with contextlib.suppress(OSError, AttributeError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def _plan_record(plan: Plan | None, j: int) -> dict | None:
    """Experiment j's share of the plan (seconds of one core), as meta.json keeps it: what
    benchmarks/cost_model.py compares the measured times with."""
    if plan is None:
        return None
    row = plan.rows[j]
    return {"compile_s": round(row.compile_s, 2), "train_s": round(row.train_s, 2), "report_s": round(row.report_s, 2),
            "report_features": plan.report_features.get(row.experiment), "wall_s": round(plan.wall_s, 2),
            "workers": plan.workers, "device": plan.device}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------ running
def _resolve_workers(workers: int | None, executor: str, device: str | None) -> int:
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"--workers must be an integer >= 1, got {workers!r}")
        return workers
    if device == "gpu" or (device in (None, "auto") and _gpu_likely()):
        return 1  # one process owns the GPU; a group's vmap is its parallelism
    return parallel.default_workers()


def _gpu_likely() -> bool:
    """A GPU JAX would pick under --device auto (decided without starting JAX)."""
    return bool(parallel.gpu_platforms_installed()) and (os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/kfd"))


def _validate_before_writing(specs: list[ExperimentSpec], place: Placement, allow_large: bool) -> None:
    """Everything that can be refused before any folder is touched (step 0)."""
    for spec in specs:
        check_sizes(spec, allow_large)
    if place.workers is not None and place.on_this_machine:
        check_limit("workers", place.n_workers, allow_large, "--workers ")
    if place.on_this_machine:
        _check_device(place.device)
    if place.n_workers > 1 and place.executor == "local":
        _check_main_guard()


def _check_device(device: str | None) -> None:
    """`--device gpu` on this machine needs a GPU build of JAX (checked before JAX starts)."""
    if device == "gpu" and not parallel.gpu_platforms_installed():
        raise ValueError("--device gpu needs a GPU build of JAX, and none is installed (pip install -U "
                         "'jax[cuda12]' on a machine with an NVIDIA GPU); or use --device cpu")


MAIN_GUARD = ("each worker process imports the script that calls vglab.run() (they are started with 'spawn'), so a "
              "call at the script's top level runs again in every worker; put it under "
              "`if __name__ == \"__main__\":` (or pass workers=1)")


def _check_main_guard() -> None:
    """Refuse to start workers from a script whose top-level code calls us outside
    `if __name__ == "__main__":` (each spawned worker would re-run it, fail on the lock
    and die), and, in such a worker, exit with the same words."""
    import ast
    import multiprocessing as mp

    if getattr(mp.current_process(), "_inheriting", False):  # a spawned worker importing the script
        raise SystemExit(f"error: {MAIN_GUARD}")
    main = sys.modules.get("__main__")
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_code.co_name == "<module>" and main is not None
                                     and frame.f_globals is vars(main)):
        frame = frame.f_back
    path = getattr(main, "__file__", None)
    if frame is None or path is None:
        return  # not while the main script runs (interactive, a notebook, -c): nothing re-runs it
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, SyntaxError):
        return
    line = frame.f_lineno
    for node in tree.body:
        if node.lineno <= line <= (node.end_lineno or node.lineno):
            guarded = isinstance(node, ast.If) and any(
                isinstance(c, ast.Compare) and isinstance(c.left, ast.Name) and c.left.id == "__name__"
                and any(isinstance(x, ast.Constant) and x.value == "__main__" for x in c.comparators)
                for c in ast.walk(node.test))
            if not guarded:
                raise RuntimeError(f"{path}, line {line}: {MAIN_GUARD}")
            return


def _check_batch_sizes(jobs: list[_Job], shapes: dict) -> None:
    for job in jobs:
        spec = job.spec
        for key, arrays in shapes.items():
            n = arrays.x_train.shape[0]
            if key.dataset == spec.dataset and key.train_size == spec.train_size and spec.batch_size > n:
                raise SpecError(f"{spec.name}: batch_size = {spec.batch_size} is larger than the training set "
                                f"({n} examples of {key.dataset}); set batch_size to at most {n}"
                                + ("" if key.train_size is None else " or raise train_size"))


def run_experiments(specs: list[ExperimentSpec], outs: list[Path | str] | None = None, *, workers: int | None = None,
                    executor: str = "local", address: str | None = None, data_dir=None, tensorboard: bool = False,
                    device: str | None = None, progress=None, overwrite: bool = False,
                    on_complete=None, allow_large: bool = False) -> list[Path]:
    """Train every pending run of `specs` into `outs` (default `vglab-results/<dataset>/<name>`),
    sharing one pool of workers. Returns the output directories. Nothing is written
    unless every check passes (see the module's docstring).

    `on_complete(out)` is called for each experiment as soon as its last run and its
    meta.json are written (while others still train), e.g. to start its report.
    `allow_large` lifts `schema.LIMITS`."""
    place = placement(workers, executor, address, device)
    outs = [Path(o) for o in outs] if outs is not None else [default_out(s) for s in specs]
    if len(outs) != len(specs) or len(set(o.resolve() for o in outs)) != len(outs):
        raise ValueError("give one distinct output directory per experiment")
    progress = progress or NoProgress()
    _validate_before_writing(specs, place, allow_large)
    started, clock = _now(), (time.perf_counter(), time.process_time())

    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(_cluster(executor, address))  # checked before anything is written
        place = replace(place, n_workers=cluster.workers(workers)) if cluster else place
        env = parallel.worker_env(None if device == "auto" else device, place.n_workers)
        for out in outs:
            stack.enter_context(store.locked(out))
        jobs, clear = [], []
        for spec, out in zip(specs, outs):
            done, old_goes = _check_out(spec, out, overwrite)
            clear.append(old_goes)
            jobs.append(_job(spec, out, done, place))
        tasks, plan, prepare_seconds = _schedule(jobs, data_dir, place, env, tensorboard, cluster)
        # Every check passed: from here on, write.
        for job, old_goes in zip(jobs, clear):
            if old_goes:
                _clear_out(job.out)
            _open_out(job.spec, job.out)
        invocation = {"started": started, "finished": None, "command": " ".join(sys.argv), "executor": executor,
                      "workers": place.n_workers, "device": device or "auto", "load_average_at_start": _load_average()}
        if cluster:
            invocation["cluster"] = {"address": cluster.address, "nodes": cluster.nodes, "cpus": cluster.cpus}
        for job in jobs:
            _write_meta(job.out, {**invocation, "runs": len(job.spec.expand()), "skipped": job.skipped}, executor)
        info = {"backend": None, "device": None, "tasks": [], "prepare_seconds": prepare_seconds}
        finish = _finisher(jobs, invocation, info, plan, tensorboard, on_complete, clock)
        if tasks:
            progress.plan(plan)
            _execute(jobs, tasks, place, env, tensorboard, progress, info, finish, plan)
        for j in range(len(jobs)):
            finish(j)
    return outs


def _schedule(jobs: list[_Job], data_dir, place: Placement, env: dict, tensorboard: bool,
              cluster) -> tuple[list[PlannedTask], Plan | None, float]:
    """(the tasks, the plan, seconds preparing the data): steps 4 and 5, no task when no
    run is pending. One local worker trains in this process, set up for it first."""
    if not any(job.units for job in jobs):
        return [], None, 0.0
    if place.n_workers == 1 and place.executor == "local":
        parallel.configure_this_process(env)
    t_prepare = time.perf_counter()
    shapes = _prepare_data(jobs, data_dir)
    prepare_seconds = round(time.perf_counter() - t_prepare, 2)
    _check_batch_sizes(jobs, shapes)
    # live: per-record metrics for live TensorBoard events
    tasks = _tasks(jobs, data_dir, place.n_workers, shapes, cost_model(place.on_gpu), live=tensorboard)
    plan = _plan(jobs, tasks, shapes, place, cluster)
    shapes.clear()
    return tasks, plan, prepare_seconds


def _finisher(jobs: list[_Job], invocation: dict, info: dict, plan: Plan | None, tensorboard: bool, on_complete,
              clock: tuple[float, float]):
    """`finish(j)`: experiment j has all its runs: export, final meta, then `on_complete`
    (once per experiment)."""
    finished = set()
    t0, cpu0 = clock

    def finish(j: int) -> None:
        if j in finished:
            return
        finished.add(j)
        job = jobs[j]
        if tensorboard:
            from vglab.results import tensorboard as tb

            tb.export(job.out)
        store.write_runs_table(job.out)
        mine = [t for t in info["tasks"] if t["task"].startswith(job.spec.name + "/")]
        _write_meta(job.out, {**invocation, **info, "finished": _now(), "seconds": round(time.perf_counter() - t0, 2),
                              "runs": len(job.spec.expand()), "skipped": job.skipped, "trained": job.written,
                              "worker_seconds": round(job.unit_seconds, 2), "tasks": mine,
                              "load_average": _load_average(), "plan": _plan_record(plan, j),
                              # this process: preparing the data, storing every unit's runs
                              "main_cpu_seconds": round(time.process_time() - cpu0, 2)}, invocation["executor"])
        if on_complete:
            on_complete(job.out)
    return finish


def _task_record(key: str, n_units: int, payload: dict, seconds: float, plan: Plan) -> dict:
    """What meta.json keeps of a finished task."""
    record = {"task": key, "units": n_units,
              "compile_seconds": round(payload.get("compile_seconds", 0.0), 2), "seconds": round(seconds, 2),
              # CPU seconds of the worker (the cost model's unit; benchmarks/cost_model.py)
              "cpu_seconds": round(payload.get("cpu_seconds", 0.0), 2),
              "compile_cpu_seconds": round(payload.get("compile_cpu_seconds", 0.0), 2),
              "cache_hits": payload.get("cache_hits"),  # programs loaded, not compiled
              "unit_cpu_seconds": [round(x, 3) for x in payload.get("unit_cpu_seconds", [])],
              "features": plan.task_features.get(key, {})}
    if "node_id" in payload:
        record.update(node_id=payload["node_id"], node_ip=payload["node_ip"])
    return record


def _progress_groups(jobs: list[_Job], units: dict, group_of: dict, plan: Plan, place: Placement):
    """The progress display's title and groups (`progress.GroupPlan`)."""
    from vglab.experiments.progress import GroupPlan

    n_runs = sum(job.pending_runs for job in jobs)
    groups = [GroupPlan(g, sum(len(units[u][1].runs) for u in group_of if group_of[u] == g),
                        sum(1 for u in group_of if group_of[u] == g), plan.group_seconds.get(g, 0.0))
              for g in dict.fromkeys(group_of.values())]
    n = place.n_workers
    title = (f"{jobs[0].spec.name}" if len(jobs) == 1 else f"{len(jobs)} experiments") + \
        f": {n_runs} runs in {len(groups)} groups on {n} {'Ray ' if place.executor == 'ray' else ''}worker" \
        f"{'s' if n > 1 else ''}"
    return title, groups


def _execute(jobs, tasks: list[PlannedTask], place: Placement, env, tensorboard, progress, info: dict, finish,
             plan: Plan) -> None:
    """Run the tasks, store every unit's runs as it arrives (task records into `info`),
    and call `finish(j)` once experiment j's last task is done."""
    units = {u.id: (j, u) for j, job in enumerate(jobs) for u in job.units}
    group_of = {uid: f"{jobs[j].spec.name}/{u.group}" for uid, (j, u) in units.items()}
    group_left: dict[str, int] = {}
    for g in group_of.values():
        group_left[g] = group_left.get(g, 0) + 1
    units_left = [len(job.units) for job in jobs]
    task_started: dict[str, float] = {}
    by_key = {t.key: t.units for t in tasks}
    live = _LiveBoard(jobs, units) if tensorboard else None

    def on_event(kind: str, key: str, payload) -> None:
        if kind == "start":
            task_started[key] = time.perf_counter()
            for g in dict.fromkeys(group_of[u.id] for u in by_key[key]):
                progress.group_started(g, ago=payload.get("seconds", 0.0) if payload else 0.0)
        elif kind == "epoch":
            if live is not None:
                live.epoch(payload)
            progress.unit_epoch(group_of[payload.unit], payload.unit, payload.epoch / max(payload.epochs, 1))
        elif kind == "unit":
            j, unit = units[payload["unit"]]
            _store_unit(jobs[j], unit, payload, tensorboard, live)
            g = group_of[unit.id]
            progress.unit_done(g, unit.id, len(unit.runs))
            units_left[j] -= 1
            group_left[g] -= 1
            if group_left[g] == 0:
                progress.group_done(g)
        elif kind == "done":
            info.update(backend=payload.get("backend"), device=payload.get("device"))
            # Timed where it ran when the executor says (Ray: its events arrive only at the end).
            seconds = payload.get("seconds", time.perf_counter() - task_started.get(key, time.perf_counter()))
            info["tasks"].append(_task_record(key, len(by_key[key]), payload, seconds, plan))
            if "node_id" in payload:
                progress.log(f"{key}: {len(by_key[key])} unit{'s' if len(by_key[key]) != 1 else ''} in {seconds:.1f} s "
                             f"on node {payload['node_ip']} ({payload['node_id'][:8]})")
            for j in {units[u.id][0] for u in by_key[key]}:
                if units_left[j] == 0:
                    finish(j)

    title, groups = _progress_groups(jobs, units, group_of, plan, place)
    _dispatch([(t.key, train_task, (t.task,)) for t in tasks], [t.program for t in tasks], on_event, place, env,
              progress, title, groups, live)


def _dispatch(work, programs, on_event, place: Placement, env, progress, title, groups, live) -> None:
    """Hand the work to the local workers or Ray, with the progress display shown."""
    try:
        with progress:
            progress.start(title, groups, place.n_workers)
            if place.executor == "ray":
                from vglab.experiments import ray_executor

                ray_executor.run_tasks(work, on_event, address=place.address, num_cpus=place.n_workers, env=env,
                                       at_once=place.n_workers)
            else:
                parallel.run_tasks(work, on_event, workers=place.n_workers, env=env, programs=programs)
    finally:
        if live is not None:
            live.close()


class _LiveBoard:
    """TensorBoard events written while training: each recorded epoch of a run not yet
    complete goes to its `OUT/tensorboard/<run_id>/` as it arrives (flushed, so a running
    TensorBoard shows it). A run's folder is started afresh at its epoch 0, so a unit
    trained again after an interruption replaces the partial events."""

    def __init__(self, jobs, units):
        self.jobs, self.units = jobs, units
        self.writers: dict[str, object] = {}

    def epoch(self, event: EpochEvent) -> None:
        from vglab.results import tensorboard as tb

        if event.metrics is None:
            return
        j, unit = self.units[event.unit]
        job = self.jobs[j]
        for k, run in enumerate(unit.runs):
            if run.run_id in job.done:
                continue  # complete earlier: its events are there
            if event.epoch == 0 or run.run_id not in self.writers:
                self._close(run.run_id)
                self.writers[run.run_id] = tb.RunWriter(job.out, run.run_id, tb.hparams_of(run.row(0, 0)),
                                                         list(event.layers), event.tensors)
            self.writers[run.run_id].add_metrics(event.epoch, event.metrics, k)

    def unit_stored(self, unit) -> None:
        for run in unit.runs:
            self._close(run.run_id)

    def has(self, run_id: str) -> bool:
        return run_id in self.writers

    def _close(self, run_id: str) -> None:
        w = self.writers.pop(run_id, None)
        if w is not None:
            w.close()

    def close(self) -> None:
        for run_id in list(self.writers):
            self._close(run_id)


def _store_unit(job: _Job, unit: Unit, payload: dict, tensorboard: bool, live: _LiveBoard | None = None) -> None:
    job.unit_seconds += payload["seconds"]
    for run, result in zip(unit.runs, payload["results"], strict=True):
        if run.run_id in job.done:
            continue  # complete from an earlier invocation; retrained only to keep the unit whole
        row = run.row(payload["n_params"], payload["n_train"], payload.get("n_classes"), payload.get("facts"))
        store.write_run(job.out, run.run_id, row, result)
        job.done.add(run.run_id)
        job.written += 1
        if tensorboard and (live is None or not live.has(run.run_id)):  # no live events (e.g. Ray): from the tables
            from vglab.results import tensorboard as tb

            tb.write_run(job.out, run.run_id, result.epochs, result.histograms, tb.layer_names(result.grads),
                         grads=result.grads, activations=result.activations, hparams=tb.hparams_of(row))
    if live is not None:
        live.unit_stored(unit)


def run_experiment(spec: ExperimentSpec | str, out: Path | str | None = None, workers: int | None = None,
                   executor: str = "local", **kwargs) -> Path:
    """Train every pending run of one experiment (a spec, or a preset name / spec file)."""
    if not isinstance(spec, ExperimentSpec):
        spec = load_spec(spec)
    return run_experiments([spec], None if out is None else [out], workers=workers, executor=executor, **kwargs)[0]
