"""Pages (vglab.report.html): offline and relative, with runs, figures, the claim table,
a CSV of the summary, a link back to the index; written atomically."""

import re
from pathlib import Path

import pandas as pd
import pytest
from report_data import copy_of, report_dirs  # noqa: F401  (session fixture)

from vglab.report import write_index, write_report


def _external_refs(page: str) -> list[str]:
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    refs += re.findall(r"url\(([^)]*)\)", page)
    return [r for r in refs if re.match(r"^\s*(https?:|//|ftp:)", r)]


@pytest.fixture(scope="module")
def written(report_dirs, tmp_path_factory):
    """Editable copies of two fixture directories; the many-layers report written once, with an
    index.html beside the folders (as `vglab reproduce` leaves it), which the page links back to.
    Each page costs ~10 CPU-s (its figures): the tests below read this one where they can."""
    root = tmp_path_factory.mktemp("html")
    dirs = {p: copy_of(p, root / "results") for p in ("large-params", "many-layers")}
    (root / "results" / "index.html").write_text("<!DOCTYPE html><html><body>an index</body></html>\n")
    return root, dirs, write_report(dirs["many-layers"])


def _local_refs(page: str) -> list[str]:
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"#][^"]*)"', page)
    return [r for r in refs if not re.match(r"^\s*(https?:|//|ftp:|data:)", r)]


def test_report_is_offline_relative_and_complete(written):
    _, dirs, page_path = written
    out = dirs["many-layers"]
    assert page_path == out / "report.html"
    page = page_path.read_text()
    assert not _external_refs(page)
    assert "<script" not in page.lower() and "base64" not in page
    assert str(out.resolve()) not in page and str(out) not in page  # no absolute path of the results
    imgs = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(imgs) >= 6 and all(s.startswith("figures/") and s.endswith(".png") for s in imgs)
    for ref in _local_refs(page):  # every relative link resolves
        assert (out / ref).exists(), ref
    for name in ("learning_curves", "gradient_flow", "theory_overlay", "regime_diagnosis", "gradient_distributions"):
        assert (out / "figures" / f"{name}.png").exists() and f'id="fig-{name}"' in page
    assert not list((out / "figures").glob("*.svg"))  # each figure stored once: PNG only by default
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(Path(s).name for s in imgs)
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
    written_page = (dirs["large-params"] / "report.html").read_text()  # written because it was missing,
    assert '<a href="../../site/index.html">' in written_page  # linking back to this index (not to the one beside)
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


def test_report_of_a_reproduce_root_redraws_every_page_and_the_index(report_dirs, tmp_path, monkeypatch):
    """`vglab report ROOT` on a `vglab reproduce` root: every experiment's page redrawn (by
    `write_report`, whose pages the tests above check), an up to date one too, linking back to
    the index, and the index over them in reproduce's order; a folder that is neither an
    experiment's nor a root is refused, naming the roots inside it."""
    from typer.testing import CliRunner

    from vglab.cli import app
    from vglab.report import html

    root = tmp_path / "digits"
    dirs = {p: copy_of(p, root) for p in ("many-layers", "r-sweep")}  # reproduce's order is not by name
    (dirs["many-layers"] / "report.html").write_text("<p>an older vglab's page</p>")
    assert html.is_fresh(dirs["many-layers"])  # so `reproduce` would keep it; `report` redraws it
    drawn = []

    def draw(d, **kw):  # the page itself costs seconds (test_report_is_offline_relative_and_complete)
        drawn.append((d, kw))
        (d / "report.html").write_text("<p>redrawn</p>")
        return d / "report.html"

    monkeypatch.setattr(html, "write_report", draw)
    r = CliRunner().invoke(app, ["report", str(root), "--workers", "1", "--quiet", "--svg"])
    assert r.exit_code == 0, r.output
    index = root / "index.html"
    assert r.output.strip() == str(index)
    assert sorted(drawn) == sorted((d, {"figure_formats": ("png", "svg"), "index": index}) for d in dirs.values())
    page = index.read_text()
    assert page.index('href="r-sweep/report.html"') < page.index('href="many-layers/report.html"')
    assert 'id="claim-best-r"' in page and "2 experiments" in page

    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(app, ["report", str(tmp_path / "empty")])
    assert r.exit_code == 2 and "it holds neither runs/ nor experiment folders" in r.output, r.output
    r = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 2 and f"it holds the reproduce roots {root}: give one of them" in r.output, r.output


def test_summary_csv_is_written_and_linked(written):
    _, dirs, page_path = written
    out = dirs["many-layers"]
    assert 'href="summary.csv"' in page_path.read_text()
    csv = pd.read_csv(out / "summary.csv").set_index("label")
    from vglab.results.store import load

    # independently of report.tables: each run's last recorded val_acc, per label over its seeds
    res = load(out)
    last = res.epochs.sort_values("epoch").groupby("run_id").tail(1)[["run_id", "val_acc"]]
    final = res.runs[["run_id", "label"]].merge(last, on="run_id")
    want = final.groupby("label")["val_acc"].agg(["mean", lambda v: v.std(ddof=0), "min", "max", "size"])
    want.columns = ["mean", "std", "min", "max", "runs"]
    assert sorted(csv.index) == sorted(want.index) and len(want) >= 2
    assert (csv["diverged"] == 0).all()  # (else the diverged runs leave the statistics)
    for label, w in want.iterrows():
        row = csv.loc[label]
        assert row["runs"] == w["runs"] and row["val_acc_mean"] == pytest.approx(w["mean"], abs=1e-6)
        assert row["val_acc_min"] == pytest.approx(w["min"], abs=1e-6)
        assert row["val_acc_max"] == pytest.approx(w["max"], abs=1e-6)
        if w["runs"] > 1:
            assert row["val_acc_std"] == pytest.approx(w["std"], abs=1e-6), label
        else:
            assert pd.isna(row["val_acc_std"]), label


def test_pages_link_back_to_the_index(written):
    """An index.html beside the folders: linked (a given index= instead:
    test_index_lists_every_experiment_and_claim; none: no link, test_one_seed_shows_no_spread)."""
    _, _, page_path = written
    assert '<a href="../index.html">' in page_path.read_text()


def test_one_seed_shows_no_spread(report_dirs, tmp_path):
    import shutil

    from vglab.results.store import load

    out = copy_of("large-params", tmp_path)
    res = load(out)
    for rid in res.runs.loc[res.runs["seed"] != 0, "run_id"]:
        shutil.rmtree(out / "runs" / rid)
    page = write_report(out).read_text()
    runs = page.split('id="runs"')[1].split("</table>")[0]
    body = runs.split("<tbody>")[1]
    rows = body.split("<tr>")[1:]
    assert rows and "±" not in body and all('<td class="num">–</td>' in r for r in rows)  # no spread, no min – max
    assert "± 0.000" not in page and "± nan" not in page
    assert not (tmp_path / "index.html").exists() and '<nav class="up">' not in page  # no index: no link back


def test_a_custom_experiment_lists_no_reference_claims(report_dirs, tmp_path):
    import shutil

    out = tmp_path / "my-study"
    shutil.copytree(report_dirs["large-params"], out, ignore=shutil.ignore_patterns("report.html", "figures"))
    (out / "experiment.toml").write_text('name = "my-study"\ndataset = "digits"\n')
    page = write_report(out).read_text()
    assert "not one of the reference study" in page and ">not run<" not in page and 'id="claim-' not in page
    index = write_index([out], tmp_path / "index.html").read_text()
    assert "<h1>vglab — my-study on digits</h1>" in index and 'id="claim-' not in index


def test_index_title_names_what_was_run(written):
    root, dirs, _ = written
    page = write_index(list(dirs.values()), root / "t" / "index.html", refresh_pages=False).read_text()
    assert "<h1>vglab — large-params, many-layers on digits</h1>" in page


def test_diverged_runs_are_shown_as_diverged(report_dirs, tmp_path):
    """A run frozen at divergence: no accuracy in the runs table (and no "+nan" in the
    theory table when every run of a configuration diverged); the claims say how they count it."""
    import json

    from vglab.results.store import load, run_dir

    out = copy_of("many-layers", tmp_path)
    res = load(out)
    deep = res.runs[(res.runs["depth"] == 4) & (res.runs["alpha"] == 1.0)]
    for rid in deep["run_id"]:
        f = run_dir(out, rid) / "run.json"
        row = json.loads(f.read_text())
        row["diverged_epoch"] = 2
        f.write_text(json.dumps(row))
        for name in ("grads",):
            t = pd.read_parquet(run_dir(out, rid) / f"{name}.parquet")
            t.loc[t["epoch"] >= 1, ["grad_norm_mean", "grad_std", "grad_mean", "grad_abs_mean"]] = float("nan")
            t.to_parquet(run_dir(out, rid) / f"{name}.parquet", index=False)
    page = write_report(out).read_text()
    label = deep["label"].iloc[0]
    row = [r for r in page.split("<tr>") if f"<td>{label}</td>" in r][0]
    assert "all diverged (epoch 2, 2)" in row and "0." not in row.split("</td>", 2)[2].split("diverged")[0]
    assert not re.search(r"[+-]?\bnan\b", page, re.I)
    theory = page.split("Mean-field theory vs measured")[1].split("</table>")[0]
    assert "every run diverged" in theory
    assert "freezes it at its last finite parameters" in page


KILLER = """
import sys
from pathlib import Path
from vglab.report import write_report
marks = Path(sys.argv[2])
for i in range(50):
    with marks.open("a") as m:
        m.write(f"start {i}\\n")
    write_report(sys.argv[1], figure_formats=("png", "svg"))
    with marks.open("a") as m:
        m.write(f"end {i}\\n")
"""


def _complete(path: Path) -> bool:
    data = path.read_bytes()
    if path.suffix == ".png":
        return data[:8] == b"\x89PNG\r\n\x1a\n" and data[-8:-4] == b"IEND"
    if path.suffix == ".svg":
        return data.rstrip().endswith(b"</svg>")
    return data.rstrip().endswith(b"</html>")


def test_svg_on_request_and_a_kill_while_writing_leaves_only_complete_files(report_dirs, tmp_path):
    """SVG copies on request (and the next PNG-only page removes them: stale figures go), and
    kill -9 at many moments of report writing: every figure and page on disk is complete
    and every link of the page resolves (temporary files are hidden, and the next write
    removes those of dead writers). The writer marks each write's start and end: at least
    3 of the 5 kills must land inside a write, or the test would check finished files only.
    (One test: the page before the kills is the SVG one, the page after them the PNG-only one;
    each page costs ~10 CPU-s.)"""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = copy_of("many-layers", tmp_path)
    write_report(out, figure_formats=("png", "svg"))
    svgs = sorted(p.stem for p in (out / "figures").glob("*.svg"))
    assert svgs and svgs == sorted(p.stem for p in (out / "figures").glob("*.png"))
    assert 'href="figures/learning_curves.svg"' in (out / "report.html").read_text()
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    inside = []  # the kills that came while a write was under way (its start marked, its end not)
    # (a writer does not start JAX, so from its first moment it draws and saves figures; the kills
    # spread over its first ~3 s, ~8 figure files of the PNG+SVG page, before it ends: ~1 CPU-s a file)
    for delay in (0.2, 0.8, 1.5, 2.3, 3.2):
        marks = tmp_path / f"marks-{delay}"
        proc = subprocess.Popen([sys.executable, str(script), str(out), str(marks)], env=env)
        t0 = time.monotonic()
        while not marks.exists() and proc.poll() is None and time.monotonic() - t0 < 120:
            time.sleep(0.02)  # the writer has imported and started its first write
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        inside += [delay] if marks.exists() and marks.read_text().splitlines()[-1].startswith("start") else []
        visible = [p for p in (out / "figures").iterdir() if not p.name.startswith(".")]
        assert visible and all(p.stat().st_size > 0 and _complete(p) for p in visible), delay
        page = (out / "report.html")
        assert _complete(page)
        for ref in _local_refs(page.read_text()):
            assert (out / ref).exists(), (delay, ref)
    assert len(inside) >= 3, inside  # else the checks above saw finished writes only
    write_report(out)  # PNG only again: the SVGs of the earlier pages go, and a dead writer's temporaries
    assert not list((out / "figures").glob("*.svg")) and (out / "figures" / "learning_curves.png").exists()
    assert not [p for p in (out / "figures").iterdir() if p.name.startswith(".")]


FIXTURE_IMPORTS = """
import sys
from pathlib import Path
import report_data
runs = report_data.train([report_data.Group(1, 4, [report_data.Arm()], seeds=(0,))], epochs=1, train_size=64)
report_data.write(Path(sys.argv[1]), "large-params", runs, epochs=1, train_size=64)
print("\\n".join(m.__file__ for name, m in list(sys.modules.items()) if name.startswith("vglab")))
"""


def test_the_report_fixture_cache_key_covers_every_module_that_builds_it(tmp_path):
    """The fixture is kept between sessions under a hash of its sources (report_data._sources):
    every vglab module that training and storing it imports must be one of them, or an edit
    to that module serves stale data (a hand-kept list had left out nn/formulas.py)."""
    import os
    import subprocess
    import sys

    import report_data

    here = Path(report_data.__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), *sys.path])}
    proc = subprocess.run([sys.executable, "-c", FIXTURE_IMPORTS, str(tmp_path / "x")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    root = here.parent
    used = {Path(f).resolve().relative_to(root).as_posix() for f in proc.stdout.split()}
    assert "src/vglab/train/loop.py" in used and "src/vglab/results/store.py" in used  # it trained and stored
    assert used <= set(report_data._sources()), sorted(used - set(report_data._sources()))
