"""The whole MNIST study on one GPU, measured end to end (benchmarks/gpu_reproduce.sh runs it).

    python benchmarks/gpu_reproduce.py                       # every preset, full size (3 seeds, full epochs)
    python benchmarks/gpu_reproduce.py --small               # a smoke run on the CPU: digits, 2 presets, 1 epoch

Prints:
1. the device and its FP32 peak (a table of known GPUs; TF32 is off: vglab asks for full
   float32 products, see vglab.nn.networks.PRECISION);
2. `reproduce` on MNIST, every preset: wall time split into training (compile and train,
   from JAX's monitoring events per task) and writing the reports;
3. per CNN group: model-epochs/s and achieved TFLOP/s against the peak (FLOPs: 6 per
   multiply-add of the forward pass per example, i.e. forward plus backward, as
   benchmarks/train_speed.py counts them; the runner's `_macs` gives the forward's);
4. a group-size curve: K = 1 ... 512 members of the 1x8 MLP in one vmapped program,
   seconds per epoch and model-epochs/s, showing where the device saturates.
MNIST comes from --data-dir (or $VGLAB_DATA). CIFAR-10 is not part of the study's MNIST
run; its 180 MB do not travel to a lent GPU machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# FP32 (non-tensor-core) peak in TFLOP/s, from the vendors' data sheets.
FP32_PEAK = {"H200": 67.0, "H100": 67.0, "A100": 19.5, "L40S": 91.6, "A10": 31.2, "V100": 15.7, "T4": 8.1}


def _peak(device: str) -> float | None:
    return next((v for k, v in FP32_PEAK.items() if k.lower() in device.lower()), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--data-dir", default=os.environ.get("VGLAB_DATA"))
    ap.add_argument("--small", action="store_true", help="digits, two presets, one epoch and seed, K <= 8")
    ap.add_argument("--out", default=None, help="results folder (default: a temporary one)")
    ap.add_argument("--max-k", type=int, default=512)
    args = ap.parse_args()
    import jax

    import vglab
    from vglab.experiments import runner
    from vglab.experiments.spec import REPRODUCE, load_spec

    dev = jax.devices()[0]
    peak = _peak(getattr(dev, "device_kind", str(dev)))
    print(f"device: {dev.platform} {getattr(dev, 'device_kind', dev)}  (FP32 peak {peak or '?'} TFLOP/s)", flush=True)
    dataset = "digits" if args.small else args.dataset
    presets = ["large-params", "cnn-large-params"] if args.small else list(REPRODUCE)
    small = {"epochs": 1, "seeds": 1} if args.small else {}
    out = Path(args.out or tempfile.mkdtemp(prefix="vglab-gpu-"))

    # 2. the study: training, then the reports
    t0 = time.perf_counter()
    vglab.reproduce(dataset, out=out, presets=presets, data_dir=args.data_dir, report=False, progress=False, **small)
    t_train = time.perf_counter() - t0
    compile_s = train_s = 0.0
    groups = []
    for p in presets:
        call = json.loads((out / p / "meta.json").read_text())["invocations"][-1]
        for t in call.get("tasks", []):
            compile_s += t.get("compile_seconds", 0.0)
            train_s += t["seconds"] - t.get("compile_seconds", 0.0)
            groups.append((p, t))
    t0 = time.perf_counter()
    from vglab.report import html

    pages = [html.write_report(out / p) for p in presets]
    html.write_index([out / p for p in presets], out / "index.html", refresh_pages=False)
    t_report = time.perf_counter() - t0
    print(f"reproduce --dataset {dataset}, {len(presets)} presets: training {t_train:.1f} s wall (compile {compile_s:.1f} s,"
          f" train {train_s:.1f} s), reports {t_report:.1f} s ({len(pages)} pages): {t_train + t_report:.1f} s in all",
          flush=True)

    # 3. CNN groups (each CNN preset is one group): throughput against the peak
    print(f"{'CNN preset':<24} {'runs':>4} {'epochs':>6} {'train s':>8} {'model-ep/s':>10} {'TFLOP/s':>8} {'of peak':>7}")
    for p in presets:
        spec = load_spec(p, dataset=dataset, **small)
        runs = spec.expand()
        if runs[0].model_spec().kind != "cnn":
            continue
        arrays = runner._arrays(runner._data_key(runs[0], args.data_dir))
        model = runs[0].model_spec().build(arrays.x_train.shape[1:], arrays.n_classes)
        macs = sum(runner._macs(model).values())
        secs = max(sum(t["seconds"] - t.get("compile_seconds", 0.0) for q, t in groups if q == p), 1e-9)
        tflops = 6 * macs * arrays.x_train.shape[0] * len(runs) * spec.epochs / secs / 1e12
        print(f"{p:<24} {len(runs):>4} {spec.epochs:>6} {secs:>8.1f} {len(runs) * spec.epochs / secs:>10.2f} "
              f"{tflops:>8.2f} {(f'{100 * tflops / peak:.0f} %') if peak else '?':>7}", flush=True)

    # 4. the group-size curve
    from vglab import nn
    from vglab.nn import init
    from vglab.train import Member, TrainConfig, train_group

    arrays = runner._arrays(runner.DataKey(dataset, "mlp", args.data_dir, None, None))
    net = nn.mlp(1, 8, arrays.x_train.shape[1])
    print(f"{'K':>5} {'s/epoch':>8} {'model-ep/s':>10}")
    k = 1
    while k <= (8 if args.small else args.max_k):
        members = [Member(seed=i % 8, weight_init=init.normal(std=10.0), l2=0.01 * (1 + i // 8)) for i in range(k)]
        res = train_group(net, arrays, members, TrainConfig(epochs=3, probes="full"))
        s = float(res[0].epochs.seconds.iloc[2])  # the second epoch: compiled, before the last
        print(f"{k:>5} {s:>8.3f} {k / s:>10.1f}", flush=True)
        k *= 2
    print(f"results: {out}")


if __name__ == "__main__":
    sys.exit(main())
