"""The layers for ``brainpy.state`` models: brainstate modules over the same convolution.

``bp_conv_ext.state.Conv1d`` is a :class:`brainstate.nn.Module` that takes exactly the
arguments of :class:`brainstate.nn.Conv1d` (and ``padding_mode`` last); it keeps its
parameters the way brainstate's layer does (one ``ParamState`` holding
``{'weight': ..., 'bias': ...}``) and computes with the pure functions that the classic
:class:`bp_conv_ext.Conv1d` calls (``bp_conv_ext._conv.apply``), so every backend, the
event path, the padding forms and modes and the argument checks are the same.
``bp_conv_ext.state.LayerByLayer`` is a :class:`brainstate.nn.Sequential` that can also run
a whole sequence layer by layer.

This module needs brainstate and brainunit (installed with BrainPy 2.8, which ships
``brainpy.state``).
"""
import inspect
from typing import Callable, Optional, Sequence, Tuple, Union

import brainstate
import brainunit as u
import jax
import jax.numpy as jnp

from . import _args, _conv, _delays, _params, _torch

__all__ = ['Conv1d', 'DelayConv1d', 'LayerByLayer', 'from_torch']

# The defaults of brainstate.nn.Conv1d itself, so that the two layers start alike.
_BRAINSTATE_DEFAULTS = inspect.signature(brainstate.nn.Conv1d.__init__).parameters
_DEFAULT_W_INIT = _BRAINSTATE_DEFAULTS['w_init'].default


def _in_size(in_size) -> Tuple[int, int]:
    if isinstance(in_size, (str, bytes)) or not isinstance(in_size, Sequence) or \
            len(in_size) != 2:
        raise ValueError(f"`in_size` (={in_size!r}) must be a pair (length, channels), or "
                         f"(channels, length) with channel_first=True: one spatial dimension "
                         f"plus the channel dimension.")
    return tuple(_args.positive_int('in_size', size) for size in in_size)


def _split(x):
    """``(mantissa, unit)`` of an input or parameter; plain arrays have no unit (``None``)."""
    mantissa, quantity = _params._split_unit(x)
    return mantissa, None if quantity is None else quantity.unit


def _times(unit_a, unit_b):
    if unit_a is None:
        return unit_b
    return unit_a if unit_b is None else unit_a * unit_b


def _bias_mantissa(label, b, x_unit, w_unit):
    """The bias (``None`` for none) in the output's unit, the input's times the kernel's."""
    unit = _times(x_unit, w_unit)
    if b is not None and (unit is not None or isinstance(b, u.Quantity)):
        out_unit = u.UNITLESS if unit is None else unit
        if u.get_dim(b) != u.get_dim(out_unit):
            raise u.UnitMismatchError(
                f"{label}: the bias has unit {u.get_unit(b)}, but the output has unit "
                f"{out_unit} (the input's unit {x_unit or u.UNITLESS} times the kernel's "
                f"{w_unit or u.UNITLESS}); give b_init that unit.")
        b = u.Quantity(b).to_decimal(out_unit)
    return b


def _output_with_unit(y, x_unit, kernel):
    """The output mantissa ``y`` with its unit: the input's times the kernel's."""
    unit = _times(x_unit, _split(kernel)[1])
    return y if unit is None else u.maybe_decimal(u.Quantity(y, unit=unit))


class Conv1d(_conv.BackendChoice, brainstate.nn.Module):
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
        kernel_size: Union[int, Tuple[int]],
        stride: Union[int, Tuple[int]] = 1,
        padding: Union[str, int, Tuple[int, int], Sequence[Tuple[int, int]]] = 'SAME',
        lhs_dilation: Union[int, Tuple[int]] = 1,
        rhs_dilation: Union[int, Tuple[int]] = 1,
        groups: int = 1,
        w_init: Union[Callable, jax.Array, float] = _DEFAULT_W_INIT,
        b_init: Optional[Union[Callable, jax.Array, float]] = None,
        w_mask: Optional[Union[jax.Array, Callable]] = None,
        channel_first: bool = False,
        name: Optional[str] = None,
        param_type: type = brainstate.ParamState,
        padding_mode: str = 'zeros',
    ):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"`name` (={name!r}) must be None or a str.")
        super().__init__(name=name)
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

        weight = _params.init_param('w_init', w_init, c.kernel_shape)
        if weight is None:
            raise ValueError("`w_init` (=None) must give the kernel; only `b_init` may be None.")
        params = dict(weight=weight)
        bias_shape = (1, c.out_channels, 1) if channel_first else (1, c.out_channels)
        bias = _params.init_param('b_init', b_init, bias_shape, alt_shapes=((c.out_channels,),))
        if bias is not None:
            params['bias'] = bias
        if callable(w_mask) and not hasattr(w_mask, 'shape'):
            w_mask = w_mask(c.kernel_shape)
        self.w_mask = _params.make_mask(w_mask, c.kernel_shape, _split(weight)[0].dtype, 'w_mask')
        self.weight = param_type(params)

    def update(self, x):
        """Convolve ``in_size``-shaped input, with or without a leading batch axis."""
        x, unit = self._checked(x, sequence=False)
        return self._with_unit(self._convolve(x, unit), unit)

    def multi_step(self, xs, fold: str = 'time'):
        """Convolve a whole sequence in one folded call.

        Takes ``[T, B, *in_size]`` (or ``[T, *in_size]``) and returns the per-step outputs
        stacked along the first axis, equal to calling the layer on every step. ``fold``:
        ``'time'`` (``T * B``, free; the default) or ``'batch'`` (``B * T``, for a batch
        split over devices).
        """
        fold = _conv.check_fold(fold)
        xs, unit = self._checked(xs, sequence=True)
        if xs.ndim == 3:
            ys = self._convolve(xs, unit)
        else:
            ys = _conv.fold_time(lambda x: self._convolve(x, unit), xs, fold)
        return self._with_unit(ys, unit)

    def which_backend(self, x, platform=None) -> str:
        """What a call on ``x`` (concrete) computes with on ``platform`` (default: JAX's
        default backend): ``'event'`` or the dense algorithm's name, as
        :func:`bp_conv_ext.which_backend` says."""
        x, _ = self._checked(x, sequence=False)
        x = self._channels_last(x if x.ndim == 3 else x[None])
        return _conv.which(x, self._kernel()[0], platform=platform,
                           **self.config.options(self.backend))

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
        kernel, unit = _split(params['weight'])
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
        x, unit = _split(x)
        x = _conv.as_input(x)
        lead = ('T, ' if sequence else '')
        ranks = (3, 4) if sequence else (2, 3)
        if x.ndim not in ranks or x.shape[x.ndim - 2:] != self.in_size:
            what = 'multi_step' if sequence else 'a call'
            length = self.in_size[1 if self.channel_first else 0]
            raise ValueError(
                f"{self._label} has in_size={self.in_size}, so {what} accepts inputs of shape "
                f"[{lead}{', '.join(map(str, self.in_size))}] or "
                f"[{lead}B, {', '.join(map(str, self.in_size))}]; got an input of shape "
                f"{x.shape}." + _args.layout_hint(x.shape, self.config.in_channels, length,
                                                   channels_last=not self.channel_first))
        return x, unit

    @property
    def _label(self) -> str:
        return self.name or type(self).__name__

    def _channels_last(self, x):
        return jnp.swapaxes(x, -1, -2) if self.channel_first else x

    def _kernel(self):
        w, unit = _split(self.weight.value['weight'])
        return (w if self.w_mask is None else w * self.w_mask), unit

    def _convolve(self, x, x_unit):
        """The output's mantissa for a batch ``x`` ``[N, *in_size]`` (a mantissa) whose unit
        is ``x_unit`` (``None``: a plain array)."""
        w, w_unit = self._kernel()
        b = _bias_mantissa(self._label, self.weight.value.get('bias'), x_unit, w_unit)
        y = _conv.apply(self._channels_last(x), w, b, **self.config.options(self.backend))
        return self._channels_last(y)

    def _with_unit(self, y, x_unit):
        return _output_with_unit(y, x_unit, self.weight.value['weight'])


class DelayConv1d(_conv.BackendChoice, brainstate.nn.Module):
    r"""Synapses with learnable delays for ``brainpy.state`` / brainstate models.

    The twin of :class:`bp_conv_ext.DelayConv1d` (same kernel, same two forms, same
    functions underneath), with brainstate's conventions: parameters in ``param_type``
    states (``layer.weight`` holds ``{'weight': ..., 'bias': ...}``, ``layer.delay`` the
    delays, so that an optimiser can give the delays their own learning rate), the buffer of
    past inputs in a ``brainstate.HiddenState`` made by ``init_state(batch_size)`` (as
    ``brainstate.nn.init_all_states`` calls it) and cleared by ``reset_state``, and
    ``in_size`` / ``out_size``. A kernel with a unit (``w_init`` with one) gives outputs
    with the input's unit times it, as :class:`Conv1d` does.

    Parameters
    ----------
    in_size, out_size : int
        Numbers of input and output channels (or sequences of one int).
    max_delay, kernel_count, sigma, interpolation
        As in :class:`bp_conv_ext.DelayConv1d`.
    w_init : initializer, callable, array or number
        Weights, shape ``(kernel_count, in_size, out_size)``; default ``KaimingUniform()``.
    delay_init : initializer, callable, array or number, optional
        Delays in ``[0, max_delay]`` time steps; default uniform over that range.
    b_init : initializer, callable, array, number or None
        Bias of shape ``(1, out_size)``; ``None`` (default): none.
    input_dtype : dtype, optional
        The dtype the past inputs are kept in: default the weights' float dtype
        (``brainpy.state`` neurons emit float spikes); ``bool`` for ``bool`` spikes.
    name : str, optional
        Name of the module.
    param_type : type
        The state class of the weights and delays (default ``brainstate.ParamState``).

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> import bp_conv_ext.state
    >>> layer = bp_conv_ext.state.DelayConv1d(1, 1, max_delay=3, w_init=1.0, delay_init=2.0,
    ...                                       interpolation='round')
    >>> _ = brainstate.nn.init_all_states(layer)
    >>> [float(layer(jnp.ones(1) * (t == 1))[0]) for t in range(5)]
    [0.0, 0.0, 0.0, 1.0, 0.0]
    """

    def __init__(
        self,
        in_size: Union[int, Sequence[int]],
        out_size: Union[int, Sequence[int]],
        max_delay: int,
        kernel_count: int = 1,
        w_init: Union[Callable, jax.Array, float] = brainstate.nn.init.KaimingUniform(),
        delay_init: Optional[Union[Callable, jax.Array, float]] = None,
        b_init: Optional[Union[Callable, jax.Array, float]] = None,
        sigma: Optional[float] = None,
        interpolation: str = 'gauss',
        input_dtype=None,
        name: Optional[str] = None,
        param_type: type = brainstate.ParamState,
    ):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"`name` (={name!r}) must be None or a str.")
        super().__init__(name=name)
        if not (isinstance(param_type, type) and issubclass(param_type, brainstate.State)):
            raise TypeError(f"`param_type` (={param_type!r}) must be a brainstate.State "
                            f"subclass such as brainstate.ParamState.")
        self.config = _delays.delay_config(in_size, out_size, max_delay, kernel_count,
                                           interpolation, sigma, ('in_size', 'out_size'))
        c = self.config
        self.in_channels, self.out_channels = c.in_channels, c.out_channels
        self.in_size, self.out_size = (c.in_channels,), (c.out_channels,)
        self.max_delay, self.kernel_count = c.max_delay, c.kernel_count
        if delay_init is None:
            delay_init = brainstate.nn.init.Uniform(0., float(c.max_delay))
        weight, delays, bias = _delays.initial_parameters(
            c, (w_init, delay_init, b_init), ('w_init', 'delay_init', 'b_init'))
        params = dict(weight=weight) if bias is None else dict(weight=weight, bias=bias)
        self.weight = param_type(params)
        self.delay = param_type(delays)
        dtype = delays.dtype
        self.sigma = brainstate.State(jnp.asarray(c.sigma, dtype))
        # In the state, so that a checkpoint taken after round_delays() keeps rounding.
        self.rounded = brainstate.State(_delays.rounded_flag(c.interpolation))
        self.input_dtype = jnp.dtype(dtype if input_dtype is None else input_dtype)
        self.init_state()

    def init_state(self, batch_size: Optional[int] = None, **kwargs):
        """A buffer of ``max_delay`` past inputs (zeros), for ``batch_size`` samples (``None``:
        unbatched inputs)."""
        lead = () if batch_size is None else (_args.positive_int('batch_size', batch_size),)
        self.buffer = brainstate.HiddenState(
            jnp.zeros(lead + (self.max_delay, self.in_channels), self.input_dtype))
        self.index = brainstate.ShortTermState(jnp.zeros((), jnp.int32))

    def reset_state(self, batch_size: Optional[int] = None, **kwargs):
        """Clear the buffer of past inputs (for ``batch_size`` samples)."""
        self.init_state(batch_size)

    def kernel(self):
        """The kernel over time, ``[max_delay + 1, in_size, out_size]`` (the weights'
        mantissa)."""
        return _delays.layer_kernel(_split(self.weight.value['weight'])[0], self.delay.value,
                                    self.max_delay, self.sigma.value, self.rounded.value)

    @property
    def interpolation(self) -> str:
        """``'gauss'`` or ``'round'`` (after :meth:`round_delays`); kept in the state
        (``rounded``)."""
        return _delays.interpolation_of(self.rounded.value)

    def set_sigma(self, sigma: float):
        """Set the Gaussian's width (in time steps, > 0)."""
        self.sigma.value = jnp.asarray(_delays.check_sigma(sigma), self.sigma.value.dtype)

    def round_delays(self):
        """Round every delay to its nearest whole step and switch to ``'round'``
        interpolation."""
        self.delay.value = jnp.round(jnp.clip(self.delay.value, 0, self.max_delay))
        self.rounded.value = _delays.rounded_flag('round')

    def update(self, x):
        """One time step: ``[in_size]`` or ``[B, in_size]``, as the buffer was made."""
        x, unit = self._checked(x, sequence=False)
        y, self.buffer.value, self.index.value = _delays.step(
            self.buffer.value, self.index.value, x, self.kernel(), self._bias(unit),
            self.backend)
        return self._with_unit(y, unit)

    def multi_step(self, xs, fold: str = 'time'):
        """A whole time-first sequence as one convolution over time, continuing from and
        updating the buffer; the outputs at every step. (``fold`` is taken for the
        interface of :class:`LayerByLayer`: over time there is nothing to fold.)"""
        _conv.check_fold(fold)
        xs, unit = self._checked(xs, sequence=True)
        y, self.buffer.value, self.index.value = _delays.sequence(
            self.buffer.value, self.index.value, xs, self.kernel(), self._bias(unit),
            self.backend)
        return self._with_unit(y, unit)

    @property
    def _label(self) -> str:
        return self.name or type(self).__name__

    def _bias(self, x_unit):
        return _bias_mantissa(self._label, self.weight.value.get('bias'), x_unit,
                              _split(self.weight.value['weight'])[1])

    def _with_unit(self, y, x_unit):
        return _output_with_unit(y, x_unit, self.weight.value['weight'])

    def _checked(self, x, sequence: bool):
        x, unit = _split(x)
        x = _conv.as_input(x)
        step_shape = '[B, C]' if self.buffer.value.ndim == 3 else '[C]'
        _delays.check_input(self._label, x, self.in_channels, self.buffer.value, sequence,
                            step_shape)
        return x, unit


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


def _is_stateful(layer) -> bool:
    return isinstance(layer, brainstate.nn.Dynamics) or \
        bool(layer.states(brainstate.ShortTermState))


def _scan_time(layer, xs):
    """Advance a stateful module over the leading time axis, with ``i`` and ``t`` set in
    brainstate's environment as a simulation loop sets them."""
    dt = brainstate.environ.get_dt()

    def step(i, x):
        with brainstate.environ.context(i=i, t=i * dt):
            return layer(x)

    return brainstate.transform.for_loop(step, jnp.arange(xs.shape[0]), xs)


class LayerByLayer(brainstate.nn.Sequential):
    """A :class:`brainstate.nn.Sequential` that can also run a whole sequence layer by layer.

    Called as usual (``update``), it advances every layer by one time step. Its
    :meth:`multi_step` runs a whole input sequence through one layer after the other:
    layers with a ``multi_step`` method (:class:`Conv1d`, :class:`DelayConv1d`) get the
    whole sequence; other stateless modules (``Linear``, ``Flatten``, pooling, ...) are
    folded over time and called once; modules with state (``brainpy.state`` neurons such as
    ``LIF``, any ``brainstate.nn.Dynamics``) are advanced step by step with
    ``brainstate.transform.for_loop``. Both ways give the same outputs and gradients.

    States are not reset: initialise them first, as for a step-by-step run
    (``brainstate.nn.init_all_states(net, batch_size)``).

    Examples
    --------
    >>> import brainstate, brainunit as u, jax.numpy as jnp
    >>> import brainpy.state
    >>> from bp_conv_ext.state import Conv1d, LayerByLayer
    >>> net = LayerByLayer(Conv1d((20, 1), 4, 3, w_init=brainstate.nn.init.XavierNormal(unit=u.mA)),
    ...                    brainpy.state.LIF((20, 4)), brainstate.nn.Flatten(in_size=(20, 4)),
    ...                    brainstate.nn.Linear(80, 2))
    >>> _ = brainstate.nn.init_all_states(net, 8)
    >>> with brainstate.environ.context(dt=0.1 * u.ms):
    ...     net.multi_step(jnp.ones((10, 8, 20, 1))).shape    # [T, B, L, C] -> [T, B, 2]
    (10, 8, 2)
    """

    def multi_step(self, xs, fold: str = 'time'):
        """Run the whole time-first sequence ``xs`` (``[T, B, ...]``, or ``[T, ...]`` for
        unbatched states) through every layer in turn; returns the per-step outputs of the
        last layer stacked along the first axis. ``fold`` as in :meth:`Conv1d.multi_step`."""
        fold = _conv.check_fold(fold)
        xs, unit = _split(xs)
        xs = jnp.asarray(xs)
        xs = xs if unit is None else u.Quantity(xs, unit=unit)
        if xs.ndim < 2:
            raise ValueError(f"{self.name or type(self).__name__}.multi_step takes a time-first "
                             f"sequence [T, B, ...] or [T, ...]; got an input of shape "
                             f"{xs.shape}.")
        batched = self.in_size is None or xs.ndim == len(self.in_size) + 2
        for layer in self.layers:
            if hasattr(layer, 'multi_step'):
                xs = layer.multi_step(xs, fold=fold)
            elif isinstance(layer, brainstate.nn.Module) and _is_stateful(layer):
                xs = _scan_time(layer, xs)
            elif batched:
                xs = _conv.fold_time(layer, xs, fold)
            else:
                xs = layer(xs)        # the time axis serves as the batch
        return xs
