"""Parameter counts (per layer and total) of the networks the study trains.

    .venv/bin/python benchmarks/param_counts.py [--mnist-inputs 153] [--digits-inputs 40]

MLPs take PCA features (the number of components depends on the dataset and the kept
variance, hence the options); the CNNs take MNIST (28, 28, 1) and CIFAR-10 (32, 32, 3)
images. Builds the static network descriptions only: nothing is drawn or compiled.
"""

from __future__ import annotations

import argparse

from vglab.nn import networks


def catalogue(mnist_inputs: int = 153, digits_inputs: int = 40) -> list[tuple[str, networks.Network]]:
    """(input description, network) for every network in the table."""
    rows = []
    for label, n_in in ((f"MNIST-PCA ({mnist_inputs})", mnist_inputs), (f"digits-PCA ({digits_inputs})", digits_inputs)):
        for depth in (1, 20):
            rows.append((label, networks.mlp(depth, 8, n_in)))
    for label, shape in (("MNIST (28,28,1)", (28, 28, 1)), ("CIFAR-10 (32,32,3)", (32, 32, 3))):
        rows.append((label, networks.cnn(1, 8, shape)))
        rows.append((label, networks.paper_cnn("parameters", shape)))
        rows.append((label, networks.paper_cnn("layers", shape)))
    return rows


def _shape(t: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in t)


def _compress(layers) -> list[tuple[str, str, int]]:
    """(names, weight shape, params per layer) with runs of identical layers merged (dense2..20)."""
    out: list[tuple[list[str], str, int]] = []
    for layer in layers:
        shape = _shape(layer.w_shape)
        if out and out[-1][1] == shape and out[-1][2] == layer.n_params and layer.hidden:
            out[-1][0].append(layer.name)
        else:
            out.append(([layer.name], shape, layer.n_params))
    rows = []
    for names, shape, n in out:
        label = names[0] if len(names) == 1 else f"{names[0]}..{names[-1]} ({len(names)}x)"
        rows.append((label, shape, n))
    return rows


def table(mnist_inputs: int = 153, digits_inputs: int = 40) -> str:
    lines = []
    totals = []
    for data, net in catalogue(mnist_inputs, digits_inputs):
        lines.append(f"\n{net.name} on {data}")
        lines.append(f"  {'layer':<26}{'weight shape':<16}{'per layer':>10}")
        for name, shape, n in _compress(net.layers):
            lines.append(f"  {name:<26}{shape:<16}{n:>10,}")
        lines.append(f"  {'total':<42}{net.n_params:>10,}")
        totals.append((net.name, data, net.n_params, len(net.hidden_layers)))
    lines.append("\nSummary")
    lines.append(f"  {'network':<22}{'input':<22}{'hidden layers':>14}{'params':>10}")
    for name, data, n, hidden in totals:
        lines.append(f"  {name:<22}{data:<22}{hidden:>14}{n:>10,}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-inputs", type=int, default=153, help="PCA components of MNIST (default 153)")
    parser.add_argument("--digits-inputs", type=int, default=40, help="PCA components of digits (default 40)")
    args = parser.parse_args(argv)
    print(table(args.mnist_inputs, args.digits_inputs))


if __name__ == "__main__":
    main()
