"""Compare a gradient histogram computed by the engine with gradients recomputed by
another program (a NumPy replay), allowing for float32 rounding near the bin edges.

Two programs computing the same gradient (the engine's vmapped, scanned step and a plain
`jax.grad`) round differently: measured on this repo's replay test, entries differed by
up to 1.4e-6 of their tensor's largest entry (3e-4 relative for small entries), and the
differences depend on the CPU (AVX-512 or not). An entry that close to a bin edge may land
in either adjacent bin. So each recomputed entry gets the range of bins it could fall in
within `TOL_SCALE * max|g|` (of its tensor at that step) plus `TOL_REL * |g|`, and the
counts must be reachable by placing every entry in its range: exact where the range is one
bin, and a miscount anywhere is still caught.
"""

from __future__ import annotations

import heapq

import numpy as np

from vglab.train import probes

TOL_REL = 1e-5
TOL_SCALE = 1e-5  # 7x the largest difference measured (1.4e-6)


def bin_of(a: np.ndarray) -> np.ndarray:
    """The stored histogram's bin of each magnitude (float64 compares against the float32
    edges exactly): 0 for zeros (and float32 subnormals, flushed to zero by XLA CPU)."""
    edges = (10.0 ** probes.hist_edges()).astype(np.float32).astype(np.float64)
    a = np.asarray(a, np.float64)
    return np.where(a >= np.finfo(np.float32).tiny, 1 + np.searchsorted(edges[1:-1], a, side="right"), 0)


def bin_ranges(steps: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(lowest, highest) bin of every entry of every step's gradient array."""
    lo, hi = [], []
    for g in steps:
        a = np.abs(np.asarray(g, np.float64)).ravel()
        tol = TOL_REL * a + TOL_SCALE * (a.max() if a.size else 0.0)
        exact = a == 0  # a structural zero is zero in every program
        lo.append(np.where(exact, 0, bin_of(np.maximum(a - tol, 0.0))))
        hi.append(np.where(exact, 0, bin_of(a + tol)))
    return np.concatenate(lo), np.concatenate(hi)


def mismatch(counts: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> str | None:
    """None if the values with bin ranges [lo, hi] can be placed one per count; else why not.

    Greedy by bin: each bin takes, among the values whose range has begun, those whose
    range ends first (optimal for intervals); a value whose range ended unplaced, or a bin
    with more counts than values that may fall in it, is a miscount."""
    counts = np.asarray(counts, np.int64)
    if counts.sum() != len(lo):
        return f"{counts.sum()} counts for {len(lo)} values"
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    heap, j = [], 0
    for b in range(len(counts)):
        while j < len(lo) and lo[j] <= b:
            heapq.heappush(heap, hi[j])
            j += 1
        if heap and heap[0] < b:
            return f"a value that can only fall in bins <= {heap[0]} is counted in a later bin"
        for _ in range(counts[b]):
            if not heap:
                return f"bin {b} counts {counts[b]}, more than the values that may fall in it"
            heapq.heappop(heap)
    return None if not heap else f"{len(heap)} values are not counted in any bin they may fall in"


def assert_hist_matches(counts: np.ndarray, steps: list[np.ndarray]) -> None:
    """`counts` (one histogram row) against the entries of `steps` (gradient arrays)."""
    lo, hi = bin_ranges(steps)
    why = mismatch(counts, lo, hi)
    if why is not None:
        sure = np.bincount(lo[lo == hi], minlength=len(counts))
        raise AssertionError(f"histogram does not match the recomputed gradients: {why}\n"
                             f"counts:            {np.asarray(counts).tolist()}\n"
                             f"exactly expected:  {sure.tolist()} (+ {int((lo != hi).sum())} near an edge)")
