"""What the tests share: the grids of cases (pairwise, or full under ``make test-full``), the
event kernel sets to run each event-path test with, and reference convolutions written
independently of the package."""
import contextlib
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np

from bp_conv_ext import event_kernels, use_event_kernels

#: ``make test-full`` sets ``BP_CONV_EXT_FULL_GRIDS=1``: every :func:`pairwise` grid then runs
#: as the full product of its dimensions.
FULL_GRIDS = os.environ.get('BP_CONV_EXT_FULL_GRIDS') == '1'


def pairwise(*dimensions, keep=None):
    """Rows of a test grid over ``dimensions`` (sequences of values) in which every pair of
    values of any two dimensions occurs at least once: an all-pairs covering array, built
    greedily and deterministically (each row the first, in product order, that covers the most
    pairs not yet covered). ``keep(row)`` leaves out rows that are not valid; pairs that no
    valid row holds are not asked for. With :data:`FULL_GRIDS`, the whole (kept) product.

    For dimensions that are handled by separate parts of the code, a fault that needs a
    particular combination of values is almost always a fault of two of them, which every
    pairwise grid contains; each grid that uses it says why its dimensions qualify.
    """
    # Rows as value indices (values may be unhashable or equal across types: 1 and True).
    indices = [index for index in itertools.product(*(range(len(d)) for d in dimensions))
               if keep is None or keep(_values(dimensions, index))]
    if not FULL_GRIDS:
        covers = [{(i, index[i], j, index[j])
                   for i, j in itertools.combinations(range(len(index)), 2)}
                  for index in indices]
        missing = set().union(*covers)
        chosen = []
        while missing:
            best = max(range(len(indices)), key=lambda r: len(covers[r] & missing))
            chosen.append(indices[best])
            missing -= covers[best]
        indices = chosen
    return [_values(dimensions, index) for index in indices]


def _values(dimensions, index):
    return tuple(d[i] for d, i in zip(dimensions, index))


def grid_ids(rows):
    """Test ids of :func:`pairwise` rows: their values joined by '-'."""
    return ['-'.join(getattr(v, '__name__', None) or str(v) for v in row) for row in rows]


# Reference comparisons should not depend on reduced-precision matmuls.
jax.config.update('jax_default_matmul_precision', 'highest')

#: Context manager switching 64-bit mode on: ``jax.enable_x64`` in current JAX,
#: ``jax.experimental.enable_x64`` in the JAX of the BrainPy 2.6 stack.
enable_x64 = getattr(jax, 'enable_x64', None)
if enable_x64 is None:
    from jax.experimental import enable_x64


def event_runtime(name):
    """A context tracing the event path with the kernel set ``name`` (``'numba'``: the
    fallback of the C++ kernels; ``'jax'``: the pure-JAX kernels that ROCm GPUs and TPUs run;
    ``'triton'``: the CUDA GPUs' kernels, in Pallas's interpreter; all here on the CPU);
    ``None``: the CPU's own (the first available set)."""
    return contextlib.nullcontext() if name is None else use_event_kernels(name)


#: The kernel sets that can run the event path on the CPU here, the CPU's own first.
CPU_KERNELS = [k.name for k in event_kernels('cpu')]
#: The event path with the CPU's own kernels; where those are the C++ kernels and the numba
#: kernels are available (brainevent, BrainPy 2.7+), also with their fallback; then with each
#: accelerator's kernels forced on the CPU through the same primitives' rules. And their ids.
_FALLBACK = ['numba'] if CPU_KERNELS[0] == 'c++' and 'numba' in CPU_KERNELS else []
EVENT_RUNTIMES = [None] + _FALLBACK + ['jax', 'triton']
EVENT_IDS = ['event'] + ['event-numba'] * len(_FALLBACK) + ['event-jax', 'event-triton']
#: The event kernels that run where the C++ kernels cannot be built: the next CPU set's
#: (numba with brainevent, BrainPy 2.7+; else the pure-JAX kernels).
CXX_FALLBACK = 'numba' if 'numba' in CPU_KERNELS else 'jax'


def reference_pads(padding, length, kernel_size, stride=1, lhs_dilation=1, rhs_dilation=1):
    """The (low, high) padding the reference applies, for every padding form the layer takes:
    'SAME' / 'VALID' / 'CAUSAL' in any case, an int, a pair, or a sequence holding one pair.
    Written independently of ``bp_conv_ext.core.args``."""
    span = (kernel_size - 1) * rhs_dilation + 1
    if isinstance(padding, str):
        padding = padding.upper()
        if padding == 'VALID':
            return 0, 0
        if padding == 'CAUSAL':
            return span - 1, 0
        dilated = (length - 1) * lhs_dilation + 1
        n_out = int(np.ceil(dilated / stride))
        total = max((n_out - 1) * stride + span - dilated, 0)
        return total // 2, total - total // 2
    if isinstance(padding, int):
        return padding, padding
    if isinstance(padding[0], (tuple, list)):
        padding = padding[0]
    return tuple(padding)


def reference_conv1d(x, w, b=None, *, stride=1, padding='SAME', lhs_dilation=1,
                     rhs_dilation=1, groups=1):
    """Direct float64 NumPy loop over output positions and taps.

    ``x``: [B, H, C]; ``w``: [K, C // groups, O]; ``padding``: any form the layer takes.
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    batch, length, channels = x.shape
    k, cin_g, cout = w.shape
    dilated = np.zeros((batch, (length - 1) * lhs_dilation + 1, channels))
    dilated[:, ::lhs_dilation] = x
    span = (k - 1) * rhs_dilation + 1
    low, high = reference_pads(padding, length, k, stride, lhs_dilation, rhs_dilation)
    padded = np.pad(dilated, ((0, 0), (low, high), (0, 0)))
    n_out = (padded.shape[1] - span) // stride + 1
    cout_g = cout // groups
    y = np.zeros((batch, n_out, cout))
    for t in range(n_out):
        for tap in range(k):
            sample = padded[:, t * stride + tap * rhs_dilation]
            for g in range(groups):
                y[:, t, g * cout_g:(g + 1) * cout_g] += (
                    sample[:, g * cin_g:(g + 1) * cin_g] @ w[tap, :, g * cout_g:(g + 1) * cout_g])
    if b is not None:
        y += np.asarray(b, dtype=np.float64).reshape(-1)
    return y


def lax_conv1d(x, w, *, stride=1, padding='SAME', lhs_dilation=1, rhs_dilation=1, groups=1):
    """``lax.conv_general_dilated`` with the reference's padding: the gradient reference,
    differentiated by JAX itself. Padding and input dilation are applied by ``lax.pad`` first:
    XLA's CPU backward-input convolution returns garbage when the low padding is as wide as
    the dilated kernel (jax 0.10)."""
    from jax import lax
    low, high = reference_pads(padding, x.shape[1], w.shape[0], stride, lhs_dilation,
                               rhs_dilation)
    x = lax.pad(x, np.zeros((), x.dtype), ((0, 0, 0), (low, high, lhs_dilation - 1), (0, 0, 0)))
    return lax.conv_general_dilated(x, w, (stride,), ((0, 0),), (1,), (rhs_dilation,),
                                    ('NWC', 'WIO', 'NWC'), feature_group_count=groups)


def random_case(rng, batch, length, cin, cout, k, groups=1, density=None, bias=True):
    """Input (float32 normal, or bool with ``density``), kernel and bias (``[cout]``)."""
    if density is None:
        x = rng.standard_normal((batch, length, cin)).astype(np.float32)
    else:
        x = rng.random((batch, length, cin)) < density
    w = rng.standard_normal((k, cin // groups, cout)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32) if bias else None
    return x, w, b


#: JAX 0.4's gloo collectives (the BrainPy 2.6 stack) abort now and then with two processes
#: (``gloo::EnforceNotMet ... op.preamble.length <= op.nbytes``: the processes' collectives
#: out of step; about one run in three here). The JAX of BrainPy 2.8 and 2.9 runs them reliably.
GLOO_RELIABLE = jax.__version_info__ >= (0, 5)


def random_input(shape, seed=0, density=None):
    """Standard normal float32 values, or ``bool`` spikes at ``density``."""
    rng = np.random.default_rng(seed)
    if density is not None:
        return jnp.asarray(rng.random(shape) < density)
    return jnp.asarray(rng.standard_normal(shape), jnp.float32)
