"""The spiking layer's C++ CPU kernel (``spiking_cpu.cc``, called through the XLA FFI by
:mod:`bp_conv_ext.event.kernels.cxx_cpu`) as two primitives, its forward and its backward,
with their rules: under ``jax.vmap`` the forward folds a mapped input and state into the
batch (one call; mapped kernels or biases, and the backward, one call each), and under
``jax.jit`` with the batch split over devices each device runs the kernel on its part (a
``custom_partitioning``): nothing is communicated but the kernel's and bias's gradients,
summed over the devices. :func:`bp_conv_ext.ops.fused.conv_lif` differentiates them
(``kernels='c++'``)."""
import functools
import inspect

import jax
import jax.numpy as jnp
from jax import lax
from jax.core import ShapedArray
from jax.experimental.custom_partitioning import custom_partitioning
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir
from jax.sharding import NamedSharding, PartitionSpec

from .._jax_private import requires_devices_during_lowering
from ..core.sequence import batch_spiking_step
from ..event import registry as _registry
from ..event.kernels import cxx_cpu

_FORWARD = Primitive('bp_conv_ext_conv_lif_cpu')
_FORWARD.multiple_results = True
_BACKWARD = Primitive('bp_conv_ext_conv_lif_cpu_grad')
_BACKWARD.multiple_results = True

#: Whether this JAX's ``custom_partitioning`` takes a Shardy sharding rule.
_SHARDY_RULES = 'sharding_rule' in inspect.signature(custom_partitioning.def_partition).parameters
_EMPTY = (0,)


def forward(xs, w, b, v0, *, pads, rhs_dilation, neurons, save):
    """``(spikes, v, u)``: the spikes ``[T, N, P, O]`` (``bool``), the final potentials and,
    with ``save``, the potentials before each reset (else an empty array); see
    :func:`bp_conv_ext.event.kernels.cxx_cpu.conv_lif_forward`."""
    return _FORWARD.bind(xs, w, b, v0, pads=tuple(pads), rhs_dilation=rhs_dilation,
                         neurons=tuple(sorted(neurons.items())), save=bool(save))


def backward(xs, w, u, g, ds, dv, v0, g0, *, pads, rhs_dilation, neurons, input_grad):
    """``(dx, dw, db, dv0)`` (``dx`` empty without ``input_grad``); ``g``, ``ds``, ``g0`` may
    be ``None``; see :func:`bp_conv_ext.event.kernels.cxx_cpu.conv_lif_backward`."""
    empty = jnp.zeros(_EMPTY, jnp.float32)
    g, ds, g0 = (empty if a is None else a for a in (g, ds, g0))
    return _BACKWARD.bind(xs, w, u, g, ds, dv, v0, g0, pads=tuple(pads),
                          rhs_dilation=rhs_dilation, neurons=tuple(sorted(neurons.items())),
                          input_grad=bool(input_grad))


def _forward_shapes(xs, w, b, v0, *, save, **unused):
    sequence = xs.shape[:2] + v0.shape[1:]
    return [ShapedArray(sequence, jnp.bool_), ShapedArray(v0.shape, jnp.float32),
            ShapedArray(sequence if save else _EMPTY, jnp.float32)]


def _backward_shapes(xs, w, u, g, ds, dv, v0, g0, *, input_grad, **unused):
    return [ShapedArray(xs.shape if input_grad else _EMPTY, jnp.float32),
            ShapedArray(w.shape, jnp.float32), ShapedArray(w.shape[2:], jnp.float32),
            ShapedArray(dv.shape, jnp.float32)]


def _run_forward(xs, w, b, v0, *, pads, rhs_dilation, neurons, save):
    spikes, v, u = cxx_cpu.conv_lif_forward(xs, w, b, v0, pads=pads, rhs_dilation=rhs_dilation,
                                            neurons=dict(neurons), save=save)
    return [spikes, v, u]


def _run_backward(xs, w, u, g, ds, dv, v0, g0, *, pads, rhs_dilation, neurons, input_grad):
    return list(cxx_cpu.conv_lif_backward(xs, w, u, g, ds, dv, v0, g0, pads=pads,
                                          rhs_dilation=rhs_dilation, neurons=dict(neurons),
                                          input_grad=input_grad))


def _batch_axes(arg_shapes):
    """The mesh axes the batch (axis 1 of the sequence ``xs``) is split over, or None."""
    sharding = arg_shapes[0].sharding
    spec = sharding.spec if isinstance(sharding, NamedSharding) else ()
    return spec[1] if len(spec) > 1 else None


def _split(mesh, axes, shape, batch_axis):
    """The sharding of an array split over ``axes`` along ``batch_axis`` (replicated where it
    is empty or has no batch: ``batch_axis`` None)."""
    if batch_axis is None or tuple(shape) == _EMPTY:
        return NamedSharding(mesh, PartitionSpec())
    spec = [None] * len(shape)
    spec[batch_axis] = axes
    return NamedSharding(mesh, PartitionSpec(*spec))


@functools.cache
def _partitioned(kind, params, empty):
    """``kind`` (``'forward'`` or ``'backward'``) split over the batch under ``jax.jit``: each
    device runs the kernel on its rows, with the whole kernel and bias; the backward's kernel
    and bias gradients are summed over the devices. Other split dimensions are gathered
    first. ``empty``: which operands are empty arrays (the backward's optional ones)."""
    run = _run_forward if kind == 'forward' else _run_backward
    # Where the batch is in each operand and result (None: no batch).
    if kind == 'forward':
        operands, results = (1, None, None, 0), (1, 0, 1)
    else:
        operands, results = (1, None, 1, 1, 1, 0, 0, 0), (1, None, None, 0)

    def call(*args):
        return run(*args, **dict(params))

    def shardings(mesh, arg_shapes, result_shapes):
        axes = _batch_axes(arg_shapes)
        ins = tuple(_split(mesh, axes, a.shape, axis) for a, axis in zip(arg_shapes, operands))
        outs = [_split(mesh, axes, r.shape, axis) for r, axis in zip(result_shapes, results)]
        return axes, ins, outs

    def infer(mesh, arg_shapes, result_shape):
        return shardings(mesh, arg_shapes, result_shape)[2]

    def partition(mesh, arg_shapes, result_shape):
        axes, ins, outs = shardings(mesh, arg_shapes, result_shape)

        def local(*args):
            out = list(call(*args))
            if kind == 'backward' and axes is not None:
                out[1:3] = [lax.psum(a, axes) for a in out[1:3]]
            return tuple(out)

        return mesh, local, outs, ins

    partitioned = custom_partitioning(call)
    rule = {}
    if _SHARDY_RULES:
        rule = dict(sharding_rule=_shardy_rule(kind, dict(params), empty),
                    need_replication_factors=('t', 'h', 'c', 'k', 'o', 'g'))
    partitioned.def_partition(partition=partition, infer_sharding_from_operands=infer, **rule)
    return partitioned


def _shardy_rule(kind, params, empty):
    """The Shardy rule: t steps, n batch, h and c input length and channels, k taps, o outputs,
    g output length; each empty array a factor of its own."""
    spare = iter('pqrsuvwxyz')
    if kind == 'forward':
        ins = ('t n h c', 'k c o', 'o', 'n g o')
        outs = ('t n g o', 'n g o', 't n g o' if params['save'] else next(spare))
    else:
        ins = ('t n h c', 'k c o', 't n g o', 't n g o', 't n g o', 'n g o', 'n g o', 'n g o')
        outs = ('t n h c' if params['input_grad'] else next(spare), 'k c o', 'o', 'n g o')
    ins = [next(spare) if is_empty else dims for dims, is_empty in zip(ins, empty)]
    return f"{', '.join(ins)} -> {', '.join(outs)}"


def _lower(kind, ctx, *args, **params):
    empty = tuple(a.shape == _EMPTY for a in ctx.avals_in)
    call = _partitioned(kind, tuple(sorted(params.items())), empty)
    return mlir.lower_fun(call, multiple_results=True)(ctx, *args)


def _compiled(primitive, params):
    return jax.jit(lambda *args: primitive.bind(*args, **dict(params)))


def _forward_batch(args, axes, **params):
    """``vmap`` of the forward (:func:`bp_conv_ext.core.sequence.batch_spiking_step`)."""
    return batch_spiking_step(lambda *a: _FORWARD.bind(*a, **params), args, axes,
                              (1, 0, 1 if params['save'] else None))


def _backward_batch(args, axes, **params):
    """``vmap`` of the backward: one call per element."""
    size = next(a.shape[axis] for a, axis in zip(args, axes) if axis is not None)
    mapped = tuple(jnp.broadcast_to(a, (size,) + a.shape) if axis is None
                   else jnp.moveaxis(a, axis, 0) for a, axis in zip(args, axes))
    out = lax.map(lambda a: tuple(_BACKWARD.bind(*a, **params)), mapped)
    return list(out), [0] * 4


def _elsewhere(platform, ctx, *args, **params):
    raise NotImplementedError(
        f"The spiking layer's C++ CPU kernel (conv_lif with kernels='c++', the CPU's default "
        f"with JAX 0.5 or later) has no lowering for {platform!r}: a program that runs it on "
        f"the CPU is lowered for {platform!r} too when it is exported for several platforms at "
        f"once. Export such a program for one platform at a time, or compute the spiking step "
        f"with kernels='jax' (the layers: LayerByLayer.multi_step(..., fuse=False)).")


for _primitive, _shapes, _batch, _kind in ((_FORWARD, _forward_shapes, _forward_batch,
                                            'forward'),
                                           (_BACKWARD, _backward_shapes, _backward_batch,
                                            'backward')):
    _primitive.def_abstract_eval(_shapes)
    _primitive.def_impl(functools.partial(
        lambda primitive, *args, **params: _compiled(primitive, tuple(sorted(params.items())))(
            *args), _primitive))
    batching.primitive_batchers[_primitive] = _batch
    mlir.register_lowering(_primitive, functools.partial(_lower, _kind), platform='cpu')
    for _platform in _registry.ACCELERATORS:
        mlir.register_lowering(_primitive, functools.partial(_elsewhere, _platform),
                               platform=_platform)
    # The lowering may partition the kernel call, which needs the devices.
    requires_devices_during_lowering(_primitive)
