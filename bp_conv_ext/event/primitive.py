"""Event-driven 1-D convolution: work proportional to the number of nonzero inputs.

For every nonzero input ``x[n, h, c]`` only the products ``x[n, h, c] * w[k, c, :]`` for the
output samples that input reaches are formed. With spikes (``bool`` input, or 0/1 values)
and a spike density ``p`` that is ``p`` times the work of a dense convolution, with no
im2col copy.

The operation is a pair of JAX primitives defined here, the convolution and its kernel
gradient, with everything that is not a kernel written once: the rules for JVP,
transposition (reverse mode with respect to the kernel and the input) and ``vmap``, the
abstract evaluation, which keeps the varying manual axes of ``jax.shard_map``, and the
sharding rule under ``jax.jit``. Each platform lowers them to the kernel set that the registry
of :mod:`.registry` says runs there (one module per set in :mod:`.kernels`):

- the CPU to the first available of ``'c++'`` (C++ through the XLA FFI, built with the
  machine's compiler), ``'numba'`` (numba kernels through ``brainevent.XLACustomKernel``,
  BrainPy 2.7+) and the pure-JAX ``'jax'``, or to the set chosen when the call was traced
  (``kernels=`` of :func:`bp_conv_ext.conv1d`, or :func:`bp_conv_ext.use_event_kernels`);
- CUDA GPUs to the Pallas kernels through Triton, ``'triton'``; ROCm GPUs and TPUs to
  ``'jax'``.

The kernels skip zero inputs, where the dense path multiplies them (``0 * nan`` and
``0 * inf`` are NaN): each lowering hands an operand that is not all finite (a kernel, a
kernel tangent or cotangent, an output cotangent) to a dense computation, chosen inside the
program, so that forward and both modes of differentiation give the dense path's IEEE answer.

The static parameters are one :class:`.registry.EventSpec`: the convolution, the output
length, the matmul precision the call was made under and the name of the CPU's kernel set.

Sharding. Under ``jax.jit`` with sharded inputs, XLA cannot split a custom call, so the C++ and
numba kernels are wrapped in ``jax.experimental.custom_partitioning``: the forward runs on each
device's part of the batch, the kernel gradient too, followed by a ``psum`` of the partial
gradients over the batch axes (other dimensions are gathered first). The pure-JAX kernels are
XLA's own operations, which XLA splits by itself. Under ``jax.shard_map`` the inputs are cast
to the same varying manual axes and the outputs vary over them, so that the gradient of a
replicated kernel is summed over the shards where JAX's rules say so.
"""
import contextlib
import functools
import inspect

import jax
import jax.numpy as jnp
from jax.core import ShapedArray
from jax.experimental.custom_partitioning import custom_partitioning
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir
from jax.sharding import NamedSharding, PartitionSpec

from .._jax_private import requires_devices_during_lowering
from ..core import dense as _dense
from . import gpu_target as _gpu_target
from . import registry
from .registry import EventSpec, KernelParams


def _varying(aval):
    """The manual mesh axes (``jax.shard_map``) that an abstract value varies over."""
    mat = getattr(aval, 'manual_axis_type', None)
    return frozenset(mat.varying if mat is not None else getattr(aval, 'vma', ()))


def _vma(value):
    return _varying(getattr(value, 'aval', None))


def _abstract_eval(x, *avals, outs, **params):
    # The outputs vary over the manual axes the input does (the operands were cast to the
    # same ones); outside shard_map they are plain arrays.
    if _varying(x):
        return [x.update(shape=o.shape, dtype=o.dtype, weak_type=False) for o in outs]
    return [ShapedArray(o.shape, o.dtype) for o in outs]


def _batch_axes(shape):
    """The mesh axes the leading (batch) dimension of an operand is split over, or ``None``."""
    sharding = getattr(shape, 'sharding', None)
    spec = getattr(sharding, 'spec', None) if isinstance(sharding, NamedSharding) else None
    return spec[0] if spec else None


#: Whether this JAX's ``custom_partitioning`` takes a Shardy sharding rule.
_SHARDY_RULES = 'sharding_rule' in inspect.signature(custom_partitioning.def_partition).parameters


@functools.cache
def _partitioned(kind, kernel, out_shape, dtype, spec: EventSpec):
    """``kernel`` split over the batch under ``jax.jit``: a ``custom_partitioning``."""
    reduce = kind == 'kernel_grad'

    def call(x, operand, p):
        shape = out_shape if reduce else (x.shape[0],) + out_shape[1:]
        return kernel(x, operand, p, outs=[jax.ShapeDtypeStruct(shape, dtype)], spec=spec)

    def shardings(mesh, arg_shapes):
        axes = _batch_axes(arg_shapes[0])
        split = NamedSharding(mesh, PartitionSpec(axes, None, None))
        whole = NamedSharding(mesh, PartitionSpec())
        return axes, split, whole

    def infer(mesh, arg_shapes, result_shape):
        _, split, whole = shardings(mesh, arg_shapes)
        return [whole if reduce else split]

    def partition(mesh, arg_shapes, result_shape):
        axes, split, whole = shardings(mesh, arg_shapes)

        def lower(x, operand, p):
            out = call(x, operand, p)
            return [jax.lax.psum(out[0], axes)] if reduce and axes is not None else out

        operands = (split, split if reduce else whole, whole)
        return mesh, lower, [whole if reduce else split], operands

    partitioned = custom_partitioning(call)
    rule = {}
    if _SHARDY_RULES:
        # n: batch; h, c: input length and channels; k, i, o: kernel; t: output length.
        rule = (dict(sharding_rule='n h c, n t o, p -> k i o', reduction_factors=('n',),
                     need_replication_factors=('h', 'c', 't', 'o', 'p'))
                if reduce else
                dict(sharding_rule='n h c, k i o, p -> n t o',
                     need_replication_factors=('h', 'c', 'k', 'i', 'o', 'p')))
    partitioned.def_partition(partition=partition, infer_sharding_from_operands=infer, **rule)
    return partitioned


class _Operation:
    """One event-driven operation (``kind``: ``'forward'`` or ``'kernel_grad'``), called as
    ``op(x, w_or_dy, params, outs=[...], spec=EventSpec(...))``; returns a list."""

    def __init__(self, name, kind):
        self.kind = kind
        self.primitive = Primitive(name)
        self.primitive.multiple_results = True
        self.primitive.def_impl(self._impl)
        self.primitive.def_abstract_eval(_abstract_eval)
        mlir.register_lowering(self.primitive, self._cpu_rule, platform='cpu')
        for platform in registry.ACCELERATORS:
            rule = functools.partial(self._accelerator_rule, platform)
            mlir.register_lowering(self.primitive, rule, platform=platform)
        # The lowering may partition the kernel call, which needs the devices.
        requires_devices_during_lowering(self.primitive)

    def __call__(self, *args, outs, spec: EventSpec):
        vma = frozenset().union(*map(_vma, args))
        if vma:   # under shard_map: every operand varies over the same axes
            args = tuple(jax.lax.pcast(a, tuple(sorted(vma - _vma(a))), to='varying')
                         if vma - _vma(a) else a for a in args)
        outs = tuple(jax.ShapeDtypeStruct(o.shape, o.dtype) for o in outs)
        return self.primitive.bind(*args, outs=outs, spec=spec)

    def _impl(self, *args, **params):
        return _compiled(self.primitive, tuple(sorted(params.items())))(*args)

    def _cpu_rule(self, ctx, *args, spec, **params):
        # On the CPU, the kernel set the call was traced with.
        return self._rule(_kernel_set(spec.kernels), ctx, *args, spec=spec, **params)

    def _accelerator_rule(self, platform, ctx, *args, **params):
        # The kernel module of an accelerator is imported when a program first needs it; CUDA's
        # are lowered for a GPU this machine may not have (see ``gpu_target``).
        chosen = registry.running(platform)
        with _gpu_target.cuda_lowering() if platform == 'cuda' else contextlib.nullcontext():
            return self._rule(chosen, ctx, *args, compiled=True, **params)

    def _rule(self, chosen, ctx, *args, compiled=False, **params):
        """Lower to the kernel of the kernel set ``chosen``: on an accelerator its compiled
        form where it has one (``module.compiled``), on the CPU the plain one (Pallas kernels
        are interpreted)."""
        module = chosen.load()
        kernel = getattr(module, 'compiled', {}).get(self.kind) if compiled else None
        kernel = kernel or getattr(module, self.kind)
        call = functools.partial(self._call, chosen.sharding, kernel)
        return mlir.lower_fun(call, multiple_results=True)(ctx, *args, **params)

    def _call(self, sharding, kernel, x, operand, p, *, outs, spec):
        if sharding != 'split':
            def event(x, operand):
                return kernel(x, operand, p, outs=outs, spec=spec)[0]
        else:
            partitioned = _partitioned(self.kind, kernel, outs[0].shape, outs[0].dtype, spec)

            def event(x, operand):
                return partitioned(x, operand, p)[0]
        # The kernels skip zero inputs; the dense path multiplies them, and 0 * nan and
        # 0 * inf are NaN: an operand (a kernel, its tangent or cotangent, or an output
        # cotangent) that is not all finite takes the dense path's computation, chosen in the
        # program, whatever the kernels.
        dense = functools.partial(_DENSE[self.kind], out=outs[0], spec=spec)
        axes = _vma(x) | _vma(operand)

        def varying(branch):
            # Inside shard_map both branches give what varies over the operands' axes (a
            # kernel's output is declared without them); a type only, nothing is moved.
            def run(x, operand):
                y = branch(x, operand)
                missing = tuple(sorted(axes - _vma(y)))
                return jax.lax.pcast(y, missing, to='varying') if missing else y
            return run

        return [jax.lax.cond(jnp.all(jnp.isfinite(operand)), varying(event), varying(dense), x,
                             operand)]


def _kernel_set(name):
    """The kernel set ``name`` (the parameter ``kernels`` of a bound call)."""
    return registry.BY_NAME[name]


@functools.cache
def _compiled(primitive, params):
    params = dict(params)
    return jax.jit(lambda *args: primitive.bind(*args, **params))


# Where an operand is not finite, the lowering computes as the dense path does: XLA's
# convolution forward, and the kernel gradient as matmuls of the input's shifted copies, the
# zeros of the padding and of the input dilation included (XLA's CPU convolution multiplies
# the padding when compiled on its own but skipped it, giving fewer NaN in a kernel gradient,
# when compiled inside a conditional). One tap at a time: XLA plans the branch's memory even
# where it does not run.
def _dense_forward(x, w, *, out, spec: EventSpec):
    """``K(x) w``, ``[N, H_out, C_out]``."""
    with jax.default_matmul_precision(spec.precision):
        y = _dense.xla(x.astype(w.dtype), w, spec.conv)
    return y.astype(out.dtype)


def _dense_kernel_grad(x, dy, *, out, spec: EventSpec):
    """``K(x)^T dy``, the kernel gradient."""
    with jax.default_matmul_precision(spec.precision):
        return _dense.kernel_grad_tap_by_tap(x, dy.astype(out.dtype), out.shape,
                                             spec.conv).astype(out.dtype)


_DENSE = {'forward': _dense_forward, 'kernel_grad': _dense_kernel_grad}

forward = _Operation('bp_conv_ext_event_conv1d', 'forward')
kernel_grad = _Operation('bp_conv_ext_event_conv1d_kernel_grad', 'kernel_grad')


def _dense_conv(x, w, spec: EventSpec):
    """The dense convolution the rules use, under the matmul precision of the bound call."""
    with jax.default_matmul_precision(spec.precision):
        return _dense.conv(x, w, spec.conv)


def _params(spec: EventSpec):
    c = spec.conv
    return jnp.asarray(KernelParams(c.stride, c.padding[0], c.lhs_dilation, c.rhs_dilation,
                                    c.groups, _kernel_set(spec.kernels).load().threads()),
                       dtype=jnp.int32)


def _bind(x, w, params, spec: EventSpec):
    out = jax.ShapeDtypeStruct((x.shape[0], spec.out_len, w.shape[2]), w.dtype)
    return forward(x, w, params, outs=[out], spec=spec)[0]


def _bind_kernel_grad(x, dy, params, w_aval, spec: EventSpec):
    out = jax.ShapeDtypeStruct(w_aval.shape, w_aval.dtype)
    return kernel_grad(x, dy, params, outs=[out], spec=spec)[0]


def _jvp_x(x_dot, x, w, params, *, spec, **unused):
    # Linear in x: a dense convolution of the (dense) tangent.
    return [_dense_conv(x_dot.astype(w.dtype), w, spec)]


def _jvp_w(w_dot, x, w, params, *, spec, **unused):
    return [_bind(x, w_dot, params, spec)]


def _transpose(ct, x, w, params, *, spec, **unused):
    ct = ct[0]
    if ad.is_undefined_primal(w):
        if type(ct) is ad.Zero:
            return None, ad.Zero(w.aval), None
        return None, _bind_kernel_grad(x, ct, params, w.aval, spec), None
    if type(ct) is ad.Zero:
        return ad.Zero(x.aval), None, None
    zeros = jnp.zeros(x.aval.shape, w.dtype)
    dx = jax.linear_transpose(lambda v: _dense_conv(v, w, spec), zeros)(ct)[0]
    return dx.astype(x.aval.dtype), None, None


def _batch(args, axes, *, spec, **unused):
    x, w, _ = args
    x_axis, w_axis, _ = axes
    # ``params`` follows from ``spec``; it arrives batched where a batched ``lax.cond`` runs
    # both branches on batched operands.
    params = _params(spec)
    if w_axis is None:
        # Fold the mapped axis into the batch axis: one call.
        x = jnp.moveaxis(x, x_axis, 0)
        lead = x.shape[:2]
        y = _bind(x.reshape((-1,) + x.shape[2:]), w, params, spec)
        return [y.reshape(lead + y.shape[1:])], [0]
    # A batch of kernels: one call per kernel.
    w = jnp.moveaxis(w, w_axis, 0)
    if x_axis is None:
        y = jax.lax.map(lambda wi: _bind(x, wi, params, spec), w)
    else:
        x = jnp.moveaxis(x, x_axis, 0)
        y = jax.lax.map(lambda xw: _bind(xw[0], xw[1], params, spec), (x, w))
    return [y], [0]


def _kernel_grad_jvp_x(x_dot, x, dy, params, *, outs, spec):
    # Linear in x as well: the kernel gradient of the (dense) tangent, on the dense path.
    zeros = jnp.zeros(outs[0].shape, outs[0].dtype)
    conv = lambda w: _dense_conv(x_dot.astype(w.dtype), w, spec)
    return [jax.linear_transpose(conv, zeros)(dy)[0]]


def _kernel_grad_jvp_dy(dy_dot, x, dy, params, *, outs, spec):
    return [_bind_kernel_grad(x, dy_dot, params, outs[0], spec)]


def _kernel_grad_transpose(ct, x, dy, params, *, spec, **unused):
    # dw = K(x)^T dy is linear in dy; its transpose maps a kernel cotangent back through
    # the forward convolution.
    ct = ct[0]
    if type(ct) is ad.Zero:
        return None, ad.Zero(dy.aval), None
    return None, _bind(x, ct, params, spec), None


def _kernel_grad_batch(args, axes, *, outs, spec):
    x, dy, _ = args
    x_axis, dy_axis, _ = axes
    params = _params(spec)      # as in _batch
    w_aval = outs[0]
    size = x.shape[x_axis] if x_axis is not None else dy.shape[dy_axis]
    x = jnp.broadcast_to(x, (size,) + x.shape) if x_axis is None else jnp.moveaxis(x, x_axis, 0)
    dy = jnp.broadcast_to(dy, (size,) + dy.shape) if dy_axis is None else \
        jnp.moveaxis(dy, dy_axis, 0)
    dw = jax.lax.map(lambda a: _bind_kernel_grad(a[0], a[1], params, w_aval, spec), (x, dy))
    return [dw], [0]


def _define_rules(op, jvp, transpose, batching_rule):
    """Per-input JVP rules (each returning a list of output tangents), transposition and
    batching."""
    primitive = op.primitive

    def jvp_rule(primals, tangents, **params):
        out = primitive.bind(*primals, **params)
        total = None
        for rule, tangent in zip(jvp, tangents):
            if rule is None or type(tangent) is ad.Zero:
                continue
            part = rule(tangent, *primals, **params)
            total = part if total is None else [a + b for a, b in zip(total, part)]
        return out, total if total is not None else [jnp.zeros_like(o) for o in out]

    ad.primitive_jvps[primitive] = jvp_rule
    ad.primitive_transposes[primitive] = transpose
    batching.primitive_batchers[primitive] = batching_rule


_define_rules(forward, (_jvp_x, _jvp_w, None), _transpose, _batch)
_define_rules(kernel_grad, (_kernel_grad_jvp_x, _kernel_grad_jvp_dy, None),
              _kernel_grad_transpose, _kernel_grad_batch)


def conv(x, w, spec: _dense.ConvSpec, out_len: int, kernels=None):
    """Event-driven convolution of ``[N, H, C_in]`` input (any dtype; zeros are skipped), on
    the CPU with the kernel set ``kernels`` (a name; ``None``: the default there)."""
    static = EventSpec(spec._replace(algorithm='xla', kernel_grad='im2col'), out_len,
                       jax.config.jax_default_matmul_precision,
                       registry.running('cpu', kernels).name)
    return _bind(x, w, _params(static), static)
