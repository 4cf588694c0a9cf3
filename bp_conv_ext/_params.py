"""Building parameter arrays and masks from what users pass to the layer."""
import numbers
from typing import Optional, Tuple

import brainpy.math as bm
import jax
import jax.numpy as jnp
import numpy as np


def _describe(value) -> str:
    if hasattr(value, 'shape') and hasattr(value, 'dtype'):
        return f"array of shape {tuple(value.shape)} and dtype {value.dtype}"
    return repr(value)


def _as_real_float_array(name: str, value) -> jax.Array:
    arr = jnp.asarray(bm.as_jax(value))
    if jnp.issubdtype(arr.dtype, jnp.complexfloating) or not (
            jnp.issubdtype(arr.dtype, jnp.number) or arr.dtype == jnp.bool_):
        raise TypeError(f"`{name}` ({_describe(value)}) must hold real numbers.")
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(bm.dftype())
    return arr


def _split_unit(value):
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
    init, quantity = _split_unit(init)
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
        value, quantity = _split_unit(value)
    else:
        raise TypeError(f"`{name}` (={init!r}) must be a brainpy Initializer, a callable "
                        f"taking a shape, an array or a number; got {type(init).__name__}.")
    arr = _as_real_float_array(name, value)
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
