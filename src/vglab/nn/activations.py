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
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


@dataclass(frozen=True)
class Activation:
    """phi and phi' as pure functions of the pre-activation z."""

    name: str
    fn: Callable[[Array], Array]
    deriv: Callable[[Array], Array]
    log_deriv: Callable[[Array], Array]  # log phi'(z), exact where phi' underflows in float32
    sigmoid_type: bool  # bounded and saturating: the family the paper is about

    def __call__(self, z: Array) -> Array:
        return self.fn(z)


# Derivatives are written in forms that stay accurate deep in the tails: 1 - tanh(z)^2
# rounds to 0 in float32 from |z| ~ 9 on, while 4e/(1+e)^2 with e = exp(-2|z|) does not.
# Saturation is exactly what vglab measures, so the tails matter.
def _tanh_deriv(z):
    e = jnp.exp(-2.0 * jnp.abs(z))
    return 4.0 * e / (1.0 + e) ** 2


def _tanh_log_deriv(z):
    a = jnp.abs(z)
    return jnp.log(4.0) - 2.0 * a - 2.0 * jnp.log1p(jnp.exp(-2.0 * a))


def _sigmoid_deriv(z):
    e = jnp.exp(-jnp.abs(z))
    return e / (1.0 + e) ** 2


def _sigmoid_log_deriv(z):
    a = jnp.abs(z)
    return -a - 2.0 * jnp.log1p(jnp.exp(-a))


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("tanh", jnp.tanh, _tanh_deriv, _tanh_log_deriv, True),
        Activation("sigmoid", jax.nn.sigmoid, _sigmoid_deriv, _sigmoid_log_deriv, True),
        Activation("arctan", jnp.arctan, lambda z: 1.0 / (1.0 + z**2), lambda z: -jnp.log1p(z**2), True),
        Activation(
            "softsign", lambda z: z / (1.0 + jnp.abs(z)), lambda z: 1.0 / (1.0 + jnp.abs(z)) ** 2,
            lambda z: -2.0 * jnp.log1p(jnp.abs(z)), True,
        ),
        # relu'(0) is taken as 0, as jax.nn.relu's gradient does; log 0 = -inf.
        Activation(
            "relu", jax.nn.relu, lambda z: (z > 0).astype(z.dtype),
            lambda z: jnp.where(z > 0, 0.0, -jnp.inf).astype(z.dtype), False,
        ),
    )
}


def get(name: str) -> Activation:
    """The activation called `name`; the error lists the valid names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)} "
            "(rescaling is set separately with alpha)"
        ) from None


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
    member's alpha and records z as the layer's pre-activation; outside, it is phi(z).
    Frozen and hashable, so it can be a static field of an Equinox module."""

    name: str

    def __post_init__(self):
        get(self.name)  # raises with the valid names

    def __call__(self, z):
        from vglab.nn.model import current_scope

        phi = get(self.name)
        scope = current_scope()
        if scope is None:
            return phi.fn(z)
        scope.activations.add(self.name)
        scope.record(z)
        alpha = scope.alpha
        return alpha * phi.fn(z / alpha)


def activation(name: str) -> ScopedActivation:
    """`vglab.nn.activation("tanh")`: the activation to build your own model with (see
    `ScopedActivation`)."""
    return ScopedActivation(name)
