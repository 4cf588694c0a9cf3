"""The CUDA GPUs' event kernels (Pallas, through Triton): checked here in Pallas's interpreter
and lowered for ``cuda`` with ``jax.export``; no GPU is needed.

Their parity with the dense path over the option grid, gradients included, is in
``tests/event/test_backends.py`` and ``tests/ops/test_padding_modes.py`` (the ``event-triton``
runs).
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bp_conv_ext import conv1d, event_kernel, use_event_kernels
from bp_conv_ext.event.kernels import pallas_gpu

export = pytest.importorskip('jax.export')
TRITON = '__gpu$xla.gpu.triton'


def _spikes(shape, density=0.05, seed=0):
    return jnp.asarray(np.random.default_rng(seed).random(shape) < density)


def _kernel(shape, dtype=jnp.float32, seed=1):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def test_compaction_lists_the_nonzero_entries_first():
    values = jnp.asarray([[0., 3., 0., 5.], [0., 0., 0., 0.], [1., 2., 3., 4.]])
    index, kept, count = pallas_gpu.compact(values != 0, values)
    assert count.tolist() == [2, 0, 4]
    assert index[0, :2].tolist() == [1, 3] and kept[0, :2].tolist() == [3., 5.]
    assert index[2].tolist() == [0, 1, 2, 3] and kept[2].tolist() == [1., 2., 3., 4.]


def test_cuda_runs_the_pallas_kernels():
    assert event_kernel('cuda') == event_kernel('gpu') == 'triton'
    assert event_kernel('rocm') == 'jax'


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16], ids=['float32', 'bfloat16'])
@pytest.mark.parametrize('kind', ['forward', 'grad'])
def test_the_kernels_lower_for_cuda_through_triton(kind, dtype):
    x, w = _spikes((32, 140, 64)), _kernel((3, 64, 128), dtype)
    if kind == 'forward':
        f = jax.jit(lambda x, w: conv1d(x, w, backend='event'))
    else:
        f = jax.jit(jax.grad(lambda w, x: jnp.sum(conv1d(x, w, backend='event')
                                                  .astype(jnp.float32) ** 2)))
        x, w = w, x
    exported = export.export(f, platforms=['cuda'],
                             disabled_checks=[export.DisabledSafetyCheck.custom_call(TRITON)])(x, w)
    text = exported.mlir_module()
    calls = re.findall(r'custom_call @"?([\w.$]+)', text)
    # The forward pass is one kernel; a gradient the forward pass and the kernel gradient.
    assert calls and set(calls) == {TRITON}
    assert len(calls) == (1 if kind == 'forward' else 2)


def test_a_cuda_export_without_the_custom_call_check_disabled_says_why():
    if jax.__version_info__ < (0, 5):
        pytest.skip("JAX 0.4 exports Triton calls without checking them")
    f = jax.jit(lambda x, w: conv1d(x, w, backend='event'))
    with pytest.raises(ValueError, match='custom call'):
        export.export(f, platforms=['cuda'])(_spikes((4, 30, 8)), _kernel((3, 8, 8)))


@pytest.mark.parametrize('options', [dict(), dict(stride=2, groups=2, rhs_dilation=2),
                                     dict(padding='CAUSAL', lhs_dilation=2)],
                         ids=['default', 'stride-groups-dilation', 'causal-lhs'])
def test_bfloat16_kernels_sum_in_float32(options):
    x = _spikes((4, 40, 16), density=0.1)
    w = _kernel((5, 16 // options.get('groups', 1), 32), jnp.bfloat16)
    with use_event_kernels('triton'):
        y = conv1d(x, w, backend='event', **options)
        dw = jax.grad(lambda w: jnp.sum(conv1d(x, w, backend='event', **options)
                                        .astype(jnp.float32)))(w)
    exact = conv1d(x, w.astype(jnp.float32), backend='xla', **options)
    exact_dw = jax.grad(lambda w: jnp.sum(conv1d(x, w, backend='xla', **options)))(
        w.astype(jnp.float32))
    assert y.dtype == dw.dtype == jnp.bfloat16
    # One rounding to bfloat16 at the end: within bfloat16's half-ulp of the float32 sums.
    np.testing.assert_allclose(np.asarray(y, np.float32), exact, rtol=2 ** -8, atol=1e-2)
    np.testing.assert_allclose(np.asarray(dw, np.float32), exact_dw, rtol=2 ** -8, atol=1e-2)


def test_wide_and_odd_channel_counts_tile_into_blocks():
    # 300 output channels in 3 groups: blocks of 128 over padded groups of 128.
    x, w = _spikes((2, 25, 6), density=0.3), _kernel((3, 2, 300))
    with use_event_kernels('triton'):
        y = conv1d(x, w, groups=3, backend='event')
        dw = jax.grad(lambda w: jnp.sum(jnp.sin(conv1d(x, w, groups=3, backend='event'))))(w)
    np.testing.assert_allclose(y, conv1d(x, w, groups=3, backend='xla'), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        dw, jax.grad(lambda w: jnp.sum(jnp.sin(conv1d(x, w, groups=3, backend='xla'))))(w),
        rtol=1e-5, atol=1e-5)
