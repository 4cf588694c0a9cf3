"""The C++ kernels for the CPU (event-driven convolution, spiking layer), called through the
XLA FFI.

The sources are next to this module: ``event_cpu.cc``, the event-driven convolution and its
kernel gradient (output-stationary sums in vector registers over compacted spike lists, threads
over the batch), and ``spiking_cpu.cc``, the spiking layer (a convolution into LIF neurons)
over a whole sequence, forward and backward; their header comments describe the kernels, and
``cpu_common.h`` holds what they share. They are compiled into one library on first use with
the machine's C++17 compiler (``$CXX``, a command line such as ``"ccache g++"``, else ``c++``,
``g++`` or ``clang++``) for the machine's own instruction set, and the library is cached in
``$BP_CONV_EXT_CACHE`` (default ``~/.cache/bp_conv_ext``) under a key of the source, the flags,
JAX's version and the CPU, so that later processes load it at once (with or without a
compiler).

A build is written under a temporary name and loaded; only then is it renamed into place, with
a stamp beside it (its size and SHA-256, written the same way). Both get the permissions the
umask gives new files: a cache folder shared on purpose between users serves them one build
(the default cache is each user's own). Share one only with users you trust: the stamp detects
damaged files, but whoever can write in the folder chooses the code that processes load. A
later process loads a cached library only if it matches its stamp, checked by reading the file,
not by mapping it (mapping a truncated library kills the process with ``SIGBUS``); one that
does not match, or does not load, or lacks a kernel symbol, is rebuilt, once. Where no compiler
works (or that rebuild fails), :func:`library` says so once in a warning; the event path then
uses the next CPU runtime of :data:`bp_conv_ext.event.registry.SETS` (the numba kernels) and the
spiking layer the ``'jax'`` kernels of :func:`bp_conv_ext.ops.fused.conv_lif`.

Runs with the XLA FFI of every supported JAX: ``jax.ffi`` (0.4.36 and later) or
``jax.extend.ffi`` (0.4.33, the BrainPy 2.6 stack).
"""
import _ctypes
import contextlib
import ctypes
import functools
import hashlib
import json
import os
import pathlib
import platform
import secrets
import shlex
import shutil
import subprocess
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np

try:
    from jax import ffi as _ffi
except ImportError:              # JAX 0.4.33 (the BrainPy 2.6 stack)
    from jax.extend import ffi as _ffi  # type: ignore[attr-defined,no-redef,unused-ignore]

#: The sources compiled into the library, and the header they include.
SOURCES = tuple(pathlib.Path(__file__).with_name(name) for name in ('event_cpu.cc',
                                                                    'spiking_cpu.cc'))
HEADERS = (pathlib.Path(__file__).with_name('cpu_common.h'),)

#: The FFI handlers of the library and the names their targets are registered under.
_SYMBOLS = {'forward': 'bp_conv_ext_event_forward',
            'kernel_grad': 'bp_conv_ext_event_kernel_grad',
            'conv_lif_forward': 'bp_conv_ext_conv_lif_forward',
            'conv_lif_backward': 'bp_conv_ext_conv_lif_backward'}

#: Dtypes the kernels compute in; others are computed in float32 and cast back.
_TYPES = (np.dtype(np.float32), np.dtype(np.float64))


def compiler():
    """The C++ compiler's command line, a list of words: ``$CXX`` split as a shell would split
    it (``"ccache g++"``, ``"g++ -w"``), else the first of ``c++``, ``g++``, ``clang++`` found;
    ``None`` if none is.

    Raises
    ------
    BuildError
        If ``$CXX`` is not a command line (an unclosed quote).
    """
    if os.environ.get('CXX', '').strip():
        try:
            return shlex.split(os.environ['CXX'])
        except ValueError as error:
            raise BuildError(f"$CXX (={os.environ['CXX']!r}) is not a command line: "
                             f"{error}") from None
    for name in ('c++', 'g++', 'clang++'):
        if shutil.which(name):
            return [name]
    return None


def cache_dir() -> pathlib.Path:
    """Where built libraries are kept: ``$BP_CONV_EXT_CACHE``, else ``~/.cache/bp_conv_ext``
    (under ``$XDG_CACHE_HOME`` where that is set)."""
    if os.environ.get('BP_CONV_EXT_CACHE'):
        return pathlib.Path(os.environ['BP_CONV_EXT_CACHE'])
    base = os.environ.get('XDG_CACHE_HOME') or pathlib.Path.home() / '.cache'
    return pathlib.Path(base) / 'bp_conv_ext'


def _flags():
    # No contraction of products and sums into FMAs: the neurons' arithmetic rounds as
    # JAX's does, step by step.
    return ['-O3', '-std=c++17', '-shared', '-fPIC', '-pthread', '-march=native',
            '-ffp-contract=off', f'-I{_ffi.include_dir()}']


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


@functools.cache
def cache_key() -> str:
    """The cache key: a hash of the sources, the flags, JAX's version and the CPU."""
    texts = [path.read_text() for path in SOURCES + HEADERS]
    return hashlib.sha256('\0'.join([*texts, *_flags(), jax.__version__,
                                     _cpu()]).encode()).hexdigest()


def library_path() -> pathlib.Path:
    """Where the library for this source, these flags, this JAX and this CPU is cached (an
    absolute path: ``dlopen`` looks a bare file name up in the system's library folders)."""
    return cache_dir().absolute() / f'kernels_cpu-{cache_key()[:16]}.so'


def _stamp_path(path: pathlib.Path) -> pathlib.Path:
    """The stamp of the library at ``path``, written after it was built and loaded."""
    return path.with_suffix('.stamp')


def digest(path) -> dict:
    """The size and SHA-256 of the file at ``path``, read (not mapped)."""
    sha = hashlib.sha256()
    size = 0
    with open(path, 'rb') as file:
        for block in iter(lambda: file.read(1 << 20), b''):
            sha.update(block)
            size += len(block)
    return {'size': size, 'sha256': sha.hexdigest()}


def _new_file(folder: pathlib.Path, suffix: str):
    """A new, empty file in ``folder`` under a unique temporary name: ``(descriptor, path)``.

    Created with the permissions the process's umask gives new files (as the compiler's own
    output is), not ``tempfile.mkstemp``'s owner-only ``0600``: a library and its stamp in a
    cache shared on purpose between users (``$BP_CONV_EXT_CACHE`` naming a folder they can all
    read) are then read and loaded by every one of them, where an unreadable stamp made each
    user rebuild the library over the last user's.
    """
    for _ in range(100):
        partial = folder / f'tmp{secrets.token_hex(8)}{suffix}'
        try:
            return os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), str(partial)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder}")


def write_stamp(path: pathlib.Path, record: dict):
    """Writes the stamp of the library at ``path`` under a temporary name and renames it."""
    handle, partial = _new_file(path.parent, '.stamp.partial')
    try:
        with os.fdopen(handle, 'w') as file:
            json.dump(record, file, indent=1)
        os.replace(partial, _stamp_path(path))
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _verify(path: pathlib.Path):
    """Why the cached library at ``path`` must not be loaded, or ``None`` if it may: its stamp
    must name this cache key and the library's size and SHA-256. Checked by reading the files,
    never by mapping them: loading a truncated library kills the process (``SIGBUS``)."""
    if not path.exists():
        return "it is not built"
    try:
        stamp = json.loads(_stamp_path(path).read_text())
        expected = {name: stamp[name] for name in ('key', 'size', 'sha256')}
    except (OSError, ValueError, TypeError, KeyError) as error:
        return f"its stamp {_stamp_path(path)} is missing or unreadable ({error!r})"
    if expected['key'] != cache_key():
        return f"its stamp {_stamp_path(path)} is for another build"
    try:
        if path.stat().st_size != expected['size']:
            return (f"it has {path.stat().st_size} bytes, its stamp says {expected['size']} "
                    f"(a truncated or replaced file)")
        if digest(path)['sha256'] != expected['sha256']:
            return "its SHA-256 differs from its stamp's (a damaged or replaced file)"
    except OSError as error:
        return f"it cannot be read ({error})"
    return None


def _load(path):
    """The library at ``path`` loaded, once it has every kernel symbol.

    Raises
    ------
    BuildError
        If it does not load or lacks a symbol of :data:`_SYMBOLS`.
    """
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as error:
        raise BuildError(f"the library {path} does not load ({error})") from None
    missing = [symbol for symbol in _SYMBOLS.values() if not hasattr(lib, symbol)]
    if missing:
        try:
            _ctypes.dlclose(lib._handle)
        except (AttributeError, OSError):
            pass
        raise BuildError(f"the library {path} lacks the kernel symbol(s) "
                         f"{', '.join(missing)}")
    return lib


@contextlib.contextmanager
def _locked(path: pathlib.Path):
    """Holds an exclusive lock on ``path``'s lock file while a library and its stamp are put
    in place, so that processes building at once leave a matching pair. Where there are no
    such locks (no ``fcntl``, a file system without them) it goes on unlocked: a mismatched
    pair fails its check in the next process, which rebuilds it."""
    fcntl: types.ModuleType | None
    try:
        import fcntl
    except ImportError:
        fcntl = None
    # Opened for reading: a user who may replace the library in a shared cache but not write
    # another user's lock file still takes the lock.
    with open(os.open(path.with_suffix('.lock'), os.O_RDONLY | os.O_CREAT, 0o666)) as file:
        if fcntl is not None:
            with contextlib.suppress(OSError):      # e.g. ENOLCK on some network file systems
                fcntl.flock(file, fcntl.LOCK_EX)
        yield       # closing the file releases the lock


def _build(path: pathlib.Path):
    """Compiles the library, loads it, then puts it and its stamp at ``path``; returns it.

    Raises
    ------
    BuildError
        If no compiler runs, the compiler fails, or what it wrote does not load or lacks a
        kernel symbol.
    """
    command = compiler()
    if command is None:
        raise BuildError("no C++ compiler found (set CXX, or install g++ or clang++)")
    shown = shlex.join(command)
    # Built and checked under a temporary name, then renamed: processes building at once
    # never see a half-written library, and only a library that loaded gets a stamp.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = _new_file(path.parent, '.so.partial')
        os.close(handle)
    except OSError as error:
        raise BuildError(f"the library cannot be written to {path.parent} ({error})") from None
    objects = [f'{partial}.{i}.o' for i in range(len(SOURCES))]
    try:
        # Each source compiled at once by a compiler process of its own, then linked.
        _run_all(shown, [[*command, *_flags(), '-c', str(source), '-o', output]
                         for source, output in zip(SOURCES, objects)])
        _run_all(shown, [[*command, *_flags(), *objects, '-o', partial]])
        try:
            lib = _load(partial)
        except BuildError as error:
            raise BuildError(f"the compiler {shown!r} exited normally, but {error}") from None
        record = {'key': cache_key(), **digest(partial), 'compiler': shown,
                  'jax': jax.__version__}
        with _locked(path):
            os.replace(partial, path)
            write_stamp(path, record)
        return lib
    except OSError as error:
        raise BuildError(f"the library cannot be written to {path.parent} ({error})") from None
    finally:
        for leftover in (partial, *objects):
            if os.path.exists(leftover):
                os.remove(leftover)


def _run_all(shown, commands, timeout=600):
    """Runs the compiler ``commands`` side by side and waits for them all.

    Raises
    ------
    BuildError
        If one does not start, does not finish within ``timeout`` seconds, or fails (its
        error output, the first failure's).
    """
    jobs = []
    try:
        for command in commands:
            jobs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, text=True))
        errors = [job.communicate(timeout=timeout)[1] for job in jobs]
    except (OSError, subprocess.SubprocessError) as error:
        raise BuildError(f"the compiler {shown!r} does not run ({error})") from None
    finally:
        for job in jobs:
            if job.poll() is None:
                job.kill()
                job.wait()
    for job, message in zip(jobs, errors):
        if job.returncode != 0:
            raise BuildError(f"the compiler {shown!r} failed: {message.strip()[-2000:]}")


@functools.cache
def library():
    """The loaded kernel library with its FFI targets registered, built first where the cache
    holds none that passes its stamp; ``None`` (after one warning) where it cannot be built.

    A cached library is loaded only if its stamp (written after a build that loaded) matches
    its size and SHA-256. One that fails that check, or fails to load, is rebuilt once; if that
    fails too the event path falls back to the next CPU kernels.
    """
    cached = None           # why the cached library was not used, where there is one
    try:
        path = library_path()
        lib = None
        reason = _verify(path)
        if reason is None:
            try:
                lib = _load(path)
            except BuildError as error:
                cached = str(error)
        elif path.exists():
            cached = f"the cached library {path} was not loaded: {reason}"
        if lib is None:
            lib = _build(path)
    except (BuildError, OSError) as error:
        problem = f"{cached}, and rebuilding it failed: {error}" if cached else str(error)
        warnings.warn(f"bp_conv_ext: the C++ event-driven kernels are not available: "
                      f"{problem}. The event-driven path uses the next CPU kernels instead.",
                      RuntimeWarning, stacklevel=2)
        return None
    for symbol in _SYMBOLS.values():
        _ffi.register_ffi_target(symbol, _ffi.pycapsule(getattr(lib, symbol)), platform='cpu')
    return lib


def threads() -> int:
    """Threads the kernels run on: the CPUs this process may use."""
    if hasattr(os, 'sched_getaffinity'):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _call(name, result):
    """``jax.ffi.ffi_call(name, result)``; JAX 0.4.33's takes the operands in the same call."""
    if hasattr(jax, 'ffi'):
        return jax.ffi.ffi_call(name, result)
    return lambda *args, **attrs: _ffi.ffi_call(name, result, *args, **attrs)


def _kernel(kind):
    def call(x, operand, params, *, outs, spec):
        # ``params`` carries the same values as ``spec``, which the FFI call takes as
        # attributes.
        c = spec.conv
        library_ready()
        out = outs[0]
        dtype = out.dtype if np.dtype(out.dtype) in _TYPES else np.dtype(np.float32)
        if x.dtype != jnp.bool_:
            x = x.astype(dtype)
        result = _call(_SYMBOLS[kind], jax.ShapeDtypeStruct(out.shape, dtype))(
            x, operand.astype(dtype), stride=np.int64(c.stride), low=np.int64(c.padding[0]),
            lhs_dilation=np.int64(c.lhs_dilation), rhs_dilation=np.int64(c.rhs_dilation),
            groups=np.int64(c.groups), threads=np.int64(threads()))
        return [result.astype(out.dtype)]
    return call


forward = _kernel('forward')
kernel_grad = _kernel('kernel_grad')


def _ffi_call(name, results, vmap_method='sequential'):
    """``jax.ffi.ffi_call`` of the library's handler ``name``, mapped one call per element
    under ``jax.vmap``; JAX 0.4.33's takes the operands in the same call."""
    library_ready()
    if hasattr(jax, 'ffi'):
        return jax.ffi.ffi_call(_SYMBOLS[name], results, vmap_method=vmap_method)
    return lambda *args, **attrs: _ffi.ffi_call(_SYMBOLS[name], results, *args,
                                                vectorized=False, **attrs)


def library_ready():
    """Raises ``RuntimeError`` where the library is not available (see :func:`library`)."""
    if library() is None:
        raise RuntimeError("the C++ CPU kernels are not available here (see the warning "
                           "above)")


#: The surrogates whose derivative the spiking backward kernel computes, by kind (``0``: given).
SLOPES = {'sigmoid': 1, 'arctan': 2, 'inv_square': 3, 'relu': 4, 'gaussian': 5}


def _spiking_attrs(pads, rhs_dilation, neurons):
    return dict(low=np.int64(pads[0]), rhs_dilation=np.int64(rhs_dilation),
                **{name: np.float64(neurons[name]) for name in ('a', 'v_rest', 'v_th',
                                                                'v_reset', 'r', 'c', 'alpha',
                                                                'beta')},
                **{name: np.int64(neurons[name]) for name in ('soft', 'reset_first',
                                                              'surrogate', 'detach', 'slope')},
                threads=np.int64(threads()))


def conv_lif_forward(xs, w, b, v0, *, pads, rhs_dilation, neurons, save):
    """The spiking layer over the sequence ``xs`` ``[T, N, H, C]`` (``bool`` or ``float32``)
    with kernel ``w`` ``[K, C, O]``, bias ``b`` ``[O]`` and initial potentials ``v0``
    ``[N, P, O]`` (all ``float32``): ``(spikes, v, u)``, the spikes ``[T, N, P, O]`` as
    ``bool``, the final potentials and, with ``save``, the potentials before each step's reset
    (``[T, N, P, O]``; else an empty array). ``neurons``: the constants ``a`` (``1 - decay``),
    ``v_rest``, ``v_th``, ``v_reset``, ``r``, ``c`` (``v_th - v_reset``), the flags ``soft``,
    ``reset_first``, ``surrogate``, ``detach`` and the surrogate's derivative that the
    backward computes, ``slope`` (its kind: :data:`SLOPES`), ``alpha``, ``beta`` (see
    ``spiking_cpu.cc``)."""
    sequence = xs.shape[:2] + v0.shape[1:]
    results = [jax.ShapeDtypeStruct(sequence, np.bool_),
               jax.ShapeDtypeStruct(v0.shape, np.float32),
               jax.ShapeDtypeStruct(sequence if save else (0,), np.float32)]
    return _ffi_call('conv_lif_forward', results)(
        xs, w, b, v0, **_spiking_attrs(pads, rhs_dilation, neurons))


def conv_lif_backward(xs, w, u, g, ds, dv, v0, g0, *, pads, rhs_dilation, neurons,
                      input_grad):
    """The gradients ``(dx, dw, db, dv0)`` of the spiking layer from the saved potentials
    ``u``, the surrogate's derivative ``g`` at them and ``g0`` at ``v0`` (empty arrays where
    the spikes pass no gradient or the kernel computes it: ``neurons['slope']``), the
    gradients ``ds`` of the spikes (empty where they pass none) and ``dv`` of the final
    potentials; ``dx`` only with ``input_grad`` (else an empty array)."""
    results = [jax.ShapeDtypeStruct(xs.shape if input_grad else (0,), np.float32),
               jax.ShapeDtypeStruct(w.shape, np.float32),
               jax.ShapeDtypeStruct(w.shape[2:], np.float32),
               jax.ShapeDtypeStruct(dv.shape, np.float32)]
    return _ffi_call('conv_lif_backward', results)(
        xs, w, u, g, ds, dv, v0, g0, **_spiking_attrs(pads, rhs_dilation, neurons))
