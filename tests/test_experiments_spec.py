"""Experiment specs: presets, expansion into runs / groups / units, ids, labels, validation."""

import math

import pytest
from experiments_helpers import write_spec

from vglab.experiments.spec import REPRODUCE, SpecError, list_presets, load_spec, preset_names
from vglab.train.loop import group_key

RUN_COLUMNS = {"experiment", "label", "group", "dataset", "network", "depth", "width", "variant", "activation",
               "alpha", "weight_init", "weight_init_spec", "weight_init_kind", "init_scale", "bias_init", "penalty",
               "r", "seed", "epochs", "batch_size", "learning_rate", "train_size", "n_params", "optimizer",
               "optimizer_spec", "model", "model_args", "input", "record_every", "n_classes",
               "n_in", "input_sq_norm", "bias_init_spec", "bias_var", "residual", "norm", "label_smoothing"}


def test_every_preset_loads_on_every_dataset_and_describes_itself():
    assert set(REPRODUCE) <= set(preset_names())
    for p in list_presets():
        assert p["description"] and "\n" not in p["description"] and p["reference"], p["name"]
        for dataset in ("digits", "mnist", "cifar10"):
            spec = load_spec(p["name"], dataset=dataset)
            assert spec.dataset == dataset and spec.preset == p["name"] and spec.expand()


def test_groups_share_what_the_engine_can_vectorize():
    # Every group's runs really can share one train_group call: one network, one init-kind pair.
    for name in preset_names():
        for group, runs in load_spec(name).groups().items():
            assert len({r.group_key for r in runs}) == 1
            assert len({group_key(r.member()) for r in runs}) == 1
    counts = {name: len(load_spec(name).groups()) for name in REPRODUCE}
    assert counts["r-sweep"] == 1 and counts["regularization"] == 1 and counts["alpha-sweep"] == 1
    assert counts["vs-relu"] == 3 and counts["many-layers"] == 2 and counts["rescaling-by-init"] == 2
    assert sum(counts.values()) == 18


def test_preset_contents_follow_the_reference_conventions():
    large = load_spec("large-params")
    assert large.epochs == 20 and large.seeds == (0, 1, 2) and large.batch_size == 32 and large.learning_rate == 1e-3
    labels = {r.label for r in large.expand()}
    assert labels == {"tanh · N(0, std=10)", "tanh · N(0, std=1)", "tanh · N(0, var=10)"}
    var = next(r for r in large.expand() if "var" in r.label)
    assert math.isclose(var.member().weight_init.value, math.sqrt(10))

    sweep = load_spec("r-sweep")
    rs = sorted({r.r for r in sweep.expand() if r.penalty == "l2"})
    assert len(rs) == 10 and rs[0] == 1e-3 and rs[-1] == 100.0
    assert {r.penalty for r in sweep.expand()} == {"l1", "l2", "none"}
    assert load_spec("r-sweep", dataset="mnist").epochs == 15

    alphas = sorted({r.alpha for r in load_spec("alpha-sweep").expand()})
    assert alphas[0] == 1.0 and alphas[1] == 1.2 and alphas[-1] == 5.0 and len(alphas) == 9
    assert "rescaled tanh α=2" in {r.label.split(" · ")[1] for r in load_spec("many-layers").expand()}
    # digits overrides the many-layers CNN's epochs (a smaller budget); other datasets keep the full run
    assert load_spec("cnn-many-layers").epochs < load_spec("cnn-many-layers", dataset="mnist").epochs
    # the large-parameter MLP presets give digits 35 epochs (1,540 steps) per reference epoch,
    # recorded every 35: the tables hold as many records as the reference's epochs
    for name in ("regularization", "r-sweep", "super-large", "uniform-large", "vs-relu"):
        digits, mnist = load_spec(name), load_spec(name, dataset="mnist")
        assert digits.epochs == 35 * mnist.epochs and digits.record_every == 35 and mnist.record_every == 1, name
        assert digits.learning_rate == mnist.learning_rate and digits.batch_size == mnist.batch_size == 32
    assert load_spec("large-params").epochs == 20  # its claim holds at the reference's epochs
    # --epochs keeps the number of records
    assert load_spec("regularization", epochs=70).record_every == 4
    assert load_spec("regularization", epochs=3).record_every == 1
    exact = load_spec("regularization", sets=["datasets.digits.epochs=70", "datasets.digits.record_every=7"])
    assert (exact.epochs, exact.record_every) == (70, 7)  # both from the spec: as written


def test_run_ids_are_deterministic_readable_and_unique():
    a, b = load_spec("regularization").expand(), load_spec("regularization").expand()
    assert [r.run_id for r in a] == [r.run_id for r in b]
    ids = [r.run_id for r in a]
    assert len(set(ids)) == len(ids)
    assert "mlp-1x8-tanh-std10-l2-r0.01-s2-" in next(i for i in ids if "l2" in i and "-s2-" in i)
    # another number of epochs is another run
    c = load_spec("regularization", epochs=3).expand()
    assert not set(ids) & {r.run_id for r in c}


def test_rows_have_exactly_the_design_columns():
    for name in ("vs-relu", "paper-cnn-many-layers"):
        row = load_spec(name).expand()[-1].row(n_params=123, n_train=1437)
        assert set(row) == RUN_COLUMNS
    relu = load_spec("vs-relu").expand()[-1].row(1, 1)
    assert relu["weight_init_kind"] == "glorot_uniform" and math.isnan(relu["init_scale"]) and relu["bias_init"] == "zeros"
    paper = load_spec("paper-cnn-many-layers").expand()[0].row(1, 1)
    assert paper["variant"] == "layers" and paper["depth"] is None


def test_units_split_groups_by_seed(tmp_path):
    spec = load_spec(write_spec(tmp_path))
    units = spec.units()
    assert len(spec.groups()) == 3 and len(units) == 6
    assert all(len({r.seed for r in u.runs}) == 1 for u in units)
    assert sum(len(u.runs) for u in units) == len(spec.expand()) == 8
    parts = spec.units(max_runs=1)  # the CPU runner's cap on a unit's runs, here 1
    assert len(parts) == 8 and len({u.id for u in parts}) == 8
    assert sorted(r.run_id for u in parts for r in u.runs) == sorted(r.run_id for r in spec.expand())
    assert {u.id for u in parts if u.part is None} == {u.id for u in units if len(u.runs) == 1}  # unsplit: same id


def test_overrides_and_dataset_tables(tmp_path):
    f = write_spec(tmp_path, extra="\n[datasets.mnist]\nepochs = 7\nseeds = [4]\n")
    assert load_spec(f).epochs == 2
    m = load_spec(f, dataset="mnist")
    assert m.epochs == 7 and m.seeds == (4,)
    assert load_spec(f, dataset="mnist", epochs=1, seeds=[0, 1]).epochs == 1


@pytest.mark.parametrize("body, words", [
    ('activation = "tanhh"', ["activation", "tanhh", "tanh", "relu"]),
    ('penalty = "l2"\nr = -1', ["r", ">= 0"]),
    ("alpha = 0", ["alpha", "> 0"]),
    ("depth = 0", ["depth", ">= 1"]),
    ('dataset = "imagenet"', ["dataset", "imagenet", "digits", "mnist", "cifar10"]),
    ("colour = 1", ["unknown key 'colour'", "allowed keys", "activation"]),
    ('[[arms]]\ninit = "normal(std=1)"\nstd = 2', ["unknown key 'std' in arms[0]", "init"]),
    ('init = "gauss(3)"', ["init", "gauss", "normal(std=S)"]),
    ('network = "rnn"', ["network", "rnn", "mlp", "paper_cnn"]),
    ('network = "mlp"\nvariant = "layers"', ["variant", "paper_cnn"]),
    ('probes = ["nope"]', ["probe", "nope"]),
    ("seeds = 0", ["seeds", ">= 1"]),
    ('r = "logspace(0, 1, 3)"', ["logspace"]),
    ("epochs = = 2", ["invalid TOML"]),
])
def test_invalid_specs_name_the_key_and_the_allowed_values(tmp_path, body, words):
    f = tmp_path / "bad.toml"
    f.write_text(body + "\n")
    with pytest.raises(SpecError) as e:
        load_spec(f)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_missing_preset_or_file_lists_the_presets():
    with pytest.raises(SpecError, match="no preset or spec file named 'nope'.*large-params"):
        load_spec("nope")
    with pytest.raises(SpecError, match="--dataset: unknown dataset"):
        load_spec("large-params", dataset="svhn")


def test_run_id_slugs_tell_large_from_small_exponents(tmp_path):
    f = write_spec(tmp_path)
    f.write_text(f.read_text() + '\n[[arms]]\ninit = ["normal(std=1e12)", "normal(std=1e-12)"]\npenalty = "l2"\n'
                                 'r = [1e6, 1e-6]\n')
    ids = [r.run_id for r in load_spec(f, seeds=1).expand()][-4:]
    slugs = [i.rsplit("-s0-", 1)[0] for i in ids]
    assert slugs == ["mlp-1x4-tanh-std1e12-l2-r1e06", "mlp-1x4-tanh-std1e12-l2-r1e-06",
                     "mlp-1x4-tanh-std1e-12-l2-r1e06", "mlp-1x4-tanh-std1e-12-l2-r1e-06"]
    # every preset's slugs are unchanged (no preset value has a positive exponent), so their
    # existing results resume
    assert not any("e+" in f"{r.r:g}{r.alpha:g}{r.weight_init}" for n in preset_names() for r in load_spec(n).expand())


def test_the_name_is_a_plain_folder_name(tmp_path):
    from vglab.experiments.spec import check_name, check_sizes

    for good in ("large-params", "my_study.v2", "A1", "-x"):
        assert check_name(good) == good
    for bad in ("", ".", "..", "../x", "/tmp/x", "a/b", "a\\b", ".hidden", "a b", "x" * 101, "é", None):
        with pytest.raises(ValueError, match="is not a plain folder name"):
            check_name(bad)
    # an ExperimentSpec built in Python is checked too (by the runner, before anything is written)
    import dataclasses

    spec = dataclasses.replace(load_spec("large-params"), name="../elsewhere")
    with pytest.raises(SpecError, match="'../elsewhere' is not a plain folder name"):
        check_sizes(spec)


def test_limits_are_one_table_checked_before_building(tmp_path):
    from vglab.experiments.spec import LIMITS, check_sizes

    assert set(LIMITS) == {"runs", "sweep", "seeds", "depth", "width", "workers"}
    # the presets are well inside them
    for name in preset_names():
        for dataset in ("digits", "mnist", "cifar10"):
            check_sizes(load_spec(name, dataset=dataset))
    f = tmp_path / "big.toml"
    f.write_text("depth = 101\n")
    with pytest.raises(SpecError, match=r"depth: 101 is above the limit of 100 layers"):
        load_spec(f)
    assert load_spec(f, allow_large=True).arms[0]["depth"] == [101]
    f.write_text('alpha = "linspace(1, 2, 1001)"\n')
    with pytest.raises(SpecError, match="n = 1001 is above the limit of 1000 values"):
        load_spec(f)
    assert len(load_spec(f, allow_large=True).arms[0]["alpha"]) == 1001
    spec = load_spec("large-params", seeds=100)
    with pytest.raises(SpecError, match="101 is above the limit of 100 seeds"):
        load_spec("large-params", seeds=101)
    import dataclasses

    with pytest.raises(SpecError, match="large-params: seeds: 101 is above the limit of 100 seeds"):
        check_sizes(dataclasses.replace(spec, seeds=tuple(range(101))))
    check_sizes(dataclasses.replace(spec, seeds=tuple(range(101))), allow_large=True)


def test_a_spec_works_its_runs_out_once(monkeypatch):
    """groups, units, to_dict and the runner all read `expand()`: a `vglab run` expanded the
    spec 8 times; now the runs are worked out once per spec and each caller gets its own list."""
    import dataclasses

    from vglab.experiments.spec import ExperimentSpec

    spec = dataclasses.replace(load_spec("large-params", epochs=1, seeds=[0, 1]))  # a fresh object: nothing kept
    real, calls = ExperimentSpec._expand, []
    monkeypatch.setattr(ExperimentSpec, "_expand", lambda self: calls.append(self) or real(self))
    runs = spec.expand()
    spec.groups(), spec.units(max_runs=8), spec.to_dict()
    assert len(calls) == 1 and spec.expand() == runs == real(spec) and len(runs) == 6
    spec.expand().clear()  # a caller's list is its own
    assert len(spec.expand()) == 6


def test_label_smoothing_is_one_setting_and_keeps_the_ids_of_stored_runs():
    """A setting added after results existed: at its default the run ids (stored folders'
    keys: this one is of large-params on digits) and experiment.toml stay as they were."""
    plain = load_spec("large-params")
    assert plain.expand()[0].run_id == "mlp-1x8-tanh-std10-s0-76768a29"
    assert load_spec("large-params", label_smoothing=0).expand()[0].run_id == plain.expand()[0].run_id
    assert "label_smoothing" not in plain.to_dict() and plain.expand()[0].train_config().label_smoothing == 0
    smooth = load_spec("large-params", sets=["label_smoothing=0.1"])
    assert smooth.to_dict()["label_smoothing"] == 0.1 and smooth.to_spec_file()["label_smoothing"] == 0.1
    assert smooth.expand()[0].train_config().label_smoothing == 0.1
    assert smooth.expand()[0].row(1, 1)["label_smoothing"] == 0.1 and plain.expand()[0].row(1, 1)["label_smoothing"] == 0
    assert {r.run_id for r in smooth.expand()}.isdisjoint(r.run_id for r in plain.expand())
    for bad in (1, -0.1, "x"):
        with pytest.raises(SpecError, match="label_smoothing"):
            load_spec({"name": "t", "label_smoothing": bad})


def test_label_smoothing_loss_is_the_cross_entropy_against_the_smoothed_target():
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from vglab.train.loop import mean_cross_entropy

    logits = jnp.asarray(np.random.default_rng(0).normal(size=(5, 4)) * 3, jnp.float32)
    y = jnp.array([0, 3, 1, 1, 2])
    want = optax.softmax_cross_entropy(logits, optax.smooth_labels(jax.nn.one_hot(y, 4), 0.2)).mean()
    np.testing.assert_allclose(mean_cross_entropy(logits, y, 0.2), want, rtol=1e-5)
    plain = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    np.testing.assert_allclose(mean_cross_entropy(logits, y), plain, rtol=1e-5)
    assert float(mean_cross_entropy(logits, y, 0.2)) != pytest.approx(float(plain), rel=1e-3)


def test_training_uses_the_label_smoothing_it_is_given():
    """Two steps of a 1x4 MLP: the smoothed loss moves the weights elsewhere (the val loss,
    the plain cross-entropy of the same start, differs after them). 3 s."""
    import numpy as np

    from vglab import nn
    from vglab.train import Member, TrainConfig, train_group

    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    data = type("Arrays", (), {"x_train": x[:64], "y_train": y[:64], "x_test": x[64:], "y_test": y[64:],
                               "n_classes": 2})()
    net = nn.mlp(1, 4, 5, n_out=2)
    runs = [train_group(net, data, [Member(seed=0)], TrainConfig(epochs=1, batch_size=32, probes=(),
                                                                 learning_rate=0.1, label_smoothing=e))[0].epochs
            for e in (0.0, 0.5)]
    assert runs[0]["val_loss"].iloc[0] == runs[1]["val_loss"].iloc[0]  # the same start
    assert abs(runs[0]["val_loss"].iloc[-1] - runs[1]["val_loss"].iloc[-1]) > 1e-4
