"""What is trained: the model interface, activations, initializations, networks and
penalties, in pure JAX. Names load on first use, so `vglab.nn.formulas` (NumPy only, for
the theory module) does not import JAX."""

import importlib

_SUBMODULES = ("activations", "adapters", "formulas", "init", "model", "networks", "penalties", "rescaling", "shaping")
_NAMES = {
    "Activation": "activations", "ScopedActivation": "activations", "activation": "activations",
    "rescaled": "activations", "FunctionModel": "adapters", "equinox": "adapters", "flax_linen": "adapters",
    "flax_nnx": "adapters", "wrap": "adapters", "Init": "init", "Layout": "model", "Model": "model",
    "ModelError": "model", "preactivation": "model", "Layer": "networks", "Network": "networks", "build": "networks",
    "cnn": "networks", "mlp": "networks", "paper_cnn": "networks", "penalty": "penalties",
}
__all__ = list(_SUBMODULES) + list(_NAMES)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"vglab.nn.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(f"vglab.nn.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'vglab.nn' has no attribute {name!r}")
