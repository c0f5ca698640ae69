"""L1/L2 penalties against NumPy, and the validation of named penalties."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vglab.nn import networks, penalties


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _params(seed=0):
    net = networks.mlp(2, 5, 4, n_out=3)
    rng = np.random.default_rng(seed)
    return {layer.name: {"w": rng.normal(0, 2.0, layer.w_shape), "b": rng.normal(0, 0.5, layer.b_shape)}
            for layer in net.layers}


_PENALTY = jax.jit(penalties.penalty)


def _numpy_penalty(params, l1, l2):
    leaves = [a for layer in params.values() for a in layer.values()]
    return l1 * sum(np.abs(a).sum() for a in leaves) + l2 * sum((a**2).sum() for a in leaves)


@pytest.mark.parametrize("l1, l2", [(0.0, 0.0), (1e-3, 0.0), (0.0, 1e-2), (0.3, 0.7)])
def test_penalty_equals_numpy(l1, l2, x64):
    p_np = _params()
    p = jax.tree_util.tree_map(jnp.asarray, p_np)
    got = _PENALTY(p, l1, l2)  # jitted: one compile for all strengths
    assert got.shape == () and got.dtype == jnp.float64
    np.testing.assert_allclose(got, _numpy_penalty(p_np, l1, l2), rtol=1e-12, atol=1e-15)


def test_penalty_gradient_is_l1_sign_plus_2_l2_theta(x64):
    p_np = _params(1)
    p = jax.tree_util.tree_map(jnp.asarray, p_np)
    g = jax.jit(jax.grad(lambda q: penalties.penalty(q, l1=0.2, l2=0.05)))(p)
    for name, layer in p_np.items():
        for k, a in layer.items():
            np.testing.assert_allclose(g[name][k], 0.2 * np.sign(a) + 2 * 0.05 * a, rtol=1e-12)


def test_traced_strengths_under_vmap_mix_none_l1_l2():
    p_np = _params(2)
    p = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), p_np)
    strengths = [penalties.strengths("none", 0.0), penalties.strengths("l1", 1e-3), penalties.strengths("l2", 1e-2)]
    l1s, l2s = (jnp.asarray(s, jnp.float32) for s in zip(*strengths))
    got = jax.jit(jax.vmap(lambda a, b: penalties.penalty(p, a, b)))(l1s, l2s)
    want = [_numpy_penalty(p_np, a, b) for a, b in strengths]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert float(got[0]) == 0.0


def test_strengths_of_named_penalties():
    assert penalties.strengths("none", 0.0) == (0.0, 0.0)
    assert penalties.strengths("none", 5.0) == (0.0, 0.0)
    assert penalties.strengths("l1", 0.01) == (0.01, 0.0)
    assert penalties.strengths("l2", 0.001) == (0.0, 0.001)
    assert penalties.strengths("l2", 0) == (0.0, 0.0)


@pytest.mark.parametrize("kind", ["l3", "L2", "elastic", ""])
def test_unknown_penalty_lists_the_choices(kind):
    with pytest.raises(ValueError) as e:
        penalties.strengths(kind, 0.1)
    for name in ("none", "l1", "l2"):
        assert f"'{name}'" in str(e.value)


@pytest.mark.parametrize("r", [-1e-3, -1.0, math.nan])
def test_negative_strength_raises(r):
    with pytest.raises(ValueError, match="r must be >= 0"):
        penalties.strengths("l2", r)


def test_a_term_left_out_equals_a_zero_strength():
    """The engine leaves out the terms no member of a group uses (strength None)."""
    params = jax.tree_util.tree_map(jnp.asarray, _params(4))
    assert float(penalties.penalty(params, None, 0.3)) == float(penalties.penalty(params, 0.0, 0.3))
    assert float(penalties.penalty(params, 0.2, None)) == float(penalties.penalty(params, 0.2, 0.0))
    assert float(penalties.penalty(params, None, None)) == 0.0
    assert float(penalties.penalty(params, 0.2, 0.3)) > float(penalties.penalty(params, 0.2, None)) > 0
