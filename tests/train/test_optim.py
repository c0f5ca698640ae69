"""The optimizer setting: any listed Optax optimizer, a learning rate per member, swept
parameters traced in one program, schedules; checked against Optax itself."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from problems import blobs

from vglab import nn
from vglab.nn import init
from vglab.train import Member, TrainConfig, loop, optim, train_group

DATA = blobs(n_train=96, n_test=32)
NET = nn.mlp(1, 6, DATA.x_train.shape[1])


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_every_listed_optimizer_is_linear_in_the_learning_rate(name):
    """The engine builds the optimizer at rate 1 and multiplies each member's update by its
    rate; this is what makes that exact: Optax's own optimizer at rate lr, step by step."""
    rng = np.random.default_rng(0)
    p0 = {"w": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32), "b": jnp.asarray(rng.normal(size=3), jnp.float32)}
    grads = [jax.tree_util.tree_map(lambda a: jnp.asarray(rng.normal(size=a.shape), jnp.float32), p0) for _ in range(4)]
    setting = optim.Optimizer(name, tuple(sorted(optim.check_args(name, {}).items())))
    ours, ref = setting.transformation(), optax.inject_hyperparams(optim._factory(name))(
        learning_rate=0.03, **dict(setting.static))
    s_ours, s_ref, pa, pb = ours.init(p0), ref.init(p0), p0, p0
    for g in grads:
        ua, s_ours = ours.update(g, s_ours, pa)
        ub, s_ref = ref.update(g, s_ref, pb)
        ua = optim.scale_updates(ua, 0.03)
        for k in ua:
            np.testing.assert_allclose(ua[k], ub[k], rtol=2e-5, atol=1e-9, err_msg=name)
        pa, pb = optax.apply_updates(pa, ua), optax.apply_updates(pb, ub)


def test_sgd_with_momentum_and_a_learning_rate_sweep_match_a_replay():
    """Two members of one program with different learning rates, each against Optax's SGD
    with momentum applied step by step outside the engine."""
    opt = optim.Optimizer("sgd", (("momentum", 0.9),))
    cfg = TrainConfig(epochs=1, batch_size=32, optimizer=opt, probes=("grad_norm",))
    members = [Member(seed=2, weight_init=init.normal(std=0.5), learning_rate=lr) for lr in (0.05, 0.2)]
    results = train_group(NET, DATA, members, cfg)
    for member, res in zip(members, results):
        params = loop.initial_params(NET, member)
        sgd = optax.sgd(member.learning_rate, momentum=0.9)
        state, losses = sgd.init(params), []

        @jax.jit  # one program for the replay's steps (eagerly, each operation compiles on its own)
        def step(params, state, x, y):
            def loss(p):
                return optax.softmax_cross_entropy_with_integer_labels(NET.apply(p, x), y).mean()
            value, g = jax.value_and_grad(loss)(params)
            updates, state = sgd.update(g, state, params)
            return value, optax.apply_updates(params, updates), state

        for idx in loop.batch_order(member.seed, 1, len(DATA.x_train), 32):
            value, params, state = step(params, state, DATA.x_train[idx], DATA.y_train[idx])
            losses.append(float(value))
        np.testing.assert_allclose(res.epochs.train_loss.iloc[1], np.mean(losses), rtol=1e-5)
        val = optax.softmax_cross_entropy_with_integer_labels(NET.apply(params, DATA.x_test), DATA.y_test).mean()
        np.testing.assert_allclose(res.epochs.val_loss.iloc[1], float(val), rtol=1e-4)
    assert results[0].epochs.val_loss.iloc[1] != results[1].epochs.val_loss.iloc[1]


def test_a_swept_eps_is_traced_and_each_member_gets_its_own():
    opt = optim.Optimizer("adam", (), ("eps",))
    cfg = TrainConfig(epochs=1, optimizer=opt, probes=())
    tiny, big = (Member(seed=0, weight_init=init.normal(std=0.05), optimizer_args=(("eps", e),)) for e in (1e-12, 1.0))
    r_tiny, r_big = train_group(NET, DATA, [tiny, big], cfg)
    alone = train_group(NET, DATA, [tiny], cfg)[0]
    np.testing.assert_allclose(r_tiny.epochs.val_loss, alone.epochs.val_loss, rtol=1e-5)
    # eps = 1 swamps sqrt(v) ~ |g| << 1: its steps are ~|g| times smaller, so it barely moves
    d_tiny = abs(r_tiny.epochs.val_loss.iloc[1] - r_tiny.epochs.val_loss.iloc[0])
    d_big = abs(r_big.epochs.val_loss.iloc[1] - r_big.epochs.val_loss.iloc[0])
    assert d_big < 0.1 * d_tiny
    with pytest.raises(ValueError, match="traced parameters"):
        train_group(NET, DATA, [Member(seed=0)], cfg)


def test_traceable_parameters_are_found_by_tracing():
    assert optim.traceable("adam", "eps") and optim.traceable("sgd", "momentum")
    assert not optim.traceable("sgd", "nesterov")  # a Python bool that selects code


def test_cosine_schedule_multiplies_the_rate_down_to_its_final_value():
    opt = optim.Optimizer("sgd", (), schedule=optim.Schedule("cosine", (("final", 0.1),)), total_steps=10)
    t = opt.transformation()
    p = {"w": jnp.ones(3)}
    s = t.init(p)
    steps = []
    for _ in range(11):
        u, s = t.update({"w": jnp.ones(3)}, s, p)
        steps.append(-float(u["w"][0]))
    assert steps[0] == pytest.approx(1.0) and steps[5] == pytest.approx(0.55, abs=1e-6)
    assert steps[10] == pytest.approx(0.1, abs=1e-6) and all(a >= b for a, b in zip(steps, steps[1:]))


def test_bad_optimizer_settings_name_the_fix():
    with pytest.raises(optim.OptimizerError, match="unknown optimizer 'adamm'; choose one of adam, adamw"):
        optim.check_name("adamm")
    with pytest.raises(optim.OptimizerError, match="'sgd' has no parameter 'eps'; its parameters: .*momentum"):
        optim.check_args("sgd", {"eps": 1e-8})
    with pytest.raises(optim.OptimizerError, match="set the learning rate with the top-level key learning_rate"):
        optim.check_args("adam", {"learning_rate": 0.1})
    with pytest.raises(optim.OptimizerError, match="unknown schedule 'cos'"):
        optim.Schedule("cos")


def test_flat_and_pytree_optimizer_paths_agree(monkeypatch):
    """The engine updates elementwise optimizers on the flat parameter vector (the fast
    path) and the others on the pytree: for Adam both give the same numbers."""
    members = [Member(seed=1, weight_init=init.normal(std=2.0), l2=0.01)]
    cfg = TrainConfig(epochs=1, probes=("grad_norm",))
    fast = train_group(NET, DATA, members, cfg)[0]
    monkeypatch.setattr(loop, "on_flat", lambda name: False)
    loop._compiled.cache_clear()
    slow = train_group(NET, DATA, members, cfg)[0]
    loop._compiled.cache_clear()
    np.testing.assert_allclose(fast.epochs.val_loss, slow.epochs.val_loss, rtol=1e-6)
    np.testing.assert_allclose(fast.grads.grad_norm_mean, slow.grads.grad_norm_mean, rtol=1e-5)


def test_a_per_tensor_optimizer_sees_each_tensor():
    """LAMB scales each tensor's step by its own trust ratio: trained by the engine (on the
    pytree), it matches Optax's LAMB applied step by step."""
    cfg = TrainConfig(epochs=1, optimizer=optim.Optimizer("lamb"), probes=())
    member = Member(seed=0, weight_init=init.normal(std=0.5), learning_rate=0.01)
    res = train_group(NET, DATA, [member], cfg)[0]
    params = loop.initial_params(NET, member)
    lamb = optax.lamb(0.01)
    state = lamb.init(params)

    @jax.jit  # one program for the replay's steps (eagerly, each operation compiles on its own)
    def step(params, state, x, y):
        g = jax.grad(lambda p: loop.cross_entropy(NET.apply(p, x), y).mean())(params)
        updates, state = lamb.update(g, state, params)
        return optax.apply_updates(params, updates), state

    for idx in loop.batch_order(0, 1, len(DATA.x_train), 32):
        params, state = step(params, state, DATA.x_train[idx], DATA.y_train[idx])
    val = loop.cross_entropy(NET.apply(params, DATA.x_test), DATA.y_test).mean()
    np.testing.assert_allclose(res.epochs.val_loss.iloc[1], float(val), rtol=1e-4)
