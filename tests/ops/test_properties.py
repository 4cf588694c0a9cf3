"""Property-based tests over random valid configurations (hypothesis).

Profiles (set ``HYPOTHESIS_PROFILE``): ``ci`` (default, 25 examples per property) and
``nightly`` (400 examples per property, no deadline).
"""
import importlib.util

import brainpy.math as bm
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.cases import (
    EVENT_RUNTIMES,
    event_runtime,
    lax_conv1d,
    random_case,
    reference_conv1d,
    reference_pads,
)
from hypothesis import assume, given
from hypothesis import strategies as st

from bp_conv_ext import Conv1d, conv1d
from bp_conv_ext.core.args import BACKENDS

TOL = dict(rtol=1e-5, atol=1e-4)


@st.composite
def configs(draw, stride_one=False):
    """A valid configuration, with inputs long enough for it."""
    groups = draw(st.sampled_from([1, 2, 3]))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    k = draw(st.integers(1, 5))
    stride = 1 if stride_one else draw(st.integers(1, 3))
    lhs = 1 if stride_one else draw(st.integers(1, 3))
    rhs = draw(st.integers(1, 3))
    padding = draw(st.one_of(
        st.sampled_from(['SAME', 'VALID', 'CAUSAL', 'same', 'causal']),
        st.integers(0, 4),
        st.tuples(st.integers(0, 4), st.integers(0, 4)),
    ))
    span = (k - 1) * rhs + 1
    length = draw(st.integers(max(1, -(-span // lhs)), 24))
    batch = draw(st.integers(1, 3))
    density = draw(st.sampled_from([None, 0.05, 0.3]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    x, w, b = random_case(rng, batch, length, cin, cout, k, groups, density=density,
                          bias=draw(st.booleans()))
    options = dict(stride=stride, padding=padding, lhs_dilation=lhs, rhs_dilation=rhs,
                   groups=groups)
    return x, w, b, options


def _fits(x, w, options):
    """Explicit padding can still leave the input shorter than the kernel."""
    low, high = reference_pads(options['padding'], x.shape[1], w.shape[0], options['stride'],
                               options['lhs_dilation'], options['rhs_dilation'])
    dilated = (x.shape[1] - 1) * options['lhs_dilation'] + 1
    return dilated + low + high >= (w.shape[0] - 1) * options['rhs_dilation'] + 1


@given(case=configs(), backend=st.sampled_from(BACKENDS))
def test_matches_numpy_reference(case, backend):
    x, w, b, options = case
    if not _fits(x, w, options):
        with pytest.raises(ValueError, match='too short for the kernel'):
            conv1d(x, w, b, backend=backend, **options)
        return
    y = conv1d(x, w, b, backend=backend, **options)
    np.testing.assert_allclose(np.asarray(y), reference_conv1d(x, w, b, **options), **TOL)


@given(case=configs(), backend=st.sampled_from(BACKENDS))
def test_gradients_match_jax_autodiff_of_lax(case, backend):
    x, w, _, options = case
    assume(_fits(x, w, options))
    xf = np.asarray(x, np.float32)
    cot = np.random.default_rng(0).standard_normal(lax_conv1d(xf, w, **options).shape)
    cot = cot.astype(np.float32)
    ours = jax.grad(lambda x, w: jnp.sum(conv1d(x, w, backend=backend, **options) * cot),
                    argnums=(0, 1))(xf, w)
    theirs = jax.grad(lambda x, w: jnp.sum(lax_conv1d(x, w, **options) * cot),
                      argnums=(0, 1))(xf, w)
    for a, r in zip(ours, theirs):
        np.testing.assert_allclose(np.asarray(a), np.asarray(r), **TOL)


@given(case=configs(), runtime=st.sampled_from(EVENT_RUNTIMES))
def test_the_event_kernels_of_every_platform_match_the_reference(case, runtime):
    # The installed CPU kernels, and the accelerators' (pure JAX; Pallas, interpreted) forced
    # on the CPU: outputs and kernel gradients.
    x, w, b, options = case
    assume(_fits(x, w, options))
    cot = np.random.default_rng(1).standard_normal(
        lax_conv1d(np.asarray(x, np.float32), w, **options).shape).astype(np.float32)
    with event_runtime(runtime):
        y = conv1d(x, w, b, backend='event', **options)
        gw = jax.grad(lambda w: jnp.sum(conv1d(x, w, backend='event', **options) * cot))(w)
    np.testing.assert_allclose(np.asarray(y), reference_conv1d(x, w, b, **options), **TOL)
    expected = jax.grad(lambda w: jnp.sum(lax_conv1d(np.asarray(x, np.float32), w, **options)
                                          * cot))(w)
    np.testing.assert_allclose(np.asarray(gw), np.asarray(expected), **TOL)


@given(case=configs(), scale=st.floats(-3, 3), backend=st.sampled_from(BACKENDS))
def test_linear_in_the_input(case, scale, backend):
    x, w, _, options = case
    assume(_fits(x, w, options))
    x1 = np.asarray(x, np.float32)
    x2 = np.random.default_rng(1).standard_normal(x1.shape).astype(np.float32)
    lhs = conv1d(x1 + scale * x2, w, backend=backend, **options)
    rhs = conv1d(x1, w, backend=backend, **options) + scale * conv1d(x2, w, backend=backend,
                                                                       **options)
    np.testing.assert_allclose(np.asarray(lhs), np.asarray(rhs), rtol=1e-4, atol=1e-3)


@given(case=configs(), scale=st.floats(-3, 3), backend=st.sampled_from(BACKENDS))
def test_linear_in_the_weights(case, scale, backend):
    x, w, _, options = case
    assume(_fits(x, w, options))
    w2 = np.random.default_rng(2).standard_normal(w.shape).astype(np.float32)
    lhs = conv1d(x, w + scale * w2, backend=backend, **options)
    rhs = conv1d(x, w, backend=backend, **options) + scale * conv1d(x, w2, backend=backend,
                                                                      **options)
    np.testing.assert_allclose(np.asarray(lhs), np.asarray(rhs), rtol=1e-4, atol=1e-3)


@given(case=configs(), backend=st.sampled_from(BACKENDS))
def test_groups_equal_split_channels(case, backend):
    x, w, _b, options = case
    assume(_fits(x, w, options))
    groups = options['groups']
    cin_g, cout_g = w.shape[1], w.shape[2] // groups
    single = dict(options, groups=1)
    parts = [conv1d(x[..., g * cin_g:(g + 1) * cin_g], w[..., g * cout_g:(g + 1) * cout_g],
                    backend=backend, **single) for g in range(groups)]
    np.testing.assert_allclose(np.asarray(conv1d(x, w, backend=backend, **options)),
                               np.asarray(jnp.concatenate(parts, axis=-1)), **TOL)


@given(case=configs(stride_one=True), shift=st.integers(1, 4), backend=st.sampled_from(BACKENDS))
def test_shift_equivariance_away_from_the_edges(case, shift, backend):
    # Stride 1 and VALID padding: dropping the first `shift` input samples drops the first
    # `shift` output samples. (Circular padding, which makes this exact everywhere, is not
    # implemented.)
    x, w, _, options = case
    options = dict(options, padding='VALID')
    span = (w.shape[0] - 1) * options['rhs_dilation'] + 1
    assume(x.shape[1] - shift >= span)
    full = conv1d(x, w, backend=backend, **options)
    shifted = conv1d(x[:, shift:], w, backend=backend, **options)
    np.testing.assert_allclose(np.asarray(shifted), np.asarray(full[:, shift:]), **TOL)


@given(case=configs(), steps=st.integers(1, 5), backend=st.sampled_from(BACKENDS),
       batched=st.booleans())
def test_multi_step_equals_stacked_steps(case, steps, backend, batched):
    x, w, b, options = case
    assume(_fits(x, w, options))
    mode = bm.BatchingMode() if batched else bm.NonBatchingMode()
    conv = Conv1d(x.shape[2], w.shape[2], w.shape[0], w_initializer=w, b_initializer=b,
                  mode=mode, **options)
    conv.backend = backend
    rng = np.random.default_rng(3)
    xs = np.stack([rng.permutation(x) for _ in range(steps)])
    if not batched:
        xs = xs[:, 0]
    stacked = jnp.stack([conv(xt) for xt in xs])
    np.testing.assert_allclose(np.asarray(conv.multi_step(xs)), np.asarray(stacked), **TOL)


@pytest.mark.skipif(importlib.util.find_spec('torch') is None, reason='torch is not installed')
@given(case=configs(), backend=st.sampled_from(BACKENDS))
def test_matches_torch(case, backend):
    import torch
    import torch.nn.functional as F
    x, w, b, options = case
    assume(options['lhs_dilation'] == 1 and _fits(x, w, options))   # torch: no input dilation
    low, high = reference_pads(options['padding'], x.shape[1], w.shape[0], options['stride'], 1,
                               options['rhs_dilation'])
    xt = F.pad(torch.from_numpy(np.asarray(x, np.float32)).permute(0, 2, 1), (low, high))
    wt = torch.from_numpy(w).permute(2, 1, 0).contiguous()
    bt = None if b is None else torch.from_numpy(b)
    expected = F.conv1d(xt, wt, bt, stride=options['stride'], dilation=options['rhs_dilation'],
                        groups=options['groups']).permute(0, 2, 1).numpy()
    np.testing.assert_allclose(np.asarray(conv1d(x, w, b, backend=backend, **options)),
                               expected, **TOL)


_NUMPY_MODES = {'reflect': 'reflect', 'replicate': 'edge', 'circular': 'wrap'}


@given(case=configs(), mode=st.sampled_from(sorted(_NUMPY_MODES)),
       backend=st.sampled_from(BACKENDS))
def test_padding_modes_match_numpy_padding(case, mode, backend):
    x, w, b, options = case
    options['lhs_dilation'] = 1
    assume(_fits(x, w, options))
    low, high = reference_pads(options['padding'], x.shape[1], w.shape[0], options['stride'],
                               1, options['rhs_dilation'])
    limit = x.shape[1] - 1 if mode == 'reflect' else x.shape[1]
    if mode != 'replicate' and max(low, high) > limit:
        with pytest.raises(ValueError, match=f"padding_mode='{mode}' needs padding"):
            conv1d(x, w, b, backend=backend, padding_mode=mode, **options)
        return
    padded = np.pad(np.asarray(x, np.float64), ((0, 0), (low, high), (0, 0)),
                    mode=_NUMPY_MODES[mode])
    expected = reference_conv1d(padded, w, b, **{**options, 'padding': 'VALID'})
    y = conv1d(x, w, b, backend=backend, padding_mode=mode, **options)
    np.testing.assert_allclose(np.asarray(y), expected, **TOL)
