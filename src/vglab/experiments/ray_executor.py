"""Run the runner's tasks on a Ray cluster: each task (a group's units) becomes one
`ray.remote` call, and its events come back to the runner, which stores the runs.

Without an address a local Ray instance is started and stopped afterwards, however the
driver ends (see `_LocalRay`); with `address` ("auto", "ray://host:10001", "host:6379")
the tasks go to that cluster, whose nodes need vglab installed and the dataset readable
(a --data-dir path there, or the download cache). Workers get the same single-threaded
XLA environment as local workers, so a run's numbers match the local executor's.

Progress is per task: a task's events (epochs, units) arrive together when it finishes.
Ray is optional: `pip install vglab[ray]`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid

TAG = "VGLAB_RAY_INSTANCE"  # in the environment of every process of a Ray instance vglab started


def _ray():
    try:
        import ray
    except ImportError:
        raise ImportError("the Ray executor needs Ray: pip install 'vglab[ray]' (or run with --executor local)") from None
    return ray


def _run(fn, args):
    """Inside a Ray worker: run one task, collecting its events."""
    from vglab.train.parallel import configure_compilation_cache

    configure_compilation_cache()
    events = []
    out = fn(*args, emit=lambda kind, payload=None: events.append((kind, payload)))
    return events, out


def run_tasks(tasks, on_event, address: str | None = None, num_cpus: int | None = None,
              env: dict[str, str] | None = None) -> None:
    """Run `tasks` [(key, fn, args)] as Ray tasks of one CPU each; events go to `on_event`
    as in `vglab.train.parallel.run_tasks`."""
    ray = _ray()
    started_here = not ray.is_initialized()
    kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False,
              "runtime_env": {"env_vars": dict(env or {})}}
    local = _LocalRay(ray) if started_here and not address else None
    with local or _Nothing():
        try:
            if local:
                local.init(num_cpus=num_cpus, **kwargs)
            elif started_here:
                ray.init(address=address, **kwargs)
            remote = ray.remote(num_cpus=1)(_run)
            pending = {remote.remote(fn, args): key for key, fn, args in tasks}
            while pending:
                with _SignalsDeferred():  # a handler raising inside ray.wait's C code made a SystemError
                    ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.25)
                if not ready:
                    continue
                key = pending.pop(ready[0])
                events, out = ray.get(ready[0])
                on_event("start", key, {"ray": True})
                for kind, payload in events:
                    on_event(kind, key, payload)
                on_event("done", key, out)
        finally:
            if started_here:
                ray.shutdown()


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


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

    def init(self, **kwargs) -> None:
        """ray.init with the tag in the environment it passes on, and our SIGTERM handler
        kept (ray.init installs its own, sys.exit(15))."""
        os.environ[TAG] = self.tag
        try:
            self.ray.init(**kwargs)
        except SystemExit as e:  # ray.init's handler fired while it started
            if self.main and e.code == signal.SIGTERM and callable(self.handler):
                self.handler(signal.SIGTERM, None)
            raise
        finally:
            os.environ.pop(TAG, None)  # later children of this process (report writers) are not Ray's
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
