"""The Flax example from Python.

    python examples/flax_cnn_run.py
    python examples/flax_cnn_run.py epochs=1 seeds=1 train_size=200   # any spec field, as with --set
"""

import sys

import flax_cnn  # this folder's module: vglab's worker processes import the factory from it

import vglab

if __name__ == "__main__":  # vglab trains in worker processes: keep the entry point guarded
    spec = {"name": "flax-cnn", "dataset": "digits", "epochs": 5, "seeds": 2, "model": flax_cnn.make,
            "input": "images", "model_args": {"filters": 8, "width": 16},
            "arms": [{"init": ["normal(std=1)", "model"], "penalty": ["none", "l2"], "r": 0.01}]}
    res = vglab.run(spec, set=sys.argv[1:])
    print(res.table("epochs").groupby(["label", "epoch"]).val_acc.mean().unstack("epoch").iloc[:, [0, -1]])
    print(vglab.report(res.path))
