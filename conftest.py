"""Suite-wide setup: one persistent JAX compilation cache for the whole `pytest` run.

Most of the suite's time is compiling small programs (a tiny MLP's training step, its
probes, the report fixture's three groups). Each process keeps what it compiled in memory,
but the run has many processes: two xdist workers that meet the same programs, and every
`vglab` subprocess and runner worker a test starts. The first `pytest_configure` (the xdist
controller, or a plain run) makes one empty cache folder for the run and exports it as
$VGLAB_JAX_CACHE, which the workers and every subprocess inherit; each test process turns
the cache on at start (`configure_compilation_cache`, with vglab's threshold of 0.1 s of
compile time, so nearly every program is stored), so a program compiled anywhere in the
run is loaded everywhere else instead of compiled again. The folder is new for every run
(a fresh clone and a re-run cost the same, and nothing stale is ever read) and removed at
the end. A test that needs a cold compile gives its processes a private $VGLAB_JAX_CACHE
(tests/test_cost_model.py). $VGLAB_JAX_CACHE set before `pytest` starts is used as is.
"""

import os
import shutil
import tempfile

_OWNED = "VGLAB_TEST_JAX_CACHE_OWNER"  # the pid of the process that made the run's folder


def pytest_configure(config):
    if "VGLAB_JAX_CACHE" not in os.environ:
        os.environ["VGLAB_JAX_CACHE"] = tempfile.mkdtemp(prefix="vglab-test-jax-")
        os.environ[_OWNED] = str(os.getpid())
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return  # the xdist controller runs no test: it need not start JAX
    from vglab.train.parallel import configure_compilation_cache

    configure_compilation_cache()


def pytest_unconfigure(config):
    if os.environ.get(_OWNED) == str(os.getpid()):
        shutil.rmtree(os.environ.pop("VGLAB_JAX_CACHE"), ignore_errors=True)
        os.environ.pop(_OWNED, None)
