"""Your own data (.npz and arrays from Python), specs from dicts, --set, `show --toml`, the
JSON schema, and a user's model from a spec: end to end to a report, bad input named."""

import json
from pathlib import Path

import numpy as np
import pytest
from experiments_helpers import vglab, vglab_cache  # noqa: F401

import vglab as api
from vglab.data import DataError
from vglab.data.own import check_arrays, save_arrays
from vglab.experiments.spec import SpecError, json_schema, load_spec

ROOT = Path(__file__).resolve().parents[1]


def _features(n_train=120, n_test=40, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(dim, 3))
    x = rng.normal(size=(n_train + n_test, dim)).astype(np.float32)
    y = (x @ w).argmax(1)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


@pytest.mark.parametrize("change, words", [
    (lambda d: d.pop("y_test"), "missing y_test"),
    (lambda d: d.update(y_train=d["y_train"][:-1]), "y_train is shaped (119,) for 120 examples"),
    (lambda d: d.update(y_train=d["y_train"] - 1), "labels [-1] are outside 0..2 (3 classes)"),
    (lambda d: d["x_train"].__setitem__((0, 0), np.nan), "x_train holds NaN or infinite values (1 entries)"),
    (lambda d: d.update(x_test=d["x_test"].astype(str)), "x_test has dtype <U"),
    (lambda d: d.update(y_test=d["y_test"] + 0.5), "labels are the integers 0..C-1"),
    (lambda d: d.update(x_test=d["x_test"][:, :3]), "x_train float32(6,) and x_test float32(3,) differ"),
    (lambda d: d.update(classes=np.array(["a", "b"])), "outside 0..1 (2 classes)"),
])
def test_bad_own_data_is_named_with_the_fix(change, words):
    d = dict(zip(("x_train", "y_train", "x_test", "y_test"), _features()))
    change(d)
    with pytest.raises(DataError) as e:
        check_arrays(d, "mine.npz")
    assert words in str(e.value) and str(e.value).startswith("mine.npz:"), str(e.value)


def test_arrays_from_python_are_stored_once_by_content(tmp_path):
    a = save_arrays(*_features(), cache_dir=tmp_path)
    b = save_arrays(*_features(), cache_dir=tmp_path)
    c = save_arrays(*_features(seed=1), cache_dir=tmp_path)
    assert a == b != c and a.suffix == ".npz" and a.parent == tmp_path / "arrays"


def test_a_spec_dict_is_validated_like_a_file(tmp_path):
    with pytest.raises(SpecError, match=r"spec: depth: depth must be an integer >= 1"):
        load_spec({"name": "x", "depth": 0})
    with pytest.raises(SpecError, match="needs a name"):
        load_spec({"epochs": 2})
    spec = load_spec({"name": "x", "optimizer": {"name": "sgd", "momentum": [0.0, 0.9]}, "learning_rate": [0.01, 0.1]})
    assert len(spec.configurations()) == 4 and len(spec.groups()) == 1  # momentum and lr traced: one program
    assert {r.label for r in spec.expand()} >= {"tanh · N(0, std=1) · sgd(momentum=0.9) · lr=0.1"}
    nesterov = load_spec({"name": "x", "optimizer": {"name": "sgd", "momentum": 0.9, "nesterov": [False, True]}})
    assert len(nesterov.groups()) == 2  # a Python bool selects code: one program each


def test_set_reaches_any_field_and_names_bad_paths(tmp_path):
    spec = load_spec("many-layers", sets=["arms.0.alpha=[1, 3]", "optimizer.eps=1e-10", "datasets.digits.epochs=2"])
    assert spec.epochs == 2 and {r.alpha for r in spec.expand() if r.depth == 20} == {1.0, 3.0}
    assert {dict(r.optimizer)["eps"] for r in spec.expand()} == {1e-10}
    sgd = load_spec("regularization", sets=["optimizer=sgd", "optimizer.momentum=0.9"])
    assert {dict(r.optimizer)["name"] for r in sgd.expand()} == {"sgd"}
    with pytest.raises(SpecError, match="there is no element 5"):
        load_spec("many-layers", sets=["arms.5.alpha=2"])
    with pytest.raises(SpecError, match="write key=value"):
        load_spec("many-layers", sets=["alpha"])
    with pytest.raises(SpecError, match="unknown key 'colour'"):
        load_spec("many-layers", sets=["colour=2"])


def test_show_toml_starts_a_spec_that_gives_the_same_runs(tmp_path):
    # In-process (the command's own code; its stdout apart from stderr): a `python -m vglab.cli`
    # process per preset cost ~3 s of CPU each, and the subprocess tests elsewhere cover that entry.
    from typer.testing import CliRunner

    from vglab.cli import app

    for preset in ("r-sweep", "vs-relu", "paper-cnn-many-layers"):
        r = CliRunner().invoke(app, ["show", preset, "--toml", "--dataset", "mnist"])
        assert r.exit_code == 0, r.output
        f = tmp_path / f"{preset}.toml"
        f.write_text(r.stdout)
        mine, ref = load_spec(f), load_spec(preset, dataset="mnist")
        assert [x.run_id for x in mine.expand()] == [x.run_id for x in ref.expand()], preset


def test_the_committed_schema_is_the_generated_one():
    committed = json.loads((ROOT / "vglab-spec.schema.json").read_text())
    assert committed == json.loads(json.dumps(json_schema()))  # regenerate: vglab schema > vglab-spec.schema.json
    props = committed["properties"]
    assert "learning_rate" in props and "optimizer" in props and "model" in props and "record_every" in props
    assert {"tanh", "relu"} <= set(props["activation"]["anyOf"][0]["enum"])


def test_own_npz_dataset_and_sgd_spec_end_to_end_to_a_report(tmp_path, vglab_cache):
    x_tr, y_tr, x_te, y_te = _features(n_train=96)
    np.savez(tmp_path / "mine.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    (tmp_path / "sgd.toml").write_text(
        'dataset = "mine.npz"\nepochs = 2\nseeds = 1\ndepth = 2\nwidth = 4\noptimizer = {name = "sgd", momentum = 0.9}\n'
        'learning_rate = [0.01, 0.1]\nprobes = "moments"\n[[arms]]\ninit = ["normal(std=1)", "normal(std=3)"]\n')
    out = tmp_path / "out"
    from typer.testing import CliRunner

    from vglab.cli import app

    r = CliRunner().invoke(app, ["run", str(tmp_path / "sgd.toml"), "--out", str(out), "--workers", "1", "--quiet"])
    assert r.exit_code == 0, r.output  # the command in this process: one JAX start fewer than a subprocess
    res = api.load_results(out)
    assert len(res.runs) == 4 and set(res.runs["n_classes"]) == {3} and set(res.runs["optimizer"]) == {"sgd(momentum=0.9)"}
    assert set(res.runs["learning_rate"]) == {0.01, 0.1} and res.runs["dataset"].iloc[0].endswith("mine.npz")
    assert res.epochs["val_acc"].notna().all()
    page = api.report(out)
    assert Path(page).exists() and "lr=0.1" in Path(page).read_text()


def test_arrays_from_python_run_like_a_dataset(tmp_path, vglab_cache):
    spec = {"name": "arrays", "epochs": 1, "seeds": 1, "width": 4, "probes": "norms"}
    res = api.run(spec, data=_features(), out=tmp_path / "out", workers=1, progress=False)
    assert len(res.runs) == 1 and res.runs["n_classes"].iloc[0] == 3
    again = api.run(spec, data=_features(), out=tmp_path / "out", workers=1, progress=False)  # same data: resumed
    assert again.runs["run_id"].tolist() == res.runs["run_id"].tolist()
    assert again.meta["invocations"][-1]["trained"] == 0 and again.meta["invocations"][-1]["skipped"] == 1


@pytest.mark.parametrize("factory, words", [
    ("nope_module_xyz:make", "cannot import 'nope_module_xyz'"),
    ("bad.py:make", "must return float logits shaped (2, 10)"),
    ("bad.py:ints", "not a float array"),
])
def test_a_bad_user_model_is_one_line_exit_2_and_nothing_written(tmp_path, vglab_cache, monkeypatch, factory, words):
    (tmp_path / "bad.py").write_text(
        "import jax.numpy as jnp\nimport vglab\n"
        "def make(in_shape, n_classes):\n"
        "    return vglab.nn.FunctionModel(lambda k: {'w': jnp.zeros((in_shape[0], 3))}, lambda p, x: x @ p['w'])\n"
        "def ints(in_shape, n_classes):\n"
        "    return vglab.nn.FunctionModel(lambda k: {'w': jnp.zeros((in_shape[0], n_classes), jnp.int32)},"
        " lambda p, x: x @ p['w'])\n")
    spec = tmp_path / "s.toml"
    spec.write_text(f'model = "{factory}"\nepochs = 1\nseeds = 1\n')
    args = ["run", spec, "--out", tmp_path / "out", "--workers", "1", "--quiet"]
    if factory.startswith("nope"):  # one case as a terminal sees it: a process's whole stderr (C++ logs too)
        r = vglab(*args, cwd=tmp_path)
        code, stderr = r.returncode, r.stderr
    else:  # the others in this process (the same command's code; a process costs ~3 CPU-s of imports)
        from typer.testing import CliRunner

        from vglab.cli import app

        monkeypatch.chdir(tmp_path)
        r = CliRunner().invoke(app, [str(a) for a in args])
        code, stderr = r.exit_code, r.stderr
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and words in lines[0], stderr
    out = tmp_path / "out"
    assert not out.exists() or not any(p.name != ".lock" for p in out.iterdir()), list(out.iterdir())
