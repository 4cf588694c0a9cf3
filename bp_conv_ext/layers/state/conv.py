"""The brainpy.state convolution layer: a brainstate module over the same convolution."""
import inspect
from collections.abc import Callable, Sequence
from typing import cast

import brainstate
import brainunit as u
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ...core import args as _args
from ...core import params as _params
from ...interop import torch as _torch
from ..base import ConvLayer
from . import units as _units

# The defaults of brainstate.nn.Conv1d itself, so that the two layers start alike.
_BRAINSTATE_DEFAULTS = inspect.signature(brainstate.nn.Conv1d.__init__).parameters
_DEFAULT_W_INIT = _BRAINSTATE_DEFAULTS['w_init'].default


def _in_size(in_size) -> tuple[int, int]:
    if isinstance(in_size, (str, bytes)) or not isinstance(in_size, Sequence) or \
            len(in_size) != 2:
        raise ValueError(f"`in_size` (={in_size!r}) must be a pair (length, channels), or "
                         f"(channels, length) with channel_first=True: one spatial dimension "
                         f"plus the channel dimension.")
    first, second = (_args.positive_int('in_size', size) for size in in_size)
    return first, second



class Conv1d(ConvLayer, brainstate.nn.Module):
    r"""One-dimensional convolution for ``brainpy.state`` / brainstate models.

    A drop-in replacement for :class:`brainstate.nn.Conv1d`: the same arguments and
    defaults, layouts (channels last, or ``[C, L]`` with ``channel_first=True``),
    parameters (``layer.weight``, a ``param_type`` state holding ``{'weight': kernel,
    'bias': bias}``), ``in_size`` / ``out_size`` and ``w_mask``. Beyond it: ``bool``
    spikes (computed in the parameters' dtype), the event-driven path, ``'CAUSAL'``
    padding, ``'SAME'`` with ``lhs_dilation > 1``, ``padding_mode``, brainunit quantities
    for the input and the parameters, :meth:`multi_step`, and clear errors for bad input.
    It computes with the same functions as :class:`bp_conv_ext.Conv1d`.

    Parameters
    ----------
    in_size : (int, int)
        One sample without the batch axis: ``(L, C_in)``, or ``(C_in, L)`` with
        ``channel_first=True``. Inputs must have this shape, with an optional leading
        batch axis.
    out_channels : int
        Number of output channels ``C_out``.
    kernel_size : int
        Kernel length ``K`` (an int or a sequence of one int).
    stride, padding, lhs_dilation, rhs_dilation, groups
        As in :class:`bp_conv_ext.Conv1d`; ``padding`` also takes ``'CAUSAL'`` and
        lower-case names.
    w_init : initializer, callable, array or number
        The kernel, shape ``(K, C_in // groups, C_out)``; default: brainstate's
        ``XavierNormal()``. An initializer with a ``unit`` (or a quantity) gives a kernel
        with that unit. ``brainpy.state`` neurons take a current: to feed one, give the kernel
        a current unit, ``w_init=brainstate.nn.init.XavierNormal(unit=u.mA)``.
    b_init : initializer, callable, array, number or None
        The bias, shape ``(1, C_out)`` (``(1, C_out, 1)`` with ``channel_first=True``;
        ``(C_out,)`` is accepted); ``None`` (the default) means no bias.
    w_mask : array or callable, optional
        Multiplied into the kernel in every call (masked weights get zero gradient); it
        must broadcast to the kernel shape; a callable is called with the kernel shape.
    channel_first : bool
        ``[B, C, L]`` layout instead of ``[B, L, C]``.
    name : str, optional
        Name of the module.
    param_type : type
        The state class holding the parameters (default ``brainstate.ParamState``).
    padding_mode : str
        ``'zeros'`` (default), ``'reflect'``, ``'replicate'`` or ``'circular'``, as in
        :class:`bp_conv_ext.Conv1d`.

    Notes
    -----
    The output length, with ``(low, high)`` the padding,
    ``Hd = (L - 1) * lhs_dilation + 1`` and ``Kd = (K - 1) * rhs_dilation + 1``, is

    .. math:: L_{out} = \left\lfloor \frac{H_d + low + high - K_d}{stride} \right\rfloor + 1

    With quantities, the output's unit is the input's times the kernel's, and the bias
    must have that unit.

    Raises
    ------
    TypeError, ValueError
        At construction, for a malformed argument (also when ``in_size`` is too short for
        the kernel). When called, for an input whose shape is not ``in_size`` (with an
        optional batch axis) or whose dtype is not real.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import bp_conv_ext.state
    >>> conv = bp_conv_ext.state.Conv1d((5, 1), 1, 3, w_init=1.0)
    >>> conv(jnp.ones((5, 1)))[:, 0].tolist()
    [2.0, 3.0, 3.0, 3.0, 2.0]
    >>> spikes = jnp.zeros((8, 100, 1), dtype=bool)
    >>> bp_conv_ext.state.Conv1d((100, 1), 16, 5, stride=2)(spikes).shape
    (8, 50, 16)
    """

    @_args.refuse_pytorch_names({
        **_args.PYTORCH_NAMES,
        'in_channels': "here it is `in_size`, the shape of one sample: "
                       "in_size=(length, {value!r}) (or ({value!r}, length) with "
                       "channel_first=True)",
        'bias': "here it is `b_init`: b_init=brainstate.nn.init.ZeroInit() for a bias "
                "(bias=True); the default, None, is no bias",
        'dtype': "there is no dtype argument here: the parameters take brainstate's default "
                 "float type, or the dtype of a w_init array",
    })
    def __init__(
        self,
        in_size: Sequence[int],
        out_channels: int,
        kernel_size: int | tuple[int],
        stride: int | tuple[int] = 1,
        padding: str | int | tuple[int, int] | Sequence[tuple[int, int]] = 'SAME',
        lhs_dilation: int | tuple[int] = 1,
        rhs_dilation: int | tuple[int] = 1,
        groups: int = 1,
        w_init: Callable | ArrayLike = _DEFAULT_W_INIT,
        b_init: Callable | ArrayLike | None = None,
        w_mask: jax.Array | Callable | None = None,
        channel_first: bool = False,
        name: str | None = None,
        param_type: type = brainstate.ParamState,
        padding_mode: str = 'zeros',
    ):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"`name` (={name!r}) must be None or a str.")
        # brainstate.nn.Module's, after the mixin in the method order.
        super().__init__(name=name)  # type: ignore[call-arg]
        if not isinstance(channel_first, bool):
            raise TypeError(f"`channel_first` (={channel_first!r}) must be a bool.")
        if not (isinstance(param_type, type) and issubclass(param_type, brainstate.State)):
            raise TypeError(f"`param_type` (={param_type!r}) must be a brainstate.State "
                            f"subclass such as brainstate.ParamState.")
        size = _in_size(in_size)
        length, in_channels = size[::-1] if channel_first else size
        self.config = _args.layer_config(in_channels, out_channels, kernel_size, stride,
                                         padding, lhs_dilation, rhs_dilation, groups,
                                         padding_mode)
        c = self.config
        out_length = c.output_length(length)
        self.in_size = size
        self.out_size = (c.out_channels, out_length) if channel_first else \
            (out_length, c.out_channels)
        for attribute, value in c.attributes().items():      # brainstate.nn.Conv1d's
            setattr(self, attribute, value)
        self.channel_first, self.channels_last = channel_first, not channel_first
        self.kernel_shape = c.kernel_shape
        self.w_initializer, self.b_initializer = w_init, b_init

        float_dtype = brainstate.environ.dftype()
        weight = _params.init_param('w_init', w_init, c.kernel_shape, float_dtype=float_dtype)
        if weight is None:
            raise ValueError("`w_init` (=None) must give the kernel; only `b_init` may be None.")
        params = dict(weight=weight)
        bias_shape = (1, c.out_channels, 1) if channel_first else (1, c.out_channels)
        bias = _params.init_param('b_init', b_init, bias_shape, alt_shapes=((c.out_channels,),),
                                  float_dtype=float_dtype)
        if bias is not None:
            params['bias'] = bias
        if callable(w_mask) and not hasattr(w_mask, 'shape'):
            w_mask = w_mask(c.kernel_shape)
        self.w_mask = _params.make_mask(w_mask, c.kernel_shape, _params.split_unit(weight)[0].dtype,
                                        'w_mask')
        self.weight = param_type(params)

    def torch_state_dict(self) -> dict:
        """The parameters in PyTorch's layout, as NumPy arrays: ``'weight'``
        ``(C_out, C_in // groups, K)`` and, with a bias, ``'bias'`` ``(C_out,)``. A layer with a
        mask or with parameters in units raises ``ValueError``."""
        return _torch.torch_state_dict(self)

    def load_torch_state_dict(self, state_dict):
        """Load PyTorch-layout parameters (a ``torch.nn.Conv1d.state_dict()`` or a mapping of
        arrays with the same keys and shapes) into ``layer.weight``."""
        _torch.load_torch_state_dict(self, state_dict)

    def to_torch(self):
        """A ``torch.nn.Conv1d`` with this layer's configuration and parameters (it takes
        ``[B, C, L]``, the ``channel_first`` layout). Raises ``ValueError`` for what it cannot
        hold: ``lhs_dilation > 1``, ``'SAME'`` with ``stride > 1``, padding that differs
        between the two sides (``'CAUSAL'``), a mask, units."""
        return _torch.to_torch(self)

    def _torch_parameters(self):
        params = self.weight.value
        kernel, unit = _params.split_unit(params['weight'])
        bias = params.get('bias')
        if unit is not None or isinstance(bias, u.Quantity):
            raise ValueError(f"{self._label} has parameters in units; torch.nn.Conv1d holds "
                             f"plain numbers: convert them (u.get_mantissa) yourself.")
        return dict(kernel=kernel, bias=bias, mask=self.w_mask, label=self._label)

    def _set_torch_parameters(self, kernel, bias):
        params = dict(self.weight.value)
        params['weight'] = jnp.asarray(kernel, dtype=params['weight'].dtype)
        if bias is not None:
            params['bias'] = jnp.asarray(bias, dtype=params['bias'].dtype).reshape(
                params['bias'].shape)
        self.weight.value = params

    def _checked(self, x, sequence: bool):
        x, unit = _params.split_unit(x)
        x = _args.as_input(x)
        lead = ('T, ' if sequence else '')
        ranks = (3, 4) if sequence else (2, 3)
        in_size = cast(tuple[int, int], self.in_size)   # brainstate keeps the pair as given
        if x.ndim not in ranks or x.shape[x.ndim - 2:] != in_size:
            what = 'multi_step' if sequence else 'a call'
            length = in_size[1 if self.channel_first else 0]
            raise ValueError(
                f"{self._label} has in_size={in_size}, so {what} accepts inputs of shape "
                f"[{lead}{', '.join(map(str, in_size))}] or "
                f"[{lead}B, {', '.join(map(str, in_size))}]; got an input of shape "
                f"{x.shape}." + _args.layout_hint(x.shape, self.config.in_channels, length,
                                                   channels_last=not self.channel_first))
        return x, unit

    @property
    def _label(self) -> str:
        return self.name or type(self).__name__

    def _channels_last(self, x):
        return jnp.swapaxes(x, -1, -2) if self.channel_first else x

    def _kernel(self):
        w, unit = _params.split_unit(self.weight.value['weight'])
        return (w if self.w_mask is None else w * self.w_mask), unit

    def _bias(self, x_unit, w_unit):
        return _units.bias_mantissa(self._label, self.weight.value.get('bias'), x_unit, w_unit)

    def _with_unit(self, y, x_unit):
        return _units.with_unit(y, x_unit, self.weight.value['weight'])


def from_torch(module, length: int, *, channel_first: bool = False, name=None) -> Conv1d:
    """A :class:`Conv1d` with the configuration and parameters of a ``torch.nn.Conv1d``, for
    inputs of ``length`` samples (``in_size`` is ``(length, C_in)``, or ``(C_in, length)``
    with ``channel_first=True``, PyTorch's own layout). Every ``torch.nn.Conv1d`` option
    maps, as for :func:`bp_conv_ext.from_torch`; :meth:`Conv1d.to_torch` goes back."""
    args = _torch.layer_arguments(module)
    length = _args.positive_int('length', length)
    in_size = (args['in_channels'], length) if channel_first else (length, args['in_channels'])
    return Conv1d(in_size, args['out_channels'], args['kernel_size'],
                  stride=args['stride'], padding=args['padding'],
                  rhs_dilation=args['rhs_dilation'], groups=args['groups'],
                  w_init=args['kernel'], b_init=args['bias'], channel_first=channel_first,
                  name=name, padding_mode=args['padding_mode'])
