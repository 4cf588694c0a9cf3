"""The classic BrainPy delay layer: synapses with learnable delays."""
import numbers
from collections.abc import Callable

import brainpy as bp
import brainpy.math as bm
import jax.numpy as jnp
from jax.typing import ArrayLike

from ...core import args as _args
from ...ops import delays as _delays
from ..base import DelayLayer
from .modes import DELAY_STEP_SHAPES, check_mode, check_name

_DEFAULT_DELAY_W_INIT = bp.init.KaimingUniform()


class DelayConv1d(DelayLayer, bp.dnn.Layer):
    r"""Synapses with learnable delays: a causal convolution over time.

    Every synapse from input channel ``c`` to output channel ``o`` holds ``kernel_count``
    pairs (weight, delay), delays in ``[0, max_delay]`` time steps, and adds
    ``weight * x[t - delay, c]`` to ``y[t, o]``. The delays are learned with the weights
    (Hammouamri, Khalfaoui-Hassani and Masquelier 2023, "Learning delays in spiking neural
    networks using dilated convolutions with learnable spacings"): while training, each
    weight is spread over the taps around its delay by a Gaussian of width ``sigma``
    (``interpolation='gauss'``), which is narrowed during training
    (:func:`bp_conv_ext.sigma_schedule`); :meth:`round_delays` then puts each weight on one
    tap (``'round'``), for simulation.

    The same layer runs in two forms with the same numbers: :meth:`update` takes one time
    step (``[C_in]`` in ``NonBatchingMode``, ``[B, C_in]`` otherwise) and keeps the last
    ``max_delay`` inputs in a ring buffer (``bm.Variable``\ s, cleared by
    :meth:`reset_state`), so it runs in ``bp.DSRunner`` and ``bp.BPTT``;
    :meth:`multi_step` takes a whole sequence (``[T, C_in]`` or ``[T, B, C_in]``) as one
    convolution over time, continuing from and updating the same buffer, which is what
    :class:`bp_conv_ext.LayerByLayer` calls. Both go through :func:`bp_conv_ext.conv1d`'s
    core: every backend, and the event-driven path on ``bool`` spikes.

    Parameters
    ----------
    in_channels, out_channels : int
        Numbers of input and output channels.
    max_delay : int
        The longest delay, in time steps (>= 1); the kernel has ``max_delay + 1`` taps.
    kernel_count : int
        (weight, delay) pairs per synapse (default 1).
    w_initializer : Initializer, callable, array or number
        Weights, shape ``(kernel_count, in_channels, out_channels)``.
    delay_initializer : Initializer, callable, array or number
        Delays in time steps, same shape, in ``[0, max_delay]``; default uniform over it.
    b_initializer : Initializer, callable, array, number or None
        Bias of shape ``(1, out_channels)``; ``None`` (the default) means no bias.
    sigma : float, optional
        Width of the Gaussian, in time steps (default ``max_delay / 2``). Kept in a
        ``bm.Variable`` (:meth:`set_sigma`), so that narrowing it needs no recompilation.
    interpolation : {'gauss', 'round'}
        How a delay becomes taps (see above).
    input_dtype : dtype, optional
        The dtype of the buffered inputs: default ``bool`` (spikes) in ``NonBatchingMode``
        and ``BatchingMode``, the float dtype in ``TrainingMode``. An input that this dtype
        cannot hold (floats into a ``bool`` buffer) is refused.
    mode : brainpy.math.Mode, optional
        Parameters are ``bm.TrainVar`` in ``TrainingMode``, ``bm.Variable`` otherwise.
    name : str, optional
        Name of the layer.

    Examples
    --------
    >>> import brainpy.math as bm, jax.numpy as jnp
    >>> import bp_conv_ext
    >>> layer = bp_conv_ext.DelayConv1d(1, 1, max_delay=3, w_initializer=1.0,
    ...                                 delay_initializer=2.0, interpolation='round',
    ...                                 mode=bm.NonBatchingMode())
    >>> spikes = jnp.zeros((6, 1), dtype=bool).at[1].set(True)
    >>> layer.multi_step(spikes)[:, 0].tolist()      # the spike at t = 1 arrives at t = 3
    [0.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    """

    # brainpy compares a mode with isinstance against these classes (its annotation says
    # instances).
    supported_modes = (bm.NonBatchingMode, bm.BatchingMode, bm.TrainingMode)  # type: ignore[assignment]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        max_delay: int,
        kernel_count: int = 1,
        w_initializer: (bp.init.Initializer | Callable | bm.Array
                        | ArrayLike) = _DEFAULT_DELAY_W_INIT,
        delay_initializer: bp.init.Initializer | Callable | bm.Array | ArrayLike | None = None,
        b_initializer: bp.init.Initializer | Callable | bm.Array | ArrayLike | None = None,
        sigma: float | None = None,
        interpolation: str = 'gauss',
        input_dtype=None,
        mode: bm.Mode | None = None,
        name: str | None = None,
    ):
        super().__init__(name=check_name(name), mode=check_mode(mode))
        self.config = _delays.delay_config(in_channels, out_channels, max_delay, kernel_count,
                                           interpolation, sigma)
        c = self.config
        self.in_channels, self.out_channels = c.in_channels, c.out_channels
        self.max_delay, self.kernel_count = c.max_delay, c.kernel_count
        if delay_initializer is None:
            delay_initializer = bp.init.Uniform(0., float(c.max_delay))
        w, delays, b = _delays.initial_parameters(
            c, (w_initializer, delay_initializer, b_initializer),
            ('w_initializer', 'delay_initializer', 'b_initializer'), bm.dftype())
        var = bm.TrainVar if isinstance(self.mode, bm.TrainingMode) else bm.Variable
        self.w = var(w)
        self.delay = var(delays)
        self.b = None if b is None else var(b)
        self.sigma = bm.Variable(jnp.asarray(c.sigma, w.dtype))
        # In the state, so that a checkpoint taken after round_delays() keeps rounding.
        self.rounded = bm.Variable(_delays.rounded_flag(c.interpolation))
        if input_dtype is None:
            input_dtype = w.dtype if isinstance(self.mode, bm.TrainingMode) else jnp.bool_
        self.input_dtype = jnp.dtype(input_dtype)
        self.reset_state()

    def reset_state(self, batch_or_mode=None, **kwargs):
        """Clear the buffer of past inputs (for ``batch_or_mode`` samples: an int, or the
        layer's mode's batch size)."""
        batch = self.mode if batch_or_mode is None else batch_or_mode
        if isinstance(batch, numbers.Integral):
            batch = _args.positive_int('batch_or_mode', batch)
        zeros = lambda shape: jnp.zeros(shape, self.input_dtype)
        self.buffer = bp.init.variable_(zeros, (self.max_delay, self.in_channels), batch)
        self.index = bm.Variable(jnp.zeros((), jnp.int32))

    def _weights(self):
        return self.w.value

    def _bias(self, x_unit):
        return None if self.b is None else self.b.value

    def _with_unit(self, y, x_unit):
        return y

    def _checked(self, x, sequence: bool):
        x = _args.as_input(x)
        mode_name = type(self.mode).__name__
        _delays.check_input(f"{self.name} (in {mode_name})", x, self.in_channels,
                            self.buffer.value, sequence, DELAY_STEP_SHAPES[mode_name])
        return x, None

    def __repr__(self):
        return (f"{type(self).__name__}(in_channels={self.in_channels}, "
                f"out_channels={self.out_channels}, max_delay={self.max_delay}, "
                f"kernel_count={self.kernel_count}, interpolation={self.interpolation!r}, "
                f"mode={self.mode!r}, name={self.name!r})")
