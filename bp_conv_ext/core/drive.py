"""How strongly a layer drives spiking neurons: the normal kernel that makes them fire at a
given rate (``bp_conv_ext.spike_drive``)."""
import math
import numbers
import operator

import jax
import numpy as np


def spike_drive(kernel_size: int, in_channels: int, rate: float, current: float, *,
                groups: int = 1, drive: float = 1.0, spread: float = 0.5) -> tuple[float, float]:
    r"""The mean and standard deviation of a normal kernel that drives spiking neurons.

    Fed by ``bool`` spikes, an output of ``Conv1d`` sums the kernel taps of the inputs that
    spiked: with ``n = kernel_size * in_channels // groups`` inputs per output, each spiking
    with probability ``rate`` per step, and taps drawn from :math:`N(\mu, \sigma^2)`, the
    output's expected value is :math:`p n \mu` and it differs from output to output by
    :math:`p \sqrt{n} \sigma` (standard deviation over the drawn kernels). This returns
    :math:`(\mu, \sigma)` that make these ``drive * current`` and ``spread * current``.

    For a leaky integrate-and-fire neuron, ``current`` is the constant input that holds the
    membrane at the threshold, :math:`(V_{th} - V_{rest}) / R`: with the defaults, half the
    outputs receive more than that on average and fire from the first steps, and the others
    fire when their input fluctuates up. Zero-mean initializers (BrainPy's default
    ``XavierNormal``) give sparse spikes an output of a few hundredths of the threshold, and
    the neurons after them stay silent.

    Parameters
    ----------
    kernel_size, in_channels, groups : int
        The convolution's arguments (Python or NumPy integers, or 0-d integer arrays).
    rate : float
        The input's spike probability per element and step, in ``(0, 1]``.
    current : float
        The current that holds the neurons at their threshold, in the unit the kernel will
        have (positive, finite).
    drive, spread : float
        The expected output, and its spread between outputs, in units of ``current``
        (finite, ``>= 0``).

    The real arguments may be Python or NumPy numbers or 0-d NumPy or JAX arrays (concrete
    values, not traced ones).

    Returns
    -------
    (mean, std) : tuple of float
        For ``bp.init.Normal(mean, std)`` (classic API) or
        ``brainstate.nn.init.Normal(mean, std, unit=...)`` (brainpy.state).

    Raises
    ------
    ValueError
        Naming the argument and its value: an integer argument that is not a positive int,
        ``in_channels`` not divisible by ``groups``, a real argument that is not a finite
        real number in its range (``bool``, NaN and infinities included).

    Examples
    --------
    >>> import bp_conv_ext
    >>> mean, std = bp_conv_ext.spike_drive(5, 16, rate=0.05, current=20.)
    >>> round(mean, 3), round(std, 3)
    (5.0, 22.361)
    """
    kernel_size, in_channels, groups = (
        _positive_int(name, value) for name, value in
        (('kernel_size', kernel_size), ('in_channels', in_channels), ('groups', groups)))
    if in_channels % groups:
        raise ValueError(f"`in_channels` (={in_channels}) must be divisible by `groups` "
                         f"(={groups}).")
    checks = (('rate', rate, lambda v: 0 < v <= 1, 'a spike probability in (0, 1]'),
              ('current', current, lambda v: v > 0, 'a positive current'),
              ('drive', drive, lambda v: v >= 0, 'a number >= 0'),
              ('spread', spread, lambda v: v >= 0, 'a number >= 0'))
    rate, current, drive, spread = (_real_scalar(name, value, ok, expected)
                                    for name, value, ok, expected in checks)
    n = kernel_size * (in_channels // groups)
    return float(drive * current / (rate * n)), float(spread * current / (rate * n ** 0.5))


def _is_bool(value) -> bool:
    return isinstance(value, (bool, np.bool_)) or getattr(value, 'dtype', None) == np.bool_


def _positive_int(name: str, value) -> int:
    """``value`` as an ``int`` >= 1: a Python or NumPy integer, or a 0-d integer array (NumPy
    or JAX); a ``ValueError`` naming ``name`` otherwise (``bool`` included)."""
    try:
        number = None if _is_bool(value) else operator.index(value)
    except TypeError:
        number = None
    if number is None or number < 1:
        raise ValueError(f"`{name}` (={value!r}) must be a positive int.")
    return number


def _real_scalar(name: str, value, ok, expected: str) -> float:
    """``value`` as a finite ``float`` for which ``ok`` holds: a Python or NumPy real number,
    or a 0-d real array (NumPy or JAX, concrete); a ``ValueError`` naming ``name`` and saying
    what was ``expected`` otherwise (``bool``, NaN and infinities included)."""
    number = None
    if not _is_bool(value) and (isinstance(value, numbers.Real) or (
            np.shape(value) == () and getattr(value, 'dtype', None) is not None and
            np.dtype(value.dtype).kind in 'iuf')):
        try:
            number = float(value)
        except (TypeError, jax.errors.ConcretizationTypeError):    # a traced value
            number = None
    if number is not None and not math.isfinite(number):
        raise ValueError(f"`{name}` (={value!r}) must be finite: {expected}.")
    if number is None or not ok(number):
        raise ValueError(f"`{name}` (={value!r}) must be {expected}.")
    return number
