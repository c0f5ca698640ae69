"""Local parallelism: one worker process per core, each pinned to its core and running
XLA single-threaded.

Why: a group's program is small (a few thousand parameters per member), so XLA's
intra-op threads gain little, while two programs on two cores run twice as fast. Pinning
keeps each worker on its own core, and it also fixes the numbers: XLA CPU splits some
loops and reductions by the number of cores the process may use, which changes float32
summation order, so every training process (worker or, with `workers=1`, this one while
it trains) runs on exactly one core and a run's numbers do not depend on the machine's
core count or the worker count.

Protocol. A task is `(key, fn, args)`, where `fn` is a module-level function (it is sent
to the worker by reference). The worker calls `fn(*args, emit=emit)`; `fn` may call
`emit(kind, payload)` any number of times (progress, partial results), and its return
value arrives as a "done" event. The parent sees every event as
`on_event(kind, key, payload)`, in order per task; the pool adds "start" (payload: the
worker's pid and core). A task that raises, or a worker that dies, raises `WorkerError`
in the parent after the events already sent have been delivered.

Scheduling. Tasks start in the order given, except that each may name a *program* (what
it compiles, e.g. a network's training step): a worker takes the first task whose program
it has in memory or no worker has started, and another worker's program only once that
program is compiled (a task emits "compiled" once its programs are in the compilation
cache, or is done), so it loads it instead of compiling it a second time beside the
first. Once every worker has a task, each gets one more queued behind the one it runs,
so it never waits for the parent between tasks; while a worker is idle, no task is queued
behind another's (it may be the task the idle one takes once a program is compiled).

`workers=1` runs the tasks in this process (no spawn, simplest to debug); otherwise
workers are started with the 'spawn' method (JAX is not fork-safe), their environment
set before JAX is imported, and they exit when the parent dies (PR_SET_PDEATHSIG on
Linux, and a parent-pid check at every event).
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing as mp
import os
import queue
import signal
import sys
import traceback

# XLA CPU without intra-op threads: one core per worker (read when JAX's backend starts).
WORKER_XLA_FLAGS = ("--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1")
PERSISTENT_CACHE_MIN_COMPILE_SECS = 0.1  # cache nearly every compiled program: most take 1-20 s


class WorkerError(RuntimeError):
    """A task failed in a worker, or a worker died."""


def available_cores() -> list[int]:
    """The cores this process may run on (affinity-aware: a container may allow fewer)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def default_workers() -> int:
    return len(available_cores())


def worker_env(device: str | None = None, workers: int = 1) -> dict[str, str]:
    """Environment for a process that will run training (set before JAX starts):
    single-threaded XLA CPU, the JAX platform for `device` ("cpu" | "gpu" | None/"auto"),
    and no whole-GPU preallocation when several workers share one GPU."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    flags += [f for f in WORKER_XLA_FLAGS if f.split("=")[0] not in {x.split("=")[0] for x in flags}]
    env = {"XLA_FLAGS": " ".join(flags), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if device in ("cpu", "gpu"):
        env["JAX_PLATFORMS"] = gpu_platform() if device == "gpu" else "cpu"
    if device == "gpu" and workers > 1:
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    return env


def gpu_platforms_installed() -> list[str]:
    """JAX's GPU platforms whose plugins are installed ("cuda", "rocm"), without starting JAX."""
    from importlib import metadata

    names = {(d.metadata["Name"] or "").lower().replace("_", "-") for d in metadata.distributions()}
    return [p for p in ("cuda", "rocm") if any(n.startswith(f"jax-{p}") for n in names)]


def gpu_platform() -> str:
    """The JAX platform for --device gpu. Not JAX's alias "gpu": an explicit JAX_PLATFORMS
    list fails unless *every* platform it names starts, and "gpu" names both cuda and rocm."""
    return (gpu_platforms_installed() or ["cuda"])[0]


def jax_started() -> bool:
    """Whether this process's JAX backend is running (then XLA_FLAGS and the platform are fixed)."""
    if "jax" not in sys.modules:
        return False
    try:  # a private function: if a JAX release moves it, say "not started" (configuring then only does too little)
        from jax._src import xla_bridge

        return xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):
        return False


def configure_this_process(env: dict[str, str]) -> bool:
    """Apply `env` to this process if JAX has not started yet; returns whether it could."""
    if jax_started():
        return False
    os.environ.update(env)
    if "jax" in sys.modules and "JAX_PLATFORMS" in env:  # jax read the variable when imported
        import jax

        jax.config.update("jax_platforms", env["JAX_PLATFORMS"])
    return True


def configure_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache in `<vglab cache>/jax` (or
    $VGLAB_JAX_CACHE; "off" disables it), unless the user configured one. Compiling a
    group's program takes seconds and its training often less, so re-runs and the
    second worker that meets the same program load it instead."""
    import jax

    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    path = os.environ.get("VGLAB_JAX_CACHE")
    if path is None:
        from vglab.data import default_cache_dir

        path = str(default_cache_dir() / "jax")
    if path.lower() in ("", "0", "off", "none"):
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", PERSISTENT_CACHE_MIN_COMPILE_SECS)
    return path


_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration", "/jax/compilation_cache/cache_retrieval_time_sec")
_compile_seconds = [0.0, False, 0]  # total, listener registered, programs loaded from the persistent cache


def compile_seconds() -> float:
    """Seconds this process has spent tracing, lowering and compiling JAX programs (or
    loading them from the compilation cache), from JAX's own monitoring events."""
    if not _compile_seconds[1]:
        import jax

        def listen(event, duration, **_):
            if event in _COMPILE_EVENTS:
                _compile_seconds[0] += duration

        def count(event, **_):
            if event == "/jax/compilation_cache/cache_hits":
                _compile_seconds[2] += 1

        jax.monitoring.register_event_duration_secs_listener(listen)
        jax.monitoring.register_event_listener(count)
        _compile_seconds[1] = True
    return _compile_seconds[0]


def cache_hits() -> int:
    """Programs this process has loaded from the persistent compilation cache (after a
    first `compile_seconds()` call): a task whose count did not grow compiled its own."""
    compile_seconds()
    return _compile_seconds[2]


# ------------------------------------------------------------------ running tasks
def run_tasks(tasks, on_event, workers: int | None = None, env: dict[str, str] | None = None, pin: bool = True,
              programs=None) -> None:
    """Run `tasks` [(key, fn, args)] on `workers` processes (default: one per core; 1:
    in this process) and deliver their events to `on_event(kind, key, payload)`.
    `programs` (optional, one hashable per task) names what each task compiles (see
    Scheduling above)."""
    tasks = list(tasks)
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    programs = list(programs) if programs is not None else list(range(len(tasks)))
    if len(programs) != len(tasks):
        raise ValueError(f"give one program per task: {len(programs)} programs for {len(tasks)} tasks")
    if not tasks:
        return
    if workers == 1:
        _run_inline(tasks, on_event)
    else:
        _run_pool(tasks, on_event, min(workers, len(tasks)), env or {}, pin, programs)


class _Dispatcher:
    """Which task each worker gets next (see Scheduling in the module docstring)."""

    def __init__(self, programs: list, workers: int, depth: int = 2):
        self.programs, self.depth = programs, depth
        self.pending = list(range(len(programs)))  # in the caller's order
        self.held = [set() for _ in range(workers)]  # programs each worker has (or will have) in memory
        self.compiled: set = set()  # programs in the compilation cache (a task said "compiled" or is done)
        self.queued = [0] * workers  # tasks sent to each worker and not done

    def compiled_by(self, task: int) -> None:
        self.compiled.add(self.programs[task])

    def done(self, worker: int, task: int) -> None:
        self.queued[worker] -= 1
        self.compiled_by(task)  # (if the task did not say so earlier)

    def take(self, worker: int) -> int | None:
        """The next task for `worker`, or None if it should wait (or stop: `pending` empty)."""
        if self.queued[worker] >= self.depth or not self.pending:
            return None
        if self.queued[worker] and min(self.queued) == 0:
            # A task queued behind this worker's would wait while another worker idles
            # (perhaps only until this worker's program is compiled): r-sweep's two
            # tasks of one program both went to worker 0, 73 s instead of 46.
            return None
        started = set().union(*self.held)
        for ok in (lambda p: p in self.held[worker] or p not in started, lambda p: p in self.compiled):
            for i in self.pending:
                if ok(self.programs[i]):
                    self.pending.remove(i)
                    self.held[worker].add(self.programs[i])
                    self.queued[worker] += 1
                    return i
        return None  # only programs another worker is compiling now: wait until they are cached


def _run_inline(tasks, on_event) -> None:
    configure_compilation_cache()
    with pinned_to_one_core() as core:
        for key, fn, args in tasks:
            on_event("start", key, {"pid": os.getpid(), "core": core})
            out = fn(*args, emit=lambda kind, payload=None, key=key: on_event(kind, key, payload))
            on_event("done", key, out)


@contextlib.contextmanager
def pinned_to_one_core():
    """Run this process on one core for a while (restored after). XLA CPU splits some
    loops and reductions by the number of cores it may use, which changes float32
    summation order: pinned, a run here gives the same numbers as in a pinned worker."""
    if not hasattr(os, "sched_setaffinity"):
        yield None
        return
    old = os.sched_getaffinity(0)
    core = min(old)
    os.sched_setaffinity(0, {core})
    try:
        yield core
    finally:
        os.sched_setaffinity(0, old)


@contextlib.contextmanager
def environ(env: dict[str, str]):
    """Set `env` for the `with` block, then restore what was there (workers started in it
    copy the parent's environment; Ray reads its settings from it)."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_pool(tasks, on_event, workers: int, env: dict[str, str], pin: bool, programs: list) -> None:
    ctx = mp.get_context("spawn")
    event_q = ctx.Queue()
    task_qs = [ctx.Queue() for _ in range(workers)]
    # Which task each worker runs, written before it starts one: shared memory, so it is
    # known even if the worker dies before its queued "start" event is flushed.
    current = ctx.Array("i", [-1] * workers)
    dispatcher, stopped = _Dispatcher(programs, workers), [False] * workers
    sent, running = [collections.deque() for _ in range(workers)], [-1] * workers

    def feed() -> None:
        for w in range(workers):
            while not stopped[w] and (i := dispatcher.take(w)) is not None:
                sent[w].append(i)
                task_qs[w].put((i, *tasks[i]))
            if not dispatcher.pending and not stopped[w]:
                task_qs[w].put(None)  # the stop sign, after the worker's last task
                stopped[w] = True

    feed()
    cores = available_cores()
    procs = []
    with environ(env):
        for i in range(workers):
            core = cores[i % len(cores)] if pin else None
            p = ctx.Process(target=_worker, args=(i, core, task_qs[i], event_q, current, os.getpid()),
                            name=f"vglab-worker-{i}", daemon=True)
            p.start()
            procs.append(p)
    remaining = len(tasks)
    keys = [key for key, _, _ in tasks]
    try:
        while remaining:
            try:
                kind, worker, key, payload = event_q.get(timeout=0.5)
            except queue.Empty:
                _check_alive(procs, current, keys, event_q, on_event)
                continue
            if kind == "error":
                raise WorkerError(f"task {key} failed in worker {worker}:\n{payload}")
            if kind == "start":
                running[worker] = sent[worker].popleft()  # a worker runs its queue in order
            elif kind == "compiled":
                dispatcher.compiled_by(running[worker])
                feed()
            elif kind == "done":
                remaining -= 1
                dispatcher.done(worker, running[worker])
                feed()
            on_event(kind, key, payload)
            if remaining:
                _check_alive(procs, current, keys, event_q, on_event)
    finally:
        _stop(procs, graceful=remaining == 0)


def _check_alive(procs, current, keys, event_q, on_event) -> None:
    dead = [(i, p.exitcode) for i, p in enumerate(procs) if p.exitcode not in (None, 0)]
    if not dead:
        return
    # Deliver what the dead worker (and the others) already sent, then fail.
    with contextlib.suppress(queue.Empty):
        while True:
            kind, worker, key, payload = event_q.get(timeout=0.2)
            if kind not in ("error",):
                on_event(kind, key, payload)
    i, code = dead[0]
    what = f" while running task {keys[current[i]]}" if current[i] >= 0 else ""
    why = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    hint = " (out of memory?)" if code == -signal.SIGKILL else ""
    raise WorkerError(f"worker {i} died ({why}){what}{hint}")


def _stop(procs, graceful: bool) -> None:
    for p in procs:
        if graceful:
            p.join(timeout=10)
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join()


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this worker when its parent dies (a killed sweep leaves no orphans)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _worker(index: int, core: int | None, task_q, event_q, current, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    configure_compilation_cache()

    def emitter(key):
        def emit(kind, payload=None):
            if os.getppid() != parent_pid:
                os._exit(1)
            event_q.put((kind, index, key, payload))
        return emit

    while True:
        item = task_q.get()
        if item is None:
            break
        number, key, fn, args = item
        current[index] = number
        event_q.put(("start", index, key, {"pid": os.getpid(), "core": core}))
        try:
            out = fn(*args, emit=emitter(key))
        except BaseException:  # noqa: BLE001 - reported to the parent, which stops the sweep
            event_q.put(("error", index, key, traceback.format_exc()))
            continue
        event_q.put(("done", index, key, out))
        current[index] = -1
