"""The delay layer: its kernel against a direct formula and against DCLS, the step-by-step form
against the folded form (outputs and gradients, spikes and floats, every backend), the
simulators and trainers, rounding, and bad inputs."""
import itertools

import brainpy as bp
import brainpy.math as bm
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.cases import EVENT_IDS, EVENT_RUNTIMES, event_runtime

import bp_conv_ext
from bp_conv_ext import DelayConv1d, delay_kernel, sigma_schedule
from bp_conv_ext.ops import delays as _delays

MODES = {'nonbatching': bm.NonBatchingMode, 'batching': bm.BatchingMode,
         'training': bm.TrainingMode}


def reference_kernel(weight, delays, max_delay, sigma):
    """The Gaussian construction written out in float64 NumPy."""
    taps = np.arange(max_delay + 1, dtype=np.float64)[:, None, None, None]
    share = np.exp(-0.5 * ((taps - np.clip(delays, 0, max_delay)[None]) / sigma) ** 2)
    share /= share.sum(0, keepdims=True)
    return np.einsum('dnco,nco->dco', share, weight)


def reference_outputs(xs, kernel, bias=None):
    """y[t] = sum_d kernel[d] x[t - d], float64, ``xs`` time first."""
    xs = np.asarray(xs, dtype=np.float64)
    out = np.zeros(xs.shape[:-1] + (kernel.shape[-1],))
    for d in range(kernel.shape[0]):
        if d < xs.shape[0]:
            out[d:] += xs[:xs.shape[0] - d] @ np.asarray(kernel[d], dtype=np.float64)
    return out if bias is None else out + np.asarray(bias, dtype=np.float64).reshape(-1)


def sequence(mode_name, steps=12, batch=3, channels=4, spikes=True, seed=0):
    rng = np.random.default_rng(seed)
    shape = (steps, channels) if mode_name == 'nonbatching' else (steps, batch, channels)
    if spikes:
        return jnp.asarray(rng.random(shape) < 0.3)
    return jnp.asarray(rng.standard_normal(shape).astype(np.float32))


def make_layer(mode_name, spikes=True, kernel_count=2, max_delay=5, **kwargs):
    kwargs.setdefault('b_initializer', bp.init.Normal())
    if not spikes:
        kwargs.setdefault('input_dtype', jnp.float32)
    return DelayConv1d(4, 6, max_delay=max_delay, kernel_count=kernel_count,
                       mode=MODES[mode_name](), **kwargs)


def reset(layer, mode_name, batch=3):
    layer.reset_state(None if mode_name == 'nonbatching' else batch)


def run_steps(layer, xs):
    return jnp.stack([layer(x) for x in xs])


# --- the kernel ------------------------------------------------------------------------------

@pytest.mark.parametrize('sigma', [0.3, 1.0, 4.0])
def test_kernel_matches_the_gaussian_formula(sigma):
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((3, 4, 5)).astype(np.float32)
    delays = rng.uniform(0, 9, (3, 4, 5)).astype(np.float32)
    got = delay_kernel(jnp.asarray(weight), jnp.asarray(delays), 9, sigma)
    np.testing.assert_allclose(got, reference_kernel(weight, delays, 9, sigma), rtol=1e-5,
                               atol=1e-6)


def test_kernel_keeps_the_total_weight_and_centres_it_on_the_delay():
    weight = jnp.full((1, 1, 1), 2.0)
    kernel = delay_kernel(weight, jnp.full((1, 1, 1), 4.0), 10, 0.8)[:, 0, 0]
    assert float(kernel.sum()) == pytest.approx(2.0, rel=1e-6)
    assert int(jnp.argmax(kernel)) == 4
    np.testing.assert_allclose(kernel[3], kernel[5], rtol=1e-6)


def test_round_interpolation_puts_each_weight_on_one_tap():
    weight = jnp.asarray([[[1.0, 2.0]], [[3.0, 4.0]]])          # [2, 1, 2]
    delays = jnp.asarray([[[0.4, 2.6]], [[2.7, 6.0]]])
    kernel = delay_kernel(weight, delays, 6, 1.0, 'round')[:, 0]
    expected = np.zeros((7, 2))
    expected[0, 0] += 1.0
    expected[3, 1] += 2.0
    expected[3, 0] += 3.0
    expected[6, 1] += 4.0
    np.testing.assert_array_equal(kernel, expected)


def test_delays_outside_the_range_are_clipped_in_traced_code():
    weight = jnp.ones((1, 1, 1))
    kernel = jax.jit(lambda d: delay_kernel(weight, d, 4, 0.5, 'round'))(jnp.full((1, 1, 1), 9.0))
    assert int(jnp.argmax(kernel[:, 0, 0])) == 4


def test_kernel_and_outputs_match_dcls():
    torch = pytest.importorskip('torch')
    modules = pytest.importorskip('DCLS.construct.modules')
    max_delay, c_in, c_out, count, sigma = 7, 3, 4, 2, 1.3
    rng = np.random.default_rng(2)
    weight = rng.standard_normal((count, c_in, c_out)).astype(np.float32)
    delays = rng.uniform(0, max_delay, (count, c_in, c_out)).astype(np.float32)
    dcls = modules.Dcls1d(c_in, c_out, kernel_count=count, dilated_kernel_size=max_delay + 1,
                          padding=0, bias=False, version='gauss')
    with torch.no_grad():
        # DCLS: weight [out, in, count]; positions P centred on the kernel, tap k of a
        # correlation over a window ending at t (delay max_delay - k); its width is |SIG| + 0.27.
        dcls.weight.copy_(torch.from_numpy(weight.transpose(2, 1, 0).copy()))
        position = max_delay - delays - (max_delay + 1) // 2
        dcls.P.copy_(torch.from_numpy(position.transpose(2, 1, 0)[None].copy()))
        dcls.SIG.fill_(sigma - 0.27)
        theirs = dcls.DCK(dcls.weight, dcls.P, dcls.SIG).numpy()       # [out, in, taps]
        xs = rng.standard_normal((2, c_in, 20)).astype(np.float32)       # [B, C, T]
        padded = torch.nn.functional.pad(torch.from_numpy(xs), (max_delay, 0))
        their_out = dcls(padded).numpy()                                 # [B, O, T]
    ours = delay_kernel(jnp.asarray(weight), jnp.asarray(delays), max_delay, sigma)
    np.testing.assert_allclose(ours, theirs.transpose(2, 1, 0)[::-1], rtol=1e-5, atol=1e-6)

    layer = DelayConv1d(c_in, c_out, max_delay, kernel_count=count, w_initializer=weight,
                        delay_initializer=delays, sigma=sigma, input_dtype=jnp.float32,
                        mode=bm.BatchingMode())
    layer.reset_state(2)
    out = layer.multi_step(jnp.asarray(xs.transpose(2, 0, 1)))          # [T, B, O]
    np.testing.assert_allclose(out, their_out.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)


# --- two forms, one answer -------------------------------------------------------------------

@pytest.mark.parametrize('mode_name', list(MODES))
@pytest.mark.parametrize('spikes', [True, False], ids=['spikes', 'floats'])
@pytest.mark.parametrize('interpolation', ['gauss', 'round'])
def test_step_by_step_equals_folded_and_the_reference(mode_name, spikes, interpolation):
    layer = make_layer(mode_name, spikes, interpolation=interpolation)
    xs = sequence(mode_name, spikes=spikes)
    if mode_name == 'training' and spikes:
        xs = xs.astype(jnp.float32)
    reset(layer, mode_name)
    folded = layer.multi_step(xs)
    reset(layer, mode_name)
    steps = run_steps(layer, xs)
    expected = reference_outputs(xs, np.asarray(layer.kernel()), layer.b.value)
    np.testing.assert_allclose(steps, folded, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(folded, expected, rtol=1e-5, atol=1e-5)


# The event path with each CPU kernel set; 'auto' and 'dense' with the default one ('dense'
# runs no event kernel, and 'auto' takes the event path with the default set only).
@pytest.mark.parametrize('backend, runtime', [
    ('auto', None), ('dense', None), *(('event', runtime) for runtime in EVENT_RUNTIMES)],
    ids=['auto', 'dense', *EVENT_IDS])
def test_every_backend_gives_the_same_outputs(backend, runtime):
    layer = make_layer('batching')
    xs = sequence('batching', steps=15)
    layer.backend = 'dense'
    reset(layer, 'batching')
    expected = layer.multi_step(xs)
    layer.backend = backend
    with event_runtime(runtime):
        reset(layer, 'batching')
        folded = jax.jit(lambda v: layer.multi_step(v))(xs)
        reset(layer, 'batching')
        steps = run_steps(layer, xs)
    np.testing.assert_allclose(folded, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(steps, expected, rtol=1e-5, atol=1e-5)


def test_multi_step_continues_from_the_buffer_and_leaves_it_as_steps_do():
    layer = make_layer('batching', spikes=False)
    xs = sequence('batching', steps=14, spikes=False)
    reset(layer, 'batching')
    whole = layer.multi_step(xs)
    reset(layer, 'batching')
    first = layer.multi_step(xs[:4])          # shorter than max_delay + 1 ...
    second = run_steps(layer, xs[4:9])        # ... then steps ...
    third = layer.multi_step(xs[9:])          # ... then folded again
    np.testing.assert_allclose(jnp.concatenate([first, second, third]), whole, rtol=1e-5,
                               atol=1e-5)


def test_reset_state_clears_the_past():
    layer = make_layer('batching', b_initializer=None)
    xs = jnp.ones((3, 3, 4), dtype=bool)
    reset(layer, 'batching')
    run_steps(layer, xs)
    reset(layer, 'batching')
    assert not bool(layer.buffer.value.any())
    silent = run_steps(layer, jnp.zeros((6, 3, 4), dtype=bool))
    np.testing.assert_array_equal(silent, 0.0)


def _loss_folded(layer, xs):
    reset(layer, 'training')
    return jnp.sum(jnp.sin(layer.multi_step(xs)))


def _loss_steps(layer, xs):
    reset(layer, 'training')
    return jnp.sum(jnp.sin(run_steps(layer, xs)))


@pytest.mark.parametrize('backend', ['dense', 'event'])
@pytest.mark.parametrize('spikes', [True, False], ids=['spikes', 'floats'])
def test_gradients_of_both_forms_agree_with_finite_differences(backend, spikes):
    layer = make_layer('training', spikes=False, sigma=1.5)
    layer.backend = backend
    xs = sequence('training', steps=10, spikes=spikes).astype(jnp.float32)
    params = layer.train_vars().unique()
    grads = {}
    for name, loss in [('folded', _loss_folded), ('steps', _loss_steps)]:
        grad = bm.grad(lambda: loss(layer, xs), grad_vars=params)  # noqa: B023 (called here)
        grads[name] = {k: np.asarray(v) for k, v in jax.jit(grad)().items()}
    for key in grads['folded']:
        np.testing.assert_allclose(grads['steps'][key], grads['folded'][key], rtol=1e-5,
                                   atol=1e-5)
    # The delays' gradient, against central differences of the float64 reference.
    weight = np.asarray(layer.w.value, np.float64)
    delays = np.asarray(layer.delay.value, np.float64)
    bias = np.asarray(layer.b.value, np.float64)

    def reference_loss(d):
        return np.sum(np.sin(reference_outputs(xs, reference_kernel(weight, d, 5, 1.5), bias)))

    got = next(g for k, g in grads['folded'].items() if k.endswith('delay'))
    for index in [(0, 0, 0), (1, 2, 3), (0, 3, 5)]:
        step = np.zeros_like(delays)
        step[index] = 1e-4
        numeric = (reference_loss(delays + step) - reference_loss(delays - step)) / 2e-4
        assert got[index] == pytest.approx(numeric, rel=2e-3, abs=2e-4)


def test_gradients_under_vmap_over_sequences():
    layer = make_layer('batching', spikes=False)
    xs = sequence('batching', steps=8, spikes=False)

    def loss(w, x):
        kernel = delay_kernel(w, layer.delay.value, 5, 2.5)
        return jnp.sum(_delays.sequence(jnp.zeros((3, 5, 4)), 0, x, kernel, None, 'auto')[0])

    stacked = jnp.stack([xs, 2 * xs])
    per_sequence = jax.vmap(jax.grad(loss), in_axes=(None, 0))(layer.w.value, stacked)
    np.testing.assert_allclose(per_sequence[1], 2 * per_sequence[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(per_sequence[0], jax.grad(loss)(layer.w.value, xs), rtol=1e-6)


# --- in BrainPy's simulators and trainers ----------------------------------------------------

class _Net(bp.DynamicalSystem):
    def __init__(self, mode, backend='auto'):
        super().__init__(mode=mode)
        self.delays = DelayConv1d(4, 5, max_delay=6, kernel_count=1, mode=mode,
                                  delay_initializer=bp.init.Uniform(0., 6.),
                                  interpolation='round', w_initializer=bp.init.Normal(2.0))
        self.delays.backend = backend
        self.lif = bp.dyn.Lif(5, mode=mode, tau=2.)

    def update(self, x):
        return self.lif(self.delays(x))


@pytest.mark.parametrize('backend', ['dense', 'event'])
def test_dsrunner_step_by_step_equals_layer_by_layer(backend):
    bm.random.seed(3)
    net = _Net(bm.NonBatchingMode(), backend)
    xs = sequence('nonbatching', steps=30, seed=4)
    runner = bp.DSRunner(net, monitors={'spike': net.lif.spike}, progress_bar=False)
    runner.run(inputs=xs)
    net.delays.reset_state()
    stepped = run_steps(net.delays, xs)
    net.delays.reset_state()
    folded = net.delays.multi_step(xs)
    np.testing.assert_allclose(stepped, folded, rtol=1e-5, atol=1e-5)
    # the runner's spikes are those of the LIF group driven by the folded currents
    lif = bp.dyn.Lif(5, mode=bm.NonBatchingMode(), tau=2.)
    spikes = bp_conv_ext.LayerByLayer(lif).multi_step(folded)
    np.testing.assert_array_equal(runner.mon['spike'], spikes)


def _two_layer_network(seed, max_delay, sigma):
    """4 inputs -> delays -> 8 LIF -> delays -> 2 outputs, in TrainingMode."""
    bm.random.seed(seed)
    mode = bm.TrainingMode()
    return bp_conv_ext.LayerByLayer(
        DelayConv1d(4, 8, max_delay=max_delay, mode=mode, sigma=sigma),
        bp.dyn.Lif(8, mode=mode, tau=2., V_th=0.3, spk_fun=bm.surrogate.arctan),
        DelayConv1d(8, 2, max_delay=max_delay, mode=mode, sigma=sigma, input_dtype=jnp.float32),
        mode=mode)


def test_layer_by_layer_and_bptt_train_a_delay_network():
    net = _two_layer_network(5, max_delay=6, sigma=2.0)
    xs = sequence('training', steps=20, batch=4, seed=6).astype(jnp.float32)   # [T, B, C]
    folded = net.multi_step(xs)
    assert bool(jnp.any(folded != 0))
    net.reset(4)
    stepped = jnp.stack([net(x) for x in xs])
    np.testing.assert_allclose(stepped, folded, rtol=1e-5, atol=1e-5)

    targets = jnp.asarray([0, 1, 0, 1])

    def loss(predicts, target):                    # predicts: [B, T, 2]
        return bp.losses.cross_entropy_loss(predicts.mean(1), target)

    trainer = bp.BPTT(net, loss_fun=loss, optimizer=bp.optim.Adam(lr=1e-2),
                      progress_bar=False)
    data = [(jnp.moveaxis(xs, 0, 1), targets)]
    before = {k: np.asarray(v.value) for k, v in net.train_vars().unique().items()}
    trainer.fit(lambda: data, num_epoch=2)
    after = {k: np.asarray(v.value) for k, v in net.train_vars().unique().items()}
    assert len(before) == 4          # weights and delays of both layers, all of them trained
    assert all(not np.array_equal(before[k], after[k]) for k in before)
    assert np.isfinite(trainer.get_hist_metric('fit')).all()


def test_layer_by_layer_trainer_gradients_equal_step_by_step_ones():
    net = _two_layer_network(7, max_delay=4, sigma=1.5)
    xs = jnp.moveaxis(sequence('training', steps=12, batch=4, seed=8).astype(jnp.float32), 0, 1)
    ys = jnp.asarray([0, 1, 1, 0])

    def loss(predicts, targets):                   # predicts: [B, T, 2]
        return bp.losses.cross_entropy_loss(predicts.mean(1), targets)

    trainer = bp_conv_ext.LayerByLayerTrainer(net, loss, bp.optim.SGD(lr=0.1))
    value, grads = trainer.loss_and_grads(xs, ys)
    params = net.train_vars().unique()

    def bptt_loss():
        net.reset(4)
        return loss(jnp.moveaxis(jnp.stack([net(x) for x in jnp.moveaxis(xs, 0, 1)]), 0, 1), ys)

    expected, expected_value = bm.jit(bm.grad(bptt_loss, grad_vars=params, return_value=True))()
    assert set(grads) == set(expected) and len(grads) == 4
    for key in grads:
        np.testing.assert_allclose(grads[key], expected[key], rtol=1e-4, atol=1e-6)
    assert float(value) == pytest.approx(float(expected_value), rel=1e-5)
    before = np.asarray(net[0].delay.value)
    trainer.fit(lambda: [(xs, ys)], num_epoch=2)
    assert not np.array_equal(before, np.asarray(net[0].delay.value))


# --- rounding, sigma, bad input --------------------------------------------------------------

def test_round_delays_gives_integer_shifts():
    layer = make_layer('batching', kernel_count=1, b_initializer=None)
    layer.round_delays()
    assert layer.interpolation == 'round'
    delays = np.asarray(layer.delay.value)
    np.testing.assert_array_equal(delays, np.round(delays))
    xs = sequence('batching', steps=12)
    reset(layer, 'batching')
    out = np.asarray(layer.multi_step(xs))
    w = np.asarray(layer.w.value)[0]
    x = np.asarray(xs, np.float64)
    expected = np.zeros(out.shape)
    for c in range(4):
        for o in range(6):
            d = int(delays[0, c, o])
            expected[d:, :, o] += w[c, o] * x[:x.shape[0] - d, :, c]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_sigma_schedule_and_set_sigma():
    values = [sigma_schedule(e, 5, 8.0) for e in range(7)]
    assert values[0] == pytest.approx(8.0) and values[4] == pytest.approx(0.5)
    assert values[5] == values[4] == values[6]
    assert all(a > b for a, b in itertools.pairwise(values[:5]))
    layer = make_layer('training')
    layer.set_sigma(values[2])
    assert float(layer.sigma.value) == pytest.approx(values[2])
    np.testing.assert_allclose(layer.kernel(), delay_kernel(
        layer.w.value, layer.delay.value, 5, values[2]), rtol=1e-6)


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(max_delay=0), ValueError, r'`max_delay` \(=0\) must be a positive integer'),
    (dict(max_delay=2.5), TypeError, r'`max_delay` \(=2.5\) must be an int'),
    (dict(kernel_count=0), ValueError, r'`kernel_count` \(=0\)'),
    (dict(delay_initializer=-1.0), ValueError,
     r'`delay_initializer` must give delays in \[0, max_delay=5\].*-1 to -1'),
    (dict(delay_initializer=6.0), ValueError, r'`delay_initializer`.*\[0, max_delay=5\].*6 to 6'),
    (dict(delay_initializer=float('nan')), ValueError, r'`delay_initializer` must give finite'),
    (dict(delay_initializer=np.ones((2, 4))), ValueError, r'`delay_initializer`.*\(2, 4\)'),
    (dict(w_initializer=np.ones((1, 4, 6))), ValueError, r'`w_initializer`.*\(2, 4, 6\)'),
    (dict(sigma=0.0), ValueError, r'`sigma` \(=0.0\) must be a finite number > 0'),
    (dict(sigma='wide'), TypeError, r'`sigma`'),
    (dict(interpolation='linear'), ValueError, r"`interpolation` \(='linear'\)"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_layer('batching', **kwargs)


def test_bad_inputs():
    layer = make_layer('batching')
    reset(layer, 'batching')
    with pytest.raises(ValueError,
                       match=r'in a call, inputs of shape \[B, C\] \(rank 2\); got .*\(4,\)'):
        layer(jnp.zeros(4, bool))
    with pytest.raises(ValueError, match=r'shape \[T, B, C\] \(rank 3\)'):
        layer.multi_step(jnp.zeros((3, 4), bool))
    with pytest.raises(ValueError, match='in_channels=4'):
        layer(jnp.zeros((3, 5), bool))
    with pytest.raises(TypeError, match=r'input_dtype=bool.*float32'):
        layer(jnp.zeros((3, 4), jnp.float32))
    with pytest.raises(ValueError, match=r'batch of 3 samples.*for a batch of 2'):
        layer(jnp.zeros((2, 4), bool))
    with pytest.raises(ValueError, match=r'sigma'):
        layer.set_sigma(-1.0)
    with pytest.raises(ValueError, match='epoch'):
        sigma_schedule(-1, 5, 3.0)


# --- the brainpy.state twin ------------------------------------------------------------------

def _state_layers():
    return pytest.importorskip('bp_conv_ext.state')


@pytest.mark.parametrize('batch', [None, 3])
@pytest.mark.parametrize('backend', ['dense', 'event'])
def test_state_twin_equals_the_classic_layer(batch, backend):
    state = _state_layers()
    import brainstate
    classic = make_layer('nonbatching' if batch is None else 'batching', spikes=False)
    twin = state.DelayConv1d(4, 6, max_delay=5, kernel_count=2, w_init=classic.w.value,
                             delay_init=classic.delay.value, b_init=classic.b.value,
                             input_dtype=jnp.float32)
    twin.backend = classic.backend = backend
    xs = sequence('nonbatching' if batch is None else 'batching', steps=11, spikes=False)
    reset(classic, 'nonbatching' if batch is None else 'batching')
    expected = classic.multi_step(xs)
    brainstate.nn.init_all_states(twin, batch)
    folded = twin.multi_step(xs)
    twin.reset_state(batch)
    steps = jnp.stack([twin(x) for x in xs])
    np.testing.assert_allclose(folded, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(steps, expected, rtol=1e-5, atol=1e-5)


def test_state_twin_gradients_of_both_forms_and_in_layer_by_layer():
    state = _state_layers()
    import brainpy.state as bps
    import brainstate
    import brainunit as u
    net = state.LayerByLayer(
        state.DelayConv1d(4, 6, max_delay=5, sigma=1.5,
                          w_init=brainstate.nn.init.KaimingUniform(scale=8.0, unit=u.mA)),
        bps.LIF(6, tau=2. * u.ms),
        state.DelayConv1d(6, 2, max_delay=5, sigma=1.5))
    xs = sequence('batching', steps=16, spikes=True).astype(jnp.float32)
    params = net.states(brainstate.ParamState)

    def loss(run):
        brainstate.nn.init_all_states(net, 3)
        with brainstate.environ.context(dt=1.0 * u.ms):
            out = run(xs)
        return jnp.sum(jnp.sin(out)), out

    def steps(xs):
        return brainstate.transform.for_loop(lambda x: net(x), xs)

    grads, outs = {}, {}
    for name, run in [('folded', net.multi_step), ('steps', steps)]:
        fn = brainstate.transform.grad(lambda: loss(run), params, has_aux=True)  # noqa: B023 (called here)
        grads[name], outs[name] = fn()
    np.testing.assert_allclose(outs['steps'], outs['folded'], rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(outs['folded']).sum()) > 0
    flat_f = jax.tree_util.tree_leaves(grads['folded'])
    flat_s = jax.tree_util.tree_leaves(grads['steps'])
    assert len(flat_f) == 4           # the weights and delays of both layers
    for a, b in zip(flat_f, flat_s):
        a, b = u.get_mantissa(a), u.get_mantissa(b)
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
        assert float(jnp.abs(a).max()) > 0


def test_state_twin_bad_inputs():
    state = _state_layers()
    with pytest.raises(ValueError, match=r'`max_delay` \(=0\)'):
        state.DelayConv1d(2, 3, max_delay=0)
    with pytest.raises(ValueError, match=r'`delay_init` must give delays in \[0, max_delay=4\]'):
        state.DelayConv1d(2, 3, max_delay=4, delay_init=-0.5)
    layer = state.DelayConv1d(2, 3, max_delay=4)
    layer.init_state(5)
    with pytest.raises(ValueError, match=r'\[B, C\] \(rank 2\)'):
        layer(jnp.zeros(2))
    with pytest.raises(ValueError, match='batch of 5 samples'):
        layer(jnp.zeros((4, 2)))
    spikes = state.DelayConv1d(2, 3, max_delay=4, input_dtype=bool)
    with pytest.raises(TypeError, match='input_dtype=bool'):
        spikes(jnp.zeros(2))


@pytest.mark.parametrize('api', ['classic', 'state'])
def test_rounding_survives_a_checkpoint(api):
    """round_delays() changes the computation: a fresh layer that loads the saved state
    computes what the rounded layer does."""
    xs = sequence('nonbatching', steps=12)
    if api == 'classic':
        layers = [DelayConv1d(4, 6, max_delay=5, kernel_count=2) for _ in range(2)]
        layers[0].round_delays()
        old, new = layers[0].name, layers[1].name             # BrainPy keys by node name
        saved = {k.replace(old, new): v for k, v in layers[0].state_dict()[old].items()}
        assert layers[1].load_state_dict({new: saved}).missing_keys == []
        run = lambda layer: layer.multi_step(xs)
    else:
        state = _state_layers()
        layers = [state.DelayConv1d(4, 6, max_delay=5, kernel_count=2, input_dtype=bool)
                  for _ in range(2)]
        layers[0].round_delays()
        saved = {k: v.value for k, v in layers[0].states().items()}
        for k, v in layers[1].states().items():
            v.value = saved[k]
        run = lambda layer: jnp.asarray(layer.multi_step(xs))
    assert layers[1].interpolation == 'round'
    np.testing.assert_array_equal(run(layers[1]), run(layers[0]))


@pytest.mark.parametrize('input_dtype', [jnp.int8, jnp.uint8])
def test_integer_buffers_refuse_inputs_they_cannot_hold(input_dtype):
    layer = DelayConv1d(4, 6, max_delay=3, input_dtype=input_dtype)
    for x in (jnp.full((4,), 0.7), jnp.full((4,), 300, jnp.int32)):
        with pytest.raises(TypeError, match=rf'keeps its past inputs as {jnp.dtype(input_dtype)}'
                                            rf'.*cannot hold every value of an input of dtype'):
            layer(x)
    counts = jnp.asarray([0, 1, 2, 3], input_dtype)       # an empty buffer: tap 0 alone
    np.testing.assert_allclose(layer(counts), np.asarray(counts, np.float32)
                               @ np.asarray(layer.kernel()[0]), rtol=1e-5, atol=1e-5)
