"""The classic BrainPy convolution layer: parameters, modes and shape checks around the pure
convolution."""
from collections.abc import Callable, Sequence

import brainpy as bp
import brainpy.math as bm
import jax.numpy as jnp
from jax.typing import ArrayLike

from ...core import args as _args
from ...core import params as _params
from ...interop import torch as _torch
from ..base import ConvLayer
from .modes import STEP_SHAPES, check_mode, check_name

_DEFAULT_W_INIT = bp.init.XavierNormal()
_DEFAULT_B_INIT = bp.init.ZeroInit()


class Conv1d(ConvLayer, bp.dnn.Layer):
    r"""One-dimensional convolution over channels-last input, for spiking networks.

    A drop-in replacement for :class:`brainpy.dnn.Conv1d` with the same
    constructor. It accepts ``bool`` and integer spikes, keeps its parameters in
    BrainPy variables in every mode, validates its arguments when it is built and
    refuses inputs whose rank does not fit its mode.

    Parameters
    ----------
    in_channels : int
        Number of input channels ``C_in``.
    out_channels : int
        Number of output channels ``C_out``.
    kernel_size : int
        Kernel length ``K`` (an int or a sequence of one int).
    stride : int, optional
        Step between output samples (default 1).
    strides : int, optional
        Older name of ``stride``; give at most one of the two.
    padding : str, int or pair
        ``'SAME'``, ``'VALID'`` or ``'CAUSAL'`` (any case), a non-negative int ``p``
        (``p`` zeros on both sides), a ``(low, high)`` pair, or a sequence holding one
        pair. ``'SAME'`` gives ``ceil(Hd / stride)`` outputs (``Hd`` below), with any odd
        sample of padding on the high side. ``'CAUSAL'`` pads
        ``rhs_dilation * (K - 1)`` zeros on the low side only, so output ``t`` sees
        inputs up to ``t``.
    lhs_dilation : int
        Input dilation: ``lhs_dilation - 1`` zeros are inserted between input samples
        (a transposed convolution with that stride).
    rhs_dilation : int
        Kernel dilation (atrous convolution).
    groups : int
        Number of channel groups; must divide ``in_channels`` and ``out_channels``.
    w_initializer : Initializer, callable, array or number
        Kernel of shape ``(K, in_channels // groups, out_channels)``.
    b_initializer : Initializer, callable, array, number or None
        Bias of shape ``(1, out_channels)`` (a ``(out_channels,)`` array is accepted);
        ``None`` means no bias.
    mask : array, optional
        Multiplied into the kernel in every forward pass, so masked weights get zero
        gradient; its shape must broadcast to the kernel shape.
    mode : brainpy.math.Mode, optional
        ``NonBatchingMode`` takes ``[H, C_in]`` inputs; ``BatchingMode`` and
        ``TrainingMode`` take ``[B, H, C_in]``. Parameters are ``bm.TrainVar`` in
        ``TrainingMode`` and ``bm.Variable`` otherwise. Default: ``bm.get_mode()``.
    name : str, optional
        Name of the layer.
    padding_mode : str
        What the padding holds (PyTorch's names): ``'zeros'`` (default); ``'reflect'``
        (the input mirrored about its end samples, which are not repeated; the padding
        must be narrower than the input); ``'replicate'`` (the end samples repeated);
        ``'circular'`` (the input wrapped around; padding at most the input's length).
        Modes other than ``'zeros'`` need ``lhs_dilation=1``. Not an argument of
        :class:`brainpy.dnn.Conv1d`; it comes last, so positional calls stay compatible.

    Notes
    -----
    The output length, with ``(low, high)`` the padding,
    ``Hd = (H - 1) * lhs_dilation + 1`` and ``Kd = (K - 1) * rhs_dilation + 1``, is

    .. math:: H_{out} = \left\lfloor \frac{H_d + low + high - K_d}{stride} \right\rfloor + 1

    ``bool`` and integer inputs are computed in the parameters' dtype; floating
    inputs are promoted with the parameters by JAX's rules (``float16`` and
    ``bfloat16`` with ``float32`` parameters give ``float32``; ``float64`` gives
    ``float64`` when 64-bit mode is on).

    Raises
    ------
    TypeError, ValueError
        At construction, for any malformed argument. When called, for an input whose
        rank does not fit the mode, whose channel count is not ``in_channels``, whose
        dtype is not real, or which is too short for the kernel.

    Examples
    --------
    >>> import brainpy.math as bm
    >>> import jax.numpy as jnp
    >>> import bp_conv_ext
    >>> conv = bp_conv_ext.Conv1d(1, 1, 3, w_initializer=1.0, mode=bm.NonBatchingMode())
    >>> conv(jnp.ones((5, 1)))[:, 0].tolist()
    [2.0, 3.0, 3.0, 3.0, 2.0]
    >>> spikes = jnp.zeros((8, 100, 1), dtype=bool)
    >>> bp_conv_ext.Conv1d(1, 16, 5, stride=2, mode=bm.TrainingMode())(spikes).shape
    (8, 50, 16)
    """

    # brainpy compares a mode with isinstance against these classes (its annotation says
    # instances).
    supported_modes = (bm.NonBatchingMode, bm.BatchingMode, bm.TrainingMode)  # type: ignore[assignment]

    @_args.refuse_pytorch_names({
        **_args.PYTORCH_NAMES,
        'bias': "here it is `b_initializer`: b_initializer=None for no bias (bias=False); "
                "the default is a zero-initialised bias",
        'dtype': "there is no dtype argument here: the parameters take BrainPy's default "
                 "float type (bm.set_dfloat), or the dtype of a w_initializer array",
    })
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int],
        stride: int | tuple[int] | None = None,
        strides: int | tuple[int] | None = None,
        padding: str | int | tuple[int, int] | Sequence[tuple[int, int]] = 'SAME',
        lhs_dilation: int | tuple[int] = 1,
        rhs_dilation: int | tuple[int] = 1,
        groups: int = 1,
        w_initializer: bp.init.Initializer | Callable | bm.Array | ArrayLike = _DEFAULT_W_INIT,
        b_initializer: (bp.init.Initializer | Callable | bm.Array | ArrayLike
                        | None) = _DEFAULT_B_INIT,
        mask: bm.Array | None = None,
        mode: bm.Mode | None = None,
        name: str | None = None,
        padding_mode: str = 'zeros',
    ):
        super().__init__(name=check_name(name), mode=check_mode(mode))
        self._given = dict(padding=padding, name=name, mode=mode)   # as written, for repr
        self.config = _args.layer_config(in_channels, out_channels, kernel_size,
                                         _args.resolve_stride(stride, strides), padding,
                                         lhs_dilation, rhs_dilation, groups, padding_mode)
        for attribute, value in self.config.attributes().items():   # brainpy.dnn.Conv1d's
            setattr(self, attribute, value)
        self.w_initializer = w_initializer
        self.b_initializer = b_initializer

        kernel_shape = self.config.kernel_shape
        w = _params.init_param('w_initializer', w_initializer, kernel_shape,
                               float_dtype=bm.dftype())
        if w is None:
            raise ValueError("`w_initializer` (=None) must give the kernel; only "
                             "`b_initializer` may be None.")
        b = _params.init_param('b_initializer', b_initializer, (1, self.out_channels),
                               alt_shapes=((self.out_channels,),), float_dtype=bm.dftype())
        self.mask = _params.make_mask(mask, kernel_shape, w.dtype)
        var = bm.TrainVar if isinstance(self.mode, bm.TrainingMode) else bm.Variable
        self.w = var(w)
        self.b = None if b is None else var(b)

    def _checked(self, x, sequence: bool):
        """``x`` as an array (a step, or a sequence ``[T, ...]``) and its unit, ``None``."""
        x = _args.as_input(x)
        mode_name = type(self.mode).__name__
        shape = STEP_SHAPES[mode_name]
        rank = shape.count(',') + 1
        if sequence:
            shape, rank = '[T, ' + shape[1:], rank + 1
        if x.ndim != rank:
            what = 'multi_step' if sequence else 'a call'
            raise ValueError(f"{self.name} is in {mode_name}, where {what} accepts inputs of "
                             f"shape {shape} (rank {rank}); got an input of shape {x.shape}.")
        if x.shape[-1] != self.in_channels:
            raise ValueError(f"{self.name} expects in_channels={self.in_channels} in the last "
                             f"axis; got an input of shape {x.shape}." +
                             _args.layout_hint(x.shape, self.in_channels))
        return x, None

    def _kernel(self):
        return (self.w.value if self.mask is None else self.w.value * self.mask), None

    def _bias(self, x_unit, w_unit):
        return None if self.b is None else self.b.value

    def _channels_last(self, x):
        return x

    def _with_unit(self, y, x_unit):
        return y

    def torch_state_dict(self) -> dict:
        """The parameters in PyTorch's layout, as NumPy arrays: ``'weight'`` of shape
        ``(C_out, C_in // groups, K)`` and, when the layer has a bias, ``'bias'`` of shape
        ``(C_out,)`` (``torch.nn.Conv1d.load_state_dict`` takes them after
        ``torch.from_numpy``). A layer with a mask raises ``ValueError``."""
        return _torch.torch_state_dict(self)

    def load_torch_state_dict(self, state_dict):
        """Load PyTorch-layout parameters (a ``torch.nn.Conv1d.state_dict()`` or a mapping
        of arrays with the same keys and shapes) into this layer's variables.

        Examples
        --------
        >>> import numpy as np
        >>> import brainpy.math as bm
        >>> import bp_conv_ext
        >>> conv = bp_conv_ext.Conv1d(2, 3, 5, mode=bm.NonBatchingMode())
        >>> {key: value.shape for key, value in conv.torch_state_dict().items()}
        {'weight': (3, 2, 5), 'bias': (3,)}
        >>> conv.load_torch_state_dict({'weight': np.ones((3, 2, 5)), 'bias': np.zeros(3)})
        >>> conv(np.ones((7, 2)))[3].tolist()     # 5 taps x 2 channels of ones
        [10.0, 10.0, 10.0]
        """
        _torch.load_torch_state_dict(self, state_dict)

    def _torch_parameters(self):
        return dict(kernel=self.w.value, bias=None if self.b is None else self.b.value,
                    mask=self.mask, label=self.name)

    def _set_torch_parameters(self, kernel, bias):
        self.w.value = jnp.asarray(kernel, dtype=self.w.dtype)
        if bias is not None:
            self.b.value = jnp.asarray(bias, dtype=self.b.dtype).reshape(self.b.shape)

    def to_torch(self):
        """A ``torch.nn.Conv1d`` with this layer's configuration and parameters (it takes
        ``[B, C, H]`` input). Raises ``ValueError`` for what it cannot hold:
        ``lhs_dilation > 1``, ``'SAME'`` padding with ``stride > 1``, padding that
        differs between the two sides (``'CAUSAL'``), a mask."""
        return _torch.to_torch(self)

    def __repr__(self):
        parts = [f"in_channels={self.in_channels}", f"out_channels={self.out_channels}",
                 f"kernel_size={self.kernel_size[0]}"]
        if self.stride[0] != 1:
            parts.append(f"stride={self.stride[0]}")
        if self._given['padding'] != 'SAME':
            parts.append(f"padding={self._given['padding']!r}")
        for key in ('lhs_dilation', 'rhs_dilation'):
            if getattr(self, key)[0] != 1:
                parts.append(f"{key}={getattr(self, key)[0]}")
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        if self.padding_mode != 'zeros':
            parts.append(f"padding_mode={self.padding_mode!r}")
        if self.w_initializer is not _DEFAULT_W_INIT:
            parts.append(f"w_initializer={_params.describe_init(self.w_initializer)}")
        if self.b_initializer is not _DEFAULT_B_INIT:
            parts.append(f"b_initializer={_params.describe_init(self.b_initializer)}")
        if self.mask is not None:
            parts.append(f"mask=<array shape={tuple(self.mask.shape)}>")
        if self._given['mode'] is not None:
            parts.append(f"mode={self.mode!r}")
        if self._given['name'] is not None:
            parts.append(f"name={self.name!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


def from_torch(module, *, mode=None, name=None):
    """Build a :class:`bp_conv_ext.Conv1d` with the configuration and weights of a
    ``torch.nn.Conv1d``.

    Parameters
    ----------
    module : torch.nn.Conv1d
        The layer to copy. Every ``torch.nn.Conv1d`` option maps: ``stride``,
        ``padding`` (ints, ``'same'``, ``'valid'``), ``dilation`` (``rhs_dilation`` here),
        ``groups``, ``bias`` and ``padding_mode``.
    mode : brainpy.math.Mode, optional
        Computation mode of the new layer (default ``bm.get_mode()``).
    name : str, optional
        Name of the new layer.

    Returns
    -------
    bp_conv_ext.Conv1d
        Computes what ``module`` computes, on channels-last input (``[B, H, C]``
        where PyTorch takes ``[B, C, H]``). :meth:`Conv1d.to_torch` goes back.
    """
    args = _torch.layer_arguments(module)
    kernel, bias = args.pop('kernel'), args.pop('bias')
    return Conv1d(**args, w_initializer=kernel, b_initializer=bias, mode=mode, name=name)
