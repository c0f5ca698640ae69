"""Training throughput of the engine: seconds per epoch, model-epochs per second, achieved
GFLOP/s, compile time and peak memory; probes on and off, one process and one per core;
a plain JAX + Optax loop of the same step; your own model (Equinox) against the built-in;
and the cost of each probe tier.

    python benchmarks/train_speed.py                 # MNIST-PCA if found, else same-shape synthetic data
    python benchmarks/train_speed.py --quick         # a smoke run (small data, shallow cases; the tests run it)

Cases: MLP 153->8->10 and deep 20x8, (a) one model, (b) K = 10 r-values x 5 seeds = 50
members with L2, at N(0, std=10). "s/epoch" is the median over the epochs after the
first and before the last (which computes the end-of-training gradients); "compile" is
the first epoch's extra time. FLOP count: the forward and backward
passes' multiply-adds, 3 per weight per example (one forward, two backward), i.e.
GFLOP/epoch = 6 x weights x examples x members / 1e9 (biases, the optimizer and the probes
are not counted): a 1x8 epoch on MNIST is 6 x 1,304 x 60,000 = 0.47 GFLOP per member.
"plain" rows: the same network, members, L2 penalty and batches trained the obvious way, by
a plain JAX + Optax loop (`optax.adam` over the parameter pytree, one scan per epoch) with
nothing measured, no flat parameter vector, no divergence check and no per-epoch validation.
They show what the engine adds besides its probes (its "off" rows include the per-epoch
validation on the test set) and what a probe-free step costs on this machine.
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
# --quick, the CI smoke run (tests/test_benchmarks.py): every engine row's code on a few steps. Its cost is
# the compiles and the process starts; 512 examples (16 steps an epoch) show the same rows as 2048 did.
QUICK = {"epochs": 3, "n_train": 512}


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
        "source": source, "network": f"{kind} {depth}x8", "members": len(group), "probes": probes, "processes": 1,
        "s_per_epoch": steady, "model_epochs_per_s": len(group) / steady,
        "gflops": 6 * weights * examples * len(group) / steady / 1e9,
        "compile_s": float(sec[0] - steady), "total_s": total,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def plain_case(depth: int, members: int, epochs: int, n_train: int | None, seeds: list[int] | None = None) -> dict:
    """A "plain" row (see the module docstring): the engine's step written plainly, timed like `one_case`."""
    import functools

    import jax
    import jax.numpy as jnp
    import optax

    from vglab.nn import init
    from vglab.train.loop import ADAM_EPS, batch_order, mean_cross_entropy

    arrays, source = _arrays(n_train)
    model = _model("builtin", depth, arrays.x_train.shape[1])
    seeds = (seeds if seeds is not None else list(range(5)))[:members]
    per_seed = min(10, members // len(seeds))  # the engine's grid: [seed, r]
    rs = jnp.asarray(np.logspace(-3, 2, 10)[:per_seed], jnp.float32)
    x, y = jnp.asarray(arrays.x_train), jnp.asarray(arrays.y_train, jnp.int32)
    draw = jax.vmap(lambda k: model.init(k, init.normal(std=10.0), init.normal(std=10.0)))
    params = jax.vmap(lambda k: draw(jax.random.split(k, per_seed)))(jax.random.split(jax.random.key(0), len(seeds)))
    adam = optax.adam(1e-3, eps=ADAM_EPS)

    def member(p, opt_state, r, xb, yb):
        def objective(q):
            return mean_cross_entropy(model.apply(q, xb), yb) + r * sum(jnp.sum(t * t) for t in jax.tree.leaves(q))

        updates, opt_state = adam.update(jax.grad(objective)(p), opt_state, p)
        return optax.apply_updates(p, updates), opt_state

    grid = jax.vmap(jax.vmap(member, in_axes=(0, 0, 0, None, None)), in_axes=(0, 0, None, 0, 0))

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def epoch(p, opt_state, order):
        def step(carry, idx):  # idx: [seed, batch]
            return grid(*carry, rs, x[idx], y[idx]), None

        return jax.lax.scan(step, (p, opt_state), order)[0]

    state = (params, jax.vmap(jax.vmap(adam.init))(params))
    sec = []
    t_start = time.perf_counter()
    for e in range(1, epochs + 1):
        order = jnp.asarray(np.stack([batch_order(s, e, x.shape[0], 32) for s in seeds], 1))
        t0 = time.perf_counter()
        state = jax.block_until_ready(epoch(*state, order))
        sec.append(time.perf_counter() - t0)
    steady = float(np.median(sec[1:])) if len(sec) > 1 else sec[0]
    n = len(seeds) * per_seed
    weights = sum(t.size for t in model.layout().weights)
    examples = x.shape[0] // 32 * 32
    return {
        "source": source, "network": f"plain {depth}x8", "members": n, "probes": "off", "processes": 1,
        "s_per_epoch": steady, "model_epochs_per_s": n / steady, "gflops": 6 * weights * examples * n / steady / 1e9,
        "compile_s": float(sec[0] - steady), "total_s": time.perf_counter() - t_start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def per_core(kind: str, depth: int, probes: str, epochs: int, cores: int, n_train: int | None) -> dict:
    """`cores` processes, each pinned to one core with single-threaded XLA (the runner's worker
    environment, on top of the caller's $XLA_FLAGS), splitting the seeds."""
    from vglab.train.parallel import worker_env

    seeds = list(range(5))
    chunks = [seeds[i::cores] for i in range(cores)]
    env = {**os.environ, **worker_env()}
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["taskset", "-c", str(i), sys.executable, __file__, "--worker",
             json.dumps([kind, depth, chunk, probes, epochs, n_train])],
            stdout=subprocess.PIPE, env=env, text=True,
        )
        for i, chunk in enumerate(chunks)
    ]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    wall = time.perf_counter() - t0
    n = sum(o["members"] for o in outs)
    steady = max(o["s_per_epoch"] for o in outs)
    return {"network": outs[0]["network"], "members": n, "probes": outs[0]["probes"], "processes": cores,
            "s_per_epoch": steady,
            "model_epochs_per_s": n / steady, "gflops": sum(o["gflops"] * o["s_per_epoch"] for o in outs) / steady,
            "compile_s": max(o["compile_s"] for o in outs), "wall_s": wall,
            "peak_rss_mb": sum(o["peak_rss_mb"] for o in outs)}


def _row(r: dict) -> str:
    return (f"{r['network']:<13} {r['members']:>3} {r['probes']:<7} {r['processes']:>5} {r['s_per_epoch']:>8.3f} "
            f"{r['model_epochs_per_s']:>10.1f} {r['gflops']:>7.1f} {r['compile_s']:>9.1f} {r['peak_rss_mb']:>8.0f}")


# What each section imports beyond vglab's own dependencies: (module, what needs it, how to install).
OPTIONAL = {"equinox": [("equinox", "the Equinox MLP of examples/equinox_mlp.py", "pip install 'vglab[equinox]'")],
            "tiers": [("equinox", "the Equinox MLP of examples/equinox_mlp.py", "pip install 'vglab[equinox]'")]}


def missing_imports(sections) -> list[str]:
    """One line per optional package a chosen section needs and this Python lacks, found
    before any work (a missing Equinox failed after 4 1/2 minutes of the engine section)."""
    import importlib.util

    out = {}
    for section in sections:
        for module, why, fix in OPTIONAL.get(section, []):
            if importlib.util.find_spec(module) is None:
                out.setdefault(module, [why, fix, []])[2].append(section)
    return [f"{m} is not installed: the section{'s' if len(v[2]) > 1 else ''} {', '.join(v[2])} train{'' if len(v[2]) > 1 else 's'} "
            f"{v[0]}; {v[1]}, or leave {'them' if len(v[2]) > 1 else 'it'} out with --only engine"
            for m, v in out.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--quick", action="store_true",
                    help="small data, the shallow 50-member cases (per core: the engine only), 3 epochs "
                         "(a smoke run; the tests run it)")
    ap.add_argument("--only", choices=("engine", "equinox", "tiers"), help="one section")
    ap.add_argument("--json", metavar="FILE", help="also write every row, unrounded, to FILE (a JSON list)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, depth, seeds, probes, epochs, n_train = json.loads(args.worker)
        print(json.dumps(plain_case(depth, 10 * len(seeds), epochs, n_train, seeds) if kind == "plain"
                         else one_case(kind, depth, 10 * len(seeds), probes, epochs, n_train, seeds)))
        return
    problems = missing_imports([args.only] if args.only else ["engine", "equinox", "tiers"])
    if problems:
        ap.exit(2, "".join(f"error: {p}\n" for p in problems))
    epochs, n_train = (QUICK["epochs"], QUICK["n_train"]) if args.quick else (args.epochs, None)
    depths = (1,) if args.quick else (1, 20)
    import jax

    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} cores, {epochs} epochs per case, "
          f"data: {_arrays(n_train)[1]}{f' (first {n_train})' if n_train else ''}")
    print(f"{'network':<13} {'K':>3} {'probes':<7} {'procs':>5} {'s/epoch':>8} {'model-ep/s':>10} {'GFLOP/s':>7} "
          f"{'compile s':>9} {'peak MB':>8}")
    cores = os.cpu_count() or 1
    rows = []

    def show(r: dict, section: str, suffix: str = "") -> dict:
        rows.append({**r, "section": section})
        print(_row(r) + suffix, flush=True)
        return r

    if args.only in (None, "engine"):
        for depth in depths:
            for members in (50,) if args.quick else (1, 50):
                for probes in ("full", "off"):
                    show(one_case("builtin", depth, members, probes, epochs, n_train), "engine")
                show(plain_case(depth, members, epochs, n_train), "engine")
            if cores > 1:
                per_core_kinds = (("builtin", "full"),) if args.quick else (("builtin", "full"), ("builtin", "off"),
                                                                          ("plain", "off"))
                for kind, probes in per_core_kinds:
                    show(per_core(kind, depth, probes, epochs, cores, n_train), "engine")
    if args.only in (None, "equinox"):
        print("your own model: the Equinox MLP of examples/ against the built-in one (50 members, all probes)")
        for kind in ("builtin", "equinox"):
            show(one_case(kind, 1, 50, "full", epochs, n_train), "equinox")
    if args.only in (None, "tiers"):
        print("probe tiers on the Equinox example (deep 20x8 unless --quick), 50 members, one process:")
        base = None
        for tier in TIERS:
            r = one_case("equinox", depths[-1], 50, tier, epochs, n_train)
            base = base or r["s_per_epoch"]
            show(r, "tiers", f"   {100 * (r['s_per_epoch'] / base - 1):+.0f} % over off")
    if args.json:
        tmp = Path(args.json).with_name(Path(args.json).name + ".tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        tmp.replace(args.json)  # atomic: a reader never sees half a file


if __name__ == "__main__":
    main()
