"""What the three `watch_*` examples print at the end: where the gradient thins out.

Read back from the results folder the Recorder wrote (the same tables `vglab report`
draws), so what the script prints is what the report shows.
"""

import numpy as np

import vglab


def gradient_profile(out):
    """Per layer (in layer order): each weight tensor's gradient norm (`grad_norm_mean`,
    the mean over the steps of a record) at the first and the last record, averaged over
    the runs (vmapped members), and log10 of its ratio to the last layer's at the first
    record (-3: the gradient is a thousand times thinner there than at the output)."""
    res = vglab.load_results(out)
    w = res.grads[res.grads["param"] == "w"]
    first, last = w["epoch"].min(), w["epoch"].max()
    table = (w[w["epoch"].isin([first, last])]
             .groupby(["layer_index", "layer", "epoch"])["grad_norm_mean"].mean()
             .unstack("epoch").reset_index(level="layer_index", drop=True))
    table.columns = [f"step {first}", f"step {last}"][: len(table.columns)]
    table["log10 ratio to last"] = np.log10(table.iloc[:, 0] / table.iloc[-1, 0])
    return table


def finish(out, note: str = "") -> str:
    """Write the report of `out`, print the gradient profile, return the page's path."""
    page = vglab.report(out)
    print(f"per-layer weight-gradient norm (grad_norm_mean), {note}".rstrip(", "))
    print(gradient_profile(out).to_string(float_format=lambda v: f"{v:.3g}"))
    print(f"report: {page}")
    return str(page)
