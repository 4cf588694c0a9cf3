"""The C++ event-driven CPU kernels (bp_conv_ext/event/kernels/cxx_cpu.py, event_cpu.cc): how they
are built, cached and replaced by the numba kernels where no compiler works, and what the
option-grid tests elsewhere do not reach (wide and odd channel blocks, dtypes, threads)."""
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.cases import CPU_KERNELS, CXX_FALLBACK, reference_conv1d

from bp_conv_ext import conv1d
from bp_conv_ext.event.kernels import cxx_cpu

pytestmark = pytest.mark.skipif('c++' not in CPU_KERNELS,
                                reason="no working C++ compiler here")

ROOT = pathlib.Path(__file__).resolve().parents[2]

# A fresh process: which kernels run, the warnings it gave, whether the event path equals the
# dense one, and whether the C++ kernels can still be forced.
_PROBE = """
import warnings
warnings.simplefilter('always')
with warnings.catch_warnings(record=True) as caught:
    import numpy as np, jax.numpy as jnp
    from bp_conv_ext import conv1d, event_kernel, use_event_kernels
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((2, 30, 8)) < 0.2)
    w = jnp.asarray(rng.standard_normal((3, 8, 5)), jnp.float32)
    same = all(np.allclose(conv1d(x, w, backend='event'), conv1d(x, w, backend='dense'),
                           rtol=1e-5, atol=1e-5) for _ in range(2))
    # The spiking layer: its C++ kernel, or the 'jax' kernels without one.
    from bp_conv_ext.ops.fused import LIF, conv_lif, cxx_unsupported
    lif = LIF.make(tau=2., dt=1., v_th=0.5)
    xs, v0 = jnp.asarray(rng.random((3, 2, 30, 8)) < 0.2), jnp.zeros((2, 30, 5))
    same = same and all(np.allclose(a, b, atol=1e-6) for a, b in zip(
        conv_lif(xs, w, None, v0, lif), conv_lif(xs, w, None, v0, lif, kernels='jax')))
    kernel = event_kernel('cpu') + '/' + ('c++' if cxx_unsupported(xs, w, None, v0, lif) is None
                                          else 'jax')
try:
    with use_event_kernels('c++'):
        pass
    forced = 'yes'
except ValueError as error:
    forced = str(error)
notes = [str(w.message) for w in caught if 'C++ event-driven kernels' in str(w.message)]
print(kernel, same, len(notes), repr(notes[:1]), repr(forced))
"""


def _probe(tmp_path, **env):
    environment = dict(os.environ, BP_CONV_EXT_CACHE=str(tmp_path), **env)
    done = subprocess.run([sys.executable, '-c', _PROBE], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split(maxsplit=3)


def test_the_kernels_are_built_once_and_then_loaded_from_the_cache(tmp_path):
    kernel, same, notes, _ = _probe(tmp_path)
    assert (kernel, same, notes) == ('c++/c++', 'True', '0')
    built = sorted(tmp_path.iterdir())
    # The library, its stamp and the lock taken to put them in place; no partial files left.
    assert [path.suffix for path in built] == ['.lock', '.so', '.stamp'], built
    assert len({path.stem for path in built}) == 1, built
    modified = [path.stat().st_mtime_ns for path in built]
    # A second process loads the library without a compiler, and rewrites nothing.
    kernel, same, notes, _ = _probe(tmp_path, CXX='/nonexistent/c++')
    assert (kernel, same, notes) == ('c++/c++', 'True', '0')
    assert sorted(tmp_path.iterdir()) == built
    assert [path.stat().st_mtime_ns for path in built] == modified


@pytest.mark.parametrize('cxx', ['/nonexistent/c++', 'false'], ids=['missing', 'failing'])
def test_without_a_working_compiler_the_numba_kernels_run_after_one_warning(tmp_path, cxx):
    kernel, same, notes, rest = _probe(tmp_path, CXX=cxx)
    assert (kernel, same, notes) == (CXX_FALLBACK + '/jax', 'True', '1')
    # The warning names the compiler and what runs instead; forcing the C++ kernels fails.
    assert cxx in rest and 'next CPU kernels' in rest
    assert "`name` (='c++'): these kernels are not available here: their library" in rest
    assert not any(tmp_path.glob('*.so'))


@pytest.mark.parametrize('groups', [1, 2])
@pytest.mark.parametrize('cout', [1, 18, 64, 130, 272])
def test_wide_and_odd_output_blocks(cout, groups):
    # Blocks of 128 and 64 outputs in registers, then a narrower tail, per group.
    rng = np.random.default_rng(cout + groups)
    cin = 6 * groups
    x = rng.random((3, 21, cin)) < 0.3
    w = rng.standard_normal((3, cin // groups, cout * groups)).astype(np.float32)
    y = conv1d(jnp.asarray(x), jnp.asarray(w), padding='SAME', groups=groups, backend='event')
    np.testing.assert_allclose(np.asarray(y), reference_conv1d(x, w, padding='SAME', groups=groups),
                               rtol=1e-5, atol=1e-5)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    grad = jax.grad(lambda w: jnp.vdot(conv1d(jnp.asarray(x), w, padding='SAME', groups=groups,
                                              backend='event'), dy))(jnp.asarray(w))
    dense = jax.grad(lambda w: jnp.vdot(conv1d(jnp.asarray(x, jnp.float32), w, padding='SAME',
                                               groups=groups, backend='xla'), dy))(jnp.asarray(w))
    np.testing.assert_allclose(np.asarray(grad), np.asarray(dense), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('cin', [1, 3, 24, 64, 70, 100])
@pytest.mark.parametrize('fill', ['sparse', 'all', 'last'])
def test_spikes_read_64_inputs_a_word(cin, fill):
    # One group of bool input is compacted from words of 64 inputs' bits: samples that
    # straddle words, a last partial word, every input active, only the very last one.
    rng = np.random.default_rng(cin)
    length = 13
    x = {'sparse': rng.random((2, length, cin)) < 0.2, 'all': np.ones((2, length, cin), bool),
         'last': np.zeros((2, length, cin), bool)}[fill]
    x[:, -1, -1] = True
    w = rng.standard_normal((3, cin, 9)).astype(np.float32)
    xs, ws = jnp.asarray(x), jnp.asarray(w)
    y = conv1d(xs, ws, padding='SAME', backend='event')
    np.testing.assert_allclose(np.asarray(y), reference_conv1d(x, w, padding='SAME'),
                               rtol=1e-5, atol=1e-4)
    dy = jnp.asarray(rng.standard_normal(y.shape).astype(np.float32))
    grad = jax.grad(lambda w: jnp.vdot(conv1d(xs, w, padding='SAME', backend='event'), dy))(ws)
    dense = jax.grad(lambda w: jnp.vdot(conv1d(xs.astype(jnp.float32), w, padding='SAME',
                                               backend='xla'), dy))(ws)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(dense), rtol=1e-5, atol=1e-4)


def test_bfloat16_kernels_are_summed_in_float32():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.random((2, 40, 16)) < 0.2)
    w = jnp.asarray(rng.standard_normal((5, 16, 24)), jnp.bfloat16)
    y = conv1d(x, w, backend='event')
    assert y.dtype == jnp.bfloat16
    exact = conv1d(x.astype(jnp.float32), w.astype(jnp.float32), backend='xla')
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(exact), rtol=1e-2, atol=1e-2)


def test_an_empty_batch():
    w = jnp.ones((3, 4, 5), jnp.float32)
    x = jnp.zeros((0, 10, 4), bool)
    assert conv1d(x, w, backend='event').shape == (0, 10, 5)
    grad = jax.grad(lambda w: conv1d(x, w, backend='event').sum())(w)
    assert grad.shape == w.shape and not np.asarray(grad).any()


def test_the_forward_sums_do_not_depend_on_the_thread_count(monkeypatch):
    # Each sample's outputs are summed by one thread in a fixed order: equal bit for bit.
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.random((9, 50, 20)) < 0.1)
    w = jnp.asarray(rng.standard_normal((5, 20, 70)), jnp.float32)
    runs = []
    for threads in (1, 2, 7):
        monkeypatch.setattr(cxx_cpu, 'threads', lambda threads=threads: threads)
        runs.append(np.asarray(jax.jit(lambda x, w: conv1d(x, w, backend='event'))(x, w)))
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])
