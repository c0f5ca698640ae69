#!/usr/bin/env bash
# The whole MNIST study on a lent GPU machine, in one run of at most 10 minutes there.
# On that machine python3 has JAX (CUDA), Optax, Equinox, pandas, pyarrow and matplotlib, but
# not the rest of vglab's dependencies: carry their wheels in gpu-wheels/ (ignored by git),
#   pip download -d gpu-wheels pydantic typer rich tomli-w threadpoolctl filelock
# and run, from the repository root there:
#   bash benchmarks/gpu_reproduce.sh --data-dir shared/data      (MNIST carried in the working tree)
# Small on a CPU (a smoke test): bash benchmarks/gpu_reproduce.sh --small
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d gpu-wheels ]; then
  python3 -m pip install -q --no-index --find-links gpu-wheels pydantic typer rich tomli-w threadpoolctl filelock 2>&1 | tail -2 || true
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export VGLAB_JAX_CACHE="${VGLAB_JAX_CACHE:-$(mktemp -d)}"
exec python3 benchmarks/gpu_reproduce.py "$@"
