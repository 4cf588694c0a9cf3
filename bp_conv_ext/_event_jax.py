"""Event-driven kernels in pure JAX: the event path on every platform.

The two kernels compute what the hand-written ones compute, with XLA's own operations: the
forward kernel is XLA's convolution of the input (converted to the kernel dtype), the
kernel-gradient kernel its transpose in the kernel. Zeros are not skipped, so the work does
not follow the spike count, but every option, dtype and platform is covered, and on a GPU or
TPU XLA runs them with its tuned convolutions (cuDNN on NVIDIA GPUs).

They serve in two ways:

- every runtime module registers them on its own primitives for each platform that has no
  hand-written kernel (GPUs and TPUs), so a program that reaches the event path lowers there
  (and in a program lowered for several platforms at once);
- this module is also a runtime of its own, with the same names as the others: primitives
  defined here, lowered to these kernels on every platform. :mod:`._event` uses it when
  neither ``brainevent`` nor ``brainpylib`` is installed, and the tests use it to run these
  kernels on the CPU through the same differentiation and batching rules.

Both kernels honour the matmul precision the primitive was bound under
(``jax.default_matmul_precision``; the ``precision`` parameter), as the dense path does.
"""
import jax
import jax.numpy as jnp
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import ad, batching as jax_batching, mlir

from . import _dense

#: Platforms where ``backend='auto'`` may choose these kernels: none, since they do the
#: dense path's work.
AUTO = ()

#: The event kernel that runs on each platform.
KERNELS = {'cpu': 'jax', 'cuda': 'jax', 'rocm': 'jax', 'tpu': 'jax'}


def _spec(stride, low, high, lhs_dilation, rhs_dilation, groups):
    return _dense.ConvSpec(stride, (low, high), lhs_dilation, rhs_dilation, groups, 'xla')


def forward_kernel(x, w, params, *, outs, stride, low, high, lhs_dilation, rhs_dilation, groups,
                   precision, **unused):
    """``[N, H, C_in]`` input (any dtype) convolved with ``w``; returns ``[y]``."""
    spec = _spec(stride, low, high, lhs_dilation, rhs_dilation, groups)
    with jax.default_matmul_precision(precision):
        return [_dense.xla(x.astype(w.dtype), w, spec).astype(outs[0].dtype)]


def kernel_grad_kernel(x, dy, params, *, outs, stride, low, high, lhs_dilation, rhs_dilation,
                       groups, precision, **unused):
    """The kernel gradient ``K(x)^T dy``, ``[K, C_in // groups, C_out]``; returns ``[dw]``."""
    spec = _spec(stride, low, high, lhs_dilation, rhs_dilation, groups)
    zeros = jnp.zeros(outs[0].shape, outs[0].dtype)
    with jax.default_matmul_precision(precision):
        conv = jax.linear_transpose(lambda w: _dense.xla(x.astype(w.dtype), w, spec), zeros)
        return [conv(dy.astype(outs[0].dtype))[0]]


def generator(kernel):
    """``kernel`` as a brainevent kernel generator (called with the bind parameters)."""
    def generate(**params):
        return lambda *args: kernel(*args, **params)
    return generate


def lowering(kernel):
    """``kernel`` as an MLIR lowering rule of a primitive with multiple results."""
    return mlir.lower_fun(kernel, multiple_results=True)


class _Kernel:
    """A primitive lowered to ``kernel`` on every platform, called as the runtimes' are:
    ``prim(*args, outs=[...], **static)``, returning a list."""

    def __init__(self, name, kernel):
        self.primitive = Primitive(name)
        self.primitive.multiple_results = True
        self.primitive.def_impl(kernel)
        self.primitive.def_abstract_eval(
            lambda *avals, outs, **params: [ShapedArray(o.shape, o.dtype) for o in outs])
        mlir.register_lowering(self.primitive, lowering(kernel))

    def __call__(self, *args, outs, **static):
        outs = tuple(jax.ShapeDtypeStruct(o.shape, o.dtype) for o in outs)
        return self.primitive.bind(*args, outs=outs, **static)


forward = _Kernel('bp_conv_ext_event_conv1d_jax', forward_kernel)
kernel_grad = _Kernel('bp_conv_ext_event_conv1d_kernel_grad_jax', kernel_grad_kernel)


def threads():
    """Unused by these kernels (XLA schedules its own threads)."""
    return 1


def define_rules(prim, jvp, transpose, batching):
    """Per-input JVP rules (each returning a list of output tangents), transposition and
    batching, as the other runtimes define them."""
    primitive = prim.primitive

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
    jax_batching.primitive_batchers[primitive] = batching
