"""Synaptic delays as a causal convolution over time, as pure functions.

A synapse from input channel ``c`` to output channel ``o`` with weight ``w`` and delay ``d``
adds ``w * x[t - d, c]`` to ``y[t, o]``. With ``kernel_count`` (weight, delay) pairs per
synapse and delays in ``[0, max_delay]``, the synapses of a layer are one kernel of
``max_delay + 1`` taps over time, ``kernel[d, c, o]``, built here from the weights and
delays: with ``'gauss'`` interpolation each pair spreads its weight over the taps by a
Gaussian of width ``sigma`` centred on its delay (normalised over the taps, so that delays
get gradients); with ``'round'`` it puts its weight on the tap nearest to its delay.

The kernel is then applied by this package's convolution (``_conv.apply``) over the time
axis, as ``y[t] = sum_d kernel[d] x[t - d]``: over a whole sequence at once (``folded``) or
one step at a time over a window of the last ``max_delay + 1`` inputs (``step``).
"""
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from . import _args, _conv

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
    if not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"`sigma` (={sigma!r}) must be a finite number > 0 (the width of "
                         f"the Gaussian, in time steps).")
    return float(sigma)


def check_delays(delays, max_delay: int, shape) -> None:
    """Refuse delays of the wrong shape, or outside ``[0, max_delay]``, where they are known
    (concrete arrays; traced values are clipped into the range instead)."""
    if tuple(delays.shape) != tuple(shape):
        raise ValueError(f"`delays` has shape {tuple(delays.shape)}; expected {tuple(shape)} "
                         f"(kernel_count, in_channels, out_channels).")
    if isinstance(delays, jax.core.Tracer):
        return
    values = np.asarray(delays)
    if values.size and not np.all(np.isfinite(values)):
        raise ValueError("`delays` must be finite numbers of time steps; got NaN or inf.")
    if values.size and (values.min() < 0 or values.max() > max_delay):
        raise ValueError(f"`delays` must lie in [0, max_delay={max_delay}] time steps; got "
                         f"values from {values.min():g} to {values.max():g}.")


def sigma_schedule(epoch: int, epochs: int, start: float, end: float = 0.5) -> float:
    """The Gaussian's width for ``epoch`` (0-based) of ``epochs``: from ``start`` down to
    ``end`` geometrically, reached at the last epoch (and kept after it).

    Wide Gaussians at first let every delay feel the taps around it; narrow ones at the end
    make the kernel what rounding the delays gives. ``end = 0.5`` is the width the reference
    implementation (DCLS) ends with.
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


def _time_kernel(kernel):
    # y[t] = sum_d kernel[d] x[t - d] is a correlation with the taps reversed over a window
    # that ends at t.
    return kernel[::-1]


def folded(history, xs, kernel, bias, backend: str):
    """The outputs at every step of ``xs`` (``[T, B, C_in]`` or ``[T, C_in]``), whose
    ``max_delay`` earlier inputs are ``history`` (``[B, max_delay, C_in]`` or
    ``[max_delay, C_in]``, oldest first): one convolution over time, ``[T, B, C_out]``."""
    seq = jnp.moveaxis(xs, 0, -2)                        # [B, T, C] or [T, C]
    window = jnp.concatenate([history.astype(seq.dtype), seq], axis=-2)
    y = _conv.apply(window, _time_kernel(kernel), bias, stride=1, padding=(0, 0),
                    lhs_dilation=1, rhs_dilation=1, groups=1, backend=backend)
    return jnp.moveaxis(y, -2, 0)


def step(window, kernel, bias, backend: str):
    """The output of the last step of ``window`` (``[B, max_delay + 1, C_in]`` or
    ``[max_delay + 1, C_in]``, oldest first): ``[B, C_out]`` or ``[C_out]``."""
    y = _conv.apply(window, _time_kernel(kernel), bias, stride=1, padding=(0, 0),
                    lhs_dilation=1, rhs_dilation=1, groups=1, backend=backend)
    return y[..., 0, :]


def chronological(buffer, index):
    """The ring buffer ``buffer`` (time on axis -2; ``index`` the slot of its oldest entry)
    oldest first."""
    return jnp.roll(buffer, -index, axis=-2)


def push(buffer, index, x):
    """``buffer`` with ``x`` written over its oldest entry, and the new oldest slot."""
    buffer = jax.lax.dynamic_update_index_in_dim(buffer, x.astype(buffer.dtype), index,
                                                 axis=buffer.ndim - 2)
    return buffer, (index + 1) % buffer.shape[-2]
