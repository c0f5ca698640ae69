"""The runner's cost model against measurements: per built-in program, CPU seconds (process
time) of a cold compile, one epoch and one record, next to what `runner._costs` estimates.

    PYTHONPATH=src python benchmarks/cost_model.py                  # the digits programs
    PYTHONPATH=src python benchmarks/cost_model.py large-params:mnist cnn-large-params:mnist:3200
    PYTHONPATH=src python benchmarks/cost_model.py --device gpu large-params:mnist   # against GPU_COSTS

With `--device gpu` (on a GPU machine) a unit is what the runner trains there (a group's runs
of one seed), times are wall-clock seconds, nothing is pinned, and the estimates come from
`runner.GPU_COSTS`: the numbers to recalibrate it with.

(`preset:dataset[:train_size]`: a subset keeps a slow program's measurement short; the
cost of a step does not depend on it.)

Each measurement runs in a fresh process pinned to one core, single-threaded XLA and an
empty compilation cache (as a worker of `vglab run` on a cold machine): the first
`train_group` call compiles (its short training is included), the second is timed.
Run it on an idle machine: other processes slow every number down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

DEFAULT = ["large-params:digits", "combined:digits", "many-layers:digits", "cnn-large-params:digits",
           "paper-cnn-large-params:digits", "cnn-many-layers:digits", "paper-cnn-many-layers:digits"]


def measure(preset: str, dataset: str, epochs: int, train_size: int | None = None, gpu: bool = False) -> dict:
    """In this process: the first group of `preset`, one unit as the runner trains it (on the
    CPU: at most MLP_SLOTS runs, a CNN run alone; on a GPU: the group's runs of one seed)."""
    from vglab.experiments import runner
    from vglab.experiments.spec import load_spec
    from vglab.train import train_group

    spec = load_spec(preset, dataset=dataset, epochs=epochs, seeds=[0], train_size=train_size,
                     sets=[f"record_every={epochs}"])
    run = spec.expand()[0]
    key = runner._data_key(run, None)
    arrays = runner._arrays(key)
    model = run.model_spec().build(arrays.x_train.shape[1:], arrays.n_classes)
    group = [r.member() for r in spec.expand() if r.group == run.group]
    members = group if gpu else group[:runner.MLP_SLOTS] if key.kind == "mlp" else group[:1]
    slots = runner.grid_slots(key.kind, len(members))
    clock = time.perf_counter if gpu else time.process_time
    costs = runner.cost_model(gpu)

    def call():
        marks = []
        t0 = clock()
        train_group(model, arrays, members, run.train_config(), min_slots=slots,
                    on_epoch=lambda e, m: marks.append(clock()))
        return t0, marks, clock()

    t0, _, t1 = call()
    cold = t1 - t0
    t0, marks, _ = call()
    record = marks[0] - t0
    epoch = (marks[1] - marks[0] - record) / epochs
    compile_s, _ = runner._costs(model, spec, arrays.x_train.shape[0], arrays.x_test.shape[0], slots, costs)
    steps = arrays.x_train.shape[0] // run.batch_size
    return {"program": f"{preset}:{dataset}", "steps": steps, "slots": slots, "cold_s": cold, "epoch_s": epoch,
            "record_s": record, "est_compile_s": compile_s,
            "est_epoch_s": steps * runner._step_seconds(model, run.batch_size, slots, costs),
            "est_record_s": runner._record_seconds(model, arrays.x_test.shape[0], slots, costs)}


def main(argv: list[str]) -> None:
    gpu = argv[:2] == ["--device", "gpu"]
    if argv[:2] in (["--device", "gpu"], ["--device", "cpu"]):
        argv = argv[2:]
    if argv and argv[0] == "--one":
        preset, dataset, epochs, size = argv[1], argv[2], int(argv[3]), int(argv[4]) or None
        print(json.dumps(measure(preset, dataset, epochs, size, gpu)))
        return
    print(f"{'program':34} {'steps':>6} {'compile s':>10} {'(est)':>7} {'epoch s':>9} {'(est)':>9} {'ratio':>6} "
          f"{'record s':>9} {'(est)':>7}")
    for item in argv or DEFAULT:
        preset, dataset, *size = item.split(":")
        epochs = 2 if dataset != "digits" else (3 if "cnn" in preset else 20)
        env = {**os.environ, "VGLAB_JAX_CACHE": tempfile.mkdtemp(prefix="vglab-cost-")}
        cmd = [sys.executable, __file__, "--device", "gpu" if gpu else "cpu", "--one", preset, dataset, str(epochs),
               size[0] if size else "0"]
        if not gpu:  # one pinned, single-threaded core: a worker of `vglab run`
            env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            if hasattr(os, "sched_getaffinity"):
                cmd = ["taskset", "-c", str(min(os.sched_getaffinity(0))), *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout.strip().splitlines()[-1]
        m = json.loads(out)
        print(f"{m['program']:34} {m['steps']:>6} {m['cold_s']:>10.1f} {m['est_compile_s']:>7.1f} "
              f"{m['epoch_s']:>9.4f} {m['est_epoch_s']:>9.4f} {m['est_epoch_s'] / m['epoch_s']:>6.2f} "
              f"{m['record_s']:>9.3f} {m['est_record_s']:>7.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
