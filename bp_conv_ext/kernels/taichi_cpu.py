"""Event-driven kernels for the BrainPy 2.6 generation: taichi, run by brainpylib.

Gather form: every output sample ``y[n, t, :]`` (one parallel task each) visits the input
samples its taps read and skips the zero ones; the kernel gradient gives one parallel task
to each ``(tap, input channel)`` pair. No two tasks write the same element, so no atomic
additions are needed (updates are written ``a = a + b``: taichi makes ``+=`` in a parallel
loop atomic). The kernels are registered as ``brainpy.math.XLACustomOp`` primitives;
they are called by the CPU lowering of the primitives of ``bp_conv_ext._event``, where their
differentiation, batching and sharding rules are.
"""
import brainpy.math as bm
import taichi as ti

NAME = 'taichi'

#: Slower than the dense path at every benchmarked density (docs/performance.md): under
#: ``backend='auto'`` the dense path runs; ``backend='event'`` still selects these kernels.
AUTO_DENSITY = None

#: One device only: brainpylib's taichi runtime crashes when XLA runs its kernels on several
#: devices at once, and taichi's build on first use fails or hangs inside XLA's SPMD
#: partitioner. A program for several devices that reaches them raises an error instead.
SHARDING = None


@ti.func
def _input_sample(t, k, stride, low, lhs, rhs, length):
    """Input sample that tap ``k`` of output ``t`` reads, or ``-1`` where it reads padding
    or a hole of the input dilation."""
    position = t * stride + k * rhs - low
    h = -1
    if position >= 0 and position % lhs == 0 and position // lhs < length:
        h = position // lhs
    return h


@ti.func
def _nonzero(x: ti.template(), n, h, c):
    """``x[n, h, c] != 0``, NaN counted as nonzero. Floats are tested on their bits (sign
    bit dropped): taichi compiles with fast math, under which a NaN compares equal to 0."""
    v = x[n, h, c]
    result = v != 0
    if ti.static(x.get_type().element_type == ti.f32):
        result = (ti.bit_cast(v, ti.u32) << 1) != 0
    elif ti.static(x.get_type().element_type == ti.f64):
        result = (ti.bit_cast(v, ti.u64) << 1) != 0
    return result


@ti.kernel
def _forward_kernel(x: ti.types.ndarray(ndim=3), w: ti.types.ndarray(ndim=3),
                    params: ti.types.ndarray(ndim=1), y: ti.types.ndarray(ndim=3)):
    stride, low, lhs, rhs, groups = params[0], params[1], params[2], params[3], params[4]
    length, channels = x.shape[1], x.shape[2]
    taps, group_in, n_out = w.shape[0], w.shape[1], w.shape[2]
    group_out = n_out // groups
    for n, t in ti.ndrange(y.shape[0], y.shape[1]):
        for o in range(n_out):
            y[n, t, o] = 0   # output buffers start uninitialised
        for k in range(taps):
            h = _input_sample(t, k, stride, low, lhs, rhs, length)
            if h >= 0:
                for c in range(channels):
                    if _nonzero(x, n, h, c):
                        v = x[n, h, c]
                        g = c // group_in
                        o0 = g * group_out
                        for j in range(group_out):
                            y[n, t, o0 + j] = y[n, t, o0 + j] + v * w[k, c - g * group_in, o0 + j]


@ti.kernel
def _kernel_grad_kernel(x: ti.types.ndarray(ndim=3), dy: ti.types.ndarray(ndim=3),
                        params: ti.types.ndarray(ndim=1), dw: ti.types.ndarray(ndim=3)):
    stride, low, lhs, rhs, groups = params[0], params[1], params[2], params[3], params[4]
    n_batch, length, channels = x.shape[0], x.shape[1], x.shape[2]
    taps, group_in, n_out = dw.shape[0], dw.shape[1], dw.shape[2]
    group_out = n_out // groups
    out_len = dy.shape[1]
    for k, c in ti.ndrange(taps, channels):
        g = c // group_in
        ci = c - g * group_in
        o0 = g * group_out
        for j in range(group_out):
            dw[k, ci, o0 + j] = 0
        for n in range(n_batch):
            for t in range(out_len):
                h = _input_sample(t, k, stride, low, lhs, rhs, length)
                if h >= 0:   # (taichi's `and` does not short-circuit)
                    if _nonzero(x, n, h, c):
                        v = x[n, h, c]
                        for j in range(group_out):
                            dw[k, ci, o0 + j] = dw[k, ci, o0 + j] + v * dy[n, t, o0 + j]


def threads():
    """Unused by these kernels (taichi schedules its own threads)."""
    return 1


forward = bm.XLACustomOp(cpu_kernel=_forward_kernel, name='bp_conv_ext_event_conv1d_taichi')
kernel_grad = bm.XLACustomOp(cpu_kernel=_kernel_grad_kernel,
                             name='bp_conv_ext_event_conv1d_kernel_grad_taichi')
