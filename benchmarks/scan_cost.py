"""What scanning a deep MLP's runs of identical layers costs and saves (`vglab.train.loop.scan_pays`).

For each net: CPU seconds to compile (and run once) the vmapped gradient of 9 members,
and CPU milliseconds per step after that, unrolled (the pytree view, one slice per layer)
against scanned (`Flat.with_runs` + `Network.apply_runs`). The engine's constants
(`SCAN_COMPILE_S_PER_LAYER`, `SCAN_STEP_S_PER_LAYER`, `SCAN_STEP_S_PER_PARAM`) come from
these figures and from whole groups' compile times. Run on an otherwise idle machine:

    PYTHONPATH=src python benchmarks/scan_cost.py [--nets 20x8,50x8,50x32,50x128] [--steps 50]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from vglab.nn import networks
from vglab.train.flat import Flat

MEMBERS = 9


def programs(depth: int, width: int):
    net = networks.mlp(depth, width, 40, 10)
    tree = Flat.of(net.layout(), swap_matrices=True)
    runs = tree.with_runs(net.layer_runs)
    x = jnp.ones((32, 40))

    def step(flat, apply):
        def one(u):
            g = jax.grad(lambda q: jnp.sum(apply(q, x) ** 2))(flat.model_params(u))
            return flat.from_model_params(g)
        return jax.jit(jax.vmap(one))

    params = jax.tree_util.tree_map(np.asarray, net.init(jax.random.key(0)))
    v = jnp.stack([jnp.asarray(tree.flatten(params))] * MEMBERS)
    return v, {"unrolled": step(tree, net.apply), "scanned": step(runs, net.apply_runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="20x8,50x8,50x32,50x128")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    print(f"{'net':>8} {'view':>9} {'compile CPU-s':>14} {'ms/step CPU':>12}")
    for spec in args.nets.split(","):
        depth, width = (int(s) for s in spec.split("x"))
        v, fns = programs(depth, width)
        for name, fn in fns.items():
            t = time.process_time()
            fn(v).block_until_ready()
            compile_s = time.process_time() - t
            t = time.process_time()
            for _ in range(args.steps):
                out = fn(v)
            out.block_until_ready()
            print(f"{spec:>8} {name:>9} {compile_s:>14.2f} {(time.process_time() - t) / args.steps * 1e3:>12.2f}", flush=True)


if __name__ == "__main__":
    main()
