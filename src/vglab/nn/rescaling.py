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

from vglab.nn import activations
from vglab.nn.networks import Network


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
    out = {}
    for layer in network.layers:
        p = params[layer.name]
        out[layer.name] = {"w": p["w"], "b": p["b"] / alpha} if layer.hidden else {"w": alpha * p["w"], "b": p["b"]}
    return out


def twin_inputs(x, alpha):
    """The inputs at which the twin computes what the α-network computes at x: x/α."""
    activations.check_alpha(alpha)
    return x / alpha


def grads_from_twin(network: Network, twin_grads: dict, alpha) -> dict:
    """The α-network's gradients ∂J/∂θ from the twin's ∂Ĵ/∂θ̂ (the chain rule through
    θ̂(θ) of `twin_params`): hidden biases' divided by α, output weights' multiplied by α,
    the rest unchanged."""
    _check(network, twin_grads, alpha, "twin_grads")
    out = {}
    for layer in network.layers:
        g = twin_grads[layer.name]
        out[layer.name] = {"w": g["w"], "b": g["b"] / alpha} if layer.hidden else {"w": alpha * g["w"], "b": g["b"]}
    return out
