"""One experiment end to end, as a user runs it, with the wall time split into its parts.

    python benchmarks/end_to_end.py                                  # r-sweep on MNIST (../shared/data or $VGLAB_DATA)
    python benchmarks/end_to_end.py --preset many-layers --dataset digits
    python benchmarks/end_to_end.py --warm                           # reuse the JAX compilation cache

Runs `vglab run PRESET --dataset DATASET --quiet` in a fresh process with an empty JAX
compilation cache (unless --warm) and a fresh results folder, and prints:
- wall: the whole command, interpreter start to exit;
- prepare: reading the dataset and its PCA projection, in the parent (meta.json);
- compile: tracing, lowering and compiling (or loading) programs, summed over the tasks
  (JAX's own monitoring events; CPU-seconds across workers, so it can exceed wall);
- train: the tasks' time minus their compile time (CPU-seconds across workers);
- start/store: what is left of wall (imports, spawning workers, writing results).
Run it on an otherwise idle machine: it measures wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="r-sweep")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--data-dir", default=None, help="default: $VGLAB_DATA, else ../shared/data")
    ap.add_argument("--warm", action="store_true", help="keep one JAX compilation cache across repeats")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more arguments for `vglab run`")
    args = ap.parse_args()
    data_dir = args.data_dir or os.environ.get("VGLAB_DATA") or str(Path(__file__).resolve().parents[2] / "shared" / "data")
    root = Path(tempfile.mkdtemp(prefix="vglab-e2e-"))
    print(f"vglab run {args.preset} --dataset {args.dataset}  ({'warm' if args.warm else 'cold'} compilation cache)")
    print(f"{'run':>3} {'wall s':>7} {'prepare s':>9} {'compile cpu-s':>13} {'train cpu-s':>11} {'start/store s':>13}")
    try:
        for i in range(args.repeat):
            cache = root / ("jax" if args.warm else f"jax{i}")
            out = root / f"out{i}"
            env = {**os.environ, "VGLAB_JAX_CACHE": str(cache)}
            cmd = [sys.executable, "-m", "vglab.cli", "run", args.preset, "--dataset", args.dataset, "--data-dir",
                   data_dir, "--out", str(out), "--quiet", *args.extra]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            call = json.loads((out / "meta.json").read_text())["invocations"][-1]
            tasks = call.get("tasks", [])
            compile_s = sum(t.get("compile_seconds", 0.0) for t in tasks)
            train_s = sum(t["seconds"] for t in tasks) - compile_s
            prepare = call.get("prepare_seconds", 0.0)
            workers = max(1, call.get("workers", 1))
            rest = wall - prepare - (compile_s + train_s) / workers
            print(f"{i:>3} {wall:>7.1f} {prepare:>9.1f} {compile_s:>13.1f} {train_s:>11.1f} {rest:>13.1f}", flush=True)
        print(f"workers: {workers}; start/store = wall - prepare - (compile + train) / workers")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
