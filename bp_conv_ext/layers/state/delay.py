"""The brainpy.state delay layer: synapses with learnable delays as a brainstate module."""
from collections.abc import Callable, Sequence

import brainstate
import jax.numpy as jnp
from jax.typing import ArrayLike

from ...core import args as _args
from ...core import params as _params
from ...ops import delays as _delays
from ..base import DelayLayer
from . import units as _units


class DelayConv1d(DelayLayer, brainstate.nn.Module):
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
        in_size: int | Sequence[int],
        out_size: int | Sequence[int],
        max_delay: int,
        kernel_count: int = 1,
        # brainstate.nn.Conv1d's default, an initializer that holds no state.
        w_init: Callable | ArrayLike = brainstate.nn.init.KaimingUniform(),  # noqa: B008
        delay_init: Callable | ArrayLike | None = None,
        b_init: Callable | ArrayLike | None = None,
        sigma: float | None = None,
        interpolation: str = 'gauss',
        input_dtype=None,
        name: str | None = None,
        param_type: type = brainstate.ParamState,
    ):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"`name` (={name!r}) must be None or a str.")
        # brainstate.nn.Module's, after the mixin in the method order.
        super().__init__(name=name)  # type: ignore[call-arg]
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
            c, (w_init, delay_init, b_init), ('w_init', 'delay_init', 'b_init'),
            brainstate.environ.dftype())
        params = dict(weight=weight) if bias is None else dict(weight=weight, bias=bias)
        self.weight = param_type(params)
        self.delay = param_type(delays)
        dtype = delays.dtype
        self.sigma = brainstate.State(jnp.asarray(c.sigma, dtype))
        # In the state, so that a checkpoint taken after round_delays() keeps rounding.
        self.rounded = brainstate.State(_delays.rounded_flag(c.interpolation))
        self.input_dtype = jnp.dtype(dtype if input_dtype is None else input_dtype)
        self.init_state()

    def init_state(self, batch_size: int | None = None, **kwargs):
        """A buffer of ``max_delay`` past inputs (zeros), for ``batch_size`` samples (``None``:
        unbatched inputs)."""
        lead = () if batch_size is None else (_args.positive_int('batch_size', batch_size),)
        self.buffer = brainstate.HiddenState(
            jnp.zeros(lead + (self.max_delay, self.in_channels), self.input_dtype))
        self.index = brainstate.ShortTermState(jnp.zeros((), jnp.int32))

    def reset_state(self, batch_size: int | None = None, **kwargs):
        """Clear the buffer of past inputs (for ``batch_size`` samples)."""
        self.init_state(batch_size)

    @property
    def _label(self) -> str:
        return self.name or type(self).__name__

    def _weights(self):
        return _params.split_unit(self.weight.value['weight'])[0]

    def _bias(self, x_unit):
        return _units.bias_mantissa(self._label, self.weight.value.get('bias'), x_unit,
                                    _params.split_unit(self.weight.value['weight'])[1])

    def _with_unit(self, y, x_unit):
        return _units.with_unit(y, x_unit, self.weight.value['weight'])

    def _checked(self, x, sequence: bool):
        x, unit = _params.split_unit(x)
        x = _args.as_input(x)
        step_shape = '[B, C]' if self.buffer.value.ndim == 3 else '[C]'
        _delays.check_input(self._label, x, self.in_channels, self.buffer.value, sequence,
                            step_shape)
        return x, unit
