"""The 1-D convolution itself, as pure functions on channels-last arrays."""
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import _args, _dense, _event, _params, kernels

#: Values of ``backend``: ``'auto'``; ``'dense'`` (the dense algorithm picked by
#: :func:`_dense.choose_algorithm`); one dense algorithm by name; ``'event'``.
BACKENDS = ('auto', 'dense') + _dense.ALGORITHMS + ('event',)

def estimate_density(x, samples: int = 4096):
    """Fraction of nonzero entries, from an evenly strided sample of about ``samples`` of them.

    Only the choice between two equal results depends on it, so a sample is enough, and it
    costs a fraction of a full pass over the input.
    """
    flat = x.reshape(-1)
    return jnp.mean(flat[::max(1, flat.size // samples)].astype(jnp.float32))


def check_backend(backend) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"`backend` (={backend!r}) must be one of {', '.join(map(repr, BACKENDS))}.")
    return backend


class BackendChoice:
    """The ``backend`` attribute of the layers (both BrainPy APIs)."""

    _backend = 'auto'

    @property
    def backend(self) -> str:
        """How the convolution is computed; all choices give the same numbers.

        ``'auto'`` (default): event-driven for ``bool`` input (spikes) whose fraction of
        ``True`` entries is at most :func:`event_density_threshold` (checked at run time)
        on the platforms whose event kernels beat the dense path (the CPU), dense otherwise
        (on GPUs and TPUs).
        ``'event'``: always event-driven (on the CPU, work proportional to the nonzero
        inputs; any dtype). ``'dense'``: the dense algorithm chosen for the
        shape (on CUDA GPUs ``'im2col'`` for every shape); ``'xla'``, ``'xla2d'``,
        ``'im2col'``: that dense algorithm.
        ``which_backend`` says which one a call runs.
        """
        return self._backend

    @backend.setter
    def backend(self, value: str):
        self._backend = check_backend(value)


def as_input(x):
    """``x`` as a JAX array; a clear ``TypeError`` for ``None``, strings, objects and the
    like."""
    if x is None:
        raise TypeError("the input is None; expected an array of bool, integer or real "
                        "floating values.")
    try:
        return jnp.asarray(x)      # also takes brainpy arrays and variables
    except TypeError as err:
        dtype = x.dtype if hasattr(x, 'dtype') else np.asarray(x, dtype=object).dtype
        raise TypeError(f"the input must hold bool, integer or real floating values; got "
                        f"{type(x).__name__} with dtype {dtype}.") from err


def compute_dtype(x_dtype, w_dtype):
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


#: How a sequence ``[T, B, ...]`` is folded into one batch: ``'time'`` (``[T * B, ...]``, a
#: free reshape) or ``'batch'`` (``[B * T, ...]``, batch first, which keeps a batch split over
#: devices on each device, at the cost of two transposes).
FOLDS = ('time', 'batch')


def check_fold(fold) -> str:
    if fold not in FOLDS:
        raise ValueError(f"`fold` (={fold!r}) must be one of {', '.join(map(repr, FOLDS))}.")
    return fold


def fold_time(fn, xs, fold: str = 'time'):
    """Apply ``fn`` (stateless, batched) to a sequence ``[T, B, ...]`` in one call on the
    folded ``[T * B, ...]`` (``fold='time'``) or ``[B * T, ...]`` (``fold='batch'``)."""
    steps, batch = xs.shape[:2]
    if fold == 'time':
        y = fn(xs.reshape((steps * batch,) + xs.shape[2:]))
        return y.reshape((steps, batch) + y.shape[1:])
    y = fn(jnp.swapaxes(xs, 0, 1).reshape((batch * steps,) + xs.shape[2:]))
    return jnp.swapaxes(y.reshape((batch, steps) + y.shape[1:]), 0, 1)


#: The dense algorithm of ``backend='auto'`` and ``'dense'`` on CUDA GPUs, for every shape.
#: XLA's convolutions are cuDNN's there, and cuDNN's autotuner, trying algorithms when a
#: program is compiled, took up to 101 GiB of an H200 for a folded sequence (``T * B`` = 3200
#: samples; forward, input and kernel gradients alike) and kept it in JAX's memory pool; the
#: ``'im2col'`` matmuls ran as fast in 0.6 GiB (``benchmarks/gpu_memory.py``,
#: docs/performance.md).
CUDA_ALGORITHM = 'im2col'


def plan(shape, x_dtype, backend: str):
    """The dense algorithm for a problem, and whether ``backend`` checks the density.

    ``shape`` is ``(batch, length, in_channels, out_channels, kernel_size, groups)``, as the
    rules take it. ``'auto'`` checks the density of ``bool`` input, except for tiny problems
    (which do not pay for the check) and one input channel (where the dense ``'xla2d'`` path
    is as fast as the event path even at 1% density).
    """
    algorithm = backend if backend in _dense.ALGORITHMS else _dense.choose_algorithm(*shape)
    checks = (backend == 'auto' and np.dtype(x_dtype) == np.bool_ and algorithm != 'xla2d'
              and not _dense.is_small(*shape))
    return algorithm, checks


def conv_explicit(x, w, b, *, stride: int, padding, lhs_dilation: int, rhs_dilation: int,
                  groups: int, backend: str = 'auto'):
    """Batched convolution with already-validated arguments.

    ``x``: ``[B, H, C_in]``; ``w``: ``[K, C_in // groups, C_out]``; ``b``: ``None`` or
    broadcastable to ``[1, C_out]``; ``padding``: a resolved ``(low, high)`` pair;
    ``backend``: one of :data:`BACKENDS`.
    """
    dtype = compute_dtype(x.dtype, w.dtype)
    w = w.astype(dtype)
    # (batch, length, in_channels, out_channels, kernel_size, groups), as the rules take it
    shape = x.shape + (w.shape[2], w.shape[0], groups)
    algorithm, checks_density = plan(shape, x.dtype, backend)
    spec = _dense.ConvSpec(stride, tuple(padding), lhs_dilation, rhs_dilation, groups, algorithm,
                           _dense.choose_kernel_grad(x.shape[0] * x.shape[1], x.shape[2],
                                                     w.shape[0], groups))

    def dense(x):
        return _dense.conv(x.astype(dtype), w, spec)

    def dense_cuda(x):
        return _dense.conv(x.astype(dtype), w,
                           spec._replace(algorithm=CUDA_ALGORITHM, kernel_grad=CUDA_ALGORITHM))

    def event(x):
        out_len = _args.output_length(x.shape[1], w.shape[0], stride, tuple(padding),
                                      lhs_dilation, rhs_dilation)
        # The event path skips zero inputs, but on the dense path 0 * inf and 0 * nan are
        # NaN: with a kernel that is not all finite, the dense path gives the answer.
        return lax.cond(jnp.all(jnp.isfinite(w)),
                        lambda x: _event.conv(x, w, spec, out_len), dense, x)

    def checked(x):
        threshold = kernels.running('cpu').auto_density
        return lax.cond(estimate_density(x) <= threshold, event, dense, x)

    # The density check only where the event kernels win, and CUDA GPUs' own dense
    # algorithm; the platform is known when the program is lowered, and the other branches
    # are dropped then.
    branches = {p: checked for p in (kernels.auto_platforms() if checks_density else ())}
    if backend in ('auto', 'dense') and (algorithm, spec.kernel_grad) != (CUDA_ALGORITHM,) * 2:
        branches['cuda'] = dense_cuda
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
def conv1d(x, w, b=None, *, stride: int = 1, padding='SAME', lhs_dilation: int = 1,
           rhs_dilation: int = 1, groups: int = 1, mask=None, backend: str = 'auto',
           padding_mode: str = 'zeros'):
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
    x, w, b, options = arguments(x, w, b, stride=stride, padding=padding,
                                 lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                                 groups=groups, mask=mask, backend=backend,
                                 padding_mode=padding_mode)
    return apply(x, w, b, **options)


def arguments(x, w, b=None, *, stride, padding, lhs_dilation, rhs_dilation, groups, mask=None,
              backend, padding_mode):
    """Check the arguments of :func:`conv1d`; returns ``x``, ``w`` (masked), ``b`` as arrays
    and the canonical keyword arguments of :func:`apply`."""
    x = as_input(x)
    w = _real_floats('w', w)
    if x.ndim not in (2, 3):
        raise ValueError(f"`x` must have shape [H, C] or [B, H, C], got shape {x.shape}.")
    if w.ndim != 3 or 0 in (w.shape[0], w.shape[2]):
        raise ValueError(f"`w` must have shape [K, C_in // groups, C_out] with at least one tap "
                         f"and one output channel, got shape {w.shape}.")
    groups = _args.check_groups(x.shape[-1], w.shape[2], groups)
    if w.shape[1] * groups != x.shape[-1]:
        raise ValueError(f"`w` (shape {w.shape}) expects {w.shape[1] * groups} input channels "
                         f"with groups={groups}, but `x` (shape {x.shape}) has {x.shape[-1]}." +
                         _args.layout_hint(x.shape, w.shape[1] * groups))
    stride = _args.positive_int('stride', stride)
    lhs_dilation = _args.positive_int('lhs_dilation', lhs_dilation)
    rhs_dilation = _args.positive_int('rhs_dilation', rhs_dilation)
    padding = _args.canonical_padding(padding)
    _args.check_padding_mode(padding_mode, lhs_dilation)
    check_backend(backend)
    if mask is not None:
        _real_floats('mask', mask)
        w = w * _params.make_mask(mask, w.shape, w.dtype)
    if b is not None:
        b = _real_floats('b', b)
        if b.size != w.shape[2]:
            raise ValueError(f"`b` (shape {b.shape}) must hold one value per output channel "
                             f"({w.shape[2]}).")
    return x, w, b, dict(stride=stride, padding=padding, lhs_dilation=lhs_dilation,
                         rhs_dilation=rhs_dilation, groups=groups, backend=backend,
                         padding_mode=padding_mode)


def _real_floats(name: str, value):
    """``value`` as a floating array: ``bool`` and integer values in JAX's default floating
    dtype (a kernel, bias or mask computes in floating point whatever it holds); a
    ``TypeError`` naming ``name`` for complex values, strings and other objects."""
    try:
        arr = jnp.asarray(value)
    except (TypeError, ValueError) as err:
        dtype = getattr(value, 'dtype', None)
        raise TypeError(f"`{name}` ({type(value).__name__}"
                        f"{'' if dtype is None else f' of dtype {dtype}'}) must be an array of "
                        f"real numbers.") from err
    if not (jnp.issubdtype(arr.dtype, jnp.number) or arr.dtype == jnp.bool_) or \
            jnp.issubdtype(arr.dtype, jnp.complexfloating):
        raise TypeError(f"`{name}` has dtype {arr.dtype}; expected real numbers.")
    return arr if jnp.issubdtype(arr.dtype, jnp.floating) else arr.astype(jnp.result_type(float))


def apply(x, w, b, *, stride: int, padding, lhs_dilation: int, rhs_dilation: int, groups: int,
          backend: str = 'auto', padding_mode: str = 'zeros'):
    """Convolve ``[H, C]`` or ``[B, H, C]`` input with validated, canonical arguments.

    Raises ``ValueError`` when the input is too short for the kernel, or the padding too
    wide for ``padding_mode``.
    """
    x, pads = _pad_by_mode(x, w.shape[0], padding, stride, lhs_dilation, rhs_dilation,
                           padding_mode)
    unbatched = x.ndim == 2
    y = conv_explicit(x[None] if unbatched else x, w, b, stride=stride, padding=pads,
                      lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation, groups=groups,
                      backend=backend)
    return y[0] if unbatched else y


def _pad_by_mode(x, kernel_size: int, padding, stride: int, lhs_dilation: int,
                 rhs_dilation: int, padding_mode: str):
    """The resolved ``(low, high)`` padding; for a ``padding_mode`` other than ``'zeros'``
    the input's own samples are padded on here and the padding returned is ``(0, 0)``."""
    length = x.shape[-2]
    _args.output_length(length, kernel_size, stride, padding, lhs_dilation, rhs_dilation)
    pads = _args.resolve_padding(padding, length, kernel_size, stride, lhs_dilation, rhs_dilation)
    if padding_mode != 'zeros' and pads != (0, 0):
        # Pad with the input's own samples, then convolve without padding (any backend).
        _args.check_padding_fits(padding_mode, pads, length)
        widths = [(0, 0)] * (x.ndim - 2) + [tuple(pads), (0, 0)]
        x = jnp.pad(x, widths, mode=_args.PADDING_MODES[padding_mode])
        pads = (0, 0)
    return x, pads


def which(x, w, *, stride: int, padding, lhs_dilation: int, rhs_dilation: int, groups: int,
          backend: str = 'auto', padding_mode: str = 'zeros', platform=None) -> str:
    """What :func:`apply` computes ``x`` with on ``platform``, for concrete input: ``'event'``
    or the dense algorithm's name (validated, canonical arguments, as :func:`apply` takes)."""
    platform = check_platform(platform)
    x, _ = _pad_by_mode(x, w.shape[0], padding, stride, lhs_dilation, rhs_dilation,
                        padding_mode)
    batched = x if x.ndim == 3 else x[None]
    algorithm, checks_density = plan(batched.shape + (w.shape[2], w.shape[0], groups), x.dtype,
                                     backend)
    if backend == 'event' or (checks_density and platform in kernels.auto_platforms() and
                              float(estimate_density(batched)) <=
                              kernels.running(platform).auto_density):
        return 'event'
    return CUDA_ALGORITHM if platform == 'cuda' and backend in ('auto', 'dense') else algorithm


@_args.refuse_pytorch_names(_PYTORCH_NAMES)
def which_backend(x, w, *, stride: int = 1, padding='SAME', lhs_dilation: int = 1,
                  rhs_dilation: int = 1, groups: int = 1, backend: str = 'auto',
                  padding_mode: str = 'zeros', platform=None) -> str:
    """What :func:`conv1d` computes this input with on ``platform``.

    Takes the arguments of :func:`conv1d` (the input must be concrete: under
    ``backend='auto'`` the choice depends on its density) and the platform (``'cpu'``,
    ``'cuda'``, ``'rocm'``, ``'tpu'``, ``'gpu'``; default: JAX's default backend).

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
    x, w, _, options = arguments(x, w, stride=stride, padding=padding,
                                 lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                                 groups=groups, backend=backend, padding_mode=padding_mode)
    return which(x, w, platform=platform, **options)


def event_kernel(platform=None) -> str:
    """The kernel that runs the event-driven path on ``platform`` (default: JAX's default
    backend): ``'c++'`` (CPU: C++ kernels through the XLA FFI, built with the machine's
    compiler), ``'numba'`` (CPU without a working compiler, BrainPy 2.7+ with brainevent),
    ``'pallas'`` (Pallas kernels through Triton: NVIDIA GPUs) or ``'jax'`` (the pure-JAX
    kernels: AMD GPUs, TPUs, and the CPU when no other runtime is available).

    Examples
    --------
    >>> from bp_conv_ext import event_kernel
    >>> event_kernel('cuda'), event_kernel('tpu')
    ('pallas', 'jax')
    """
    return kernels.running(check_platform(platform)).name


def event_kernels(platform=None) -> tuple:
    """The kernel sets that can run the event-driven path on ``platform`` here (default: JAX's
    default backend), one record each.

    On the CPU: the available ones in the order the CPU prefers them (``'c++'``, ``'numba'``,
    ``'jax'``; the first runs unless :func:`use_event_kernels` chooses another), then
    ``'pallas'``, the NVIDIA GPUs' kernels, which run there in Pallas's interpreter (slowly:
    for tests). On an accelerator: the one set that runs there.

    Returns
    -------
    tuple of KernelSet
        Frozen records with the fields ``name`` (what :func:`event_kernel` reports and
        :func:`use_event_kernels` takes), ``module`` (in ``bp_conv_ext.kernels``),
        ``platforms`` (those it serves), ``auto_density`` (its :func:`event_density_threshold`;
        ``None``: ``'auto'`` stays dense), ``sharding`` (``'split'``: over the batch by the
        event primitives' sharding rule; ``'xla'``: by XLA), ``package`` (the package it
        needs, if any), ``builds`` (whether it needs its library built with the machine's
        C++17 compiler) and ``forceable`` (whether :func:`use_event_kernels` takes it).

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
    ('pallas', None, 'split')
    >>> [k.name for k in event_kernels('cpu')][-2:]
    ['jax', 'pallas']
    """
    return kernels.runnable(check_platform(platform))


def use_event_kernels(name: str):
    """A context manager: the event-driven path runs on the CPU with the kernel set ``name``
    for the programs traced inside its ``with`` block.

    ``name`` is one of ``'c++'``, ``'numba'``, ``'jax'`` or ``'pallas'`` (the NVIDIA GPUs'
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
    return kernels.use(name)


def event_density_threshold(platform=None):
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
    return kernels.running(check_platform(platform)).auto_density


#: Platform names as JAX lowers for them.
PLATFORMS = kernels.PLATFORMS


def check_platform(platform) -> str:
    """``platform`` as one of :data:`PLATFORMS`: ``None`` is JAX's default backend, ``'gpu'``
    (what JAX calls CUDA and ROCm devices) counts as ``'cuda'``, which behaves as ``'rocm'``."""
    if platform is None:
        platform = jax.default_backend()
    if platform == 'gpu':
        platform = 'cuda'
    if platform not in PLATFORMS:
        raise ValueError(f"`platform` (={platform!r}) must be one of "
                         f"{', '.join(map(repr, PLATFORMS + ('gpu',)))} or None.")
    return platform
