"""What `vglab.watch` costs a user's own training step: the watched step against the same
step unwatched, per tier, in one process.

    python benchmarks/watch_speed.py                    # both models, every tier
    python benchmarks/watch_speed.py --json watch.json  # also a list of {model, tier, watched_s_per_step, unwatched_s_per_step}
    python benchmarks/watch_speed.py --quick            # a smoke run (small sizes; the tests run it)

Models:
- `mlp1x8x50`: the built-in 1x8 MLP's shape (153 -> 8 tanh -> 10, softmax cross-entropy,
  Adam, batch 32) as a user would write it, vmapped over 50 members (seeds), one batch
  shared by all;
- `char_lm`: a character-level language model of 1.2 M parameters (32 characters of
  context, embedded in 32 dimensions, concatenated -> 1024 tanh -> 128-way softmax, Adam,
  batch 64) on a text that ships with Python (argparse's source).
Each step is `jax.value_and_grad` + `tx.update` + `optax.apply_updates` under `jit`, scanned
over `steps` batches per call (so the per-call dispatch is shared by both). Figures: the
median over `reps` timed calls after one warm-up call, in seconds per step. Targets of
issue 25: norms <= +10 %, moments <= +25 %, full <= +60 %. The script also checks that the
watched run's parameters equal the unwatched run's (watching must not change training).
Run it on an otherwise idle machine: it measures wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

TIERS = ("norms", "moments", "full")


def mlp_group(members: int, steps: int):
    import jax
    import jax.numpy as jnp

    def init(key):
        k1, k2 = jax.random.split(key)
        return {"dense0": {"w": jax.random.normal(k1, (153, 8)) / np.sqrt(153), "b": jnp.zeros(8)},
                "out": {"w": jax.random.normal(k2, (8, 10)) / np.sqrt(8), "b": jnp.zeros(10)}}

    def loss(p, x, y):
        logits = jnp.tanh(x @ p["dense0"]["w"] + p["dense0"]["b"]) @ p["out"]["w"] + p["out"]["b"]
        return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.sum(logits * jax.nn.one_hot(y, 10), -1))

    rng = np.random.default_rng(0)
    data = (rng.standard_normal((steps, 32, 153)).astype(np.float32), rng.integers(0, 10, (steps, 32)).astype(np.int32))
    params = jax.vmap(init)(jax.random.split(jax.random.key(0), members))
    return params, loss, data, True


def char_lm(steps: int, batch: int = 64, context: int = 32, hidden: int = 1024):
    import argparse as text_source

    import jax
    import jax.numpy as jnp

    text = np.frombuffer(Path(text_source.__file__).read_bytes(), np.uint8) % 128
    k = jax.random.split(jax.random.key(0), 3)
    params = {"embed": {"w": jax.random.normal(k[0], (128, 32)) * 0.1},
              "hidden": {"w": jax.random.normal(k[1], (context * 32, hidden)) / np.sqrt(context * 32),
                         "b": jnp.zeros(hidden)},
              "out": {"w": jax.random.normal(k[2], (hidden, 128)) / np.sqrt(hidden), "b": jnp.zeros(128)}}

    def loss(p, x, y):
        e = p["embed"]["w"][x].reshape(x.shape[0], -1)
        logits = jnp.tanh(e @ p["hidden"]["w"] + p["hidden"]["b"]) @ p["out"]["w"] + p["out"]["b"]
        return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.sum(logits * jax.nn.one_hot(y, 128), -1))

    rng = np.random.default_rng(0)
    start = rng.integers(0, len(text) - context - 1, (steps, batch))
    x = np.stack([text[s:s + context] for s in start.ravel()]).reshape(steps, batch, context).astype(np.int32)
    y = text[start + context].astype(np.int32)
    return params, loss, (x, y), False


def _runner(tx, loss, vmapped: bool):
    import jax
    import optax

    def step(p, s, x, y):
        g = jax.grad(loss)(p, x, y)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    if vmapped:
        step = jax.vmap(step, in_axes=(0, 0, None, None))

    def train(p, s, xs, ys):
        return jax.lax.scan(lambda c, b: (step(*c, *b), None), (p, s), (xs, ys))[0]

    return jax.jit(train, donate_argnums=(0, 1)), (jax.vmap(tx.init) if vmapped else tx.init)


def time_step(tx, params, loss, data, vmapped: bool, reps: int):
    """(median seconds per step, final parameters after warm-up + reps calls)."""
    import jax

    train, init = _runner(tx, loss, vmapped)
    p = jax.tree_util.tree_map(lambda a: a.copy(), params)
    s = init(p)
    xs, ys = (jax.device_put(a) for a in data)
    p, s = jax.block_until_ready(train(p, s, xs, ys))  # warm-up: compile
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        p, s = jax.block_until_ready(train(p, s, xs, ys))
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / xs.shape[0], p


def run(quick: bool = False, models=("mlp1x8x50", "char_lm"), tiers=TIERS) -> list[dict]:
    import jax
    import optax

    import vglab

    steps, reps = (4, 1) if quick else (100, 7)
    build = {"mlp1x8x50": lambda: mlp_group(4 if quick else 50, steps),
             "char_lm": lambda: char_lm(steps if not quick else 2, **({"hidden": 64} if quick else {}))}
    rows = []
    for name in models:
        params, loss, data, vmapped = build[name]()
        n_params = sum(int(np.prod(a.shape[1 if vmapped else 0:])) for a in jax.tree_util.tree_leaves(params))
        tx = optax.adam(1e-3)
        plain, p_plain = time_step(tx, params, loss, data, vmapped, reps)
        for tier in tiers:
            watched, p_watched = time_step(vglab.watch(tx, tier=tier), params, loss, data, vmapped, reps)
            for a, b in zip(jax.tree_util.tree_leaves(p_watched), jax.tree_util.tree_leaves(p_plain)):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6,
                                           err_msg=f"{name}/{tier}: watching changed the training")
            rows.append({"model": name, "tier": tier, "watched_s_per_step": watched, "unwatched_s_per_step": plain,
                         "overhead": watched / plain - 1, "n_params": n_params})
            print(f"{name:10s} {n_params:>9,d} params  {tier:8s} unwatched {plain * 1e6:9.1f} us/step  "
                  f"watched {watched * 1e6:9.1f} us/step  {100 * (watched / plain - 1):+6.1f} %", flush=True)
    return rows


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write the rows to this file (a JSON list)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: small sizes, one timed call")
    ap.add_argument("--models", default="mlp1x8x50,char_lm", help="comma-separated: mlp1x8x50, char_lm")
    args = ap.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in ("mlp1x8x50", "char_lm")]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from mlp1x8x50, char_lm")
    rows = run(args.quick, models)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
