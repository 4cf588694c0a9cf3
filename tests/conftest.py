import os

import brainpy.math as bm
import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Property-based tests: a quick profile for CI, a long one for nightly-style runs.
settings.register_profile('ci', max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
settings.register_profile('nightly', max_examples=400, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'ci'))

# Reference comparisons should not depend on reduced-precision matmuls.
jax.config.update('jax_default_matmul_precision', 'highest')


def reference_conv1d(x, w, b=None, *, stride=1, padding='SAME', lhs_dilation=1,
                     rhs_dilation=1, groups=1):
    """Direct float64 NumPy loop over output positions and taps.

    ``x``: [B, H, C]; ``w``: [K, C // groups, O]; ``padding``: 'SAME', 'VALID',
    'CAUSAL' or an explicit (low, high) pair.
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    batch, length, channels = x.shape
    k, cin_g, cout = w.shape
    dilated = np.zeros((batch, (length - 1) * lhs_dilation + 1, channels))
    dilated[:, ::lhs_dilation] = x
    span = (k - 1) * rhs_dilation + 1
    if padding == 'VALID':
        low, high = 0, 0
    elif padding == 'CAUSAL':
        low, high = span - 1, 0
    elif padding == 'SAME':
        n_out = int(np.ceil(dilated.shape[1] / stride))
        total = max((n_out - 1) * stride + span - dilated.shape[1], 0)
        low, high = total // 2, total - total // 2
    else:
        low, high = padding
    padded = np.pad(dilated, ((0, 0), (low, high), (0, 0)))
    n_out = (padded.shape[1] - span) // stride + 1
    cout_g = cout // groups
    y = np.zeros((batch, n_out, cout))
    for t in range(n_out):
        for tap in range(k):
            sample = padded[:, t * stride + tap * rhs_dilation]
            for g in range(groups):
                y[:, t, g * cout_g:(g + 1) * cout_g] += (
                    sample[:, g * cin_g:(g + 1) * cin_g] @ w[tap, :, g * cout_g:(g + 1) * cout_g])
    if b is not None:
        y += np.asarray(b, dtype=np.float64).reshape(-1)
    return y


@pytest.fixture(autouse=True)
def _fresh_brainpy_state():
    """Each test starts from the default mode, a fixed seed and free names."""
    bm.set_mode(bm.NonBatchingMode())
    bm.random.seed(0)
    yield
    bm.clear_name_cache()
