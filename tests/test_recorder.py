"""vglab.Recorder: a watched run (a user's own step, vmapped over two seeds) recorded into
the ordinary results store, read back by load_results, drawn by the report and by
TensorBoard; a process killed with SIGKILL leaves a folder load_results reads."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import vglab
from vglab.results.store import StoreError

ROOT = Path(__file__).resolve().parents[1]

# A tiny watched training script: also run as a child process by the kill test.
SCRIPT = textwrap.dedent('''
    import sys
    import jax, jax.numpy as jnp, numpy as np, optax, pandas as pd
    import vglab

    act = vglab.nn.activation("tanh")

    def init(seed):
        k = jax.random.split(jax.random.key(seed), 2)
        return {"hidden": {"w": jax.random.normal(k[0], (4, 6)) * 2, "b": jnp.zeros(6)},
                "out": {"w": jax.random.normal(k[1], (6, 3)), "b": jnp.zeros(3)}}

    def apply(p, x):
        return act(x @ p["hidden"]["w"] + p["hidden"]["b"]) @ p["out"]["w"] + p["out"]["b"]

    def loss(p, x, y):
        return jnp.mean((apply(p, x) - y) ** 2)

    tx = vglab.watch(optax.adam(1e-2), tier="full")

    @jax.jit
    @jax.vmap
    def step(p, s, x, y):
        l, g = jax.value_and_grad(loss)(p, x, y)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, l

    def train(out, n_records, steps_per_record=2, readings=None):
        rng = np.random.default_rng(0)
        params = jax.tree_util.tree_map(lambda *a: jnp.stack(a), init(0), init(1))
        state = jax.vmap(tx.init)(params)
        with vglab.Recorder(out, config={"seed": [0, 1], "lr": 1e-2, "model": "tiny"}) as rec:
            for r in range(1, n_records + 1):
                for _ in range(steps_per_record):
                    x = rng.standard_normal((2, 8, 4)).astype(np.float32)
                    params, state, l = step(params, state, x, x[..., :3])
                factors = pd.concat([vglab.layer_factors(apply, jax.tree_util.tree_map(lambda a: a[m], params),
                                                         x[m]).assign(member=m) for m in range(2)])
                if readings is not None:
                    readings.append((vglab.train.watch.read(state), factors, np.asarray(l)))
                rec.record(r * steps_per_record, state, {"train_loss": l}, factors=factors)
                print("recorded", r, flush=True)
                state = vglab.watch_reset(state)

    if __name__ == "__main__":
        train(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
''')


@pytest.fixture(scope="module")
def tiny():
    ns = {"__name__": "tiny_watch"}
    exec(compile(SCRIPT, "tiny_watch", "exec"), ns)
    return ns


def test_a_recorded_watched_run_loads_reports_and_shows_in_tensorboard(tmp_path, tiny):
    out = tmp_path / "watched"
    readings = []
    tiny["train"](out, 3, readings=readings)
    res = vglab.load_results(out)
    assert sorted(res.runs["run_id"]) == [f"{res.runs['run_id'].iloc[0][:-3]}-m{k}" for k in range(2)]
    assert sorted(res.runs["seed"]) == [0, 1] and set(res.runs["recording"]) == {False}
    assert (out / "runs.parquet").exists() and all((out / "runs" / r / "DONE").exists() for r in res.runs["run_id"])
    for m in range(2):
        run_id = res.runs.loc[res.runs["member"] == m, "run_id"].item()
        g = res.grads[res.grads["run_id"] == run_id]
        e = res.epochs[res.epochs["run_id"] == run_id]
        assert list(e["epoch"]) == [2, 4, 6]
        counts, _ = res.histogram(run_id)
        assert counts.shape == (3, 2, 2, 61)  # record, layer, param (w, b), bin
        for r, (reading, factors, loss) in enumerate(readings):
            want = reading.table[reading.table["member"] == m]
            got = g[g["epoch"] == 2 * (r + 1)]
            for col in ("grad_norm_mean", "grad_std", "zero_frac", "update_ratio"):
                np.testing.assert_array_equal(got[col].to_numpy(), want[col].to_numpy())
            np.testing.assert_array_equal(counts[r].reshape(4, -1), reading.hist[m])
            assert e["train_loss"].iloc[r] == pytest.approx(float(loss[m]))
            a = res.activations[(res.activations["run_id"] == run_id) & (res.activations["epoch"] == 2 * (r + 1))]
            f = factors[factors["member"] == m]
            np.testing.assert_array_equal(a["log_weight_norm"].to_numpy(), f["log_weight_norm"].to_numpy())
            assert a["saturated_frac"].iloc[0] > 0  # the hidden layer's inputs are scaled up
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every figure drawn: a watched run has no class count, so no chance line
        page = vglab.report(out)
    assert page.exists() and "2 runs" in page.read_text()
    assert (out / "figures" / "learning_curves.png").exists()
    assert len(list((out / "figures").glob("*.png"))) >= 3
    # run.json's x_unit "step": the report's x axes and captions count steps, not epochs
    import re

    from vglab.report import figures

    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page.read_text(), re.S)
    assert any("recorded step" in c for c in captions)
    assert not any(re.search(r"\b[Ee]pochs?\b", c) for c in captions)
    for draw in (figures.gradient_flow, figures.learning_curves, figures.gradient_stats):
        fig = draw(res)
        assert {ax.get_xlabel() for ax in fig.axes if ax.get_xlabel()} == {"step"}
        assert "epoch" not in fig._suptitle.get_text().lower()
    # the engine's runs (no x_unit), or a mix with them, stay in epochs
    from types import SimpleNamespace

    from vglab.report import tables

    for runs in (res.runs.drop(columns="x_unit"), res.runs.assign(x_unit=["step", None])):
        engine = SimpleNamespace(runs=runs)
        assert tables.x_unit(engine) == "epoch" and tables.in_x_unit(engine, "per epoch") == "per epoch"
    assert tables.in_x_unit(res, "Epoch 0; epochs 1–30 of each epoch") == "Step 0; steps 1–30 of each step"

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard" / run_id), size_guidance={"histograms": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"loss/train", "grad_norm/hidden", "grad_norm/out", "saturated_frac/hidden"} <= set(tags["scalars"])
    assert "grad_log10|g|/hidden/w" in tags["histograms"]
    assert [ev.step for ev in acc.Scalars("grad_norm/hidden")] == [2, 4, 6]
    hist = acc.Histograms("grad_log10|g|/hidden/w")[-1].histogram_value
    assert hist.num == counts[-1, 0, 0].sum() == 4 * 6 * 2  # entries x steps of the record


def test_bad_config_writes_nothing_and_a_recorded_run_is_not_replaced(tmp_path, tiny):
    with pytest.raises(ValueError, match=r"config\['opt'\] = \{.*one value per vmapped member"):
        vglab.Recorder(tmp_path / "a", config={"opt": {"lr": 1}})
    assert not (tmp_path / "a").exists()
    out = tmp_path / "b"
    tiny["train"](out, 1, 1)
    with pytest.raises(StoreError, match="already holds run .* overwrite=True"):
        vglab.Recorder(out, config={"seed": [0, 1], "lr": 1e-2, "model": "tiny"})
    vglab.Recorder(out, config={"seed": [0, 1], "lr": 1e-2, "model": "tiny"}, overwrite=True).close()
    assert vglab.load_results(out).runs.empty


def test_kill_9_while_recording_leaves_a_folder_load_results_reads(tmp_path):
    """The child records as fast as it can; it is killed at a random moment after its
    second record. Every record it reported must load, with tables and histograms that
    agree. (A kill between a record's files is made certain in the next test.)"""
    script = tmp_path / "watched.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    rng = np.random.default_rng()
    for trial in range(2):
        out = tmp_path / f"out{trial}"
        child = subprocess.Popen([sys.executable, str(script), str(out), "1000", "1"], env=env,
                                 stdout=subprocess.PIPE, text=True)
        seen = 0
        for line in child.stdout:
            seen = int(line.split()[1])
            if seen >= 2:
                break
        time.sleep(rng.uniform(0.0, 0.3))
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL, "the child ended before it was killed"
        res = vglab.load_results(out)
        assert len(res.runs) == 2 and set(res.runs["recording"]) == {True}
        n_records = 0  # the members are written one after the other: a kill between them leaves one ahead
        for run_id in res.runs["run_id"]:
            steps = list(res.epochs.loc[res.epochs["run_id"] == run_id, "epoch"])
            assert steps[: seen] == list(range(1, seen + 1)) and steps == list(range(1, len(steps) + 1))
            assert sorted(res.grads.loc[res.grads["run_id"] == run_id, "epoch"].unique()) == steps
            assert sorted(res.activations.loc[res.activations["run_id"] == run_id, "epoch"].unique()) == steps
            assert res.histogram(run_id)[0].shape[0] == len(steps)
            n_records += len(steps)
        assert len(res.histogram_table()) == n_records * 2 * 2 * 61  # records x layers x (w, b) x bins


def test_a_record_cut_off_before_its_epochs_row_is_not_read(tmp_path, tiny, monkeypatch):
    """Killed inside a record's writes: histograms, activations and grads of record 2 are
    on disk, its epochs row is not. load_results reads record 1 only, consistently."""
    from vglab.results import recorder, store

    real = store.write_table
    written = []

    def write_table(path, table):
        written.append(path.name)
        if path.name == "epochs.parquet" and written.count("epochs.parquet") == 3:  # member 0, record 2
            raise KeyboardInterrupt  # as if the process died here
        real(path, table)

    monkeypatch.setattr(recorder.store, "write_table", write_table)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        tiny["train"](out, 3, 1)
    run = out / "runs" / sorted(p.name for p in (out / "runs").iterdir())[0]
    assert sorted(store.pd.read_parquet(run / "grads.parquet")["epoch"].unique()) == [1, 2]  # record 2 half-written
    res = vglab.load_results(out)
    assert list(res.epochs["epoch"].unique()) == [1]
    assert list(res.grads["epoch"].unique()) == [1] and list(res.activations["epoch"].unique()) == [1]
    assert all(res.histogram(r)[0].shape[0] == 1 for r in res.runs["run_id"])


def test_the_readmes_watch_section_runs(tmp_path, monkeypatch, capsys):
    section = (ROOT / "README.md").read_text().split("## Watch your own training step", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 20
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    columns, page = capsys.readouterr().out.strip().splitlines()[-1].rsplit(" ", 1)
    assert "grad_norm_mean" in columns and (tmp_path / page).exists()
    res = vglab.load_results(tmp_path / "watched-run")
    assert list(res.epochs["epoch"]) == [50, 100, 150, 200]
    assert sorted(res.grads["layer"].unique()) == [f"dense{i}" for i in range(6)]
    assert res.activations.groupby("epoch").size().tolist() == [6] * 4
