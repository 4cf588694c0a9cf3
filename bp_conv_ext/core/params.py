"""Building parameter arrays and masks from what users pass to the layers (JAX and NumPy
only: each BrainPy API's layer gives its default float type; brainunit quantities are
recognised by their attributes)."""
import numbers

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
        arr = jnp.asarray(value)      # also takes brainpy arrays and variables
    except (TypeError, ValueError) as err:
        raise TypeError(f"`{name}` ({_describe(value)}) must hold real numbers.") from err
    if jnp.issubdtype(arr.dtype, jnp.complexfloating) or not (
            jnp.issubdtype(arr.dtype, jnp.number) or arr.dtype == jnp.bool_):
        raise TypeError(f"`{name}` ({_describe(value)}) must hold real numbers.")
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.result_type(float) if float_dtype is None else float_dtype)
    return arr


def split_unit(value):
    """``(mantissa, unit)`` of a brainunit ``Quantity``; ``(value, None)`` for anything else
    (plain arrays have no unit).

    (Duck-typed: brainunit is installed with the brainpy.state stack only.)
    """
    if hasattr(value, 'mantissa') and hasattr(value, 'unit') and hasattr(value, 'to_decimal'):
        return value.mantissa, value.unit
    return value, None


def _with_unit(arr, unit):
    return arr if unit is None else arr * unit


def _is_array(value) -> bool:
    """An array: NumPy's, JAX's, or one that converts to JAX's (brainpy's arrays)."""
    return isinstance(value, (np.ndarray, jax.Array)) or hasattr(value, '__jax_array__')


def init_param(name: str, init, shape: tuple[int, ...],
               alt_shapes: tuple[tuple[int, ...], ...] = (), *,
               float_dtype) -> jax.Array | None:
    """Create a parameter of ``shape`` from an initializer, a callable, an array or a scalar;
    numbers and integer arrays in ``float_dtype`` (the layer's API's default float type).

    ``None`` gives ``None``. Arrays must have ``shape`` or one of ``alt_shapes``
    (reshaped to ``shape``); the value returned by an initializer or callable is
    checked the same way. A brainunit quantity (an array, a number or what an initializer
    with a ``unit`` returns) keeps its unit.
    """
    if init is None:
        return None
    init, unit = split_unit(init)
    if unit is not None and np.ndim(init) == 0:
        return _with_unit(init_param(name, np.asarray(init).item(), shape,
                                     float_dtype=float_dtype), unit)
    if isinstance(init, (bool, np.bool_)):
        raise TypeError(f"`{name}` (={init!r}) must be an initializer, a callable, an array "
                        f"or a number, not a bool.")
    if isinstance(init, numbers.Real):
        return jnp.full(shape, float(init), dtype=float_dtype)
    if isinstance(init, numbers.Number):
        raise TypeError(f"`{name}` (={init!r}) must be a real number.")
    if unit is not None or _is_array(init):
        value, source = init, 'array'
    elif callable(init):
        value, source = init(shape), 'value returned by the initializer'
        if value is None:
            raise TypeError(f"`{name}` ({describe_init(init)}) returned None for shape "
                            f"{tuple(shape)}; expected an array of that shape.")
        value, unit = split_unit(value)
    else:
        raise TypeError(f"`{name}` (={init!r}) must be a brainpy Initializer, a callable "
                        f"taking a shape, an array or a number; got {type(init).__name__}.")
    arr = real_floats(name, value, float_dtype)
    if arr.shape == tuple(shape):
        return _with_unit(arr, unit)
    if arr.shape in alt_shapes:
        return _with_unit(arr.reshape(shape), unit)
    accepted = ' or '.join(str(s) for s in (tuple(shape),) + tuple(alt_shapes))
    raise ValueError(f"`{name}`: the {source} has shape {arr.shape}; expected {accepted}.")


def make_mask(mask, kernel_shape: tuple[int, ...], dtype,
              name: str = 'mask') -> jax.Array | None:
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
    if _is_array(init):
        return f"<array shape={tuple(init.shape)}>"
    text = repr(init)
    if '\n' in text or len(text) > 60:
        return f"{type(init).__name__}(...)"
    return text
