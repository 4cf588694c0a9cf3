"""A spiking convolution layer over a whole sequence: a 1-D convolution into LIF neurons.

``conv_lif(xs, w, b, v0, lif, ...)`` computes, for every step ``t`` of a sequence,
``current = conv1d(xs[t], w) + b``, advances leaky integrate-and-fire neurons by one step
with that current (:func:`lif_update`) and returns their spikes at every step and their final
membrane potential: the pattern ``Conv1d -> LIF`` of a spiking CNN layer. It is the
``'spiking'`` operation of the kernel registry (:mod:`bp_conv_ext.event.registry`), whose
kernel sets give the same numbers:

- ``'jax'``: the convolution folded over time (one call on ``[T * B, H, C]``), then the
  neurons in a ``lax.scan``; everywhere JAX runs;
- ``'c++'``: on the CPU, one C++ kernel for the whole sequence, forward and backward
  (``spiking_cpu.cc`` through the XLA FFI, :mod:`bp_conv_ext.ops.spiking_cpu`): the neurons'
  potentials stay in a per-thread buffer over the steps, the current of a step is summed from
  the kernel rows of its active inputs only (the work follows the spikes), the spikes are
  written as one byte; its backward runs the neurons' recursion in reverse with the
  surrogate's derivative (computed by the kernel for the surrogates it knows, by JAX for the
  others) and sums the kernel's gradient over the active inputs. The forward keeps the
  potentials before each reset for it (``float32``), nothing else. It needs its library (the
  machine's C++17 compiler, as the event path's); :func:`cxx_unsupported` says what else. It
  has no lowering for accelerators, so a program that runs it does not export for the CPU and
  an accelerator at once (a ``NotImplementedError`` says so; ``'jax'`` exports everywhere);
- ``'triton'`` (:func:`bp_conv_ext.event.kernels.pallas_gpu.conv_lif`, Pallas through
  Triton: measured on GPUs) and ``'mosaic'``
  (:func:`bp_conv_ext.event.kernels.mosaic_gpu.conv_lif`, Pallas through Mosaic GPU: Hopper's
  TMA copies and warpgroup products, JAX 0.12+): one kernel for the whole sequence that keeps
  the neurons' state on chip and never stores the convolution's output. No GPU has run the
  Mosaic GPU kernel yet: it runs only where named, until a GPU has measured it (its
  registry record's ``by_default``). On a machine without a GPU the kernels are chosen as for
  the one :mod:`bp_conv_ext.event.gpu_target` names, and run in Pallas's interpreters (slow;
  for tests).

With ``kernels=None`` (the default) the registry chooses, in the program, per platform: the
C++ kernel on the CPU (where JAX's default backend is the CPU; with JAX 0.5 or later: JAX 0.4
lowers a program's CPU branch for every platform it is exported for, where the C++ kernel has
no lowering), the Triton kernel on CUDA GPUs, where they compute the problem, and ``'jax'``
everywhere else; so does a kernel named for a problem it does not compute, an empty one (a
zero-size dimension: empty in, empty out, ``v0`` unchanged) included. The Mosaic GPU kernel
writes ``float32`` operands as ``bfloat16`` parts, in which an ``inf`` becomes ``inf + nan +
nan``: where the input, kernel or bias is not all finite, the Triton kernel (``float32``
products) computes the IEEE results instead (decided in the program, where it runs); the C++
kernel reads every input and padding where the kernel (or a step's current gradient) is not all
finite, as a dense convolution does.

Differentiated, the GPU kernels are the ``'jax'`` kernels, values and derivatives
(forward or reverse mode, any order; with the surrogate ``spike_fn``, when given). The C++
kernel's first derivatives in reverse mode are its backward kernel's (``grad``, ``vjp``,
under ``jax.checkpoint`` and ``vmap``); their derivatives (``grad`` of ``grad``,
``jax.hessian``) the ``'jax'`` kernels'; forward mode (``jax.jvp``, ``jacfwd``,
``linearize``) is not defined for it: JAX raises a ``TypeError`` (``kernels='jax'`` computes
it). Under ``jax.jit`` with a batch split over devices the kernels run on each
device's part (a ``custom_partitioning``), where that part is one they support; the C++
backward sums the kernel's and bias's gradients over the devices.
"""
import contextlib
import functools
import inspect
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.core import ShapedArray
from jax.experimental.custom_partitioning import custom_partitioning
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir
from jax.sharding import NamedSharding, PartitionSpec

from .._jax_private import requires_devices_during_lowering
from ..core import args as _args
from ..core import dense as _dense
from ..core.args import ConvOptions
from ..core.sequence import batch_spiking_step, check_fold, fold_time
from ..event import registry as _registry
from ..event.gpu_target import compute_capability, cuda_lowering
from ..event.kernels import cxx_cpu, mosaic_gpu, pallas_gpu
from . import conv as _conv
from . import spiking_cpu as _spiking_cpu


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


def _reference(xs, w, b, v0, lif, pads, rhs_dilation, spike_fn=None, backend='dense',
               fold='time'):
    def convolve(x):
        return _conv.apply(x, w, b, ConvOptions(padding=pads, rhs_dilation=rhs_dilation,
                                                backend=backend))

    currents = fold_time(convolve, xs, fold)

    def step(v, current):
        spike, v = lif_update(v, current, lif, spike_fn)
        return v, spike.astype(v.dtype)

    v, spikes = lax.scan(step, v0, currents)
    return spikes, v


#: The fused kernel as one primitive: lowered to the compiled Pallas kernel on CUDA GPUs
#: (for the GPU ``event.gpu_target`` names when the machine has none) and to the interpreted one
#: elsewhere, in both cases split over the batch under ``jax.jit`` (:func:`_partitioned`).
_KERNEL = Primitive('bp_conv_ext_conv_lif')
_KERNEL.multiple_results = True


def _all_finite(*arrays):
    """Whether every element of the floating ``arrays`` is finite (a traced ``bool``)."""
    checks = [jnp.all(jnp.isfinite(a)) for a in arrays
              if jnp.issubdtype(a.dtype, jnp.inexact)]
    return functools.reduce(jnp.logical_and, checks, jnp.bool_(True))


def _kernel_call(interpret, xs, w, b, v0, *, kernel, lif, pads, rhs_dilation, conv_dtype,
                 tiles):
    """The fused step on the arrays of one device: ``kernel`` where it runs them, else the
    ``'jax'`` kernels (a device's part of a split batch may be too small for the
    kernel's tiles). The Mosaic GPU kernel's ``bfloat16`` parts of an ``inf`` are ``inf, nan,
    nan``: where its operands are not all finite, the Triton kernel, which multiplies
    ``float32`` and gives the IEEE results, computes instead (the ``'jax'`` kernels where it
    does not run the problem). The branch that runs is chosen in the program; both
    are fused kernels, so the memory XLA plans for them stays a fused kernel's."""
    def reference(xs, w, b, v0):
        spikes, v = _reference(xs, w, b, v0, lif, pads, rhs_dilation)
        return [spikes.astype(v0.dtype), v.astype(v0.dtype)]

    def fused(name, tiles, xs, w, b, v0):
        if choose_kernel(name, xs, w, v0) != name:
            return reference(xs, w, b, v0)
        return list(_registry.named('spiking', name).load().conv_lif(
            xs, w, b, v0, lambda v, i: lif_update(v, i, lif), padding=pads,
            rhs_dilation=rhs_dilation, conv_dtype=conv_dtype, interpret=interpret, tiles=tiles))

    if kernel == 'mosaic' and choose_kernel(kernel, xs, w, v0) == kernel:
        return lax.cond(_all_finite(xs, w, b), functools.partial(fused, 'mosaic', tiles),
                        functools.partial(fused, 'triton', None), xs, w, b, v0)
    return fused(kernel, tiles, xs, w, b, v0)


def _varying(aval):
    """The manual mesh axes (``jax.shard_map``) that an abstract value varies over."""
    mat = getattr(aval, 'manual_axis_type', None)
    return frozenset(mat.varying if mat is not None else getattr(aval, 'vma', ()))


def _kernel_shapes(xs, w, b, v0, *, pads, rhs_dilation, **unused):
    out_len = xs.shape[2] + sum(pads) - (w.shape[0] - 1) * rhs_dilation
    shapes = [(xs.shape[:2] + (out_len, w.shape[2]), v0.dtype), (v0.shape, v0.dtype)]
    if _varying(xs):
        # Under shard_map the outputs vary over the manual axes the operands do (they were
        # cast to the same ones).
        return [xs.update(shape=shape, dtype=dtype, weak_type=False) for shape, dtype in shapes]
    return [ShapedArray(shape, dtype) for shape, dtype in shapes]


#: Whether this JAX's ``custom_partitioning`` takes a Shardy sharding rule.
_SHARDY_RULES = 'sharding_rule' in inspect.signature(custom_partitioning.def_partition).parameters


@functools.cache
def _partitioned(interpret, params):
    """The fused step split over the batch under ``jax.jit``: each device runs
    :func:`_kernel_call` on its part of the batch (axis 1 of ``xs`` and of the spikes, axis 0
    of ``v0`` and ``v``), with the whole kernel and bias; other split dimensions are
    gathered first. Nothing is communicated: the neurons of one batch row depend on that row
    alone."""
    def call(xs, w, b, v0):
        return _kernel_call(interpret, xs, w, b, v0, **dict(params))

    def shardings(mesh, arg_shapes):
        sharding = arg_shapes[0].sharding
        spec = sharding.spec if isinstance(sharding, NamedSharding) else ()
        axes = spec[1] if len(spec) > 1 else None
        sequence = NamedSharding(mesh, PartitionSpec(None, axes, None, None))
        state = NamedSharding(mesh, PartitionSpec(axes, None, None))
        whole = NamedSharding(mesh, PartitionSpec())
        return (sequence, whole, whole, state), [sequence, state]

    def infer(mesh, arg_shapes, result_shape):
        return shardings(mesh, arg_shapes)[1]

    def partition(mesh, arg_shapes, result_shape):
        operands, results = shardings(mesh, arg_shapes)
        return mesh, call, results, operands

    partitioned = custom_partitioning(call)
    rule = {}
    if _SHARDY_RULES:
        # t: steps, n: batch, h, c: input length and channels, k: taps, o: output channels,
        # g: output length.
        rule = dict(sharding_rule='t n h c, k c o, o, n g o -> t n g o, n g o',
                    need_replication_factors=('t', 'h', 'c', 'k', 'o', 'g'))
    partitioned.def_partition(partition=partition, infer_sharding_from_operands=infer, **rule)
    return partitioned


def _kernel_rule(interpret, ctx, *args, **params):
    context = contextlib.nullcontext() if interpret else cuda_lowering()
    if any(map(_varying, ctx.avals_in)):
        # Inside shard_map each device lowers the kernel for its own arrays: plain ones.
        plain = lambda avals: [ShapedArray(a.shape, a.dtype) for a in avals]
        ctx = ctx.replace(avals_in=plain(ctx.avals_in), avals_out=plain(ctx.avals_out))
    with context:
        return mlir.lower_fun(_partitioned(interpret, tuple(sorted(params.items()))),
                              multiple_results=True)(ctx, *args)


@functools.cache
def _compiled(params):
    return jax.jit(lambda *args: _KERNEL.bind(*args, **dict(params)))


def _kernel_batch(args, axes, **params):
    """``vmap`` of the fused kernel (:func:`bp_conv_ext.core.sequence.batch_spiking_step`)."""
    return batch_spiking_step(lambda *a: _KERNEL.bind(*a, **params), args, axes, (1, 0))


_KERNEL.def_abstract_eval(_kernel_shapes)
batching.primitive_batchers[_KERNEL] = _kernel_batch
_KERNEL.def_impl(lambda *args, **params: _compiled(tuple(sorted(params.items())))(*args))
mlir.register_lowering(_KERNEL, functools.partial(_kernel_rule, True))
mlir.register_lowering(_KERNEL, functools.partial(_kernel_rule, False), platform='cuda')
# The lowering may partition the kernel call, which needs the devices.
requires_devices_during_lowering(_KERNEL)


def unfused_options(layer: str, config, *, masked: bool, backend: str) -> str | None:
    """Why the fused step does not compute the convolution ``layer`` (its name) of
    ``config`` (a layer's ``LayerConfig``), or None: it computes stride 1, one group, zero
    padding, no mask and the default backend (``'auto'``)."""
    for unfusable, what in ((masked, 'has a mask'),
                            (backend != 'auto', f'has backend={backend!r}'),
                            (config.padding_mode != 'zeros', f'pads with {config.padding_mode!r}'),
                            (config.stride != 1, f'has stride {config.stride}'),
                            (config.groups != 1, f'has {config.groups} groups'),
                            (config.lhs_dilation != 1, f'has lhs_dilation {config.lhs_dilation}')):
        if unfusable:
            return f"{layer} (Conv1d) {what}"
    return None


def choose_kernel(kernels, xs, w, v0):
    """The fused GPU kernel (``'mosaic'`` or ``'triton'``) that the kernel set ``kernels`` (a
    name, or ``None``: the registry's choice) runs on this problem for the GPU the program is
    lowered for, or ``None`` (the ``'jax'`` kernels): ``None`` for an empty problem (a
    zero-size dimension)."""
    if 0 in tuple(xs.shape) + tuple(w.shape) + tuple(v0.shape):
        return None
    conv_dtype = _dense.compute_dtype(xs.dtype, w.dtype)
    taps, channels, n_out = w.shape

    def computes(name):
        if name == 'mosaic':
            return mosaic_gpu.supported(taps, channels, n_out, 1, 1, 1, xs.dtype, conv_dtype,
                                        v0.dtype)
        return name == 'triton' and pallas_gpu.conv_lif_supported(xs.shape[1], n_out, 1, 1, 1)

    name = _registry.spiking_kernels('cuda', kernels, computes,
                                     None if kernels is not None else compute_capability()[0])
    return None if name == 'jax' else name


def pallas_sequence(xs, w, b, v0, lif, pads, rhs_dilation, kernel, interpret=False,
                    tiles=None):
    """The spiking layer by a CUDA kernel set (``kernel``: ``'triton'`` or ``'mosaic'``; in
    Pallas's interpreter with ``interpret``), over output ``tiles`` (rows, channels, warps)
    where a benchmark chooses them."""
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
    args = (xs, w, b, v0)
    vma = frozenset().union(*(_varying(getattr(a, 'aval', None)) for a in args))
    if vma:   # under shard_map: every operand varies over the same axes
        args = [lax.pcast(a, tuple(sorted(vma - _varying(a.aval))), to='varying')
                if vma - _varying(a.aval) else a for a in args]
    return tuple(_KERNEL.bind(*args, **params))


def _heaviside(spike_fn) -> bool:
    """Whether the surrogate ``spike_fn``'s values are those of ``x >= 0`` (what the C++
    kernel computes), checked on the values that tell them apart."""
    probe = np.array([-np.inf, -1., -1e-30, 0., 1e-30, 1., np.inf, np.nan], np.float32)
    try:
        with jax.ensure_compile_time_eval():
            values = np.asarray(spike_fn(jnp.asarray(probe)))
    except Exception:
        return False
    return values.shape == probe.shape and bool(np.all(values == (probe >= 0)))


def cxx_unsupported(xs, w, b, v0, lif: LIF, spike_fn=None) -> str | None:
    """Why the C++ CPU kernel does not compute this problem exactly, or None where it does:
    it needs its library (built with the machine's C++17 compiler), ``bool`` or ``float32``
    input, ``float32`` kernel, bias and potentials, a surrogate whose values are those of
    ``x >= 0``, ``v_th > v_reset`` where the reset comes first (``brainpy.state.LIF``'s
    scaled surrogate), a problem that is not empty, and arrays that are the same on every
    device of a ``shard_map``."""
    f32 = jnp.dtype(jnp.float32)
    if 0 in tuple(xs.shape) + tuple(w.shape) + tuple(v0.shape):
        return "the problem is empty"
    if xs.dtype not in (jnp.dtype(jnp.bool_), f32):
        return f"the input is {xs.dtype}, not bool or float32"
    if any(a is not None and jnp.dtype(a.dtype) != f32 for a in (w, b, v0)):
        return "the kernel, bias or potentials are not float32"
    if lif.reset_first and spike_fn is not None and not lif.v_th > lif.v_reset:
        return "v_th is not above v_reset"
    if spike_fn is not None and not _heaviside(spike_fn):
        return "the surrogate's values are not those of x >= 0"
    if any(_varying(getattr(a, 'aval', None)) for a in (xs, w, b, v0) if a is not None):
        return "its operands vary over the devices of a shard_map"
    reason = _registry.named('spiking', 'c++').unavailable()
    if reason is not None:
        return f"its library is not available: {reason}"
    return None


#: The surrogates whose derivative the C++ backward computes: their class name, the kind
#: (:data:`bp_conv_ext.event.kernels.cxx_cpu.SLOPES`), the attributes that are its
#: parameters ``alpha`` and ``beta``, and the derivative at ``x`` as the kernel computes it
#: (``float32``, NumPy).
_SLOPES = {
    'Sigmoid': ('sigmoid', ('alpha', None),
                lambda x, a, b: (1 - (s := 1 / (1 + np.exp(-(a * x))))) * s * a),
    'Arctan': ('arctan', ('alpha', None),
               lambda x, a, b: a * np.float32(0.5) / (1 + (np.float32(np.pi / 2) * a * x) ** 2)),
    'InvSquareGrad': ('inv_square', ('alpha', None),
                      lambda x, a, b: 1 / (a * np.abs(x) + 1) ** 2),
    'ReluGrad': ('relu', ('alpha', 'width'),
                 lambda x, a, b: np.maximum(a * b - np.abs(x) * a, 0)),
    'GaussianGrad': ('gaussian', ('alpha', 'sigma'),
                     lambda x, a, b: a * np.exp(-(x * x) / (2 * b * b))
                     / (np.float32(np.sqrt(2 * np.pi)) * b)),
}


def kernel_slope(spike_fn) -> dict:
    """The surrogate derivative the C++ backward computes for ``spike_fn`` (``slope``,
    ``alpha``, ``beta``), or ``slope=0``, the derivative given by JAX (computed from the
    saved potentials for any surrogate). Taken only where it equals JAX's derivative of
    ``spike_fn`` on values across the surrogate's support (to ``float32`` rounding)."""
    given = dict(slope=0, alpha=0., beta=0.)
    entry = _SLOPES.get(type(spike_fn).__name__)
    if entry is None:
        return given
    kind, names, formula = entry
    try:
        a, b = (np.float32(getattr(spike_fn, name)) if name else np.float32(0)
                for name in names)
        x = np.concatenate([np.linspace(-4, 4, 161), [-1e3, -1e-3, 0., 1e-3, 1e3]]).astype(
            np.float32)
        with jax.ensure_compile_time_eval(), np.errstate(over='ignore'):
            values, pullback = jax.vjp(spike_fn, jnp.asarray(x))
            expected = np.asarray(pullback(jnp.ones_like(values))[0], np.float32)
            got = formula(x, a, b).astype(np.float32)
    except Exception:
        return given
    if not (a.shape == () and np.isfinite(a) and np.isfinite(b)
            and np.allclose(got, expected, rtol=1e-5, atol=1e-7)):
        return given
    return dict(slope=cxx_cpu.SLOPES[kind], alpha=float(a), beta=float(b))


def _surrogate_slope(spike_fn, lif: LIF, u):
    """The derivative of the spikes with respect to the potential ``u`` they come from (the
    surrogate's, elementwise), as the unfused layer differentiates them."""
    if lif.reset_first:
        def spikes(u):
            return spike_fn((u - lif.v_th) / (lif.v_th - lif.v_reset))
    else:
        def spikes(u):
            return spike_fn(u - lif.v_th)
    values, pullback = jax.vjp(spikes, u)
    return pullback(jnp.ones_like(values))[0].astype(jnp.float32)


def _cxx(xs, w, b, v0, lif, pads, rhs_dilation, spike_fn, backend, fold, spike_dtype):
    """The spiking layer by the C++ CPU kernel (``cxx_unsupported`` is None): the forward
    kernel, and the backward kernel for reverse-mode derivatives (a ``custom_vjp``; the
    forward saves the potentials before each reset, ``float32``, nothing else). Derivatives of
    those derivatives (``grad`` of ``grad``, ``jax.hessian``) are the ``'jax'`` kernels'.
    Forward mode (``jax.jvp``, ``jacfwd``) is not defined for it: JAX raises a ``TypeError``
    there (``kernels='jax'`` computes it)."""
    neurons = dict(a=1. - lif.decay, v_rest=lif.v_rest, v_th=lif.v_th, v_reset=lif.v_reset,
                   r=lif.r, c=lif.v_th - lif.v_reset, soft=lif.soft,
                   reset_first=lif.reset_first, surrogate=spike_fn is not None,
                   detach=lif.detach,
                   **(kernel_slope(spike_fn) if spike_fn is not None
                      else dict(slope=0, alpha=0., beta=0.)))
    config = dict(pads=pads, rhs_dilation=rhs_dilation, neurons=neurons)
    gradient_spikes = spike_fn is not None and (lif.reset_first or not lif.detach)
    float_spikes = jnp.dtype(spike_dtype) != jnp.bool_
    b = jnp.zeros((w.shape[2],), jnp.float32) if b is None else jnp.reshape(b, (-1,))

    def reference(xs, w, b, v0):
        spikes, v = _reference(xs, w, b, v0, lif, pads, rhs_dilation, spike_fn, backend, fold)
        return spikes.astype(spike_dtype), v

    def run(xs, w, b, v0, save):
        # The kernel writes one byte a spike; converted here, inside the program, the spikes
        # are converted where they are read (XLA fuses the conversion into the next
        # operation: a pooling, a loss), which the program's memory does not then hold.
        spikes, v, u = _spiking_cpu.forward(xs, w, b, v0, save=save, **config)
        return spikes.astype(spike_dtype), v, u

    @jax.custom_jvp
    def saving(xs, w, b, v0):
        return tuple(run(xs, w, b, v0, True))

    @saving.defjvp
    def saving_tangents(primals, tangents):
        # `saving` runs where its outputs are differentiated in reverse mode, and this rule
        # where those derivatives are differentiated again: the tangents are those of the
        # outputs of the reference's vjp, as they are there. (A surrogate's own rule may
        # compute its spikes without a derivative: they then have none at this order.) Only
        # the backward below reads u, and its derivatives do not: u's tangent is unused.
        spikes, v, u = saving(*primals)
        _, (spikes_dot, v_dot) = jax.jvp(lambda *p: jax.vjp(reference, *p)[0], primals,
                                         _tangents_of(primals, tangents))
        return (spikes, v, u), (spikes_dot, v_dot, jnp.zeros_like(u))

    def pullback(xs, w, b, v0, ds, dv):
        return jax.vjp(reference, xs, w, b, v0)[1]((ds, dv))

    def gradients(xs, w, b, v0, u, ds, dv, input_grad):
        g = g0 = None
        if gradient_spikes and not neurons['slope']:
            g = _surrogate_slope(spike_fn, lif, u)
            if lif.reset_first:
                g0 = _surrogate_slope(spike_fn, lif, v0)
        dx, dw, db, dv0 = _spiking_cpu.backward(
            xs, w, u, g, ds if gradient_spikes else None, dv, v0, g0,
            input_grad=input_grad, **config)
        return (dx if input_grad else None), dw, db, dv0

    @functools.partial(jax.custom_jvp, nondiff_argnums=(7,))
    def backward(xs, w, b, v0, u, ds, dv, input_grad):
        return gradients(xs, w, b, v0, u, ds, dv, input_grad)

    @backward.defjvp
    def backward_tangents(input_grad, primals, tangents):
        xs, w, b, v0, _u, ds, dv = primals
        out = backward(*primals, input_grad)
        dual = (xs, w, b, v0, ds, dv)
        tangents = _tangents_of(dual, tangents[:4] + tangents[5:])
        _, out_dot = jax.jvp(pullback, dual, tangents)
        out_dot = list(out_dot)
        if not input_grad:
            out, out_dot = out[1:], out_dot[1:]
            return (None, *out), (None, *out_dot)
        return out, tuple(out_dot)

    @functools.partial(jax.custom_vjp)
    def op(xs, w, b, v0):
        spikes, v, _ = run(xs, w, b, v0, False)
        return spikes, v

    def forward(xs, w, b, v0):
        spikes, v, u = saving(xs.value, w.value, b.value, v0.value)
        input_grad = xs.perturbed and jnp.issubdtype(xs.value.dtype, jnp.inexact)
        return (spikes, v), (xs.value, w.value, b.value, v0.value, u,
                             np.zeros((int(input_grad),), np.int8))

    def reverse(res, cotangents):
        xs, w, b, v0, u, marker = res
        ds, dv = (_dense_cotangent(c, like) for c, like in zip(cotangents, (u, v0)))
        if not float_spikes:
            ds = jnp.zeros(u.shape, jnp.float32)
        return backward(xs, w, b, v0, u, ds, dv, bool(marker.shape[0]))

    op.defvjp(forward, reverse, symbolic_zeros=True)
    return op(xs, w, b, v0)


def _tangents_of(primals, tangents):
    """``tangents`` with float0 zeros for the primals that are not floating (``bool``
    spikes), as ``jax.jvp`` wants them."""
    return tuple(t if jnp.issubdtype(p.dtype, jnp.inexact)
                 else np.zeros(p.shape, jax.dtypes.float0) for p, t in zip(primals, tangents))


def _dense_cotangent(cotangent, like):
    """A cotangent as a ``float32`` array (zeros for a symbolic zero)."""
    if type(cotangent).__name__ == 'SymbolicZero' or cotangent is None:
        return jnp.zeros(like.shape, jnp.float32)
    if cotangent.dtype == jax.dtypes.float0:
        return jnp.zeros(like.shape, jnp.float32)
    return cotangent.astype(jnp.float32)


def conv_lif(xs, w, b, v0, lif: LIF, *, padding='SAME', rhs_dilation: int = 1,
             kernels: str | None = None, spike_fn=None, backend: str = 'dense',
             fold: str = 'time', spike_dtype=None):
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
    kernels : str, optional
        The kernel set that computes it: ``'jax'``, ``'c++'``, ``'triton'`` or ``'mosaic'``
        (see the module), or ``None`` (default): the registry's choice on each platform.
    spike_fn : callable, optional
        A surrogate spike function (``brainpy.math.surrogate``'s): the spikes' gradient, as
        in ``brainpy.dyn.Lif`` in ``TrainingMode`` (:func:`lif_update`). Without it the
        spikes pass no gradient.
    backend : str
        The convolution's backend where it is not fused (``'jax'``, and the derivatives that
        are the ``'jax'`` kernels'): ``'dense'``, or ``'auto'`` to take the
        event-driven path on sparse spikes as a layer does.
    fold : {'time', 'batch'}
        How the ``'jax'`` kernels (and their derivatives) fold the sequence into one
        batch for its convolution: ``[T * B, ...]`` (a free reshape) or ``[B * T, ...]``
        (batch first, at the cost of two transposes), which keeps a batch split over
        devices on each device under ``jax.jit`` instead of gathering it, as
        ``LayerByLayer.multi_step``'s ``fold`` does. The fused kernels split over the batch
        either way.
    spike_dtype : dtype, optional
        The spikes' dtype: ``v0``'s (the default) or any floating dtype, or ``bool`` (no
        gradient: the spikes of a simulation, one byte each).

    Returns
    -------
    spikes : jax.Array
        ``[T, B, H_out, C_out]``, 0/1 in ``spike_dtype``.
    v : jax.Array
        The membrane potential after the last step.
    """
    if kernels is not None:
        _registry.named('spiking', kernels)
    xs, w, v0 = _args.as_input(xs), jnp.asarray(w), jnp.asarray(v0)
    if xs.ndim != 4 or w.ndim != 3 or w.shape[1] != xs.shape[3]:
        raise ValueError(f"`xs` must be [T, B, H, C_in] and `w` [K, C_in, C_out] with the same "
                         f"C_in; got shapes {xs.shape} and {w.shape}.")
    rhs_dilation = _args.positive_int('rhs_dilation', rhs_dilation)
    fold = check_fold(fold)
    length, taps = xs.shape[2], w.shape[0]
    pads = _args.resolve_padding(_args.canonical_padding(padding), length, taps, 1, 1,
                                 rhs_dilation)
    out_len = _args.output_length(length, taps, 1, pads, 1, rhs_dilation)
    expected = (xs.shape[1], out_len, w.shape[2])
    if v0.shape != expected or not jnp.issubdtype(v0.dtype, jnp.floating):
        raise ValueError(f"`v0` must be a floating array of shape {expected} (batch, output "
                         f"length, out channels); got {v0.dtype} {v0.shape}.")
    spike_dtype = v0.dtype if spike_dtype is None else jnp.dtype(spike_dtype)
    if not (spike_dtype == jnp.bool_ or jnp.issubdtype(spike_dtype, jnp.floating)):
        raise ValueError(f"`spike_dtype` (={spike_dtype}) must be bool or a floating dtype.")
    args = (xs, w, b, v0, lif, tuple(pads), rhs_dilation, spike_fn, backend, fold)

    def run(*operands, kernel=None, interpret=False):
        spikes, v = _differentiable(*operands, *args[4:], kernel=kernel, interpret=interpret)
        return spikes.astype(spike_dtype), v

    def cxx(*operands):
        return _cxx(*operands, *args[4:], spike_dtype)

    def cxx_computes(name):
        # (Only where JAX computes on the CPU: elsewhere the kernel's library is not built
        # for a branch that would not run.)
        return (name == 'c++' and jax.default_backend() == 'cpu'
                and spike_dtype in (jnp.dtype(jnp.bool_), jnp.dtype(jnp.float32))
                and cxx_unsupported(xs, w, b, v0, lif, spike_fn) is None)

    on_cpu = _registry.spiking_kernels('cpu', kernels, cxx_computes)
    if kernels == 'c++':
        return cxx(*args[:4]) if on_cpu == 'c++' else run(*args[:4])
    kernel = choose_kernel(kernels, xs, w, v0)
    if kernels is not None:
        return run(*args[:4], kernel=kernel, interpret=jax.default_backend() != 'gpu')
    branches: dict[str, Callable] = {}
    if kernel is not None:
        branches['cuda'] = functools.partial(run, kernel=kernel)
    if on_cpu == 'c++':
        branches['cpu'] = cxx
    if not branches:
        return run(*args[:4])
    return lax.platform_dependent(*args[:4], default=run, **branches)


def _differentiable(xs, w, b, v0, lif, pads, rhs_dilation, spike_fn, backend, fold, kernel,
                    interpret=False):
    """The fused ``kernel`` (``interpret``: in its interpreter) or (``None``) the ``'jax'``
    kernels. Differentiated, forward or reverse mode and to any order, it is the ``'jax'``
    kernels' (with the surrogate ``spike_fn``, when given), values and derivatives: a
    ``custom_jvp`` whose rule is their JVP. The derivatives
    need its intermediate values anyway, so the kernel would only add work there, and the
    values then are those the derivatives belong to (a kernel's products may round
    differently near the threshold, on GPUs)."""
    def reference(xs, w, b, v0):
        return _reference(xs, w, b, v0, lif, pads, rhs_dilation, spike_fn, backend, fold)

    if kernel is None:
        return reference(xs, w, b, v0)

    @jax.custom_jvp
    def fused(xs, w, b, v0):
        return pallas_sequence(xs, w, b, v0, lif, pads, rhs_dilation, kernel, interpret)

    @fused.defjvp
    def tangents(primals, primal_tangents):
        # JAX 0.4 gives the zero tangents of spikes (bool) their own dtype, not float0.
        primal_tangents = jax.tree.map(
            lambda p, t: t if jnp.issubdtype(p.dtype, jnp.inexact)
            else np.zeros(p.shape, jax.dtypes.float0), primals, primal_tangents)
        return jax.jvp(reference, primals, primal_tangents)

    return fused(xs, w, b, v0)
