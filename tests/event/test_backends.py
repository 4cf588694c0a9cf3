"""Every dense algorithm and the event-driven path: parity, gradients, transforms, dispatch."""
import brainpy.math as bm
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.cases import (
    CPU_KERNELS,
    EVENT_IDS,
    EVENT_RUNTIMES,
    enable_x64,
    event_runtime,
    lax_conv1d,
    pairwise,
    random_case,
    reference_conv1d,
)
from jax.test_util import check_grads

from bp_conv_ext import Conv1d, conv1d, event_density_threshold
from bp_conv_ext.core.args import BACKENDS
from bp_conv_ext.core.dense import choose_algorithm, choose_kernel_grad

TOL = dict(rtol=1e-5, atol=1e-5)
CONFIGS = [
    dict(),
    dict(stride=2, padding='VALID'),
    dict(padding='CAUSAL', rhs_dilation=3),
    dict(stride=3, padding=(2, 1), lhs_dilation=2),
    dict(groups=2, padding=1, rhs_dilation=2),
    dict(stride=2, groups=4, lhs_dilation=3, padding='SAME'),
]
IDS = [','.join(f'{k}={v}' for k, v in c.items()) or 'default' for c in CONFIGS]
#: Every backend, then the event path again with each accelerator's kernels (the pure-JAX
#: ones of ROCm GPUs and TPUs, the Pallas ones of CUDA GPUs) forced on the CPU.
RUNS = [(backend, None) for backend in BACKENDS] + [('event', r) for r in EVENT_RUNTIMES[1:]]
RUN_IDS = list(BACKENDS) + EVENT_IDS[1:]
#: Whether ``backend='auto'`` may take the event path on the CPU here (its kernels win there).
AUTO_ON_CPU = event_density_threshold('cpu') is not None


def _case(seed, density=None, batch=3, length=15, cin=8, cout=8, k=3, groups=1):
    return random_case(np.random.default_rng(seed), batch, length, cin, cout, k, groups,
                       density=density)


# Every kernel with every option set, and each of them with float input, sparse and dense
# spikes (a pairwise grid; the full product under `make test-full`): the input's kind is
# handled before the options reach a kernel (bool and float take the same kernels).
DENSITIES = {'float': None, 'bool-sparse': 0.03, 'bool-dense': 0.3}
GRID = pairwise(list(zip(RUNS, RUN_IDS)), list(zip(CONFIGS, IDS)), list(DENSITIES))


@pytest.mark.parametrize('run,options,density', GRID,
                         ids=[f'{run[1]}-{options[1]}-{density}' for run, options, density in GRID])
def test_backend_matches_reference(run, options, density):
    (backend, runtime), _ = run
    options, density = options[0], DENSITIES[density]
    x, w, b = _case(1, density, groups=options.get('groups', 1))
    with event_runtime(runtime):
        y = conv1d(x, w, b, backend=backend, **options)
    expected = reference_conv1d(x, w, b, **options)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), expected, **TOL)


@pytest.mark.parametrize('backend,runtime', RUNS, ids=RUN_IDS)
@pytest.mark.parametrize('options', CONFIGS, ids=IDS)
def test_backend_gradients_match_xla_autodiff(backend, runtime, options):
    x, w, _b = _case(2, 0.2, groups=options.get('groups', 1))
    xf = x.astype(np.float32)
    cot = np.random.default_rng(3).standard_normal(
        lax_conv1d(xf, w, **options).shape).astype(np.float32)

    def ours(x, w):
        return jnp.sum(conv1d(x, w, backend=backend, **options) * cot)

    def plain(x, w):   # lax.conv_general_dilated differentiated by JAX itself
        return jnp.sum(lax_conv1d(x, w, **options) * cot)

    with event_runtime(runtime):
        gx, gw = jax.grad(ours, argnums=(0, 1))(xf, w)
    rx, rw = jax.grad(plain, argnums=(0, 1))(xf, w)
    np.testing.assert_allclose(np.asarray(gx), np.asarray(rx), **TOL)
    np.testing.assert_allclose(np.asarray(gw), np.asarray(rw), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('backend,runtime', RUNS[2:], ids=RUN_IDS[2:])
@pytest.mark.parametrize('options', CONFIGS[:4], ids=IDS[:4])
def test_backend_check_grads_float64(backend, runtime, options):
    with enable_x64(True), event_runtime(runtime):
        rng = np.random.default_rng(4)
        x = jnp.asarray(rng.standard_normal((2, 9, 4)) * (rng.random((2, 9, 4)) < 0.5))
        w = jnp.asarray(rng.standard_normal((3, 4, 5)))
        check_grads(lambda x, w: conv1d(x, w, backend=backend, **options), (x, w), order=1,
                    modes=('fwd', 'rev'), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize('runtime', EVENT_RUNTIMES, ids=EVENT_IDS)
def test_event_second_order_in_input_and_kernel_together_float64(runtime):
    # The cross terms go through the kernel gradient's derivative in the input.
    with enable_x64(True), event_runtime(runtime):
        rng = np.random.default_rng(8)
        x = jnp.asarray(rng.standard_normal((2, 9, 4)) * (rng.random((2, 9, 4)) < 0.5))
        w = jnp.asarray(rng.standard_normal((3, 2, 4)))
        check_grads(lambda x, w: conv1d(x, w, backend='event', stride=2, groups=2), (x, w),
                    order=2, modes=('fwd', 'rev'))


@pytest.mark.parametrize('runtime', EVENT_RUNTIMES, ids=EVENT_IDS)
def test_event_second_order_kernel_gradient_matches_dense(runtime):
    x, w, _ = _case(5, 0.2)

    def hvp(backend):
        def loss(w):
            return jnp.sum(conv1d(x, w, backend=backend, stride=2) ** 2)
        return jax.jvp(jax.grad(loss), (w,), (jnp.ones_like(w),))[1]

    with event_runtime(runtime):
        event = hvp('event')
    np.testing.assert_allclose(np.asarray(event), np.asarray(hvp('xla')), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize('runtime', EVENT_RUNTIMES, ids=EVENT_IDS)
@pytest.mark.parametrize('dtype', [jnp.bool_, jnp.int8, jnp.float32])
def test_event_path_takes_any_dtype_and_skips_zeros(dtype, runtime):
    x, w, b = _case(6, 0.1)
    x = jnp.asarray(x, dtype)
    with event_runtime(runtime):
        y = conv1d(x, w, b, backend='event')
    np.testing.assert_allclose(np.asarray(y),
                               np.asarray(conv1d(x, w, b, backend='xla')), **TOL)


@pytest.mark.parametrize('runtime', EVENT_RUNTIMES, ids=EVENT_IDS)
def test_event_path_under_jit_and_vmap(runtime):
    x, w, b = _case(7, 0.1, batch=4)
    expected = np.asarray(conv1d(x, w, b, stride=2, backend='xla'))
    with event_runtime(runtime):
        f = jax.jit(lambda x: conv1d(x, w, b, backend='event', stride=2))
        per_example = jax.vmap(lambda xi: conv1d(xi, w, b, backend='event', stride=2))(x)
        stacked = jax.vmap(lambda xi: conv1d(xi, w, b, backend='event'))(x[:, None])
        np.testing.assert_allclose(np.asarray(f(x)), expected, **TOL)
    np.testing.assert_allclose(np.asarray(per_example), expected, **TOL)
    np.testing.assert_allclose(np.asarray(stacked[:, 0]), np.asarray(conv1d(x, w, b)), **TOL)


@pytest.mark.parametrize('runtime', EVENT_RUNTIMES, ids=EVENT_IDS)
def test_event_path_gradients_under_vmap_over_kernels(runtime):
    """A batch of kernels: the finiteness check becomes a batched condition, whose branches
    then get every operand batched (the numba kernels crashed on batched parameters)."""
    x, w, b = _case(7, 0.1, batch=4)
    ws = jnp.stack([w, 2 * w, -w])

    def loss(w, backend):
        return jnp.sum(conv1d(x, w, b, stride=2, backend=backend) ** 2)

    with event_runtime(runtime):
        ys = jax.vmap(lambda w: conv1d(x, w, b, stride=2, backend='event'))(ws)
        grads = jax.jit(jax.vmap(jax.grad(lambda w: loss(w, 'event'))))(ws)
    np.testing.assert_allclose(np.asarray(ys), np.asarray(jax.vmap(
        lambda w: conv1d(x, w, b, stride=2, backend='xla'))(ws)), **TOL)
    np.testing.assert_allclose(np.asarray(grads), np.asarray(
        jax.vmap(jax.grad(lambda w: loss(w, 'xla')))(ws)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('runtime', EVENT_RUNTIMES, ids=EVENT_IDS)
def test_event_path_inside_scan_gradients_equal_dense(runtime):
    x, w, _ = _case(8, 0.05, batch=2)
    xs = jnp.stack([jnp.asarray(x)] * 6)

    def loss(w, backend):
        def step(v, xt):
            v = 0.8 * v + conv1d(xt, w, backend=backend)
            return v, jnp.tanh(v)
        _, ys = jax.lax.scan(step, jnp.zeros((2, 15, 8)), xs)
        return jnp.sum(ys ** 2)

    with event_runtime(runtime):
        event = jax.grad(loss)(w, 'event')
    np.testing.assert_allclose(np.asarray(event), np.asarray(jax.grad(loss)(w, 'xla')),
                               rtol=1e-4, atol=1e-4)


# The XLA custom call each CPU kernel set lowers the event-driven kernels to.
_CUSTOM_CALLS = {'c++': 'bp_conv_ext_event_forward', 'numba': 'brainevent_numba_ffi'}


def test_event_path_lowers_to_the_installed_runtime_custom_call():
    x, w, _ = _case(9, 0.05)
    runtime = CPU_KERNELS[0]
    assert runtime in _CUSTOM_CALLS, "the test stacks have the C++ or numba kernels"
    for backend, expected in (('event', {runtime}), ('dense', set())):
        # Lowered for the CPU whatever JAX's default device (the CPU runtime's kernels).
        traced = jax.jit(lambda x, w: conv1d(x, w, backend=backend)).trace(x, w)  # noqa: B023 (traced here)
        hlo = traced.lower(lowering_platforms=('cpu',)).as_text()
        found = {name for name, call in _CUSTOM_CALLS.items() if call in hlo}
        assert found == expected, (backend, found)


def _primitives(f, *args):
    return str(jax.make_jaxpr(f)(*args))


def test_auto_dispatches_bool_input_through_a_density_check():
    x, w, _ = _case(9, 0.02, batch=16, length=200, cin=16, cout=16)
    text = _primitives(lambda x: conv1d(x, w), x)
    # Conds: the choice by platform (the CPU's density check) and the density check (the
    # event path's own, for operands that are not finite, is in the primitives' lowering).
    wins = AUTO_ON_CPU
    assert ('bp_conv_ext_event_conv1d' in text) == wins
    assert text.count('cond[') == (2 if wins else 0)
    assert 'bp_conv_ext_event_conv1d' not in _primitives(lambda x: conv1d(x, w),
                                                         x.astype(np.float32))
    assert 'bp_conv_ext_event_conv1d' not in _primitives(
        lambda x: conv1d(x, w, backend='dense'), x)
    assert 'cond[' not in _primitives(lambda x: conv1d(x, w, backend='event'), x)


def test_auto_skips_the_check_for_tiny_problems_and_one_input_channel():
    x, w, _ = _case(9, 0.02)          # 3 x 15 x 8 -> 8: dense im2col, no density check
    text = _primitives(lambda x: conv1d(x, w), x)
    assert 'bp_conv_ext_event_conv1d' not in text and 'cond' not in text
    x, w, _ = _case(9, 0.02, batch=32, length=700, cin=1, cout=64, k=7)
    text = _primitives(lambda x: conv1d(x, w), x)
    # 'xla2d' on the CPU: its only cond is the choice by platform (CUDA's matmuls), with no
    # density estimate (a reduction) in either branch.
    assert 'bp_conv_ext_event_conv1d' not in text and 'reduce_sum' not in text
    assert text.count('cond[') == 1


def test_auto_stays_dense_under_2_mflop_and_backend_event_forces_the_event_path():
    # The README's example: one unbatched [100, 16] step into 16 channels, K = 5, is
    # 2 * 100 * 16 * 16 * 5 = 0.26 MFLOP, under the 2 MFLOP below which auto does not check
    # the density; 64 such samples (16 MFLOP) are checked.
    from bp_conv_ext import which_backend
    spikes = np.random.default_rng(0).random((64, 100, 16)) < 0.01
    w = np.ones((5, 16, 16), np.float32)
    assert which_backend(spikes[0], w, platform='cpu') != 'event'
    assert which_backend(spikes[0], w, backend='event', platform='cpu') == 'event'
    assert (which_backend(spikes, w, platform='cpu') == 'event') == AUTO_ON_CPU


def test_density_estimate_is_close_on_large_inputs():
    from bp_conv_ext.ops.conv import estimate_density
    x = np.random.default_rng(0).random((32, 700, 16)) < 0.07
    assert abs(float(estimate_density(jnp.asarray(x))) - 0.07) < 0.015


@pytest.mark.parametrize('density', [0.01, 'threshold', 0.5])
def test_auto_gives_the_same_numbers_on_both_sides_of_the_threshold(density):
    if density == 'threshold':
        density = event_density_threshold('cpu') or 0.05
    x, w, b = _case(10, density, batch=16, length=200, cin=16, cout=16)
    assert ('cond' in _primitives(lambda x: conv1d(x, w, b), x)) == AUTO_ON_CPU
    np.testing.assert_allclose(np.asarray(conv1d(x, w, b)),
                               np.asarray(conv1d(x, w, b, backend='xla')), **TOL)


@pytest.mark.parametrize('shape,expected', [
    ((32, 700, 1, 64, 7, 1), 'xla2d'),
    ((1, 1000, 16, 16, 3, 1), 'im2col'),
    ((32, 700, 16, 64, 5, 1), 'xla'),
    ((32, 140, 64, 128, 3, 1), 'xla'),
    ((32, 700, 8, 8, 3, 2), 'xla'),
    ((32, 70, 4, 4, 3, 4), 'im2col'),
])
def test_algorithm_rule_is_deterministic(shape, expected):
    assert choose_algorithm(*shape) == expected


def test_kernel_gradient_rule():
    assert choose_kernel_grad(32 * 140, 16, 5, 1) == 'im2col'     # one step inside a scan
    assert choose_kernel_grad(3200 * 140, 16, 5, 1) == 'xla'      # the same, folded over time
    assert choose_kernel_grad(32 * 700, 1, 7, 1) == 'im2col'      # one input channel
    assert choose_kernel_grad(32 * 140, 64, 3, 1) == 'xla'        # long patch rows
    assert choose_kernel_grad(32 * 140, 64, 3, 2) == 'im2col'


def test_layer_backend_switch():
    conv = Conv1d(4, 6, 3, stride=2, mode=bm.BatchingMode())
    x = jnp.asarray(np.random.default_rng(0).random((2, 20, 4)) < 0.04)
    expected = np.asarray(conv(x))
    assert conv.backend == 'auto'
    for backend in BACKENDS:
        conv.backend = backend
        np.testing.assert_allclose(np.asarray(conv(x)), expected, **TOL)
        np.testing.assert_allclose(np.asarray(conv.multi_step(x[:, None])[:, 0]), expected, **TOL)
    with pytest.raises(ValueError, match=r"`backend` \(='cuda'\) must be one of 'auto', 'dense'"):
        conv.backend = 'cuda'
    with pytest.raises(ValueError, match=r"`backend` \(='fast'\) must be one of"):
        conv1d(x, np.ones((3, 4, 6)), backend='fast')
