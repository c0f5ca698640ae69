"""A deep tanh MLP written in Equinox, trained and measured by vglab.

    vglab run examples/equinox_mlp.toml          # from a spec
    python examples/equinox_mlp_run.py           # from Python

The one thing that makes it a vglab model rather than any Equinox model: its
nonlinearity is `vglab.nn.activation("tanh")`, so vglab can rescale it
(alpha * tanh(z / alpha)) and record each hidden layer's pre-activation z for the
layer-factor probes (tanh'(z), saturation). Everything else is plain Equinox.
"""

import equinox as eqx
import jax

import vglab


class DeepMLP(eqx.Module):
    layers: list
    act: vglab.nn.ScopedActivation = eqx.field(static=True)

    def __init__(self, key, n_in: int, n_classes: int, depth: int = 20, width: int = 8, activation: str = "tanh"):
        sizes = [n_in] + [width] * depth + [n_classes]
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = [eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], keys)]
        self.act = vglab.nn.activation(activation)

    def __call__(self, x):  # one example (Equinox's convention; vglab vmaps over the batch)
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
        return self.layers[-1](x)


def make(in_shape, n_classes, depth: int = 20, width: int = 8, activation: str = "tanh"):
    """The factory a spec names (`model = "examples.equinox_mlp:make"`): vglab passes the
    data's `in_shape` and `n_classes`, and the spec's `model_args`. Built from the key, so
    `init = "model"` draws Equinox's own initialization afresh for every seed."""
    (n_in,) = in_shape
    return vglab.nn.equinox(lambda key: DeepMLP(key, n_in, n_classes, depth, width, activation), key=True,
                            name=f"equinox mlp {depth}x{width}")
