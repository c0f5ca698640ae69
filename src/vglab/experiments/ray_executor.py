"""Run the runner's tasks on a Ray cluster: each task (a group's units) becomes one
`ray.remote` call, and its events come back to the runner, which stores the runs.

Without an address a local Ray instance is started and stopped afterwards, however the
driver ends (see `_LocalRay`); with `address` ("auto", "ray://host:10001", "host:6379")
the tasks go to that cluster, whose nodes need vglab installed and the dataset readable
(a --data-dir path there, or the download cache). Workers get the same single-threaded
XLA environment as local workers, so a run's numbers match the local executor's.

A cluster's address is checked before the runner writes anything (`connected`): a TCP
connection to it, then the HTTP/2 greeting every gRPC server (Ray's GCS, its client
server) answers, each within `CONNECT_TIMEOUT_S`, then `ray.init` with Ray's own GCS
timeouts shortened (`_QUICK_GCS`) and its stderr held back. Measured: `ray.init` alone on
an unreachable address retried for ~15 min (20 tries of ~45 s), printing "Failed to connect
to GCS" each time, and 8 s with the shortened timeouts; the TCP check refuses it at once
(the whole `vglab run`: 2.3 s on a busy 2-core machine, most of it Python's imports).

A task is timed inside the Ray worker (`_run`): its events arrive together when it
finishes, so a clock in the driver measured only their replay. It also says which node
ran it (the node's id and address), for meta.json and the progress lines.

Progress is per task: a task's events (epochs, units) arrive together when it finishes.
Ray is optional: `pip install vglab[ray]`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass

TAG = "VGLAB_RAY_INSTANCE"  # in the environment of every process of a Ray instance vglab started


def _ray():
    try:
        import ray
    except ImportError:
        raise ImportError("the Ray executor needs Ray: pip install 'vglab[ray]' (or run with --executor local)") from None
    return ray


def _run(fn, args):
    """Inside a Ray worker: run one task, collecting its events, timed here."""
    import ray

    from vglab.train.parallel import configure_compilation_cache

    t0 = time.perf_counter()
    configure_compilation_cache()
    events = []
    out = fn(*args, emit=lambda kind, payload=None: events.append((kind, payload)))
    where = {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address(),
             "pid": os.getpid()}
    return events, out, {**where, "seconds": time.perf_counter() - t0}


CONNECT_TIMEOUT_S = 3.0  # each step of the address check (TCP, then the gRPC server's greeting)
# Ray's GCS connection timeouts while ray.init connects to a cluster (seconds; Ray's
# defaults 5, 30 and ~20 tries): a GCS that answers the greeting connects in well under these.
_QUICK_GCS = {"RAY_gcs_rpc_server_connect_timeout_s": "2", "RAY_py_gcs_connect_timeout_s": "3",
              "RAY_gcs_server_port_wait_time_s": "1"}
ADDRESS_HELP = ("check that the cluster's head node runs (`ray start --head` there) and that the address is its "
                "host and GCS port (HOST:6379 by default; ray://HOST:10001 for Ray Client), reachable from here")


@dataclass(frozen=True)
class Cluster:
    """The Ray cluster a sweep runs on, as `ray.init` found it."""

    address: str
    nodes: int  # alive
    cpus: int

    def workers(self, limit: int | None) -> int:
        """Tasks at once: one per CPU of the cluster, at most `limit` (--workers)."""
        return max(1, min(self.cpus, limit or self.cpus))

    def describe(self) -> str:
        return f"Ray cluster at {self.address}: {self.nodes} node{'s' if self.nodes != 1 else ''}, {self.cpus} CPUs"


def check_address(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ValueError (one line: the address, what failed, what to check) unless a gRPC
    server answers at `address` within `timeout` per step. "auto" is checked by ray.init."""
    host_port = address.removeprefix("ray://")
    if address == "auto":
        return
    host, sep, port = host_port.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"--address {address!r} is not HOST:PORT; give the head node's host and GCS port, e.g. "
                         "10.0.0.5:6379 (or ray://10.0.0.5:10001, or auto for the cluster started on this machine)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as s:
            s.settimeout(timeout)
            # The HTTP/2 client preface and an empty SETTINGS frame: a gRPC server answers with its SETTINGS.
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
            head = s.recv(9)
    except OSError as e:
        why = "no answer" if isinstance(e, (TimeoutError, socket.timeout)) else (e.strerror or str(e)).lower()
        raise ValueError(f"cannot reach the Ray cluster at {address} ({why}); {ADDRESS_HELP}") from None
    if len(head) < 4 or head[3] != 4:
        raise ValueError(f"{address} answers, but not as a Ray cluster (no gRPC server there); {ADDRESS_HELP}")


@contextlib.contextmanager
def connected(address: str, **init_kwargs):
    """Connect this process to the cluster at `address` (checked first, see `check_address`)
    and yield its `Cluster`; disconnect at the end. Ray's retry messages are not shown
    (VGLAB_DEBUG=1 shows them when connecting fails)."""
    check_address(address)  # before importing Ray (~1 s)
    from vglab.train.parallel import environ

    ray = _ray()
    kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False, **init_kwargs}
    with tempfile.TemporaryFile() as said, _stderr_to(said), environ(_QUICK_GCS):
        try:
            ray.init(address=address, **kwargs)
            failed = None
        except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError (versions), AuthenticationError, ...
            failed = e
    if failed is not None:
        ray.shutdown()
        if os.environ.get("VGLAB_DEBUG"):
            said.seek(0)
            sys.stderr.write(said.read().decode(errors="replace"))
        first = str(failed).strip().splitlines()[0] if str(failed).strip() else type(failed).__name__
        raise ValueError(f"cannot connect to the Ray cluster at {address} ({first}); {ADDRESS_HELP}") from None
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        yield Cluster(address, len(nodes), int(ray.cluster_resources().get("CPU", 0)))
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _stderr_to(file):
    """File descriptor 2 (Ray's C++ core writes there) goes to `file` for a while."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(file.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def run_tasks(tasks, on_event, address: str | None = None, num_cpus: int | None = None,
              env: dict[str, str] | None = None, at_once: int | None = None) -> None:
    """Run `tasks` [(key, fn, args)] as Ray tasks of one CPU each, at most `at_once` at a
    time; events go to `on_event` as in `vglab.train.parallel.run_tasks`, the "start" and
    "done" payloads with the task's node (`node_id`, `node_ip`) and, in "done", the
    seconds it took on that node. Uses the cluster this process is connected to
    (`connected`), else the one at `address`, else a local instance of `num_cpus`."""
    ray = _ray()
    started_here = not ray.is_initialized()
    kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    local = _LocalRay(ray) if started_here and not address else None
    with contextlib.ExitStack() as stack:
        if local:
            stack.enter_context(local)
            stack.callback(ray.shutdown)  # before the reaper's pipe closes (local's exit)
            local.init(env, num_cpus=num_cpus, **kwargs)
        elif started_here:
            stack.enter_context(connected(address))
        remote = ray.remote(num_cpus=1)(_run)
        if not local:  # a cluster's workers get `env` as a runtime environment (a local instance has it already)
            remote = remote.options(runtime_env={"env_vars": dict(env or {})})
        waiting = list(reversed(tasks))
        pending = {}
        while pending or waiting:
            while waiting and len(pending) < (at_once or len(tasks)):
                key, fn, args = waiting.pop()
                pending[remote.remote(fn, args)] = key
            with _SignalsDeferred():  # a handler raising inside ray.wait's C code made a SystemError
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.25)
            if not ready:
                continue
            key = pending.pop(ready[0])
            events, out, where = ray.get(ready[0])
            on_event("start", key, {"ray": True, **where})
            for kind, payload in events:
                on_event(kind, key, payload)
            on_event("done", key, {**out, **where})


class _LocalRay:
    """Stops every process of the local Ray instance vglab starts, however the driver ends.

    `ray.shutdown()` (in `run_tasks`' finally) stops them when the driver unwinds; here
    SIGTERM is made to unwind it too (raising SystemExit, unless the program has its own
    handler, as the CLI does). What no handler sees (SIGKILL, or a signal while ray.init
    starts the agents) left `ray::DashboardAgent` and `ray::RuntimeEnvAgent` running. So
    the processes ray.init starts carry a tag in their environment (inherited by all they
    start), and a small reaper process (`_REAPER`), reading a pipe from this one, stops
    them and their descendants once the pipe closes: when this block ends, or this
    process dies. Linux only (it reads /proc); elsewhere the reaper finds nothing."""

    def __init__(self, ray):
        self.ray, self.tag = ray, uuid.uuid4().hex
        self.main = threading.current_thread() is threading.main_thread()

    def __enter__(self):
        read, self.pipe = os.pipe()  # non-inheritable: no process but the reaper holds an end
        try:
            subprocess.Popen([sys.executable, "-c", _REAPER, TAG, self.tag, str(os.getpid())], stdin=read,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        finally:
            os.close(read)
        if self.main:
            self.old = signal.getsignal(signal.SIGTERM)
            self.handler = _exit_on_signal if self.old in (signal.SIG_DFL, None) else self.old
            signal.signal(signal.SIGTERM, self.handler)
        return self

    def init(self, env: dict[str, str] | None = None, **kwargs) -> None:
        """ray.init with the tag and `env` (the workers' environment) in the environment it
        passes on, and our SIGTERM handler kept (ray.init installs its own, sys.exit(15)).

        The workers inherit `env` from the instance, so the tasks need no runtime
        environment: Ray runs them in the workers it starts with the instance (one per CPU)
        instead of starting one more per CPU for the runtime environment and leaving those
        idle. Measured (4 tasks of 2 s on 2 CPUs, every process of the instance counted,
        2-core machine under load): 19.7 -> 13.5 CPU seconds, 59 -> 34 s."""
        from vglab.train.parallel import environ

        try:  # (restored after: later children of this process, report writers, are not Ray's)
            with environ({TAG: self.tag, **(env or {})}):
                self.ray.init(**kwargs)
        except SystemExit as e:  # ray.init's handler fired while it started
            if self.main and e.code == signal.SIGTERM and callable(self.handler):
                self.handler(signal.SIGTERM, None)
            raise
        finally:
            if self.main:
                signal.signal(signal.SIGTERM, self.handler)

    def __exit__(self, *exc):
        if self.main:
            signal.signal(signal.SIGTERM, self.old if self.old is not None else signal.SIG_DFL)
        os.close(self.pipe)  # the reaper wakes and stops anything of this instance still running
        return False


# The reaper. Ray's agents rename themselves (setproctitle), which can overwrite the
# environment that /proc shows, so the reaper also remembers the descendants of tagged
# processes (the agents are the raylet's children), polling once a second while the
# driver runs. Once the driver ends (its pipe closes, or it is no longer the reaper's
# parent), it stops them all: SIGTERM, SIGKILL if still there 3 s later, until three
# scans in a row find none. (Start times guard against reused pids.) Standard library only.
_REAPER = r"""
import os, select, signal, sys, time
name, tag, driver = sys.argv[1], sys.argv[2], int(sys.argv[3])
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
needle = ("%s=%s" % (name, tag)).encode()
known = {}  # pid -> start time: processes of the instance seen so far

def scan():
    # {pid: start time} of the live processes of the instance: tagged, known, or their descendants
    table = {}
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not pid.isdigit() or int(pid) in (os.getpid(), driver):
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if fields[0] == "Z":
                continue
            with open("/proc/%s/environ" % pid, "rb") as f:
                tagged = needle in f.read().split(b"\0")
        except (OSError, IndexError):
            continue
        table[int(pid)] = (int(fields[1]), fields[19], tagged)
    mine = {p: st for p, (pp, st, tagged) in table.items() if tagged or known.get(p) == st}
    grew = True
    while grew:
        grew = False
        for p, (pp, st, _) in table.items():
            if p not in mine and pp in mine:
                mine[p], grew = st, True
    return mine

while os.getppid() == driver:  # (also if another process kept the pipe open)
    if select.select([0], [], [], 1.0)[0] and not os.read(0, 1):
        break
    known.update(scan())
seen, empty, end = {}, 0, time.time() + 120
while empty < 3 and time.time() < end:  # counted in scans: a starved reaper must not stop early
    mine = scan()
    known.update(mine)
    now = time.time()
    empty = 0 if mine else empty + 1
    for pid in mine:
        first = seen.setdefault(pid, now)
        if first == now or now - first > 3.0:
            try:
                os.kill(pid, signal.SIGTERM if first == now else signal.SIGKILL)
            except OSError:
                pass
    time.sleep(0.5)
"""


class _SignalsDeferred:
    """SIGINT and SIGTERM wait until the block ends, then take their usual course."""

    def __enter__(self):
        self.main = threading.current_thread() is threading.main_thread()
        self.got, self.old = [], {}
        if self.main:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, lambda signum, frame: self.got.append(signum))
        return self

    def __exit__(self, *exc):
        for sig, handler in self.old.items():
            signal.signal(sig, handler)
        for sig in self.got[:1]:
            signal.raise_signal(sig)
        return False


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)
