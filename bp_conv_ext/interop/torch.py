"""PyTorch interop: ``torch.nn.Conv1d`` configurations and ``{weight, bias}`` arrays.

PyTorch stores a 1-D kernel as ``(C_out, C_in // groups, K)`` and a bias as ``(C_out,)``;
this package stores ``(K, C_in // groups, C_out)`` and ``(1, C_out)``. PyTorch is optional:
it is imported inside these functions only.

Both layers (the classic and the brainpy.state one) serve these functions as
:class:`TorchConvertible` describes; each builds itself from :func:`layer_arguments` (their
``from_torch``), so this module imports no layer.
"""
import sys
from typing import Protocol

import numpy as np

_WEIGHT_KEYS = ('weight', 'bias')


class TorchConvertible(Protocol):
    """What a layer offers these functions: its configuration, as ``torch.nn.Conv1d`` has it
    (tuples of one int where PyTorch has them; ``padding`` is ``'SAME'``, ``'VALID'`` or
    ``((low, high),)``), and its parameters in this package's layout."""

    in_channels: int
    out_channels: int
    groups: int
    padding_mode: str
    kernel_size: tuple[int]
    stride: tuple[int]
    lhs_dilation: tuple[int]
    rhs_dilation: tuple[int]
    # 'SAME', 'VALID' or ((low, high),)
    padding: str | tuple[tuple[int, int]]

    def _torch_parameters(self) -> dict:
        """``{'kernel', 'bias' or None, 'mask' or None}`` as arrays, and ``'label'``: how
        errors name the layer."""

    def _set_torch_parameters(self, kernel: np.ndarray, bias: np.ndarray | None) -> None:
        """Set the kernel ``(K, C_in // groups, C_out)`` and the bias ``(C_out,)`` or None."""


def _import_torch():
    try:
        import torch
    except ImportError as error:
        raise ImportError("PyTorch interop needs torch installed "
                          "(pip install 'bp_conv_ext[torch]').") from error
    return torch


def _to_numpy(name: str, value) -> np.ndarray:
    """A torch tensor or array-like as a NumPy array (bfloat16, which NumPy lacks, as float32).
    Arrays need no torch: a tensor can only exist where torch has been imported."""
    torch = sys.modules.get('torch')
    if torch is not None and isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.float()
        return value.numpy()
    try:
        return np.asarray(value)
    except Exception as error:
        raise TypeError(f"`{name}` must be a torch tensor or an array, "
                        f"got {type(value).__name__}.") from error


def swap_kernel_layout(kernel: np.ndarray) -> np.ndarray:
    """``(K, C_in // groups, C_out)`` <-> ``(C_out, C_in // groups, K)``: reversing the axes
    maps either layout to the other."""
    return np.ascontiguousarray(np.transpose(kernel, (2, 1, 0)))


def _torch_padding(layer: TorchConvertible):
    """The ``padding`` argument of a ``torch.nn.Conv1d`` that pads as ``layer`` does."""
    padding, stride = layer.padding, layer.stride[0]
    if padding == 'VALID':
        return 'valid'
    if padding == 'SAME':
        if stride != 1:
            raise ValueError(f"padding='SAME' with stride={stride} pads by an amount that depends "
                             f"on the input length; torch.nn.Conv1d has no such padding. Give "
                             f"the layer an explicit symmetric padding instead.")
        return 'same'
    if isinstance(padding, str):
        raise ValueError(f"padding={padding!r} has no torch.nn.Conv1d equivalent.")
    low, high = padding[0]
    if low == high:
        return low
    raise ValueError(f"padding {(low, high)} pads the two sides differently (as 'CAUSAL' does); "
                     f"torch.nn.Conv1d pads both sides equally (or as 'same' with stride 1).")


def torch_state_dict(layer: TorchConvertible) -> dict:
    """``{'weight': (C_out, C_in // groups, K), 'bias': (C_out,)}`` NumPy arrays (no
    ``'bias'`` when the layer has none). A layer with a mask raises ``ValueError``."""
    params = layer._torch_parameters()
    if params['mask'] is not None:
        raise ValueError(f"{params['label']} has a mask; torch.nn.Conv1d has none. Export the "
                         f"masked kernel yourself if it is wanted.")
    state = {'weight': swap_kernel_layout(np.asarray(params['kernel']))}
    if params['bias'] is not None:
        state['bias'] = np.asarray(params['bias']).reshape(-1).copy()
    return state


def load_torch_state_dict(layer: TorchConvertible, state_dict) -> None:
    """Load PyTorch-layout ``{'weight', 'bias'}`` arrays or tensors into ``layer``."""
    if not hasattr(state_dict, 'keys'):
        raise TypeError(f"`state_dict` must be a mapping with 'weight' and 'bias' entries, "
                        f"got {type(state_dict).__name__}.")
    unknown = sorted(set(state_dict.keys()) - set(_WEIGHT_KEYS))
    if unknown:
        raise ValueError(f"`state_dict` has unexpected keys {unknown}; expected 'weight' and "
                         f"'bias' (those of one torch.nn.Conv1d).")
    params = layer._torch_parameters()
    label, has_bias = params['label'], params['bias'] is not None
    expected = {'weight': tuple(reversed(np.shape(params['kernel'])))}
    if has_bias:
        expected['bias'] = (layer.out_channels,)
    missing = sorted(set(expected) - set(state_dict.keys()))
    if missing:
        raise ValueError(f"`state_dict` lacks {missing}, which {label} needs.")
    if 'bias' in state_dict and not has_bias:
        raise ValueError(f"`state_dict` has a 'bias' but {label} was built without one.")
    arrays = {key: _to_numpy(f"state_dict[{key!r}]", state_dict[key]) for key in expected}
    for key, shape in expected.items():
        if arrays[key].shape != shape:
            raise ValueError(f"`state_dict[{key!r}]` has shape {arrays[key].shape}; {label} "
                             f"needs {shape} (PyTorch layout).")
    layer._set_torch_parameters(swap_kernel_layout(arrays['weight']),
                                arrays['bias'] if has_bias else None)


def to_torch(layer: TorchConvertible):
    """A ``torch.nn.Conv1d`` with ``layer``'s configuration and weights."""
    torch = _import_torch()
    if layer.lhs_dilation[0] != 1:
        raise ValueError(f"lhs_dilation={layer.lhs_dilation[0]} (input dilation) has no "
                         f"torch.nn.Conv1d equivalent.")
    state = torch_state_dict(layer)      # refuses a mask
    weight = torch.from_numpy(state['weight'])
    module = torch.nn.Conv1d(layer.in_channels, layer.out_channels, layer.kernel_size[0],
                             stride=layer.stride[0], padding=_torch_padding(layer),
                             dilation=layer.rhs_dilation[0], groups=layer.groups,
                             bias='bias' in state, padding_mode=layer.padding_mode,
                             dtype=weight.dtype)
    with torch.no_grad():
        module.weight.copy_(weight)
        if 'bias' in state:
            module.bias.copy_(torch.from_numpy(state['bias']))
    return module


def layer_arguments(module) -> dict:
    """The configuration and parameters of a ``torch.nn.Conv1d`` in this package's terms:
    ``in_channels, out_channels, kernel_size, stride, padding, rhs_dilation, groups,
    padding_mode``, the ``kernel`` ``(K, C_in // groups, C_out)`` and the ``bias``."""
    torch = _import_torch()
    if not isinstance(module, torch.nn.Conv1d):
        raise TypeError(f"`module` must be a torch.nn.Conv1d, got {type(module).__name__}.")
    padding = module.padding.upper() if isinstance(module.padding, str) else \
        int(module.padding[0])
    bias = None if module.bias is None else _to_numpy('module.bias', module.bias)
    return dict(in_channels=module.in_channels, out_channels=module.out_channels,
                kernel_size=module.kernel_size[0], stride=module.stride[0], padding=padding,
                rhs_dilation=module.dilation[0], groups=module.groups,
                padding_mode=module.padding_mode,
                kernel=swap_kernel_layout(_to_numpy('module.weight', module.weight)), bias=bias)
