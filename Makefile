# The two commands of the README. Both create .venv/ on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

# The package and what `make run` needs (no Ray: the local executor runs the study).
$(BIN)/vglab: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e .
	touch $(BIN)/vglab

# The test extras on top (pytest, and Ray for the Ray executor's tests).
$(VENV)/.test-extras: $(BIN)/vglab
	$(BIN)/pip install -q -c constraints.txt -e ".[test,ray]"
	touch $(VENV)/.test-extras

install: $(BIN)/vglab

# The main job on the embedded dataset: reproduce the reference study on scikit-learn's digits.
run: install
	$(BIN)/vglab reproduce --dataset digits

# The whole test suite (slow tests on $VGLAB_DATA or ../shared/data run when either holds the data, skip when not),
# on two pytest processes: most of its time is single-threaded compiling and process start-up, so on the
# 2-core CI machine two processes took 802 s where one took 1,131 s (575 tests). `--dist worksteal`: each
# process takes one half of the tests in file order (a file's module fixture is built once, not in both,
# as `load`'s interleaved chunks did) and an idle one takes half of what the other has left. Both share
# one JAX compilation cache for the run, and compile without LLVM's optimization passes and without
# XLA's MLIR fusion emitters (conftest.py: a third of the compile time; what the tests check is unchanged).
test: $(VENV)/.test-extras
	$(BIN)/python -m pytest -q -n 2 --dist worksteal

.PHONY: install run test
