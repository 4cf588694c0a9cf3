"""Event-driven kernels for BrainPy 2.7 and later: numba, through brainevent.

Scatter form: for every nonzero input ``x[n, h, c]`` the forward kernel adds
``x[n, h, c] * w[k, c, :]`` to the output sample that tap ``k`` reaches. The kernels are
registered as ``brainevent.XLACustomKernel`` primitives, which reach numba through the XLA
FFI, and called by the CPU lowering of the event primitives (``bp_conv_ext.event.primitive``),
where their differentiation, batching and sharding rules are.
"""
import brainevent
import numba
import numpy as np

from ..registry import KernelParams

# Where each field of ``params`` (a KernelParams vector) sits.
_STRIDE, _LOW, _LHS, _RHS, _GROUPS, _THREADS = (
    KernelParams._fields.index(name)
    for name in ('stride', 'low', 'lhs_dilation', 'rhs_dilation', 'groups', 'threads'))


# Reassociation and contraction for vectorised sums, but no "no NaN / no inf" assumptions:
# NaN and inf inputs must reach the outputs as they do on the dense path.
_FASTMATH = {'reassoc', 'contract', 'nsz', 'arcp'}


@numba.njit(inline='always')
def _active(xh, index, values):
    """Gather the nonzero entries of one input sample; returns how many there are."""
    count = 0
    for c in range(xh.shape[0]):
        if xh[c] != 0:
            index[count] = c
            values[count] = xh[c]
            count += 1
    return count


@numba.njit(inline='always')
def _reached(position, k, rhs, stride, out_len):
    """Output sample that tap ``k`` of an input at dilated, padded ``position`` reaches:
    ``-1`` if none, ``-2`` if no later tap can reach one either."""
    t = position - k * rhs
    if t < 0:
        return -2
    if t % stride != 0 or t // stride >= out_len:
        return -1
    return t // stride


@numba.njit(parallel=True, fastmath=_FASTMATH, cache=True)
def _forward_kernel(x, w, params, y):
    # x [N, H, C]; w [K, C // groups, O]; y [N, H_out, O]; params: a KernelParams vector
    stride, low, lhs, rhs = params[_STRIDE], params[_LOW], params[_LHS], params[_RHS]
    groups = params[_GROUPS]
    n_batch, length, channels = x.shape
    taps, group_in, n_out = w.shape
    group_out = n_out // groups
    out_len = y.shape[1]
    for n in numba.prange(n_batch):
        yn = y[n]
        yn[:] = 0.0
        index = np.empty(channels, np.int64)
        values = np.empty(channels, w.dtype)
        for h in range(length):
            count = _active(x[n, h], index, values)
            if count == 0:
                continue
            position = h * lhs + low
            for k in range(taps):
                t = _reached(position, k, rhs, stride, out_len)
                if t == -2:
                    break
                if t < 0:
                    continue
                row = yn[t]
                for i in range(count):
                    c = index[i]
                    g = c // group_in
                    o0 = g * group_out
                    # Slices starting at 0 keep the innermost loop vectorised.
                    wk = w[k, c - g * group_in, o0:o0 + group_out]
                    out = row[o0:o0 + group_out]
                    v = values[i]
                    for o in range(group_out):
                        out[o] += v * wk[o]


@numba.njit(parallel=True, fastmath=_FASTMATH, cache=True)
def _kernel_grad_kernel(x, dy, params, dw):
    # dw[k, c', o] = sum over nonzero x[n, h, c] of x * dy[n, t, o], t the output that input
    # reaches through tap k; params[_THREADS] partial sums are accumulated in parallel.
    stride, low, lhs, rhs = params[_STRIDE], params[_LOW], params[_LHS], params[_RHS]
    groups = params[_GROUPS]
    n_batch, length, channels = x.shape
    taps, group_in, n_out = dw.shape
    group_out = n_out // groups
    out_len = dy.shape[1]
    chunks = min(n_batch, params[_THREADS])
    partial = np.zeros((chunks, taps, group_in, n_out), dtype=dw.dtype)
    for chunk in numba.prange(chunks):
        acc = partial[chunk]
        index = np.empty(channels, np.int64)
        values = np.empty(channels, dw.dtype)
        for n in range(chunk, n_batch, chunks):
            for h in range(length):
                count = _active(x[n, h], index, values)
                if count == 0:
                    continue
                position = h * lhs + low
                for k in range(taps):
                    t = _reached(position, k, rhs, stride, out_len)
                    if t == -2:
                        break
                    if t < 0:
                        continue
                    row = dy[n, t]
                    for i in range(count):
                        c = index[i]
                        g = c // group_in
                        o0 = g * group_out
                        target = acc[k, c - g * group_in, o0:o0 + group_out]
                        source = row[o0:o0 + group_out]
                        v = values[i]
                        for o in range(group_out):
                            target[o] += v * source[o]
    dw[:] = 0.0
    for chunk in range(chunks):
        dw += partial[chunk]


def threads():
    """Partial sums the kernel-gradient kernel accumulates in parallel."""
    return numba.get_num_threads()


def _generator(kernel):
    def generate(outs, **kwargs):
        return brainevent.numba_kernel(kernel, outs=outs)
    return generate


forward = brainevent.XLACustomKernel('bp_conv_ext_event_conv1d_numba')
forward.def_numba_kernel(_generator(_forward_kernel))

kernel_grad = brainevent.XLACustomKernel('bp_conv_ext_event_conv1d_kernel_grad_numba')
kernel_grad.def_numba_kernel(_generator(_kernel_grad_kernel))
