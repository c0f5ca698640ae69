"""The whole MNIST study on one GPU, measured end to end (benchmarks/gpu_reproduce.sh runs it).

    python benchmarks/gpu_reproduce.py --budget 540          # on the GPU machine: every stage, in 540 s at most
    python benchmarks/gpu_reproduce.py --small               # a smoke run on the CPU: digits, 2 presets, 1 epoch

A lent GPU machine gives one run of at most 10 minutes, so the stages run as separate
processes, each under its share of `--budget` (a stage that runs out is stopped, its
workers with it, and the next one starts; what it printed stays in the log):
1. `agree`: the device and its FP32 peak (a table of known GPUs; TF32 is off: vglab asks for
   full float32 products, see vglab.nn.networks.PRECISION), and the largest relative
   difference GPU vs CPU of a 4-member group's losses and gradient statistics
   (benchmarks/gpu_check.py, ~1e-6 expected);
2. `study`: `reproduce` on MNIST, every preset (or `--presets`) at full size (3 seeds, full
   epochs, CNNs included), reports included, on `--workers` processes (default 1, the
   runner's GPU default: on an H200, 8 processes sharing the GPU ran each MLP group ~20x
   slower than it runs alone, since the GPU time-slices between processes and the CNN
   groups kept it busy). Prints one line per finished group, then the wall time split into training
   (compile and train, summed over the workers' tasks) and the reports written after the
   last group, the claims' verdicts, and per CNN group model-epochs/s and achieved TFLOP/s
   against the peak (FLOPs: 6 per multiply-add of the forward pass per example, forward
   plus backward, as benchmarks/train_speed.py counts them);
3. `curve`: K = 1 ... 512 members of the 1x8 MLP in one vmapped program (all probes),
   seconds per epoch and model-epochs/s: where the device saturates;
4. `cnn_curve`: the same for the study's CNN (cnn-large-params' network), K = 4 (what the
   runner trains per program on a GPU today: one seed's 4 arms), 12 (the group's 3 seeds in
   one program) and 24, on `--cnn-train` examples, with TFLOP/s against the peak: whether
   a GPU unit should hold a whole group (on an H200, 4 members reached 11 % of the FP32 peak).
MNIST comes from --data-dir (or $VGLAB_DATA). CIFAR-10 is not part of the study's MNIST
run; its 180 MB do not travel to a lent GPU machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# FP32 (non-tensor-core) peak in TFLOP/s, from the vendors' data sheets.
FP32_PEAK = {"H200": 67.0, "H100": 67.0, "A100": 19.5, "L40S": 91.6, "A10": 31.2, "V100": 15.7, "T4": 8.1}
# --small, the CPU smoke run (tests/test_benchmarks.py): every stage's code once, at the least that shows it.
# One CNN compile on a CPU is ~15 s: one point, on 96 examples (3 steps of 32; 320 examples' epoch took
# 1.3 s against 2.7 s on all 1437 of digits, 2-core machine under load; the per-epoch probes are the rest).
SMALL = {"dataset": "digits", "presets": ["large-params", "cnn-large-params"], "epochs": 1, "seeds": 1, "max_k": 2,
         "cnn_ks": (2,), "cnn_train": 96}
CNN_KS = (4, 12, 24)


def _peak(device: str) -> float | None:
    return next((v for k, v in FP32_PEAK.items() if k.lower() in device.lower()), None)


def _device_line() -> tuple[str, float | None]:
    import jax

    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", str(dev))
    return f"{dev.platform} {kind}", _peak(kind)


def stage_agree(args) -> None:
    import jax
    from gpu_check import agreement  # benchmarks/gpu_check.py

    name, peak = _device_line()
    print(f"device: {name} (FP32 peak {peak or '?'} TFLOP/s), jax {jax.__version__}", flush=True)
    if jax.default_backend() == "cpu":
        print("no GPU: the agreement check compares a device with itself; skipped", flush=True)
        return
    agreement(2000)


def stage_study(args) -> None:
    # Several processes share the GPU: none may take most of its memory up front (this one included).
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    import vglab
    from vglab.experiments import runner
    from vglab.experiments.spec import REPRODUCE, load_spec
    from vglab.report import claims
    from vglab.train import parallel

    device = "gpu" if parallel.gpu_platforms_installed() and not args.small else "cpu"
    presets = args.presets.split(",") if args.presets else SMALL["presets"] if args.small else list(REPRODUCE)
    small = {"epochs": SMALL["epochs"], "seeds": SMALL["seeds"]} if args.small else {}
    out = Path(args.out)
    t0 = time.perf_counter()
    vglab.reproduce(args.dataset, out=out, presets=presets, data_dir=args.data_dir, workers=args.workers,
                    device=device, progress=True, **small)
    wall = time.perf_counter() - t0
    name, peak = _device_line()
    metas = {p: json.loads((out / p / "meta.json").read_text())["invocations"][-1] for p in presets}
    tasks = [(p, t) for p, m in metas.items() for t in m.get("tasks", [])]
    compile_s = sum(t.get("compile_seconds", 0.0) for _, t in tasks)
    train_s = sum(t["seconds"] - t.get("compile_seconds", 0.0) for _, t in tasks)
    trained = max(m.get("seconds", 0.0) for m in metas.values())  # the last experiment's runs stored
    print(f"\nreproduce --dataset {args.dataset}, {len(presets)} presets on {name}, {args.workers} workers: "
          f"{wall:.1f} s wall in all, reports included. Training until the last group: {trained:.1f} s "
          f"(worker-seconds: compile {compile_s:.1f}, train {train_s:.1f}); reports after it: {wall - trained:.1f} s",
          flush=True)

    results = [vglab.load_results(out / p) for p in presets]
    print(f"\n{'claim':<28} {'verdict':<16} measured")
    for claim, outcome in claims.evaluate(results):
        if outcome.verdict != "not run":
            print(f"{claim.id:<28} {outcome.verdict:<16} {outcome.measured}", flush=True)

    print(f"\n{'CNN preset':<24} {'runs':>4} {'epochs':>6} {'train s':>8} {'model-ep/s':>10} {'TFLOP/s':>8} {'of peak':>7}")
    for p in presets:
        spec = load_spec(p, dataset=args.dataset, **small)
        runs = spec.expand()
        if runs[0].model_spec().kind != "cnn":
            continue
        arrays = runner._arrays(runner._data_key(runs[0], args.data_dir))
        model = runs[0].model_spec().build(arrays.x_train.shape[1:], arrays.n_classes)
        macs = sum(runner._macs(model).values())
        secs = max(sum(t["seconds"] - t.get("compile_seconds", 0.0) for q, t in tasks if q == p), 1e-9)
        tflops = 6 * macs * arrays.x_train.shape[0] * len(runs) * spec.epochs / secs / 1e12
        print(f"{p:<24} {len(runs):>4} {spec.epochs:>6} {secs:>8.1f} {len(runs) * spec.epochs / secs:>10.2f} "
              f"{tflops:>8.2f} {(f'{100 * tflops / peak:.0f} %') if peak else '?':>7}", flush=True)
    print(f"results: {out}", flush=True)


def stage_curve(args) -> None:
    from vglab import nn
    from vglab.experiments import runner
    from vglab.nn import init
    from vglab.train import Member, TrainConfig, train_group

    arrays = runner._arrays(runner.DataKey(args.dataset, "mlp", args.data_dir, None, None))
    net = nn.mlp(1, 8, arrays.x_train.shape[1])
    print(f"\ngroup-size curve, 1x8 MLP, all probes, {arrays.x_train.shape[0]} examples")
    print(f"{'K':>5} {'s/epoch':>8} {'model-ep/s':>10} {'compile s':>13}", flush=True)
    k = 1
    while k <= args.max_k:
        members = [Member(seed=i % 8, weight_init=init.normal(std=10.0), l2=0.01 * (1 + i // 8)) for i in range(k)]
        res = train_group(net, arrays, members, TrainConfig(epochs=3, probes="full"))
        sec = res[0].epochs.seconds.to_numpy()  # rows: the initial record (compiles the probes), epochs 1-3
        s = float(sec[2])  # epoch 2: compiled, and before the last (which adds the end-of-training probes)
        print(f"{k:>5} {s:>8.3f} {k / s:>10.1f} {float(sec[0] + sec[1] - s):>13.1f}", flush=True)
        k *= 4 if k < args.max_k // 4 else 2


def stage_cnn_curve(args) -> None:
    from dataclasses import replace

    from vglab.experiments import runner
    from vglab.experiments.spec import load_spec
    from vglab.nn import init
    from vglab.train import Member, TrainConfig, train_group

    run = load_spec("cnn-large-params", dataset=args.dataset).expand()[0]
    arrays = runner._arrays(runner._data_key(run, args.data_dir))
    n = min(args.cnn_train, arrays.x_train.shape[0])
    arrays = replace(arrays, x_train=arrays.x_train[:n], y_train=arrays.y_train[:n])
    net = run.model_spec().build(arrays.x_train.shape[1:], arrays.n_classes)
    macs = sum(runner._macs(net).values())
    name, peak = _device_line()
    print(f"\ngroup-size curve, {net.name} (cnn-large-params), all probes, {n} examples, on {name}")
    print(f"{'K':>5} {'s/epoch':>8} {'ms/step':>8} {'model-ep/s':>10} {'TFLOP/s':>8} {'of peak':>7} {'compile s':>9}",
          flush=True)
    arms = [(std, l2) for std in (10.0, 1.0) for l2 in (0.0, 0.01)]  # the preset's 4 arms; seeds make K
    for k in SMALL["cnn_ks"] if args.small else CNN_KS:
        members = [Member(seed=i // len(arms), weight_init=init.normal(std=arms[i % len(arms)][0]),
                          l2=arms[i % len(arms)][1]) for i in range(k)]
        res = train_group(net, arrays, members, TrainConfig(epochs=3, probes="full"))
        sec = res[0].epochs.seconds.to_numpy()  # as in stage_curve: epoch 2 is the steady one
        s = float(sec[2])
        tflops = 6 * macs * n * k / s / 1e12
        print(f"{k:>5} {s:>8.3f} {1e3 * s / (n // 32):>8.2f} {k / s:>10.2f} {tflops:>8.3f} "
              f"{(f'{100 * tflops / peak:.0f} %') if peak else '?':>7} {float(sec[0] + sec[1] - s):>9.1f}", flush=True)


STAGES = {"agree": (stage_agree, 0.10), "study": (stage_study, 0.56), "curve": (stage_curve, 0.16),
          "cnn_curve": (stage_cnn_curve, 0.18)}


def _stages(text: str) -> list[str]:
    stages = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise SystemExit(f"--stages: unknown stage(s) {unknown or text!r}; choose from {', '.join(STAGES)}, "
                         "comma-separated (e.g. --stages agree,cnn_curve)")
    return stages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--data-dir", default=os.environ.get("VGLAB_DATA"))
    ap.add_argument("--small", action="store_true", help="digits, two presets, one epoch and seed, K <= 2, "
                    f"at most {SMALL['cnn_train']} CNN examples")
    ap.add_argument("--out", default=None, help="results folder (default: a temporary one)")
    ap.add_argument("--presets", default=None, help="comma-separated presets for the study (default: all)")
    ap.add_argument("--workers", type=int, default=1, help="processes sharing the GPU in the study")
    ap.add_argument("--max-k", type=int, default=512)
    ap.add_argument("--cnn-train", type=int, default=12000, help="training examples in the CNN curve")
    ap.add_argument("--budget", type=float, default=540.0, help="seconds for all stages together")
    ap.add_argument("--stage", choices=list(STAGES), default=None, help="run one stage in this process")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages to run (default: all)")
    args = ap.parse_args()
    if args.small:
        args.dataset, args.max_k = SMALL["dataset"], SMALL["max_k"]
        args.cnn_train = min(args.cnn_train, SMALL["cnn_train"])
    args.out = args.out or tempfile.mkdtemp(prefix="vglab-gpu-")
    if args.stage:
        return STAGES[args.stage][0](args)
    # Each stage in its own process under its share of the budget (unused time passes on).
    chosen = {stage: STAGES[stage] for stage in _stages(args.stages)}
    t_end = time.perf_counter() + args.budget
    share_left = sum(f for _, f in chosen.values())
    for stage, (_, share) in chosen.items():
        left = t_end - time.perf_counter()
        limit = left * share / share_left
        share_left -= share
        cmd = [sys.executable, __file__, "--stage", stage, *sys.argv[1:], "--out", args.out]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, start_new_session=True)
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the stage and its workers
            proc.wait()
            rc = "stopped at its time limit"
        print(f"== stage {stage}: {time.perf_counter() - t0:.1f} s (limit {limit:.0f} s), exit {rc}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
