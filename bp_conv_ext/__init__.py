"""bp_conv_ext: a 1-D convolution layer for spiking neural networks in BrainPy."""
from ._args import output_length
from ._conv import conv1d
from ._layer import Conv1d

__version__ = '0.1.0'

__all__ = ['Conv1d', 'conv1d', 'output_length', '__version__']
