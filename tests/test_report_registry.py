"""The one registry (issue 27): a preset's TOML says its report section, the claims name their
presets, the instruments' `needs` decide what a page draws. No training: reads TOML and specs."""

import shutil

import pandas as pd
import pytest

from vglab.experiments import presets
from vglab.experiments import runner
from vglab.report import claims, registry, why, why_figures
from vglab.report import figures as F
from vglab.results.store import Info, Results


def _results(spec: dict) -> Results:
    empty = pd.DataFrame({"run_id": []})
    return Results(None, spec, {}, empty, empty, empty, empty)


def test_each_claim_is_checked_on_presets_of_its_own_list_s_section():
    for section, listed in ((registry.REFERENCE, claims.CLAIMS), (registry.WHY, why.WHY_CLAIMS)):
        for c in listed:
            assert {registry.section_of(p) for p in c.presets} == {section}, (c.id, c.presets)
        assert registry.section_claims(section) == tuple(listed)
        assert set(registry.section_presets(section)) == set(presets.in_section(section))
    assert registry.CLAIMS == (*claims.CLAIMS, *why.WHY_CLAIMS)


def test_every_preset_with_a_section_has_claims_and_the_others_have_none():
    named = {p for c in registry.CLAIMS for p in c.presets}
    for name in presets.preset_names():
        rec = presets.preset(name)
        assert (rec.section != "") == (name in named), name
        assert registry.page(name).claims == tuple(c for c in registry.CLAIMS if name in c.presets)
    assert why.PRESETS == presets.in_section("why") and len(why.PRESETS) == 4
    assert registry.page("my-own-spec") == registry.Page("my-own-spec", "", (), False)


def test_the_instruments_needs_decide_which_page_draws_them():
    """A why preset draws only its own instruments; any other page only the standard ones
    (those that need nothing but results: on these empty ones, none of the why figures)."""
    own = _results({"preset": "trainability", "dataset": "digits"})
    drawn = [i.name for i in registry.INSTRUMENTS if i.needs(own) is not None]
    assert drawn and set(drawn) <= {i.name for i in why_figures.INSTRUMENTS}
    plain = _results({"name": "mine", "dataset": "digits"})
    assert all(i.needs(plain) is None for i in why_figures.INSTRUMENTS)
    assert [i.name for i in registry.INSTRUMENTS][:len(F.INSTRUMENTS)] == [i.name for i in F.INSTRUMENTS]


def test_a_new_preset_with_one_claim_is_its_toml_and_one_claims_entry(tmp_path, monkeypatch):
    """What adding a why preset takes: its TOML (with section = "why") in the presets folder and
    one claim naming it; the page, the index's why section and the plan's page estimate follow."""
    folder = tmp_path / "presets"
    shutil.copytree(presets.presets_dir(), folder)
    (folder / "my-why.toml").write_text(
        (folder / "optimizers.toml").read_text().replace('section = "why"', 'section = "why"  # new'))
    monkeypatch.setattr(presets, "presets_dir", lambda: folder)
    presets.preset.cache_clear()
    try:
        new = claims.Claim("my-claim", "A new question.", ("my-why",), "a rule", lambda avail: claims.Outcome("answered", ""))
        monkeypatch.setattr(registry, "CLAIMS", (*registry.CLAIMS, new))
        assert registry.page("my-why") == registry.Page("my-why", "why", (new,), True)
        assert new in registry.section_claims("why") and presets.own_figures("my-why") == presets.own_figures("optimizers")
        drawn = [i.name for i in registry.INSTRUMENTS if i.needs(_results({"preset": "my-why"})) is not None]
        assert drawn == list(presets.own_figures("optimizers"))
    finally:
        presets.preset.cache_clear()


def test_each_own_page_figure_a_preset_lists_is_registered_and_the_plan_prices_it():
    """A preset's TOML `figures` name why instruments (each drawn by some page); the plan's page
    estimate adds a figure priced per configuration (`report_s_per_figure_config`) per configuration."""
    registered = {i.name for i in why_figures.INSTRUMENTS}
    listed = [f for name in presets.preset_names() for f in presets.own_figures(name)]
    assert set(listed) == registered and len(listed) == len(registered)
    for name in presets.preset_names():
        assert presets.own_page(name) == (presets.preset(name).section == "why"), name
    costs = runner.CPU_COSTS
    per = costs.report_s_per_figure_config["jacobian_spectra"]
    page = {"runs": 30, "configs": 10, "layers": 21, "own_page": True, "figures": ["remedies_vs_depth"]}
    with_jacobians = {**page, "figures": ["remedies_vs_depth", "jacobian_spectra"]}
    assert per > 0
    assert runner.report_seconds(with_jacobians, costs) - runner.report_seconds(page, costs) == pytest.approx(10 * per)
    assert runner.report_seconds({**page, "own_page": False}, costs) != runner.report_seconds(page, costs)


def test_results_info_is_typed_and_old_specs_read_with_empty_fields():
    assert _results({"preset": "large-params", "name": "large-params", "dataset": "/d/two.npz"}).info == Info(
        "large-params", "large-params", "/d/two.npz", "", "")
    spec_file = _results({"name": "mine"})
    assert spec_file.info.preset == "" and claims.preset_of(spec_file) == "mine"
    assert claims.preset_of(_results({})) is None
    res = _results({})
    res.cache["x"] = 1
    assert res.cache == {"x": 1} and _results({}).cache == {}


def test_a_section_a_spec_file_does_not_know_is_refused():
    from vglab.experiments.spec import SpecError, load_spec

    with pytest.raises(SpecError, match="section"):
        load_spec({"name": "x", "section": "other", "depth": 1, "width": 4})
