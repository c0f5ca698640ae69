"""The Equinox example from Python: your model, vglab's probes, remedies and report.

    python examples/equinox_mlp_run.py
    python examples/equinox_mlp_run.py epochs=1 seeds=1 train_size=200   # any spec field, as with --set
"""

import sys

import equinox_mlp  # this folder's module: vglab's worker processes import the factory from it

import vglab

if __name__ == "__main__":  # vglab trains in worker processes: keep the entry point guarded
    spec = {"name": "equinox-deep-mlp", "dataset": "digits", "epochs": 10, "seeds": 2,
            "model": equinox_mlp.make, "model_args": {"depth": 20, "width": 8},
            "arms": [{"init": ["normal(std=0.05)", "model"], "alpha": [1, 2]}]}
    res = vglab.run(spec, set=sys.argv[1:])
    print(res.table("epochs").groupby(["label", "epoch"]).val_acc.mean().unstack("epoch").iloc[:, [0, -1]])
    print(vglab.report(res.path))
