"""Mode dispatch, parameter variables, dtypes, JAX/BrainPy transforms and repr."""
import brainpy as bp
import brainpy.math as bm
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.cases import enable_x64

from bp_conv_ext import Conv1d, conv1d

MODES = [bm.NonBatchingMode(), bm.BatchingMode(), bm.TrainingMode()]
MODE_IDS = ['nonbatching', 'batching', 'training']


def _x(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def test_nonbatching_output_equals_batched_output_of_one_example():
    w = _x((3, 2, 4), 1)
    x = _x((12, 2))
    single = Conv1d(2, 4, 3, stride=2, w_initializer=w, b_initializer=0.3,
                    mode=bm.NonBatchingMode())(x)
    batched = Conv1d(2, 4, 3, stride=2, w_initializer=w, b_initializer=0.3,
                     mode=bm.BatchingMode())(x[None])
    assert single.shape == (6, 4)
    np.testing.assert_array_equal(np.asarray(single), np.asarray(batched[0]))


@pytest.mark.parametrize('mode', MODES, ids=MODE_IDS)
def test_parameters_are_trainvars_only_in_training_mode(mode):
    conv = Conv1d(2, 4, 3, mode=mode)
    training = isinstance(mode, bm.TrainingMode)
    assert isinstance(conv.w, bm.Variable) and isinstance(conv.b, bm.Variable)
    assert isinstance(conv.w, bm.TrainVar) == training
    assert isinstance(conv.b, bm.TrainVar) == training
    assert sorted(map(id, conv.vars().values())) == sorted(map(id, (conv.w, conv.b)))
    assert len(conv.train_vars()) == (2 if training else 0)


def test_default_mode_follows_brainpy_global_mode():
    assert isinstance(Conv1d(2, 4, 3).mode, bm.NonBatchingMode)
    bm.set_mode(bm.TrainingMode())
    assert isinstance(Conv1d(2, 4, 3).mode, bm.TrainingMode)


@pytest.mark.parametrize('dtype', [jnp.bool_, jnp.int8, jnp.int32, jnp.uint8])
def test_spike_and_integer_inputs_compute_in_parameter_dtype(dtype):
    spikes = np.random.default_rng(0).random((16, 3)) < 0.3
    conv = Conv1d(3, 5, 3, mode=bm.NonBatchingMode())
    y = conv(jnp.asarray(spikes, dtype=dtype))
    assert y.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(y), np.asarray(conv(jnp.asarray(spikes, jnp.float32))))


@pytest.mark.parametrize('dtype', [jnp.float16, jnp.bfloat16])
def test_half_precision_inputs_are_promoted_to_parameter_dtype(dtype):
    x = _x((16, 3))
    conv = Conv1d(3, 5, 3, mode=bm.NonBatchingMode())
    y = conv(x.astype(dtype))
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), np.asarray(conv(x.astype(dtype).astype(jnp.float32))),
                               rtol=1e-6, atol=1e-6)


def test_float64_follows_jax_promotion():
    conv32 = Conv1d(3, 5, 3, mode=bm.NonBatchingMode())
    assert conv32.w.dtype == jnp.float32
    with enable_x64(True):
        x64 = jnp.asarray(np.random.default_rng(0).standard_normal((16, 3)))
        assert conv32(x64).dtype == jnp.float64
        assert conv32(x64.astype(jnp.float32)).dtype == jnp.float32
        conv64 = Conv1d(3, 5, 3, w_initializer=np.ones((3, 3, 5)), mode=bm.NonBatchingMode())
        assert conv64.w.dtype == jnp.float64
        assert conv64(jnp.ones((16, 3), dtype=bool)).dtype == jnp.float64


@pytest.mark.parametrize('mode', MODES, ids=MODE_IDS)
def test_jit_matches_eager(mode):
    conv = Conv1d(3, 4, 5, stride=2, padding='causal', rhs_dilation=2, mode=mode)
    x = _x((20, 3) if isinstance(mode, bm.NonBatchingMode) else (2, 20, 3))
    eager = conv(x)
    np.testing.assert_allclose(np.asarray(bm.jit(conv)(x)), np.asarray(eager), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda v: conv(v))(x)), np.asarray(eager),
                               rtol=1e-5, atol=1e-6)


def test_bm_grad_in_training_mode_matches_jax_grad_of_pure_function():
    conv = Conv1d(3, 4, 3, stride=2, groups=1, mode=bm.TrainingMode())
    x = _x((2, 11, 3))
    target = _x((2, 6, 4), 5)

    def loss():
        return jnp.sum((conv(x) - target) ** 2)

    grads = bm.grad(loss, grad_vars={'w': conv.w, 'b': conv.b})()

    def pure_loss(w, b):
        return jnp.sum((conv1d(x, w, b, stride=2) - target) ** 2)

    gw, gb = jax.grad(pure_loss, argnums=(0, 1))(conv.w.value, conv.b.value)
    np.testing.assert_allclose(np.asarray(grads['w']), np.asarray(gw), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(grads['b']), np.asarray(gb), rtol=1e-5, atol=1e-5)


def test_vmap_of_pure_call_equals_batched_call():
    x = _x((4, 10, 2))
    w = _x((3, 2, 6), 1)
    b = _x((6,), 2)
    per_example = jax.vmap(lambda xi: conv1d(xi, w, b, stride=2, padding='VALID'))(x)
    batched = conv1d(x, w, b, stride=2, padding='VALID')
    np.testing.assert_allclose(np.asarray(per_example), np.asarray(batched), rtol=1e-5, atol=1e-6)


def test_vmap_over_kernels_of_pure_call():
    x = _x((10, 2))
    ws = _x((5, 3, 2, 4), 1)
    stacked = jax.vmap(lambda w: conv1d(x, w))(ws)
    for i in range(5):
        np.testing.assert_allclose(np.asarray(stacked[i]), np.asarray(conv1d(x, ws[i])),
                                   rtol=1e-5, atol=1e-6)


def test_vmap_of_nonbatching_layer_over_examples():
    conv = Conv1d(2, 3, 3, mode=bm.NonBatchingMode())
    x = _x((4, 9, 2))
    per_example = jax.vmap(conv)(x)
    np.testing.assert_allclose(np.asarray(per_example),
                               np.asarray(jnp.stack([conv(xi) for xi in x])), rtol=1e-5, atol=1e-6)


def test_repr_shows_every_non_default_argument():
    assert repr(Conv1d(3, 8, 5)) == 'Conv1d(in_channels=3, out_channels=8, kernel_size=5)'
    text = repr(Conv1d(4, 8, 3, strides=2, padding='causal', lhs_dilation=2, rhs_dilation=3,
                       groups=2, w_initializer=bp.init.Constant(0.5), b_initializer=None,
                       mask=np.ones((3, 2, 8)), mode=bm.TrainingMode(), name='conv_a'))
    assert text == ("Conv1d(in_channels=4, out_channels=8, kernel_size=3, stride=2, "
                    "padding='causal', lhs_dilation=2, rhs_dilation=3, groups=2, "
                    "w_initializer=Constant(value=0.5), b_initializer=None, "
                    "mask=<array shape=(3, 2, 8)>, mode=TrainingMode(batch_size=1), "
                    "name='conv_a')")
    layer = Conv1d(1, 2, 3, w_initializer=np.ones((3, 1, 2)))
    assert 'w_initializer=<array shape=(3, 1, 2)>' in repr(layer)
