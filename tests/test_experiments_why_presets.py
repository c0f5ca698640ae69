"""The why presets (optimizers, rescaling-identity, trainability) load on every dataset with
the sizes their comments state, and their arms pair as the why claims need."""

import pytest

from vglab.experiments.spec import load_spec
from vglab.nn import rescaling
from vglab.report import why

DATASETS = ("digits", "mnist", "cifar10")


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("name", why.PRESETS)
def test_why_presets_load_everywhere_with_three_seeds(name, dataset):
    spec = load_spec(name, dataset=dataset)
    assert spec.preset == name and spec.seeds == (0, 1, 2) and spec.expand()
    assert (spec.train_size is not None) == (dataset == "mnist")  # MNIST is a CPU-sized subset


def test_optimizers_sweeps_what_the_claims_compare():
    runs = load_spec("optimizers").expand()
    assert len({r.learning_rate for r in runs if dict(r.optimizer)["name"] == "sgd"}) >= 3
    eps = sorted({dict(r.optimizer)["eps"] for r in runs if r.depth == 20 and dict(r.optimizer)["name"] == "adam"})
    assert eps[-1] == 1e-7 and 1e-16 in eps and eps[0] < 1e-16
    shallow = {(r.weight_init, r.penalty) for r in runs if r.depth == 1}
    assert {("normal(std=10)", "none"), ("normal(std=10)", "l2"), ("normal(std=1)", "none")} <= shallow
    assert {r.alpha for r in runs if r.depth == 20} == {1.0, 2.0}
    assert len(load_spec("optimizers").groups()) == 6  # per net: SGD, momentum, Adam (rates and eps traced)
    assert load_spec("optimizers", dataset="mnist").train_size == 10000


def test_every_twin_run_pairs_with_an_alpha_network_run():
    runs = load_spec("rescaling-identity").expand()
    builtin = {(r.weight_init, r.bias_init, r.seed, r.optimizer, r.learning_rate, r.depth, r.alpha)
               for r in runs if r.model is None}
    twins = [r for r in runs if r.model == why.TWIN_MODEL]
    assert {dict(r.model_args)["form"] for r in twins} == {"plain", "inputs"}
    for r in twins:
        a = dict(r.model_args)
        assert (r.weight_init, r.bias_init, r.seed, r.optimizer, r.learning_rate, a["depth"], float(a["alpha"])) in builtin
        assert (r.weight_init, r.bias_init, r.seed, r.optimizer, r.learning_rate, a["depth"], 1.0) in builtin
    model = twins[0].model_spec().build((28,), 10)  # the factory resolves, on the network's layout
    assert isinstance(model, rescaling.Twin) and model.layout() == model.network.layout()


def test_trainability_is_the_stated_grid():
    spec = load_spec("trainability")
    runs = spec.expand()
    assert len(runs) == 6 * 2 * 2 * 12 * 3 and len(spec.groups()) == 12  # one program per depth and width
    assert sorted({r.depth for r in runs}) == [2, 4, 8, 16, 32, 64] and {r.width for r in runs} == {8, 64}
    sw = sorted({r.member().weight_init.value for r in runs})
    assert len(sw) == 12 and sw[0] == 0.5 and sw[-1] == 4.0
    assert {r.bias_init for r in runs} == {"normal(std=0.22360679774997896)"}  # sigma_b^2 = 0.05
    assert spec.record_every == spec.epochs  # a record at the start and the end only
    assert load_spec("trainability", dataset="mnist").train_size == 2000
