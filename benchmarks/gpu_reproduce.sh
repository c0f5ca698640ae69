#!/usr/bin/env bash
# The whole MNIST study on a lent GPU machine, in one run of at most 10 minutes there
# (benchmarks/gpu_reproduce.py says what it measures). That machine's python3 has JAX (CUDA),
# Optax, pandas, pyarrow, matplotlib, scikit-learn, Typer and Rich, not pydantic and tomli-w:
# carry their wheels (Python 3.12, manylinux) in gpu-wheels/ (ignored by git), made here with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#     -d gpu-wheels pydantic pydantic_core annotated-types typing-inspection typing_extensions tomli_w
# (versions as in this venv), and MNIST's four .gz files in gpu-data/mnist/ (ignored too); there:
#   bash benchmarks/gpu_reproduce.sh --data-dir gpu-data --budget 540
# Small on a CPU (a smoke test of every stage): bash benchmarks/gpu_reproduce.sh --small
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ -d gpu-wheels ] && ! "$PY" -c "import pydantic, tomli_w" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/vglab-site \
    gpu-wheels/*.whl
  export PYTHONPATH="/tmp/vglab-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export VGLAB_JAX_CACHE="${VGLAB_JAX_CACHE:-$(mktemp -d)}"  # cold: compilation is part of the measurement
exec "$PY" benchmarks/gpu_reproduce.py "$@"
