"""Event-driven kernels in C++ for the CPU, called through the XLA FFI.

The source is ``event_cpu.cc`` next to this module (its header comment describes the
kernels: output-stationary sums in vector registers over compacted spike lists, threads over
the batch). It is compiled on first use with the machine's C++17 compiler (``$CXX``, else
``c++``, ``g++`` or ``clang++``) for the machine's own instruction set, and the library is
cached in ``$BP_CONV_EXT_CACHE`` (default ``~/.cache/bp_conv_ext``) under a key of the source,
the flags, JAX's version and the CPU, so that later processes load it at once (with or
without a compiler).
Where no compiler works, :func:`library` says so once in a warning and the event path uses
the next CPU runtime of :data:`bp_conv_ext.kernels.CPU` (the numba kernels).

Needs ``jax.ffi`` (JAX 0.4.36 and later, the BrainPy 2.8 stack); the BrainPy 2.6 stack keeps
its taichi kernels.
"""
import ctypes
import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
import warnings

import jax
import jax.numpy as jnp
import numpy as np

NAME = 'c++'

#: ``backend='auto'`` takes these kernels for ``bool`` input at or below this density:
#: measured 2.0-3.3x faster than the best dense convolution at 0.1, 2.4-7.2x below
#: (docs/performance.md).
AUTO_DENSITY = 0.1

#: Split over the batch on several devices by the sharding rule of ``bp_conv_ext._event``.
SHARDING = 'split'

SOURCE = pathlib.Path(__file__).with_name('event_cpu.cc')

#: The FFI handlers of ``event_cpu.cc`` and the names their targets are registered under.
_SYMBOLS = {'forward': 'bp_conv_ext_event_forward',
            'kernel_grad': 'bp_conv_ext_event_kernel_grad'}

#: Dtypes the kernels compute in; others are computed in float32 and cast back.
_TYPES = (np.dtype(np.float32), np.dtype(np.float64))


def compiler():
    """The C++ compiler used: ``$CXX``, else the first of ``c++``, ``g++``, ``clang++`` found
    (``None`` if none is)."""
    if os.environ.get('CXX'):
        return os.environ['CXX']
    for name in ('c++', 'g++', 'clang++'):
        if shutil.which(name):
            return name
    return None


def cache_dir() -> pathlib.Path:
    """Where built libraries are kept: ``$BP_CONV_EXT_CACHE``, else ``~/.cache/bp_conv_ext``
    (under ``$XDG_CACHE_HOME`` where that is set)."""
    if os.environ.get('BP_CONV_EXT_CACHE'):
        return pathlib.Path(os.environ['BP_CONV_EXT_CACHE'])
    base = os.environ.get('XDG_CACHE_HOME') or pathlib.Path.home() / '.cache'
    return pathlib.Path(base) / 'bp_conv_ext'


def _flags():
    return ['-O3', '-std=c++17', '-shared', '-fPIC', '-pthread', '-march=native',
            f'-I{jax.ffi.include_dir()}']


def _cpu():
    """What identifies this CPU's instruction set (``-march=native`` builds for it)."""
    try:
        with open('/proc/cpuinfo') as info:
            lines = [line for line in info if line.startswith(('model name', 'flags'))]
        return ''.join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


class BuildError(RuntimeError):
    """The kernels could not be compiled or loaded."""


def _library_path() -> pathlib.Path:
    """Where the library for this source, these flags, this JAX and this CPU is cached."""
    key = hashlib.sha256('\0'.join([SOURCE.read_text(), *_flags(), jax.__version__,
                                    _cpu()]).encode()).hexdigest()[:16]
    return cache_dir() / f'event_cpu-{key}.so'


def _build(path: pathlib.Path):
    cxx = compiler()
    if cxx is None:
        raise BuildError("no C++ compiler found (set CXX, or install g++ or clang++)")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Built under a temporary name and renamed: processes building at once never load a
    # half-written library.
    handle, partial = tempfile.mkstemp(suffix='.so.partial', dir=path.parent)
    os.close(handle)
    try:
        done = subprocess.run([cxx, *_flags(), str(SOURCE), '-o', partial],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise BuildError(f"the compiler {cxx!r} failed: {done.stderr.strip()[-2000:]}")
        os.replace(partial, path)
    except (OSError, subprocess.SubprocessError) as error:
        raise BuildError(f"the compiler {cxx!r} does not run ({error})") from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)


@functools.lru_cache(maxsize=None)
def library():
    """The loaded kernel library with its FFI targets registered, built first if it is not
    cached; ``None`` (after one warning) where it cannot be built or JAX has no ``jax.ffi``."""
    if not hasattr(jax, 'ffi'):
        return None
    path = _library_path()
    try:
        if not path.exists():
            _build(path)
        lib = ctypes.cdll.LoadLibrary(str(path))
    except (BuildError, OSError) as error:
        warnings.warn(f"bp_conv_ext: the C++ event-driven kernels are not available: {error}. "
                      f"The event-driven path uses the next CPU kernels instead.",
                      RuntimeWarning, stacklevel=2)
        return None
    for symbol in _SYMBOLS.values():
        jax.ffi.register_ffi_target(symbol, jax.ffi.pycapsule(getattr(lib, symbol)),
                                    platform='cpu')
    return lib


def threads() -> int:
    """Threads the kernels run on: the CPUs this process may use."""
    if hasattr(os, 'sched_getaffinity'):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _kernel(kind):
    def call(x, operand, params, *, outs, stride, low, lhs_dilation, rhs_dilation, groups,
             **static):
        # ``params`` carries the same values as the static ones, which the FFI call takes as
        # attributes.
        if library() is None:
            raise RuntimeError("the C++ event-driven kernels are not available here (see the "
                               "warning above)")
        out = outs[0]
        dtype = out.dtype if np.dtype(out.dtype) in _TYPES else np.dtype(np.float32)
        if x.dtype != jnp.bool_:
            x = x.astype(dtype)
        result = jax.ffi.ffi_call(_SYMBOLS[kind], jax.ShapeDtypeStruct(out.shape, dtype))(
            x, operand.astype(dtype), stride=np.int64(stride), low=np.int64(low),
            lhs_dilation=np.int64(lhs_dilation), rhs_dilation=np.int64(rhs_dilation),
            groups=np.int64(groups), threads=np.int64(threads()))
        return [result.astype(out.dtype)]
    return call


forward = _kernel('forward')
kernel_grad = _kernel('kernel_grad')
