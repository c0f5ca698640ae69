"""Watch your own Equinox training step, vmapped over 4 seeds: the deep tanh MLP of
`equinox_mlp.py` on scikit-learn's digits, trained with
`optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(...))` wrapped by `vglab.watch`.
One jitted, vmapped step trains all seeds at once; the watch tables get a `member`
axis and the Recorder writes one run per seed.

    python examples/watch_equinox.py                       # 600 steps, depth 20, width 16 -> ./watch-equinox/
    python examples/watch_equinox.py --steps 100 --seeds 2 --out /tmp/we
    vglab report watch-equinox

What it shows (the default run, measured; means over the 4 seeds): with Equinox's default
init each hidden tanh layer's mean log tanh'(z) (down to -2.1 in the middle layers, where
|z| ~ 1.7) outweighs its log ||W||_2 (+0.4 to +0.7), and the weight gradient thins from
the output layer (0.27 at step 600) to the middle of the net: 2.4 decades below it at
layers[9] in the first record (steps 1-100), 3.9 decades at layers[11] in the last (steps
501-600); layers[0], fed the raw pixels, keeps a large one (0.28). The losses stay near
chance (ln 10 = 2.30). The gradients are measured as they enter the chain, before clipping.
"""

import argparse
import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from sklearn.datasets import load_digits

import vglab
import watch_common
from equinox_mlp import DeepMLP


def main(steps: int = 600, depth: int = 20, width: int = 16, seeds: int = 4, records: int = 6, lr: float = 3e-3,
         batch_size: int = 64, out: str = "watch-equinox", tier: str = "moments") -> str:
    """Train `seeds` models at once (vmap), record `records` times, write the report."""
    x_all, y_all = load_digits(return_X_y=True)
    x_all = (x_all / 16.0).astype(np.float32)
    keys = jax.random.split(jax.random.key(0), seeds)
    models = eqx.filter_vmap(lambda k: DeepMLP(k, x_all.shape[1], 10, depth, width))(keys)
    params, static = eqx.partition(models, eqx.is_inexact_array)  # leaves have a leading seed axis

    def apply_one(p, x):  # one member's params, one example (Equinox layers map one example)
        return eqx.combine(p, static)(x)

    def apply(p, x):  # one member's params, a batch
        return jax.vmap(apply_one, in_axes=(None, 0))(p, x)

    def loss_fn(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(apply(p, x), y).mean()

    tx = vglab.watch(optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(lr, weight_decay=1e-4)), tier=tier)
    state = jax.vmap(tx.init)(params)  # init under the same vmap as update

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    @functools.partial(jax.vmap, in_axes=(0, 0, None, None))  # every seed sees the same batch
    def step(p, s, x, y):
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    rng = np.random.default_rng(0)
    every = max(1, steps // records)
    config = {"run_id": "equinox-mlp", "seed": list(range(seeds)), "model": f"equinox tanh mlp {depth}x{width}",
              "optimizer": "clip_by_global_norm(1.0) + adamw", "lr": lr, "batch_size": batch_size}
    with vglab.Recorder(out, config=config, overwrite=True) as rec:
        for i in range(1, steps + 1):
            idx = rng.integers(0, len(x_all), batch_size)
            params, state, loss = step(params, state, x_all[idx], y_all[idx])
            if i % every == 0:
                x = x_all[idx]
                member = [jax.tree_util.tree_map(lambda a: a[m], params) for m in range(seeds)]
                factors = pd.concat([vglab.layer_factors(apply_one, member[m], x, per_example=True).assign(member=m)
                                     for m in range(seeds)])
                rec.record(i, state, {"train_loss": loss}, factors=factors)
                print(f"step {i}: loss per seed {' '.join(f'{v:.3f}' for v in np.asarray(loss))}", flush=True)
                state = vglab.watch_reset(state)
    return watch_common.finish(out, f"depth {depth}, tanh, mean over {seeds} seeds")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--records", type=int, default=6)
    ap.add_argument("--out", default="watch-equinox")
    main(**vars(ap.parse_args()))
