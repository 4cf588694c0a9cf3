"""The layers for ``brainpy.state`` models (brainstate modules): ``Conv1d``, ``DelayConv1d``,
``LayerByLayer``, ``from_torch``, ``to_nir`` and ``from_nir``, the twins of the classic API's
over the same convolution.

Needs brainstate and brainunit (installed with BrainPy 2.8+, which ships ``brainpy.state``).
"""
from .layers.state import Conv1d, DelayConv1d, LayerByLayer, from_nir, from_torch, to_nir

__all__ = ['Conv1d', 'DelayConv1d', 'LayerByLayer', 'from_nir', 'from_torch', 'to_nir']
