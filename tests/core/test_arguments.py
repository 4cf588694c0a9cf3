"""Every bad argument fails at once with the right exception and a message naming it."""
import re

import brainpy as bp
import brainpy.math as bm
import jax.numpy as jnp
import numpy as np
import pytest

from bp_conv_ext import Conv1d, conv1d, output_length, spike_drive


@pytest.mark.parametrize('name', ['in_channels', 'out_channels', 'kernel_size', 'stride',
                                  'strides', 'lhs_dilation', 'rhs_dilation', 'groups'])
@pytest.mark.parametrize('value', [0, -2])
def test_non_positive_sizes_are_value_errors(name, value):
    kwargs = dict(in_channels=4, out_channels=4, kernel_size=3)
    kwargs[name] = value
    with pytest.raises(ValueError, match=rf"`{name}` \(={value}\) must be a positive integer"):
        Conv1d(**kwargs)


@pytest.mark.parametrize('name', ['in_channels', 'out_channels', 'kernel_size', 'stride',
                                  'lhs_dilation', 'rhs_dilation', 'groups'])
@pytest.mark.parametrize('value', [2.0, '3', True])
def test_non_integer_sizes_are_type_errors(name, value):
    kwargs = dict(in_channels=4, out_channels=4, kernel_size=3)
    kwargs[name] = value
    with pytest.raises(TypeError, match=rf"`{name}` \(={value!r}\) must be an int"):
        Conv1d(**kwargs)


def test_sequence_of_one_int_is_accepted_and_longer_is_rejected():
    conv = Conv1d(2, 2, (3,), stride=[2], rhs_dilation=(2,))
    assert (conv.kernel_size, conv.stride, conv.rhs_dilation) == ((3,), (2,), (2,))
    with pytest.raises(ValueError, match=r"`kernel_size` \(=\(3, 3\)\) must be an int or a "
                                         r"sequence of one int"):
        Conv1d(2, 2, (3, 3))


def test_stride_and_strides_together_are_rejected():
    with pytest.raises(ValueError, match=r"`stride` \(=2\) and `strides` \(=2\) were both given"):
        Conv1d(2, 2, 3, stride=2, strides=2)


def test_strides_alone_sets_the_stride():
    conv = Conv1d(1, 1, 1, strides=3, w_initializer=1.0, mode=bm.NonBatchingMode())
    assert conv.stride == (3,)
    assert conv(jnp.arange(7.0)[:, None])[:, 0].tolist() == [0.0, 3.0, 6.0]


@pytest.mark.parametrize('cin,cout,groups,bad', [(6, 4, 4, 'in_channels'),
                                                 (4, 6, 4, 'out_channels')])
def test_groups_must_divide_channels(cin, cout, groups, bad):
    value = cin if bad == 'in_channels' else cout
    with pytest.raises(ValueError, match=rf"`{bad}` \(={value}\) must be divisible by "
                                         rf"`groups` \(={groups}\)"):
        Conv1d(cin, cout, 3, groups=groups)


@pytest.mark.parametrize('padding,error,match', [
    ('FULL', ValueError, r"`padding` \(='FULL'\) must be one of SAME, VALID, CAUSAL"),
    ('', ValueError, r"`padding` \(=''\) must be one of"),
    (-1, ValueError, r"`padding` \(=-1\) must not be negative"),
    ((2, -1), ValueError, r"must not be negative; got low=2, high=-1"),
    ((1, 2, 3), ValueError, r"`padding` \(=\(1, 2, 3\)\) must be an int, a \(low, high\) pair"),
    ([(1, 2), (3, 4)], ValueError, r"must be an int, a \(low, high\) pair of ints or a sequence"),
    ([(1,)], ValueError, r"must hold a \(low, high\) pair of ints, got \(1,\)"),
    ([(1.0, 2)], ValueError, r"must hold a \(low, high\) pair of ints"),
    ((), ValueError, r"`padding` \(=\(\)\) must be an int"),
    (1.5, TypeError, r"`padding` \(=1.5\) must be a str, an int or a sequence, got float"),
    (None, TypeError, r"`padding` \(=None\) must be a str"),
])
def test_malformed_padding(padding, error, match):
    with pytest.raises(error, match=match):
        Conv1d(2, 2, 3, padding=padding)


@pytest.mark.parametrize('padding,canonical', [
    ('same', 'SAME'), ('Valid', 'VALID'), (3, ((3, 3),)), ((1, 2), ((1, 2),)),
    ([[0, 4]], ((0, 4),)), ('CAUSAL', ((4, 0),)),
])
def test_padding_forms_are_canonicalised(padding, canonical):
    assert Conv1d(2, 2, 3, rhs_dilation=2, padding=padding).padding == canonical


@pytest.mark.parametrize('w_init,error,match', [
    (np.ones((3, 2, 5)), ValueError,
     r"`w_initializer`: the array has shape \(3, 2, 5\); expected \(3, 2, 4\)"),
    (lambda shape: jnp.ones((1, 1)), ValueError,
     r"`w_initializer`: the value returned by the initializer has shape \(1, 1\)"),
    (None, ValueError, r"`w_initializer` \(=None\) must give the kernel"),
    ('xavier', TypeError, r"`w_initializer` \(='xavier'\) must be a brainpy Initializer"),
    (np.ones((3, 2, 4), dtype=np.complex64), TypeError, r"`w_initializer` .* must hold real"),
    (True, TypeError, r"`w_initializer` \(=True\) must be .* not a bool"),
    (1 + 2j, TypeError, r"`w_initializer` \(=\(1\+2j\)\) must be a real number"),
])
def test_bad_weight_initializers(w_init, error, match):
    with pytest.raises(error, match=match):
        Conv1d(2, 4, 3, w_initializer=w_init)


@pytest.mark.parametrize('b_init', [np.ones((4, 1)), np.ones((2, 4)), np.ones(5)])
def test_bias_arrays_of_wrong_shape_are_rejected(b_init):
    with pytest.raises(ValueError, match=rf"`b_initializer`: the array has shape "
                                         rf"{re.escape(str(b_init.shape))}; expected \(1, 4\) "
                                         rf"or \(4,\)"):
        Conv1d(2, 4, 3, b_initializer=b_init)


def test_initializer_kinds_give_the_expected_parameters():
    conv = Conv1d(2, 4, 3, w_initializer=bp.init.Constant(0.5),
                  b_initializer=np.arange(4.0))
    assert conv.w.shape == (3, 2, 4) and np.all(conv.w.value == 0.5)
    assert conv.b.shape == (1, 4) and conv.b.value.tolist() == [[0.0, 1.0, 2.0, 3.0]]
    conv = Conv1d(2, 4, 3, w_initializer=lambda shape: jnp.full(shape, 2.0), b_initializer=0.25)
    assert np.all(conv.w.value == 2.0) and np.all(conv.b.value == 0.25)
    assert Conv1d(2, 4, 3, b_initializer=None).b is None


@pytest.mark.parametrize('mask_shape', [(3, 2, 5), (2, 3), (4, 2, 4)])
def test_mask_must_broadcast_to_kernel(mask_shape):
    with pytest.raises(ValueError, match=rf"`mask` has shape {re.escape(str(mask_shape))}, "
                                         rf"which does not "
                                         rf"broadcast to the kernel shape \(3, 2, 4\)"):
        Conv1d(2, 4, 3, mask=np.ones(mask_shape))


def test_mask_of_complex_values_is_rejected():
    with pytest.raises(TypeError, match=r"`mask` .* must hold bool or real numbers"):
        Conv1d(2, 4, 3, mask=np.ones((3, 2, 4), dtype=np.complex64))


@pytest.mark.parametrize('mode,error,match', [
    ('training', TypeError, r"`mode` \(='training'\) must be a brainpy.math.Mode instance"),
    (bm.Mode(), ValueError, r"`mode` \(=Mode\) is not supported; expected NonBatchingMode"),
])
def test_unsupported_modes(mode, error, match):
    with pytest.raises(error, match=match):
        Conv1d(2, 4, 3, mode=mode)


@pytest.mark.parametrize('mode,shape,accepted', [
    (bm.NonBatchingMode(), (2, 10, 2), r'\[H, C\] \(rank 2\)'),
    (bm.NonBatchingMode(), (2,), r'\[H, C\] \(rank 2\)'),
    (bm.BatchingMode(), (10, 2), r'\[B, H, C\] \(rank 3\)'),
    (bm.TrainingMode(), (10, 2), r'\[B, H, C\] \(rank 3\)'),
    (bm.TrainingMode(), (1, 2, 10, 2), r'\[B, H, C\] \(rank 3\)'),
])
def test_rank_that_does_not_fit_the_mode(mode, shape, accepted):
    conv = Conv1d(2, 4, 3, mode=mode)
    mode_name = type(mode).__name__
    with pytest.raises(ValueError, match=rf"is in {mode_name}, where a call accepts inputs of "
                                         rf"shape {accepted}; got an input of shape "
                                         rf"{re.escape(str(shape))}"):
        conv(jnp.ones(shape))


def test_wrong_channel_count():
    with pytest.raises(ValueError, match=r"expects in_channels=2 in the last axis; got an input "
                                         r"of shape \(10, 3\)"):
        Conv1d(2, 4, 3, mode=bm.NonBatchingMode())(jnp.ones((10, 3)))


@pytest.mark.parametrize('length,padding,options', [
    (2, 'VALID', {}), (4, 'VALID', dict(rhs_dilation=2)), (1, (1, 0), {}),
])
def test_input_too_short_for_the_kernel(length, padding, options):
    conv = Conv1d(2, 4, 3, padding=padding, mode=bm.NonBatchingMode(), **options)
    with pytest.raises(ValueError, match=rf"the input is too short for the kernel: {length} "
                                         rf"samples"):
        conv(jnp.ones((length, 2)))


def test_kernel_as_long_as_the_input_is_fine_under_valid():
    assert Conv1d(2, 4, 5, padding='VALID', mode=bm.NonBatchingMode())(jnp.ones((5, 2))).shape \
        == (1, 4)


@pytest.mark.parametrize('padding', ['SAME', 'CAUSAL', 'VALID'])
def test_empty_input_is_rejected(padding):
    with pytest.raises(ValueError, match=r"the input has 0 samples along the length axis"):
        Conv1d(2, 4, 1, padding=padding, mode=bm.BatchingMode())(jnp.ones((3, 0, 2)))


def test_complex_input_is_rejected():
    with pytest.raises(TypeError, match=r"the input has dtype complex64; expected bool, integer "
                                        r"or real floating"):
        Conv1d(2, 4, 3, mode=bm.NonBatchingMode())(jnp.ones((6, 2), dtype=jnp.complex64))


@pytest.mark.parametrize('x_shape,w_shape,b_shape,match', [
    ((1, 2, 6, 2), (3, 2, 4), None, r"`x` must have shape \[H, C\] or \[B, H, C\]"),
    ((6, 2), (3, 8), None, r"`w` must have shape \[K, C_in // groups, C_out\]"),
    ((6, 2), (3, 3, 4), None, r"`w` \(shape \(3, 3, 4\)\) expects 3 input channels"),
    ((6, 2), (3, 2, 4), (5,), r"`b` \(shape \(5,\)\) must hold one value per output channel"),
])
def test_pure_function_checks_shapes(x_shape, w_shape, b_shape, match):
    b = None if b_shape is None else jnp.ones(b_shape)
    with pytest.raises(ValueError, match=match):
        conv1d(jnp.ones(x_shape), jnp.ones(w_shape), b)


@pytest.mark.parametrize('length,k,stride,padding,lhs,rhs,expected', [
    (10, 3, 1, 'SAME', 1, 1, 10), (10, 3, 3, 'SAME', 1, 1, 4), (10, 3, 1, 'VALID', 1, 1, 8),
    (10, 3, 2, 'CAUSAL', 1, 2, 5), (10, 3, 1, (1, 0), 1, 1, 9), (10, 3, 1, 'SAME', 2, 1, 19),
    (10, 3, 2, 'VALID', 3, 2, 12),
])
def test_output_length_formula(length, k, stride, padding, lhs, rhs, expected):
    assert output_length(length, k, stride, padding, lhs, rhs) == expected
    conv = Conv1d(1, 1, k, stride=stride, padding=padding, lhs_dilation=lhs, rhs_dilation=rhs,
                  mode=bm.NonBatchingMode())
    assert conv(jnp.ones((length, 1))).shape == (expected, 1)


@pytest.mark.parametrize('kernel_dtype', ['int8', 'int32', 'bool'])
@pytest.mark.parametrize('backend', ['xla', 'im2col', 'event'])
def test_integer_and_bool_kernels_compute_in_floating_point(kernel_dtype, backend):
    x = np.ones((1, 6, 2), np.int8)
    w = np.full((3, 2, 1), True if kernel_dtype == 'bool' else 100, kernel_dtype)
    b = np.array([0.5])
    y = conv1d(x, w, b, backend=backend)
    expected = conv1d(x.astype(np.float32), w.astype(np.float32), b, backend='xla')
    assert jnp.issubdtype(y.dtype, jnp.floating)
    np.testing.assert_array_equal(y, expected)          # no wrapping, saturation or rounding
    assert float(y[0, 1, 0]) == 6 * float(w.flat[0]) + 0.5


@pytest.mark.parametrize('padding', ['valid', 'same', 'causal', 3, (2, 0)])
@pytest.mark.parametrize('stride,lhs,rhs', [(1, 1, 1), (2, 1, 3), (3, 2, 1)])
def test_output_length_is_the_length_conv1d_gives(padding, stride, lhs, rhs):
    y = conv1d(jnp.ones((13, 1)), jnp.ones((3, 1, 1)), stride=stride, padding=padding,
               lhs_dilation=lhs, rhs_dilation=rhs)
    assert output_length(13, 3, stride, padding, lhs, rhs) == y.shape[0]


@pytest.mark.parametrize('kernel_size,in_channels,groups,rate', [(5, 2, 1, 0.01), (3, 16, 4, 0.2)])
def test_spike_drive_gives_the_promised_current(kernel_size, in_channels, groups, rate):
    # Many outputs and samples: the mean output over both is drive * current, and the outputs'
    # own means (over samples) differ by spread * current.
    current, outputs, samples = 20., 4000, 400
    mean, std = spike_drive(kernel_size, in_channels, rate=rate, current=current,
                            groups=groups, drive=1.5, spread=0.5)
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(mean, std, (kernel_size, in_channels // groups, outputs)),
                    jnp.float32)
    x = jnp.asarray(rng.random((samples, kernel_size, in_channels)) < rate)
    y = np.asarray(conv1d(x, w, padding='VALID', groups=groups))[:, 0]      # (samples, outputs)
    # Each output's expected value, p * (the sum of its taps), over the drawn kernels.
    expected = rate * np.asarray(w).sum((0, 1))
    assert abs(expected.mean() / (1.5 * current) - 1) < 0.05
    assert abs(expected.std() / (0.5 * current) - 1) < 0.05
    assert abs(y.mean() / (1.5 * current) - 1) < 0.1


@pytest.mark.parametrize('integer,real', [(jnp.asarray, jnp.asarray), (np.asarray, np.asarray),
                                          (np.int32, np.float32)],
                         ids=['jax-0d', 'numpy-0d', 'numpy-scalar'])
def test_spike_drive_takes_numpy_and_jax_scalars(integer, real):
    # Each form gives the answer of the Python numbers it holds (float32 values: 0.1 rounded).
    expected = spike_drive(3, 16, rate=float(np.float32(0.1)), current=20., groups=4,
                           drive=1.5, spread=0.25)
    got = spike_drive(integer(3), integer(16), rate=real(0.1), current=real(20.),
                      groups=integer(4), drive=real(1.5), spread=real(0.25))
    assert all(type(v) is float for v in got)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize('name,value,message', [
    ('current', np.inf, r"`current` \(=inf\) must be finite: a positive current"),
    ('current', jnp.asarray(jnp.nan), r"`current` \(=Array\(nan.*\)\) must be finite"),
    ('drive', np.inf, r"`drive` \(=inf\) must be finite: a number >= 0"),
    ('spread', np.nan, r"`spread` \(=nan\) must be finite: a number >= 0"),
    ('rate', jnp.asarray(1.5),
     r"`rate` \(=Array\(1.5.*\)\) must be a spike probability in \(0, 1\]"),
    ('rate', jnp.asarray([0.1]), r"`rate` \(=Array\(\[0.1\].*\)\) must be a spike probability"),
    ('rate', np.bool_(True), r"`rate` \(=np.True_\) must be a spike probability"),
    ('kernel_size', jnp.asarray(5.), r"`kernel_size` \(=Array\(5.*\)\) must be a positive int"),
    ('groups', jnp.asarray(True), r"`groups` \(=Array\(True.*\)\) must be a positive int"),
], ids=['current-inf', 'current-nan-jax', 'drive-inf', 'spread-nan', 'rate-jax-1.5',
        'rate-jax-1-element', 'rate-numpy-bool', 'kernel_size-jax-float', 'groups-jax-bool'])
def test_spike_drive_refuses_non_finite_and_non_scalar_values(name, value, message):
    kwargs = dict(kernel_size=5, in_channels=2, rate=0.05, current=20.)
    kwargs[name] = value
    with pytest.raises(ValueError, match=message):
        spike_drive(**kwargs)
