"""Mean-field fixed points and depth scales (vglab.report.theory: q*, χ_1, the correlation
map, c*, ξ_c, 6 ξ_c) against independent computations: Monte Carlo samples of the Gaussian
expectations, wide random tanh networks simulated in numpy, closed forms (relu), and the
published critical lines (Poole et al. 2016; Schoenholz et al. 2017).

Monte Carlo bounds are 5 standard errors (fixed seeds): a correct implementation fails
one such check with probability ~6e-7.
"""

import math

import numpy as np
import pytest

from vglab.report import theory

ORDERED = ("tanh", 1.0, 1.2, 0.05)  # (activation, alpha, sigma_w2, sigma_b2): chi_1 < 1
CHAOTIC = ("tanh", 1.0, 3.0, 0.05)  # chi_1 > 1, 0 < c* < 1
RESCALED_CHAOTIC = ("tanh", 2.0, 2.0, 0.05)


# ---------------------------------------------------------------- q*, exact cases
@pytest.mark.parametrize("name, alpha, sw, sb", [ORDERED, CHAOTIC, RESCALED_CHAOTIC, ("sigmoid", 1.0, 3.0, 0.1),
                                                 ("arctan", 1.0, 2.0, 0.05), ("softsign", 1.5, 4.0, 0.2),
                                                 ("tanh", 1.0, 800.0, 100.0)])
def test_q_star_is_the_fixed_point_plain_iteration_reaches(name, alpha, sw, sb):
    q = theory.q_star(name, alpha, sw, sb)
    assert theory.q_map(q, name, alpha, sw, sb) == pytest.approx(q, rel=1e-11)
    it = 1.0
    for _ in range(3000):  # away from the critical line plain iteration converges geometrically
        it = theory.q_map(it, name, alpha, sw, sb)
    assert it == pytest.approx(q, rel=1e-9)


def test_relu_closed_forms():
    """relu: q_map(q) = σ_w² q/2 + σ_b², so q* = σ_b²/(1 − σ_w²/2) for σ_w² < 2 and none above;
    χ_1 = σ_w²/2 at any q; the correlation map is the arc-cosine kernel (Cho & Saul 2009):
    E[relu(u1) relu(u2)] = q (√(1−c²) + (π − arccos c) c) / 2π, E[relu'(u1) relu'(u2)] = (π − arccos c)/2π."""
    q = theory.q_star("relu", 1.0, 1.5, 0.1)
    assert q == pytest.approx(0.1 / (1 - 0.75), rel=1e-11)
    assert theory.chi_1("relu", 1.0, 1.5, 0.1) == pytest.approx(0.75, rel=1e-12)
    d = theory.depth_scales("relu", 1.0, 1.5, 0.1)
    assert d.phase == "ordered" and d.xi_c == pytest.approx(-1 / math.log(0.75), rel=1e-11)
    for c in (-0.7, 0.0, 0.3, 0.9, 0.999):
        th = math.acos(c)
        k = q * (math.sqrt(1 - c * c) + (math.pi - th) * c) / (2 * math.pi)
        assert theory.c_map(c, "relu", 1.0, 1.5, 0.1, q=q) == pytest.approx((1.5 * k + 0.1) / q, rel=1e-9, abs=1e-12)
        assert theory.chi_c(c, "relu", 1.0, 1.5, 0.1, q=q) == pytest.approx(1.5 * (math.pi - th) / (2 * math.pi), rel=1e-9)
    assert theory.q_star("relu", 1.0, 3.0, 0.1) == math.inf
    d = theory.depth_scales("relu", 1.0, 3.0, 0.1)
    assert d.phase == "unbounded" and math.isnan(d.xi_c) and math.isnan(d.trainable_depth)
    with pytest.raises(ValueError, match="no finite fixed point"):
        theory.c_map(0.5, "relu", 1.0, 3.0, 0.1)


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "arctan", "softsign", "relu"])
def test_two_point_quadrature_against_monte_carlo(name):
    """E[f(u1) f(u2)] for f = g and g', including q far above the activation's scale and c near ±1."""
    rng = np.random.default_rng(3)
    z1, z2 = rng.standard_normal(300_000), rng.standard_normal(300_000)
    g, dg = theory.activation(name, 1.5)
    for q in (0.01, 2.0, 400.0):
        for c in (-0.6, 0.0, 0.5, 0.97):
            u1, u2 = math.sqrt(q) * z1, math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2)
            for f in (g, dg):
                s = f(u1) * f(u2)
                quad = theory.gauss_expect2(f, f, q, c, scale=1.5, smooth=name not in theory.KINKED)
                assert abs(quad - s.mean()) < 5 * s.std() / math.sqrt(s.size), (name, q, c, quad, s.mean())


def test_the_correlation_map_is_identity_at_c_equal_one():
    for args in (ORDERED, CHAOTIC, RESCALED_CHAOTIC):
        assert theory.c_map(1.0, *args) == pytest.approx(1.0, abs=1e-12)
        assert theory.chi_c(1.0, *args) == pytest.approx(theory.chi_1(*args), rel=1e-10)


# ------------------------------------------- chi_1, c*, xi_c against Monte Carlo samples
@pytest.mark.parametrize("args", [ORDERED, CHAOTIC, RESCALED_CHAOTIC])
def test_fixed_points_chi_and_six_xi_against_monte_carlo(args):
    """With z sampled (1e6 pairs): q* and c* are fixed points of the sampled maps, and the
    sampled χ_1 and χ_c give the predicted 6 ξ_c within 5 standard errors (propagated through
    ξ = −1/ln χ: se_ξ = se_χ / (χ ln² χ))."""
    name, alpha, sw, sb = args
    d = theory.depth_scales(name, alpha, sw, sb)
    g, dg = theory.activation(name, alpha)
    rng = np.random.default_rng(11)
    n = 1_000_000
    z1, z2 = rng.standard_normal(n), rng.standard_normal(n)

    def mc(x):
        return x.mean(), x.std() / math.sqrt(n)

    u = math.sqrt(d.q_star) * z1
    m, se = mc(sw * g(u) ** 2 + sb)
    assert abs(m - d.q_star) < 5 * se, ("q*", m, se, d.q_star)
    chi1, se1 = mc(sw * dg(u) ** 2)
    assert abs(chi1 - d.chi_1) < 5 * se1, ("chi_1", chi1, se1, d.chi_1)
    if d.phase == "ordered":
        assert d.c_star == 1.0 and d.chi_c == d.chi_1
        chi, se_chi = chi1, se1
    else:
        assert d.phase == "chaotic" and 0.0 < d.c_star < 1.0 and d.chi_1 > 1
        c = d.c_star
        u2 = math.sqrt(d.q_star) * (c * z1 + math.sqrt(1 - c * c) * z2)
        m, se = mc((sw * g(u) * g(u2) + sb) / d.q_star)
        assert abs(m - c) < 5 * se, ("c*", m, se, c)
        chi, se_chi = mc(sw * dg(u) * dg(u2))
        assert abs(chi - d.chi_c) < 5 * se_chi, ("chi_c", chi, se_chi, d.chi_c)
        assert chi + 5 * se_chi < 1  # c* attracts: the map's slope there is below 1
    six_xi = -6.0 / math.log(chi)
    se_six_xi = 6.0 * se_chi / (chi * math.log(chi) ** 2)
    assert abs(d.trainable_depth - six_xi) < 5 * se_six_xi, (d.trainable_depth, six_xi, se_six_xi)


# ------------------------------------------------ a wide random network, simulated
def _random_tanh_networks(sigma_w2, sigma_b2, alpha, q0, *, width, depth, nets, inputs, seed):
    """Forward `inputs` random inputs (pre-activations of variance q0) through `nets`
    independent random tanh networks (W ~ N(0, σ_w²/width), b ~ N(0, σ_b²)), then back-propagate
    a random error through the same weights. Returns per network and layer the measured
    pre-activation variance q_l and ‖δ_l‖² (summed over the inputs)."""
    rng = np.random.default_rng(seed)
    q = np.empty((nets, depth))
    delta_sq = np.empty((nets, depth))
    sw, sb = np.float32(math.sqrt(sigma_w2 / width)), np.float32(math.sqrt(sigma_b2))
    for k in range(nets):
        h = rng.standard_normal((width, inputs), dtype=np.float32) * np.float32(math.sqrt(q0))
        hs, ws = [], []
        for layer in range(depth):
            hs.append(h)
            q[k, layer] = np.mean(np.square(h, dtype=np.float64))
            w = rng.standard_normal((width, width), dtype=np.float32) * sw
            ws.append(w)
            h = w @ (alpha * np.tanh(h / alpha)) + rng.standard_normal((width, 1), dtype=np.float32) * sb
        d = rng.standard_normal((width, inputs), dtype=np.float32)
        for layer in range(depth - 1, -1, -1):
            d = (1 - np.tanh(hs[layer] / alpha) ** 2) * (ws[layer].T @ d)
            delta_sq[k, layer] = np.sum(np.square(d, dtype=np.float64))
    return q, delta_sq


@pytest.mark.parametrize("args", [ORDERED, RESCALED_CHAOTIC])
def test_wide_random_network_measures_q_star_and_the_gradient_decay(args):
    """64 random networks of width 250 (seed fixed): the measured pre-activation variance
    (layers 4..19) is q*, the per-layer ratio ‖δ_l‖²/‖δ_{l+1}‖² is χ_1 and the slope of
    ln ‖δ_l‖² over the layers is −ln χ_1, which in the ordered phase is 1/ξ_c: the measured
    6 ξ_c is the predicted one. Bounds: 5 standard errors over the networks plus 2/width
    (relative) for the O(1/width) corrections to the mean-field limit; measured deviations
    were within 3 standard errors at widths 250, 500 and 1000 when this test was written."""
    name, alpha, sw, sb = args
    d = theory.depth_scales(name, alpha, sw, sb)
    width, nets, depth, burn = 250, 64, 20, 4
    q, dsq = _random_tanh_networks(sw, sb, alpha, d.q_star, width=width, depth=depth, nets=nets, inputs=4, seed=5)
    allow = 2.0 / width

    def check(per_net, want, what):
        m, se = per_net.mean(), per_net.std(ddof=1) / math.sqrt(nets)
        assert abs(m - want) < 5 * se + allow * abs(want), (what, m, se, want)
        return m, se

    check(q[:, burn:].mean(1), d.q_star, "q*")
    check((dsq[:, :-1] / dsq[:, 1:])[:, burn:].mean(1), d.chi_1, "chi_1")
    layers = np.arange(burn, depth)
    slopes = np.array([np.polyfit(layers, np.log(dsq[k, burn:]), 1)[0] for k in range(nets)])
    slope, se = check(slopes, -math.log(d.chi_1), "-ln chi_1")
    if d.phase == "ordered":  # ξ_c = ξ_∇ = 1/slope
        measured = 6.0 / slope
        se_measured = 6.0 * se / slope ** 2
        assert abs(measured - d.trainable_depth) < 5 * se_measured + allow * d.trainable_depth
    else:  # chaotic: gradients grow towards the input, by e every |ξ_∇| layers
        assert d.xi_grad < 0 and slope < 0


# ------------------------------------------------------ the critical line, known facts
def test_tanh_without_biases_is_critical_at_sigma_w2_one():
    """σ_b² = 0: q* = 0 and χ_1 = σ_w² below σ_w² = 1 (ordered; ξ_c = −1/ln σ_w²), the
    critical point at 1 (ξ_c infinite), chaotic above with c* = 0 (tanh is odd)."""
    assert theory.critical_sigma_w2("tanh", 1.0, 0.0) == pytest.approx(1.0, abs=1e-6)
    d = theory.depth_scales("tanh", 1.0, 0.9, 0.0)
    assert d.phase == "ordered" and d.q_star == 0.0 and d.chi_1 == pytest.approx(0.9, rel=1e-12)
    assert d.xi_c == pytest.approx(-1 / math.log(0.9), rel=1e-10)
    d = theory.depth_scales("tanh", 1.0, 1.0, 0.0)
    assert d.phase == "critical" and d.xi_c == math.inf and d.trainable_depth == math.inf
    d = theory.depth_scales("tanh", 1.0, 1.5, 0.0)
    assert d.phase == "chaotic" and d.q_star > 0 and d.chi_1 > 1 and d.c_star == 0.0
    assert 0 < d.chi_c < 1 and math.isfinite(d.xi_c)


def test_tanh_critical_line_with_biases():
    """Schoenholz et al. (2017, their Fig. 1 and training experiments, σ_b² = 0.05) place the
    order-to-chaos transition of tanh near σ_w² ≈ 1.76: χ_1 crosses 1 between 1.75 and 1.77,
    and the critical σ_w² rises with σ_b² (biases push q* up and tanh into saturation)."""
    assert theory.chi_1("tanh", 1.0, 1.75, 0.05) < 1 < theory.chi_1("tanh", 1.0, 1.77, 0.05)
    crit = theory.critical_sigma_w2("tanh", 1.0, 0.05)
    assert 1.75 < crit < 1.77
    assert theory.chi_1("tanh", 1.0, crit, 0.05) == pytest.approx(1.0, abs=1e-8)
    lines = [theory.critical_sigma_w2("tanh", 1.0, sb) for sb in (0.0, 0.01, 0.05, 0.1, 0.3)]
    assert all(a < b for a, b in zip(lines, lines[1:]))
    # χ_1 rises with σ_w² (what critical_sigma_w2's bracketing assumes), and ξ_c peaks at the line
    w = np.linspace(0.2, 6.0, 59)
    chis = [theory.chi_1("tanh", 1.0, v, 0.05) for v in w]
    assert all(a < b for a, b in zip(chis, chis[1:]))
    xi = {dw: theory.depth_scales("tanh", 1.0, crit + dw, 0.05).xi_c for dw in (-0.3, -0.01, 0.01, 0.3)}
    assert xi[-0.01] > 10 * xi[-0.3] and xi[0.01] > 10 * xi[0.3]


def test_the_study_deep_net_is_far_beyond_its_trainable_depth():
    """Width-8 tanh at N(0, std=0.05): σ_w² = 8 × 0.0025 = 0.02, σ_b² = 0.0025. q* ≈ σ_b²/(1 − σ_w²)
    is tiny, so χ_1 ≈ σ_w² and 6 ξ_c ≈ −6/ln 0.02 ≈ 1.5 layers, against the study's 20."""
    d = theory.depth_scales("tanh", 1.0, 0.02, 0.0025)
    assert d.phase == "ordered"
    assert d.q_star == pytest.approx(0.0025 / 0.98, rel=1e-3)
    assert d.trainable_depth == pytest.approx(-6 / math.log(0.02), rel=1e-2)
    assert d.trainable_depth < 2


# ------------------------------------------------------- rescaling and the grid helper
@pytest.mark.parametrize("alpha", [0.5, 2.0, 5.0])
@pytest.mark.parametrize("sw, sb", [(1.2, 0.05), (3.0, 0.05), (0.02, 0.0025), (2.0, 0.3)])
def test_rescaled_depth_scales_are_the_standard_ones_at_bias_variance_over_alpha_squared(alpha, sw, sb):
    """With ĥ = h/α the α-network is the standard one with biases b/α (vglab.nn.rescaling):
    q*(α, σ_w², σ_b²) = α² q*(1, σ_w², σ_b²/α²), and χ_1, c*, χ_c, ξ_c are the same."""
    a = theory.depth_scales("tanh", alpha, sw, sb)
    s = theory.depth_scales("tanh", 1.0, sw, sb / alpha ** 2)
    assert a.phase == s.phase
    assert a.q_star == pytest.approx(alpha ** 2 * s.q_star, rel=1e-9)
    for k in ("chi_1", "c_star", "chi_c", "xi_c"):
        assert getattr(a, k) == pytest.approx(getattr(s, k), rel=1e-9, abs=1e-12), k


def test_depth_scale_grid_matches_pointwise_and_checks_input():
    w = [0.5, 1.5, 2.5]
    grid = theory.depth_scale_grid("tanh", 2.0, w, 0.05)
    for i, v in enumerate(w):
        d = theory.depth_scales("tanh", 2.0, v, 0.05)
        assert grid.phase[i] == d.phase
        assert grid.xi_c[i] == d.xi_c and grid.c_star[i] == d.c_star and grid.q_star[i] == d.q_star
        assert grid.trainable_depth[i] == pytest.approx(6 * d.xi_c)
    with pytest.raises(ValueError, match="1-D sequence"):
        theory.depth_scale_grid("tanh", 1.0, [[1.0, 2.0]], 0.05)
    with pytest.raises(ValueError, match="sigma_w2 must be a finite number > 0"):
        theory.depth_scales("tanh", 1.0, 0.0, 0.05)
    with pytest.raises(ValueError, match="sigma_b2 must be a finite number >= 0"):
        theory.q_star("tanh", 1.0, 1.0, -0.1)
