"""The Ray executor: the same spec gives the same results table as local workers, on a
local Ray instance and on a two-node cluster, also when a node is lost mid-sweep; a bad
address is refused in seconds with nothing written; the local Ray instance it starts is
stopped however the driver ends.

Every test that starts Ray runs it in a private network namespace holding only `lo`
(`ray_netns`): no Ray address can be anything but loopback, and the tests check that it
is 127.0.0.1. Where no namespace can be made, they skip and say why."""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import ray_netns
from experiments_helpers import epochs_table, runs_table, vglab_cache, write_spec  # noqa: F401

import vglab

ray = pytest.importorskip("ray", reason="the Ray executor is optional: pip install 'vglab[ray]'")
needs_namespace = pytest.mark.skipif(ray_netns.namespace_problem() is not None,
                                     reason=str(ray_netns.namespace_problem()))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, vglab_cache):
    """The tiny spec (8 runs, 3 groups) and its results from the local executor, to compare
    with (in this process: the results do not depend on the number of workers, and two
    worker processes cost two JAX start-ups)."""
    folder = tmp_path_factory.mktemp("ray")
    spec = write_spec(folder)
    vglab.run(spec, out=folder / "local", workers=1, progress=False)
    return spec, folder


def _scenario(name: str, sweep, timeout: float = 400) -> dict:
    """Scenario `name` of ray_netns, run in a namespace; no process of it is left afterwards."""
    spec, folder = sweep
    tag = uuid.uuid4().hex
    found = ray_netns.scenario(name, folder / f"{name}.json", spec, folder, timeout=timeout,
                               env={**os.environ, "VGLAB_TEST_TAG": tag})
    left = [cmd for p, (_, _, cmd, env) in _processes().items() if f"VGLAB_TEST_TAG={tag}".encode() in env.split(b"\0")]
    assert not left, f"left running: {left}"
    return found


@pytest.fixture(scope="module")
def cluster(sweep) -> dict:
    """One two-node cluster for the module: the two-node sweep, then the one that loses a node."""
    return _scenario("cluster", sweep, timeout=600)  # two sweeps: 154 s at a load of 5 on 2 cores


def _meta(out: Path) -> dict:
    return json.loads((out / "meta.json").read_text())


def _same_as_local(out: Path, folder: Path) -> None:
    runs = runs_table(out)
    assert len(runs) == 8 and runs.run_id.is_unique
    assert runs.equals(runs_table(folder / "local"))
    assert epochs_table(out).equals(epochs_table(folder / "local"))


@pytest.mark.slow  # starts a local Ray instance (~15 s on a 2-core machine)
@needs_namespace
def test_ray_gives_the_same_results_as_local_workers(sweep):
    found = _scenario("local", sweep)
    run = found["run"]
    assert run["rc"] == 0, run["stderr"]
    assert found["left"] == []  # the instance vglab started stopped with it
    folder = sweep[1]
    _same_as_local(folder / "local-ray", folder)
    meta, local = _meta(folder / "local-ray"), _meta(folder / "local")
    call = meta["invocations"][-1]
    assert call["executor"] == "ray" and "ray" in meta["versions"] and "cluster" not in call
    assert {t["node_ip"] for t in call["tasks"]} == {"127.0.0.1"}
    assert local["invocations"][-1]["executor"] == "local"


@pytest.mark.slow  # starts two Ray nodes and runs this and the next test's sweeps (~2 min on a loaded 2-core machine)
@needs_namespace
def test_a_sweep_on_a_two_node_cluster_is_spread_over_both_and_equals_local(sweep, cluster):
    folder = sweep[1]
    assert cluster["addresses"] == ["127.0.0.1", "127.0.0.1"]  # ray.nodes(): both nodes, loopback only
    plan = cluster["dry_run"]
    assert plan["rc"] == 0, plan["stderr"]
    assert "on 2 CPU workers (Ray cluster at 127.0.0.1:6379: 2 nodes, 2 CPUs)" in plan["stdout"]
    run = cluster["two_nodes"]
    assert run["rc"] == 0, run["stderr"]
    _same_as_local(folder / "two-nodes", folder)
    call = _meta(folder / "two-nodes")["invocations"][-1]
    assert call["workers"] == 2 and call["cluster"] == {"address": "127.0.0.1:6379", "nodes": 2, "cpus": 2}
    tasks = call["tasks"]
    assert len({t["node_id"] for t in tasks}) == 2 and {t["node_ip"] for t in tasks} == {"127.0.0.1"}
    for t in tasks:  # timed where it ran: compiling is part of a task's time (was: 4.12 s compiling in 0.14 s)
        assert 0 < t["seconds"] and t["compile_seconds"] <= t["seconds"]
        # its progress line names the node
        said = re.search(rf"{re.escape(t['task'])}: {t['units']} units? in ([0-9.]+) s on node 127\.0\.0\.1 "
                         rf"\({t['node_id'][:8]}\)", run["stderr"])
        assert said and abs(float(said[1]) - t["seconds"]) < 0.06, run["stderr"]
        group = re.search(rf"\] {re.escape(t['task'].rsplit('/', 1)[0])}: \d+ runs in ([0-9.]+) s", run["stderr"])
        assert group and float(group[1]) >= t["seconds"] - 0.1, run["stderr"]  # each group is one task here


@pytest.mark.slow  # the cluster of the test above: one more sweep (~15 s)
@needs_namespace
def test_a_worker_node_lost_mid_sweep_costs_its_task_only(sweep, cluster):
    assert cluster["addresses"] == ["127.0.0.1", "127.0.0.1"]
    folder = sweep[1]
    lost = cluster["lost_node"]
    assert "ray::_run" in lost["first"]["killed"], lost  # the node was running a task when it was killed
    finished = lost["first"] if lost["first"]["rc"] == 0 else lost["again"]  # finished, or resumed on a re-run
    assert finished is not None and finished["rc"] == 0, lost
    _same_as_local(folder / "lost-node", folder)  # every run once, as computed locally
    calls = _meta(folder / "lost-node")["invocations"]
    assert sum(c.get("trained", 0) for c in calls) == 8
    for c in calls:
        assert len({t["task"] for t in c.get("tasks", [])}) == len(c.get("tasks", []))


@pytest.mark.slow  # ~5 s: a process importing vglab and Ray
@needs_namespace
def test_an_unreachable_address_is_refused_in_seconds_with_nothing_written(tmp_path):
    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    t0 = time.perf_counter()
    proc = ray_netns.in_namespace([sys.executable, "-m", "vglab.cli", "run", spec, "--out", out, "--executor", "ray",
                                   "--address", "127.0.0.1:1", "-q"], timeout=60)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the Ray cluster at 127.0.0.1:1 "), lines
    assert "ray start --head" in lines[0]
    assert seconds <= 10, seconds
    assert not out.exists()


@pytest.mark.parametrize("answer", [None, b"HTTP/1.0 400 Bad Request\r\n\r\n"])
def test_an_address_that_is_no_ray_cluster_is_refused(answer):
    """What a TCP connection alone would pass: a port that never answers, or answers but not in gRPC."""
    from vglab.experiments.ray_executor import check_address

    server = socket.create_server(("127.0.0.1", 0))
    host, port = server.getsockname()[:2]
    assert host == "127.0.0.1"

    def serve():
        with contextlib.suppress(OSError):
            conn, _ = server.accept()
            with conn:
                if answer:
                    conn.sendall(answer)
                time.sleep(1.0)

    threading.Thread(target=serve, daemon=True).start()
    t0 = time.perf_counter()
    refused = f"127.0.0.1:{port} .*(no answer|not as a Ray cluster).*ray start --head"
    with server, pytest.raises(ValueError, match=refused):
        check_address(f"127.0.0.1:{port}", timeout=0.5)
    assert time.perf_counter() - t0 < 0.9  # never waits past the timeout


def test_a_cluster_is_used_whole_unless_workers_cap_it():
    from vglab.experiments.ray_executor import Cluster

    cluster = Cluster("10.0.0.5:6379", nodes=3, cpus=48)
    assert [cluster.workers(w) for w in (None, 8, 100)] == [48, 8, 48]
    assert cluster.describe() == "Ray cluster at 10.0.0.5:6379: 3 nodes, 48 CPUs"


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


@pytest.fixture
def ray_tmpdir():
    """A folder for Ray's session files (not the shared /tmp/ray), removed afterwards; short,
    since Ray's socket paths must fit 107 bytes."""
    folder = tempfile.mkdtemp(prefix="vr", dir="/tmp")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


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
@needs_namespace
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_driver_leaves_no_ray_process_behind(tmp_path, vglab_cache, sig, ray_tmpdir):
    """Killing the driver left ray::DashboardAgent and ray::RuntimeEnvAgent running."""
    tag = uuid.uuid4().hex
    spec = write_spec(tmp_path)
    spec.write_text(spec.read_text().replace("epochs = 2", "epochs = 40"))
    # In a private network namespace (no process-id namespace: vglab's own clean-up is tested);
    # `exec` keeps the driver's pid.
    proc = subprocess.Popen(["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
                             sys.executable, "-m", "vglab.cli", "run", str(spec), "--out", str(tmp_path / "out"),
                             "--executor", "ray", "--workers", "1", "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "VGLAB_TEST_TAG": tag, "RAY_TMPDIR": ray_tmpdir})
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
