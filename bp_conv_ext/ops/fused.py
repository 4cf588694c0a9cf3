"""A spiking convolution layer over a whole sequence: a 1-D convolution into LIF neurons.

``conv_lif(xs, w, b, v0, lif, ...)`` computes, for every step ``t`` of a sequence,
``current = conv1d(xs[t], w) + b``, advances leaky integrate-and-fire neurons by one step
with that current (:func:`lif_update`) and returns their spikes at every step and their final
membrane potential: the pattern ``Conv1d -> LIF`` of a spiking CNN layer. Two
implementations give the same numbers:

- ``'jax'``: the convolution folded over time (one call on ``[T * B, H, C]``), then the
  neurons in a ``lax.scan``;
- ``'pallas'``: one Pallas kernel for the whole sequence that keeps the neurons' state on chip
  and never stores the convolution's output: ``'mosaic'``
  (:func:`bp_conv_ext.event.kernels.mosaic_gpu.conv_lif`, Mosaic GPU: Hopper's TMA copies and
  warpgroup products) on GPUs of compute capability 9.x with JAX 0.12+, ``'triton'``
  (:func:`bp_conv_ext.event.kernels.pallas_gpu.conv_lif`) on other CUDA GPUs or where only
  it supports the problem. Naming ``'mosaic'`` or ``'triton'`` takes that kernel. On a machine
  without a GPU the kernels are chosen as for the one :mod:`bp_conv_ext.event.gpu_target`
  names, and run in Pallas's interpreters (slow; for tests).

``'auto'`` takes ``'pallas'`` on CUDA GPUs where a kernel supports the problem, and
``'jax'`` everywhere else; so does a kernel asked for a problem it does not support.
Differentiation runs through the ``'jax'`` implementation.
"""
import contextlib
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir

from ..core import args as _args, dense as _dense
from ..core.args import ConvOptions
from ..core.sequence import fold_time
from ..event.gpu_target import compute_capability, cuda_lowering
from ..event.kernels import mosaic_gpu, pallas_gpu
from . import conv as _conv

IMPLEMENTATIONS = ('auto', 'jax', 'pallas', 'mosaic', 'triton')
#: The fused kernels, by name.
_KERNELS = dict(mosaic=mosaic_gpu, triton=pallas_gpu)


class LIF(NamedTuple):
    """Constants of LIF neurons advanced by exponential Euler (exact for a constant current
    over the step), as ``brainpy.dyn.Lif`` does: ``tau dV/dt = -(V - v_rest) + r I``, a spike
    when ``V >= v_th``, then ``V = v_reset`` (``soft``: ``V -= v_th - v_reset``). ``detach``:
    under a surrogate spike function, the spikes pass no gradient, to the outputs or to the
    reset (as ``brainpy.dyn.Lif``'s ``detach_spk``). ``reset_first``: the state is the
    potential before its reset, which the next step applies first (``brainpy.state.LIF``:
    the same spikes, its state and gradients)."""
    decay: float          # exp(-dt / tau)
    v_rest: float
    v_th: float
    v_reset: float
    r: float
    soft: bool = False
    detach: bool = False
    reset_first: bool = False

    @classmethod
    def make(cls, *, tau: float, dt: float, v_rest: float = 0., v_th: float = 10.,
             v_reset: float = 0., r: float = 1., soft: bool = False,
             detach: bool = False, reset_first: bool = False) -> 'LIF':
        """The constants for time constant ``tau`` and step ``dt`` (``brainpy.dyn.Lif``'s
        defaults for the rest)."""
        for name, value in (('tau', tau), ('dt', dt)):
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ValueError(f"`{name}` (={value!r}) must be a positive finite number.")
        return cls(math.exp(-dt / tau), float(v_rest), float(v_th), float(v_reset), float(r),
                   bool(soft), bool(detach), bool(reset_first))


def lif_update(v, current, lif: LIF, spike_fn=None):
    """One step of the neurons: returns ``(spike, v)``, ``spike`` as ``bool``. With a
    surrogate ``spike_fn`` (``spike = spike_fn(v - v_th)``, 0 or 1 forward, a gradient
    backward), as ``brainpy.dyn.Lif`` computes in ``TrainingMode``: the same values, with its
    gradients. With ``lif.reset_first``, ``v`` is the last step's potential before its reset
    and the spike function is applied to ``(v - v_th) / (v_th - v_reset)``, as
    ``brainpy.state.LIF`` computes."""
    if lif.reset_first:
        return _reset_first_update(v, current, lif, spike_fn)
    v = v + (1. - lif.decay) * (lif.v_rest - v + lif.r * current)
    if spike_fn is None:
        spike = v >= lif.v_th
        reset = v - (lif.v_th - lif.v_reset) if lif.soft else lif.v_reset
        return spike, jnp.where(spike, jnp.asarray(reset, v.dtype), v)
    spike = spike_fn(v - lif.v_th)
    if lif.detach:
        spike = lax.stop_gradient(spike)
    v = v - (lif.v_th - lif.v_reset) * spike if lif.soft else v + (lif.v_reset - v) * spike
    return spike, v


def _reset_first_update(v, current, lif: LIF, spike_fn):
    if spike_fn is None:
        reset = v - (lif.v_th - lif.v_reset) if lif.soft else lif.v_reset
        v = jnp.where(v >= lif.v_th, jnp.asarray(reset, v.dtype), v)
    else:
        last = spike_fn((v - lif.v_th) / (lif.v_th - lif.v_reset))
        drop = lif.v_th if lif.soft else lax.stop_gradient(v)
        v = v - (drop - lif.v_reset) * last
    v = v + (1. - lif.decay) * (lif.v_rest - v + lif.r * current)
    if spike_fn is None:
        return v >= lif.v_th, v
    return spike_fn((v - lif.v_th) / (lif.v_th - lif.v_reset)), v


def _reference(xs, w, b, v0, lif, pads, rhs_dilation, spike_fn=None, backend='dense'):
    def convolve(x):
        return _conv.apply(x, w, b, ConvOptions(padding=pads, rhs_dilation=rhs_dilation,
                                                backend=backend))

    currents = fold_time(convolve, xs)

    def step(v, current):
        spike, v = lif_update(v, current, lif, spike_fn)
        return v, spike.astype(v.dtype)

    v, spikes = lax.scan(step, v0, currents)
    return spikes, v


#: The fused kernel as one primitive: lowered to the compiled Pallas kernel on CUDA GPUs
#: (for the GPU ``event.gpu_target`` names when the machine has none) and to the interpreted one
#: elsewhere.
_KERNEL = Primitive('bp_conv_ext_conv_lif')
_KERNEL.multiple_results = True


def _kernel_call(interpret, xs, w, b, v0, *, kernel, lif, pads, rhs_dilation, conv_dtype,
                 tiles):
    return _KERNELS[kernel].conv_lif(xs, w, b, v0, lambda v, i: lif_update(v, i, lif),
                                     padding=pads, rhs_dilation=rhs_dilation,
                                     conv_dtype=conv_dtype, interpret=interpret, tiles=tiles)


def _kernel_shapes(xs, w, b, v0, *, pads, rhs_dilation, **unused):
    out_len = xs.shape[2] + sum(pads) - (w.shape[0] - 1) * rhs_dilation
    return [ShapedArray(xs.shape[:2] + (out_len, w.shape[2]), v0.dtype),
            ShapedArray(v0.shape, v0.dtype)]


def _kernel_rule(interpret, ctx, *args, **params):
    context = contextlib.nullcontext() if interpret else cuda_lowering()
    with context:
        return mlir.lower_fun(functools.partial(_kernel_call, interpret),
                              multiple_results=True)(ctx, *args, **params)


@functools.lru_cache(maxsize=None)
def _compiled(params):
    return jax.jit(lambda *args: _KERNEL.bind(*args, **dict(params)))


def _kernel_batch(args, axes, **params):
    """``vmap`` of the fused kernel: a mapped input and state fold into the batch (one call);
    mapped kernels or biases take one call each."""
    size = next(a.shape[axis] for a, axis in zip(args, axes) if axis is not None)

    def front(a, axis):
        return (jnp.broadcast_to(a, (size,) + a.shape) if axis is None
                else jnp.moveaxis(a, axis, 0))

    xs, w, b, v0 = args
    x_axis, w_axis, b_axis, v_axis = axes
    if w_axis is None and b_axis is None:
        xs = jnp.moveaxis(front(xs, x_axis), 0, 1)                 # [T, size, B, H, C]
        steps, batch = xs.shape[0], xs.shape[2]
        v0 = front(v0, v_axis)
        spikes, v = _KERNEL.bind(xs.reshape((steps, size * batch) + xs.shape[3:]), w, b,
                                 v0.reshape((size * batch,) + v0.shape[2:]), **params)
        return ([spikes.reshape((steps, size, batch) + spikes.shape[2:]),
                 v.reshape((size, batch) + v.shape[1:])], [1, 0])
    spikes, v = lax.map(lambda a: tuple(_KERNEL.bind(*a, **params)),
                        tuple(front(a, axis) for a, axis in zip(args, axes)))
    return [spikes, v], [0, 0]


_KERNEL.def_abstract_eval(_kernel_shapes)
batching.primitive_batchers[_KERNEL] = _kernel_batch
_KERNEL.def_impl(lambda *args, **params: _compiled(tuple(sorted(params.items())))(*args))
mlir.register_lowering(_KERNEL, functools.partial(_kernel_rule, True))
mlir.register_lowering(_KERNEL, functools.partial(_kernel_rule, False), platform='cuda')


def choose_kernel(implementation, xs, w, v0):
    """The fused kernel (``'mosaic'`` or ``'triton'``) that ``implementation`` runs on this
    problem for the GPU the program is lowered for, or ``None`` (the ``'jax'``
    implementation)."""
    if implementation == 'jax':
        return None
    conv_dtype = _dense.compute_dtype(xs.dtype, w.dtype)
    taps, channels, n_out = w.shape
    runs = dict(
        mosaic=mosaic_gpu.supported(taps, channels, n_out, 1, 1, 1, xs.dtype, conv_dtype,
                                    v0.dtype),
        triton=pallas_gpu.conv_lif_supported(xs.shape[1], n_out, 1, 1, 1))
    if implementation in runs:
        return implementation if runs[implementation] else None
    if compute_capability()[0] == 9 and runs['mosaic']:
        return 'mosaic'
    return 'triton' if runs['triton'] else None


def _pallas(xs, w, b, v0, lif, pads, rhs_dilation, kernel, interpret=False, tiles=None):
    conv_dtype = _dense.compute_dtype(xs.dtype, w.dtype)
    w = w.astype(conv_dtype)
    b = (jnp.zeros((w.shape[2],), conv_dtype) if b is None
         else jnp.reshape(b, (-1,)).astype(conv_dtype))
    params = dict(kernel=kernel, lif=lif, pads=pads, rhs_dilation=rhs_dilation,
                  conv_dtype=jnp.dtype(conv_dtype), tiles=tiles)
    if interpret and kernel == 'mosaic':
        # Outside the primitive: Mosaic GPU's interpreter orders its callbacks, which the
        # primitive's lowering does not carry (the Triton one's interpreter runs inside it).
        return tuple(_kernel_call(True, xs, w, b, v0, **params))
    return tuple(_KERNEL.bind(xs, w, b, v0, **params))


def conv_lif(xs, w, b, v0, lif: LIF, *, padding='SAME', rhs_dilation: int = 1,
             implementation: str = 'auto', spike_fn=None, backend: str = 'dense'):
    """Spikes of LIF neurons driven by a 1-D convolution of ``xs``, at every step.

    Parameters
    ----------
    xs : ArrayLike
        Input sequence ``[T, B, H, C_in]`` (spikes as ``bool``, or any real values).
    w : ArrayLike
        Kernel ``[K, C_in, C_out]``.
    b : ArrayLike or None
        Bias ``[C_out]``.
    v0 : ArrayLike
        Initial membrane potential ``[B, H_out, C_out]`` (floating); its dtype is the
        state's and the spikes'.
    lif : LIF
        The neurons' constants (:meth:`LIF.make`).
    padding, rhs_dilation
        As in :func:`bp_conv_ext.conv1d` (stride 1, one channel group).
    implementation : str
        ``'auto'``, ``'jax'``, ``'pallas'``, ``'mosaic'`` or ``'triton'`` (see the module).
    spike_fn : callable, optional
        A surrogate spike function (``brainpy.math.surrogate``'s): the spikes' gradient, as
        in ``brainpy.dyn.Lif`` in ``TrainingMode`` (:func:`lif_update`). Without it the
        spikes pass no gradient.
    backend : str
        The convolution's backend where it is not fused (``'jax'``, and every gradient):
        ``'dense'``, or ``'auto'`` to take the event-driven path on sparse spikes as a
        layer does.

    Returns
    -------
    spikes : jax.Array
        ``[T, B, H_out, C_out]``, 0/1 in ``v0``'s dtype.
    v : jax.Array
        The membrane potential after the last step.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"`implementation` (={implementation!r}) must be one of "
                         f"{', '.join(map(repr, IMPLEMENTATIONS))}.")
    xs, w, v0 = _args.as_input(xs), jnp.asarray(w), jnp.asarray(v0)
    if xs.ndim != 4 or w.ndim != 3 or w.shape[1] != xs.shape[3]:
        raise ValueError(f"`xs` must be [T, B, H, C_in] and `w` [K, C_in, C_out] with the same "
                         f"C_in; got shapes {xs.shape} and {w.shape}.")
    rhs_dilation = _args.positive_int('rhs_dilation', rhs_dilation)
    length, taps = xs.shape[2], w.shape[0]
    pads = _args.resolve_padding(_args.canonical_padding(padding), length, taps, 1, 1,
                                 rhs_dilation)
    out_len = _args.output_length(length, taps, 1, pads, 1, rhs_dilation)
    expected = (xs.shape[1], out_len, w.shape[2])
    if v0.shape != expected or not jnp.issubdtype(v0.dtype, jnp.floating):
        raise ValueError(f"`v0` must be a floating array of shape {expected} (batch, output "
                         f"length, out channels); got {v0.dtype} {v0.shape}.")
    args = (xs, w, b, v0, lif, tuple(pads), rhs_dilation, spike_fn, backend)
    kernel = choose_kernel(implementation, xs, w, v0)
    if kernel is None:
        return _differentiable(*args, kernel=None)
    if implementation != 'auto':
        return _differentiable(*args, kernel=kernel,
                               interpret=jax.default_backend() != 'gpu')
    return lax.platform_dependent(
        *args[:4], cuda=lambda *a: _differentiable(*a, *args[4:], kernel=kernel),
        default=lambda *a: _differentiable(*a, *args[4:], kernel=None))


def _differentiable(xs, w, b, v0, lif, pads, rhs_dilation, spike_fn, backend, kernel,
                    interpret=False):
    """The fused ``kernel`` (``interpret``: in its interpreter) or (``None``) the ``'jax'``
    implementation; gradients always through the ``'jax'`` implementation (with the
    surrogate ``spike_fn``, when given)."""
    if kernel is None:
        return _reference(xs, w, b, v0, lif, pads, rhs_dilation, spike_fn, backend)

    @jax.custom_vjp
    def fused(xs, w, b, v0):
        return _pallas(xs, w, b, v0, lif, pads, rhs_dilation, kernel, interpret)

    def forward(xs, w, b, v0):
        return fused(xs, w, b, v0), (xs, w, b, v0)

    def backward(residuals, cotangents):
        _, vjp = jax.vjp(lambda *a: _reference(*a, lif, pads, rhs_dilation, spike_fn,
                                               backend),
                         *residuals)
        return vjp(cotangents)

    fused.defvjp(forward, backward)
    return fused(xs, w, b, v0)
