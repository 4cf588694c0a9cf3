"""The C++ kernels' cache (bp_conv_ext/event/kernels/cxx_cpu.py): what a later process does with a
truncated library, a garbage file or a library without the kernel symbols at the cache path
(it rebuilds it, or falls back to the numba kernels after one warning, and never crashes), how
``$CXX`` is read, and that processes building at once never load a half-written library.

Each case runs fresh processes on a cache of its own. One real build (``built``) is shared;
the rebuilds are made by "compilers" that are shell scripts: one serves that library (as a
compiler cache would), others write garbage or a library without the symbols.
"""
import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import time

import pytest
from helpers.cases import CXX_FALLBACK

ROOT = pathlib.Path(__file__).resolve().parents[2]
SYSTEM_CXX = next((name for name in ('c++', 'g++', 'clang++') if shutil.which(name)), None)
needs_compiler = pytest.mark.skipif(SYSTEM_CXX is None, reason="no C++ compiler on this machine")

# A fresh process: the default backend ('auto') on sparse spikes first (the first call that
# needs the kernels), then the event path; whether both equal the dense path, which kernels
# ran and the warnings about the C++ kernels.
_PROBE = """
import json, warnings
warnings.simplefilter('always')
with warnings.catch_warnings(record=True) as caught:
    import numpy as np, jax.numpy as jnp
    from bp_conv_ext import conv1d, event_kernel
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((2, 30, 8)) < 0.05)
    w = jnp.asarray(rng.standard_normal((3, 8, 5)), jnp.float32)
    auto = np.asarray(conv1d(x, w))
    event = np.asarray(conv1d(x, w, backend='event'))
    dense = np.asarray(conv1d(x, w, backend='dense'))
    same = bool(np.allclose(auto, dense, atol=1e-5) and np.allclose(event, dense, atol=1e-5))
    kernel = event_kernel('cpu')
notes = [str(w.message) for w in caught if 'C++ event-driven kernels' in str(w.message)]
print(json.dumps({'kernel': kernel, 'same': same, 'warnings': notes}))
"""

# Compilers: each finds the output file after -o (of the run that links). `serve` copies
# $SERVED_LIBRARY there (a compiler cache's hit) and counts its runs in $COMPILER_LOG;
# `garbage` writes text.
_SERVE = """#!/bin/sh
while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done
echo run >> "$COMPILER_LOG"
cp "$SERVED_LIBRARY" "$out"
"""
_GARBAGE = """#!/bin/sh
while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done
echo run >> "$COMPILER_LOG"
yes 'not a shared library' | head -c 20000 > "$out"
"""
# Writes half of $SERVED_LIBRARY, says so ($HALF_WRITTEN), waits for $GO (at most a minute),
# then writes the rest.
_SLOW = """#!/bin/sh
while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done
size=$(wc -c < "$SERVED_LIBRARY")
head -c $((size / 2)) "$SERVED_LIBRARY" > "$out"
touch "$HALF_WRITTEN"
i=0
while [ ! -e "$GO" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i + 1)); done
tail -c +$((size / 2 + 1)) "$SERVED_LIBRARY" >> "$out"
"""


#: Prefixed to each compiler: a run with ``-c`` (one source to an object file) writes an
#: empty file; the run that links them is the one that acts, once a build.
_OBJECTS = """#!/bin/sh
for arg in "$@"; do
  if [ "$arg" = -c ]; then
    while [ $# -gt 0 ]; do [ "$1" = -o ] && : > "$2"; shift; done
    exit 0
  fi
done
"""


def _script(folder, name, text):
    path = pathlib.Path(folder) / name
    path.write_text(_OBJECTS + text.replace('#!/bin/sh\n', '', 1))
    path.chmod(0o755)
    return str(path)


def _environment(cache, cxx, **extra):
    environment = {name: value for name, value in os.environ.items() if name != 'CXX'}
    environment.update(BP_CONV_EXT_CACHE=str(cache), **extra)
    if cxx is not None:
        environment['CXX'] = cxx
    return environment


def _probe(cache, cxx=None, umask=None, **extra):
    """Runs the probe in a fresh process (with ``umask``, if given); its result as a dict. A
    crash fails the test."""
    code = _PROBE if umask is None else f'import os; os.umask({umask:#o})\n{_PROBE}'
    done = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                          env=_environment(cache, cxx, **extra),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (f"the process exited with {done.returncode}: "
                                  f"{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _runs(log):
    return len(log.read_text().splitlines()) if log.exists() else 0


def _matches_its_stamp(library):
    from bp_conv_ext.event.kernels import cxx_cpu
    stamp = json.loads(library.with_suffix('.stamp').read_text())
    return (stamp['size'], stamp['sha256']) == tuple(cxx_cpu.digest(library).values())


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """A library built by the machine's compiler, in a folder of its own with its stamp: the
    suite's (tests/event/test_cxx_kernels.py checks a fresh process's build), or where the suite has
    none, or one built with another ``$CXX``, one built in a fresh process."""
    if SYSTEM_CXX is None:
        pytest.skip("no C++ compiler on this machine")
    cache = tmp_path_factory.mktemp('built')
    from bp_conv_ext.event.kernels import cxx_cpu
    # (The library loaded by a process that built it was loaded under its temporary name.)
    if 'CXX' not in os.environ and cxx_cpu.library() is not None:
        library = cxx_cpu.library_path()
        for path in (library, library.with_suffix('.stamp')):
            shutil.copy2(path, cache / path.name)
        return cache / library.name
    result = _probe(cache)
    assert (result['kernel'], result['same'], result['warnings']) == ('c++', True, []), result
    (library,) = cache.glob('*.so')
    return library


@pytest.fixture
def serve(built, tmp_path):
    """The environment of the compiler that serves ``built``, and the log of its runs."""
    log = tmp_path / 'compiler.log'
    return dict(cxx=_script(tmp_path, 'serve', _SERVE), SERVED_LIBRARY=str(built),
                COMPILER_LOG=str(log)), log


@pytest.mark.parametrize('size, compiler', [(1_000, 'working'), (150_000, 'working'),
                                           (60_000, 'missing')])
def test_a_truncated_cached_library_is_rebuilt_or_replaced_never_loaded(built, serve, tmp_path,
                                                                        size, compiler):
    # Loading a truncated library killed the process (SIGBUS) before anything was printed.
    cache = tmp_path / 'cache'
    shutil.copytree(built.parent, cache)
    library = cache / built.name
    os.truncate(library, size)
    environment, log = serve
    if compiler == 'missing':
        environment = dict(environment, cxx='/nonexistent/c++')
    result = _probe(cache, **environment)
    assert result['same'], result
    if compiler == 'working':
        # Rebuilt once, silently, with a stamp that matches it.
        assert (result['kernel'], result['warnings'], _runs(log)) == ('c++', [], 1), result
        assert library.read_bytes() == built.read_bytes() and _matches_its_stamp(library)
    else:
        # No compiler to rebuild it: the numba kernels, after one warning that says why.
        assert result['kernel'] == CXX_FALLBACK and len(result['warnings']) == 1, result
        assert (f"has {size} bytes, its stamp says {built.stat().st_size}"
                in result['warnings'][0]), result
        assert '/nonexistent/c++' in result['warnings'][0]


def test_a_garbage_library_a_compiler_wrote_is_rebuilt_by_the_next_process(serve, tmp_path):
    # A compiler that exits normally but writes garbage: the numba kernels after one warning.
    cache = tmp_path / 'cache'
    log = tmp_path / 'garbage.log'
    first = _probe(cache, cxx=_script(tmp_path, 'garbage', _GARBAGE), COMPILER_LOG=str(log))
    assert (first['kernel'], first['same'], len(first['warnings']), _runs(log)) == \
        (CXX_FALLBACK, True, 1, 1), first
    # A later process with a working compiler builds the library (before, the garbage stayed
    # in the cache and every process warned again).
    environment, log = serve
    result = _probe(cache, **environment)
    assert (result['kernel'], result['same'], result['warnings'], _runs(log)) == \
        ('c++', True, [], 1), result
    assert "exited normally, but the library" in first['warnings'][0]
    assert "does not load" in first['warnings'][0]


@pytest.fixture(scope='module')
def without_symbols(tmp_path_factory):
    """A loadable shared library that lacks the kernel symbols."""
    if SYSTEM_CXX is None:
        pytest.skip("no C++ compiler on this machine")
    folder = tmp_path_factory.mktemp('without_symbols')
    (folder / 'other.cc').write_text('extern "C" int other_function() { return 1; }\n')
    subprocess.run([SYSTEM_CXX, '-shared', '-fPIC', str(folder / 'other.cc'), '-o',
                    str(folder / 'other.so')], check=True, capture_output=True, timeout=120)
    return folder / 'other.so'


@pytest.mark.parametrize('stamped', [False, True], ids=['unstamped', 'stamped'])
def test_a_cached_library_without_the_kernel_symbols_is_rebuilt(built, without_symbols, serve,
                                                                tmp_path, stamped):
    # Before, loading it raised AttributeError: undefined symbol: bp_conv_ext_event_forward.
    # Unstamped, it is rebuilt without being loaded; stamped (as if its build had passed), it
    # is loaded, found without the symbols and rebuilt.
    cache = tmp_path / 'cache'
    cache.mkdir()
    library = cache / built.name
    shutil.copy(without_symbols, library)
    if stamped:
        from bp_conv_ext.event.kernels import cxx_cpu
        cxx_cpu.write_stamp(library, {'key': cxx_cpu.cache_key(), **cxx_cpu.digest(library)})
    environment, log = serve
    result = _probe(cache, **environment)
    assert (result['kernel'], result['same'], result['warnings'], _runs(log)) == \
        ('c++', True, [], 1), result
    assert library.read_bytes() == built.read_bytes() and _matches_its_stamp(library)


def test_a_compiler_that_writes_a_library_without_the_symbols_leads_to_one_warning(
        without_symbols, tmp_path):
    cache = tmp_path / 'cache'
    log = tmp_path / 'compiler.log'
    result = _probe(cache, cxx=_script(tmp_path, 'serve', _SERVE),
                    SERVED_LIBRARY=str(without_symbols), COMPILER_LOG=str(log))
    assert (result['kernel'], result['same'], len(result['warnings'])) == (CXX_FALLBACK, True, 1)
    assert 'lacks the kernel symbol(s) bp_conv_ext_event_forward' in result['warnings'][0]
    assert _runs(log) == 1 and not any(cache.glob('*.so')) and not any(cache.glob('*.stamp'))


@pytest.mark.parametrize('cxx, command', [
    ('ccache g++', ['ccache', 'g++']),
    ('g++ -w', ['g++', '-w']),
    ('"/opt/my compilers/g++" -O0', ['/opt/my compilers/g++', '-O0']),
    ('  clang++  ', ['clang++']),
])
def test_cxx_is_split_as_a_command_line(monkeypatch, cxx, command):
    from bp_conv_ext.event.kernels import cxx_cpu
    monkeypatch.setenv('CXX', cxx)
    assert cxx_cpu.compiler() == command


def test_an_unclosed_quote_in_cxx_is_named(monkeypatch):
    from bp_conv_ext.event.kernels import cxx_cpu
    monkeypatch.setenv('CXX', '"g++ -w')
    with pytest.raises(cxx_cpu.BuildError, match=r"\$CXX \(='\"g\+\+ -w'\) is not a command line"):
        cxx_cpu.compiler()


@needs_compiler
def test_the_kernels_build_with_a_compiler_given_with_options(serve, tmp_path):
    # CXX="g++ -w" was run as a program named "g++ -w": the numba kernels, after a warning.
    environment, log = serve
    cxx = environment.pop('cxx') + ' -w'
    result = _probe(tmp_path / 'cache', cxx=cxx, **environment)
    assert (result['kernel'], result['same'], result['warnings'], _runs(log)) == \
        ('c++', True, [], 1), result
    (library,) = (tmp_path / 'cache').glob('*.so')
    assert json.loads(library.with_suffix('.stamp').read_text())['compiler'] == cxx


def test_processes_building_at_once_never_load_a_half_written_library(built, serve, tmp_path):
    # One process's compiler stops halfway through writing the library; another process then
    # builds and loads its own; the first finishes. Both run the C++ kernels, and the cache
    # holds one library, which matches its stamp, and no partial files.
    cache = tmp_path / 'cache'
    half, go = tmp_path / 'half-written', tmp_path / 'go'
    slow = subprocess.Popen(
        [sys.executable, '-c', _PROBE], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        env=_environment(cache, _script(tmp_path, 'slow', _SLOW), SERVED_LIBRARY=str(built),
                         HALF_WRITTEN=str(half), GO=str(go)))
    try:
        for _ in range(1200):
            if half.exists() or slow.poll() is not None:
                break
            time.sleep(0.05)
        assert half.exists(), f"the slow compiler did not start: {slow.communicate()[1][-3000:]}"
        environment, log = serve
        result = _probe(cache, **environment)
        assert (result['kernel'], result['same'], result['warnings'], _runs(log)) == \
            ('c++', True, [], 1), result
    finally:
        go.touch()
        out, err = slow.communicate(timeout=600)
    assert slow.returncode == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert (result['kernel'], result['same'], result['warnings']) == ('c++', True, []), result
    (library,) = cache.glob('*.so')
    assert _matches_its_stamp(library) and not any(cache.glob('*.partial'))


def test_the_library_and_its_stamp_get_the_permissions_the_umask_gives(serve, tmp_path):
    # A cache shared between users serves them one build: the stamp was always 0600 (the
    # library too, with a compiler that writes into the file it is given), so another user
    # could not read it and rebuilt the library over the last one's.
    environment, _log = serve
    umask = 0o027
    result = _probe(tmp_path, umask=umask, **environment)
    assert (result['kernel'], result['same'], result['warnings']) == ('c++', True, []), result
    (library,) = tmp_path.glob('*.so')
    modes = {path.suffix: stat.S_IMODE(path.stat().st_mode)
             for path in (library, library.with_suffix('.stamp'), library.with_suffix('.lock'))}
    assert modes == dict.fromkeys(['.so', '.stamp', '.lock'], 0o666 & ~umask)


def test_the_suite_builds_its_kernels_in_a_cache_of_its_own(monkeypatch):
    # tests/conftest.py names the cache before the package is imported; before, the suite
    # built the library in the user's own cache.
    from bp_conv_ext.event.kernels import cxx_cpu
    ours = cxx_cpu.cache_dir()
    monkeypatch.delenv('BP_CONV_EXT_CACHE', raising=False)
    users = cxx_cpu.cache_dir()
    monkeypatch.undo()
    assert ours.resolve() != users.resolve()
    if cxx_cpu.library() is not None:
        assert cxx_cpu.library_path().parent == ours.absolute() and cxx_cpu.library_path().exists()
