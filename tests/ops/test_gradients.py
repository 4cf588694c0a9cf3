"""Gradients: finite-difference checks in float64, masked weights, and NaN and inf in the
cotangents and tangents, where the event path gives the dense path's IEEE answer."""
import brainpy.math as bm
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.cases import EVENT_IDS, EVENT_RUNTIMES, enable_x64, event_runtime, reference_conv1d
from jax.test_util import check_grads

from bp_conv_ext import Conv1d, conv1d

CONFIGS = [
    dict(),
    dict(stride=2, padding='VALID'),
    dict(padding='CAUSAL', rhs_dilation=2),
    dict(padding=(2, 1), lhs_dilation=2),
    dict(stride=3, groups=2, padding=1),
    dict(stride=2, lhs_dilation=3, rhs_dilation=2, groups=2),
]


@pytest.mark.parametrize('batched', [True, False], ids=['batched', 'unbatched'])
@pytest.mark.parametrize('options', CONFIGS, ids=[str(c) for c in CONFIGS])
def test_check_grads_float64(options, batched):
    with enable_x64(True):
        rng = np.random.default_rng(0)
        groups = options.get('groups', 1)
        x = jnp.asarray(rng.standard_normal((2, 9, 4) if batched else (9, 4)))
        w = jnp.asarray(rng.standard_normal((3, 4 // groups, 6)))
        b = jnp.asarray(rng.standard_normal(6))
        assert x.dtype == jnp.float64

        def f(x, w, b):
            return conv1d(x, w, b, **options)

        check_grads(f, (x, w, b), order=2, modes=('fwd', 'rev'), atol=1e-6, rtol=1e-6)


def test_layer_check_grads_float64_in_training_mode():
    with enable_x64(True):
        rng = np.random.default_rng(1)
        conv = Conv1d(4, 6, 3, stride=2, padding='causal',
                      w_initializer=rng.standard_normal((3, 4, 6)),
                      b_initializer=rng.standard_normal(6), mode=bm.TrainingMode())
        assert conv.w.dtype == jnp.float64
        x = jnp.asarray(rng.standard_normal((2, 9, 4)))

        def f(w, b, x):
            conv.w.value, conv.b.value = w, b
            return conv(x)

        check_grads(f, (conv.w.value, conv.b.value, x), order=1, modes=('rev',), atol=1e-6,
                    rtol=1e-6)


def test_masked_weights_get_zero_gradient_and_no_effect():
    mask = np.ones((3, 2, 4), dtype=bool)
    mask[1] = False           # the middle tap is switched off for every channel
    mask[:, :, 3] = False     # and the last output channel entirely
    conv = Conv1d(2, 4, 3, mask=mask, mode=bm.TrainingMode())
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 10, 2)), jnp.float32)

    def loss():
        return jnp.sum(conv(x) ** 2)

    grads = bm.grad(loss, grad_vars={'w': conv.w})()
    assert np.all(np.asarray(grads['w'])[~mask] == 0)
    assert np.all(np.asarray(grads['w'])[mask] != 0)

    before = np.asarray(conv(x))
    conv.w.value = jnp.where(mask, conv.w.value, 1e3)   # changing masked weights changes nothing
    np.testing.assert_array_equal(np.asarray(conv(x)), before)


def test_broadcast_mask_is_stored_at_kernel_shape():
    conv = Conv1d(2, 4, 3, mask=np.array([1.0, 0.0, 1.0, 0.0]), mode=bm.NonBatchingMode())
    assert conv.mask.shape == (3, 2, 4)
    y = conv(jnp.ones((5, 2)))
    np.testing.assert_array_equal(np.asarray(y[:, 1]), 0.0)
    np.testing.assert_array_equal(np.asarray(y[:, 3]), 0.0)
    assert np.all(np.asarray(y[:, 0]) != 0)


@pytest.mark.parametrize('backend', ['auto', 'xla', 'xla2d', 'im2col', 'event'])
@pytest.mark.parametrize('x_shape,w_shape,padding', [
    ((1, 3, 1), (3, 1, 3), (3, 1)),
    ((1, 3, 1), (3, 1, 3), (5, 0)),
    ((1, 6, 2), (3, 2, 3), (4, 0)),
    ((2, 5, 2), (2, 2, 3), (1, 3)),
])
def test_input_gradient_with_padding_as_wide_as_the_kernel(x_shape, w_shape, padding, backend):
    # Some outputs see padding only; XLA's CPU backward-input convolution returns garbage
    # for such padding (on these shapes, in most of ten eager calls), so the layer must not
    # reach it.
    rng = np.random.default_rng(11)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    cot = rng.standard_normal(reference_conv1d(x, w, padding=padding).shape)
    # conv1d is linear in x: its input gradient is the reference applied to unit inputs.
    unit = np.eye(x.size).reshape((x.size,) + x.shape)
    expected = np.array([np.sum(reference_conv1d(u, w, padding=padding) * cot) for u in unit])
    cot32 = cot.astype(np.float32)
    loss = lambda x: jnp.sum(conv1d(x, w, padding=padding, backend=backend) * cot32)
    for _ in range(10):
        np.testing.assert_allclose(np.asarray(jax.grad(loss)(x)).ravel(), expected,
                                   rtol=1e-5, atol=1e-5)


#: Input channels that give the dense path's two kernel-gradient forms (``core.dense``): a
#: matmul with the patches (short patch rows) and XLA's convolution, which differ in whether
#: a cotangent that sees padding only makes the gradient NaN.
KERNEL_GRAD_FORMS = {'im2col-form': 4, 'xla-form': 48}


@pytest.mark.parametrize('form', KERNEL_GRAD_FORMS)
@pytest.mark.parametrize('runtime', EVENT_RUNTIMES, ids=EVENT_IDS)
def test_event_gradients_with_a_nan_or_inf_cotangent_are_the_dense_ones(runtime, form):
    # A finite kernel, and a NaN and an inf in the cotangent from a later layer: the event
    # kernel gradient skipped the zero inputs, the dense one multiplies them (0 * nan = nan).
    rng = np.random.default_rng(3)
    cin = KERNEL_GRAD_FORMS[form]
    x = (rng.random((2, 10, cin)) < 0.3).astype(np.float32)
    w = rng.standard_normal((3, cin, 5)).astype(np.float32)
    cot = rng.standard_normal((2, 10, 5)).astype(np.float32)
    cot[0, 0, 1], cot[1, 6, 3] = np.nan, np.inf

    def grads(backend):
        loss = lambda x, w: jnp.sum(conv1d(x, w, padding='SAME', backend=backend) * cot)
        return jax.grad(loss, (0, 1))(x, w)

    with event_runtime(runtime):
        event = grads('event')
    dense = grads('dense')
    for got, expected in zip(event, dense):
        assert not np.isfinite(expected).all()
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('runtime', EVENT_RUNTIMES, ids=EVENT_IDS)
def test_event_tangents_of_a_nan_or_inf_kernel_tangent_are_the_dense_ones(runtime):
    rng = np.random.default_rng(4)
    x = (rng.random((2, 10, 4)) < 0.3).astype(np.float32)
    w = rng.standard_normal((3, 4, 5)).astype(np.float32)
    w_dot = rng.standard_normal(w.shape).astype(np.float32)
    w_dot[0, 1, 2], w_dot[2, 3, 0] = np.nan, -np.inf

    def tangent(backend):
        return jax.jvp(lambda w: conv1d(x, w, padding='SAME', backend=backend), (w,), (w_dot,))[1]

    with event_runtime(runtime):
        event = tangent('event')
    expected = np.asarray(tangent('dense'))
    assert not np.isfinite(expected).all()
    np.testing.assert_allclose(np.asarray(event), expected, rtol=1e-5, atol=1e-5)
