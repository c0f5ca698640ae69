"""The rescaling identity: an α-network is a standard network at scaled inputs, hidden
biases and output weights.

With g(z) = α φ(z/α), a hidden layer computes h^[l] = W^[l] a^[l-1] + b^[l] and
a^[l] = g(h^[l]) (a^[0] = x). Substitute h = α ĥ and a = α â layer by layer:

    ĥ^[l] = W^[l] â^[l-1] + b^[l]/α,    â^[l] = φ(ĥ^[l]),    â^[0] = x/α
    logits = W_out a^[L] + b_out = (α W_out) â^[L] + b_out

Convolution and flattening are linear and a max-pool commutes with multiplying by α > 0,
so this holds for every network of `vglab.nn.networks`. Hence the α-network with
parameters θ = (W, b, W_out, b_out) computes at x exactly what the standard φ-network with

    θ̂ = (W, b/α, α W_out, b_out)                                   (`twin_params`)

computes at x/α (`twin_inputs`). Rescaling changes the input scale, the hidden biases' scale
and the output temperature, and never the hidden layers' product of W and φ' at a given ĥ.
Training can differ further only through the parametrisation the optimizer sees: J(θ) =
Ĵ(θ̂(θ)), so by the chain rule (`grads_from_twin`)

    ∂J/∂W = ∂Ĵ/∂Ŵ (hidden),  ∂J/∂b = (1/α) ∂Ĵ/∂b̂ (hidden),
    ∂J/∂W_out = α ∂Ĵ/∂Ŵ_out,  ∂J/∂b_out = ∂Ĵ/∂b̂_out.

The mean-field consequence (`vglab.report.theory`): the α-network's depth scales at
(σ_w², σ_b²) are the standard network's at (σ_w², σ_b²/α²).

Parameters are the `{layer: {"w", "b"}}` pytrees of `Network.init`; which layers are
hidden comes from `network.layers`. α may be a traced JAX value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vglab.nn import activations
from vglab.nn.model import Model
from vglab.nn.networks import DEFAULT_ACTIVATION, DEFAULT_DEPTH, DEFAULT_WIDTH, Network, build


def _check(network: Network, tree: dict, alpha, what: str) -> None:
    activations.check_alpha(alpha)
    missing = [layer.name for layer in network.layers if not (layer.name in tree and {"w", "b"} <= set(tree[layer.name]))]
    if missing:
        raise ValueError(f"{what} lack a 'w' and 'b' for layer(s) {missing} of {network.name}; pass the full "
                         f"{{layer: {{'w', 'b'}}}} pytree of network.init (layers {list(network.layer_names)})")


def twin_params(network: Network, params: dict, alpha) -> dict:
    """θ̂: the standard (α = 1) network's parameters that, at inputs x/α, give the α-network's
    logits: hidden weights unchanged, hidden biases b/α, output weights α·W_out, output bias
    unchanged."""
    _check(network, params, alpha, "params")
    return _hidden_b_over_alpha_output_w_times_alpha(network, params, alpha)


def twin_inputs(x, alpha):
    """The inputs at which the twin computes what the α-network computes at x: x/α."""
    activations.check_alpha(alpha)
    return x / alpha


def grads_from_twin(network: Network, twin_grads: dict, alpha) -> dict:
    """The α-network's gradients ∂J/∂θ from the twin's ∂Ĵ/∂θ̂ (the chain rule through
    θ̂(θ) of `twin_params`): hidden biases' divided by α, output weights' multiplied by α,
    the rest unchanged."""
    _check(network, twin_grads, alpha, "twin_grads")
    return _hidden_b_over_alpha_output_w_times_alpha(network, twin_grads, alpha)


def _hidden_b_over_alpha_output_w_times_alpha(network: Network, tree: dict, alpha) -> dict:
    """The one map both directions share: θ -> θ̂ (`twin_params`) and ∂Ĵ/∂θ̂ -> ∂J/∂θ
    (`grads_from_twin`, the chain rule through it) scale the same entries the same way."""
    out = {}
    for layer in network.layers:
        p = tree[layer.name]
        out[layer.name] = {"w": p["w"], "b": p["b"] / alpha} if layer.hidden else {"w": alpha * p["w"], "b": p["b"]}
    return out


# ------------------------------------------------------------------ the twins as models
TWIN_FORMS = ("plain", "inputs", "same")


@dataclass(frozen=True)
class Twin(Model):
    """A standard (α = 1) `network` that sees x/α, as a model the engine trains; `alpha` is
    fixed here (the run's own alpha stays 1 and, if set, rescales the twin's φ).

    `form` says which parameters it trains and where they start, given the same base draw
    θ = (W, b, W_out, b_out) that the α-network starts from:

    - "plain": the plainly parametrised twin. It trains θ̂ = (W, b̂, Ŵ_out, b_out) as its own
      parameters, started at `twin_params(θ)` = (W, b/α, α W_out, b_out): at the start it
      computes exactly what the α-network computes (identity above), but the optimizer sees
      θ̂, not θ. Differences to the α-network are the parametrisation's.
    - "inputs": the standard network at x/α with the draw θ as it is: only the input scale
      of rescaling, no bias scale and no output temperature.
    - "same": the twin that holds the α-network's parameters θ and computes with
      `twin_params(θ)` at x/α: the α-network itself, written as its twin (equal gradients,
      so it trains as the α-network does; an end-to-end check of the identity).
    """

    network: Network
    alpha: float
    form: str = "plain"

    def __post_init__(self):
        activations.check_alpha(self.alpha)
        if self.form not in TWIN_FORMS:
            raise ValueError(f"unknown twin form {self.form!r}; choose one of {list(TWIN_FORMS)} (plain: own biases "
                             "and output weights started at b/alpha and alpha*W_out; inputs: x/alpha only; same: the "
                             "alpha-network's parameters)")

    # the engine reads these from the model: the network's
    @property
    def name(self) -> str:
        return f"{self.form} twin (α={self.alpha:g}) of {self.network.name}"

    @property
    def in_shape(self):
        return self.network.in_shape

    @property
    def activation(self) -> str:
        return self.network.activation

    @property
    def layer_order(self):
        return self.network.layer_order

    @property
    def weight_layout(self):
        return self.network.weight_layout

    def fans(self, name, param, shape):
        return self.network.fans(name, param, shape)

    def layout(self, x_example=None):
        return self.network.layout()

    def init(self, key, *args, **kw):
        return self.network.init(key, *args, **kw)

    def start_from(self, params):
        """The plain twin starts at θ̂ = twin_params(θ) of the drawn θ (in its dtype); the
        other forms start from θ as drawn."""
        if self.form != "plain":
            return params
        out = twin_params(self.network, params, self.alpha)
        return {k: {p: np.asarray(v, np.asarray(params[k][p]).dtype) for p, v in d.items()} for k, d in out.items()}

    def apply(self, params, x, alpha=1.0, capture: bool = False):
        if self.form == "same":
            params = twin_params(self.network, params, self.alpha)
        return self.network.apply(params, twin_inputs(x, self.alpha), alpha=alpha, capture=capture)


def twin(alpha: float, form: str = "plain", network: str = "mlp", depth: int = DEFAULT_DEPTH,
         width: int = DEFAULT_WIDTH, variant: str | None = None, *, in_shape, n_classes: int = 10,
         activation: str = DEFAULT_ACTIVATION) -> Twin:
    """A `Twin` of a built-in network (`vglab.nn.networks.build`), for specs:
    `model = "vglab.nn.rescaling:twin"`, `model_args = {alpha = 2, form = "plain", depth = 20, width = 8}`.
    Started from the same base draw as the α-network of the same init law and seed (the
    layouts are the network's), so runs of the two with one seed compare paired."""
    return Twin(build(network, in_shape, depth=depth, width=width, variant=variant, activation=activation,
                      n_out=n_classes), float(alpha), form)
