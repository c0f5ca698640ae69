"""The `vglab` command: help, list, show, one-line errors with exit code 2, a real run."""

import json
from pathlib import Path

import pytest
from experiments_helpers import epochs_table, runs_table, vglab_cache, write_spec  # noqa: F401
from typer.testing import CliRunner

from vglab.cli import app

cli = CliRunner()


def invoke(*args):
    return cli.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("cmd", [[], ["list"], ["show"], ["run"], ["reproduce"], ["report"], ["data"],
                                 ["data", "fetch"], ["data", "info"]])
def test_help_everywhere(cmd):
    r = invoke(*cmd, "--help")
    assert r.exit_code == 0 and "Usage" in r.output


def test_run_and_reproduce_help_show_examples():
    assert "vglab run r-sweep --dataset mnist" in invoke("run", "--help").output
    assert "vglab reproduce" in invoke("reproduce", "--help").output


def test_list_shows_every_preset():
    r = invoke("list")
    assert r.exit_code == 0
    for name in ("large-params", "r-sweep", "paper-cnn-many-layers", "rescaling-by-init", "combined"):
        assert name in r.output


def test_show_expands_runs_and_groups():
    r = invoke("show", "many-layers")
    assert r.exit_code == 0
    assert "9 runs: 3 configurations x 3 seeds, in 2 vectorized groups" in r.output
    assert "mlp-20x8-tanh-normal" in r.output and "mlp-1x8-tanh-normal" in r.output


@pytest.mark.parametrize("body, words", [
    ('activation = "tanhh"', "unknown activation 'tanhh'"),
    ('penalty = "l2"\nr = -0.5', "r must be a finite number >= 0"),
    ("alpha = -1", "alpha must be > 0"),
    ("depth = 0", "depth must be an integer >= 1"),
    ('dataset = "imagenet"', "unknown dataset 'imagenet'"),
    ("learning_rat = 0.1", "unknown key 'learning_rat'"),
])
def test_invalid_spec_is_one_line_and_exit_code_2(tmp_path, body, words):
    f = tmp_path / "bad.toml"
    f.write_text(body + "\n")
    r = invoke("run", f, "--out", tmp_path / "out", "--quiet")
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], r.output
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize("args, words", [
    (["run", "no-such-preset"], "no preset or spec file named 'no-such-preset'"),
    (["run", "missing/spec.toml"], "no preset or spec file named 'missing/spec.toml'"),
    (["run", "large-params", "--dataset", "svhn"], "--dataset: unknown dataset 'svhn'"),
    (["show", "large-params", "--dataset", "svhn"], "--dataset: unknown dataset 'svhn'"),
    (["report", "no/such/dir"], "no results directory"),
])
def test_bad_arguments_are_one_line_and_exit_code_2(args, words):
    r = invoke(*args)
    assert r.exit_code == 2 and words in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1


def test_run_writes_the_store_and_resumes(tmp_path, vglab_cache):
    spec, out = write_spec(tmp_path), tmp_path / "out"
    r = invoke("run", spec, "--out", out, "--workers", 1, "--quiet")
    assert r.exit_code == 0, r.output
    assert r.output.strip() == str(out)
    runs = runs_table(out)
    assert len(runs) == 8 and set(runs["group"]) == {"mlp-1x4-tanh-normal", "mlp-1x4-tanh-uniform",
                                                      "mlp-1x4-tanh-glorot-uniform"}
    assert (runs["experiment"] == "tiny").all() and (runs["train_size"] == 256).all()
    assert {"tanh · N(0, std=10)", "tanh · U[-1, 1]", "tanh · Glorot uniform"} <= set(runs["label"])
    e = epochs_table(out)
    assert len(e) == 8 * 3 and e["val_acc"].notna().all()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["versions"]["jax"] and meta["machine"]["cpu_count"] >= 1
    assert meta["invocations"][-1]["trained"] == 8 and meta["invocations"][-1]["backend"] == "cpu"
    import tomllib

    toml = tomllib.loads((out / "experiment.toml").read_text())
    assert toml["name"] == "tiny" and toml["dataset"] == "digits" and toml["n_runs"] == 8

    # the same command again: nothing to train, same results
    r = invoke("run", spec, "--out", out, "--workers", 1, "--quiet")
    assert r.exit_code == 0
    assert json.loads((out / "meta.json").read_text())["invocations"][-1]["trained"] == 0
    assert epochs_table(out).equals(e)

    # another spec into the same directory is refused (exit 2), or replaced with --overwrite
    r = invoke("run", spec, "--out", out, "--epochs", 1, "--workers", 1, "--quiet")
    assert r.exit_code == 2 and "holds results of a different experiment (differs in: epochs)" in r.output
    r = invoke("run", spec, "--out", out, "--epochs", 1, "--seeds", 1, "--workers", 1, "--quiet", "--overwrite")
    assert r.exit_code == 0, r.output
    assert len(runs_table(out)) == 4 and (runs_table(out)["epochs"] == 1).all()


def test_data_info_and_fetch_digits():
    r = invoke("data", "info", "--no-verify")
    assert r.exit_code == 0 and "digits" in r.output and "embedded" in r.output and "mnist" in r.output
    r = invoke("data", "fetch", "digits")
    import sklearn  # digits is scikit-learn's bundled file: its path is printed, nothing downloaded

    bundled = Path(sklearn.__file__).parent / "datasets" / "data" / "digits.csv.gz"
    assert r.exit_code == 0 and Path(r.output.strip()) == bundled and bundled.is_file(), r.output
    r = invoke("data", "fetch", "svhn")
    assert r.exit_code == 2 and "svhn" in r.output


def test_report_and_reproduce_call_the_report_package(tmp_path, vglab_cache, monkeypatch):
    import vglab
    from vglab.report import html

    written = []
    monkeypatch.setattr(html, "write_report", lambda d, **kw: written.append((d, kw)) or d / "report.html")
    monkeypatch.setattr(html, "render_index", lambda dirs, out, refresh_pages=True, figure_formats=("png",): "<p>ix")
    spec = write_spec(tmp_path)
    index = vglab.reproduce(dataset="digits", out=tmp_path / "root", presets=[str(spec)], epochs=1, seeds=1,
                            workers=1, progress=False)
    assert index == tmp_path / "root" / "index.html" and index.read_text() == "<p>ix"
    assert written == [(tmp_path / "root" / "tiny", {"figure_formats": ("png",), "index": index})]
    assert len(runs_table(tmp_path / "root" / "tiny")) == 4

    r = invoke("report", tmp_path / "root" / "tiny")
    assert r.exit_code == 0 and r.output.strip().endswith("report.html")

    def missing():
        raise ImportError("the HTML report is not available (test)")

    from vglab.report import pages

    monkeypatch.setattr(pages, "html_module", missing)
    r = invoke("report", tmp_path / "root" / "tiny")
    assert r.exit_code == 2 and "the HTML report is not available" in r.output
    r = invoke("reproduce", "--presets", spec, "--out", tmp_path / "root", "--epochs", 1, "--seeds", 1, "-w", 1, "-q")
    assert r.exit_code == 0 and "warning: the HTML report is not available" in r.output


def test_reproduce_writes_the_index_only_once_every_page_is(tmp_path, vglab_cache, monkeypatch):
    """A page that fails (or a kill while pages are drawn) leaves no index linking to it."""
    import vglab
    from vglab.report import html

    def fails(d, **kw):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(html, "write_report", fails)
    spec = write_spec(tmp_path)
    with pytest.raises(RuntimeError, match="drawing failed"):
        vglab.reproduce(dataset="digits", out=tmp_path / "root", presets=[str(spec)], epochs=1, seeds=1, workers=1,
                        progress=False)
    assert not (tmp_path / "root" / "index.html").exists()
