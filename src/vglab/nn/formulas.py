"""The activation functions' formulas, written once over an array namespace.

`vglab.nn.activations` builds the JAX versions from them (training, probes) and
`vglab.report.theory` the float64 NumPy versions (mean-field quadrature, thousands of
calls per prediction, without importing JAX). Derivatives are written in forms that stay
accurate deep in the tails: 1 - tanh(z)^2 rounds to 0 in float32 from |z| ~ 9 on, while
4e/(1+e)^2 with e = exp(-2|z|) does not; saturation is exactly what vglab measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Activation:
    """phi and phi' as pure functions of the pre-activation z (`Formula.activation(jnp)`:
    `vglab.nn.activations`; kernel-shaped ones: `vglab.nn.shaping`)."""

    name: str
    fn: Callable
    deriv: Callable
    log_deriv: Callable  # log phi'(z), exact where phi' underflows in float32
    sigmoid_type: bool  # bounded and saturating: the family the paper is about

    def __call__(self, z):
        return self.fn(z)


def unknown_activation(name) -> ValueError:
    """The error for an activation name that is none of FORMULAS (nor a TAT one)."""
    return ValueError(f"unknown activation {name!r}; choose one of {sorted(FORMULAS)}, or a kernel-shaped one "
                      "tat(<name>, tau=0.3, depth=L) (rescaling is set separately with alpha)")


@dataclass(frozen=True)
class Formula:
    """phi, phi' and log phi' of an activation, each a function of the namespace `xp`
    (numpy or jax.numpy) returning a function of z."""

    name: str
    fn: Callable
    deriv: Callable
    log_deriv: Callable  # exact where phi' underflows in float32
    sigmoid_type: bool  # bounded and saturating: the family the paper is about
    smooth: bool = True  # False: a kink at 0 (quadrature breaks its panels there)

    def activation(self, xp) -> Activation:
        """The activation's functions over the namespace `xp` (jax.numpy for training)."""
        return Activation(self.name, self.fn(xp), self.deriv(xp), self.log_deriv(xp), self.sigmoid_type)


def _tanh_deriv(xp):
    def d(z):
        e = xp.exp(-2.0 * xp.abs(z))
        return 4.0 * e / (1.0 + e) ** 2
    return d


def _tanh_log_deriv(xp):
    def d(z):
        a = xp.abs(z)
        return xp.log(4.0) - 2.0 * a - 2.0 * xp.log1p(xp.exp(-2.0 * a))
    return d


def _sigmoid(xp):
    return lambda z: 0.5 * (1.0 + xp.tanh(0.5 * z))  # never overflows


def _sigmoid_deriv(xp):
    def d(z):
        e = xp.exp(-xp.abs(z))
        return e / (1.0 + e) ** 2
    return d


def _sigmoid_log_deriv(xp):
    def d(z):
        a = xp.abs(z)
        return -a - 2.0 * xp.log1p(xp.exp(-a))
    return d


FORMULAS: dict[str, Formula] = {f.name: f for f in (
    Formula("tanh", lambda xp: xp.tanh, _tanh_deriv, _tanh_log_deriv, True),
    Formula("sigmoid", _sigmoid, _sigmoid_deriv, _sigmoid_log_deriv, True),
    Formula("arctan", lambda xp: xp.arctan, lambda xp: lambda z: 1.0 / (1.0 + z**2),
            lambda xp: lambda z: -xp.log1p(z**2), True),
    Formula("softsign", lambda xp: lambda z: z / (1.0 + xp.abs(z)), lambda xp: lambda z: 1.0 / (1.0 + xp.abs(z)) ** 2,
            lambda xp: lambda z: -2.0 * xp.log1p(xp.abs(z)), True, smooth=False),
    # relu'(0) is taken as 0, as jax.nn.relu's gradient does; log 0 = -inf.
    Formula("relu", lambda xp: lambda z: xp.maximum(z, 0.0), lambda xp: lambda z: (z > 0).astype(z.dtype),
            lambda xp: lambda z: xp.where(z > 0, 0.0, -xp.inf).astype(z.dtype), False, smooth=False),
)}


def numpy_pair(name: str):
    """(phi, phi') in NumPy (float64 for float64 inputs)."""
    import numpy as np

    f = FORMULAS[name]
    return f.fn(np), f.deriv(np)
