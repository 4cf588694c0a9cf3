"""bp_conv_ext: a 1-D convolution layer for spiking neural networks in BrainPy."""
from types import ModuleType

from .core.args import output_length
from .core.drive import spike_drive
from .interop.nir import NIRError
from .layers.classic.conv import Conv1d, from_torch
from .layers.classic.delay import DelayConv1d
from .layers.classic.nir import from_nir, to_nir
from .layers.classic.sequential import LayerByLayer
from .layers.classic.train import LayerByLayerTrainer
from .ops.conv import (
    conv1d,
    event_density_threshold,
    event_kernel,
    event_kernels,
    use_event_kernels,
    which_backend,
)
from .ops.delays import delay_kernel, sigma_schedule

__version__ = '0.2.0'


def __getattr__(name: str) -> ModuleType:
    # bp_conv_ext.state (the brainpy.state layers) needs brainstate: imported on first use.
    if name == 'state':
        import importlib
        return importlib.import_module(f'{__name__}.state')
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    'Conv1d',
    'DelayConv1d',
    'LayerByLayer',
    'LayerByLayerTrainer',
    'NIRError',
    '__version__',
    'conv1d',
    'delay_kernel',
    'event_density_threshold',
    'event_kernel',
    'event_kernels',
    'from_nir',
    'from_torch',
    'output_length',
    'sigma_schedule',
    'spike_drive',
    'to_nir',
    'use_event_kernels',
    'which_backend',
]
