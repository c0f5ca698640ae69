"""The Ray executor: the same spec gives the same results table as local workers, and
the local Ray instance it starts is stopped however the driver ends."""

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

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


def _tagged(tag: str, but: int, kill: bool = False) -> list[str]:
    """Command lines of the processes whose environment holds VGLAB_TEST_TAG=tag (Linux);
    `kill`: SIGKILL them (what a failed test leaves)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) != but:
            with contextlib.suppress(OSError):
                if f"VGLAB_TEST_TAG={tag}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
                    if kill:
                        os.kill(int(pid), signal.SIGKILL)
    return found


@pytest.mark.slow  # starts a local Ray instance
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds processes through /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_driver_leaves_no_ray_process_behind(tmp_path, vglab_cache, sig):
    """Killing the driver left ray::DashboardAgent and ray::RuntimeEnvAgent running."""
    tag = uuid.uuid4().hex
    spec = write_spec(tmp_path)
    spec.write_text(spec.read_text().replace("epochs = 2", "epochs = 40"))
    proc = subprocess.Popen([sys.executable, "-m", "vglab.cli", "run", str(spec), "--out", str(tmp_path / "out"),
                             "--executor", "ray", "--workers", "2", "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "VGLAB_TEST_TAG": tag})
    deadline = time.time() + 180
    while not any("raylet" in c for c in _tagged(tag, proc.pid)) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(5)  # the agents and the workers start
    started = _tagged(tag, proc.pid)
    assert proc.poll() is None and len(started) >= 3, [c[:100] for c in started]
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 143), stderr
    deadline = time.time() + 30
    while (left := _tagged(tag, proc.pid)) and time.time() < deadline:
        time.sleep(0.5)
    _tagged(tag, proc.pid, kill=True)
    assert not left, f"left running: {[c[:100] for c in left]}"
