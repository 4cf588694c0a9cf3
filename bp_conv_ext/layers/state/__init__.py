"""The layers for ``brainpy.state`` models: brainstate modules over the same convolution.

``bp_conv_ext.state.Conv1d`` is a :class:`brainstate.nn.Module` that takes exactly the
arguments of :class:`brainstate.nn.Conv1d` (and ``padding_mode`` last); it keeps its
parameters the way brainstate's layer does (one ``ParamState`` holding
``{'weight': ..., 'bias': ...}``) and computes with the pure functions that the classic
:class:`bp_conv_ext.Conv1d` calls (``bp_conv_ext.ops.conv.apply``), so every backend, the
event path, the padding forms and modes and the argument checks are the same.
``bp_conv_ext.state.LayerByLayer`` is a :class:`brainstate.nn.Sequential` that can also run
a whole sequence layer by layer.

This module needs brainstate and brainunit (installed with BrainPy 2.8, which ships
``brainpy.state``).
"""
from .conv import Conv1d, from_torch
from .delay import DelayConv1d
from .nir import from_nir, to_nir
from .sequential import LayerByLayer

__all__ = ['Conv1d', 'DelayConv1d', 'LayerByLayer', 'from_nir', 'from_torch', 'to_nir']
