"""Your own model and data without surprises (issue 24): the default folder, the model's own
activation, the chance level and the theory inputs from what training stored, and the
errors a new user meets. Each failure checks the exit code, the whole message and that
nothing was written; each success what is on disk.

Everything runs in a fresh working directory without --out, on one worker (the process's
CPU affinity is one core, as on a one-core machine: a run's numbers do not depend on it)."""

import math
import os
from pathlib import Path

import numpy as np
import pytest
from experiments_helpers import vglab_cache  # noqa: F401
from own_models import arrays, fresh, one_core, write_models, write_npz  # noqa: F401
from typer.testing import CliRunner

import vglab
from vglab.cli import app
from vglab.results import store

cli = CliRunner()


def invoke(*args):
    return cli.invoke(app, [str(a) for a in args])


def error(r) -> str:
    assert r.exit_code == 2, r.output
    msg = " ".join(r.output.split())  # the console wraps long lines
    assert "Traceback" not in msg and msg.startswith("error: "), r.output
    return msg


def spec_file(folder: Path, name: str, body: str) -> Path:
    f = folder / f"{name}.toml"
    # "moments": every layer factor and gradient moment these tests read; "full" adds the gradient
    # histograms, which none of them reads (and which the compiled step then has to bin)
    f.write_text(f'name = "{name}"\nepochs = 1\nseeds = 1\nbatch_size = 16\nprobes = "moments"\n{body}')
    return f


# ------------------------------------------------------------------ 1. the default folder
def test_an_npz_dataset_gets_the_default_folder_of_its_stem_and_the_model_its_own_activation(fresh, tmp_path):
    """Issue 24 items 1 and 2 (and the factory file importing a module beside it): on main,
    `error: /.../three.npz is a file, not a folder; choose another --out`; then the spec's
    default "tanh" was passed over the factory's own "sigmoid"."""
    mine = tmp_path / "mine"
    factories = write_models(mine)
    npz = write_npz(mine / "three.npz", 3)
    spec = spec_file(mine, "own", f'dataset = "{npz}"\nmodel = "{factories}:sigmoid_own"\ninit = "model"\n')
    r = invoke("run", spec, "--quiet")
    assert r.exit_code == 0, r.output
    out = fresh / "vglab-results" / "three" / "own"
    assert r.output.strip() == str(Path("vglab-results") / "three" / "own")
    res = vglab.load_results(out)
    run = res.runs.iloc[0]
    assert run["activation"] == "sigmoid" and run["n_classes"] == 3
    assert "tanh" not in run["run_id"] and "tanh" not in run["label"] and "tanh" not in run["group"]
    # measured: sigmoid' <= 1/4 everywhere; tanh' = 1 - tanh(z)^2 would average above it at
    # pre-activations this small (mean |z| < 1.2: tanh' > 0.3 wherever |z| < 1.2)
    a = res.activations
    hidden = a[(a["epoch"] == 0) & (a["layer_index"] < a["layer_index"].max())]
    assert len(hidden) == 2 and (hidden["deriv_mean"] <= 0.25).all() and (hidden["preact_abs_mean"] < 1.2).all()


def test_arrays_from_python_get_a_folder_of_their_hash_and_the_dataset_column_says_so(fresh):
    """On main: `StoreError: ~/.cache/vglab/arrays/<hash>.npz is a file, not a folder; choose
    another --out`, and the dataset column held that cache path."""
    data = arrays(2)
    res = vglab.run({"name": "mine", "epochs": 1, "seeds": 1, "batch_size": 16}, data=data, progress=False)
    short = res.runs["dataset"].iloc[0]
    assert short.startswith("arrays-") and len(short) == len("arrays-") + 8
    assert res.path == Path("vglab-results") / short / "mine" and (fresh / res.path / "runs.parquet").is_file()
    assert res.runs["n_classes"].iloc[0] == 2
    # the same arrays again: the same folder, nothing trained again
    again = vglab.run({"name": "mine", "epochs": 1, "seeds": 1, "batch_size": 16}, data=data, progress=False)
    assert again.path == res.path and again.runs["run_id"].tolist() == res.runs["run_id"].tolist()
    assert again.meta["invocations"][-1]["trained"] == 0 and res.meta["invocations"][-1]["trained"] == 1


def test_messages_from_python_name_out_and_a_dry_run_under_a_file_is_a_clear_error(fresh):
    """On main, from Python: `... is a file, not a folder; choose another --out`, and with
    dry_run=True a bare NotADirectoryError."""
    blocker = fresh / "results.txt"
    blocker.write_text("mine")
    spec = {"name": "m", "epochs": 1, "seeds": 1}
    for dry in (False, True):
        with pytest.raises(store.StoreError) as e:
            vglab.run(spec, out=blocker / "sub", dry_run=dry, progress=False, workers=1)
        assert str(e.value) == f"{blocker} is a file, not a folder; choose another out="
    assert sorted(p.name for p in fresh.iterdir()) == ["results.txt"] and blocker.read_text() == "mine"
    # the command line names its option
    r = invoke("run", "large-params", "--out", blocker / "sub", "--quiet")
    assert error(r) == f"error: {blocker} is a file, not a folder; choose another --out"
    # a dry run of an own dataset without out= plans into the default folder and writes nothing
    write_npz(fresh.parent / "d" / "two.npz", 2)
    plan = vglab.run({**spec, "dataset": str(fresh.parent / "d" / "two.npz")}, dry_run=True, progress=False)
    assert plan.rows[0].runs == 1 and not (fresh / "vglab-results").exists()


# ------------------------------------------------------------------ 2. the activation is the model's
def test_a_spec_activation_the_model_contradicts_or_cannot_take_is_refused(fresh, tmp_path):
    """On main both were accepted without a word (and the runs labelled "sigmoid")."""
    factories = write_models(tmp_path / "mine")
    tanh = spec_file(tmp_path / "mine", "t", f'model = "{factories}:tanh_fixed"\nactivation = "sigmoid"\n')
    assert error(invoke("run", tanh, "--quiet")) == (
        f"error: model '{factories}:tanh_fixed' computes 'tanh' (its vglab.nn.activation), but the spec says "
        "activation = 'sigmoid' (its factory takes no `activation` argument); remove activation from the spec to "
        "train and label the model's own, or build the model with vglab.nn.activation('sigmoid')")
    plain = spec_file(tmp_path / "mine", "p", f'model = "{factories}:plain_sigmoid"\nactivation = "sigmoid"\n')
    assert error(invoke("run", plain, "--quiet", "--dry-run")) == (
        f"error: the spec's activation = 'sigmoid' has no effect on model '{factories}:plain_sigmoid': its factory "
        "takes no `activation` argument and the model does not use vglab.nn.activation, so vglab can neither set "
        "nor check it; remove activation from the spec (the runs table then says 'unknown'), or build the model's "
        "nonlinearity with vglab.nn.activation('sigmoid')")
    assert list(fresh.iterdir()) == []
    # set explicitly, it is passed to a factory that takes it
    ok = spec_file(tmp_path / "mine", "s", f'model = "{factories}:sigmoid_own"\nactivation = "arctan"\n')
    assert invoke("run", ok, "--quiet", "--dry-run").exit_code == 0


def test_a_model_without_vglab_activation_is_unknown_says_why_its_panels_are_empty_and_refuses_alpha(fresh, tmp_path):
    """On main: labelled "tanh", two empty regime panels without a word, and an alpha sweep
    that exited 2 from the worker after experiment.toml and meta.json were written."""
    from vglab.report import figures

    factories = write_models(tmp_path / "mine")
    alpha = spec_file(tmp_path / "mine", "a", f'model = "{factories}:plain_sigmoid"\nalpha = [1, 2]\n')
    assert error(invoke("run", alpha, "--quiet")) == (
        f"error: a: model '{factories}:plain_sigmoid' does not take alpha (the rescaled activation), and the spec asks for alpha = 2; "
        "build the model's nonlinearity with vglab.nn.activation(...) or give its apply an alpha argument, or drop "
        "the alpha sweep")
    assert list(fresh.iterdir()) == []
    spec = spec_file(tmp_path / "mine", "u", f'model = "{factories}:plain_sigmoid"\n')
    assert invoke("run", spec, "--quiet").exit_code == 0
    res = vglab.load_results(fresh / "vglab-results" / "digits" / "u")
    assert res.runs["activation"].tolist() == ["unknown"] and "tanh" not in res.runs["label"].iloc[0]
    use = figures.instrument("regime_diagnosis").needs(res)
    assert use is not None and figures.NO_PREACTIVATIONS in use.note and "vglab.nn.activation" in use.note


# ------------------------------------------------------------------ 3. chance and theory inputs
@pytest.fixture(scope="module")
def by_classes(tmp_path_factory, vglab_cache, one_core):  # noqa: F811
    """A 2-class and a 3-class own .npz, each trained (a 2x8 tanh MLP, 2 epochs, one seed)."""
    root = tmp_path_factory.mktemp("classes")
    old = os.getcwd()
    os.chdir(root)
    try:
        out = {}
        for c, name in ((2, "two"), (3, "three")):
            npz = write_npz(root / "data" / f"{name}.npz", c)
            out[c] = (vglab.run({"name": "chance", "dataset": str(npz), "depth": 2, "epochs": 2, "seeds": 1,
                                 "batch_size": 16, "init": "normal(std=0.5)"}, progress=False), npz)
        return out
    finally:
        os.chdir(old)


@pytest.mark.parametrize("c", [2, 3])
def test_chance_and_theory_inputs_come_from_what_training_stored(by_classes, c):
    """On main a 3-class dataset got "chance 0.10" in the figure and the claims' "at chance"
    test, and the theory re-prepared the dataset by name (here a path it may not find)."""
    import matplotlib.pyplot as plt

    from vglab.report import claims, figures, tables, theory

    res, npz = by_classes[c]
    run = res.runs.iloc[0]
    with np.load(npz) as z:
        x = z["x_train"].astype(np.float64)
    assert run["n_classes"] == c and run["n_in"] == x.shape[1]
    assert run["input_sq_norm"] == pytest.approx(np.mean(np.sum(x * x, axis=1)), rel=1e-6)
    assert run["bias_var"] == pytest.approx(0.25) and run["bias_init_spec"] == "normal(std=0.5)"
    assert tables.n_classes(res) == c
    fig = figures.learning_curves(res)
    texts = [t.get_text().strip() for ax in fig.axes for t in ax.texts]
    plt.close(fig)
    assert f"chance {1 / c:.2f}" in texts and "chance 0.10" not in texts
    assert claims._at_chance(res, 1 / c + 0.04) and not claims._at_chance(res, 1 / c + 0.06)
    assert claims._at_chance(res, 0.1) is (c == 10)
    (comp,) = theory.compare(res)
    assert comp.prediction.input_norm[0] == pytest.approx(run["input_sq_norm"]) and not comp.input_assumed
    w_var = 0.25  # normal(std=0.5)
    assert comp.prediction.q[0] == pytest.approx(w_var * run["input_sq_norm"] + 0.25, rel=1e-9)


def test_old_results_without_the_stored_facts_say_how_to_get_them(by_classes):
    from vglab.report import figures, tables, theory

    res, _ = by_classes[3]
    old = vglab.results.Results(res.path, res.spec, res.meta,
                                res.runs.drop(columns=["n_classes", "n_in", "input_sq_norm", "bias_var"]),
                                res.epochs, res.grads, res.activations)
    assert theory.compare(old) == []
    with pytest.raises(figures.NoData, match="^these runs were stored before vglab recorded the inputs"):
        figures.theory_overlay(old)
    with pytest.raises(ValueError, match="the runs do not say how many classes they were trained on"):
        tables.n_classes(old)


# ------------------------------------------------------------------ 4. a CNN given flat inputs
def test_a_cnn_given_flat_inputs_is_told_to_set_input_images(fresh, tmp_path):
    """On main: `error: operands could not be broadcast together with shapes (0,) (2,)`."""
    factories = write_models(tmp_path / "mine")
    spec = spec_file(tmp_path / "mine", "cnn", f'model = "{factories}:linen_cnn"\n')
    msg = error(invoke("run", spec, "--quiet"))
    assert msg.startswith(f"error: model '{factories}:linen_cnn' failed on flat inputs of shape (28,) (ValueError: ")
    assert msg.endswith('); if this model takes images: set input = "images" in the spec (it then gets (H, W, C) '
                        'examples)')
    assert list(fresh.iterdir()) == []


# ------------------------------------------------------------------ 5. the smaller ones
def test_a_set_typo_is_blamed_on_set_not_on_the_spec_file(fresh, tmp_path):
    """On main: `error: good_spec.toml: unknown key 'learnig_rate'; ...`."""
    spec = spec_file(tmp_path, "good_spec", "")
    msg = error(invoke("run", spec, "--set", "learnig_rate=0.1", "--quiet"))
    assert msg.startswith("error: --set learnig_rate: unknown key 'learnig_rate'; allowed keys: name, ")
    assert "good_spec" not in msg and list(fresh.iterdir()) == []


def test_show_says_what_a_model_arm_uses_and_that_the_model_file_runs_code(fresh, tmp_path):
    """On main: depth 1 and width 8 for a model arm that ignores them, activation tanh, and no
    word about the model file's code."""
    factories = write_models(tmp_path / "mine")
    spec = spec_file(tmp_path / "mine", "m", f'model = "{factories}:sigmoid_own"\n')
    r = invoke("show", spec)
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert (f"note: this spec names your own model ({factories}:sigmoid_own): vglab imports that code and runs it "
            "to build the model, for `vglab run` (even with --dry-run) and in every worker") in text
    arms = r.output.split("arms (each a cross product)")[1].split("runs:")[0]
    header, row = arms.strip().splitlines()[:2]
    cells = dict(zip(header.split(), row.split()))
    assert cells["depth"] == "-" and cells["width"] == "-" and "tanh" not in arms
    assert list(fresh.iterdir()) == []
    from vglab import cli as cli_module  # --dataset's help (on main: "digits (embedded), mnist or cifar10")

    assert "or the path of your own .npz" in cli_module.DATASET.help


def test_tables_say_what_they_hold_and_a_bad_name_lists_the_valid_ones(by_classes):
    """On main: table("runs") had every column twice (_x/_y), table("epoch") raised a bare
    AttributeError, and the tables' meaning was only in DESIGN.md."""
    res, _ = by_classes[2]
    runs = res.table("runs")
    assert list(runs.columns) == list(res.runs.columns) and not any(c.endswith(("_x", "_y")) for c in runs.columns)
    with pytest.raises(store.StoreError) as e:
        res.table("epoch")
    assert str(e.value).startswith("no table 'epoch'; the tables are 'runs' (one row per run); 'epochs' (one row "
                                   "per run and recorded epoch (0 = at initialization)); 'grads' ")
    assert str(e.value).endswith("(gradient histograms: histogram_table())")
    for doc in (vglab.load_results.__doc__, vglab.results.Results.__doc__):
        for name in ("runs", "epochs", "grads", "activations", "histogram_table"):
            assert f'"{name}"' in doc or f"{name}:" in doc or f"{name}()" in doc, (name, doc)
        assert "layer factors" in doc and "steps" in doc


def test_the_regime_figure_names_the_layers_as_the_gradient_flow_figure_does(by_classes):
    import matplotlib.pyplot as plt

    from vglab.report import figures

    res, _ = by_classes[3]
    fig = figures.regime_diagnosis(res)
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    plt.close(fig)
    assert ticks == ["dense1", "dense2", "out"] == sorted(set(res.grads["layer"]), key=lambda n: (n == "out", n))
    assert math.isfinite(res.activations["deriv_mean"].iloc[0])
