"""L1 and L2 penalties on all weights and biases, as in Keras' kernel/bias regularizers.

Kept apart from the data loss so both can be reported. One function with both
strengths lets a group mix none / L1 / L2 members in one vmapped program
(strength 0 switches a term off).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

PENALTIES = ("none", "l1", "l2")


def penalty(params, l1=0.0, l2=0.0):
    """l1 * sum|theta| + l2 * sum theta^2 over every weight and bias. A strength of None
    leaves its term out of the program (the engine does so when no member of a group uses
    it: each term is a reduction over every parameter at every step)."""
    leaves = jax.tree_util.tree_leaves(params)
    total = jnp.zeros((), leaves[0].dtype)
    for leaf in leaves:
        if l1 is not None:
            total = total + l1 * jnp.sum(jnp.abs(leaf))
        if l2 is not None:
            total = total + l2 * jnp.sum(leaf**2)
    return total


def strengths(kind: str, r: float) -> tuple[float, float]:
    """(l1, l2) for a named penalty of strength r, validated."""
    if kind not in PENALTIES:
        raise ValueError(f"unknown penalty {kind!r}; choose one of {list(PENALTIES)}")
    if not r >= 0:
        raise ValueError(f"penalty strength r must be >= 0, got {r}")
    if kind == "none":
        return 0.0, 0.0
    return (float(r), 0.0) if kind == "l1" else (0.0, float(r))
