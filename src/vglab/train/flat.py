"""The engine keeps each member's parameters as ONE flat float32 vector.

Why: a group's step is a chain of small kernels, and on a CPU their launches, not their
arithmetic, set the pace. Per tensor, the optimizer's update, the divergence masking and
the loop's carried state were each a kernel: 58 fusions per step for a 1x8 MLP and 405
(plus 128 copies) for a 20x8 one. On one flat vector they are one each. The model still
sees its own pytree: `unflatten` cuts the vector into its leaves with static slices,
which XLA fuses into their consumers.

Storage order groups tensors of equal shape (a deep MLP's 19 hidden 8x8 weights lie
side by side), so per-tensor sums are a reshape and one reduction per shape, as before.
Elementwise optimizers (Adam, SGD, RMSProp, ...) update the flat vector; optimizers that
look at a tensor as a whole (LAMB's and LARS' per-layer trust ratios, Adafactor's
factored moments, SM3, NovoGrad) update the pytree, so their numbers are unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import jax.numpy as jnp
import numpy as np

from vglab.nn.model import Layout

# Optimizers whose update of an entry depends on that entry (and step-wide scalars) only.
ELEMENTWISE = {"adam", "adamw", "sgd", "momentum", "nesterov", "rmsprop", "adagrad", "adadelta", "adamax",
               "adamaxw", "amsgrad", "nadam", "nadamw", "radam", "adabelief", "yogi", "lion", "sign_sgd", "signum",
               "adan", "rprop", "optimistic_adam_v2", "optimistic_gradient_descent"}


@dataclass(frozen=True)
class Block:
    """Tensors of one shape, contiguous in the flat vector: [start, start + n * size)."""

    start: int
    n: int
    shape: tuple[int, ...]
    tensors: tuple[int, ...]  # their indices in `Layout.tensors`

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Flat:
    """Where each tensor lies in the flat vector (hashable: part of a program's key). The
    tensors are `layout.tensors` (or, without a layout, just their `shapes`)."""

    shapes: tuple[tuple[int, ...], ...]
    blocks: tuple[Block, ...]
    offsets: tuple[int, ...]  # per tensor: its first entry
    size: int
    layout: Layout | None = None
    swapped: frozenset[int] = frozenset()  # tensors stored with their last two axes swapped
    # Per run of layers the model takes stacked (`Model.layer_runs`): (param, tensor indices)
    # pairs, each a contiguous stretch of one block; None: the model takes its pytree.
    runs: tuple[tuple[tuple[str, tuple[int, ...]], ...], ...] | None = None

    @classmethod
    def of(cls, layout: Layout, swap_matrices: bool = False) -> "Flat":
        """`swap_matrices`: store every matrix weight (rank 2) transposed, for a model whose
        weights are (in, out) (`x @ W`; `Model.weight_layout`). Members that share a batch
        multiply it by all their weights in one product, [batch, in] x [in, (member, out)],
        which needs each member's output axis beside the member axis: stored (out, in), the
        members' weights are already [(member, out), in] and the product reads them in
        place, as it does Equinox's (out, in) weights; stored (in, out), XLA copied the
        first layer's weights and weight gradients into and out of the product's layout at
        every step (see DESIGN.md, "train")."""
        swapped = frozenset(i for i, t in enumerate(layout.tensors)
                            if swap_matrices and t.param == "w" and len(t.shape) == 2)
        return cls.of_shapes([t.shape for t in layout.tensors], layout, swapped)

    def with_runs(self, layer_runs) -> "Flat":
        """This layout, handing the model its parameters stacked per run of layers
        (`Model.layer_runs`; None: as a pytree). Storage order groups equal shapes, so a
        run's weights (or biases) are one stretch of the vector and its stack is one slice:
        stacking the per-layer slices instead was one copy kernel per tensor under the
        engine's vmap, and those kernels most of a 50-layer group's compile time."""
        if not layer_runs:
            return self
        by_layer = {}
        for i, t in enumerate(self.layout.tensors):
            by_layer.setdefault(t.layer, {})[t.param] = i
        runs = tuple(tuple((param, tuple(by_layer[name][param] for name in run)) for param in by_layer[run[0]])
                     for run in layer_runs)
        covered = sorted(i for run in runs for _, idx in run for i in idx)
        if covered != list(range(self.n_tensors)) or not all(self._contiguous(idx) for run in runs for _, idx in run):
            return self  # not stackable in place: the pytree view is always right
        return replace(self, runs=runs)

    def _contiguous(self, idx: tuple[int, ...]) -> bool:
        block, j = self._place(idx[0])
        return block.tensors[j:j + len(idx)] == idx and len({i in self.swapped for i in idx}) == 1

    def _place(self, i: int) -> tuple[Block, int]:
        block = next(b for b in self.blocks if i in b.tensors)
        return block, block.tensors.index(i)

    @classmethod
    def of_shapes(cls, shapes, layout: Layout | None = None, swapped=frozenset()) -> "Flat":
        shapes = tuple(tuple(int(d) for d in s) for s in shapes)
        swapped = frozenset(swapped)
        by_shape: dict[tuple, list[int]] = {}
        for i, shape in enumerate(shapes):
            by_shape.setdefault(_stored(shape) if i in swapped else shape, []).append(i)
        blocks, offsets, start = [], [0] * len(shapes), 0
        for shape, idx in by_shape.items():
            block = Block(start, len(idx), shape, tuple(idx))
            for j, i in enumerate(idx):
                offsets[i] = start + j * block.size
            blocks.append(block)
            start += block.n * block.size
        return cls(shapes, tuple(blocks), tuple(offsets), start, layout, swapped)

    @property
    def n_tensors(self) -> int:
        return len(self.shapes)

    # ------------------------------------------------------------ pytree <-> vector
    def unflatten(self, flat):
        """The model's parameter pytree from a flat vector (the last axis)."""
        leaves = [None] * self.layout.n_leaves
        for i, t in enumerate(self.layout.tensors):
            leaves[t.leaf] = self.tensor(flat, i)
        return self.layout.unflatten(leaves)

    def model_params(self, flat):
        """What the model takes for a flat vector: its pytree, or per run its stacked tensors."""
        return self.unflatten(flat) if self.runs is None else tuple(
            {param: self._stack(flat, idx) for param, idx in run} for run in self.runs)

    def from_model_params(self, params):
        """The flat vector of what `model_params` gives (e.g. its gradient)."""
        if self.runs is None:
            return self.flatten(params)
        pieces = {}
        for run, arrays in zip(self.runs, params):
            for param, idx in run:
                a = arrays[param].swapaxes(-1, -2) if idx[0] in self.swapped else arrays[param]
                pieces[idx[0]] = (len(idx), a.reshape(a.shape[:a.ndim - len(self.shapes[idx[0]]) - 1] + (-1,)))
        parts = []
        for block in self.blocks:
            j = 0
            while j < block.n:
                n, part = pieces[block.tensors[j]]
                parts.append(part)
                j += n
        return jnp.concatenate(parts, -1)

    def model_leaves(self, params) -> list:
        """The parameter leaves (`Layout.leaves` order) of what `model_params` gives."""
        if self.runs is None:
            return self.layout.leaves(params)
        leaves = [None] * self.layout.n_leaves
        for run, arrays in zip(self.runs, params):
            for param, idx in run:
                for j, i in enumerate(idx):
                    leaves[self.layout.tensors[i].leaf] = arrays[param][j]
        return leaves

    def _stack(self, flat, idx: tuple[int, ...]):
        """Tensors `idx` (a contiguous stretch of one block) as one array [..., len(idx), shape]."""
        block, j = self._place(idx[0])
        start = block.start + j * block.size
        seg = flat[..., start:start + len(idx) * block.size].reshape(flat.shape[:-1] + (len(idx),) + block.shape)
        return seg.swapaxes(-1, -2) if idx[0] in self.swapped else seg

    def flatten(self, params):
        """The flat vector of a parameter pytree (NumPy or JAX leaves; leading axes kept)."""
        leaves = self.layout.leaves(params)
        return self.from_tensors([leaves[t.leaf] for t in self.layout.tensors])

    def tensor(self, flat, i: int):
        """Tensor i from a flat vector, shaped."""
        shape, off = self.shapes[i], self.offsets[i]
        t = flat[..., off:off + math.prod(shape)]
        if i in self.swapped:
            return t.reshape(flat.shape[:-1] + _stored(shape)).swapaxes(-1, -2)
        return t.reshape(flat.shape[:-1] + shape)

    def from_tensors(self, tensors):
        """The flat vector [..., size] of tensors given in tensor order (leading axes kept;
        all NumPy: NumPy)."""
        xp = np if all(isinstance(t, np.ndarray) for t in tensors) else jnp
        parts = []
        for block in self.blocks:
            for i in block.tensors:
                t = xp.swapaxes(tensors[i], -1, -2) if i in self.swapped else tensors[i]
                parts.append(xp.reshape(t, t.shape[: t.ndim - len(self.shapes[i])] + (-1,)))
        return xp.concatenate(parts, -1)

    # ------------------------------------------------------------ per-tensor reductions
    def storage_order(self) -> np.ndarray:
        """Tensor indices in storage order: slot s holds tensor storage_order()[s]."""
        return np.array([i for block in self.blocks for i in block.tensors], np.int64)

    def tensor_order(self) -> np.ndarray:
        """The slot of each tensor: `per_slot(...)[..., tensor_order()]` is in tensor order."""
        return np.argsort(self.storage_order())

    def per_slot(self, flat, reduce):
        """[..., n_tensors] in storage order: `reduce(block [..., n, size]) -> [..., n]` for
        every block (one reshape and one reduction per shape)."""
        parts = []
        for block in self.blocks:
            seg = flat[..., block.start:block.start + block.n * block.size]
            parts.append(reduce(seg.reshape(flat.shape[:-1] + (block.n, block.size))))
        return jnp.concatenate(parts, -1) if len(parts) > 1 else parts[0]

    def entry_slot(self) -> np.ndarray:
        """[size] int32: the storage slot of the tensor each entry belongs to."""
        out = np.empty(self.size, np.int32)
        slot = 0
        for block in self.blocks:
            for j in range(block.n):
                out[block.start + j * block.size: block.start + (j + 1) * block.size] = slot
                slot += 1
        return out

    def sizes(self) -> np.ndarray:
        return np.array([math.prod(s) for s in self.shapes], np.float32)


def _stored(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape[:-2] + (shape[-1], shape[-2])


def optimizer_on_flat(name: str) -> bool:
    return name in ELEMENTWISE


def tree_update(transformation, flat_layout: Flat, grads, state, params):
    """`transformation.update` on the pytree views of flat vectors (for optimizers that are
    not elementwise); returns the flat update and the new state."""
    updates, state = transformation.update(flat_layout.unflatten(grads), state, flat_layout.unflatten(params))
    return flat_layout.flatten(updates), state
