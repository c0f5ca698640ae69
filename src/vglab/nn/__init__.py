"""What is trained: activations, initializations, networks and penalties, in pure JAX."""

from vglab.nn import activations, adapters, init, model, networks, penalties
from vglab.nn.activations import Activation, ScopedActivation, activation, rescaled
from vglab.nn.adapters import FunctionModel, equinox, flax_linen, flax_nnx, wrap
from vglab.nn.init import Init
from vglab.nn.model import Layout, Model, ModelError, preactivation
from vglab.nn.networks import Layer, Network, build, cnn, mlp, paper_cnn
from vglab.nn.penalties import penalty

__all__ = ["activations", "adapters", "init", "model", "networks", "penalties", "Activation", "ScopedActivation",
           "activation", "rescaled", "FunctionModel", "equinox", "flax_linen", "flax_nnx", "wrap", "Init", "Layout",
           "Model", "ModelError", "preactivation", "Layer", "Network", "build", "cnn", "mlp", "paper_cnn", "penalty"]
