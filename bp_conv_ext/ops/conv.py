"""The 1-D convolution: checks its arguments once, plans the call once, and dispatches it to
the dense algorithms or the event-driven primitives, by platform and spike density."""
import contextlib
from collections.abc import Callable
from typing import NamedTuple, cast

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike, DTypeLike

from ..core import args as _args
from ..core import dense as _dense
from ..core.args import ConvOptions, PaddingLike
from ..event import primitive as _event
from ..event import registry


def estimate_density(x: jax.Array, samples: int = 4096) -> jax.Array:
    """Fraction of nonzero entries, from an evenly strided sample of about ``samples`` of them.

    Only the choice between two equal results depends on it, so a sample is enough, and it
    costs a fraction of a full pass over the input.
    """
    flat = x.reshape(-1)
    return jnp.mean(flat[::max(1, flat.size // samples)].astype(jnp.float32))


#: The dense algorithm of ``backend='auto'`` and ``'dense'`` on CUDA GPUs, for every shape.
#: XLA's convolutions are cuDNN's there, and cuDNN's autotuner, trying algorithms when a
#: program is compiled, took up to 101 GiB of an H200 for a folded sequence (``T * B`` = 3200
#: samples; forward, input and kernel gradients alike) and kept it in JAX's memory pool; the
#: ``'im2col'`` matmuls ran as fast in 0.6 GiB (``benchmarks/gpu_memory.py``,
#: docs/performance.md).
CUDA_ALGORITHM = 'im2col'


class Plan(NamedTuple):
    """What one call computes from its options and shapes, once: the padding the padding mode
    adds from the input's own samples (``None``: none), the dtype it computes in, the dense
    configuration (padding resolved, algorithm and kernel-gradient form chosen), the one of
    CUDA GPUs, the output length and whether ``'auto'`` checks the spike density."""
    mode_pads: tuple[int, int] | None
    dtype: jnp.dtype
    spec: _dense.ConvSpec
    cuda_spec: _dense.ConvSpec
    out_len: int
    checks_density: bool

    def algorithm(self, platform: str) -> str:
        """The dense algorithm that runs on ``platform``."""
        return (self.cuda_spec if platform == 'cuda' else self.spec).algorithm


def plan(options: ConvOptions, x_shape: tuple[int, ...], w_shape: tuple[int, ...],
         x_dtype: DTypeLike, w_dtype: DTypeLike) -> Plan:
    """Plan a convolution of ``[H, C]`` or ``[B, H, C]`` input; raises ``ValueError`` when the
    input is too short for the kernel, or the padding too wide for the padding mode.

    ``'auto'`` checks the density of ``bool`` input, except for tiny problems (which do not
    pay for the check) and one input channel (where the dense ``'xla2d'`` path is as fast as
    the event path even at 1% density).
    """
    o = options
    length, kernel_size = x_shape[-2], w_shape[0]
    out_len = _args.output_length(length, kernel_size, o.stride, o.padding, o.lhs_dilation,
                                  o.rhs_dilation)
    pads = _args.resolve_padding(o.padding, length, kernel_size, o.stride, o.lhs_dilation,
                                 o.rhs_dilation)
    mode_pads: tuple[int, int] | None = None
    if o.padding_mode != 'zeros' and pads != (0, 0):
        # Pad with the input's own samples, then convolve without padding (any backend).
        _args.check_padding_fits(o.padding_mode, pads, length)
        mode_pads, pads, length = pads, (0, 0), length + sum(pads)
    batch = x_shape[0] if len(x_shape) == 3 else 1
    # (batch, length, in_channels, out_channels, kernel_size, groups), as the rules take it
    shape = (batch, length, x_shape[-1], w_shape[2], kernel_size, o.groups)
    algorithm, kernel_grad = _dense.choose(*shape)
    if o.backend in _dense.ALGORITHMS:      # a dense algorithm by name
        algorithm = o.backend
    spec = _dense.ConvSpec(o.stride, pads, o.lhs_dilation, o.rhs_dilation, o.groups, algorithm,
                           kernel_grad)
    cuda_spec = spec
    if o.backend in ('auto', 'dense'):
        cuda_spec = spec._replace(algorithm=CUDA_ALGORITHM, kernel_grad=CUDA_ALGORITHM)
    checks = (o.backend == 'auto' and jnp.dtype(x_dtype) == jnp.bool_ and algorithm != 'xla2d'
              and not _dense.is_small(*shape))
    return Plan(mode_pads, _dense.compute_dtype(x_dtype, w_dtype), spec, cuda_spec, out_len,
                checks)


def _pad_by_mode(x: jax.Array, plan: Plan, padding_mode: str) -> jax.Array:
    if plan.mode_pads is None:
        return x
    widths = [(0, 0)] * (x.ndim - 2) + [plan.mode_pads, (0, 0)]
    return jnp.pad(x, widths, mode=_args.PADDING_MODES[padding_mode])


def apply(x: jax.Array, w: jax.Array, b: jax.Array | None, options: ConvOptions,
          kernels: str | None = None) -> jax.Array:
    """Convolve ``[H, C]`` or ``[B, H, C]`` input with validated arguments (as
    ``core.args.conv_arguments`` returns them), the event-driven path on the CPU with the
    kernel set ``kernels`` (``None``: the default)."""
    p = plan(options, x.shape, w.shape, x.dtype, w.dtype)
    x = _pad_by_mode(x, p, options.padding_mode)
    unbatched = x.ndim == 2
    y = _planned(x[None] if unbatched else x, w, b, p, options.backend, kernels)
    return y[0] if unbatched else y


def _planned(x: jax.Array, w: jax.Array, b: jax.Array | None, plan: Plan, backend: str,
             kernels: str | None = None) -> jax.Array:
    """The batched convolution ``[B, H, C_in]`` of a plan; ``b``: ``None`` or broadcastable
    to ``[1, C_out]``."""
    dtype = plan.dtype
    w = w.astype(dtype)

    def dense(x: jax.Array, spec: _dense.ConvSpec = plan.spec) -> jax.Array:
        return _dense.conv(x.astype(dtype), w, spec)

    def event(x: jax.Array) -> jax.Array:
        # The event path skips zero inputs, but on the dense path 0 * inf and 0 * nan are
        # NaN: the event primitives hand a kernel (and, in their gradients, a cotangent) that
        # is not all finite to the dense computation, inside the program.
        conv = _event.conv(x, w, plan.spec, plan.out_len, kernels)      # not annotated there
        return cast(jax.Array, conv)

    def checked(x: jax.Array) -> jax.Array:
        # Runs only on auto_platforms, whose kernels have an auto_density (not None).
        threshold = cast(float, registry.running('cpu', kernels).auto_density)
        y = lax.cond(estimate_density(x) <= threshold, event, dense, x)     # lax.cond: Any
        return cast(jax.Array, y)

    # The density check only where the event kernels win, and CUDA GPUs' own dense
    # algorithm; the platform is known when the program is lowered, and the other branches
    # are dropped then.
    branches: dict[str, Callable[[jax.Array], jax.Array]] = {
        p: checked for p in (registry.auto_platforms(kernels) if plan.checks_density else ())}
    if plan.cuda_spec != plan.spec:
        branches['cuda'] = lambda x: dense(x, plan.cuda_spec)
    if backend == 'event':
        y = event(x)
    elif branches:
        y = lax.platform_dependent(x, **branches, default=dense)
    else:
        y = dense(x)
    if b is not None:
        y = y + jnp.reshape(b, (-1,)).astype(dtype)
    return y


_PYTORCH_NAMES = {
    **_args.PYTORCH_NAMES,
    'input': "here it is `x`", 'weight': "here it is `w`",
    'bias': "here it is `b` (the bias array, one value per output channel)",
}


@_args.refuse_pytorch_names(_PYTORCH_NAMES)
def conv1d(x: ArrayLike, w: ArrayLike, b: ArrayLike | None = None, *, stride: int = 1,
           padding: PaddingLike = 'SAME', lhs_dilation: int = 1, rhs_dilation: int = 1,
           groups: int = 1, mask: ArrayLike | None = None, backend: str = 'auto',
           padding_mode: str = 'zeros', kernels: str | None = None) -> jax.Array:
    """Channels-last 1-D convolution as a pure function.

    Parameters
    ----------
    x : ArrayLike
        Input of shape ``[H, C_in]`` or ``[B, H, C_in]``; ``bool``/integer inputs are
        computed in the kernel's dtype.
    w : ArrayLike
        Kernel of shape ``[K, C_in // groups, C_out]``.
    b : ArrayLike, optional
        Bias of shape ``[C_out]`` or ``[1, C_out]``.
    stride, padding, lhs_dilation, rhs_dilation, groups
        As in :class:`bp_conv_ext.Conv1d`.
    mask : ArrayLike, optional
        Multiplied into the kernel before the convolution.
    backend : str
        How to compute it (all give the same numbers): ``'auto'`` (event-driven for
        ``bool`` input with at most :func:`event_density_threshold` of its entries
        ``True``, decided at run time, on the platforms whose event kernels beat the dense
        path there, today the CPU; dense otherwise), ``'dense'`` (the dense algorithm
        chosen for the shape; on CUDA GPUs ``'im2col'`` for every shape), a dense
        algorithm (``'xla'``, ``'xla2d'``, ``'im2col'``) or ``'event'`` (the event-driven
        path on every platform; any dtype). :func:`bp_conv_ext.which_backend` says which
        one runs.
    padding_mode : str
        What the padding holds, as in :class:`bp_conv_ext.Conv1d`: ``'zeros'`` (default),
        ``'reflect'``, ``'replicate'`` or ``'circular'``.
    kernels : str, optional
        The kernel set that computes the event-driven path on the CPU for this call (one of
        :func:`event_kernels`' names: ``'c++'``, ``'numba'``, ``'jax'``, or ``'triton'``,
        the CUDA GPUs' kernels in Pallas's interpreter); ``None`` (default): the one
        :func:`event_kernel` reports. Accelerators run their own.

    Returns
    -------
    jax.Array
        ``[H_out, C_out]`` or ``[B, H_out, C_out]``, with ``H_out`` given by
        :func:`bp_conv_ext.output_length`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from bp_conv_ext import conv1d
    >>> conv1d(jnp.ones((5, 1)), jnp.ones((3, 1, 1)))[:, 0].tolist()
    [2.0, 3.0, 3.0, 3.0, 2.0]
    >>> conv1d(jnp.ones((5, 1)), jnp.ones((3, 1, 1)), padding_mode='replicate')[:, 0].tolist()
    [3.0, 3.0, 3.0, 3.0, 3.0]
    """
    x, w, b, options = _args.conv_arguments(
        x, w, b, stride=stride, padding=padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, groups=groups, mask=mask, backend=backend,
        padding_mode=padding_mode)
    if kernels is not None:
        registry.cpu_kernels(kernels)
    return apply(x, w, b, options, kernels)


def which(x: jax.Array, w: jax.Array, options: ConvOptions, platform: str | None = None,
          kernels: str | None = None) -> str:
    """What :func:`apply` computes ``x`` with on ``platform``, for concrete input: ``'event'``
    or the dense algorithm's name (validated arguments, as :func:`apply` takes them)."""
    platform = registry.check_platform(platform)
    p = plan(options, x.shape, w.shape, x.dtype, w.dtype)
    if options.backend == 'event':
        return 'event'
    if p.checks_density and platform in registry.auto_platforms(kernels):
        threshold = registry.running(platform, kernels).auto_density
        density = float(estimate_density(_pad_by_mode(x, p, options.padding_mode)))
        if threshold is not None and density <= threshold:
            return 'event'
    return p.algorithm(platform)


@_args.refuse_pytorch_names(_PYTORCH_NAMES)
def which_backend(x: ArrayLike, w: ArrayLike, *, stride: int = 1, padding: PaddingLike = 'SAME',
                  lhs_dilation: int = 1, rhs_dilation: int = 1, groups: int = 1,
                  backend: str = 'auto', padding_mode: str = 'zeros',
                  platform: str | None = None, kernels: str | None = None) -> str:
    """What :func:`conv1d` computes this input with on ``platform``.

    Takes the arguments of :func:`conv1d` (the input must be concrete: under
    ``backend='auto'`` the choice depends on its density, and on the CPU on the threshold of
    the kernel set ``kernels`` computes with) and the platform (``'cpu'``, ``'cuda'``,
    ``'rocm'``, ``'tpu'``, ``'gpu'``; default: JAX's default backend).

    Returns
    -------
    str
        ``'event'`` (the event-driven path; :func:`event_kernel` says which kernel runs it
        there) or the dense algorithm: ``'xla'``, ``'xla2d'`` or ``'im2col'``.

    Examples
    --------
    >>> import numpy as np
    >>> from bp_conv_ext import which_backend
    >>> spikes = np.random.default_rng(0).random((32, 200, 16)) < 0.01
    >>> w = np.ones((3, 16, 16), np.float32)
    >>> which_backend(spikes, w, platform='cuda')     # 'auto' on a GPU: the dense path
    'im2col'
    >>> which_backend(spikes, w, backend='event', platform='cuda')
    'event'
    >>> which_backend(spikes.astype(np.float32), w, platform='cpu')    # float input: dense
    'im2col'
    """
    x, w, _, options = _args.conv_arguments(
        x, w, stride=stride, padding=padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, groups=groups, backend=backend, padding_mode=padding_mode)
    if kernels is not None:
        registry.cpu_kernels(kernels)
    return which(x, w, options, platform, kernels)


def event_kernel(platform: str | None = None) -> str:
    """The kernel that runs the event-driven path on ``platform`` (default: JAX's default
    backend): ``'c++'`` (CPU: C++ kernels through the XLA FFI, built with the machine's
    compiler), ``'numba'`` (CPU without a working compiler, BrainPy 2.7+ with brainevent),
    ``'triton'`` (Pallas kernels through Triton: NVIDIA GPUs) or ``'jax'`` (the pure-JAX
    kernels: AMD GPUs, TPUs, and the CPU when no other runtime is available): the set a call
    that names no ``kernels`` runs there.

    Examples
    --------
    >>> from bp_conv_ext import event_kernel
    >>> event_kernel('cuda'), event_kernel('tpu')
    ('triton', 'jax')
    """
    return registry.running(registry.check_platform(platform)).name


def event_kernels(platform: str | None = None) -> tuple[registry.KernelSet, ...]:
    """The kernel sets that can run the event-driven path on ``platform`` here (default: JAX's
    default backend), one record each.

    On the CPU: the available ones in the order the CPU prefers them (``'c++'``, ``'numba'``,
    ``'jax'``; the first runs unless a call's ``kernels`` or :func:`use_event_kernels`
    chooses another), then ``'triton'``, the NVIDIA GPUs' kernels, which run there in Pallas's
    interpreter (slowly: for tests). On an accelerator: the one set that runs there.

    Returns
    -------
    tuple of KernelSet
        Frozen records with the fields ``name`` (what :func:`event_kernel` reports and
        ``kernels=`` and :func:`use_event_kernels` take), ``module`` (in
        ``bp_conv_ext.event.kernels``),
        ``platforms`` (those it serves), ``auto_density`` (its :func:`event_density_threshold`;
        ``None``: ``'auto'`` stays dense), ``sharding`` (``'split'``: over the batch by the
        event primitives' sharding rule; ``'xla'``: by XLA), ``package`` (the package it
        needs, if any), ``builds`` (whether it needs its library built with the machine's
        C++17 compiler), ``forceable`` (whether ``kernels=`` and :func:`use_event_kernels`
        take it) and the spiking step's ``operation``, ``by_default`` and ``capability`` (here
        ``'conv'``, ``True`` and ``None``).

    Raises
    ------
    ValueError
        For a platform that is not ``'cpu'``, ``'cuda'``, ``'rocm'``, ``'tpu'``, ``'gpu'`` or
        ``None``.

    Examples
    --------
    >>> from bp_conv_ext import event_kernels
    >>> [k.name for k in event_kernels('tpu')]
    ['jax']
    >>> cuda, = event_kernels('cuda')
    >>> cuda.name, cuda.auto_density, cuda.sharding
    ('triton', None, 'split')
    >>> [k.name for k in event_kernels('cpu')][-2:]
    ['jax', 'triton']
    """
    return registry.runnable(registry.check_platform(platform))


def use_event_kernels(name: str) -> contextlib.AbstractContextManager[registry.KernelSet]:
    """A context manager: the event-driven path runs on the CPU with the kernel set ``name``
    for the programs traced inside its ``with`` block, where a call names no ``kernels``
    (the process's default, which :func:`conv1d`'s ``kernels`` overrides for one call).

    ``name`` is one of ``'c++'``, ``'numba'``, ``'jax'`` or ``'triton'`` (the NVIDIA GPUs'
    kernels, in Pallas's interpreter): how the accelerators' kernels, or the CPU's fallback,
    are checked on the CPU through the same primitives. Programs traced inside the block keep
    those kernels when they run later; programs traced (or cached by ``jax.jit``) outside it
    keep theirs. Inside the block :func:`event_kernel` and :func:`event_density_threshold`
    report the chosen set on the CPU. Accelerators are not affected. Blocks nest.

    Raises
    ------
    ValueError
        For a name that is not one of those, naming the ones accepted; for kernels that are
        not available here, saying why (the package they need is missing; the C++ kernels
        could not be built).

    Examples
    --------
    >>> import numpy as np
    >>> from bp_conv_ext import conv1d, event_kernel, use_event_kernels
    >>> x = np.random.default_rng(0).random((2, 20, 4)) < 0.1
    >>> w = np.ones((3, 4, 4), np.float32)
    >>> with use_event_kernels('jax'):
    ...     y = conv1d(x, w, backend='event')
    ...     event_kernel('cpu')
    'jax'
    >>> np.allclose(y, conv1d(x, w, backend='dense'))
    True
    """
    return registry.use(name)


def event_density_threshold(platform: str | None = None) -> float | None:
    """The spike density at or below which ``backend='auto'`` runs ``bool`` input
    event-driven on ``platform`` (default: JAX's default backend), estimated at run time from
    a sample of the input; ``None`` where ``'auto'`` always runs the dense path (GPUs and
    TPUs, whose event kernels are not yet measured to win, and the CPU without a compiler or
    brainevent, whose pure-JAX kernels do dense work). It is a property of the kernels that
    run there: the C++ kernels 0.1, their numba fallback 0.03 (measured in
    docs/performance.md).

    Examples
    --------
    >>> from bp_conv_ext import event_density_threshold
    >>> event_density_threshold('cuda') is None
    True
    """
    return registry.running(registry.check_platform(platform)).auto_density
