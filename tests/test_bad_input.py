"""Every row of the bad-input matrix fails loudly with its exception and message."""
import os

import brainpy.math as bm
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.bad_inputs import ROWS, markdown
from helpers.cases import EVENT_IDS, EVENT_RUNTIMES, event_runtime

from bp_conv_ext import Conv1d, conv1d

DOC = os.path.join(os.path.dirname(__file__), os.pardir, 'docs', 'bad_input.md')


@pytest.mark.parametrize('what,call,error,pattern', ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_row(what, call, error, pattern):
    if what.startswith('state.'):
        pytest.importorskip('brainstate')
    if what.split(':')[0].endswith(('to_nir', 'from_nir')):
        pytest.importorskip('nir')              # (not on the BrainPy 2.6 stack)
    with pytest.raises(error, match=pattern):
        call()


def test_docs_table_is_the_tested_matrix():
    with open(DOC) as f:
        assert f.read() == markdown(), \
            "regenerate: python tests/helpers/bad_inputs.py > docs/bad_input.md"


@pytest.mark.parametrize('value', [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize('backend,runtime', [('xla', None), ('im2col', None)]
                         + [('event', r) for r in EVENT_RUNTIMES],
                         ids=['xla', 'im2col'] + EVENT_IDS)
def test_nan_and_inf_pass_through_to_their_windows_only(value, backend, runtime):
    conv = Conv1d(1, 2, 3, w_initializer=1.0, mode=bm.NonBatchingMode())
    conv.backend = backend
    x = jnp.ones((9, 1)).at[4, 0].set(value)
    with event_runtime(runtime):
        y = np.asarray(conv(x))
    touched = np.zeros(9, bool)
    touched[3:6] = True                      # SAME, K=3: outputs 3, 4, 5 see input 4
    if np.isnan(value):
        assert np.isnan(y[touched]).all()
    else:
        assert (y[touched] == value).all()
    assert np.isfinite(y[~touched]).all()
    np.testing.assert_array_equal(y[~touched][:, 0], [2, 3, 3, 3, 3, 2][:(~touched).sum()])


@pytest.mark.parametrize('where', ['kernel-nan', 'kernel-inf', 'input-nan', 'input-inf'])
@pytest.mark.parametrize('density', [0.01, 0.1, 0.5])
@pytest.mark.parametrize('runtime', EVENT_RUNTIMES, ids=EVENT_IDS)
def test_event_path_and_auto_give_the_dense_answer_with_nan_and_inf(runtime, density, where):
    # IEEE: 0 * nan and 0 * inf are NaN, so on the dense path a kernel that is not finite
    # reaches every output of its channel; the event path, which skips zeros, must agree.
    rng = np.random.default_rng(0)
    spikes = rng.random((4, 40, 6)) < density
    w = rng.standard_normal((3, 6, 5)).astype(np.float32)
    value = np.nan if where.endswith('nan') else np.inf
    if where.startswith('kernel'):
        w[1, 2, 3] = value
        x = jnp.asarray(spikes)
    else:
        x = jnp.asarray(spikes * rng.standard_normal(spikes.shape), jnp.float32)
        x = x.at[1, 7, 2].set(value)
    dense = conv1d(x, w, backend='xla')
    with event_runtime(runtime):
        event = conv1d(x, w, backend='event')
        auto = conv1d(x, w)
    assert not np.isfinite(dense).all()
    np.testing.assert_allclose(event, dense, rtol=1e-5, atol=1e-5)    # NaN where NaN
    np.testing.assert_allclose(auto, dense, rtol=1e-5, atol=1e-5)
