"""The registry of the event-driven kernel sets; one module per set in :mod:`.kernels`.

The primitives, their rules and their lowering live in :mod:`.primitive`; the kernel
modules only compute. Which set runs where is decided here alone, from one :class:`KernelSet` record
per set (:data:`SETS`): its one name (what :func:`bp_conv_ext.event_kernel` reports), its
module, what it needs, the platforms it serves, its measured ``auto`` density and how it runs
on several devices. Every module has the same names:

- ``forward(x, w, params, outs=[...], spec=...)`` and ``kernel_grad(x, dy, params,
  outs=[...], spec=...)``, each returning a list; ``params`` is a :class:`KernelParams` as an
  ``int32`` vector (for kernels that read their configuration at run time) and ``spec`` the
  call's :class:`EventSpec`;
- ``threads()``: the thread count the CPU kernels use;
- optionally ``compiled``: the accelerator's compiled kernels by operation name.

========== =============== ============================ ====================================
set        module          platform (needs)             kernels
========== =============== ============================ ====================================
``c++``    ``cxx_cpu``     CPU (a C++17 compiler)       C++ through the XLA FFI, compacted
                                                        spikes, sums in registers
``numba``  ``numba_cpu``   CPU (brainevent)             numba, scatter over the spikes
``jax``    ``xla``         ROCm GPUs, TPUs; the CPU     XLA's convolution (dense work)
                           without the others
``pallas`` ``pallas_gpu``  CUDA GPUs                    Pallas/Triton, compacted spikes
========== =============== ============================ ====================================

A new platform or runtime adds a module and a record in :data:`SETS`.
"""
import contextlib
import dataclasses
import functools
import importlib
import importlib.util
from typing import NamedTuple, Optional, Tuple

import jax

from ..core.dense import ConvSpec

class EventSpec(NamedTuple):
    """The static configuration of one event-driven call, the primitives' one parameter:
    the convolution (``conv``: stride, resolved padding, dilations, groups), the output
    length, the matmul precision it was called under and the CPU's kernel set (its name)."""
    conv: ConvSpec
    out_len: int
    precision: object
    kernels: str


class KernelParams(NamedTuple):
    """The ``int32`` vector ``params`` that the kernels receive, in this field order."""
    stride: int
    low: int
    lhs_dilation: int
    rhs_dilation: int
    groups: int
    threads: int


#: The platforms the event path lowers for, as JAX names them.
PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')


@dataclasses.dataclass(frozen=True)
class KernelSet:
    """One set of event-driven kernels: what :func:`bp_conv_ext.event_kernels` lists.

    Attributes
    ----------
    name : str
        Its one name: ``'c++'``, ``'numba'``, ``'jax'`` or ``'pallas'``, as
        :func:`bp_conv_ext.event_kernel` reports it and :func:`bp_conv_ext.use_event_kernels`
        takes it.
    module : str
        Its module in ``bp_conv_ext.event.kernels``.
    platforms : tuple of str
        The platforms it serves: on the CPU the first available set that lists it runs (the
        order of :data:`SETS`), on each accelerator the one set that lists it.
    auto_density : float or None
        The spike density at or below which ``backend='auto'`` takes these kernels for
        ``bool`` input (measured against the dense path on their platform), or ``None``:
        ``'auto'`` stays dense where they run.
    sharding : str
        How they run on several devices: ``'split'`` by the sharding rule of the event
        primitives (each device on its part of the batch), ``'xla'`` by XLA itself (XLA's own
        operations).
    package : str or None
        The package they need installed, if any.
    builds : bool
        Whether they need their library built with the machine's C++17 compiler (or loaded
        from the cache).
    forceable : bool
        Whether :func:`bp_conv_ext.use_event_kernels` can put them on the CPU (where they are
        available), to check them there through the same primitives.
    """

    name: str
    module: str
    platforms: Tuple[str, ...]
    auto_density: Optional[float]
    sharding: str
    package: Optional[str] = None
    builds: bool = False
    forceable: bool = True

    def load(self):
        """Its kernel module, imported on first use."""
        return _import(self.module)

    def unavailable(self) -> Optional[str]:
        """Why these kernels cannot run here, or ``None`` where they can. Building the C++
        kernels, where the cache holds none, happens here (once per process)."""
        if self.package is not None and importlib.util.find_spec(self.package) is None:
            return f"they need the package {self.package!r}, which is not installed"
        if self.builds and self.load().library() is None:
            return ("their library could not be built with the machine's C++17 compiler "
                    "($CXX) nor loaded from the cache")
        return None

    def available(self) -> bool:
        """Whether these kernels can run here (see :meth:`unavailable`)."""
        return self.unavailable() is None


#: Every kernel set, the CPU's in the order they are preferred there (the last needs nothing
#: beyond JAX).
SETS = (
    # Measured 2.0-3.3x faster than the best dense convolution at density 0.1, 2.4-7.2x
    # below (docs/performance.md).
    KernelSet('c++', 'cxx_cpu', ('cpu',), auto_density=0.1, sharding='split', builds=True),
    # Measured 1.3-3.2x faster than the best dense convolution at or below 0.03, and no faster
    # from ~0.1 on some shapes (docs/performance.md); the density check costs up to ~0.3 ms.
    # The kernels can be compiled inside XLA's SPMD partitioner.
    KernelSet('numba', 'numba_cpu', ('cpu',), auto_density=0.03, sharding='split',
              package='brainevent'),
    # They do the dense path's work: 'auto' never chooses them. XLA's own operations, which
    # XLA splits over devices by itself.
    KernelSet('jax', 'xla', ('cpu', 'rocm', 'tpu'), auto_density=None, sharding='xla'),
    # Not yet measured to win on a GPU. A Triton call is opaque to XLA's partitioner.
    KernelSet('pallas', 'pallas_gpu', ('cuda',), auto_density=None, sharding='split'),
)

#: The kernel sets by name.
BY_NAME = {kernels.name: kernels for kernels in SETS}

#: The accelerator platforms, each served by one kernel set.
ACCELERATORS = tuple(p for p in PLATFORMS if p != 'cpu')

_forced = None


@functools.lru_cache(maxsize=None)
def _import(module: str):
    return importlib.import_module(f'{__package__}.kernels.{module}')


def serving(platform: str) -> tuple:
    """The kernel sets that list ``platform``, in the order they are preferred there."""
    return tuple(kernels for kernels in SETS if platform in kernels.platforms)


@functools.lru_cache(maxsize=None)
def _cpu_default() -> KernelSet:
    return next(kernels for kernels in serving('cpu') if kernels.available())


def running(platform: str) -> KernelSet:
    """The kernel set that runs the event path on ``platform`` (one of :data:`PLATFORMS`): on
    the CPU the first available, or inside :func:`use` the one chosen; on an accelerator the
    one that serves it."""
    if platform == 'cpu':
        return _forced or _cpu_default()
    return serving(platform)[0]


def runnable(platform: str) -> tuple:
    """The kernel sets that can run the event path on ``platform`` here: on the CPU the
    available sets that serve it, in the order they are preferred, then those that can be
    forced there; on an accelerator the one that serves it."""
    if platform != 'cpu':
        return serving(platform)
    native = tuple(k for k in serving('cpu') if k.available())
    return native + tuple(k for k in SETS if k.forceable and k not in serving('cpu')
                          and k.available())


def auto_platforms() -> tuple:
    """The platforms where ``backend='auto'`` may choose the event path: those whose kernels
    were measured to beat the dense path there (the CPU)."""
    return tuple(p for p in PLATFORMS if running(p).auto_density is not None)


@contextlib.contextmanager
def use(name: str):
    """Trace the event path with the kernel set ``name`` on the CPU inside the ``with`` block
    (see :func:`bp_conv_ext.use_event_kernels`)."""
    global _forced
    choices = [k.name for k in SETS if k.forceable]
    if name not in choices:
        raise ValueError(f"`name` (={name!r}) must be one of {', '.join(map(repr, choices))}.")
    kernels = BY_NAME[name]
    reason = kernels.unavailable()
    if reason is not None:
        raise ValueError(f"`name` (={name!r}): these kernels are not available here: "
                         f"{reason}.")
    kernels.load()
    previous, _forced = _forced, kernels
    try:
        yield kernels
    finally:
        _forced = previous


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
