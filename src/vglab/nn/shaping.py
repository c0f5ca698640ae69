"""Kernel-shaped activations: Tailored Activation Transformations (TAT; Zhang et al. 2022),
the smooth-activation case of Deep Kernel Shaping (DKS; Martens et al. 2021).

A deep network without skips or normalization trains badly when its kernel (the map from
the inputs' correlation c to the outputs') degenerates with depth. TAT transforms the
activation to φ̂(x) = γ·(φ(αx + β) + δ) so that each layer's local maps, for inputs of
unit variance (q = 1), satisfy

    Q(1) = E[φ̂(x)²] = 1          (the variance is kept)        -> γ
    Q′(1) = E[φ̂(x) φ̂′(x) x] = 1   (and is stable under q)
    C′(1) = E[φ̂′(x)²] = 1         (correlations near 1 are kept: χ = 1)
    C″(1) = E[φ̂″(x)²] = τ / L     (the whole net's C map bends by τ at c = 1)

with x ~ N(0, 1): L layers of local curvature κ compose to a network curvature L·κ (the
C′(1) = 1 of each makes the composition's second derivative additive), so τ bounds how far
the deep net's kernel is from the identity — how "shallow" it behaves. α, β, δ solve the
three last conditions (Newton's method on Gauss–Hermite quadratures in float64), γ the first.

The solutions come in symmetric families: the input's law is symmetric (x -> -x flips α) and
a kernel does not see the output's sign; `tat` returns the one with α > 0. The `dks`
package (DeepMind) computes the same parameters; its JAX module does not import with the
JAX vglab pins (it reads `jax.config` as a module), so vglab solves them itself and its tests
check the result against the package's published numbers.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from vglab.nn.formulas import FORMULAS, Activation, unknown_activation

QUAD_POINTS = 200  # Gauss–Hermite nodes: φ(αx + β) is smooth, the expectations converge to 1e-15
DEFAULT_TAU = 0.3  # TAT's default C″ target for the whole network (the paper's τ)
RESIDUAL_TOL = 1e-12


_NAME = re.compile(r"^\s*tat\s*\(\s*(\w+)\s*((?:,\s*\w+\s*=\s*[^,()]+)*)\)\s*$")
NAME_HELP = "tat(tanh), tat(tanh, tau=0.3), tat(tanh, tau=0.3, depth=20)"


def parse(name: str) -> tuple[str, float, int | None] | None:
    """`tat(tanh, tau=0.3, depth=20)` -> ("tanh", 0.3, 20); depth None when not given (a spec
    fills in the MLP's depth); None for a name that is not a TAT activation."""
    if not isinstance(name, str) or not name.strip().startswith("tat"):
        return None
    m = _NAME.match(name)
    if not m:
        raise ValueError(f"cannot read activation {name!r}; write e.g. {NAME_HELP}")
    args = {}
    for part in filter(None, (p.strip() for p in m.group(2).split(","))):
        key, _, val = part.partition("=")
        args[key.strip()] = val.strip()
    unknown = set(args) - {"tau", "depth"}
    if unknown:
        raise ValueError(f"activation {name!r}: unknown argument(s) {sorted(unknown)}; write e.g. {NAME_HELP}")
    try:
        tau = float(args.get("tau", DEFAULT_TAU))
        depth = int(args["depth"]) if "depth" in args else None
    except ValueError:
        raise ValueError(f"activation {name!r}: tau is a number, depth an integer; write e.g. {NAME_HELP}") from None
    _check(m.group(1), depth, tau)
    return m.group(1), tau, depth


def canonical(activation: str, tau: float, depth: int) -> str:
    """The name `parse` reads back, as labels and run ids show it."""
    return f"tat({activation}, tau={tau:g}, depth={depth})"


def _check(name: str, depth, tau) -> None:
    if name not in FORMULAS:
        raise unknown_activation(name)
    if not FORMULAS[name].smooth:
        raise ValueError(f"TAT's smooth-activation conditions need a smooth activation; {name!r} has a kink "
                         "(TAT transforms ReLUs as leaky ReLUs, which vglab does not have)")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise ValueError(f"depth is the number of nonlinear layers, an integer >= 1, got {depth!r}")
    if not (tau > 0 and math.isfinite(tau)):
        raise ValueError(f"tau (the network's C''(1) target) must be finite and > 0, got {tau!r}")


@dataclass(frozen=True)
class Shaping:
    """φ̂(x) = output_scale·(φ(input_scale·x + input_shift) + output_shift), solved for `depth`
    nonlinear layers and the network curvature `tau`."""

    activation: str
    depth: int
    tau: float
    input_scale: float  # α
    input_shift: float  # β
    output_shift: float  # δ
    output_scale: float  # γ

    @property
    def label(self) -> str:
        return f"TAT {self.activation} (τ={self.tau:g}, L={self.depth})"


def _expectations(name: str):
    """(α, β, δ) -> the three residual conditions and γ, in float64 over the quadrature."""
    f = FORMULAS[name]
    phi, dphi = f.fn(jnp), f.deriv(jnp)
    ddphi = jax.vmap(jax.grad(lambda z: dphi(z)))
    x, w = np.polynomial.hermite_e.hermegauss(QUAD_POINTS)
    w = w / math.sqrt(2 * math.pi)

    def conditions(p, target):
        a, b, d = p[0], p[1], p[2]
        u = a * x + b
        g = phi(u) + d
        gamma = 1.0 / jnp.sqrt(jnp.sum(w * g * g))
        h, dh, ddh = gamma * g, gamma * a * dphi(u), gamma * a * a * ddphi(u)
        return jnp.stack([jnp.sum(w * h * dh * x) - 1.0, jnp.sum(w * dh * dh) - 1.0,
                          jnp.sum(w * ddh * ddh) - target]), gamma

    return conditions


def tat(name: str, depth: int, tau: float = DEFAULT_TAU) -> Shaping:
    """The TAT parameters of activation `name` for a net of `depth` nonlinear layers."""
    if depth is None:
        raise ValueError(f"a TAT activation needs the number of nonlinear layers: write e.g. "
                         f"tat({name}, tau={tau:g}, depth=20)")
    _check(name, depth, tau)
    return _solve(name, int(depth), float(tau))


@functools.lru_cache(maxsize=16)
def _programs(name: str):
    """The residual conditions, their Jacobian and γ of activation `name` as compiled
    programs of (p, target): one compile per activation serves every depth and τ."""
    conditions = _expectations(name)
    residual = jax.jit(lambda p, target: conditions(p, target)[0])
    return residual, jax.jit(jax.jacfwd(residual)), jax.jit(lambda p, target: conditions(p, target)[1])


@functools.lru_cache(maxsize=64)
def _solve(name: str, depth: int, tau: float) -> Shaping:
    with jax.enable_x64(True):
        residual, jacobian, gamma_of = _programs(name)
        target = jnp.float64(tau / depth)

        def fn(p):
            return residual(p, target)

        def jac(p):
            return jacobian(p, target)

        for start in ((0.1, 0.5), (0.3, 0.5), (0.1, -1.0), (0.3, 1.0), (1.0, 1.0), (0.05, 0.5)):
            p = jnp.asarray([start[0], start[1], -float(FORMULAS[name].fn(np)(np.float64(start[1])))], jnp.float64)
            p = _newton(fn, jac, p)
            if p is not None:
                break
        else:
            raise ValueError(f"found no TAT parameters for {name} at depth {depth}, tau {tau:g}")
        gamma = float(gamma_of(p, target))
    a, b, d = (float(v) for v in p)
    if a < 0:  # x -> -x: the same kernel, α > 0 by convention
        a = -a
    return Shaping(name, depth, float(tau), a, b, d, gamma)


def _newton(fn, jac, p, steps: int = 100):
    """Damped Newton from `p`; the root, or None where it does not converge."""
    r = fn(p)
    for _ in range(steps):
        norm = float(jnp.linalg.norm(r))
        if not math.isfinite(norm):
            return None
        if norm < RESIDUAL_TOL:
            return p
        try:
            step = jnp.linalg.solve(jac(p), r)
        except Exception:  # a singular Jacobian: try the next start
            return None
        t = 1.0
        while t > 1e-4:
            q = p - t * step
            rq = fn(q)
            if float(jnp.linalg.norm(rq)) < norm:
                break
            t /= 2
        else:
            return None
        p, r = q, rq
    return None


def shaped(shaping: Shaping) -> Activation:
    """The transformed activation φ̂ as a vglab `Activation` (φ̂, φ̂′ and log φ̂′ from φ's
    formulas, so probes and gradients stay exact in the tails)."""
    phi = FORMULAS[shaping.activation].activation(jnp)
    a, b, d, g = shaping.input_scale, shaping.input_shift, shaping.output_shift, shaping.output_scale
    return Activation(
        name=canonical(shaping.activation, shaping.tau, shaping.depth),
        fn=lambda z: g * (phi.fn(a * z + b) + d),
        deriv=lambda z: (g * a) * phi.deriv(a * z + b),
        log_deriv=lambda z: math.log(g * a) + phi.log_deriv(a * z + b),
        sigmoid_type=phi.sigmoid_type,
    )
