"""The per-core worker pool: pinning, environment, events, failures, task planning."""

import os

import pytest
from experiments_helpers import vglab_cache  # noqa: F401

from vglab.train import parallel


def report_worker(tag, emit):
    """A task: where and how it runs."""
    emit("progress", tag)
    return {"tag": tag, "pid": os.getpid(), "cores": sorted(os.sched_getaffinity(0)),
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "platforms": os.environ.get("JAX_PLATFORMS")}


def failing_task(emit):
    emit("progress", "before")
    raise RuntimeError("boom in the worker")


def dying_task(emit):
    os._exit(3)


def _collect(tasks, **kw):
    events = []
    parallel.run_tasks(tasks, lambda kind, key, payload: events.append((kind, key, payload)), **kw)
    return events


def _check_pinned_single_threaded_with_events(events):
    """Each worker ran in its own process on its own core, single-threaded on the CPU, and
    reported start, progress, done for each of its tasks."""
    done = {key: payload for kind, key, payload in events if kind == "done"}
    for key, out in done.items():
        assert out["pid"] != os.getpid() and len(out["cores"]) == 1
        assert "--xla_cpu_multi_thread_eigen=false" in out["xla_flags"] and out["platforms"] == "cpu"
        kinds = [k for k, kk, _ in events if kk == key]
        assert kinds == ["start", "progress", "done"]
    core_of = {o["pid"]: tuple(o["cores"]) for o in done.values()}
    assert len(core_of) == 2 and len(set(core_of.values())) == len(core_of)  # each worker on its own core


def test_one_worker_runs_in_this_process_pinned_for_the_duration():
    before = os.sched_getaffinity(0)
    events = _collect([("t", report_worker, ("x",))], workers=1)
    out = events[-1][2]
    assert out["pid"] == os.getpid() and len(out["cores"]) == 1
    assert os.sched_getaffinity(0) == before


def test_a_failing_task_raises_with_its_traceback():
    with pytest.raises(parallel.WorkerError, match="(?s)task bad failed.*boom in the worker"):
        _collect([("bad", failing_task, ())], workers=2)


def test_a_dying_worker_is_reported():
    with pytest.raises(parallel.WorkerError, match="died \\(exit code 3\\) while running task dead"):
        _collect([("dead", dying_task, ()), ("ok", report_worker, (1,))], workers=2)


def test_dispatcher_keeps_programs_on_their_worker_and_never_compiles_one_twice():
    """Worker 0 compiles A, worker 1 starts B (not a second A); each takes the first task,
    in the given order, of its own programs or of one nobody has started; another
    worker's program only once it is compiled."""
    d = parallel._Dispatcher(["A", "A", "B", "C", "A", "B"], workers=2, depth=1)
    assert (d.take(0), d.take(1)) == (0, 2)
    assert d.take(0) is None  # at its depth
    d.done(0, 0)
    assert d.take(0) == 1  # its own program
    d.done(1, 2)
    assert d.take(1) == 3  # a program nobody has started, first in order (before its own B)
    d.done(1, 3)
    assert d.take(1) == 5
    d.done(1, 5)
    assert d.take(1) == 4 and d.pending == []  # A is compiled (a task of it is done): worker 1 loads it

    d = parallel._Dispatcher(["A", "A"], workers=2)
    assert d.take(0) == 0 and d.take(0) is None  # not queued behind task 0 while worker 1 idles
    assert d.take(1) is None  # A is being compiled by worker 0
    d.compiled.add("A")
    assert d.take(1) == 1  # the idle worker gets it, loading A from the cache
    d = parallel._Dispatcher(["A", "B", "A", "B"], workers=2)
    assert (d.take(0), d.take(1), d.take(0), d.take(1)) == (0, 1, 2, 3)  # both busy: one queued behind each
    d = parallel._Dispatcher(["A", "A", "A"], workers=2, depth=1)
    assert d.take(0) == 0 and d.take(1) is None  # A is being compiled by worker 0: wait
    d.compiled.add("A")  # worker 0's task said "compiled"
    assert d.take(1) == 1


def compiling_task(tag, emit):
    emit("compiled")
    return {"tag": tag, "pid": os.getpid()}


@pytest.mark.parametrize("say_compiled", [False, True])
def test_tasks_of_one_program_wait_for_its_first_compile(say_compiled):
    """Every task runs once; the second worker starts the program only after the first
    said "compiled" (or finished a task). The pool without "compiled" events also shows
    the workers pinned, single-threaded and reporting events (one pool for both checks:
    starting a worker costs 2.5 CPU-s of imports)."""
    fn = compiling_task if say_compiled else report_worker
    tasks = [(f"t{i}", fn, (i,)) for i in range(5)]
    flags_before = os.environ.get("XLA_FLAGS")
    events = _collect(tasks, workers=2, programs=["P"] * 5, env=parallel.worker_env("cpu", 2))
    assert os.environ.get("XLA_FLAGS") == flags_before  # the parent's environment is restored
    done = {key: payload for kind, key, payload in events if kind == "done"}
    assert sorted(done) == [f"t{i}" for i in range(5)]
    first_pid = done["t0"]["pid"]
    later = [i for i, (kind, key, _) in enumerate(events) if kind == "start" and done[key]["pid"] != first_pid]
    ready = next(i for i, (kind, _, _) in enumerate(events) if kind == ("compiled" if say_compiled else "done"))
    assert later, events  # the second worker ran some: else the order below says nothing
    assert all(i > ready for i in later)
    if not say_compiled:
        _check_pinned_single_threaded_with_events(events)


def test_programs_must_match_the_tasks():
    with pytest.raises(ValueError, match="one program per task"):
        _collect([("t", report_worker, (1,))], workers=2, programs=["A", "B"])


def test_tasks_split_to_fill_the_workers(tmp_path):
    from experiments_helpers import write_spec

    from vglab.experiments import runner
    from vglab.experiments.spec import load_spec

    spec = load_spec(write_spec(tmp_path, extra=""), seeds=[0, 1, 2, 3])
    job = runner._Job(spec, tmp_path, set(), [u for u in spec.units() if u.group == "mlp-1x4-tanh-normal"])
    shapes = runner._prepare_data([job], None)
    one = runner._tasks([job], None, 1, shapes)
    assert len(one) == 1 and len(one[0].units) == 4  # one group, one task: one compile
    four = runner._tasks([job], None, 4, shapes)
    assert len(four) == 4 and sorted(len(t.units) for t in four) == [1, 1, 1, 1]  # every core busy
    assert sorted(u.id for t in four for u in t.units) == sorted(u.id for u in job.units)


def test_each_programs_first_task_comes_before_any_second(tmp_path):
    """Two workers starting two tasks of one program would both compile it."""
    from experiments_helpers import write_spec

    from vglab.experiments import runner
    from vglab.experiments.spec import load_spec

    shallow = write_spec(tmp_path, name="shallow")
    deep = tmp_path / "deep.toml"
    deep.write_text(shallow.read_text().replace("depth = 1", "depth = 3"))
    jobs = [runner._Job(s, tmp_path / s.name, set(), list(s.units()))
            for s in (load_spec(p, seeds=[0, 1, 2, 3]) for p in (shallow, deep))]
    shapes = runner._prepare_data(jobs, None)
    tasks = runner._tasks(jobs, None, 12, shapes)
    # A program is set by the network and the grid size, not the init family, and MLP
    # units of 1 or 2 runs both train 8 members: one program per depth here.
    assert {t.task.model.depth for t in tasks} == {1, 3} and len(tasks) >= 4
    assert {t.task.model.depth for t in tasks[:2]} == {1, 3}  # both firsts, then the rest


def test_experiments_with_big_reports_finish_training_first(tmp_path):
    """A report is drawn on one core after its experiment's last task: the deep net's
    (more layers to draw) must not be the one left drawing when training ends."""
    from experiments_helpers import write_spec

    from vglab.experiments import runner
    from vglab.experiments.spec import load_spec

    shallow = write_spec(tmp_path, name="shallow")
    deep = tmp_path / "deep.toml"
    deep.write_text(shallow.read_text().replace("depth = 1", "depth = 3"))
    shallow.write_text(shallow.read_text().replace("epochs = 2", "epochs = 5000"))  # its tasks are the longest
    jobs = [runner._Job(s, tmp_path / s.name, set(), list(s.units()))
            for s in (load_spec(p, seeds=[0, 1, 2, 3]) for p in (shallow, deep))]
    tasks = runner._tasks(jobs, None, 12, runner._prepare_data(jobs, None))
    rest = [t.key.split("/")[0] for t in tasks[2:]]  # after each program's first task
    assert set(rest) == {"shallow", "deep"}
    assert rest == sorted(rest, key=lambda name: name != "deep"), rest


def test_small_mlp_units_train_padded_grids_and_large_ones_their_runs():
    """Padding to 8 members shares one program between units of 1-8 runs of a small net; a
    large net's members cost their multiply-adds, so its units train their runs. Every preset's
    MLP units but deep-remedies' (50x128 and 20x128 nets) keep their 8-member grids, on MNIST's
    raw 784 pixels too (wider than any input a preset's MLP sees): their numbers do not change."""
    from vglab import nn
    from vglab.experiments import runner
    from vglab.experiments.spec import load_spec, preset_names

    small, large = nn.mlp(20, 8, 64), nn.mlp(50, 128, 64)
    assert [runner.grid_slots("mlp", k, small) for k in (1, 2, 4, 5, 8, 9, 20)] == [8, 8, 8, 8, 8, 9, 20]
    assert [runner.grid_slots("mlp", k, large) for k in (1, 3, 8, 9)] == [1, 3, 8, 9]
    assert runner.grid_slots("cnn", 1, small) == 1
    units = {(u.runs[0].model_spec(), len(u.runs)): name for name in preset_names() if name != "deep-remedies"
             for u in load_spec(name).units(one_run_inputs=runner.ONE_RUN_INPUTS, max_runs=runner.MLP_SLOTS)}
    unpadded = {name for (model, runs), name in units.items()
                if model.kind == "mlp" and runner.grid_slots("mlp", runs, model.build((784,), 10)) < 8}
    assert not unpadded and len({name for name in units.values()}) > 10


def test_on_complete_sees_each_experiment_finished_before_the_run_ends(tmp_path, vglab_cache):
    from experiments_helpers import write_spec

    from vglab.experiments import runner
    from vglab.experiments.spec import load_spec
    from vglab.results import store

    specs = [load_spec(write_spec(tmp_path, name=n), seeds=[0]) for n in ("first", "second")]
    outs = [tmp_path / "out" / s.name for s in specs]
    seen = []

    def on_complete(out):
        meta = store.load(out).meta
        assert meta["invocations"][-1]["finished"] is not None
        assert len(store.completed_run_ids(out)) == len(specs[0].expand())
        seen.append(out)

    runner.run_experiments(specs, outs, workers=1, on_complete=on_complete)
    assert sorted(seen) == sorted(outs)
    seen.clear()
    runner.run_experiments(specs, outs, workers=1, on_complete=on_complete)  # nothing to train: still called
    assert sorted(seen) == sorted(outs)
