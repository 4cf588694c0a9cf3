"""padding_mode: 'reflect', 'replicate', 'circular' against NumPy padding + the loop
reference and against torch, on every backend, with gradients, in the layer and multi-step."""
import importlib.util
import inspect
import itertools
import os
import subprocess
import sys
import zlib

import brainpy.math as bm
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.cases import (
    EVENT_IDS,
    EVENT_RUNTIMES,
    FULL_GRIDS,
    enable_x64,
    event_runtime,
    grid_ids,
    pairwise,
    random_case,
    reference_conv1d,
    reference_pads,
)
from jax.test_util import check_grads

from bp_conv_ext import Conv1d, conv1d

MODES = ('reflect', 'replicate', 'circular')
NUMPY_MODES = {'reflect': 'reflect', 'replicate': 'edge', 'circular': 'wrap'}
PADDINGS = ('SAME', 'CAUSAL', 2, (3, 1), 'VALID')
TOL = dict(rtol=1e-5, atol=1e-5)
#: The dense path, the event path, and the event path on the pure-JAX kernels (forced).
RUNS = [('dense', None)] + [('event', r) for r in EVENT_RUNTIMES]
RUN_IDS = ['dense'] + EVENT_IDS


def padded_reference(x, w, b, mode, padding, stride=1, rhs_dilation=1, groups=1):
    """NumPy pads the input with ``mode``; the loop reference convolves without padding."""
    low, high = reference_pads(padding, x.shape[1], w.shape[0], stride, 1, rhs_dilation)
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (low, high), (0, 0)), mode=NUMPY_MODES[mode])
    return reference_conv1d(xp, w, b, stride=stride, padding='VALID', rhs_dilation=rhs_dilation,
                            groups=groups)


def case_seed(*case) -> int:
    """A seed drawn from a case's values, the same in every process (``hash`` of a string is
    not: Python salts it per process, so a failure could not be reproduced)."""
    return zlib.crc32(repr(case).encode())


# A pairwise grid (the full product under `make test-full`): the mode decides the values
# the pads hold, the padding form and stride and dilation their widths (one formula), and the
# kernels only ever see the padded input with no padding of their own; every pair of them is
# in the grid.
GRID = pairwise(MODES, PADDINGS, [1, 2], [1, 2], [1, 2], list(zip(RUNS, RUN_IDS)))


@pytest.mark.parametrize('mode,padding,stride,rhs_dilation,groups,run', GRID,
                         ids=grid_ids([row[:-1] + (row[-1][1],) for row in GRID]))
def test_matches_numpy_padding_and_reference(mode, padding, stride, rhs_dilation, groups, run):
    (backend, runtime), _ = run
    rng = np.random.default_rng(case_seed(mode, padding, stride, rhs_dilation, groups))
    x, w, b = random_case(rng, 2, 11, 4, 6, 3, groups=groups,
                          density=0.3 if backend == 'event' else None)
    with event_runtime(runtime):
        y = conv1d(x, w, b, stride=stride, padding=padding, rhs_dilation=rhs_dilation,
                   groups=groups, padding_mode=mode, backend=backend)
    expected = padded_reference(x, w, b, mode, padding, stride, rhs_dilation, groups)
    np.testing.assert_allclose(np.asarray(y), expected, **TOL)


def test_the_grid_draws_the_same_case_in_every_process():
    # The seed of one grid row, in this process and in two others with other string hashes.
    case = GRID[0][:-1]
    code = f"import zlib\n{inspect.getsource(case_seed)}\nprint(case_seed(*{case!r}))"
    seeds = {case_seed(*case)} | {
        int(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONHASHSEED=salt), check=True).stdout)
        for salt in ('1', '2')}
    assert len(seeds) == 1


@pytest.mark.parametrize('mode', MODES)
def test_modes_differ_from_zeros_only_near_the_edges(mode):
    x, w, b = random_case(np.random.default_rng(0), 1, 20, 2, 3, 5)
    zeros = np.asarray(conv1d(x, w, b))
    other = np.asarray(conv1d(x, w, b, padding_mode=mode))
    np.testing.assert_allclose(other[:, 2:-2], zeros[:, 2:-2], **TOL)
    assert np.abs(other[:, :2] - zeros[:, :2]).max() > 1e-3
    assert np.abs(other[:, -2:] - zeros[:, -2:]).max() > 1e-3


def test_hand_worked_edges():
    x = jnp.arange(1.0, 6.0)[:, None]            # 1 2 3 4 5, padded by 2 on each side
    w = jnp.asarray([1.0, 0.0, 0.0, 0.0, 0.0])[:, None, None]   # picks the leftmost tap
    first_two = {mode: conv1d(x, w, padding=2, padding_mode=mode)[:2, 0].tolist()
                 for mode in ('zeros',) + MODES}
    assert first_two == {'zeros': [0.0, 0.0], 'reflect': [3.0, 2.0],
                         'replicate': [1.0, 1.0], 'circular': [4.0, 5.0]}


@pytest.mark.skipif(importlib.util.find_spec('torch') is None, reason='torch is not installed')
@pytest.mark.parametrize('groups', [1, 2])
@pytest.mark.parametrize('padding', [1, 3, 'same'])
@pytest.mark.parametrize('mode', MODES)
def test_matches_torch_padding_modes(mode, padding, groups):
    import torch
    rng = np.random.default_rng(7)
    x, w, b = random_case(rng, 3, 9, 4, 6, 4, groups=groups)
    module = torch.nn.Conv1d(4, 6, 4, padding=padding, dilation=2 if padding == 'same' else 1,
                             groups=groups, padding_mode=mode)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(w).permute(2, 1, 0))
        module.bias.copy_(torch.from_numpy(b))
        expected = module(torch.from_numpy(x).permute(0, 2, 1)).permute(0, 2, 1).numpy()
    y = conv1d(x, w, b, padding=padding if padding != 'same' else 'SAME', groups=groups,
               rhs_dilation=2 if padding == 'same' else 1, padding_mode=mode)
    np.testing.assert_allclose(np.asarray(y), expected, **TOL)


# Every mode and every run at least once (the full product under `make test-full`): the
# kernels see an input already padded, so a mode's gradient is the same on every run.
_NAMED_RUNS = list(zip(RUNS, RUN_IDS))
GRADIENT_ROWS = (list(itertools.product(MODES, _NAMED_RUNS)) if FULL_GRIDS else
                 [(MODES[i % len(MODES)], _NAMED_RUNS[i % len(RUNS)])
                  for i in range(max(len(MODES), len(RUNS)))])


@pytest.mark.parametrize('mode,run', GRADIENT_ROWS,
                         ids=[f'{mode}-{run[1]}' for mode, run in GRADIENT_ROWS])
def test_gradients_float64(mode, run):
    (backend, runtime), _ = run
    rng = np.random.default_rng(3)
    with enable_x64(True), event_runtime(runtime):
        x = jnp.asarray(rng.standard_normal((2, 8, 2)))
        w = jnp.asarray(rng.standard_normal((3, 2, 3)))
        check_grads(lambda x, w: conv1d(x, w, padding=(2, 1), stride=2, padding_mode=mode,
                                        backend=backend), (x, w), order=2, modes=('fwd', 'rev'))


@pytest.mark.parametrize('mode', MODES)
def test_layer_in_every_mode_and_multi_step(mode):
    rng = np.random.default_rng(4)
    xs = rng.random((5, 3, 12, 2)) < 0.4                       # [T, B, H, C] spikes
    for bm_mode in (bm.NonBatchingMode(), bm.BatchingMode(), bm.TrainingMode()):
        conv = Conv1d(2, 4, 3, padding='CAUSAL', padding_mode=mode, mode=bm_mode)
        assert conv.padding_mode == mode and f"padding_mode={mode!r}" in repr(conv)
        w, b = np.asarray(conv.w.value), np.asarray(conv.b.value)
        if isinstance(bm_mode, bm.NonBatchingMode):
            steps = xs[:, 0]
            expected = np.stack([padded_reference(s[None], w, b, mode, 'CAUSAL')[0]
                                 for s in steps])
        else:
            steps = xs
            expected = np.stack([padded_reference(s, w, b, mode, 'CAUSAL') for s in steps])
        np.testing.assert_allclose(np.asarray(conv(steps[0])), expected[0], **TOL)
        np.testing.assert_allclose(np.asarray(conv.multi_step(steps)), expected, **TOL)
        bm.clear_name_cache()


def test_zeros_mode_is_the_default_and_changes_nothing():
    x, w, b = random_case(np.random.default_rng(5), 2, 10, 2, 3, 3)
    np.testing.assert_array_equal(np.asarray(conv1d(x, w, b)),
                                  np.asarray(conv1d(x, w, b, padding_mode='zeros')))
    assert Conv1d(2, 3, 3).padding_mode == 'zeros' and 'padding_mode' not in repr(Conv1d(2, 3, 3))


@pytest.mark.parametrize('mode', MODES)
def test_limits_follow_torch(mode):
    x = jnp.ones((4, 1))
    w = jnp.ones((5, 1, 1))
    if mode == 'replicate':
        assert conv1d(x, w, padding=6, padding_mode=mode).shape == (12, 1)
        return
    widest_ok = 3 if mode == 'reflect' else 4
    assert conv1d(x, w, padding=widest_ok, padding_mode=mode).shape == (2 * widest_ok, 1)
    with pytest.raises(ValueError, match=f"padding_mode='{mode}' needs padding"):
        conv1d(x, w, padding=widest_ok + 1, padding_mode=mode)


def test_jit_and_vmap():
    x, w, b = random_case(np.random.default_rng(6), 4, 10, 2, 3, 3)
    f = jax.jit(lambda x: conv1d(x, w, b, padding_mode='reflect'))
    np.testing.assert_allclose(np.asarray(f(x)),
                               np.asarray(conv1d(x, w, b, padding_mode='reflect')), **TOL)
    per_sample = jax.vmap(lambda s: conv1d(s, w, b, padding_mode='circular'))(x)
    np.testing.assert_allclose(np.asarray(per_sample),
                               np.asarray(conv1d(x, w, b, padding_mode='circular')), **TOL)
