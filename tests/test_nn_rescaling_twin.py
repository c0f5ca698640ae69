"""The rescaling twins as models (vglab.nn.rescaling.Twin): forward passes and starting
parameters against the identity's functions, and the same base draw as the α-network
through the engine (their training: tests/train/test_rescaling_twin.py).

Tolerances as in test_nn_rescaling.py: the twin rounds differently (x/α, b/α and α·W_out
outside the activation instead of z/α inside it), 1e-5 of each tensor's largest entry in
float32 for these ordered-phase initializations.
"""

import numpy as np
import pytest

from vglab.experiments.spec import ModelSpec
from vglab.nn import init, networks, rescaling
from vglab.train import Member, loop

MLP = lambda: networks.mlp(3, 8, 12)  # noqa: E731
CNN = lambda: networks.cnn(1, 8, (8, 8, 1))  # noqa: E731


def _rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


def _start(model, seed=3, law="normal(std=0.3)", bias="normal(std=0.2)"):
    return loop.initial_params(model, Member(seed=seed, weight_init=init.parse(law), bias_init=init.parse(bias)))


def _x(net, n=16):
    return np.random.default_rng(1).uniform(-1.0, 1.0, (n,) + net.in_shape).astype(np.float32)


@pytest.mark.parametrize("make", [MLP, CNN], ids=["mlp", "cnn"])
@pytest.mark.parametrize("alpha", [0.5, 2.0, 5.0])
def test_twins_start_where_the_identity_says_and_compute_what_it_says(make, alpha):
    net = make()
    x = _x(net)
    theta = _start(net)  # the α-network's start (its layout is the twins')
    alpha_net = np.asarray(net.apply(theta, x, alpha=alpha))
    for form in rescaling.TWIN_FORMS:
        tw = rescaling.Twin(net, alpha, form)
        assert tw.layout() == net.layout() and tw.activation == net.activation and tw.in_shape == net.in_shape
        start = _start(tw)  # the same member: the same base draw, mapped by start_from
        want = rescaling.twin_params(net, theta, alpha) if form == "plain" else theta
        for layer in net.layer_names:
            for k in ("w", "b"):
                assert start[layer][k].dtype == np.float32
                np.testing.assert_allclose(start[layer][k], want[layer][k], rtol=1e-6, atol=0)
        out = np.asarray(tw.apply(start, x))
        if form == "inputs":  # x/α only: the standard net at the drawn θ, not the α-network
            np.testing.assert_allclose(out, net.apply(theta, x / alpha, alpha=1.0), rtol=1e-6, atol=1e-6)
            assert _rel_err(alpha_net, out) > 1e-3
        else:  # plain (own parameters, started at θ̂) and same (θ mapped inside): the α-network's function
            assert _rel_err(alpha_net, out) < 1e-5, form
        logits, preacts = tw.apply(start, x, capture=True)  # the layer factors see the twin's ĥ
        assert set(preacts) == {layer.name for layer in net.hidden_layers}


def test_start_from_maps_only_the_plain_twin_and_keeps_its_input():
    net = MLP()
    theta = _start(net)
    before = {k: {p: np.array(v) for p, v in d.items()} for k, d in theta.items()}
    plain = rescaling.Twin(net, 4.0, "plain").start_from(theta)
    np.testing.assert_allclose(plain["dense1"]["b"], before["dense1"]["b"] / 4.0, rtol=1e-6)
    np.testing.assert_allclose(plain["out"]["w"], before["out"]["w"] * 4.0, rtol=1e-6)
    np.testing.assert_array_equal(plain["dense2"]["w"], before["dense2"]["w"])
    np.testing.assert_array_equal(plain["out"]["b"], before["out"]["b"])
    for layer in before:  # the drawn parameters are not changed in place
        np.testing.assert_array_equal(theta[layer]["b"], before[layer]["b"])
    assert rescaling.Twin(net, 4.0, "inputs").start_from(theta) is theta


def test_the_factory_builds_from_a_spec_and_checks_its_arguments():
    spec = ModelSpec("model", activation="tanh", model="vglab.nn.rescaling:twin",
                     model_args=(("alpha", 2), ("depth", 3), ("form", "plain"), ("width", 8)))
    tw = spec.build((12,), 10)
    assert isinstance(tw, rescaling.Twin) and tw.network == MLP() and tw.alpha == 2.0 and hash(tw) == hash(spec.build((12,), 10))
    with pytest.raises(ValueError, match=r"unknown twin form 'twin'.*plain.*inputs.*same"):
        rescaling.Twin(MLP(), 2.0, "twin")
    with pytest.raises(ValueError, match="alpha must be > 0"):
        rescaling.Twin(MLP(), 0.0)
