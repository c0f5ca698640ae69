"""TensorBoard events written by `--tensorboard` read back with TensorBoard's own reader,
and the results store as the runner leaves it."""

import numpy as np
from experiments_helpers import vglab_cache, write_spec  # noqa: F401
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import vglab
from vglab.results import tensorboard as tb


def test_tensorboard_scalars_and_gradient_histograms(tmp_path, vglab_cache):
    spec = write_spec(tmp_path, probes='["grad_moments", "grad_hist"]')
    res = vglab.run(spec, out=tmp_path / "out", workers=1, tensorboard=True, progress=False, seeds=1)
    run_id = res.runs["run_id"].iloc[0]
    folder = tmp_path / "out" / "tensorboard" / run_id
    assert folder.is_dir() and len(list((tmp_path / "out" / "tensorboard").iterdir())) == len(res.runs)

    acc = EventAccumulator(str(folder), size_guidance={"histograms": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"loss/train", "loss/val", "accuracy/val", "accuracy/train"} <= set(tags["scalars"])
    val = acc.Scalars("accuracy/val")
    epochs = res.epochs[res.epochs["run_id"] == run_id].sort_values("epoch")
    assert [s.step for s in val] == list(epochs["epoch"])  # epoch 0 (at initialization) .. 2
    np.testing.assert_allclose([s.value for s in val], epochs["val_acc"], rtol=1e-6)
    assert [s.step for s in acc.Scalars("accuracy/train")] == [1, 2]  # no training accuracy at epoch 0

    assert {"grad_log10|g|/dense1/w", "grad_log10|g|/dense1/b", "grad_log10|g|/out/w"} <= set(tags["histograms"])
    hist = acc.Histograms("grad_log10|g|/dense1/w")
    counts, edges = res.histogram(run_id)
    assert [h.step for h in hist] == [1, 2]
    h = hist[-1].histogram_value
    assert h.num == counts[-1, 0, 0].sum() > 0  # every gradient entry of every step of epoch 2
    assert list(h.bucket) == list(counts[-1, 0, 0].astype(float))
    assert list(h.bucket_limit)[1:] == list(edges[1:])


def test_export_writes_events_for_runs_trained_without_tensorboard(tmp_path, vglab_cache):
    spec = write_spec(tmp_path)
    res = vglab.run(spec, out=tmp_path / "out", workers=1, progress=False, seeds=1)
    assert not (tmp_path / "out" / "tensorboard").exists()
    written = tb.export(tmp_path / "out")
    assert sorted(written) == sorted(res.runs["run_id"])
    assert tb.export(tmp_path / "out") == []  # only what is missing
    acc = EventAccumulator(str(tmp_path / "out" / "tensorboard" / written[0]))
    acc.Reload()
    assert "loss/val" in acc.Tags()["scalars"] and not acc.Tags()["histograms"]  # trained without grad_hist


def test_store_layout_and_run_rows(tmp_path, vglab_cache):
    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    res = vglab.run(spec, out=out, workers=1, progress=False, seeds=1)
    assert {p.name for p in out.iterdir()} >= {"experiment.toml", "meta.json", "runs"}
    assert not (out / ".lock").exists()
    for run_id in res.runs["run_id"]:
        d = out / "runs" / run_id
        assert {"run.json", "epochs.parquet", "grads.parquet", "activations.parquet", "final_grads.npz",
                "DONE"} <= {p.name for p in d.iterdir()}
        assert not list(d.glob(".*tmp"))
    row = res.runs.iloc[0]
    assert row["n_params"] > 0 and row["epochs"] == 2 and row["batch_size"] == 32 and row["dataset"] == "digits"
    assert set(res.runs["seed"]) == {0} and set(res.runs["weight_init_spec"]) == {
        "normal(std=1)", "normal(std=10)", "uniform(a=1)", "glorot_uniform"}


def test_hparams_and_per_layer_scalars_read_back(tmp_path, vglab_cache):
    """HParams (so TensorBoard can filter runs) and per-layer scalars, with TensorBoard's own reader."""
    from tensorboard.plugins.hparams import metadata

    spec = write_spec(tmp_path, probes='["grad_moments", "grad_norm", "saturation", "log_deriv", "weight_norm"]')
    res = vglab.run(spec, out=tmp_path / "out", workers=1, tensorboard=True, progress=False, seeds=1)
    for row in res.runs.to_dict("records"):
        acc = EventAccumulator(str(tmp_path / "out" / "tensorboard" / row["run_id"]),
                               size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
        info = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
        hp = {k: (v.string_value or v.number_value) for k, v in info.hparams.items()}
        assert info.group_name == row["run_id"]
        assert hp["init"] == row["weight_init"] and hp["activation"] == "tanh" and hp["penalty"] == "none"
        assert hp["depth"] == 1 and hp["width"] == 4 and hp["seed"] == row["seed"] == 0
        assert hp["alpha"] == 1.0 and "r" in info.hparams
        tags = set(acc.Tags()["scalars"])
        for section in ("grad_norm", "grad_std", "log_weight_norm"):
            assert {f"{section}/dense1", f"{section}/out"} <= tags, (section, tags)
        assert {"saturated_frac/dense1", "mean_log_phi_prime/dense1"} <= tags
        g = res.grads[(res.grads["run_id"] == row["run_id"]) & (res.grads["param"] == "w")]
        want = g[g["layer"] == "dense1"].sort_values("epoch")
        got = acc.Scalars("grad_norm/dense1")
        assert [s.step for s in got] == list(want["epoch"])  # no gradient scalar at epoch 0
        np.testing.assert_allclose([s.value for s in got], want["grad_norm_mean"], rtol=1e-6)
        a = res.activations[(res.activations["run_id"] == row["run_id"]) & (res.activations["layer"] == "dense1")]
        np.testing.assert_allclose([s.value for s in acc.Scalars("saturated_frac/dense1")],
                                   a.sort_values("epoch")["saturated_frac"], rtol=1e-6, atol=1e-7)
    # the same from the stored tables (export): the same tags and values
    tb.export(tmp_path / "out", only_missing=False)
    acc = EventAccumulator(str(tmp_path / "out" / "tensorboard" / res.runs["run_id"].iloc[0]),
                           size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    assert {"grad_norm/dense1", "saturated_frac/dense1"} <= set(acc.Tags()["scalars"])
    assert metadata.SESSION_START_INFO_TAG in acc.PluginTagToContent(metadata.PLUGIN_NAME)


def test_events_are_written_while_training(tmp_path, vglab_cache):
    """Each recorded epoch's events are on disk as the epoch arrives, before the run is stored."""
    from vglab.experiments.progress import NoProgress
    from vglab.results import store

    seen = []

    class Watch(NoProgress):
        def unit_epoch(self, key, unit, fraction):
            super().unit_epoch(key, unit, fraction)
            out = tmp_path / "out"
            for folder in (out / "tensorboard").glob("*"):
                if not store.is_complete(out, folder.name):  # not stored yet
                    acc = EventAccumulator(str(folder))
                    acc.Reload()
                    steps = [s.step for s in acc.Scalars("accuracy/val")] if "accuracy/val" in acc.Tags()["scalars"] else []
                    seen.append((folder.name, fraction, steps))

    spec = write_spec(tmp_path)
    vglab.run(spec, out=tmp_path / "out", workers=1, tensorboard=True, seeds=1, epochs=3, _progress=Watch())
    last = [s for s in seen if s[1] == 1.0]
    assert last and all(steps == [0, 1, 2, 3] for _, _, steps in last), seen
    assert any(steps == [0] for _, f, steps in seen if f == 0.0)
