"""Dense 1-D convolution algorithms and their differentiation rule.

Every algorithm computes the same convolution on ``[N, H, C_in]`` input with a
``[K, C_in // groups, C_out]`` kernel:

- ``'xla'``: ``lax.conv_general_dilated`` on the 1-D layout;
- ``'xla2d'``: the same convolution as a 2-D one over a unit height, which XLA's
  CPU backend runs through its faster 2-D kernels when there are few input channels;
- ``'im2col'``: the ``K`` shifted copies of the input gathered into patches
  ``[N * H_out, K * C_in]`` and multiplied with the kernel (one matmul per group).

Gradients go through one ``jax.custom_jvp`` rule: the input tangent is a convolution,
and for short patch rows the kernel tangent is the ``im2col`` matmul, so reverse mode
computes the kernel gradient as ``patches^T @ dy`` instead of XLA's backward-filter
convolution (which is an order of magnitude slower inside ``lax.scan``). Forward mode
works too.
"""
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jax.typing import DTypeLike

if TYPE_CHECKING:
    from typing_extensions import TypeIs  # typing's from Python 3.13

ALGORITHMS = ('xla', 'xla2d', 'im2col')


class ConvSpec(NamedTuple):
    """Static configuration of one convolution (hashable, so it can key a trace)."""
    stride: int
    padding: tuple[int, int]
    lhs_dilation: int
    rhs_dilation: int
    groups: int
    algorithm: str
    kernel_grad: str = 'im2col'


def compute_dtype(x_dtype: DTypeLike, w_dtype: DTypeLike) -> np.dtype[Any]:
    """The dtype a convolution of ``x`` with ``w`` is computed and returned in.

    ``bool`` and integer inputs (spikes, counts) are computed in the kernel's
    dtype. Floating inputs are promoted with the kernel by JAX's rules:
    ``float16``/``bfloat16`` with a ``float32`` kernel give ``float32``;
    ``float64`` gives ``float64`` when 64-bit mode is on.
    """
    x_dtype = np.dtype(x_dtype)
    if jnp.issubdtype(x_dtype, jnp.bool_) or jnp.issubdtype(x_dtype, jnp.integer):
        return np.dtype(w_dtype)
    if jnp.issubdtype(x_dtype, jnp.floating):
        return np.dtype(jnp.result_type(x_dtype, w_dtype))
    raise TypeError(f"the input has dtype {x_dtype}; expected bool, integer or real floating "
                    f"values (complex and other dtypes are not supported).")


def choose_kernel_grad(rows: int, in_channels: int, kernel_size: int, groups: int) -> str:
    """How the kernel gradient is computed; a fixed rule measured on a 2-core CPU.

    ``'im2col'`` (a matmul with the patches) when a patch row is short
    (``kernel_size * in_channels // groups <= 128``) and either the problem is small
    (``rows = batch * output length <= 8192``, one step of a network inside a scan,
    where XLA's backward-filter convolution is ~10x slower) or there is one input
    channel per group (where that convolution is slow everywhere); ``'xla'`` otherwise.
    """
    short_rows = kernel_size * in_channels // groups <= 128
    if short_rows and (rows <= 8192 or in_channels // groups == 1):
        return 'im2col'
    return 'xla'


def is_small(batch: int, length: int, in_channels: int, out_channels: int, kernel_size: int,
             groups: int) -> bool:
    """Under ~2 MFLOP: fixed costs dominate (one unbatched step, say)."""
    return 2 * batch * length * in_channels * out_channels * kernel_size // groups < 2_000_000


def choose(batch: int, length: int, in_channels: int, out_channels: int, kernel_size: int,
           groups: int) -> tuple[str, str]:
    """The dense algorithm and the kernel-gradient form for a shape; fixed rules measured on a
    2-core CPU.

    The algorithm:

    - one input channel per group and no grouping: ``'xla2d'`` (XLA's 1-D convolution
      reaches only ~20 GFLOP/s there);
    - small problems (under ~2 MFLOP, such as one unbatched step), and the problems whose
      kernel gradient is an im2col matmul (see :func:`choose_kernel_grad`: one step of a
      network inside a scan, where XLA's convolutions are slow): ``'im2col'``, one fused
      gather and one matmul;
    - everything else: ``'xla'``.
    """
    kernel_grad = choose_kernel_grad(batch * length, in_channels, kernel_size, groups)
    if groups == 1 and in_channels == 1:
        return 'xla2d', kernel_grad
    small = is_small(batch, length, in_channels, out_channels, kernel_size, groups)
    return ('im2col' if small or kernel_grad == 'im2col' else 'xla'), kernel_grad


def choose_algorithm(batch: int, length: int, in_channels: int, out_channels: int,
                     kernel_size: int, groups: int) -> str:
    """The dense algorithm of :func:`choose` alone."""
    return choose(batch, length, in_channels, out_channels, kernel_size, groups)[0]


def _pad_input(x: jax.Array, spec: ConvSpec) -> jax.Array:
    """Apply ``spec``'s padding and input dilation to ``x`` (zeros, as the convolution would)."""
    low, high = spec.padding
    return lax.pad(x, jnp.zeros((), x.dtype),
                   ((0, 0, 0), (low, high, spec.lhs_dilation - 1), (0, 0, 0)))


def _xla_safe(x: jax.Array, w: jax.Array, spec: ConvSpec) -> tuple[jax.Array, ConvSpec]:
    """Where some outputs see padding only (padding at least the dilated kernel span), XLA's
    CPU backward-input convolution returns garbage (it reads memory it never wrote; seen with
    jax 0.10): pad here and let XLA convolve unpadded."""
    if max(spec.padding) < (w.shape[0] - 1) * spec.rhs_dilation + 1:
        return x, spec
    return _pad_input(x, spec), spec._replace(padding=(0, 0), lhs_dilation=1)


def xla(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """XLA's convolution of ``[N, H, C_in]`` input with ``spec`` (its algorithm not consulted)."""
    x, spec = _xla_safe(x, w, spec)
    return lax.conv_general_dilated(
        x, w, window_strides=(spec.stride,), padding=(spec.padding,),
        lhs_dilation=(spec.lhs_dilation,), rhs_dilation=(spec.rhs_dilation,),
        dimension_numbers=('NWC', 'WIO', 'NWC'), feature_group_count=spec.groups)


def _xla2d(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    x, spec = _xla_safe(x, w, spec)
    y = lax.conv_general_dilated(
        x[:, None], w[None], window_strides=(1, spec.stride), padding=((0, 0), spec.padding),
        lhs_dilation=(1, spec.lhs_dilation), rhs_dilation=(1, spec.rhs_dilation),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=spec.groups)
    return y[:, 0]


def patches(x: jax.Array, kernel_size: int, spec: ConvSpec) -> jax.Array:
    """``[N, H, C]`` -> ``[N, H_out, K, C]``: the input sample each tap sees."""
    padded = _pad_input(x, spec)
    span = (kernel_size - 1) * spec.rhs_dilation + 1
    out_len = (padded.shape[1] - span) // spec.stride + 1
    taps = [lax.slice_in_dim(padded, k * spec.rhs_dilation,
                             k * spec.rhs_dilation + (out_len - 1) * spec.stride + 1,
                             stride=spec.stride, axis=1)
            for k in range(kernel_size)]
    return jnp.stack(taps, axis=2)


def kernel_grad_tap_by_tap(x: jax.Array, dy: jax.Array, kernel_shape: tuple[int, int, int],
                           spec: ConvSpec) -> jax.Array:
    """The kernel gradient ``K(x)^T dy`` (``kernel_shape``: ``(K, C_in // groups, C_out)``)
    as one matmul per tap: the products of ``im2col``'s (the padding's and the input
    dilation's zeros included, so ``0 * nan`` is NaN as there), with one shifted copy of the
    input alive at a time instead of ``K``."""
    padded = _pad_input(x, spec)
    taps, channels, out = kernel_shape
    width = (dy.shape[1] - 1) * spec.stride + 1
    groups = spec.groups

    def tap_grad(k: int | jax.Array) -> jax.Array:
        shifted = lax.dynamic_slice_in_dim(padded, k * spec.rhs_dilation, width, axis=1)
        tap = lax.slice_in_dim(shifted, 0, width, stride=spec.stride, axis=1)
        tap = tap.reshape(-1, groups, channels).astype(dy.dtype)
        g = jnp.einsum('rgc,rgo->cgo', tap, dy.reshape(-1, groups, out // groups))
        return g.reshape(1, channels, out)

    def add_tap(k: jax.Array, grad: jax.Array) -> jax.Array:
        return lax.dynamic_update_slice_in_dim(grad, tap_grad(k), k, axis=0)

    # A loop, so that one tap's copy is alive at a time. The first tap is written before it:
    # the loop's carry then has the type of what the body writes (inside shard_map, varying
    # over the axes dy varies over).
    first = lax.dynamic_update_slice_in_dim(jnp.zeros(kernel_shape, dy.dtype), tap_grad(0), 0,
                                            axis=0)
    return cast(jax.Array, lax.fori_loop(1, taps, add_tap, first))    # fori_loop: untyped


def _patch_matmul(p: jax.Array, w: jax.Array, groups: int) -> jax.Array:
    """Contract patches ``[N, H_out, K, C]`` with a kernel ``[K, C // groups, O]``."""
    n, h, k, c = p.shape
    out = w.shape[2]
    if groups == 1:
        return (p.reshape(n * h, k * c) @ w.reshape(k * c, out)).reshape(n, h, out)
    p = p.reshape(n, h, k, groups, c // groups)
    w = w.reshape(k, c // groups, groups, out // groups)
    return jnp.einsum('nhkgc,kcgo->nhgo', p, w).reshape(n, h, out)


def _im2col(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    return _patch_matmul(patches(x, w.shape[0], spec), w, spec.groups)


_Algorithm = Callable[[jax.Array, jax.Array, ConvSpec], jax.Array]
_FORWARD: dict[str, _Algorithm] = {'xla': xla, 'xla2d': _xla2d, 'im2col': _im2col}


@partial(jax.custom_jvp, nondiff_argnums=(2,))
def _conv(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    return _FORWARD[spec.algorithm](x, w, spec)


def _conv_jvp(spec: ConvSpec, primals: tuple[jax.Array, jax.Array],
              tangents: tuple[jax.Array | SymbolicZero, jax.Array | SymbolicZero]
              ) -> tuple[jax.Array, jax.Array]:
    x, w = primals
    x_dot, w_dot = tangents
    y = _conv(x, w, spec)
    y_dot = jnp.zeros_like(y)
    if not _is_zero(x_dot):
        # Linear in x_dot: transposes to XLA's backward-input convolution.
        y_dot = y_dot + _FORWARD[spec.algorithm](x_dot, w, spec)
    if not _is_zero(w_dot) and spec.kernel_grad == 'im2col':
        # Linear in w_dot through a matmul with the patches of x: its transpose is the
        # kernel gradient patches^T @ dy.
        y_dot = y_dot + _patch_matmul(patches(x, w.shape[0], spec), w_dot, spec.groups)
    elif not _is_zero(w_dot):
        y_dot = y_dot + xla(x, w_dot, spec)
    return y, y_dot


_conv.defjvp(_conv_jvp, symbolic_zeros=True)


def _is_zero(tangent: object) -> 'TypeIs[SymbolicZero]':
    return isinstance(tangent, jax.custom_derivatives.SymbolicZero)


def conv(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """Dense convolution of ``[N, H, C_in]`` input; ``spec.padding`` is a resolved pair."""
    return _conv(x, w, spec)
