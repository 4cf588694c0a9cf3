"""The spiking layer's C++ CPU kernel (``conv_lif(kernels='c++')``: spiking_cpu.cc, forward
and backward): the same spikes, potentials and gradients as the ``'jax'`` kernels over the
neurons' and convolution's options, the surrogates it computes itself and those it is given,
operands that are not finite, and what it hands to the ``'jax'`` kernels. The transforms
(``jit``, ``vmap``, ``grad`` of ``grad``, ``jax.hessian``, ``jax.checkpoint``) are in
tests/ops/test_fused.py."""
import brainpy.math as bm
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.cases import CPU_KERNELS, grid_ids, pairwise

from bp_conv_ext import output_length
from bp_conv_ext.ops import fused
from bp_conv_ext.ops.fused import LIF, conv_lif

pytestmark = pytest.mark.skipif('c++' not in CPU_KERNELS, reason="no working C++ compiler here")

SURROGATES = {
    'none': None, 'sigmoid': bm.surrogate.Sigmoid(alpha=4.), 'arctan': bm.surrogate.Arctan(),
    'inv-square': bm.surrogate.InvSquareGrad(), 'relu': bm.surrogate.ReluGrad(),
    'gaussian': bm.surrogate.GaussianGrad(),
    # Not one the kernel computes: its derivative comes from JAX.
    'soft-sign': bm.surrogate.SoftSign()}


def _case(*, steps=5, batch=3, length=11, cin=3, cout=8, k=3, padding='SAME', rhs_dilation=1,
          spikes=True, seed=0):
    """Operands in multiples of 1/8 (and bool spikes): sums of a few of them are exact in
    float32 in any order, so that the kernel's currents equal XLA's convolution's."""
    rng = np.random.default_rng(seed)
    active = rng.random((steps, batch, length, cin)) < 0.3
    xs = jnp.asarray(active if spikes else active * np.round(rng.standard_normal(active.shape)
                                                             * 8) / 8,
                     None if spikes else jnp.float32)
    w = jnp.asarray(np.round(rng.standard_normal((k, cin, cout)) * 8) / 8, jnp.float32)
    b = jnp.asarray(np.round(rng.standard_normal(cout)) / 8, jnp.float32)
    out_len = output_length(length, k, 1, padding, 1, rhs_dilation)
    v0 = jnp.asarray(np.round(rng.standard_normal((batch, out_len, cout)) * 4) / 8, jnp.float32)
    return xs, w, b, v0


def _outputs(kernels, xs, w, b, v0, lif, spike_fn, **options):
    """The spikes, final potentials and the gradients of a loss of both (with respect to
    every floating operand)."""
    weights = jnp.asarray(np.random.default_rng(7).random((xs.shape[0], v0.shape[0])
                                                          + v0.shape[1:]), jnp.float32)

    def run(xs, w, b, v0):
        return conv_lif(xs, w, b, v0, lif, kernels=kernels, spike_fn=spike_fn, **options)

    def loss(*operands):
        spikes, v = run(*operands)
        return jnp.sum(spikes * weights) + jnp.sum(jnp.sin(v))

    operands = (xs, w, b, v0)
    wrt = tuple(i for i, a in enumerate(operands) if jnp.issubdtype(a.dtype, jnp.inexact))
    spikes, v = jax.jit(run)(*operands)
    return spikes, v, jax.jit(jax.grad(loss, wrt))(*operands)


# The neurons' flags and the surrogate select the kernel's branches; the convolution's options
# its indexing; the two meet only in the current: pairs cover their interactions.
GRID = pairwise(['spikes', 'floats'], ['hard', 'soft'], ['after', 'first'], list(SURROGATES),
                [False, True], [('SAME', 1), ('VALID', 1), ('CAUSAL', 2)], [8, 70],
                ['float32', 'bool'],
                keep=lambda row: not (row[4] and row[2] == 'first'))


@pytest.mark.parametrize('inputs, reset, when, surrogate, detach, conv, cout, spike_dtype', GRID,
                         ids=grid_ids(GRID))
def test_the_cpu_kernel_computes_what_the_jax_implementation_does(inputs, reset, when,
                                                                  surrogate, detach, conv,
                                                                  cout, spike_dtype):
    padding, rhs_dilation = conv
    xs, w, b, v0 = _case(padding=padding, rhs_dilation=rhs_dilation, cout=cout,
                         spikes=inputs == 'spikes')
    lif = LIF.make(tau=2., dt=1., v_th=0.5, v_reset=-0.25, v_rest=0.125, r=1.5,
                   soft=reset == 'soft', detach=detach, reset_first=when == 'first')
    spike_fn = SURROGATES[surrogate]
    options = dict(padding=padding, rhs_dilation=rhs_dilation, spike_dtype=spike_dtype)
    assert fused.cxx_unsupported(xs, w, b, v0, lif, spike_fn) is None
    got = _outputs('c++', xs, w, b, v0, lif, spike_fn, **options)
    expected = _outputs('jax', xs, w, b, v0, lif, spike_fn, **options)
    assert got[0].dtype == expected[0].dtype == jnp.dtype(spike_dtype)
    assert 0.05 < float(jnp.mean(expected[0])) < 0.95               # the neurons do spike
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-5, atol=1e-5)
    for a, e in zip(got[2], expected[2]):
        assert float(jnp.max(jnp.abs(e))) > 0
        np.testing.assert_allclose(a, e, rtol=2e-5, atol=2e-5 * float(jnp.max(jnp.abs(e))))


#: The surrogates' derivatives as published (SpikingJelly's and BrainPy's documentation).
TEXTBOOK = {
    'sigmoid': lambda f, x: f.alpha * np.exp(-f.alpha * x) / (1 + np.exp(-f.alpha * x)) ** 2,
    'arctan': lambda f, x: f.alpha / 2 / (1 + (np.pi / 2 * f.alpha * x) ** 2),
    'inv-square': lambda f, x: 1 / (f.alpha * np.abs(x) + 1) ** 2,
    'relu': lambda f, x: np.maximum(f.alpha * f.width - np.abs(x) * f.alpha, 0),
    'gaussian': lambda f, x: f.alpha * np.exp(-x ** 2 / (2 * f.sigma ** 2))
    / (np.sqrt(2 * np.pi) * f.sigma)}


@pytest.mark.parametrize('surrogate', list(TEXTBOOK))
def test_the_kernel_computes_the_surrogates_whose_derivative_is_the_published_one(surrogate):
    """The kernel computes a surrogate's derivative itself only where the surrogate's own
    (JAX's derivative of it) is the published formula; elsewhere (BrainPy 2.6's
    ``GaussianGrad`` divides by 2 and multiplies by sigma squared) JAX computes it. A surrogate
    changed in a subclass under the same name is left to JAX as well."""
    spike_fn = SURROGATES[surrogate]
    x = np.linspace(-3, 3, 121).astype(np.float32)
    values, pullback = jax.vjp(spike_fn, jnp.asarray(x))
    derivative = np.asarray(pullback(jnp.ones_like(values))[0])
    # (float32 rounding in the tails, where 1 - sigmoid loses digits, is not another formula)
    published = np.allclose(derivative, TEXTBOOK[surrogate](spike_fn, x.astype(np.float64)),
                            rtol=1e-3, atol=1e-5)
    assert (fused.kernel_slope(spike_fn)['slope'] > 0) == published

    class Other(type(spike_fn)):
        def surrogate_grad(self, x):
            return 2 * super().surrogate_grad(x)

    other = Other(**{k: v for k, v in vars(spike_fn).items() if k in ('alpha', 'width',
                                                                          'sigma')})
    other.__class__.__name__ = type(spike_fn).__name__
    assert fused.kernel_slope(other)['slope'] == 0


@pytest.mark.parametrize('where', ['kernel', 'input', 'state'])
def test_operands_that_are_not_finite_give_the_ieee_results(where):
    """Zeros times inf are NaN, as in the dense convolution and its gradients: where the kernel
    (or a step's current gradient) is not all finite, the kernel reads every input, zeros and
    padding included."""
    xs, w, b, v0 = _case(cout=8, spikes=where != 'input')
    if where == 'kernel':
        w = w.at[1, 0, 3].set(jnp.inf).at[0, 2, 5].set(jnp.nan)
    elif where == 'input':
        xs = xs.at[2, 1, 4, 0].set(-jnp.inf)
    else:
        v0 = v0.at[0, 3, 2].set(jnp.inf)
    lif = LIF.make(tau=2., dt=1., v_th=0.5, v_reset=-0.25)
    got = _outputs('c++', xs, w, b, v0, lif, bm.surrogate.Sigmoid())
    expected = _outputs('jax', xs, w, b, v0, lif, bm.surrogate.Sigmoid())
    assert bool(jnp.any(jnp.isnan(expected[2][0])))
    np.testing.assert_array_equal(got[0], expected[0])
    for a, e in zip(jax.tree.leaves(got[1:]), jax.tree.leaves(expected[1:])):
        np.testing.assert_allclose(a, e, rtol=2e-5, atol=1e-4)


@pytest.mark.parametrize('case, reason', [
    (dict(dtype=jnp.float16), 'not bool or float32'),
    (dict(kernel=jnp.bfloat16), 'not float32'),
    (dict(spike_fn=lambda x: (x > 0).astype(x.dtype)), 'not those of x >= 0'),
    (dict(lif=LIF.make(tau=2., dt=1., v_th=0., v_reset=0.5, reset_first=True),
          spike_fn=bm.surrogate.Sigmoid()), 'v_th is not above v_reset')],
    ids=['float16-input', 'bfloat16-kernel', 'strict-heaviside', 'v_th-below-v_reset'])
def test_problems_the_kernel_does_not_compute_exactly_run_as_the_jax_implementation(case,
                                                                                      reason):
    xs, w, b, v0 = _case(spikes=False)
    xs = xs.astype(case.get('dtype', xs.dtype))
    w = w.astype(case.get('kernel', w.dtype))
    lif = case.get('lif', LIF.make(tau=2., dt=1., v_th=0.5))
    spike_fn = case.get('spike_fn')
    assert reason in fused.cxx_unsupported(xs, w, b, v0, lif, spike_fn)
    for kernels in (None, 'c++'):
        got = conv_lif(xs, w, b, v0, lif, kernels=kernels, spike_fn=spike_fn)
        expected = conv_lif(xs, w, b, v0, lif, kernels='jax', spike_fn=spike_fn)
        for a, e in zip(got, expected):
            np.testing.assert_array_equal(a, e)
