"""The `examples/watch_*.py` scripts (issue 25): each runs small, in-process, and writes a
results folder that `load_results` reads with the expected layers and tables and that
`vglab.report` draws; a run killed with SIGKILL mid-training leaves a readable folder.
What each example adds to `vglab.watch` is checked against a direct computation."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vglab

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def examples():
    """The example modules, imported as the scripts import each other (their folder on the path)."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        import watch_char_lm
        import watch_equinox
        import watch_flax

        yield {"flax": watch_flax, "equinox": watch_equinox, "lm": watch_char_lm}
    finally:
        sys.path.remove(str(EXAMPLES))


def _check_folder(out, page, layers, steps, n_runs=1):
    """The folder reads back with one run per member, a grads row per layer x tensor per
    record, a factors row per layer per record, complete; the report draws the layers."""
    res = vglab.load_results(out)
    assert len(res.runs) == n_runs and set(res.runs["recording"]) == {False}
    assert set(res.runs["x_unit"]) == {"step"}
    for run_id in res.runs["run_id"]:
        e = res.epochs[res.epochs["run_id"] == run_id]
        assert list(e["epoch"]) == steps and np.isfinite(e["train_loss"]).all()
        g = res.grads[res.grads["run_id"] == run_id]
        first = g.loc[g["epoch"] == steps[0]].drop_duplicates("layer").sort_values("layer_index")
        assert list(first["layer"]) == layers
        assert len(g) == len(steps) * 2 * len(layers)  # every layer has a weight and a bias
        assert (g["grad_norm_mean"] > 0).all() and np.isfinite(g["update_ratio"]).all()
        a = res.activations[res.activations["run_id"] == run_id]
        assert sorted(a["layer"].unique()) == sorted(layers) and len(a) == len(steps) * len(layers)
    page = Path(page)
    assert page == Path(out) / "report.html" and page.exists()
    assert 'src="figures/gradient_flow.png"' in page.read_text()
    assert (Path(out) / "figures" / "gradient_flow.png").exists()
    return res


def test_flax_example_own_loss_and_data(tmp_path, examples, capsys):
    out = tmp_path / "flax"
    page = examples["flax"].main(steps=12, depth=4, width=8, records=2, out=str(out))
    layers = [f"layers.{i}" for i in range(5)]
    res = _check_folder(out, page, layers, [6, 12])
    counts, _ = res.histogram(res.runs["run_id"].item())
    entries = np.array([[16 * 8, 8]] + [[8 * 8, 8]] * 3 + [[8, 1]])  # (w, b) of each layer
    assert counts.shape == (2, 5, 2, 61) and (counts.sum(-1) == 6 * entries).all()  # x 6 steps per record
    a = res.activations
    hidden = a[a["layer"] != "layers.4"]
    assert (hidden["deriv_mean"] <= 0.25).all() and (hidden["deriv_mean"] > 0.1).all()  # sigmoid' <= 1/4
    assert a.loc[a["layer"] == "layers.4", "deriv_mean"].isna().all()  # the output layer has no phi
    # what the script prints is the folder's first-record profile
    printed = capsys.readouterr().out
    profile = examples["flax"].watch_common.gradient_profile(out)
    first = res.grads[(res.grads["epoch"] == 6) & (res.grads["param"] == "w")].set_index("layer")["grad_norm_mean"]
    np.testing.assert_allclose(profile["step 6"], first[profile.index], rtol=1e-12)
    np.testing.assert_allclose(profile["log10 ratio to last"], np.log10(first[profile.index] / first["layers.4"]))
    assert "log10 ratio to last" in printed and str(page) in printed


def test_flax_batches_are_its_own_teacher(examples):
    x, y = next(examples["flax"].batches(0, 16, 5))
    x2, y2 = next(examples["flax"].batches(0, 16, 5))
    assert x.shape == (5, 16) and y.shape == (5,) and np.array_equal(x, x2) and np.array_equal(y, y2)
    assert np.all(np.abs(y) < 1 + 0.1 * 6)


def test_equinox_example_vmapped_seeds_one_run_each(tmp_path, examples):
    out = tmp_path / "eqx"
    page = examples["equinox"].main(steps=3, depth=3, width=8, seeds=2, records=1, out=str(out))
    res = _check_folder(out, page, [f"layers[{i}]" for i in range(4)], [3], n_runs=2)
    assert sorted(res.runs["seed"]) == [0, 1] and sorted(res.runs["member"]) == [0, 1]
    w0 = res.grads[(res.grads["layer"] == "layers[0]") & (res.grads["param"] == "w") & (res.grads["epoch"] == 3)]
    assert w0["grad_norm_mean"].nunique() == 2  # two inits, two gradients
    assert "grad_std" in res.grads  # tier "moments": moments, no histograms
    assert not any((out / "runs" / r / "histograms.npz").exists() for r in res.runs["run_id"])


def test_char_lm_factors_pair_gates_with_sigmoid_and_candidates_with_tanh(examples):
    lm = examples["lm"]
    p = lm.init(jax.random.key(1), vocab=11, layers=2, hidden=6, embed=4)
    tokens = np.random.default_rng(0).integers(0, 11, (3, 7)).astype(np.int32)
    f = lm.factors(p, tokens).set_index("layer")
    _, pre = lm.forward(p, p["embed"]["w"][tokens])  # outside layer_factors: plain sigmoid and tanh
    for name, z in pre.items():
        want = jax.nn.sigmoid(z) * (1 - jax.nn.sigmoid(z)) if name.endswith(".gates") else 1 - jnp.tanh(z) ** 2
        assert f.loc[name, "deriv_mean"] == pytest.approx(float(want.mean()), rel=1e-5)
        layer, part = name.split(".")
        assert f.loc[name, "log_weight_norm"] == pytest.approx(float(jnp.log(jnp.linalg.norm(p[layer][part]["w"], 2))),
                                                               abs=1e-5)
    assert f.loc[["embed", "out"], "deriv_mean"].isna().all()


def test_char_lm_through_time_is_the_gradient_at_each_lag(examples):
    lm = examples["lm"]
    p = lm.init(jax.random.key(2), vocab=9, layers=1, hidden=5, embed=3)
    tokens = np.random.default_rng(1).integers(0, 9, (2, 6)).astype(np.int32)
    e = p["embed"]["w"][tokens[:, :-1]]

    def last_loss(e, b):  # one sequence's last-position loss, as a function of all its inputs
        logits, _ = lm.forward(p, e[None])
        return -jax.nn.log_softmax(logits[0, -1])[tokens[b, -1]]

    norms = np.mean([np.linalg.norm(jax.jacobian(last_loss)(e[b], b), axis=-1) for b in range(2)], 0)[::-1] / 2
    np.testing.assert_allclose(lm.through_time(p, tokens), np.log10(norms / norms[0]), atol=1e-5)


@pytest.mark.filterwarnings("error::UserWarning")  # the report's every section, the diagnosis included
def test_char_lm_example_runs_on_python_source(tmp_path, examples):
    lm = examples["lm"]
    text = lm.corpus()
    assert len(text) > 100_000 and "def " in text and set(text) <= set(map(chr, range(32, 127))) | {"\n", "\t"}
    out = tmp_path / "lm"
    page = lm.main(steps=2, hidden=16, embed=8, seq=8, batch_size=4, records=1, out=str(out))
    layers = ["embed", "gru0.cand", "gru0.gates", "gru1.cand", "gru1.gates", "out"]
    res = vglab.load_results(out)
    e = res.epochs
    assert {"log10_grad_lag1", "log10_grad_lag4"} <= set(e) and "log10_grad_lag16" not in e
    g = res.grads
    assert list(g["layer"].unique()) == layers and list(e["epoch"]) == [2]
    assert len(g) == 11  # embed (no bias), 4 GRU layers and out (w, b)
    a = res.activations.set_index(["epoch", "layer"])
    assert a.loc[(2, "gru0.gates"), "deriv_mean"] <= 0.25 and 0.25 < a.loc[(2, "gru0.cand"), "deriv_mean"] <= 1
    assert Path(page).exists() and res.runs["n_weights"].item() == sum(
        a.size for a in jax.tree_util.tree_leaves(lm.init(jax.random.key(0), len(set(text)), 2, 16, 8)))


def test_kill_9_during_an_example_leaves_a_readable_folder(tmp_path):
    """watch_flax.py as a child, recording every 5 steps of a long run: killed with SIGKILL
    after its second record, its folder loads with every record it reported. The net is the
    one test_flax_example_own_loss_and_data trains (depth 4, width 8): the child loads its
    compiled step and layer factors from the run's compilation cache instead of compiling them."""
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    child = subprocess.Popen([sys.executable, str(EXAMPLES / "watch_flax.py"), "--steps", "100000", "--records",
                              "20000", "--depth", "4", "--width", "8", "--out", str(out)],
                             env=env, stdout=subprocess.PIPE, text=True)
    try:
        reported = []
        for line in child.stdout:
            reported.append(int(line.split()[1].rstrip(":")))
            if len(reported) == 2:
                break
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
    assert child.returncode == -signal.SIGKILL and reported == [5, 10]
    res = vglab.load_results(out)
    assert len(res.runs) == 1 and res.runs["recording"].item()
    steps = list(res.epochs["epoch"])
    assert steps[:2] == [5, 10] and steps == list(range(5, 5 * len(steps) + 1, 5))
    assert sorted(res.grads["epoch"].unique()) == steps and sorted(res.activations["epoch"].unique()) == steps
    assert res.histogram(res.runs["run_id"].item())[0].shape[0] == len(steps)
