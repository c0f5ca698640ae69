"""A new user's first hour: every Python snippet of README.md and every example, run as written
from a fresh, empty working directory, without --out (issue 24). The built-in model, an
Equinox model, a Flax model, a function pair, an .npz dataset and data= arrays.

A snippet runs as the script it is (`python snippet.py`: runpy, `__name__ == "__main__"`, its
folder first on sys.path), in this process: the CPU affinity is one core, so vglab trains
in-process on one worker, as on a one-core machine (a run's numbers do not depend on the
worker count). The examples take their documented size arguments (`epochs=1 seeds=1
train_size=200`, any spec field); nothing else is changed."""

import re
import runpy
import sys
from pathlib import Path

import pytest
from experiments_helpers import vglab_cache  # noqa: F401
from own_models import fresh, one_core  # noqa: F401
from typer.testing import CliRunner

import vglab
from vglab.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
EXAMPLES = ROOT / "examples"
SMALL = ["epochs=1", "seeds=1", "train_size=200"]  # the examples' documented quick run
cli = CliRunner()


def snippets(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def run_script(path: Path, *argv: str, capsys=None) -> str:
    """`python path argv...`: its folder on sys.path, run as __main__; returns what it printed."""
    old_argv, old_path = sys.argv, list(sys.path)
    sys.argv = [str(path), *argv]
    sys.path.insert(0, str(path.parent))
    try:
        runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = old_argv, old_path
        for name in ("equinox_mlp", "flax_cnn"):  # the examples' factory modules: imported afresh next time
            sys.modules.pop(name, None)
    return capsys.readouterr().out if capsys is not None else ""


def results_in(work: Path) -> list[Path]:
    """The results folders a run wrote under the working directory."""
    return sorted(p.parent.relative_to(work) for p in work.glob("vglab-results/*/*/experiment.toml"))


def test_the_readme_python_snippets_are_the_ones_tested():
    """Each Python block of the README has its test: below, one with the built-in model, an
    Equinox model, a function pair, and own data (.npz and data= arrays); the fifth, your own
    training step watched, in tests/test_recorder.py (test_the_readmes_watch_section_runs)."""
    blocks = snippets("python")
    assert len(blocks) == 5
    assert 'vglab.run("large-params"' in blocks[0] and "eqx.Module" in blocks[1]
    assert len(blocks[1].strip().splitlines()) <= 20  # the own-model example stays short
    assert "return init, apply" in blocks[2] and "np.savez" in blocks[3] and "data=" in blocks[3]
    assert "vglab.watch(" in blocks[4] and "vglab.Recorder(" in blocks[4]


def readme_script(work: Path, i: int) -> Path:
    f = work.parent / f"readme_{i}.py"  # beside, not in, the working directory
    f.write_text(snippets("python")[i])
    return f


def test_readme_built_in_model(fresh, capsys):
    out = run_script(readme_script(fresh, 0), capsys=capsys)
    assert results_in(fresh) == [Path("vglab-results/digits/large-params")]
    res = vglab.load_results("vglab-results/digits/large-params")
    assert len(res.runs) == 3 and set(res.runs["n_classes"]) == {10} and "n_params" in out


def test_readme_equinox_model(fresh, capsys):
    out = run_script(readme_script(fresh, 1), capsys=capsys)
    assert results_in(fresh) == [Path("vglab-results/digits/my-mlp")]
    assert out.strip().endswith(str(Path("vglab-results/digits/my-mlp/report.html")))
    res = vglab.load_results("vglab-results/digits/my-mlp")
    assert len(res.runs) == 8 and set(res.runs["activation"]) == {"tanh"}  # the model's vglab.nn.activation
    assert set(res.runs["weight_init_kind"]) == {"normal", "model"}
    assert (fresh / "vglab-results/digits/my-mlp/report.html").is_file()


def test_readme_function_pair(fresh, capsys):
    out = run_script(readme_script(fresh, 2), capsys=capsys)
    assert results_in(fresh) == [Path("vglab-results/digits/arctan-pair")]
    res = vglab.load_results("vglab-results/digits/arctan-pair")
    assert len(res.runs) == 4 and set(res.runs["activation"]) == {"arctan"} and "arctan" in out


def test_readme_own_data_npz_and_arrays(fresh, capsys):
    out = run_script(readme_script(fresh, 3), capsys=capsys)
    folders = results_in(fresh)
    assert len(folders) == 2 and Path("vglab-results/three/mine") in folders
    (arrays,) = [f for f in folders if f.parts[1].startswith("arrays-")]
    assert re.fullmatch(r"arrays-[0-9a-f]{8}", arrays.parts[1])
    lines = out.strip().splitlines()
    assert lines[0] == f"{Path('vglab-results/three/mine')} 3"
    assert lines[1] == f"{arrays} {arrays.parts[1]}"
    for f in folders:
        assert set(vglab.load_results(f).runs["n_classes"]) == {3}


def test_readme_spec_file_and_commands(fresh):
    """The README's spec file loads as written; `vglab list`, `vglab show` and a preset run
    and report as the "Using it" block writes them (the digits lines)."""
    spec = fresh.parent / "mine.toml"
    spec.write_text(snippets("toml")[0])
    r = cli.invoke(app, ["show", str(spec)])
    assert r.exit_code == 0 and "30 runs: 10 configurations x 3 seeds" in " ".join(r.output.split()), r.output
    assert list(fresh.iterdir()) == []
    using = snippets("bash")[2]
    assert "vglab run large-params                       # digits" in using
    for line in ("vglab list", "vglab show many-layers", "vglab run large-params",
                 "vglab report vglab-results/digits/large-params --open"):
        assert line in using
        args = line.split()[1:]
        if "--open" in args:
            args.remove("--open")  # a browser is not a test's business
        r = cli.invoke(app, args)
        assert r.exit_code == 0, (line, r.output)
    assert results_in(fresh) == [Path("vglab-results/digits/large-params")]
    assert (fresh / "vglab-results/digits/large-params/report.html").is_file()
    assert len(vglab.load_results("vglab-results/digits/large-params").runs) == 9


# ------------------------------------------------------------------ the examples
def test_example_equinox_script(fresh, capsys):
    out = run_script(EXAMPLES / "equinox_mlp_run.py", *SMALL, "model_args.depth=3", capsys=capsys)
    assert results_in(fresh) == [Path("vglab-results/digits/equinox-deep-mlp")]
    assert out.strip().endswith("report.html")
    res = vglab.load_results("vglab-results/digits/equinox-deep-mlp")
    assert len(res.runs) == 4 and set(res.runs["activation"]) == {"tanh"} and set(res.runs["train_size"]) == {200}


def test_example_equinox_spec(fresh):
    r = cli.invoke(app, ["run", str(EXAMPLES / "equinox_mlp.toml"), "--epochs", "1", "--seeds", "1",
                         "--train-size", "200", "--set", "model_args.depth=3", "--quiet"])
    assert r.exit_code == 0, r.output
    assert results_in(fresh) == [Path("vglab-results/digits/equinox_mlp")]
    from_spec = vglab.load_results("vglab-results/digits/equinox_mlp")
    assert len(from_spec.runs) == 5 and set(from_spec.runs["network"]) == {"model"}
    assert from_spec.epochs["val_acc"].notna().all()
    assert from_spec.activations["deriv_mean"].notna().any()  # built with vglab.nn.activation: layer factors


def test_example_flax_script(fresh, capsys):
    out = run_script(EXAMPLES / "flax_cnn_run.py", *SMALL, capsys=capsys)
    assert results_in(fresh) == [Path("vglab-results/digits/flax-cnn")]
    assert out.strip().endswith("report.html")
    res = vglab.load_results("vglab-results/digits/flax-cnn")
    assert len(res.runs) == 4 and set(res.runs["input"]) == {"images"} and set(res.runs["activation"]) == {"tanh"}


def test_example_flax_spec(fresh):
    r = cli.invoke(app, ["run", str(EXAMPLES / "flax_cnn.toml"), "--epochs", "1", "--seeds", "1",
                         "--train-size", "200", "--quiet"])
    assert r.exit_code == 0, r.output
    assert results_in(fresh) == [Path("vglab-results/digits/flax_cnn")]
    from_spec = vglab.load_results("vglab-results/digits/flax_cnn")
    assert len(from_spec.runs) == 4 and set(from_spec.runs["network"]) == {"model"}
    assert from_spec.epochs["val_acc"].notna().all() and from_spec.activations["deriv_mean"].notna().any()
