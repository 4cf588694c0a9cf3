"""Event-driven kernels in pure JAX: the event path on every platform.

The two kernels compute what the hand-written ones compute, with XLA's own operations: the
forward kernel is XLA's convolution of the input (converted to the kernel dtype), the
kernel-gradient kernel its transpose in the kernel. Zeros are not skipped, so the work does
not follow the spike count, but every option, dtype and platform is covered, and on an AMD GPU
or a TPU XLA runs them with its tuned convolutions.

ROCm GPUs and TPUs lower the primitives of ``bp_conv_ext._event`` to these kernels; the CPU
does when neither the C++ nor the numba kernels are available, and in the tests, which force
them there to check them through the same primitives. Both honour the matmul precision the primitive was
bound under (``jax.default_matmul_precision``; the ``precision`` parameter), as the dense path
does.
"""
import jax
import jax.numpy as jnp

from ...core import dense as _dense


def _spec(stride, low, high, lhs_dilation, rhs_dilation, groups):
    return _dense.ConvSpec(stride, (low, high), lhs_dilation, rhs_dilation, groups, 'xla')


def forward(x, w, params, *, outs, stride, low, high, lhs_dilation, rhs_dilation, groups,
            precision, **unused):
    """``[N, H, C_in]`` input (any dtype) convolved with ``w``; returns ``[y]``."""
    spec = _spec(stride, low, high, lhs_dilation, rhs_dilation, groups)
    with jax.default_matmul_precision(precision):
        return [_dense.xla(x.astype(w.dtype), w, spec).astype(outs[0].dtype)]


def kernel_grad(x, dy, params, *, outs, stride, low, high, lhs_dilation, rhs_dilation, groups,
                precision, **unused):
    """The kernel gradient ``K(x)^T dy``, ``[K, C_in // groups, C_out]``; returns ``[dw]``."""
    spec = _spec(stride, low, high, lhs_dilation, rhs_dilation, groups)
    zeros = jnp.zeros(outs[0].shape, outs[0].dtype)
    with jax.default_matmul_precision(precision):
        conv = jax.linear_transpose(lambda w: _dense.xla(x.astype(w.dtype), w, spec), zeros)
        return [conv(dy.astype(outs[0].dtype))[0]]


def threads():
    """Unused by these kernels (XLA schedules its own threads)."""
    return 1
