"""Every row of the bad-input matrix fails loudly with its exception and message."""
import os

import brainpy.math as bm
import jax.numpy as jnp
import numpy as np
import pytest

from bad_inputs import ROWS, markdown
from bp_conv_ext import Conv1d
from conftest import EVENT_IDS, EVENT_RUNTIMES, event_runtime

DOC = os.path.join(os.path.dirname(__file__), os.pardir, 'docs', 'bad_input.md')


@pytest.mark.parametrize('what,call,error,pattern', ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_row(what, call, error, pattern):
    if what.startswith('state.'):
        pytest.importorskip('brainstate')
    with pytest.raises(error, match=pattern):
        call()


def test_docs_table_is_the_tested_matrix():
    with open(DOC) as f:
        assert f.read() == markdown(), "regenerate: python tests/bad_inputs.py > docs/bad_input.md"


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
