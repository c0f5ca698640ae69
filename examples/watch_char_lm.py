"""Watch a character-level language model: a stacked GRU (plain JAX, ~1.4 M parameters
at the default size) trained on the source of a few standard-library modules (text that
ships with Python, read with `inspect.getsource`: nothing is downloaded), in its own
jitted loop, wrapped by `vglab.watch` and recorded by `vglab.Recorder`.

    python examples/watch_char_lm.py                       # 400 steps, 2 GRU layers of 384 -> ./watch-char-lm/
    python examples/watch_char_lm.py --steps 20 --hidden 32 --seq 16 --out /tmp/lm
    vglab report watch-char-lm

Where the gradient thins out, measured two ways:
- through depth, per layer: the watch tables (`grad_norm_mean` of embed, gru0.*, gru1.*,
  out), drawn per layer by the report;
- through time: at each record, the norm of the gradient of the last position's loss
  with respect to the input embedding k characters earlier, as log10 of its ratio to
  k = 0 (the epochs table's `log10_grad_lag<k>` columns, TensorBoard `metrics/...`).
The layer factors (the activations table) give each GRU layer's log ||W||_2 and the
mean log phi'(z) of its gates (sigmoid) and of its candidate (tanh).

What it shows (the default run, measured): the gradient reaching an input 63 characters
back is 3.2 decades below the one at lag 0 at step 50 (16 back: 2.3) and still 2.8
decades at step 400 (loss 1.0 nats/char). Through depth, in the first record (steps
1-50), the embedding's gradient is 1.4 decades below the output layer's, the gates' 1.1,
the candidates' 0.3-0.4. The gates saturate as training goes on: mean log sigmoid'(z)
-2.0 (gru0) and -2.8 (gru1) at step 50, -3.0 and -4.3 at step 400, with 17 % and 36 % of
the gate units saturated (phi'(z) < 0.01).
"""

import argparse
import functools
import importlib
import inspect
import string

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

import vglab
import watch_common

MODULES = ("textwrap", "argparse", "difflib", "heapq", "functools", "fractions")
LAGS = (1, 4, 16, 63)
TANH, SIGMOID = vglab.nn.activation("tanh"), vglab.nn.activation("sigmoid")


def corpus(modules=MODULES) -> str:
    """The training text: these standard-library modules' source, printable ASCII only."""
    keep = set(string.printable) - set("\x0b\x0c\r")
    text = "\n".join(inspect.getsource(importlib.import_module(m)) for m in modules)
    return "".join(c if c in keep else "?" for c in text)


def init(key, vocab: int, layers: int, hidden: int, embed: int) -> dict:
    """Parameters as a plain dict; each GRU layer is two vglab layers: `gru<l>.gates`
    (update and reset gates from [x, h]) and `gru<l>.cand` (the candidate from [x, r*h])."""
    keys = iter(jax.random.split(key, 2 * layers + 2))
    p = {"embed": {"w": jax.random.normal(next(keys), (vocab, embed))}}
    n_in = embed
    for layer in range(layers):
        fan = n_in + hidden
        p[f"gru{layer}"] = {
            "gates": {"w": jax.random.normal(next(keys), (fan, 2 * hidden)) / np.sqrt(fan), "b": jnp.zeros(2 * hidden)},
            "cand": {"w": jax.random.normal(next(keys), (fan, hidden)) / np.sqrt(fan), "b": jnp.zeros(hidden)}}
        n_in = hidden
    p["out"] = {"w": jax.random.normal(next(keys), (hidden, vocab)) / np.sqrt(hidden), "b": jnp.zeros(vocab)}
    return p


def forward(p, x):
    """Logits [B, T, vocab] of embedded inputs x [B, T, E], and every GRU layer's gate and
    candidate pre-activations ({layer name: [T, B, units]}). Each activation is named
    with its layer, so `layer_factors` pairs each z with its own phi' (sigmoid or tanh)."""
    layers = sorted((k for k in p if k.startswith("gru")), key=lambda k: int(k[3:]))
    pre = {}
    for name in layers:
        g, c = p[name]["gates"], p[name]["cand"]

        def cell(h, xt, g=g, c=c, name=name):
            zr_pre = jnp.concatenate([xt, h], -1) @ g["w"] + g["b"]
            z, r = jnp.split(SIGMOID(zr_pre, name=f"{name}.gates"), 2, -1)
            c_pre = jnp.concatenate([xt, r * h], -1) @ c["w"] + c["b"]
            h = (1 - z) * h + z * TANH(c_pre, name=f"{name}.cand")
            return h, (h, zr_pre, c_pre)

        h0 = jnp.zeros((x.shape[0], g["b"].shape[0] // 2), x.dtype)
        _, (hs, pre[f"{name}.gates"], pre[f"{name}.cand"]) = jax.lax.scan(cell, h0, x.swapaxes(0, 1))
        x = hs.swapaxes(0, 1)
    return x @ p["out"]["w"] + p["out"]["b"], pre


def loss_fn(p, tokens):
    """Next-character cross-entropy, mean over positions; tokens [B, T + 1]."""
    logits, _ = forward(p, p["embed"]["w"][tokens[:, :-1]])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


@jax.jit
def through_time(p, tokens):
    """log10 of the gradient norm of the last position's loss with respect to the input
    embedding `lag` characters earlier, over its norm at lag 0 (mean over the batch)."""
    def last_loss(e):
        logits, _ = forward(p, e)
        return optax.softmax_cross_entropy_with_integer_labels(logits[:, -1], tokens[:, -1]).mean()

    ge = jax.grad(last_loss)(p["embed"]["w"][tokens[:, :-1]])
    norms = jnp.linalg.norm(ge, axis=-1).mean(0)[::-1]  # [T], lag 0 first
    return jnp.log10(norms / norms[0])


def apply(p, tokens, capture=False):
    """The logits of tokens [B, T]; with `capture`, also the pre-activations, which come
    out of the scan as its outputs (a z recorded inside a scan cannot leave it)."""
    logits, pre = forward(p, p["embed"]["w"][tokens])
    return (logits, pre) if capture else logits


def factors(p, tokens) -> pd.DataFrame:
    """`vglab.layer_factors` of every layer: the gates' with sigmoid', the candidates' with
    tanh' (compiled once, at the first record)."""
    return vglab.layer_factors(apply, p, tokens)


def batches(data: np.ndarray, seq: int, batch_size: int, seed: int):
    """The data iterator: random windows of seq + 1 characters."""
    rng = np.random.default_rng(seed)
    while True:
        start = rng.integers(0, len(data) - seq - 1, batch_size)
        yield data[start[:, None] + np.arange(seq + 1)]


def main(steps: int = 400, layers: int = 2, hidden: int = 384, embed: int = 64, seq: int = 64, batch_size: int = 32,
         records: int = 8, lr: float = 2e-3, seed: int = 0, out: str = "watch-char-lm", tier: str = "moments") -> str:
    """Train, record `records` times, write the report; returns the report page's path."""
    text = corpus()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    data = np.array([index[c] for c in text], np.int32)
    params = init(jax.random.key(seed), len(chars), layers, hidden, embed)
    n_params = sum(a.size for a in jax.tree_util.tree_leaves(params))
    tx = vglab.watch(optax.adam(lr), tier=tier)
    state = tx.init(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(p, s, tokens):
        loss, g = jax.value_and_grad(loss_fn)(p, tokens)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    every = max(1, steps // records)
    config = {"run_id": "char-lm", "model": f"char gru {layers}x{hidden}", "n_weights": int(n_params), "lr": lr,
              "seq": seq, "batch_size": batch_size, "seed": seed, "corpus": ",".join(MODULES),
              "corpus_chars": len(text)}
    stream = batches(data, seq, batch_size, seed)
    lags = [k for k in LAGS if k < seq]
    with vglab.Recorder(out, config=config, overwrite=True) as rec:
        for i in range(1, steps + 1):
            tokens = next(stream)
            params, state, loss = step(params, state, tokens)
            if i % every == 0:
                tt = np.asarray(through_time(params, tokens))
                metrics = {"train_loss": loss, **{f"log10_grad_lag{k}": tt[k] for k in lags}}
                rec.record(i, state, metrics, factors=factors(params, tokens[:8, :-1]))  # 8 sequences: enough for means
                print(f"step {i}: loss {float(loss):.3f} nats/char; through time (log10 |grad| vs lag 0): "
                      + " ".join(f"lag {k}: {tt[k]:.2f}" for k in lags), flush=True)
                state = vglab.watch_reset(state)
    return watch_common.finish(out, f"{n_params:,} weights, {layers} GRU layers of {hidden}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default in [("steps", 400), ("layers", 2), ("hidden", 384), ("embed", 64), ("seq", 64),
                          ("batch_size", 32), ("records", 8)]:
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)
    ap.add_argument("--out", default="watch-char-lm")
    main(**vars(ap.parse_args()))
