"""Multi-step Conv1d and layer-by-layer execution equal per-step execution."""
import re

import brainpy as bp
import brainpy.math as bm
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bp_conv_ext import Conv1d, LayerByLayer, LayerByLayerTrainer

TOL = dict(rtol=1e-5, atol=1e-5)
MODES = [bm.NonBatchingMode(), bm.BatchingMode(), bm.TrainingMode()]
MODE_IDS = ['nonbatching', 'batching', 'training']


def _sequence(shape, seed=0, spikes=False):
    rng = np.random.default_rng(seed)
    if spikes:
        return jnp.asarray(rng.random(shape) < 0.2)
    return jnp.asarray(rng.standard_normal(shape), jnp.float32)


@pytest.mark.parametrize('mode', MODES, ids=MODE_IDS)
@pytest.mark.parametrize('options', [dict(), dict(stride=2, padding='causal', rhs_dilation=2),
                                     dict(groups=2, lhs_dilation=2, padding=(1, 0))])
@pytest.mark.parametrize('spikes', [False, True], ids=['float', 'bool'])
def test_conv_multi_step_equals_stacked_steps(mode, options, spikes):
    conv = Conv1d(4, 6, 3, mode=mode, b_initializer=bp.init.Normal(), **options)
    step_shape = (11, 4) if isinstance(mode, bm.NonBatchingMode) else (3, 11, 4)
    xs = _sequence((7,) + step_shape, spikes=spikes)
    stacked = jnp.stack([conv(x) for x in xs])
    np.testing.assert_allclose(np.asarray(conv.multi_step(xs)), np.asarray(stacked), **TOL)


@pytest.mark.parametrize('mode', MODES, ids=MODE_IDS)
def test_conv_multi_step_gradients_equal_stacked_steps(mode):
    conv = Conv1d(4, 6, 3, stride=2, mode=mode, b_initializer=bp.init.Normal())
    step_shape = (11, 4) if isinstance(mode, bm.NonBatchingMode) else (3, 11, 4)
    xs = _sequence((7,) + step_shape)
    target = _sequence((7,) + step_shape[:-2] + (6, 6), seed=1)
    w, b = conv.w.value, conv.b.value

    def loss(run):
        def f(w, b, xs):
            conv.w.value, conv.b.value = w, b
            return jnp.sum((run(xs) - target) ** 2)
        return jax.grad(f, argnums=(0, 1, 2))(w, b, xs)

    folded = loss(conv.multi_step)
    per_step = loss(lambda xs: jnp.stack([conv(x) for x in xs]))
    for g_folded, g_step in zip(folded, per_step):
        # The two sum the same float32 terms (gradients up to ~100) in different orders: their
        # rounding differs in proportion to the gradient's size, not to 1.
        scale = float(np.abs(np.asarray(g_step)).max())
        np.testing.assert_allclose(np.asarray(g_folded), np.asarray(g_step), rtol=1e-5,
                                   atol=1e-5 * scale)


@pytest.mark.parametrize('mode,shape,expected', [
    (bm.NonBatchingMode(), (11, 4), r'\[T, H, C\] \(rank 3\)'),
    (bm.BatchingMode(), (3, 11, 4), r'\[T, B, H, C\] \(rank 4\)'),
    (bm.TrainingMode(), (2, 3, 3, 11, 4), r'\[T, B, H, C\] \(rank 4\)'),
])
def test_conv_multi_step_rank_errors(mode, shape, expected):
    conv = Conv1d(4, 6, 3, mode=mode)
    with pytest.raises(ValueError, match=rf"where multi_step accepts inputs of shape {expected}; "
                                         rf"got an input of shape {re.escape(str(shape))}"):
        conv.multi_step(jnp.ones(shape))


LENGTH = 16


def _network(mode, neuron=bp.dyn.Lif):
    """Conv -> LIF -> MaxPool -> Conv -> LIF -> Flatten -> Dense: every kind of layer."""
    lif = dict(tau=1.0, V_th=0.3, spk_fun=bm.surrogate.arctan, mode=mode, keep_size=True)
    return LayerByLayer(
        Conv1d(2, 6, 3, b_initializer=0.1, mode=mode),
        neuron((LENGTH, 6), **lif),
        bp.dnn.MaxPool1d(2, 2, channel_axis=-1, mode=mode),
        Conv1d(6, 8, 3, padding='CAUSAL', w_initializer=bp.init.Uniform(-0.2, 1.0), mode=mode),
        neuron((LENGTH // 2, 8), **lif),
        bp.dnn.Flatten(mode=mode),
        bp.dnn.Dense(LENGTH // 2 * 8, 3, mode=mode),
        mode=mode)


def _inputs(batch=4, steps=9):
    return np.random.default_rng(0).uniform(0, 3, (batch, steps, LENGTH, 2)).astype(np.float32)


@pytest.mark.parametrize('neuron', [bp.dyn.Lif, bp.dyn.LifRef], ids=['Lif', 'LifRef'])
def test_layer_by_layer_equals_bptt_predict(neuron):
    net = _network(bm.TrainingMode(), neuron)
    xs = _inputs()
    trainer = bp.BPTT(net, loss_fun=lambda p, t: jnp.mean(p), progress_bar=False)
    per_step = np.asarray(trainer.predict(xs, reset_state=True))
    folded = np.asarray(jnp.swapaxes(net.multi_step(jnp.swapaxes(xs, 0, 1)), 0, 1))
    assert per_step.shape == (4, 9, 3) and np.abs(per_step).max() > 0.1
    np.testing.assert_allclose(folded, per_step, **TOL)


@pytest.mark.parametrize('mode', [bm.NonBatchingMode(), bm.BatchingMode()],
                         ids=['nonbatching', 'batching'])
def test_layer_by_layer_equals_dsrunner(mode):
    net = _network(mode)
    xs = np.swapaxes(_inputs(), 0, 1)        # [T, B, H, C]
    if isinstance(mode, bm.NonBatchingMode):
        xs = xs[:, 0]
    else:
        net.reset(xs.shape[1])
    runner = bp.DSRunner(net, data_first_axis='T', progress_bar=False)
    per_step = np.asarray(runner.run(inputs=xs))
    np.testing.assert_allclose(np.asarray(net.multi_step(xs)), per_step, **TOL)


def test_layer_by_layer_gradients_equal_bptt():
    xs, ys = _inputs(), np.array([0, 1, 2, 1])

    def loss(predictions, targets):
        return bp.losses.cross_entropy_loss(predictions.mean(axis=1), targets)

    net = _network(bm.TrainingMode())
    layerwise = LayerByLayerTrainer(net, loss, bp.optim.SGD(lr=1.0))
    loss_value, grads = layerwise.loss_and_grads(xs, ys)
    before = {k: np.asarray(v.value) for k, v in layerwise.train_vars.items()}
    # One plain SGD step of bp.BPTT with lr=1 moves every variable by minus its gradient.
    bptt = bp.BPTT(net, loss_fun=loss, optimizer=bp.optim.SGD(lr=1.0), progress_bar=False)
    bptt.fit([(xs, ys)], num_epoch=1)
    assert np.isclose(float(loss_value), float(bptt.get_hist_metric('fit')[0]), rtol=1e-6)
    assert len(grads) == 6
    for key, var in layerwise.train_vars.items():
        step = before[key] - np.asarray(var.value)
        assert np.abs(step).max() > 0
        np.testing.assert_allclose(np.asarray(grads[key]), step, rtol=1e-4, atol=1e-6)


def test_each_sequence_starts_from_reset_state():
    net = _network(bm.BatchingMode())
    xs = jnp.swapaxes(jnp.asarray(_inputs()), 0, 1)
    first = np.asarray(net.multi_step(xs))
    np.testing.assert_array_equal(np.asarray(net.multi_step(xs)), first)
    carried = np.asarray(net.multi_step(xs, reset_state=False))
    assert not np.allclose(carried, first)


def test_layer_by_layer_needs_a_time_axis():
    net = _network(bm.TrainingMode())
    with pytest.raises(ValueError,
                       match=r"multi_step takes a time-first sequence \(\[T, B, \.\.\.\]"):
        net.multi_step(jnp.ones((4, 2)))


def test_layer_by_layer_trainer_learns():
    rng = np.random.default_rng(3)
    ys = rng.integers(0, 3, 24)
    xs = rng.uniform(0, 1, (24, 8, LENGTH, 2)).astype(np.float32)
    for i, y in enumerate(ys):                # the class sets where channel 0 is driven
        xs[i, :, y * 5:(y + 1) * 5, 0] += 2.0
    mode = bm.TrainingMode()
    net = LayerByLayer(
        Conv1d(2, 4, 3, mode=mode),
        bp.dyn.Lif((LENGTH, 4), keep_size=True, tau=0.5, V_th=0.1, spk_fun=bm.surrogate.arctan,
                   mode=mode),
        bp.dnn.Flatten(mode=mode), bp.dnn.Dense(LENGTH * 4, 3, mode=mode), mode=mode)
    trainer = LayerByLayerTrainer(
        net, lambda p, t: bp.losses.cross_entropy_loss(p.mean(axis=1), t), bp.optim.Adam(lr=3e-2))
    history = trainer.fit(lambda: [(xs[:12], ys[:12]), (xs[12:], ys[12:])], num_epoch=20,
                          progress_bar=False)
    assert len(history) == 20 and history[-1] < 0.5 * history[0]
    assert (np.asarray(trainer.predict(xs)).mean(axis=1).argmax(-1) == ys).mean() > 0.9


def test_fit_steps_the_epoch_scheduler_as_bptt():
    xs, ys = _inputs(), np.array([0, 1, 2, 1])
    loss = lambda p, t: bp.losses.cross_entropy_loss(p.mean(axis=1), t)
    rates = {}
    for name in ('bptt', 'layer by layer'):
        bm.clear_name_cache()
        net = _network(bm.TrainingMode())
        optimizer = bp.optim.SGD(lr=bp.optim.StepLR(0.1, step_size=1, gamma=0.5))
        if name == 'bptt':
            bp.BPTT(net, loss_fun=loss, optimizer=optimizer, progress_bar=False).fit(
                [(xs, ys)], num_epoch=3)
        else:
            LayerByLayerTrainer(net, loss, optimizer).fit([(xs, ys)], num_epoch=3,
                                                           progress_bar=False)
        rates[name] = (int(optimizer.lr.last_epoch.value), float(optimizer.lr()))
    assert rates['layer by layer'] == rates['bptt'] == (2, pytest.approx(0.1 * 0.5 ** 3))


@pytest.mark.parametrize('kwargs,error,match', [
    (dict(model=bp.Sequential()), TypeError, r"`model` must be a bp_conv_ext.LayerByLayer"),
    (dict(mode=bm.BatchingMode()), ValueError, r"`model` must be in TrainingMode"),
    (dict(optimizer='adam'), TypeError, r"`optimizer` must be a brainpy.optim.Optimizer, got str"),
    (dict(data_first_axis='N'), ValueError, r"`data_first_axis` \(='N'\) must be 'B' or 'T'"),
])
def test_trainer_argument_errors(kwargs, error, match):
    model = kwargs.pop('model', None) or _network(kwargs.pop('mode', bm.TrainingMode()))
    options = dict(optimizer=bp.optim.SGD(lr=0.1))
    options.update(kwargs)
    with pytest.raises(error, match=match):
        LayerByLayerTrainer(model, lambda p, t: 0.0, **options)


@pytest.mark.parametrize('backend', ['dense', 'event'])
def test_batch_first_fold_equals_time_first_fold(backend):
    rng = np.random.default_rng(11)
    xs = jnp.asarray(rng.random((5, 3, 20, 2)) < 0.3)             # [T, B, H, C] spikes
    mode = bm.TrainingMode()
    conv = Conv1d(2, 4, 3, mode=mode)
    conv.backend = backend
    np.testing.assert_allclose(np.asarray(conv.multi_step(xs, fold='batch')),
                               np.asarray(conv.multi_step(xs, fold='time')), rtol=1e-6,
                               atol=1e-6)
    net = LayerByLayer(conv, bp.dyn.Lif((20, 4), keep_size=True, mode=mode),
                       bp.dnn.Flatten(mode=mode), bp.dnn.Dense(80, 2, mode=mode), mode=mode)
    np.testing.assert_allclose(np.asarray(net.multi_step(xs, fold='batch')),
                               np.asarray(net.multi_step(xs, fold='time')), rtol=1e-6,
                               atol=1e-6)
