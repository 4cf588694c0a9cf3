"""Building parameter arrays and masks from what users pass to the layer."""
import math
import numbers
import operator
from typing import Optional, Tuple

import brainpy.math as bm
import jax
import jax.numpy as jnp
import numpy as np


def _describe(value) -> str:
    if hasattr(value, 'shape') and hasattr(value, 'dtype'):
        return f"array of shape {tuple(value.shape)} and dtype {value.dtype}"
    return repr(value)


def real_floats(name: str, value, float_dtype=None) -> jax.Array:
    """``value`` as a floating array: ``bool`` and integer values in ``float_dtype`` (default:
    JAX's default float), as a kernel, bias or mask computes in floating point whatever it
    holds; a ``TypeError`` naming ``name`` for complex values, strings and other objects."""
    try:
        arr = jnp.asarray(bm.as_jax(value))
    except (TypeError, ValueError) as err:
        raise TypeError(f"`{name}` ({_describe(value)}) must hold real numbers.") from err
    if jnp.issubdtype(arr.dtype, jnp.complexfloating) or not (
            jnp.issubdtype(arr.dtype, jnp.number) or arr.dtype == jnp.bool_):
        raise TypeError(f"`{name}` ({_describe(value)}) must hold real numbers.")
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.result_type(float) if float_dtype is None else float_dtype)
    return arr


def split_unit(value):
    """A brainunit ``Quantity`` as ``(mantissa, quantity)``; anything else as ``(value, None)``.

    (Duck-typed: brainunit is installed with the brainpy.state stack only.)
    """
    if hasattr(value, 'mantissa') and hasattr(value, 'unit') and hasattr(value, 'to_decimal'):
        return value.mantissa, value
    return value, None


def _with_unit(arr, quantity):
    return arr if quantity is None else type(quantity)(arr, unit=quantity.unit)


def init_param(name: str, init, shape: Tuple[int, ...],
               alt_shapes: Tuple[Tuple[int, ...], ...] = ()) -> Optional[jax.Array]:
    """Create a parameter of ``shape`` from an initializer, a callable, an array or a scalar.

    ``None`` gives ``None``. Arrays must have ``shape`` or one of ``alt_shapes``
    (reshaped to ``shape``); the value returned by an initializer or callable is
    checked the same way. A brainunit quantity (an array, a number or what an initializer
    with a ``unit`` returns) keeps its unit.
    """
    if init is None:
        return None
    init, quantity = split_unit(init)
    if quantity is not None and np.ndim(init) == 0:
        return _with_unit(init_param(name, np.asarray(init).item(), shape), quantity)
    if isinstance(init, (bool, np.bool_)):
        raise TypeError(f"`{name}` (={init!r}) must be an initializer, a callable, an array "
                        f"or a number, not a bool.")
    if isinstance(init, numbers.Real):
        return jnp.full(shape, init, dtype=bm.dftype())
    if isinstance(init, numbers.Number):
        raise TypeError(f"`{name}` (={init!r}) must be a real number.")
    if quantity is not None or isinstance(init, (np.ndarray, jax.Array, bm.Array)):
        value, source = init, 'array'
    elif callable(init):
        value, source = init(shape), 'value returned by the initializer'
        if value is None:
            raise TypeError(f"`{name}` ({describe_init(init)}) returned None for shape "
                            f"{tuple(shape)}; expected an array of that shape.")
        value, quantity = split_unit(value)
    else:
        raise TypeError(f"`{name}` (={init!r}) must be a brainpy Initializer, a callable "
                        f"taking a shape, an array or a number; got {type(init).__name__}.")
    arr = real_floats(name, value, bm.dftype())
    if arr.shape == tuple(shape):
        return _with_unit(arr, quantity)
    if arr.shape in alt_shapes:
        return _with_unit(arr.reshape(shape), quantity)
    accepted = ' or '.join(str(s) for s in (tuple(shape),) + tuple(alt_shapes))
    raise ValueError(f"`{name}`: the {source} has shape {arr.shape}; expected {accepted}.")


def make_mask(mask, kernel_shape: Tuple[int, ...], dtype,
              name: str = 'mask') -> Optional[jax.Array]:
    """Check that ``mask`` (the argument ``name``) broadcasts to the kernel shape and return
    it at full shape."""
    if mask is None:
        return None
    try:
        arr = jnp.asarray(mask)
    except TypeError as err:
        raise TypeError(f"`{name}` (={mask!r}) must be an array of bool or real numbers.") from err
    if not (jnp.issubdtype(arr.dtype, jnp.number) or arr.dtype == jnp.bool_) or \
            jnp.issubdtype(arr.dtype, jnp.complexfloating):
        raise TypeError(f"`{name}` ({_describe(mask)}) must hold bool or real numbers.")
    try:
        full = np.broadcast_shapes(arr.shape, kernel_shape)
    except ValueError:
        full = None
    if full != tuple(kernel_shape):
        raise ValueError(f"`{name}` has shape {arr.shape}, which does not broadcast to the kernel "
                         f"shape {tuple(kernel_shape)} (kernel_size, in_channels // groups, "
                         f"out_channels).")
    return jnp.broadcast_to(arr.astype(dtype), kernel_shape)


def describe_init(init) -> str:
    """A one-line description of an initializer argument for ``__repr__``."""
    if isinstance(init, (np.ndarray, jax.Array, bm.Array)):
        return f"<array shape={tuple(init.shape)}>"
    text = repr(init)
    if '\n' in text or len(text) > 60:
        return f"{type(init).__name__}(...)"
    return text


def spike_drive(kernel_size: int, in_channels: int, rate: float, current: float, *,
                groups: int = 1, drive: float = 1.0, spread: float = 0.5) -> Tuple[float, float]:
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
