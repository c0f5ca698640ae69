"""Activation functions and their derivatives, including the rescaled activation.

Each activation carries its analytic derivative because the probes need phi'(z) per
unit (saturation, the derivative factor of the backprop product); autodiff is checked
against these in the tests.

The rescaled activation g(z) = alpha * phi(z / alpha) of Ven & Lederer has
g'(z) = phi'(z / alpha): for alpha > 1 it stretches the linear region of phi so that
fewer units saturate and the product of derivatives shrinks more slowly with depth.
alpha may be a traced JAX value, so a sweep over alpha is one vmapped program.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from vglab.nn.formulas import FORMULAS, Activation, unknown_activation

Array = jax.Array

ACTIVATIONS: dict[str, Activation] = {f.name: f.activation(jnp) for f in FORMULAS.values()}


def get(name: str) -> Activation:
    """The activation called `name`; the error lists the valid names. `tat(phi, tau=T,
    depth=L)` is phi kernel-shaped for L layers (`vglab.nn.shaping`; solved once, cached)."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        pass
    if isinstance(name, str) and name.strip().startswith("tat"):
        from vglab.nn import shaping

        base, tau, depth = shaping.parse(name)
        return shaping.shaped(shaping.tat(base, depth, tau))
    raise unknown_activation(name)


def check_alpha(alpha) -> None:
    """Reject a concrete alpha <= 0 (Python, NumPy or concrete JAX, scalar or array); a traced
    alpha is validated where it was built."""
    if isinstance(alpha, jax.core.Tracer):
        return
    a = np.asarray(alpha, dtype=float)
    if not np.all(a > 0):  # also rejects NaN
        raise ValueError(f"alpha must be > 0 for the rescaled activation alpha*phi(z/alpha), got {alpha}")


def rescaled(phi: Activation, alpha) -> Activation:
    """g(z) = alpha * phi(z / alpha), g'(z) = phi'(z / alpha); alpha may be traced."""
    check_alpha(alpha)
    return Activation(
        name=f"rescaled({phi.name})",
        fn=lambda z: alpha * phi.fn(z / alpha),
        deriv=lambda z: phi.deriv(z / alpha),
        log_deriv=lambda z: phi.log_deriv(z / alpha),
        sigmoid_type=phi.sigmoid_type,
    )


@dataclass(frozen=True)
class ScopedActivation:
    """An activation for your own model (Equinox, Flax, plain JAX) that vglab can rescale and
    measure: inside vglab's forward pass it computes alpha * phi(z / alpha) with the
    member's alpha and records z as the layer's pre-activation, paired with this phi (a
    model may mix activations: each layer's phi' is the one that recorded its z);
    outside, it is phi(z). `name`: the layer whose pre-activation z is (needed only where
    the model returns its own pre-activations, e.g. from inside a `lax.scan`, and uses
    several activations). Frozen and hashable, so it can be a static field of an Equinox
    module."""

    name: str

    def __post_init__(self):
        get(self.name)  # raises with the valid names

    def __call__(self, z, name: str | None = None):
        from vglab.nn.model import current_scope

        phi = get(self.name)
        scope = current_scope()
        if scope is None:
            return phi.fn(z)
        scope.activations.add(self.name)
        scope.record(z, name, self.name)
        alpha = scope.alpha
        return alpha * phi.fn(z / alpha)


def activation(name: str) -> ScopedActivation:
    """`vglab.nn.activation("tanh")`: the activation to build your own model with (see
    `ScopedActivation`)."""
    return ScopedActivation(name)
