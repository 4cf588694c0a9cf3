"""float64 with BrainPy's classic API (docs/modes.md, "Dtypes"): ``bm.enable_x64()`` makes the
layer's kernel, BrainPy's initializers and BrainPy's neurons float64 together, and the README's
recipe runs step by step, unfused and fused. JAX's flag alone leaves BrainPy's default float; on
BrainPy 2.8 and 2.9 every kernel BrainPy initialises (this layer's as ``brainpy.dnn.Linear``'s)
stays float32 then, while BrainPy's neurons hold float64 states and refuse a float32 current."""
import brainpy as bp
import brainpy.math as bm
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.cases import enable_x64

from bp_conv_ext import Conv1d, LayerByLayer, spike_drive

RUNS = ('per-step', 'unfused', 'fused')


def _layers():
    """The README's pair: a Conv1d with a ``spike_drive`` normal kernel, then a bp.dyn.Lif
    (fast enough to fire within a few steps)."""
    mean, std = spike_drive(5, 2, rate=0.3, current=1., drive=8.)
    bm.random.seed(0)           # the same kernel for every run
    return (Conv1d(2, 4, 5, padding='CAUSAL', w_initializer=bp.init.Normal(mean, std)),
            bp.dyn.Lif((10, 4), keep_size=True, tau=1., V_th=1.))


def _spikes():
    return jnp.asarray(np.random.default_rng(0).random((6, 10, 2)) < 0.3)


def _run(how, conv, lif, xs):
    if how == 'per-step':
        steps = []
        for i, x in enumerate(xs):
            bp.share.save(i=i, t=i * bm.get_dt())
            steps.append(lif(conv(x)))
        return jnp.stack(steps)
    return LayerByLayer(conv, lif).multi_step(xs, fuse=how == 'fused')


@pytest.fixture
def brainpy_x64():
    """BrainPy's 64-bit mode, switched off again after the test."""
    bm.enable_x64()
    try:
        yield
    finally:
        bm.disable_x64()


def test_brainpy_enable_x64_runs_the_readme_recipe_in_float64(brainpy_x64, fused_calls):
    spikes = {}
    for how in RUNS:
        conv, lif = _layers()
        assert conv.w.dtype == lif.V.dtype == jnp.float64
        spikes[how] = np.asarray(_run(how, conv, lif, _spikes()))
        assert lif.V.dtype == jnp.float64
        assert len(fused_calls) == (how == 'fused')
    assert 0 < spikes['per-step'].mean() < 1
    np.testing.assert_array_equal(spikes['unfused'], spikes['per-step'])
    np.testing.assert_array_equal(spikes['fused'], spikes['per-step'])


#: Whether JAX's flag alone makes BrainPy's initial values float64: BrainPy 2.6 draws them in
#: JAX's default float; 2.8 and 2.9 (on brainstate) in BrainPy's own default float, ``bm.float_``,
#: which only ``bm.enable_x64()`` changes.
JAX_FLAG_SUFFICES = tuple(int(part) for part in bp.__version__.split('.')[:2]) < (2, 8)


@pytest.mark.parametrize('how', RUNS)
def test_the_jax_flag_alone_gives_kernels_in_brainpy_initializers_dtype(how):
    with enable_x64(True):
        conv, lif = _layers()
        linear = bp.dnn.Linear(2, 4, W_initializer=bp.init.Normal(1., 1.))
        assert conv.w.dtype == linear.W.dtype       # as BrainPy's own layers
        assert lif.V.dtype == jnp.float64
        if JAX_FLAG_SUFFICES:
            assert conv.w.dtype == jnp.float64
            _run(how, conv, lif, _spikes())
            assert lif.V.dtype == jnp.float64
        else:
            assert conv.w.dtype == bm.float_ == jnp.float32
            with pytest.raises(bp.errors.MathError,
                               match="original data is float64, while we got float32"):
                _run(how, conv, lif, _spikes())
