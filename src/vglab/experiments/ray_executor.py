"""Run the runner's tasks on a Ray cluster: each task (a group's units) becomes one
`ray.remote` call, and its events come back to the runner, which stores the runs.

Without an address a local Ray instance is started (and stopped afterwards); with
`address` ("auto", "ray://host:10001", "host:6379") the tasks go to that cluster, whose
nodes need vglab installed and the dataset readable (a --data-dir path there, or the
download cache). Workers get the same single-threaded XLA environment as local workers,
so a run's numbers match the local executor's.

Progress is per task: a task's events (epochs, units) arrive together when it finishes.
Ray is optional: `pip install vglab[ray]`.
"""

from __future__ import annotations


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
    if started_here:
        kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False,
                  "runtime_env": {"env_vars": dict(env or {})}}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, **kwargs)
    try:
        remote = ray.remote(num_cpus=1)(_run)
        pending = {remote.remote(fn, args): key for key, fn, args in tasks}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            key = pending.pop(ready[0])
            events, out = ray.get(ready[0])
            on_event("start", key, {"ray": True})
            for kind, payload in events:
                on_event(kind, key, payload)
            on_event("done", key, out)
    finally:
        if started_here:
            ray.shutdown()
