"""What is trained: activations, initializations, networks and penalties, in pure JAX."""

from vglab.nn import activations, init, networks, penalties
from vglab.nn.activations import Activation, rescaled
from vglab.nn.init import Init
from vglab.nn.networks import Layer, Network, build, cnn, mlp, paper_cnn
from vglab.nn.penalties import penalty

__all__ = ["activations", "init", "networks", "penalties", "Activation", "rescaled", "Init",
           "Layer", "Network", "build", "cnn", "mlp", "paper_cnn", "penalty"]
