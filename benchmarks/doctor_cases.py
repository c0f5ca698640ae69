"""Planted pathologies and healthy nets, diagnosed by `vglab doctor`: the confusion table.

    python benchmarks/doctor_cases.py                        # digits, 3 seeds per case
    python benchmarks/doctor_cases.py --data-dir ../shared/data --dataset mnist
    python benchmarks/doctor_cases.py --cases tanh-20x8-small,healthy-tanh-1x8 --seeds 1 --epochs 2
    python benchmarks/doctor_cases.py --json cases.json      # also the per-case numbers (for DESIGN.md's thresholds)

Each case trains with `vglab.run` (one worker, no progress) into OUT/<case>, is diagnosed with
`vglab.report.doctor.diagnose`, and counts per seed: a planted case is *found* in a seed when that
seed's run has its expected finding (with its expected cause, where one is expected); a healthy case
is clean in a seed when that run has no finding at all. The table is planted case × diagnosed
finding (cells: seeds whose run has that finding, over the case's seeds), then found/clean per case.
`--measure` prints the per-layer numbers the thresholds of `vglab.report.doctor` were set from.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Case:
    name: str
    spec: dict  # the keys of a spec file (name, dataset, epochs and seeds are filled in)
    expected: str | None  # the planted finding; None: a healthy net (no finding expected)
    cause: str | None = None  # the expected cause (None: any)
    note: str = ""
    extra: dict = field(default_factory=dict)


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

CASES = (
    Case("tanh-20x8-small", {"depth": 20, "width": 8, "activation": "tanh", "init": "normal(std=0.05)"},
         "vanishing", "weights", "20x8 tanh, N(0, std=0.05)"),
    Case("tanh-1x8-large", {"depth": 1, "width": 8, "activation": "tanh", "init": "normal(std=10)"},
         "saturated", "derivatives", "1x8 tanh, N(0, std=10)"),
    Case("sigmoid-20x8-glorot", {"depth": 20, "width": 8, "activation": "sigmoid", "init": "glorot_uniform"},
         "vanishing", "derivatives", "20x8 sigmoid, Glorot uniform"),
    # 5x32 (the remedy evidence and thresholds were measured on it) and the 5x64: the 5x64 net
    # once hung in the engine's observe program (jaxlib's batched LAPACK eigh deadlocking; the spectral
    # norm is now matrix products only, `probes.top_eigenvalue`).
    Case("relu-5x32-dead", {"depth": 5, "width": 32, "activation": "relu", "init": "he_normal",
                            "bias_init": "normal(std=10)"},
         "dead", None, "5x32 ReLU, He normal, biases N(0, std=10): units whose bias is far below zero never fire"),
    Case("relu-5x64-dead", {"depth": 5, "width": 64, "activation": "relu", "init": "he_normal",
                            "bias_init": "normal(std=10)"},
         "dead", None, "5x64 ReLU, He normal, biases N(0, std=10)"),
    Case("relu-20x64-2he", {"depth": 20, "width": 64, "activation": "relu", "init": "normal(sigma_w2=4)"},
         "exploding", "weights", "20x64 ReLU at twice He's variance (σ_w² = 4)"),
    # Trained by the user's own loop through `vglab.watch` + `vglab.Recorder` (not vglab's engine): layer dense2
    # of a 3x16 tanh MLP (Glorot) is masked out of the optimizer, optax.chain(optax.masked(set_to_zero), adam).
    Case("watched-masked-layer", {"watched": True, "depth": 3, "width": 16, "masked": "dense2"},
         "frozen", "optimizer", "a layer masked out of the optimizer (optax.masked), own loop with vglab.watch"),
    Case("healthy-tanh-1x8", {"depth": 1, "width": 8, "activation": "tanh", "init": "glorot_uniform"},
         None, None, "1x8 tanh, Glorot uniform"),
    Case("healthy-relu-5x32", {"depth": 5, "width": 32, "activation": "relu", "init": "he_normal"},
         None, None, "5x32 ReLU, He normal"),
    Case("healthy-relu-5x64", {"depth": 5, "width": 64, "activation": "relu", "init": "he_normal"},
         None, None, "5x64 ReLU, He normal"),
    # The issue expected "nothing" here, but Equinox's own init U(±1/√fan_in) is σ_w² = 1/3: mean field
    # gives χ₁ = 0.30 per layer (ξ_c 0.83, trainable depth 6 ξ_c = 5.0 < 20), i.e. δ shrinks 0.26 decades
    # per layer, and the measurement agrees (layer 1 is 5-6 decades below the output layer at epoch 1 in every seed;
    # Adam lifts it to about -1.7 by epoch 5, so the finding does not persist).
    Case("equinox-20x8-own-init", {"model": str(EXAMPLES / "equinox_mlp.py") + ":make",
                                   "model_args": {"depth": 20, "width": 8}, "init": "model"},
         "vanishing", "weights", "the Equinox example (20x8 tanh) at its own init (issue: nothing)"),
    Case("healthy-equinox-1x8", {"model": str(EXAMPLES / "equinox_mlp.py") + ":make",
                                 "model_args": {"depth": 1, "width": 8}, "init": "model"},
         None, None, "the Equinox example at depth 1 (1x8 tanh), its own init"),
)


def case_spec(case: Case, dataset: str, epochs: int, seeds: int, train_size: int | None = None) -> dict:
    spec = {"name": case.name, "dataset": dataset, "epochs": epochs, "seeds": seeds, **case.spec}
    return {**spec, "train_size": train_size} if train_size else spec


def run_case(case: Case, out: Path, dataset: str, epochs: int, seeds: int, data_dir=None,
             train_size: int | None = None):
    import vglab

    if case.spec.get("watched"):
        return vglab.load_results(run_watched(case, out, dataset, epochs, seeds, data_dir, train_size))
    return vglab.run(case_spec(case, dataset, epochs, seeds, train_size), out=out / case.name, workers=1,
                     progress=False, data_dir=data_dir)


def _tanh_mlp(sizes: list[int]):
    """(layer names, init, apply) of a plain-JAX tanh MLP: Glorot uniform weights, zero biases, the
    nonlinearity through `vglab.nn.activation` (so `vglab.layer_factors` sees its pre-activations)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import vglab

    names = [f"dense{i + 1}" for i in range(len(sizes) - 2)] + ["out"]
    act = vglab.nn.activation("tanh")

    def init(key):
        ks = jax.random.split(key, len(names))
        lim = [np.sqrt(6.0 / (a + b)) for a, b in zip(sizes, sizes[1:])]
        return {n: {"w": jax.random.uniform(k, (a, b), minval=-m, maxval=m), "b": jnp.zeros(b)}
                for n, k, a, b, m in zip(names, ks, sizes, sizes[1:], lim)}

    def apply(p, x):
        for n in names[:-1]:
            x = act(x @ p[n]["w"] + p[n]["b"])
        return x @ p["out"]["w"] + p["out"]["b"]

    return names, init, apply


def run_watched(case: Case, out: Path, dataset: str, epochs: int, seeds: int, data_dir=None,
                train_size: int | None = None, masked: str | None = "case", folder: Path | None = None) -> Path:
    """A planted case in the user's own training loop: an MLP (Glorot uniform, zero biases, tanh through
    `vglab.nn.activation`) trained by a jitted Adam step vmapped over the seeds, the layer `masked` (default:
    the case's) left out of the optimizer (`optax.masked(optax.set_to_zero(), mask)` before Adam; None: no
    layer), watched with `vglab.watch` and recorded with `vglab.Recorder` once per epoch (with
    `vglab.layer_factors` and the test accuracy)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    import pandas as pd

    import vglab
    from vglab.data import prepare

    folder = folder or out / case.name
    if (folder / "runs").is_dir() and all((d / "DONE").exists() for d in (folder / "runs").iterdir()):
        return folder
    arr = prepare(dataset, "mlp", data_dir=data_dir, train_size=train_size)
    depth, width = case.spec["depth"], case.spec["width"]
    masked = case.spec["masked"] if masked == "case" else masked
    names, init, apply = _tanh_mlp([arr.x_train.shape[1]] + [width] * depth + [arr.n_classes])
    params = jax.vmap(init)(jax.random.split(jax.random.key(0), seeds))
    mask = {n: {"w": n == masked, "b": n == masked} for n in names}
    tx = vglab.watch(optax.chain(optax.masked(optax.set_to_zero(), mask), optax.adam(1e-3)), tier="moments")
    state = jax.vmap(tx.init)(params)

    def loss_fn(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(apply(p, x), y).mean()

    @jax.jit
    def step(p, s, x, y):
        def one(p, s):
            loss, g = jax.value_and_grad(loss_fn)(p, x, y)
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s, loss
        return jax.vmap(one)(p, s)

    accuracy = jax.jit(jax.vmap(lambda p, x, y: (apply(p, x).argmax(-1) == y).mean(), in_axes=(0, None, None)))
    x_all, y_all = jnp.asarray(arr.x_train), jnp.asarray(arr.y_train)
    steps = x_all.shape[0] // 32
    rng = np.random.default_rng(0)
    config = {"label": f"tanh · mlp {depth}x{width} · Glorot uniform · "
                       + (f"{masked} masked out of Adam" if masked else "every layer in Adam"),
              "seed": list(range(seeds)), "activation": "tanh", "depth": depth, "width": width, "dataset": dataset}
    with vglab.Recorder(folder, config=config, tensorboard=False, overwrite=True) as rec:
        for epoch in range(epochs):
            order = rng.permutation(x_all.shape[0])
            for i in range(steps):
                idx = order[i * 32:(i + 1) * 32]
                params, state, loss = step(params, state, x_all[idx], y_all[idx])
            factors = pd.concat([vglab.layer_factors(apply, jax.tree.map(lambda a, k=k: a[k], params), x_all[:512])
                                 .assign(member=k) for k in range(seeds)])
            acc = accuracy(params, jnp.asarray(arr.x_test), jnp.asarray(arr.y_test))
            rec.record((epoch + 1) * steps, state, {"train_loss": np.asarray(loss), "val_acc": np.asarray(acc)},
                       factors=factors)
            state = vglab.watch_reset(state)
    return folder


HANG_S, TRIES = 600, 3  # a case's training in its own process: killed after HANG_S and resumed, TRIES times


def run_case_guarded(case: Case, out: Path, dataset: str, epochs: int, seeds: int, data_dir=None,
                     train_size: int | None = None):
    """`run_case` in a child process, restarted (it resumes: complete runs are kept) when it
    exceeds HANG_S. On this shared 2-core machine the engine's programs sometimes never return
    (every XLA thread idle, seen on ReLU MLPs with the full probe tier; reported), which would
    otherwise stop the whole table."""
    from vglab.results import load

    if case.spec.get("watched"):
        return run_case(case, out, dataset, epochs, seeds, data_dir, train_size)
    code = ("import sys, json; sys.path.insert(0, sys.argv[1]); import doctor_cases as dc; a = json.loads(sys.argv[2]); "
            "c = {x.name: x for x in dc.CASES}[a['case']]; "
            "dc.run_case(c, dc.Path(a['out']), a['dataset'], a['epochs'], a['seeds'], a['data_dir'], a['train_size'])")
    args = json.dumps({"case": case.name, "out": str(out), "dataset": dataset, "epochs": epochs, "seeds": seeds,
                       "data_dir": data_dir, "train_size": train_size})
    _guarded([sys.executable, "-c", code, str(Path(__file__).parent), args], case.name)
    return load(out / case.name)


def _guarded(cmd: list[str], what: str) -> None:
    import subprocess

    for attempt in range(1, TRIES + 1):
        try:
            subprocess.run(cmd, check=True, timeout=HANG_S)
            return
        except subprocess.TimeoutExpired:
            print(f"   ({what}: not done in {HANG_S} s, attempt {attempt} of {TRIES}; resuming)", flush=True)
    raise RuntimeError(f"{what}: training did not finish in {TRIES} attempts of {HANG_S} s")


def score(case: Case, diagnosis) -> dict:
    """Per seed: the findings of its run; whether the planted one was found (with its cause)."""
    rows = {}
    for run in diagnosis.runs:
        fs = [f for f in diagnosis.findings if f.run_id == run.run_id and f.finding]
        kinds = sorted({f.finding for f in fs})
        if case.expected is None:
            ok = not fs
        else:
            ok = any(f.finding == case.expected and (case.cause is None or f.cause == case.cause) for f in fs)
        rows[run.seed if run.seed is not None else run.run_id] = {
            "findings": kinds, "causes": sorted({f"{f.finding}:{f.cause}" for f in fs}), "ok": ok}
    return rows


FINDINGS = ("vanishing", "exploding", "saturated", "dead", "frozen")


def table(results: dict) -> str:
    """The confusion table: planted × diagnosed (seeds with that finding / seeds)."""
    head = ["planted case", "expected"] + list(FINDINGS) + ["none", "found / clean"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case, per_seed in results.values():
        n = len(per_seed)
        cells = [case.note, f"{case.expected or 'nothing'}" + (f", cause {case.cause}" if case.cause else "")]
        for k in FINDINGS:
            cells.append(f"{sum(k in s['findings'] for s in per_seed.values())}/{n}")
        cells.append(f"{sum(not s['findings'] for s in per_seed.values())}/{n}")
        cells.append(f"{sum(s['ok'] for s in per_seed.values())}/{n}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep(path, case: Case, a) -> list:
    """The remedy sweep of `vglab doctor --try --run` on one planted case: its effects."""
    from vglab.report import remedies
    from vglab.results import load

    spec = remedies.write_sweep(path, seeds=a.seeds, epochs=a.epochs)
    _guarded([sys.executable, "-m", "vglab.cli", "run", str(spec), "--out", str(remedies.sweep_dir(path)),
              "--workers", "1", "--quiet"] + (["--data-dir", a.data_dir] if a.data_dir else []), f"{case.name} sweep")
    eff = remedies.effects(load(remedies.sweep_dir(path)),
                           source=f"benchmarks/doctor_cases.py case {case.name} ({case.note})")
    for e in eff:
        print("   " + e.text(), flush=True)
    return eff


def watched_sweep(path, case: Case, a) -> list:
    """The remedy of the watched case, measured in the same own loop (`vglab doctor --try` cannot run a
    loop it does not own, but this benchmark owns this one): the masked layer given back to Adam, same
    seeds, into PATH-unmasked; its effect on each finding of the case, paired over seeds."""
    from vglab.report import doctor, remedies
    from vglab.results import load

    arm_dir = Path(path).parent / (Path(path).name + "-unmasked")
    run_watched(case, Path(path).parent, a.dataset, a.epochs, a.seeds, a.data_dir, masked=None, folder=arm_dir)

    def arm(folder: Path) -> remedies.ArmRuns:
        res = load(folder)
        last = res.epochs.sort_values("epoch").groupby("run_id").last()
        seeds = dict(zip(res.runs["seed"].astype(int), res.runs["run_id"]))
        return remedies.ArmRuns(seeds, doctor.diagnose(res),
                                {s: float(last.at[r, "val_acc"]) for s, r in seeds.items()})

    base, unmasked = arm(Path(path)), arm(arm_dir)
    about = {"baseline": base.diagnosis.runs[0].label, "source": f"benchmarks/doctor_cases.py case {case.name} "
             f"({case.note})", "dataset": a.dataset, "epochs": a.epochs, "activation": "tanh", "network": "watched",
             "depth": case.spec["depth"]}
    kinds = dict.fromkeys(f.finding for f in base.diagnosis.findings if f.finding)
    masked = case.spec["masked"]
    eff = [remedies.compare(k, base, unmasked, "the frozen layer back in the optimizer",
                            {"optimizer": f"optax.adam(1e-3) on every layer (no optax.masked(optax.set_to_zero()) "
                                          f"on {masked})"}, about) for k in kinds]
    for e in eff:
        print("   " + e.text(), flush=True)
    return eff


def _provenance(cmd: str) -> str:
    import subprocess

    import vglab

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = "?"
    return f"{cmd} (vglab {vglab.__version__}, commit {commit or '?'})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    p.add_argument("--out", default=None, help="where the runs go (default: a temporary folder)")
    p.add_argument("--json", default=None, help="write the per-case diagnosis (doctor's JSON) and scores here")
    p.add_argument("--measure", action="store_true", help="print the per-layer numbers behind the thresholds")
    p.add_argument("--evidence", action="store_true",
                   help="also run each planted case's remedy sweep (vglab doctor --try --run) and store the measured "
                        "effects as vglab's shipped remedy evidence (src/vglab/report/remedy_evidence.json)")
    a = p.parse_args(argv)
    if a.data_dir and a.dataset == "digits":
        a.dataset = "mnist"
    names = a.cases.split(",") if a.cases else [c.name for c in CASES]
    unknown = [n for n in names if n not in {c.name for c in CASES}]
    if unknown:
        p.error(f"unknown case(s) {unknown}; choose from {[c.name for c in CASES]}")
    from vglab.report import remedies
    from vglab.results import load

    tmp = None
    if a.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="doctor-cases-")
        out = Path(tmp.name)
    else:
        out = Path(a.out)
    results, dumped, effects = {}, {}, []
    for case in (c for c in CASES if c.name in names):
        res = run_case_guarded(case, out, a.dataset, a.epochs, a.seeds, a.data_dir)
        d = remedies.diagnose(load(res.path))
        results[case.name] = (case, score(case, d))
        dumped[case.name] = {"note": case.note, "expected": case.expected, "cause": case.cause,
                             "scores": results[case.name][1], "diagnosis": d.to_json(), "measure": d.measurements()}
        print(f"== {case.name} ({case.note}): " + "; ".join(
            f"seed {s}: {', '.join(v['causes']) or 'nothing'}" for s, v in results[case.name][1].items()), flush=True)
        if a.measure:
            for line in doctor.measurement_lines(d):
                print("   " + line)
        if a.evidence and case.expected:
            effects += (watched_sweep if case.spec.get("watched") else sweep)(res.path, case, a)
    print(f"\nconfusion table ({a.dataset}, {a.epochs} epochs, {a.seeds} seeds per case):\n")
    print(table(results))
    if a.json:
        Path(a.json).write_text(json.dumps(dumped, indent=1, default=str))
    if a.evidence:
        from vglab.report import remedies

        cmd = "python benchmarks/doctor_cases.py " + " ".join(argv if argv is not None else sys.argv[1:])
        print(f"\nremedy evidence: {remedies.save_evidence(effects, made_by=_provenance(cmd))}")
    ok = all(s["ok"] for _, per in results.values() for s in per.values())
    print("\nevery planted case found with its cause in every seed, no healthy run with a finding: "
          + ("yes" if ok else "NO"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
