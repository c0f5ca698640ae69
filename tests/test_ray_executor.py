"""The Ray executor: the same spec gives the same results table as local workers."""

import pytest
from experiments_helpers import epochs_table, runs_table, vglab_cache, write_spec  # noqa: F401

import vglab

ray = pytest.importorskip("ray", reason="the Ray executor is optional: pip install 'vglab[ray]'")


@pytest.mark.slow  # starts a local Ray instance (~10-30 s on a 2-core machine)
def test_ray_gives_the_same_results_as_local_workers(tmp_path, vglab_cache):
    spec = write_spec(tmp_path)
    local = vglab.run(spec, out=tmp_path / "local", workers=2, progress=False)
    on_ray = vglab.run(spec, out=tmp_path / "ray", executor="ray", workers=2, progress=False)
    assert not ray.is_initialized()  # the local instance it started is stopped again
    assert len(on_ray.runs) == 8
    assert runs_table(tmp_path / "ray").equals(runs_table(tmp_path / "local"))
    assert epochs_table(tmp_path / "ray").equals(epochs_table(tmp_path / "local"))
    assert on_ray.meta["invocations"][-1]["executor"] == "ray" and "ray" in on_ray.meta["versions"]
    assert local.meta["invocations"][-1]["executor"] == "local"


def test_missing_ray_is_a_clear_error(monkeypatch):
    import builtins

    from vglab.experiments import ray_executor

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match=r"pip install 'vglab\[ray\]'"):
        ray_executor.run_tasks([], lambda *a: None)
