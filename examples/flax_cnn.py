"""A small tanh CNN written in Flax (nnx), trained and measured by vglab.

    vglab run examples/flax_cnn.toml             # from a spec
    python examples/flax_cnn_run.py              # from Python

As in the Equinox example, the nonlinearity is `vglab.nn.activation("tanh")`: vglab
rescales it (alpha * tanh(z / alpha)) and records each hidden layer's pre-activation for
the layer-factor probes. Flax's kernels are (kh, kw, in, out), the layout vglab's
fan-scaled init laws assume by default.
"""

from flax import nnx

import vglab


class CNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, in_shape, n_classes: int, filters: int = 8, width: int = 16,
                 activation: str = "tanh"):
        h, w, c = in_shape
        self.conv1 = nnx.Conv(c, filters, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(filters, filters, (3, 3), rngs=rngs)
        self.dense = nnx.Linear((h // 2) * (w // 2) * filters, width, rngs=rngs)
        self.out = nnx.Linear(width, n_classes, rngs=rngs)
        self.act = vglab.nn.activation(activation)

    def __call__(self, x):  # a batch, NHWC
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        n, h, w, c = x.shape
        x = x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max((2, 4))  # 2x2 max-pool
        x = self.act(self.dense(x.reshape(n, -1)))
        return self.out(x)


def make(in_shape, n_classes, filters: int = 8, width: int = 16, activation: str = "tanh"):
    """The factory a spec names (`model = "examples.flax_cnn:make"`, `input = "images"`)."""
    return vglab.nn.flax_nnx(lambda rngs: CNN(rngs, in_shape, n_classes, filters, width, activation), key=True,
                             name=f"flax cnn {filters}f")
