"""Event-driven 1-D convolution: work proportional to the number of nonzero inputs.

For every nonzero input ``x[n, h, c]`` only the products ``x[n, h, c] * w[k, c, :]`` for the
output samples that input reaches are formed. With spikes (``bool`` input, or 0/1 values)
and a spike density ``p`` that is ``p`` times the work of a dense convolution, with no
im2col copy.

The operation is a pair of JAX primitives (the convolution and its kernel gradient) with
rules for JVP, transposition (reverse mode with respect to the kernel and the input) and
``vmap``, written once here. Their kernels come from whichever runtime the installed
BrainPy generation uses, each in its own module with the same names:

- :mod:`._event_numba`: numba kernels through ``brainevent.XLACustomKernel`` (BrainPy 2.7+);
- :mod:`._event_taichi`: taichi kernels through ``brainpy.math.XLACustomOp``, run by
  ``brainpylib`` (BrainPy 2.6);
- :mod:`._event_jax`: pure-JAX kernels, used when neither is installed.

The hand-written kernels run on the CPU; every runtime registers the pure-JAX kernels of
:mod:`._event_jax` for the other platforms (GPUs, TPUs), so the event path lowers and runs
everywhere.

A runtime module provides ``AUTO`` (the platforms where ``backend='auto'`` may choose its
kernels: where they were measured to beat the dense path), ``KERNELS`` (the kernel that runs
on each platform), ``forward`` and ``kernel_grad`` (called as
``prim(x, w_or_dy, params, outs=[...], **static)``, returning a list),
``define_rules(prim, jvp, transpose, batching)`` and ``threads()``. ``params`` is an
``int32`` vector ``(stride, low, lhs_dilation, rhs_dilation, groups, threads())``; the static
parameters include the matmul precision the call was made under.
"""
import contextlib
import functools
import importlib.util

import jax
import jax.numpy as jnp
from jax.interpreters import ad

from . import _dense

#: Runtime packages in the order they are preferred, with their kernel modules; the pure-JAX
#: kernels serve when none is installed.
_RUNTIMES = (('brainevent', '_event_numba'), ('brainpylib', '_event_taichi'), ('jax', '_event_jax'))
_PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')
_forced = None


@functools.lru_cache(maxsize=None)
def _installed():
    for package, _ in _RUNTIMES:
        if importlib.util.find_spec(package) is not None:
            return package


def runtime_name():
    """The package whose kernels the event-driven path uses: ``'brainevent'``,
    ``'brainpylib'`` or ``'jax'`` (the pure-JAX kernels, when neither is installed)."""
    return _forced or _installed()


@contextlib.contextmanager
def forced_runtime(package: str):
    """Trace the event path with the kernels of ``package`` (one of the runtime packages,
    installed) inside the ``with`` block: how the tests run the pure-JAX kernels on the
    CPU through the same rules. Programs traced inside the block keep those kernels."""
    global _forced
    if package not in dict(_RUNTIMES):
        raise ValueError(f"`package` (={package!r}) must be one of "
                         f"{', '.join(repr(p) for p, _ in _RUNTIMES)}.")
    _module(package)
    previous, _forced = _forced, package
    try:
        yield
    finally:
        _forced = previous


def auto_platforms() -> tuple:
    """The platforms where ``backend='auto'`` may choose the event-driven path: those whose
    installed event kernels were measured to beat the dense path there."""
    return tuple(_runtime().AUTO)


def kernel_name(platform: str) -> str:
    """The event kernel that runs on ``platform`` (``'cpu'``, ``'cuda'``, ``'rocm'``,
    ``'tpu'``)."""
    return _runtime().KERNELS[platform]


@functools.lru_cache(maxsize=None)
def _module(package):
    module = importlib.import_module('.' + dict(_RUNTIMES)[package], __package__)
    _register(module)
    return module


def _runtime():
    return _module(runtime_name())


def _static(kwargs):
    return {name: kwargs[name] for name in ('stride', 'low', 'high', 'lhs_dilation',
                                            'rhs_dilation', 'groups', 'out_len', 'precision')}


def _spec(stride, low, high, lhs_dilation, rhs_dilation, groups, precision, **kwargs):
    return _dense.ConvSpec(stride, (low, high), lhs_dilation, rhs_dilation, groups, 'xla')


def _dense_conv(x, w, kwargs):
    """The dense convolution the rules use, under the matmul precision of the bound call."""
    with jax.default_matmul_precision(kwargs['precision']):
        return _dense.conv(x, w, _spec(**kwargs))


def _params(stride, low, lhs_dilation, rhs_dilation, groups, **kwargs):
    return jnp.asarray([stride, low, lhs_dilation, rhs_dilation, groups, _runtime().threads()],
                       dtype=jnp.int32)


def _bind(x, w, params, **static):
    out = jax.ShapeDtypeStruct((x.shape[0], static['out_len'], w.shape[2]), w.dtype)
    return _runtime().forward(x, w, params, outs=[out], **static)[0]


def _bind_kernel_grad(x, dy, params, w_aval, **static):
    out = jax.ShapeDtypeStruct(w_aval.shape, w_aval.dtype)
    return _runtime().kernel_grad(x, dy, params, outs=[out], **static)[0]


def _jvp_x(x_dot, x, w, params, **kwargs):
    # Linear in x: a dense convolution of the (dense) tangent.
    return [_dense_conv(x_dot.astype(w.dtype), w, kwargs)]


def _jvp_w(w_dot, x, w, params, **kwargs):
    return [_bind(x, w_dot, params, **_static(kwargs))]


def _transpose(ct, x, w, params, **kwargs):
    ct = ct[0]
    if ad.is_undefined_primal(w):
        if type(ct) is ad.Zero:
            return None, ad.Zero(w.aval), None
        return None, _bind_kernel_grad(x, ct, params, w.aval, **_static(kwargs)), None
    if type(ct) is ad.Zero:
        return ad.Zero(x.aval), None, None
    zeros = jnp.zeros(x.aval.shape, w.dtype)
    dx = jax.linear_transpose(lambda v: _dense_conv(v, w, kwargs), zeros)(ct)[0]
    return dx.astype(x.aval.dtype), None, None


def _batch(args, axes, **kwargs):
    x, w, params = args
    x_axis, w_axis, _ = axes
    static = _static(kwargs)
    if w_axis is None:
        # Fold the mapped axis into the batch axis: one call.
        x = jnp.moveaxis(x, x_axis, 0)
        lead = x.shape[:2]
        y = _bind(x.reshape((-1,) + x.shape[2:]), w, params, **static)
        return [y.reshape(lead + y.shape[1:])], [0]
    # A batch of kernels: one call per kernel.
    w = jnp.moveaxis(w, w_axis, 0)
    if x_axis is None:
        y = jax.lax.map(lambda wi: _bind(x, wi, params, **static), w)
    else:
        x = jnp.moveaxis(x, x_axis, 0)
        y = jax.lax.map(lambda xw: _bind(xw[0], xw[1], params, **static), (x, w))
    return [y], [0]


def _kernel_grad_jvp_x(x_dot, x, dy, params, *, outs, **kwargs):
    # Linear in x as well: the kernel gradient of the (dense) tangent, on the dense path.
    zeros = jnp.zeros(outs[0].shape, outs[0].dtype)
    conv = lambda w: _dense_conv(x_dot.astype(w.dtype), w, kwargs)
    return [jax.linear_transpose(conv, zeros)(dy)[0]]


def _kernel_grad_jvp_dy(dy_dot, x, dy, params, *, outs, **kwargs):
    return [_bind_kernel_grad(x, dy_dot, params, outs[0], **_static(kwargs))]


def _kernel_grad_transpose(ct, x, dy, params, **kwargs):
    # dw = K(x)^T dy is linear in dy; its transpose maps a kernel cotangent back through
    # the forward convolution.
    ct = ct[0]
    if type(ct) is ad.Zero:
        return None, ad.Zero(dy.aval), None
    return None, _bind(x, ct, params, **_static(kwargs)), None


def _kernel_grad_batch(args, axes, **kwargs):
    x, dy, params = args
    x_axis, dy_axis, _ = axes
    w_aval = kwargs['outs'][0]
    static = _static(kwargs)
    size = x.shape[x_axis] if x_axis is not None else dy.shape[dy_axis]
    x = jnp.broadcast_to(x, (size,) + x.shape) if x_axis is None else jnp.moveaxis(x, x_axis, 0)
    dy = jnp.broadcast_to(dy, (size,) + dy.shape) if dy_axis is None else \
        jnp.moveaxis(dy, dy_axis, 0)
    dw = jax.lax.map(lambda a: _bind_kernel_grad(a[0], a[1], params, w_aval, **static), (x, dy))
    return [dw], [0]


def _register(module):
    module.define_rules(module.forward, jvp=(_jvp_x, _jvp_w, None), transpose=_transpose,
                        batching=_batch)
    module.define_rules(module.kernel_grad, jvp=(_kernel_grad_jvp_x, _kernel_grad_jvp_dy, None),
                        transpose=_kernel_grad_transpose, batching=_kernel_grad_batch)


def conv(x, w, spec: _dense.ConvSpec, out_len: int):
    """Event-driven convolution of ``[N, H, C_in]`` input (any dtype; zeros are skipped)."""
    static = dict(stride=spec.stride, low=spec.padding[0], high=spec.padding[1],
                  lhs_dilation=spec.lhs_dilation, rhs_dilation=spec.rhs_dilation,
                  groups=spec.groups, out_len=out_len,
                  precision=jax.config.jax_default_matmul_precision)
    return _bind(x, w, _params(**static), **static)
