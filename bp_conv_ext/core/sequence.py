"""Whole sequences: folding the time axis into the batch, and running a stack of layers over a
sequence one layer after the other (the loop under both BrainPy APIs' ``LayerByLayer``)."""
from collections.abc import Callable, Iterable

import jax.numpy as jnp
from jax import lax

#: How a sequence ``[T, B, ...]`` is folded into one batch: ``'time'`` (``[T * B, ...]``, a
#: free reshape) or ``'batch'`` (``[B * T, ...]``, batch first, which keeps a batch split over
#: devices on each device, at the cost of two transposes).
FOLDS = ('time', 'batch')


def check_fold(fold) -> str:
    if fold not in FOLDS:
        raise ValueError(f"`fold` (={fold!r}) must be one of {', '.join(map(repr, FOLDS))}.")
    return fold


def fold_time(fn, xs, fold: str = 'time'):
    """Apply ``fn`` (stateless, batched) to a sequence ``[T, B, ...]`` in one call on the
    folded ``[T * B, ...]`` (``fold='time'``) or ``[B * T, ...]`` (``fold='batch'``)."""
    steps, batch = xs.shape[:2]
    if fold == 'time':
        y = fn(xs.reshape((steps * batch,) + xs.shape[2:]))
        return y.reshape((steps, batch) + y.shape[1:])
    y = fn(jnp.swapaxes(xs, 0, 1).reshape((batch * steps,) + xs.shape[2:]))
    return jnp.swapaxes(y.reshape((batch, steps) + y.shape[1:]), 0, 1)


def fuse_pairs(layers: Iterable, pair: Callable) -> list:
    """``layers`` with each neighbouring pair ``(a, b)`` for which ``pair(a, b)`` gives one
    layer (not None) replaced by it: how a ``Conv1d -> LIF`` pair becomes the fused spiking
    step."""
    out: list = []
    for layer in layers:
        joined = pair(out[-1], layer) if out else None
        if joined is None:
            out.append(layer)
        else:
            out[-1] = joined
    return out


def layer_by_layer(layers: Iterable, xs, fold: str, *, batched: bool,
                   whole: Callable, stateful: Callable, scan: Callable, per_step: Callable):
    """Run the time-first sequence ``xs`` through ``layers``, one layer after the other.

    Each layer is run in the first way that fits it: a layer that sees a whole sequence
    (with a ``multi_step`` method) by ``whole(layer, xs)``; a layer with state (a neuron
    group: ``stateful(layer)``) step by step, by ``scan(layer, xs)``; any other layer is
    stateless and runs once on the folded sequence (``fold``) when ``batched``, else by
    ``per_step(layer, xs)``. The callables are what differs between the BrainPy APIs.
    """
    for layer in layers:
        if hasattr(layer, 'multi_step'):
            xs = whole(layer, xs)
        elif stateful(layer):
            xs = scan(layer, xs)
        elif batched:
            xs = fold_time(layer, xs, fold)
        else:
            xs = per_step(layer, xs)
    return xs


def batch_spiking_step(bind: Callable, args, axes, batch_axes):
    """``vmap`` of a spiking step ``bind(xs, w, b, v0)`` (``xs`` ``[T, B, ...]``, ``v0``
    ``[B, ...]``): a mapped input and state fold into the batch (one call), mapped kernels or
    biases take one call each. ``batch_axes``: where each output holds the batch (``1``: a
    sequence, ``0``: a state, ``None``: an empty array). Returns ``(outputs, out_axes)``, as a
    batching rule does."""
    size = next(a.shape[axis] for a, axis in zip(args, axes) if axis is not None)

    def front(a, axis):
        return (jnp.broadcast_to(a, (size,) + a.shape) if axis is None
                else jnp.moveaxis(a, axis, 0))

    xs, w, b, v0 = args
    if axes[1] is not None or axes[2] is not None:
        outputs = lax.map(lambda a: tuple(bind(*a)),
                          tuple(front(a, axis) for a, axis in zip(args, axes)))
        return list(outputs), [0] * len(outputs)
    xs = jnp.moveaxis(front(xs, axes[0]), 0, 1)                 # [T, size, B, ...]
    steps, batch = xs.shape[0], xs.shape[2]
    v0 = front(v0, axes[3])
    outputs = bind(xs.reshape((steps, size * batch) + xs.shape[3:]), w, b,
                   v0.reshape((size * batch,) + v0.shape[2:]))
    unfolded = []
    for out, axis in zip(outputs, batch_axes):
        if axis is None:
            unfolded.append(jnp.zeros((size,) + out.shape, out.dtype))
        else:
            unfolded.append(out.reshape(out.shape[:axis] + (size, batch) + out.shape[axis + 1:]))
    return unfolded, [0 if axis is None else axis for axis in batch_axes]

