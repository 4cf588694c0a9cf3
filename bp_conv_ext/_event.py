"""Event-driven 1-D convolution: work proportional to the number of nonzero inputs.

For every nonzero input ``x[n, h, c]`` the kernel adds ``x[n, h, c] * w[k, c, :]`` to
the output samples that input reaches, one per tap ``k``. With spikes (``bool``
input, or 0/1 values) and a spike density ``p`` that is ``p`` times the work of a
dense convolution, with no im2col copy and no multiplications.

It is one JAX primitive (``brainevent.XLACustomKernel``) with numba CPU kernels reached
through the XLA FFI, and rules for JVP, transposition (so reverse mode works with
respect to the kernel and the input) and ``vmap``. It handles every stride, padding,
dilation and group option of the dense path and gives the same numbers to float32
round-off.
"""
import brainevent
import jax
import jax.numpy as jnp
import numba
import numpy as np
from jax.interpreters import ad

from . import _dense


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
    # x [N, H, C]; w [K, C // groups, O]; y [N, H_out, O];
    # params (stride, low, lhs_dilation, rhs_dilation, groups, threads)
    stride, low, lhs, rhs, groups = params[0], params[1], params[2], params[3], params[4]
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
    # reaches through tap k; params[5] partial sums are accumulated in parallel.
    stride, low, lhs, rhs, groups = params[0], params[1], params[2], params[3], params[4]
    n_batch, length, channels = x.shape
    taps, group_in, n_out = dw.shape
    group_out = n_out // groups
    out_len = dy.shape[1]
    chunks = min(n_batch, params[5])
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


def _params(stride, low, lhs_dilation, rhs_dilation, groups):
    return jnp.asarray([stride, low, lhs_dilation, rhs_dilation, groups,
                        numba.get_num_threads()], dtype=jnp.int32)


def _forward_generator(stride, low, lhs_dilation, rhs_dilation, groups, outs, **kwargs):
    def run(x, w):
        params = _params(stride, low, lhs_dilation, rhs_dilation, groups)
        return brainevent.numba_kernel(_forward_kernel, outs=outs)(x, w, params)
    return run


def _kernel_grad_generator(stride, low, lhs_dilation, rhs_dilation, groups, outs, **kwargs):
    def run(x, dy):
        params = _params(stride, low, lhs_dilation, rhs_dilation, groups)
        return brainevent.numba_kernel(_kernel_grad_kernel, outs=outs)(x, dy, params)
    return run


event_conv_p = brainevent.XLACustomKernel('bp_conv_ext_event_conv1d')
event_conv_p.def_numba_kernel(_forward_generator)

kernel_grad_p = brainevent.XLACustomKernel('bp_conv_ext_event_conv1d_kernel_grad')
kernel_grad_p.def_numba_kernel(_kernel_grad_generator)


def _spec(stride, low, high, lhs_dilation, rhs_dilation, groups):
    return _dense.ConvSpec(stride, (low, high), lhs_dilation, rhs_dilation, groups, 'xla')


def _bind(x, w, *, stride, low, high, lhs_dilation, rhs_dilation, groups, out_len):
    out = jax.ShapeDtypeStruct((x.shape[0], out_len, w.shape[2]), w.dtype)
    return event_conv_p(x, w, outs=[out], stride=stride, low=low, high=high,
                        lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation, groups=groups,
                        out_len=out_len)


def _bind_kernel_grad(x, dy, w_aval, *, stride, low, high, lhs_dilation, rhs_dilation, groups,
                      out_len):
    out = jax.ShapeDtypeStruct(w_aval.shape, w_aval.dtype)
    return kernel_grad_p(x, dy, outs=[out], stride=stride, low=low, high=high,
                         lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation, groups=groups,
                         out_len=out_len)


def _jvp_x(x_dot, x, w, *, outs, stride, low, high, lhs_dilation, rhs_dilation, groups,
           **kwargs):
    # Linear in x: a dense convolution of the (dense) tangent.
    spec = _spec(stride, low, high, lhs_dilation, rhs_dilation, groups)
    return [_dense.conv(x_dot.astype(w.dtype), w, spec)]


def _jvp_w(w_dot, x, w, **params):
    params.pop('outs')
    params.pop('backend', None)
    return _bind(x, w_dot, **params)


event_conv_p.def_jvp_rule2(_jvp_x, _jvp_w)


def _transpose(ct, x, w, *, outs, stride, low, high, lhs_dilation, rhs_dilation, groups,
               out_len, **kwargs):
    ct = ct[0]
    params = dict(stride=stride, low=low, high=high, lhs_dilation=lhs_dilation,
                  rhs_dilation=rhs_dilation, groups=groups, out_len=out_len)
    if ad.is_undefined_primal(w):
        if type(ct) is ad.Zero:
            return x, ad.Zero(w.aval)
        return x, _bind_kernel_grad(x, ct, w.aval, **params)[0]
    if type(ct) is ad.Zero:
        return ad.Zero(x.aval), w
    spec = _spec(stride, low, high, lhs_dilation, rhs_dilation, groups)
    zeros = jnp.zeros(x.aval.shape, w.dtype)
    dx = jax.linear_transpose(lambda v: _dense.conv(v, w, spec), zeros)(ct)[0]
    return dx.astype(x.aval.dtype), w


event_conv_p.def_transpose_rule(_transpose)


def _batch(args, axes, **params):
    x, w = args
    x_axis, w_axis = axes
    if w_axis is None and x_axis is not None:
        x = jnp.moveaxis(x, x_axis, 0)
        lead = x.shape[:2]
        params.pop('outs')
        params.pop('backend', None)
        y = _bind(x.reshape((-1,) + x.shape[2:]), w, **params)[0]
        return [y.reshape(lead + y.shape[1:])], [0]
    return brainevent.general_batching_rule(event_conv_p, args, axes, **params)


event_conv_p.def_batching_rule(_batch)


def _kernel_grad_jvp_dy(dy_dot, x, dy, *, outs, **params):
    params.pop('backend', None)
    return _bind_kernel_grad(x, dy_dot, outs[0], **params)


kernel_grad_p.def_jvp_rule2(None, _kernel_grad_jvp_dy)


def _kernel_grad_transpose(ct, x, dy, *, outs, stride, low, high, lhs_dilation, rhs_dilation,
                           groups, out_len, **kwargs):
    # dw = K(x)^T dy is linear in dy; its transpose maps a kernel cotangent back through
    # the forward convolution.
    ct = ct[0]
    if type(ct) is ad.Zero:
        return x, ad.Zero(dy.aval)
    return x, _bind(x, ct, stride=stride, low=low, high=high, lhs_dilation=lhs_dilation,
                    rhs_dilation=rhs_dilation, groups=groups, out_len=out_len)[0]


kernel_grad_p.def_transpose_rule(_kernel_grad_transpose)


def conv(x, w, spec: _dense.ConvSpec, out_len: int):
    """Event-driven convolution of ``[N, H, C_in]`` input (any dtype; zeros are skipped)."""
    return _bind(x, w, stride=spec.stride, low=spec.padding[0], high=spec.padding[1],
                 lhs_dilation=spec.lhs_dilation, rhs_dilation=spec.rhs_dilation,
                 groups=spec.groups, out_len=out_len)[0]
