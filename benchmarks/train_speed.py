"""Training throughput of the engine: seconds per epoch, model-epochs per second,
compile time and peak memory, with probes on and off, in one process and in one
process per core.

    python benchmarks/train_speed.py                 # MNIST-PCA if found, else same-shape synthetic data
    python benchmarks/train_speed.py --quick         # fewer epochs

Cases: MLP 153->8->10 and deep 20x8, (a) one model, (b) K = 10 r-values x 5 seeds = 50
members with L2. "s/epoch" is the median over the epochs after the first (this machine's speed
varies by up to 2x from epoch to epoch); "compile" is the first epoch's extra time.
Run it on an otherwise idle machine: it measures wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def _arrays(n_train: int | None):
    from vglab import data

    try:
        arrays = data.prepare("mnist", "mlp", download=False)
        source = f"MNIST-PCA ({arrays.x_train.shape[1]} components)"
    except Exception:  # no MNIST here: synthetic data of the same shape
        from synthetic import synthetic  # benchmarks/synthetic.py

        arrays, source = synthetic((153,), 60000, 10000), "synthetic 60000x153"
    if n_train:
        from dataclasses import replace

        arrays = replace(arrays, x_train=arrays.x_train[:n_train], y_train=arrays.y_train[:n_train])
    return arrays, source


def one_case(depth: int, members: int, probes: bool, epochs: int, seeds: list[int] | None = None) -> dict:
    from vglab import nn
    from vglab.nn import init
    from vglab.train import Member, TrainConfig, train_group

    arrays, source = _arrays(None)
    net = nn.mlp(depth, 8, arrays.x_train.shape[1])
    rs = np.logspace(-3, 2, 10)
    seeds = seeds if seeds is not None else list(range(5))
    if members == 1:
        group = [Member(seed=0, weight_init=init.normal(std=10.0), l2=0.01)]
    else:
        group = [Member(seed=s, weight_init=init.normal(std=10.0), l2=float(r)) for s in seeds for r in rs][:members]
    config = TrainConfig(epochs=epochs, probes="all" if probes else ())
    t0 = time.perf_counter()
    res = train_group(net, arrays, group, config)
    total = time.perf_counter() - t0
    sec = res[0].epochs.seconds.to_numpy()[1:]
    steady = float(np.median(sec[1:])) if len(sec) > 1 else float(sec[0])
    return {
        "source": source, "network": net.name, "members": len(group), "probes": probes,
        "s_per_epoch": steady, "model_epochs_per_s": len(group) / steady,
        "compile_s": float(sec[0] - steady), "total_s": total,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def per_core(depth: int, members: int, epochs: int, cores: int) -> dict:
    """`cores` processes, each pinned to one core with single-threaded XLA, splitting the seeds."""
    seeds = list(range(5))
    chunks = [seeds[i::cores] for i in range(cores)]
    env = {**os.environ, "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["taskset", "-c", str(i), sys.executable, __file__, "--worker", json.dumps([depth, chunk, epochs])],
            stdout=subprocess.PIPE, env=env, text=True,
        )
        for i, chunk in enumerate(chunks)
    ]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    wall = time.perf_counter() - t0
    n = sum(o["members"] for o in outs)
    steady = max(o["s_per_epoch"] for o in outs)
    return {"members": n, "processes": cores, "s_per_epoch": steady, "model_epochs_per_s": n / steady,
            "compile_s": max(o["compile_s"] for o in outs), "wall_s": wall,
            "peak_rss_mb": sum(o["peak_rss_mb"] for o in outs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--quick", action="store_true", help="shallow only")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        depth, seeds, epochs = json.loads(args.worker)
        print(json.dumps(one_case(depth, 10 * len(seeds), True, epochs, seeds)))
        return
    epochs = args.epochs
    import jax

    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} cores, {epochs} epochs per case")
    header = f"{'network':<10} {'K':>3} {'probes':<6} {'procs':>5} {'s/epoch':>8} {'model-ep/s':>10} {'compile s':>9} {'peak MB':>8}"
    print(header)
    for depth in (1,) if args.quick else (1, 20):
        for members in (1, 50):
            for probes in (True, False):
                r = one_case(depth, members, probes, epochs)
                print(f"{r['network']:<10} {r['members']:>3} {'on' if probes else 'off':<6} {1:>5} {r['s_per_epoch']:>8.3f} "
                      f"{r['model_epochs_per_s']:>10.1f} {r['compile_s']:>9.1f} {r['peak_rss_mb']:>8.0f}", flush=True)
        cores = os.cpu_count() or 1
        if cores > 1:
            r = per_core(depth, 50, epochs, cores)
            print(f"{'mlp %dx8' % depth:<10} {r['members']:>3} {'on':<6} {cores:>5} {r['s_per_epoch']:>8.3f} "
                  f"{r['model_epochs_per_s']:>10.1f} {r['compile_s']:>9.1f} {r['peak_rss_mb']:>8.0f}", flush=True)
    print(f"data: {r.get('source', _arrays(None)[1]) if 'source' in r else _arrays(None)[1]}")


if __name__ == "__main__":
    main()
