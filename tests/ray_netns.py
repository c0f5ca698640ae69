"""Ray on loopback only: the Ray tests' sweeps run inside a private network namespace
holding only `lo`, so no Ray process can bind or reach any other address (Ray swaps
127.0.0.1 for the routed address when there is one: ray-project/ray#26293).

Outside (the tests): `namespace_problem()` says why no namespace can be made (then the
tests skip with it); `in_namespace(args)` runs a command in a fresh one, which has its
own process-id space too: once the command ends (or `unshare`, killed on a timeout, takes
it down with --kill-child), the kernel kills every process left in it, so no Ray process
outlives a test, however it failed.

Inside (`python tests/ray_netns.py SCENARIO RESULTS SPEC OUT`): the scenarios, each
writing what the tests check to the JSON file RESULTS:
- `local`: `vglab run --executor ray` on a local instance vglab starts (no address);
- `cluster`: a two-node cluster on this host (`ray start` twice, one CPU and own ports
  each), every node address read with `ray.nodes()`, then `--dry-run` and a sweep on it with
  `--address` (`two_nodes`), then, on the same cluster, a second sweep (into its own folder)
  during which the worker node is killed (SIGKILL to its raylet and everything under it)
  while it runs a task (`lost_node`). One cluster for both: starting a cluster (two nodes
  and a driver's `ray.init`) was a third of each scenario's time.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

UNSHARE = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]
HEAD_PORT = 6379


@functools.lru_cache(maxsize=1)
def namespace_problem() -> str | None:
    """None if a private network (and process-id) namespace with `lo` up can be made here, else why not."""
    try:
        proc = subprocess.run([*UNSHARE, "sh", "-c", "ip link set lo up"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot make a private network namespace ({' '.join(UNSHARE)}): {e}"
    if proc.returncode != 0:
        return (f"cannot make a private network namespace ({' '.join(UNSHARE)}; needs root or CAP_SYS_ADMIN, and "
                f"`ip`): {proc.stderr.strip() or proc.returncode}")
    return None


def in_namespace(args, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Run `args` in a fresh namespace with only `lo` (up)."""
    return subprocess.run([*UNSHARE, "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def scenario(name: str, results: Path, spec: Path, out: Path, timeout: float = 400, env=None) -> dict:
    """Run scenario `name` (see the module's docstring) in a namespace; its results."""
    proc = in_namespace([sys.executable, __file__, name, results, spec, out], timeout=timeout, env=env)
    if not results.exists():
        raise AssertionError(f"scenario {name} exited {proc.returncode} without results:\n{proc.stderr[-4000:]}")
    return {**json.loads(results.read_text()), "stderr": proc.stderr}


# ------------------------------------------------------------------ inside the namespace
def _cli(*args, timeout: float = 240) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "vglab.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    return {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr,
            "seconds": round(time.perf_counter() - t0, 2)}


def _ray(*args) -> None:
    proc = subprocess.run([str(Path(sys.executable).parent / "ray"), *map(str, args)], capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"ray {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-3000:]}")


def _processes() -> dict[int, tuple[int, str]]:
    """{pid: (parent pid, command line)} of this namespace's live processes (not zombies)."""
    table = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            table[int(pid)] = (int(fields[1]), cmd)
    return table


def _tree(root: int, table) -> list[int]:
    tree, grew = [root], True
    while grew:
        grew = False
        for pid, (ppid, _) in table.items():
            if ppid in tree and pid not in tree:
                tree.append(pid)
                grew = True
    return tree


def _node_addresses() -> list[str]:
    import ray

    ray.init(address=f"127.0.0.1:{HEAD_PORT}", log_to_driver=False, configure_logging=False)
    try:
        return [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]]
    finally:
        ray.shutdown()


def _kill_worker_node_mid_sweep(args: list, port: int) -> dict:
    """Run a sweep; once the worker node (raylet on `port`) runs a task, SIGKILL the
    raylet and every process under it. The sweep is run again if it failed (resume)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "vglab.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    killed, deadline = [], time.time() + 240
    while proc.poll() is None and time.time() < deadline and not killed:
        table = _processes()
        raylets = [p for p, (_, cmd) in table.items() if "raylet" in cmd.split(" ")[0]
                   and f"--node_manager_port={port}" in cmd]
        for raylet in raylets:
            if any(table[p][1].startswith("ray::_run") for p in _tree(raylet, table)):
                killed = [cmd.split(" ")[0] for p, (_, cmd) in table.items() if p in _tree(raylet, table)]
                for p in _tree(raylet, table):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=300)
    first = {"rc": proc.returncode, "stdout": stdout, "stderr": stderr, "killed": killed,
             "seconds": round(time.perf_counter() - t0, 2)}
    return {"first": first, "again": _cli(*args) if proc.returncode != 0 else None}


def _cluster(spec: Path, out: Path) -> dict:
    env_ports = {"head": ["--port", HEAD_PORT], "worker": ["--node-manager-port", 6390, "--object-manager-port", 6391,
                                                            "--min-worker-port", 20000, "--max-worker-port", 20999]}
    # Only what the sweeps use: no log monitor (vglab's drivers do not show the workers' logs), no
    # autoscaler monitor (a fixed cluster), and no idle worker for the first driver (vglab's tasks
    # carry a runtime environment, the workers' XLA settings, for which each node starts workers of
    # its own). Measured (the two cluster tests, every process counted): 85 -> 72 CPU seconds.
    # (`ray start` cannot leave out its Ray Client server: port 0 is refused.)
    os.environ["RAY_prestart_worker_first_driver"] = "0"
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--include-log-monitor",
              "false"]
    _ray("start", "--head", *map(str, env_ports["head"]), "--include-dashboard", "false", "--no-monitor", *common)
    _ray("start", "--address", f"127.0.0.1:{HEAD_PORT}", *map(str, env_ports["worker"]), *common)
    found = {"addresses": _node_addresses()}
    address = ["--executor", "ray", "--address", f"127.0.0.1:{HEAD_PORT}"]
    found["dry_run"] = _cli("run", spec, "--out", out / "two-nodes", *address, "--dry-run")
    found["two_nodes"] = _cli("run", spec, "--out", out / "two-nodes", *address)  # progress lines on stderr
    # last: it leaves the cluster with one node
    found["lost_node"] = _kill_worker_node_mid_sweep(["run", spec, "--out", out / "lost-node", *address, "-q"], 6390)
    return found


def main(name: str, results: str, spec: str, out: str) -> None:
    assert os.getpid() == 1, "run this through scenario(), in a namespace of its own"
    out_dir = Path(out)
    # Ray's files (sessions, logs) and home of their own, removed at the end: Ray reads ~/.ray
    # (an auth token there, left by another Ray, made a worker node's start fail). Short: Ray's
    # socket paths must fit 107 bytes.
    temp = tempfile.mkdtemp(prefix="vr", dir="/tmp")
    os.environ.update(RAY_TMPDIR=temp, HOME=os.path.join(temp, "home"))
    for var in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        os.environ.pop(var, None)
    try:
        if name == "local":
            found = {"run": _cli("run", spec, "--out", out_dir / "local-ray", "--executor", "ray", "--workers", "2",
                                 "-q")}
            deadline = time.time() + 30  # what the instance vglab started left running, once it had time to exit
            while (left := [cmd for pid, (_, cmd) in _processes().items() if pid != 1]) and time.time() < deadline:
                time.sleep(0.5)
            found["left"] = left
        else:
            found = _cluster(Path(spec), out_dir)
        Path(results).write_text(json.dumps(found))
    finally:
        for pid in _processes():  # (the kernel would, once this process ends: not while rmtree runs)
            if pid != 1:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
