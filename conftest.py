"""Suite-wide setup: one persistent JAX compilation cache for the whole `pytest` run, and
XLA programs compiled without LLVM's optimization passes.

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

The same first `pytest_configure` adds `--xla_backend_optimization_level=0` to $XLA_FLAGS
(inherited the same way): XLA's CPU backend then skips LLVM's optimization passes, half of
the compile time, and the suite's programs run a few epochs on a few hundred examples, so
compiling is most of their cost. Measured (CPU seconds, each file alone, 2-core machine under
load; default level -> 0): tests/test_models.py 148 -> 75, tests/test_report_doctor.py
232 -> 152, tests/test_new_user.py 175 -> 125, tests/train/test_train_loop.py 113 -> 88,
tests/test_experiments_cnn.py 31 -> 11, tests/train/test_probes.py 28 -> 24; a
6x8 MLP's step with every probe compiled in 17.5 -> 8.6 s, while a steady epoch on digits
took 5x longer (11 -> 65 ms), which a test's few epochs do not notice. The tests check the
same behaviour: results agree with the optimized programs' up to the last bit of a rounding
(a multiply-add fused or not; as on another CPU, which the tests already allow for by
comparing floats from different programs with tolerances), and every process of the run
(xdist workers, subprocesses, runner and Ray workers) compiles at the same level, so
bit-identical comparisons inside the run still hold. A test about what users' programs cost
(tests/test_cost_model.py's run against the cost model) gives its processes XLA's defaults
(it drops the flags named in $VGLAB_TEST_XLA_FLAG_NAMES).
It also adds `--xla_cpu_use_fusion_emitters=false`: XLA's CPU backend then emits each fusion
with its classic elemental emitter instead of lowering it through MLIR's fusion emitters,
which took most of the remaining compile time. Measured (session 6, one process, CPU
seconds): a 3x8 MLP group's compile and 3 epochs with every probe 9.8 -> 5.3 (14.98 at the
default level without either flag); tests/test_models.py, tests/train/test_train_loop.py,
tests/train/test_probes.py and tests/test_nn_gradients.py together 194 -> 120 (38 passed
both ways); the whole suite on 2 workers 858 -> 721 s wall. The same fused HLO, emitted by the
older code generator: the same math up to a
rounding (the tests compare such floats with tolerances).
$XLA_FLAGS that already sets one of these flags keeps its value: `XLA_FLAGS=--xla_backend_optimization_level=3
make test` runs the suite on the optimized programs.
"""

import os
import shutil
import sys
import tempfile

_OWNED = "VGLAB_TEST_JAX_CACHE_OWNER"  # the pid of the process that made the run's folder
SUITE_FLAGS = "VGLAB_TEST_XLA_FLAG_NAMES"  # the names of the flags below, for a test that compiles as users do
OPT_LEVEL = "--xla_backend_optimization_level"
FUSION_EMITTERS = "--xla_cpu_use_fusion_emitters"
TEST_XLA_FLAGS = (f"{OPT_LEVEL}=0", f"{FUSION_EMITTERS}=false")  # what the suite adds to $XLA_FLAGS (see above)


def with_test_xla_flags(flags: str) -> str:
    """`flags` ($XLA_FLAGS) with the suite's flags added, where it sets none of them."""
    have = {f.split("=")[0] for f in flags.split()}
    return " ".join(flags.split() + [f for f in TEST_XLA_FLAGS if f.split("=")[0] not in have])


def _jax_started() -> bool:
    if "jax" not in sys.modules:
        return False
    from vglab.train.parallel import jax_started

    return jax_started()


def pytest_configure(config):
    if "VGLAB_JAX_CACHE" not in os.environ:
        os.environ["VGLAB_JAX_CACHE"] = tempfile.mkdtemp(prefix="vglab-test-jax-")
        os.environ[_OWNED] = str(os.getpid())
    if not _jax_started():  # (started already, by a plugin: its flags are fixed and must stay the run's)
        os.environ["XLA_FLAGS"] = with_test_xla_flags(os.environ.get("XLA_FLAGS", ""))
        os.environ[SUITE_FLAGS] = " ".join(f.split("=")[0] for f in TEST_XLA_FLAGS)  # for tests that drop them
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return  # the xdist controller runs no test: it need not start JAX
    from vglab.train.parallel import configure_compilation_cache

    configure_compilation_cache()


def pytest_unconfigure(config):
    if os.environ.get(_OWNED) == str(os.getpid()):
        shutil.rmtree(os.environ.pop("VGLAB_JAX_CACHE"), ignore_errors=True)
        os.environ.pop(_OWNED, None)
