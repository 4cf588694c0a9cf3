"""Numerical parity: NumPy loop reference, brainpy.dnn.Conv1d, torch, hand-worked cases."""
import importlib.util

import brainpy as bp
import brainpy.math as bm
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.cases import grid_ids, pairwise, random_case, reference_conv1d, reference_pads

from bp_conv_ext import Conv1d, conv1d

PADDINGS = ['SAME', 'same', 'VALID', 'CAUSAL', 'causal', 2, (1, 3), [(0, 2)]]
RTOL = ATOL = 1e-5


def _random_case(seed, batch, length, cin, cout, k, groups, bias):
    """As ``random_case``, with the bias in BrainPy's ``(1, out_channels)`` layout."""
    x, w, b = random_case(np.random.default_rng(seed), batch, length, cin, cout, k, groups,
                          bias=bias)
    return x, w, None if b is None else b[None]


def _layer(cin, cout, k, w, b, mode=bm.BatchingMode(), **options):  # noqa: B008 (no state)
    return Conv1d(cin, cout, k, w_initializer=w, b_initializer=b, mode=mode, **options)


# Pairwise grids (the full products under `make test-full`): each option enters the
# computation at its own place (stride: the output positions; padding: the pads, through
# `reference_pads`' one formula that reads stride and both dilations; lhs_dilation: the
# dilated input; rhs_dilation: the taps; groups: the channel blocks; bias: the last sum), so a
# wrong result needs a wrong option or a wrong pair of them, and every pair is in the grid.
NUMPY_GRID = pairwise([1, 2, 3], PADDINGS, [1, 2], [1, 2], [1, 2], [True, False])


@pytest.mark.parametrize('stride,padding,rhs_dilation,lhs_dilation,groups,bias', NUMPY_GRID,
                         ids=grid_ids(NUMPY_GRID))
def test_matches_numpy_reference(stride, padding, rhs_dilation, lhs_dilation, groups, bias):
    x, w, b = _random_case(stride, 2, 11, 4, 6, 3, groups, bias)
    options = dict(stride=stride, padding=padding, lhs_dilation=lhs_dilation,
                   rhs_dilation=rhs_dilation, groups=groups)
    y = _layer(4, 6, 3, w, b, **options)(x)
    expected = reference_conv1d(x, w, b, **options)
    assert y.shape == expected.shape
    np.testing.assert_allclose(np.asarray(y), expected, rtol=RTOL, atol=ATOL)


def _brainpy_padding(padding, k, rhs_dilation):
    """The same padding in a form brainpy.dnn.Conv1d accepts."""
    if isinstance(padding, str):
        padding = padding.upper()
        if padding == 'CAUSAL':
            return [(rhs_dilation * (k - 1), 0)]
        return padding
    return padding


# The same options, and the mode, which only decides the input's rank and the variables'
# types, apart from the convolution's options.
MODES = {'nonbatching': bm.NonBatchingMode(), 'batching': bm.BatchingMode(),
         'training': bm.TrainingMode()}
BRAINPY_GRID = pairwise(list(MODES), [1, 2], PADDINGS, [1, 2], [1, 3], [1, 3], [True, False])


@pytest.mark.parametrize('mode,stride,padding,rhs_dilation,lhs_dilation,groups,bias',
                         BRAINPY_GRID, ids=grid_ids(BRAINPY_GRID))
def test_matches_brainpy_conv1d(mode, stride, padding, rhs_dilation, lhs_dilation, groups, bias):
    mode = MODES[mode]
    x, w, b = _random_case(7, 3, 13, 6, 9, 4, groups, bias)
    if isinstance(mode, bm.NonBatchingMode):
        x = x[0]
    options = dict(stride=stride, rhs_dilation=rhs_dilation, lhs_dilation=lhs_dilation,
                   groups=groups)
    ours = _layer(6, 9, 4, w, b, mode=mode, padding=padding, **options)(x)
    bp_padding = _brainpy_padding(padding, 4, rhs_dilation)
    if isinstance(bp_padding, str) and lhs_dilation > 1:
        # brainpy.dnn.Conv1d raises for string padding with lhs_dilation > 1; compare with
        # the NumPy reference instead.
        expected = reference_conv1d(x if x.ndim == 3 else x[None], w, b, padding=bp_padding,
                                    **options)
        expected = expected if x.ndim == 3 else expected[0]
    else:
        theirs = bp.dnn.Conv1d(6, 9, 4, padding=bp_padding, w_initializer=w,
                               b_initializer=b, mode=mode, **options)
        expected = np.asarray(theirs(x))
    assert ours.shape == expected.shape
    np.testing.assert_allclose(np.asarray(ours), expected, rtol=RTOL, atol=ATOL)


TORCH_GRID = pairwise([1, 2], [0, 2, (1, 3), 'CAUSAL'], [1, 3], [1, 2])   # as NUMPY_GRID


@pytest.mark.skipif(importlib.util.find_spec('torch') is None, reason='torch is not installed')
@pytest.mark.parametrize('stride,padding,rhs_dilation,groups', TORCH_GRID,
                         ids=grid_ids(TORCH_GRID))
def test_matches_torch_conv1d(stride, padding, rhs_dilation, groups):
    import torch
    import torch.nn.functional as F
    x, w, b = _random_case(3, 2, 17, 4, 6, 3, groups, True)
    y = _layer(4, 6, 3, w, b, stride=stride, padding=padding, rhs_dilation=rhs_dilation,
               groups=groups)(x)
    low, high = reference_pads(padding, 17, 3, stride, 1, rhs_dilation)
    xt = F.pad(torch.from_numpy(x).permute(0, 2, 1), (low, high))
    wt = torch.from_numpy(w).permute(2, 1, 0).contiguous()
    expected = F.conv1d(xt, wt, torch.from_numpy(b[0]), stride=stride, dilation=rhs_dilation,
                        groups=groups).permute(0, 2, 1).numpy()
    np.testing.assert_allclose(np.asarray(y), expected, rtol=RTOL, atol=ATOL)


def test_all_ones_kernel_same_padding():
    conv = Conv1d(1, 1, 3, w_initializer=1.0, mode=bm.NonBatchingMode())
    y = conv(jnp.ones((5, 1)))
    assert y[:, 0].tolist() == [2.0, 3.0, 3.0, 3.0, 2.0]


def test_all_ones_kernel_causal_padding_sees_only_the_past():
    conv = Conv1d(1, 1, 3, padding='causal', w_initializer=1.0, b_initializer=None,
                  mode=bm.NonBatchingMode())
    y = conv(jnp.arange(1.0, 6.0)[:, None])
    # y[t] = x[t-2] + x[t-1] + x[t] with zeros before the start.
    assert y[:, 0].tolist() == [1.0, 3.0, 6.0, 9.0, 12.0]


def test_same_padding_with_input_dilation_keeps_dilated_length():
    conv = Conv1d(1, 1, 3, lhs_dilation=2, w_initializer=1.0, mode=bm.NonBatchingMode())
    y = conv(jnp.ones((4, 1)))
    # dilated input 1 0 1 0 1 0 1, padded by one zero each side, summed over 3 taps.
    assert y[:, 0].tolist() == [1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0]


def test_spikes_count_active_inputs_in_window():
    spikes = jnp.array([[1], [0], [0], [1], [1], [0]], dtype=bool)
    conv = Conv1d(1, 2, 2, padding='VALID', w_initializer=jnp.array([[[1.0, 2.0]], [[1.0, 2.0]]]),
                  b_initializer=jnp.array([0.5, 0.0]), mode=bm.NonBatchingMode())
    y = conv(spikes)
    assert y.tolist() == [[1.5, 2.0], [0.5, 0.0], [1.5, 2.0], [2.5, 4.0], [1.5, 2.0]]


def test_pure_function_matches_layer():
    x, w, b = _random_case(11, 2, 9, 4, 4, 3, 2, True)
    options = dict(stride=2, padding=(2, 1), rhs_dilation=2, groups=2)
    layer = _layer(4, 4, 3, w, b, **options)
    np.testing.assert_array_equal(np.asarray(conv1d(x, w, b[0], **options)),
                                  np.asarray(layer(x)))
