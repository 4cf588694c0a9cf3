"""bp_conv_ext: a 1-D convolution layer for spiking neural networks in BrainPy."""
from ._args import output_length
from ._conv import (conv1d, event_density_threshold, event_kernel, event_kernels,
                    use_event_kernels, which_backend)
from ._delays import delay_kernel, sigma_schedule
from ._layer import Conv1d, DelayConv1d, from_torch
from ._multistep import LayerByLayer
from ._params import spike_drive
from ._train import LayerByLayerTrainer

__version__ = '0.1.0'


def __getattr__(name):
    # bp_conv_ext.state (the brainpy.state layers) needs brainstate: imported on first use.
    if name == 'state':
        import importlib
        return importlib.import_module(f'{__name__}.state')
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ['Conv1d', 'DelayConv1d', 'LayerByLayer', 'LayerByLayerTrainer', 'conv1d',
           'delay_kernel', 'event_density_threshold', 'event_kernel', 'event_kernels',
           'from_torch', 'output_length', 'sigma_schedule', 'spike_drive',
           'use_event_kernels', 'which_backend', '__version__']
