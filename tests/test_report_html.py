"""Pages (vglab.report.html): self-contained, with runs, figures and the claim table."""

import re

import pytest
from report_data import copy_of, report_dirs  # noqa: F401  (session fixture)

from vglab.report import write_index, write_report


def _external_refs(page: str) -> list[str]:
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    refs += re.findall(r"url\(([^)]*)\)", page)
    return [r for r in refs if re.match(r"^\s*(https?:|//|ftp:)", r)]


@pytest.fixture(scope="module")
def written(report_dirs, tmp_path_factory):
    """Editable copies of two fixture directories; the many-layers report written once."""
    root = tmp_path_factory.mktemp("html")
    dirs = {p: copy_of(p, root / "results") for p in ("large-params", "many-layers")}
    return root, dirs, write_report(dirs["many-layers"])


def test_report_is_self_contained_and_complete(written):
    _, dirs, page_path = written
    out = dirs["many-layers"]
    assert page_path == out / "report.html"
    page = page_path.read_text()
    assert not _external_refs(page)
    assert "<script" not in page.lower()
    imgs = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(imgs) >= 6 and all(s.startswith("data:image/png;base64,") for s in imgs)
    for name in ("learning_curves", "gradient_flow", "theory_overlay", "regime_diagnosis", "gradient_distributions"):
        assert (out / "figures" / f"{name}.png").exists() and (out / "figures" / f"{name}.svg").exists()
        assert f'id="fig-{name}"' in page
    assert 'id="claim-deep-chance"' in page and 'id="claim-why-vanish"' in page
    assert "final val acc mean ± std" in page
    assert "Mean-field theory vs measured" in page
    assert 'preset = &quot;many-layers&quot;' in page  # the configuration (escaped)
    assert "jax" in page  # versions (meta.json)


def test_index_lists_every_experiment_and_claim(written):
    root, dirs, many_page = written
    before = many_page.stat().st_mtime_ns
    index = write_index(list(dirs.values()), root / "site")
    assert index == root / "site" / "index.html"
    page = index.read_text()
    assert not _external_refs(page)
    assert (dirs["large-params"] / "report.html").exists()  # written because it was missing
    assert many_page.stat().st_mtime_ns == before  # up to date: not rewritten
    for d in dirs.values():
        assert f'href="../results/{d.name}/report.html"' in page
    from vglab.report.claims import CLAIMS

    for c in CLAIMS:
        assert f'id="claim-{c.id}"' in page
    assert page.count(">not run<") >= 6  # regularization, r-sweep, vs-relu, rescaling-by-init, combined: not run


def test_report_of_an_experiment_without_completed_runs(tmp_path):
    out = tmp_path / "empty"
    (out / "runs" / "x").mkdir(parents=True)  # a run that never finished (no DONE)
    (out / "experiment.toml").write_text('preset = "many-layers"\ndataset = "digits"\n')
    page = write_report(out).read_text()
    assert "No completed runs" in page
    assert page.count(">not run<") >= 3  # the many-layers claims cannot be checked


def test_index_can_leave_the_pages_to_the_report_writer(report_dirs, tmp_path):
    """`reproduce` writes the index while its pool still draws the pages: the index then
    links them without drawing them itself."""
    import shutil

    d = tmp_path / "regularization"
    shutil.copytree(report_dirs["regularization"], d, ignore=shutil.ignore_patterns("report.html", "figures"))
    index = write_index([d], tmp_path / "index.html", refresh_pages=False)
    assert not (d / "report.html").exists()
    assert 'href="regularization/report.html"' in index.read_text()
