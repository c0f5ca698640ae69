"""The deep-remedies preset (issue 29): its spec (critical σ_w² resolved per configuration, every
remedy's arm and label), its claims decided from small synthetic tables, its figures drawn from
the tables, and the Jacobian whose singular values the isometry figure shows."""

import math

import numpy as np
import pytest
from test_report_why import SEEDS, Builder, outcome

from vglab.experiments.spec import SpecError, load_spec, resolve_critical
from vglab.nn import activations, init, meanfield, networks
from vglab.report import theory, why
from vglab.train import Member, loop

PRESET = "deep-remedies"
SB2 = 1e-5  # the preset's σ_b² of the critical arms


@pytest.fixture(scope="module")
def preset_runs():
    return load_spec(PRESET).expand()


def test_preset_expands_to_every_arm_of_every_net(preset_runs):
    labels = {r.label for r in preset_runs}
    assert len(preset_runs) == 228 and len(labels) == 76  # 2 activations x 2 depths x 2 widths x 9 arms + 4 shallow
    assert {r.seed for r in preset_runs} == set(SEEDS)
    crit = {a: meanfield.critical_sigma_w2(a, 1.0, SB2) for a in ("tanh", "sigmoid")}
    for r in preset_runs:
        law = init.parse(r.weight_init)
        if law.kind in ("scaled_orthogonal", "scaled_normal") and not r.activation.startswith("tat("):  # critical arms
            assert "critical" in r.label and law.value == pytest.approx(crit[r.activation], rel=1e-5)
            assert init.parse(r.bias_init).variance() == pytest.approx(SB2)
    tat = [r for r in preset_runs if r.activation.startswith("tat(")]
    assert {r.activation for r in tat} >= {"tat(tanh, tau=0.3, depth=20)", "tat(sigmoid, tau=0.3, depth=50)"}
    assert all(f"depth={r.depth})" in r.activation for r in tat)  # each net's own depth
    res = [r for r in preset_runs if r.residual]
    assert len(res) == 24 and all(r.residual == 0.2 and "residual s=0.2" in r.label for r in res)
    ln = [r for r in preset_runs if r.norm == "layer"]
    assert len(ln) == 24 and all("LayerNorm" in r.label and "LN" in r.model_spec().name for r in ln)
    row = res[0].row(1, 1, 10)
    assert (row["residual"], row["norm"]) == (0.2, "none")
    assert {r.depth for r in preset_runs} == {1, 20, 50} and {r.width for r in preset_runs} == {8, 128}


def test_critical_resolution_is_on_the_order_to_chaos_line():
    spec = resolve_critical("orthogonal(sigma_w2=critical)", "tanh", 1.0, "normal(variance=0.01)")
    s = init.parse(spec).value
    assert meanfield.chi_1("tanh", 1.0, s, 0.01) == pytest.approx(1.0, abs=1e-5)  # rounded to 6 digits
    # rescaling acts through the biases only: critical at α = 2, σ_b² = 0.04 is critical at α = 1, σ_b² = 0.01
    s2 = init.parse(resolve_critical("normal(sigma_w2=critical)", "tanh", 2.0, "normal(variance=0.04)")).value
    assert s2 == pytest.approx(s, rel=1e-5)
    assert resolve_critical("normal(std=0.05)", "tat(tanh, tau=0.3, depth=3)", 1.0, "zeros") == "normal(std=0.05)"
    with pytest.raises(SpecError, match="no model of activation 'tat"):
        resolve_critical("orthogonal(sigma_w2=critical)", "tat(tanh, tau=0.3, depth=3)", 1.0, "zeros")
    with pytest.raises(SpecError, match="bias law of fixed variance"):
        resolve_critical("normal(sigma_w2=critical)", "tanh", 1.0, "glorot_uniform")
    with pytest.raises(SpecError, match="init"):
        load_spec({"name": "x", "init": "orthogonal(sigma_w2=critcal)"})


# ------------------------------------------------------------------ claims, synthetic
def _nets(acc: dict, widths=(8, 128), depths=(20,), acts=("tanh",)):
    """A deep-remedies table: per remedy its final accuracy per seed on every net."""
    b = Builder(PRESET)
    kinds = {"none": {}, "α=2": {"alpha": 2.0}, "α=5": {"alpha": 5.0}, "Glorot": {"weight_init_kind": "glorot_uniform"},
             "orthogonal critical": {"weight_init_kind": "scaled_orthogonal"},
             "Gaussian critical": {"weight_init_kind": "scaled_normal"}, "residual": {"residual": 0.2},
             "LayerNorm": {"norm": "layer"}}
    for a in acts:
        for w in widths:
            b.arm(acc["shallow"], label=f"{a} 1x{w}", depth=1, width=w, activation=a)
            for d in depths:
                for r, v in acc.items():
                    if r == "shallow":
                        continue
                    cols = kinds.get(r, {"activation": f"tat({a}, tau=0.3, depth={d})"})
                    b.arm(v, label=f"{a} {d}x{w} {r}", depth=d, width=w, **{"activation": a, **cols})
    return b.results()


BASE = {"shallow": [0.90, 0.91, 0.92], "none": 0.10, "α=2": 0.10, "α=5": [0.12, 0.11, 0.13], "Glorot": 0.5,
        "orthogonal critical": [0.85, 0.86, 0.84], "Gaussian critical": [0.60, 0.55, 0.62],
        "kernel-shaped": [0.88, 0.90, 0.89], "residual": [0.80, 0.82, 0.81], "LayerNorm": [0.7, 0.72, 0.71]}


def test_remedy_arms_are_read_from_the_runs_columns():
    f = why.remedy_runs(_nets(BASE))
    assert set(f["remedy"]) == set(BASE)
    assert set(f.loc[f["remedy"] == "kernel-shaped", "base"]) == {"tanh"}
    assert why.remedy_cells(f) == [("tanh", 20, 8), ("tanh", 20, 128)]


def test_deep_claims_reach_their_verdicts_with_intervals():
    res = _nets(BASE)
    iso = outcome("isometry", res)
    assert iso.verdict == "reproduced" and "95 % interval" in iso.measured
    assert iso.numbers["tanh 20x8"]["diff"] == pytest.approx(0.85 - 0.59)
    assert iso.numbers["tanh 20x8"]["low"] < 0.26 < iso.numbers["tanh 20x8"]["high"]
    assert outcome("kernel-shaped-trains", res).verdict == "reproduced"  # 2 points below the shallow net
    assert outcome("alpha-below-remedies", res).verdict == "reproduced"
    worse = _nets({**BASE, "Gaussian critical": [0.85, 0.86, 0.84], "kernel-shaped": [0.5, 0.52, 0.51],
                   "LayerNorm": [0.11, 0.12, 0.13]})
    assert outcome("isometry", worse).verdict == "not reproduced"
    assert outcome("kernel-shaped-trains", worse).verdict == "partly"  # trains, but 40 points below
    assert outcome("alpha-below-remedies", worse).verdict == "partly"  # LayerNorm is not above α = 5
    chance = _nets({**BASE, **{r: 0.1 for r in BASE if r != "shallow"}})
    assert outcome("isometry", chance).verdict == "inconclusive"
    assert outcome("alpha-below-remedies", chance).verdict == "inconclusive"
    assert outcome("kernel-shaped-trains", chance).verdict == "not reproduced"
    assert outcome("isometry", Builder(PRESET).arm(0.5, label="x", depth=20).results()).verdict == "not run"


def test_narrow_theory_compares_the_mean_field_error_per_width():
    """Width 8 measures the prediction off by 2 decades (the ratio of squared norms by 4), width
    128 exactly: the narrow net's error is 2 decades larger."""
    b = Builder(PRESET)
    depth, n_in, x2 = 4, 10, 3.0
    for w, off in ((8, 4.0), (128, 0.0)):
        spec = "normal(sigma_w2=1.5)"
        pred = theory.predict(depth, w, n_in, "tanh", weight_spec=spec, bias_var=0.0, input_sq_norm=x2)
        sq = pred.log_rel_full / math.log(10) + np.r_[off, np.zeros(depth - 1)]  # log10 ‖g_l‖² − log10 ‖g_L‖²
        b.arm(0.5, label=f"w{w}", depth=depth, width=w, weight_init_kind="scaled_normal", weight_init_spec=spec,
              n_in=n_in, input_sq_norm=x2, bias_var=0.0, n_classes=10, grads=list(10 ** (sq / 2)))
    res = b.results()
    res.grads["grad_norm_mean"] = res.grads["grad_abs_mean"]
    o = outcome("narrow-theory", res)
    assert o.verdict == "reproduced" and o.numbers["diff"] == pytest.approx(2.0, abs=1e-6)
    assert o.numbers["error_wide"] == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------ the Jacobian
def test_hidden_jacobian_matches_the_product_of_layer_maps_and_is_isometric_when_orthogonal():
    net = networks.mlp(6, 16, 5, activation="tanh")
    x = np.random.default_rng(1).normal(0, 0.1, (3, 5)).astype(np.float32)
    for law, isometric in (("orthogonal(sigma_w2=1)", True), ("normal(sigma_w2=1)", False)):
        p = loop.initial_params(net, Member(seed=2, weight_init=init.parse(law), bias_init=init.zeros()))
        jac = np.asarray(networks.hidden_jacobian(net, p, x), np.float64)
        w = [np.asarray(p[f"dense{i}"]["w"], np.float64) for i in range(1, 7)]  # NumPy reference: Π D_l W_lᵀ
        for n in range(len(x)):
            h, ref = np.tanh(x[n].astype(np.float64) @ w[0]), np.eye(16)
            for wl in w[1:]:
                z = h @ wl
                ref = (1 - np.tanh(z) ** 2)[:, None] * wl.T @ ref
                h = np.tanh(z)
            np.testing.assert_allclose(jac[n], ref, atol=2e-5)
        sv = np.linalg.svd(jac, compute_uv=False)
        # orthogonal at σ_w² = 1 with small pre-activations: every singular value near 1; Gaussian spreads them
        assert (sv.min() > 0.9 and sv.max() < 1.0 + 1e-5) if isometric else (sv.min() < 0.1 and sv.max() > 1.5)
    with pytest.raises(ValueError, match="at least 2 hidden layers"):
        networks.hidden_jacobian(networks.mlp(1, 8, 5), p, x)


@pytest.mark.parametrize("residual,norm,alpha", [(0.5, "none", 1.0), (0.0, "layer", 1.0), (0.3, "layer", 2.0)])
def test_hidden_jacobian_chained_per_layer_equals_the_whole_net_differentiated(residual, norm, alpha):
    """The compiled layer-by-layer chain against reverse mode through the unrolled net, for the
    blocks whose layer Jacobian is not D_l W_l (residual branch, LayerNorm) and for α ≠ 1."""
    import jax

    net = networks.build("mlp", (5,), depth=5, width=12, activation="sigmoid", n_out=3, residual=residual, norm=norm)
    p = loop.initial_params(net, Member(seed=4, weight_init=init.parse("normal(sigma_w2=2)"), bias_init=init.zeros()))
    x = np.random.default_rng(3).normal(0, 1.0, (4, 5)).astype(np.float32)
    phi = activations.get(net.activation)
    hidden = net.hidden_layers
    _, h1 = net.layer_step(hidden[0], p[hidden[0].name], x, phi, alpha)

    def unrolled(h):
        h = h[None]
        for layer in hidden[1:]:
            _, h = net.layer_step(layer, p[layer.name], h, phi, alpha)
        return h[0]

    ref = np.asarray(jax.vmap(jax.jacrev(unrolled))(h1), np.float64)
    jac = np.asarray(networks.hidden_jacobian(net, p, x, alpha), np.float64)
    assert np.abs(ref).max() > 1e-3  # a map worth comparing, not a vanished one
    np.testing.assert_allclose(jac, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())


# ------------------------------------------------------------------ figures
def test_figures_draw_from_the_tables(tmp_path):
    from vglab.report import figures, why_figures

    fig = why_figures.remedies_vs_depth(_nets(BASE, depths=(20, 50)))
    ax = fig.axes[0]  # tanh, width 8, accuracy
    lines = {c.get_label(): c.lines[0] for c in ax.containers}  # errorbar containers: (data line, caps, bars)
    xy = lambda name: np.asarray([lines[name].get_xdata(), lines[name].get_ydata()], float).T  # noqa: E731
    np.testing.assert_allclose(xy("orthogonal critical"), [[20, 0.85], [50, 0.85]])
    np.testing.assert_allclose(xy("none"), [[20, 0.10], [50, 0.10]])
    assert all(p.exists() for p in figures.save(fig, tmp_path / "depth"))
    b = Builder(PRESET)
    for kind, spec in (("scaled_orthogonal", "orthogonal(sigma_w2=1)"), ("scaled_normal", "normal(sigma_w2=1)")):
        b.arm(0.5, label=kind, depth=8, width=16, weight_init_kind=kind, weight_init_spec=spec, bias_init_spec="zeros",
              n_in=5, input_sq_norm=0.05, bias_var=0.0, n_classes=10, residual=0.0, norm="none")
    spectra = why.jacobian_spectra(b.results(), ("tanh", 8, 16))
    assert spectra["orthogonal critical"].size == 16 * why.JACOBIAN_EXAMPLES
    assert np.all(np.abs(np.log10(spectra["orthogonal critical"])) < 0.1)  # isometric
    assert np.log10(spectra["Gaussian critical"]).min() < -1  # spread
    fig = why_figures.jacobian_spectra(b.results())
    xs = {ln.get_label(): ln.get_xdata() for ln in fig.axes[0].get_lines() if not ln.get_label().startswith("_")}
    np.testing.assert_allclose(xs["orthogonal critical"], np.sort(np.log10(spectra["orthogonal critical"])))


def test_the_page_shows_the_deep_claims_and_figures(tmp_path):
    from vglab.report import html

    b = Builder(PRESET)
    res = _nets(BASE)
    b.runs, b.epochs = res.runs.to_dict("records"), res.epochs.to_dict("records")
    out = b.write(tmp_path / PRESET)
    page = html.write_report(out).read_text()
    for claim in ("isometry", "kernel-shaped-trains", "alpha-below-remedies", "narrow-theory", "remedy-factors"):
        assert f'id="claim-{claim}"' in page
    assert 'id="claim-trainable-depth"' not in page and (out / "figures" / "remedies_vs_depth.png").exists()
    # the synthetic runs record no gradients: the diagnosis and the factors' claim say so, and what to record
    assert "KeyError" not in page and "holds no gradient records" in page and "with the grad_norm probe" in page
    assert "hold no gradient records" in page and "with the grad_moments probe" in page
