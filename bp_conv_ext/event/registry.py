"""The registry of the kernel sets of the two operations that have kernels of their own; one
module per set in :mod:`.kernels`.

- ``'conv'``: the event-driven convolution (:mod:`.primitive`: the primitives, their rules and
  their lowering);
- ``'spiking'``: the spiking step, a convolution into LIF neurons over a whole sequence
  (:mod:`bp_conv_ext.ops.fused` and :mod:`bp_conv_ext.ops.spiking_cpu`).

The kernel modules only compute. Which set runs where is decided here alone, from one
:class:`KernelSet` record per set and operation (:data:`SETS`): its name, its module, what it
needs, the platforms it serves, whether the default choice takes it, its measured ``auto``
density and how it runs on several devices. A name means one runtime for both operations:

========== ============== ================================= ======================================
name       module         platforms (needs)                 operations
========== ============== ================================= ======================================
``c++``    ``cxx_cpu``    CPU (a C++17 compiler)            conv, spiking: C++ through the XLA
                                                            FFI, compacted spikes, sums in
                                                            registers
``numba``  ``numba_cpu``  CPU (brainevent)                  conv: numba, scatter over the spikes
``triton`` ``pallas_gpu`` CUDA GPUs                         conv, spiking: Pallas through Triton
``mosaic`` ``mosaic_gpu`` Hopper GPUs (JAX 0.12)            spiking: Pallas through Mosaic GPU
``jax``    ``xla`` (conv) every platform                    conv (ROCm GPUs, TPUs, the CPU
                                                            without the others): XLA's
                                                            convolution; spiking: the
                                                            convolution folded over time, then
                                                            the neurons in a ``lax.scan``
========== ============== ================================= ======================================

The event-driven convolution's modules have the same names:

- ``forward(x, w, params, outs=[...], spec=...)`` and ``kernel_grad(x, dy, params,
  outs=[...], spec=...)``, each returning a list; ``params`` is a :class:`KernelParams` as an
  ``int32`` vector (for kernels that read their configuration at run time) and ``spec`` the
  call's :class:`EventSpec`;
- ``threads()``: the thread count the CPU kernels use;
- optionally ``compiled``: the accelerator's compiled kernels by operation name.

The spiking step's are ``conv_lif`` (the GPU modules; ``supported`` says which problems they
compute) and the C++ library's spiking targets (:mod:`bp_conv_ext.ops.spiking_cpu`).

A new platform or runtime adds a module and a record in :data:`SETS`.
"""
import contextlib
import dataclasses
import functools
import importlib
import importlib.util
from typing import NamedTuple

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


#: The operations that have kernel sets.
OPERATIONS = ('conv', 'spiking')


@dataclasses.dataclass(frozen=True)
class KernelSet:
    """One set of kernels of one operation: what :func:`bp_conv_ext.event_kernels` lists.

    Attributes
    ----------
    name : str
        Its name: ``'c++'``, ``'numba'``, ``'jax'``, ``'triton'`` or ``'mosaic'``, one runtime
        for both operations, as :func:`bp_conv_ext.event_kernel` reports it and ``kernels=``
        (:func:`bp_conv_ext.conv1d`, :func:`bp_conv_ext.ops.fused.conv_lif`) and
        :func:`bp_conv_ext.use_event_kernels` take it.
    module : str or None
        Its module in ``bp_conv_ext.event.kernels`` (``None``: the spiking step's ``'jax'``
        set, which is :mod:`bp_conv_ext.ops.fused`'s own code).
    platforms : tuple of str
        The platforms it serves: on the CPU the first available set that lists it runs (the
        order of :data:`SETS`), on each accelerator the first that lists it (for the spiking
        step: that the default takes and that computes the problem, see
        :func:`spiking_kernels`).
    auto_density : float or None
        The event-driven convolution: the spike density at or below which
        ``backend='auto'`` takes these kernels for ``bool`` input (measured against the dense
        path on their platform), or ``None``: ``'auto'`` stays dense where they run.
    sharding : str
        How they run on several devices: ``'split'`` by their primitive's sharding rule (each
        device on its part of the batch), ``'xla'`` by XLA itself (XLA's own operations).
    package : str or None
        The package they need installed, if any.
    builds : bool
        Whether they need their library built with the machine's C++17 compiler (or loaded
        from the cache).
    forceable : bool
        Whether a caller can put them on the CPU (where they are available), to check them
        there through the same primitives (accelerators' kernels run in Pallas's interpreter).
    operation : str
        The operation they compute, one of :data:`OPERATIONS`.
    by_default : bool
        Whether the default choice (no ``kernels`` named) takes them where they serve; a set
        it does not take runs only where named.
    capability : int or None
        The CUDA compute capability (major version) they need, if any.
    """

    name: str
    module: str | None
    platforms: tuple[str, ...]
    auto_density: float | None = None
    sharding: str = 'split'
    package: str | None = None
    builds: bool = False
    forceable: bool = True
    operation: str = 'conv'
    by_default: bool = True
    capability: int | None = None

    def load(self):
        """Its kernel module, imported on first use (``None`` where it has none)."""
        return None if self.module is None else _import(self.module)

    def unavailable(self) -> str | None:
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


#: Whether the spiking step's default choice takes the C++ kernel on the CPU: JAX 0.4 lowers
#: every branch of ``lax.platform_dependent`` for each platform a program is lowered for, and
#: the C++ kernel has no lowering on the others.
CXX_SPIKING_BY_DEFAULT = jax.__version_info__ >= (0, 5)

#: Every kernel set; of each operation, the CPU's in the order they are preferred there (the
#: last needs nothing beyond JAX), and the accelerators' in the order the default tries them.
SETS = (
    # --- the event-driven convolution
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
    KernelSet('triton', 'pallas_gpu', ('cuda',), auto_density=None, sharding='split'),
    # --- the spiking step
    # One kernel for the sequence, forward and backward (docs/performance.md).
    KernelSet('c++', 'cxx_cpu', ('cpu',), builds=True, operation='spiking',
              by_default=CXX_SPIKING_BY_DEFAULT),
    # Hopper's TMA copies and warpgroup products. Not taken by default until a GPU has run it
    # compiled and measured it correct and faster than the Triton kernel.
    KernelSet('mosaic', 'mosaic_gpu', ('cuda',), operation='spiking', by_default=False,
              capability=9),
    # Measured 1.2-4.1x cuDNN + XLA's neurons on an H200 (docs/accelerators.md).
    KernelSet('triton', 'pallas_gpu', ('cuda',), operation='spiking'),
    KernelSet('jax', None, PLATFORMS, sharding='xla', operation='spiking'),
)


def sets(operation: str) -> tuple:
    """The kernel sets of ``operation`` (one of :data:`OPERATIONS`), in the order of
    :data:`SETS`."""
    return tuple(kernels for kernels in SETS if kernels.operation == operation)


def names(operation: str) -> tuple:
    """The names of ``operation``'s kernel sets."""
    return tuple(kernels.name for kernels in sets(operation))


def named(operation: str, name: str) -> KernelSet:
    """The kernel set ``name`` of ``operation``; ``ValueError`` naming the argument and the
    names there are."""
    for kernels in sets(operation):
        if kernels.name == name:
            return kernels
    raise ValueError(f"`kernels` (={name!r}) must be one of "
                     f"{', '.join(map(repr, names(operation)))}, or None (the default).")


def spiking_kernels(platform: str, name: str | None, computes, capability=None) -> str:
    """The name of the kernel set that runs the spiking step on ``platform``: the set ``name``
    where it serves there (an accelerator's also off it, in Pallas's interpreter) and
    ``computes(name)`` (whether it computes the problem), else ``'jax'``; with no ``name``
    the first set serving ``platform`` that the default takes, whose compute
    ``capability`` (major version, CUDA) is the GPU's and that computes the problem."""
    if name is not None:
        kernels = named('spiking', name)
        serves = platform in kernels.platforms or kernels.platforms == ('cuda',)
        return name if name == 'jax' or (serves and computes(name)) else 'jax'
    for kernels in sets('spiking'):
        if (platform in kernels.platforms and kernels.by_default and kernels.name != 'jax'
                and kernels.capability in (None, capability) and computes(kernels.name)):
            return kernels.name
    return 'jax'


#: The event-driven convolution's kernel sets by name.
BY_NAME = {kernels.name: kernels for kernels in sets('conv')}

#: The accelerator platforms, each served by one kernel set.
ACCELERATORS = tuple(p for p in PLATFORMS if p != 'cpu')

_forced = None


@functools.cache
def _import(module: str):
    return importlib.import_module(f'{__package__}.kernels.{module}')


def serving(platform: str, operation: str = 'conv') -> tuple:
    """The kernel sets of ``operation`` that list ``platform``, in the order they are
    preferred there."""
    return tuple(kernels for kernels in sets(operation) if platform in kernels.platforms)


@functools.cache
def _cpu_default() -> KernelSet:
    return next(kernels for kernels in serving('cpu') if kernels.available())


def running(platform: str, name: str | None = None) -> KernelSet:
    """The kernel set that runs the event-driven convolution on ``platform`` (one of
    :data:`PLATFORMS`): on the CPU the set ``name`` (:func:`cpu_kernels`), else inside
    :func:`use` the one chosen, else the first available; on an accelerator the one that
    serves it."""
    if platform == 'cpu':
        return cpu_kernels(name) if name is not None else _forced or _cpu_default()
    return serving(platform)[0]


def runnable(platform: str) -> tuple:
    """The kernel sets that can run the event path on ``platform`` here: on the CPU the
    available sets that serve it, in the order they are preferred, then those that can be
    forced there; on an accelerator the one that serves it."""
    if platform != 'cpu':
        return serving(platform)
    native = tuple(k for k in serving('cpu') if k.available())
    return native + tuple(k for k in sets('conv') if k.forceable and k not in serving('cpu')
                          and k.available())


def auto_platforms(name: str | None = None) -> tuple:
    """The platforms where ``backend='auto'`` may choose the event path (with the CPU's set
    ``name``): those whose kernels were measured to beat the dense path there (the CPU)."""
    return tuple(p for p in PLATFORMS if running(p, name).auto_density is not None)


def cpu_kernels(name: str, argument: str = 'kernels') -> KernelSet:
    """The event-driven convolution's kernel set ``name``, to run on the CPU; ``ValueError``
    (naming ``argument``) for a name that is not one, or kernels that cannot run here."""
    choices = [k.name for k in sets('conv') if k.forceable]
    if name not in choices:
        raise ValueError(f"`{argument}` (={name!r}) must be one of "
                         f"{', '.join(map(repr, choices))}.")
    kernels = BY_NAME[name]
    reason = kernels.unavailable()
    if reason is not None:
        raise ValueError(f"`{argument}` (={name!r}): these kernels are not available here: "
                         f"{reason}.")
    kernels.load()
    return kernels


@contextlib.contextmanager
def use(name: str):
    """Trace the event path with the kernel set ``name`` on the CPU inside the ``with`` block,
    where a call names none (see :func:`bp_conv_ext.use_event_kernels`)."""
    global _forced
    kernels = cpu_kernels(name, 'name')
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
