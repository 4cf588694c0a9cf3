"""Synaptic delays as a causal convolution over time, as pure functions.

A synapse from input channel ``c`` to output channel ``o`` with weight ``w`` and delay ``d``
adds ``w * x[t - d, c]`` to ``y[t, o]``. With ``kernel_count`` (weight, delay) pairs per
synapse and delays in ``[0, max_delay]``, the synapses of a layer are one kernel of
``max_delay + 1`` taps over time, ``kernel[d, c, o]``, built here from the weights and
delays: with ``'gauss'`` interpolation each pair spreads its weight over the taps by a
Gaussian of width ``sigma`` centred on its delay (normalised over the taps, so that delays
get gradients); with ``'round'`` it puts its weight on the tap nearest to its delay.

The kernel is then applied by this package's convolution (``ops.conv.apply``) over the time
axis, as ``y[t] = sum_d kernel[d] x[t - d]``: over a whole sequence at once (``sequence``) or
one step at a time over a window of the last ``max_delay + 1`` inputs (``step``).
"""
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..core import args as _args
from ..core import dense as _dense
from ..core import params as _params
from ..core.args import ConvOptions
from . import conv as _conv

#: Values of ``interpolation``.
INTERPOLATIONS = ('gauss', 'round')


def check_interpolation(interpolation) -> str:
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"`interpolation` (={interpolation!r}) must be one of "
                         f"{', '.join(map(repr, INTERPOLATIONS))}.")
    return interpolation


def check_sigma(sigma) -> float:
    """``sigma`` as a float > 0 (a Python or NumPy real number)."""
    if isinstance(sigma, (bool, np.bool_)) or not isinstance(sigma, numbers.Real):
        raise TypeError(f"`sigma` (={sigma!r}) must be a real number > 0, got "
                        f"{type(sigma).__name__}.")
    if not np.isfinite(float(sigma)) or sigma <= 0:
        raise ValueError(f"`sigma` (={sigma!r}) must be a finite number > 0 (the width of "
                         f"the Gaussian, in time steps).")
    return float(sigma)


def check_delays(delays, max_delay: int, shape, name: str = 'delays') -> None:
    """Refuse delays (the argument ``name``) of the wrong shape, or outside
    ``[0, max_delay]``, where they are known (concrete arrays; traced values are clipped into
    the range instead)."""
    if tuple(delays.shape) != tuple(shape):
        raise ValueError(f"`{name}` has shape {tuple(delays.shape)}; expected {tuple(shape)} "
                         f"(kernel_count, in_channels, out_channels).")
    if isinstance(delays, jax.core.Tracer):
        return
    values = np.asarray(delays)
    if values.size and not np.all(np.isfinite(values)):
        raise ValueError(f"`{name}` must give finite numbers of time steps; got NaN or inf.")
    if values.size and (values.min() < 0 or values.max() > max_delay):
        raise ValueError(f"`{name}` must give delays in [0, max_delay={max_delay}] time steps; got "
                         f"values from {values.min():g} to {values.max():g}.")


class DelayConfig(NamedTuple):
    """The validated options of a delay layer (of either BrainPy API)."""
    in_channels: int
    out_channels: int
    max_delay: int
    kernel_count: int
    interpolation: str
    sigma: float

    @property
    def shape(self):
        """The shape of the weights and of the delays: ``(kernel_count, C_in, C_out)``."""
        return self.kernel_count, self.in_channels, self.out_channels


def delay_config(in_channels, out_channels, max_delay, kernel_count, interpolation, sigma,
                 channel_names=('in_channels', 'out_channels')) -> DelayConfig:
    """Check a delay layer's options once (``channel_names``: what the layer calls its channel
    counts); ``sigma=None`` is ``max_delay / 2``."""
    max_delay = _args.positive_int('max_delay', max_delay)
    return DelayConfig(_args.positive_int(channel_names[0], in_channels),
                       _args.positive_int(channel_names[1], out_channels), max_delay,
                       _args.positive_int('kernel_count', kernel_count),
                       check_interpolation(interpolation),
                       check_sigma(max_delay / 2 if sigma is None else sigma))


def initial_parameters(config: DelayConfig, inits, names, float_dtype):
    """The weights, delays and bias (``None`` for none) from the initializers ``inits``
    (weights, delays, bias), the arguments ``names`` (for the errors); numbers in
    ``float_dtype``; the delays checked against the range and in the weights' dtype."""
    weight = _params.init_param(names[0], inits[0], config.shape, float_dtype=float_dtype)
    delays = _params.init_param(names[1], inits[1], config.shape, float_dtype=float_dtype)
    for name, value, what in zip(names, (weight, delays), ('weights', 'delays')):
        if value is None:
            raise ValueError(f"`{name}` (=None) must give the {what}; only `{names[2]}` may "
                             f"be None.")
    check_delays(delays, config.max_delay, config.shape, names[1])
    bias = _params.init_param(names[2], inits[2], (1, config.out_channels),
                              alt_shapes=((config.out_channels,),), float_dtype=float_dtype)
    dtype = _params.split_unit(weight)[0].dtype
    return weight, jnp.asarray(delays).astype(dtype), bias


def sigma_schedule(epoch: int, epochs: int, start: float, end: float = 0.5) -> float:
    """The Gaussian's width for ``epoch`` (0-based) of ``epochs``: from ``start`` down to
    ``end`` geometrically, reached at the last epoch (and kept after it).

    Wide Gaussians at first let every delay feel the taps around it; narrow ones at the end
    make the kernel what rounding the delays gives. ``end = 0.5`` is the width the reference
    implementation (DCLS) ends with; at that width a fifth of each weight still lies on the
    taps beside its delay, so pass a smaller ``end`` (0.2, say) when the delays will be
    rounded (:meth:`DelayConv1d.round_delays`) for simulation.
    """
    start, end = check_sigma(start), check_sigma(end)
    epochs = _args.positive_int('epochs', epochs)
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
        raise ValueError(f"`epoch` (={epoch!r}) must be an int >= 0.")
    if epochs == 1:
        return end
    return float(start * (end / start) ** (min(epoch, epochs - 1) / (epochs - 1)))


def delay_kernel(weight, delays, max_delay: int, sigma, interpolation: str = 'gauss'):
    """The kernel over time, ``[max_delay + 1, C_in, C_out]``: tap ``d`` holds the weights
    whose delay is ``d``.

    ``weight`` and ``delays`` have shape ``[kernel_count, C_in, C_out]``; delays are clipped
    into ``[0, max_delay]``. ``'gauss'``: each weight spread over the taps by
    ``softmax_d(-(d - delay)^2 / (2 sigma^2))``; ``'round'``: each weight on the tap
    ``round(delay)`` (no gradient for the delays).
    """
    dtype = weight.dtype
    taps = jnp.arange(max_delay + 1, dtype=dtype)[:, None, None, None]
    delays = jnp.clip(delays.astype(dtype), 0, max_delay)[None]
    if interpolation == 'gauss':
        share = jax.nn.softmax(-0.5 * jnp.square((taps - delays) / sigma), axis=0)
    else:
        share = (taps == jnp.round(jax.lax.stop_gradient(delays))).astype(dtype)
    return jnp.einsum('dnco,nco->dco', share, weight)


def rounded_flag(interpolation: str):
    """The layers' state for ``interpolation``: ``True`` for ``'round'`` (so that a checkpoint
    holds it)."""
    return jnp.asarray(interpolation == 'round')


def interpolation_of(rounded) -> str:
    """The ``interpolation`` a layer's flag stands for (the flag must be concrete)."""
    return 'round' if bool(rounded) else 'gauss'


def layer_kernel(weight, delays, max_delay: int, sigma, rounded):
    """:func:`delay_kernel` with the interpolation given by a layer's flag (a ``bool`` array,
    possibly traced): ``'round'`` where it is set, ``'gauss'`` otherwise."""
    return jax.lax.cond(
        rounded, lambda: delay_kernel(weight, delays, max_delay, sigma, 'round'),
        lambda: delay_kernel(weight, delays, max_delay, sigma, 'gauss'))


def _time_kernel(kernel):
    # y[t] = sum_d kernel[d] x[t - d] is a correlation with the taps reversed over a window
    # that ends at t.
    return kernel[::-1]


def _convolve(window, kernel, bias, backend: str):
    """The outputs of ``window`` (time on axis -2, oldest first) at each of its samples from
    the ``max_delay + 1``-th on."""
    return _conv.apply(window, _time_kernel(kernel), bias,
                       ConvOptions(padding=(0, 0), backend=backend))


def _chronological(buffer, index):
    # The ring buffer (time on axis -2; `index` the slot of its oldest entry) oldest first.
    return jnp.roll(buffer, -index, axis=-2)


def step(buffer, index, x, kernel, bias, backend: str):
    """One time step: ``x`` (``[B, C_in]`` or ``[C_in]``) after the ``max_delay`` inputs in the
    ring ``buffer`` (``[B, max_delay, C_in]`` or ``[max_delay, C_in]``, oldest at slot
    ``index``). Returns the output (``[B, C_out]`` or ``[C_out]``), and the buffer and index
    with ``x`` written over the oldest input."""
    x = x.astype(buffer.dtype)
    window = jnp.concatenate([_chronological(buffer, index), x[..., None, :]], axis=-2)
    y = _convolve(window, kernel, bias, backend)[..., 0, :]
    buffer = jax.lax.dynamic_update_index_in_dim(buffer, x, index, axis=buffer.ndim - 2)
    return y, buffer, (index + 1) % buffer.shape[-2]


def sequence(buffer, index, xs, kernel, bias, backend: str):
    """A whole sequence ``xs`` (``[T, B, C_in]`` or ``[T, C_in]``) after the inputs in the
    ring buffer, as one convolution over time. Returns the outputs at every step
    (``[T, B, C_out]`` or ``[T, C_out]``), and the buffer holding the last ``max_delay``
    inputs, oldest at index 0: what ``T`` calls of :func:`step` give."""
    seq = jnp.moveaxis(xs.astype(buffer.dtype), 0, -2)              # [B, T, C] or [T, C]
    window = jnp.concatenate([_chronological(buffer, index), seq], axis=-2)
    y = _convolve(window, kernel, bias, backend)
    last = window[..., window.shape[-2] - buffer.shape[-2]:, :]
    return jnp.moveaxis(y, -2, 0), last, jnp.zeros_like(index)


def check_input(label: str, x, in_channels: int, buffer, sequence: bool, step_shape: str):
    """Refuse an input ``x`` that does not fit a delay layer: rank (``step_shape`` names one
    step's shape, such as ``'[B, C]'``), channels, dtype (the buffer's dtype must hold it),
    and batch (the buffer's)."""
    rank = step_shape.count(',') + 1 + sequence
    shape = '[T, ' + step_shape[1:] if sequence else step_shape
    what = 'multi_step' if sequence else 'a call'
    if x.ndim != rank:
        raise ValueError(f"{label} takes, in {what}, inputs of shape {shape} (rank {rank}); "
                         f"got an input of shape {x.shape}.")
    if x.shape[-1] != in_channels:
        raise ValueError(f"{label} expects in_channels={in_channels} in the last axis; got an "
                         f"input of shape {x.shape}.")
    if sequence and x.shape[0] == 0:
        raise ValueError(f"{label} takes, in multi_step, at least one time step; got an input "
                         f"of shape {x.shape} (T=0).")
    _dense.compute_dtype(x.dtype, jnp.float32)        # a clear error for complex inputs
    if buffer.dtype == jnp.bool_ and x.dtype != jnp.bool_:
        raise TypeError(f"{label} keeps its past inputs as bool spikes (input_dtype=bool); "
                        f"got an input of dtype {x.dtype}. Pass input_dtype=float (or the "
                        f"input's dtype) to the constructor for other inputs.")
    if jnp.issubdtype(buffer.dtype, jnp.integer) and not jnp.can_cast(x.dtype, buffer.dtype):
        raise TypeError(f"{label} keeps its past inputs as {buffer.dtype} "
                        f"(input_dtype={buffer.dtype}), which cannot hold every value of an "
                        f"input of dtype {x.dtype} (it would be truncated or wrapped). Pass "
                        f"input_dtype={x.dtype} (or float) to the constructor for such inputs.")
    if buffer.shape[:-2] != x.shape[sequence:-1]:
        raise ValueError(f"{label} holds the past inputs of a batch of {buffer.shape[0]} "
                         f"samples; got an input of shape {x.shape}. Reset its state for a "
                         f"batch of {x.shape[sequence]} first.")
