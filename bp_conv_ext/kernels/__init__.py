"""The event-driven kernels: one module per runtime and platform (internal).

The primitives, their rules and their lowering live in ``bp_conv_ext._event``; these modules
only compute. Each has the same names:

- ``NAME``: its kernels' name, as :func:`bp_conv_ext.event_kernel` reports it;
- ``AUTO_DENSITY``: the spike density at or below which ``backend='auto'`` takes them for
  ``bool`` input (measured against the dense path on their platform), or ``None``: never;
- ``SHARDING``: how they run on several devices: ``'split'`` by the sharding rule of
  ``_event`` (each device on its part of the batch), ``'xla'`` by XLA itself (XLA's own
  operations);
- ``forward(x, w, params, outs=[...], **static)`` and ``kernel_grad(x, dy, params,
  outs=[...], **static)``, each returning a list; ``params`` is an ``int32`` vector
  ``(stride, low, lhs_dilation, rhs_dilation, groups, threads())`` and the static keywords
  are ``stride, low, high, lhs_dilation, rhs_dilation, groups, out_len, precision``;
- ``threads()``: the thread count the CPU kernels use.

=============== ============================ ====================================
module          platform (runtime)           kernels
=============== ============================ ====================================
``cxx_cpu``     CPU (a C++17 compiler)       C++ through the XLA FFI, compacted
                                             spikes, sums in registers
``numba_cpu``   CPU (brainevent)             numba, scatter over the spikes
``pallas_gpu``  CUDA GPUs                    Pallas/Triton, compacted spikes
``xla``         ROCm GPUs, TPUs; the CPU     XLA's convolution (dense work)
                without the others
=============== ============================ ====================================

A new platform adds a module and a line in :data:`CPU` or :data:`ACCELERATORS`.
"""
import functools
import importlib
import importlib.util

#: The CPU runtimes in the order they are preferred: (runtime, module). A runtime is the package
#: that must be installed, or ``'c++'``: the kernels of ``cxx_cpu``, built with the machine's
#: compiler. The last needs nothing beyond JAX.
CPU = (('c++', 'cxx_cpu'), ('brainevent', 'numba_cpu'), ('jax', 'xla'))

#: The kernel module of each accelerator platform.
ACCELERATORS = {'cuda': 'pallas_gpu', 'rocm': 'xla', 'tpu': 'xla'}

#: Kernels that can also be forced onto the CPU by name (``_event.forced_runtime``), to check
#: them there through the same primitives: the CPU runtimes' packages and ``'pallas'`` (the
#: GPU kernels, run by Pallas's interpreter).
FORCEABLE = dict(CPU, pallas='pallas_gpu')


@functools.lru_cache(maxsize=None)
def module(name: str):
    """The kernel module ``name`` (``'numba_cpu'``, ``'xla'``, ...), imported on first use."""
    return importlib.import_module(f'{__name__}.{name}')


def available(runtime: str) -> bool:
    """Whether the CPU runtime ``runtime`` (a name of :data:`CPU`) runs here: its package is
    installed; for ``'c++'``, its kernels were built (or load from the cache)."""
    if runtime == 'c++':
        return module('cxx_cpu').library() is not None
    return importlib.util.find_spec(runtime) is not None
