"""Training throughput of the engine: seconds per epoch, model-epochs per second, achieved
GFLOP/s, compile time and peak memory; probes on and off, one process and one per core;
your own model (Equinox) against the built-in; and the cost of each probe tier.

    python benchmarks/train_speed.py                 # MNIST-PCA if found, else same-shape synthetic data
    python benchmarks/train_speed.py --quick         # a smoke run (small data, shallow cases; CI runs it)

Cases: MLP 153->8->10 and deep 20x8, (a) one model, (b) K = 10 r-values x 5 seeds = 50
members with L2, at N(0, std=10). "s/epoch" is the median over the epochs after the
first and before the last (which computes the end-of-training gradients); "compile" is
the first epoch's extra time. FLOP count: the forward and backward
passes' multiply-adds, 3 per weight per example (one forward, two backward), i.e.
GFLOP/epoch = 6 x weights x examples x members / 1e9 (biases, the optimizer and the probes
are not counted): a 1x8 epoch on MNIST is 6 x 1,304 x 60,000 = 0.47 GFLOP per member.
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
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/

TIERS = ("off", "norms", "moments", "full")


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

        arrays = replace(arrays, x_train=arrays.x_train[:n_train], y_train=arrays.y_train[:n_train],
                         x_test=arrays.x_test[: max(n_train // 6, 512)], y_test=arrays.y_test[: max(n_train // 6, 512)])
    return arrays, source


def _model(kind: str, depth: int, n_in: int):
    from vglab import nn

    if kind == "equinox":
        from examples.equinox_mlp import make

        return make((n_in,), 10, depth=depth, width=8)
    return nn.mlp(depth, 8, n_in)


def one_case(kind: str, depth: int, members: int, probes: str, epochs: int, n_train: int | None,
             seeds: list[int] | None = None) -> dict:
    from vglab.nn import init
    from vglab.train import Member, TrainConfig, train_group

    arrays, source = _arrays(n_train)
    model = _model(kind, depth, arrays.x_train.shape[1])
    rs = np.logspace(-3, 2, 10)
    seeds = seeds if seeds is not None else list(range(5))
    if members == 1:
        group = [Member(seed=0, weight_init=init.normal(std=10.0), l2=0.01)]
    else:
        group = [Member(seed=s, weight_init=init.normal(std=10.0), l2=float(r)) for s in seeds for r in rs][:members]
    config = TrainConfig(epochs=epochs, probes=() if probes == "off" else probes)
    t0 = time.perf_counter()
    res = train_group(model, arrays, group, config)
    total = time.perf_counter() - t0
    sec = res[0].epochs.seconds.to_numpy()[1:]
    # the first epoch compiles the programs and the last one the end-of-training gradients'
    steady = float(np.median(sec[1:-1])) if len(sec) > 2 else float(sec[-1])
    weights = sum(t.size for t in model.layout().weights)
    examples = arrays.x_train.shape[0] // config.batch_size * config.batch_size
    return {
        "source": source, "network": f"{kind} {depth}x8", "members": len(group), "probes": probes,
        "s_per_epoch": steady, "model_epochs_per_s": len(group) / steady,
        "gflops": 6 * weights * examples * len(group) / steady / 1e9,
        "compile_s": float(sec[0] - steady), "total_s": total,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def per_core(kind: str, depth: int, epochs: int, cores: int, n_train: int | None) -> dict:
    """`cores` processes, each pinned to one core with single-threaded XLA, splitting the seeds."""
    seeds = list(range(5))
    chunks = [seeds[i::cores] for i in range(cores)]
    env = {**os.environ, "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["taskset", "-c", str(i), sys.executable, __file__, "--worker", json.dumps([kind, depth, chunk, epochs, n_train])],
            stdout=subprocess.PIPE, env=env, text=True,
        )
        for i, chunk in enumerate(chunks)
    ]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    wall = time.perf_counter() - t0
    n = sum(o["members"] for o in outs)
    steady = max(o["s_per_epoch"] for o in outs)
    return {"network": outs[0]["network"], "members": n, "probes": "full", "processes": cores, "s_per_epoch": steady,
            "model_epochs_per_s": n / steady, "gflops": sum(o["gflops"] * o["s_per_epoch"] for o in outs) / steady,
            "compile_s": max(o["compile_s"] for o in outs), "wall_s": wall,
            "peak_rss_mb": sum(o["peak_rss_mb"] for o in outs)}


def _row(r: dict, procs: int = 1) -> str:
    return (f"{r['network']:<13} {r['members']:>3} {r['probes']:<7} {procs:>5} {r['s_per_epoch']:>8.3f} "
            f"{r['model_epochs_per_s']:>10.1f} {r['gflops']:>7.1f} {r['compile_s']:>9.1f} {r['peak_rss_mb']:>8.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--quick", action="store_true", help="small data, shallow cases, 4 epochs (a smoke run)")
    ap.add_argument("--only", choices=("engine", "equinox", "tiers"), help="one section")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, depth, seeds, epochs, n_train = json.loads(args.worker)
        print(json.dumps(one_case(kind, depth, 10 * len(seeds), "full", epochs, n_train, seeds)))
        return
    epochs, n_train = (4, 2048) if args.quick else (args.epochs, None)
    depths = (1,) if args.quick else (1, 20)
    import jax

    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} cores, {epochs} epochs per case, "
          f"data: {_arrays(n_train)[1]}{f' (first {n_train})' if n_train else ''}")
    print(f"{'network':<13} {'K':>3} {'probes':<7} {'procs':>5} {'s/epoch':>8} {'model-ep/s':>10} {'GFLOP/s':>7} "
          f"{'compile s':>9} {'peak MB':>8}")
    cores = os.cpu_count() or 1
    if args.only in (None, "engine"):
        for depth in depths:
            for members in (1, 50):
                for probes in ("full", "off"):
                    print(_row(one_case("builtin", depth, members, probes, epochs, n_train)), flush=True)
            if cores > 1:
                r = per_core("builtin", depth, epochs, cores, n_train)
                print(_row(r, cores), flush=True)
    if args.only in (None, "equinox"):
        print("your own model: the Equinox MLP of examples/ against the built-in one (50 members, all probes)")
        for kind in ("builtin", "equinox"):
            print(_row(one_case(kind, 1, 50, "full", epochs, n_train)), flush=True)
    if args.only in (None, "tiers"):
        print("probe tiers on the Equinox example (deep 20x8 unless --quick), 50 members, one process:")
        base = None
        for tier in TIERS:
            r = one_case("equinox", depths[-1], 50, tier, epochs, n_train)
            base = base or r["s_per_epoch"]
            print(_row(r) + f"   {100 * (r['s_per_epoch'] / base - 1):+.0f} % over off", flush=True)


if __name__ == "__main__":
    main()
