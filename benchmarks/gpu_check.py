"""The CUDA path: does the engine give the CPU's numbers on a GPU, and how fast is it there?

    PYTHONPATH=src python3 benchmarks/gpu_check.py           # on a machine with a GPU
    PYTHONPATH=src python3 benchmarks/gpu_check.py --quick   # small sizes (also runs on CPU alone)

Needs only JAX, Optax, NumPy and pandas (no data files, no CLI dependencies): the data
are synthetic, MNIST-shaped, with labels a fixed linear map of the inputs so training
makes progress.

1. Agreement: a 4-member group (2 seeds x r in {0, 0.01}, N(0, std=10)) trained for 3
   epochs on the GPU and on the CPU; prints the largest relative difference of the losses
   and of the per-layer gradient statistics, under JAX's default matmul precision and under
   "highest". The networks ask for full float32 in every product (`nn.networks.PRECISION`),
   so both lines read the same (H200 vs this 2-core VM: losses 4e-7, layer statistics 1.5e-5,
   gradient statistics 7e-5 after 3 epochs); with TF32, GPUs read ~5e-3.
2. Speed: seconds per epoch (median after the first) and compile time per network.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from synthetic import synthetic  # benchmarks/synthetic.py


def _train(net, arrays, members, epochs):
    from vglab.train import TrainConfig, train_group

    return train_group(net, arrays, members, TrainConfig(epochs=epochs))


# Compared columns (the gradient's signed mean is left out: it sits near 0, so relative
# differences there say nothing).
TABLES = (("epochs", ["train_loss", "val_loss", "val_acc"]), ("activations", ["deriv_mean", "log_deriv_mean"]),
          ("grads", ["grad_std", "grad_abs_mean", "grad_norm_mean"]))


def agreement(n_train: int) -> None:
    from vglab import nn
    from vglab.nn import init
    from vglab.train import Member

    arrays = synthetic((153,), n_train, n_train // 4)
    net = nn.mlp(1, 8, 153)
    members = [Member(seed=s, weight_init=init.normal(std=10.0), l2=r) for s in (0, 1) for r in (0.0, 0.01)]
    with jax.default_device(jax.devices("cpu")[0]):
        ref = _train(net, arrays, members, 3)
    for precision in ("default", "highest"):
        with jax.default_matmul_precision(None if precision == "default" else precision):
            got = _train(net, arrays, members, 3)
        worst = {}
        for a, b in zip(ref, got):
            for table, cols in TABLES:
                x, y = getattr(a, table)[cols].to_numpy(), getattr(b, table)[cols].to_numpy()
                rel = np.abs(x - y) / np.maximum(np.abs(x), 1e-12)
                worst[table] = max(worst.get(table, 0.0), float(np.nanmax(rel)))
        print(f"GPU vs CPU, matmul precision {precision:<8} largest relative difference: "
              + ", ".join(f"{t} {v:.1e}" for t, v in worst.items()), flush=True)


def speed(n_train: int, epochs: int, cnns: bool = True) -> None:
    from vglab import nn
    from vglab.nn import init
    from vglab.train import Member

    n_test = max(n_train // 6, 500)
    flat, images = synthetic((153,), n_train, n_test), synthetic((28, 28, 1), n_train, n_test)
    rs = np.logspace(-3, 2, 10)
    k50 = [Member(seed=s, weight_init=init.normal(std=10.0), l2=float(r)) for s in range(5) for r in rs]
    k3 = [Member(seed=s, weight_init=init.normal(std=10.0), l2=0.01) for s in range(3)]
    cases = [
        (nn.mlp(1, 8, 153), flat, k50[:1]),
        (nn.mlp(1, 8, 153), flat, k50),
        (nn.mlp(20, 8, 153), flat, k50),
    ]
    if cnns:  # minutes per epoch on a CPU
        cases += [(nn.cnn(1, 8, (28, 28, 1)), images, k3), (nn.paper_cnn("parameters", (28, 28, 1)), images, k3)]
    print(f"{'network':<24} {'K':>3} {'s/epoch':>8} {'model-ep/s':>10} {'compile s':>9}  ({n_train} train examples)")
    for net, arrays, members in cases:
        t0 = time.perf_counter()
        res = _train(net, arrays, members, epochs)
        total = time.perf_counter() - t0
        sec = res[0].epochs.seconds.to_numpy()[1:]
        steady = float(np.median(sec[1:]))
        print(f"{net.name:<24} {len(members):>3} {steady:>8.3f} {len(members) / steady:>10.1f} "
              f"{total - steady * epochs:>9.1f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small data, 3 epochs, no CNNs")
    args = ap.parse_args()
    print(f"jax {jax.__version__}, default backend {jax.default_backend()}: {jax.devices()}", flush=True)
    agreement(2000 if args.quick else 8000)
    if args.quick:
        speed(2000, 3, cnns=False)
    else:
        speed(60000, 4)


if __name__ == "__main__":
    main()
