"""Event-driven kernels in pure JAX: the event path on every platform.

The two kernels compute what the hand-written ones compute, with XLA's own operations: the
forward kernel is XLA's convolution of the input (converted to the kernel dtype), the
kernel-gradient kernel its transpose in the kernel. Zeros are not skipped, so the work does
not follow the spike count, but every option, dtype and platform is covered, and on an AMD GPU
or a TPU XLA runs them with its tuned convolutions.

ROCm GPUs and TPUs lower the event primitives (``bp_conv_ext.event.primitive``) to these
kernels; the CPU does when neither the C++ nor the numba kernels are available, and in the
tests, which force them there to check them through the same primitives. Both honour the
matmul precision the primitive was bound under (``jax.default_matmul_precision``;
``spec.precision``), as the dense path does.
"""
import jax
import jax.numpy as jnp

from ...core import dense as _dense


def forward(x, w, params, *, outs, spec):
    """``[N, H, C_in]`` input (any dtype) convolved with ``w``; returns ``[y]``."""
    with jax.default_matmul_precision(spec.precision):
        return [_dense.xla(x.astype(w.dtype), w, spec.conv).astype(outs[0].dtype)]


def kernel_grad(x, dy, params, *, outs, spec):
    """The kernel gradient ``K(x)^T dy``, ``[K, C_in // groups, C_out]``; returns ``[dw]``."""
    zeros = jnp.zeros(outs[0].shape, outs[0].dtype)
    with jax.default_matmul_precision(spec.precision):
        conv = jax.linear_transpose(lambda w: _dense.xla(x.astype(w.dtype), w, spec.conv),
                                    zeros)
        return [conv(dy.astype(outs[0].dtype))[0]]


def threads():
    """Unused by these kernels (XLA schedules its own threads)."""
    return 1
