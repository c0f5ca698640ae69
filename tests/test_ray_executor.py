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


def _processes() -> dict[int, tuple[int, str, str, bytes]]:
    """{pid: (parent pid, start time, command line, environment)} of the live processes."""
    table = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                table[int(pid)] = (int(fields[1]), fields[19],
                                   Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(),
                                   Path(f"/proc/{pid}/environ").read_bytes())
    return table


def _instance(driver: int, tag: str, known: dict) -> dict[int, tuple[str, str]]:
    """The processes of the driver's Ray instance, {pid: (start time, command line)}: those
    with the test's tag in their environment (Ray's agents may overwrite theirs when they
    rename themselves), those in `known` (same start time), and all their descendants."""
    table = _processes()
    mine = {p: (st, cmd) for p, (pp, st, cmd, env) in table.items()
            if p != driver and (f"VGLAB_TEST_TAG={tag}".encode() in env.split(b"\0") or known.get(p, ("",))[0] == st
                                or pp == driver)}
    grew = True
    while grew:
        grew = False
        for p, (pp, st, cmd, _) in table.items():
            if p not in mine and pp in mine:
                mine[p], grew = (st, cmd), True
    return mine


@pytest.mark.slow  # starts a local Ray instance
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes through /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_driver_leaves_no_ray_process_behind(tmp_path, vglab_cache, sig):
    """Killing the driver left ray::DashboardAgent and ray::RuntimeEnvAgent running."""
    tag = uuid.uuid4().hex
    spec = write_spec(tmp_path)
    spec.write_text(spec.read_text().replace("epochs = 2", "epochs = 40"))
    proc = subprocess.Popen([sys.executable, "-m", "vglab.cli", "run", str(spec), "--out", str(tmp_path / "out"),
                             "--executor", "ray", "--workers", "2", "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "VGLAB_TEST_TAG": tag})
    # Wait until a task runs and the agents are up (ray.init has returned: a SIGTERM while
    # it starts the instance meets Ray's own C++ handler, which aborts the driver).
    known, deadline = {}, time.time() + 180
    while proc.poll() is None and time.time() < deadline:
        known.update(_instance(proc.pid, tag, known))
        names = [cmd for _, cmd in known.values()]
        if any(c.startswith("ray::_run") for c in names) and sum("Agent" in c for c in names) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None and any("raylet" in c for _, c in known.values()), known
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 143), stderr
    deadline = time.time() + 30
    while (left := _instance(proc.pid, tag, known)) and time.time() < deadline:
        time.sleep(0.5)
    for pid in left:  # what a failed test leaves
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"left running: {[cmd[:60] for _, cmd in left.values()]}"
