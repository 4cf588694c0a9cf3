"""Conv1d inside BrainPy's simulators, trainers and checkpoints."""
import os

import brainpy as bp
import brainpy.math as bm
import jax.numpy as jnp
import numpy as np
import pytest

from bp_conv_ext import Conv1d, conv1d, spike_drive

LENGTH, CIN, COUT = 24, 2, 3


class SpikingPipeline(bp.DynSysGroup):
    """Lif -> Conv1d -> Lif; returns the convolution's output at every step."""

    def __init__(self, mode):
        super().__init__(mode=mode)
        self.pre = bp.dyn.Lif((LENGTH, CIN), keep_size=True, V_th=1.0, tau=1.0, mode=mode)
        self.conv = Conv1d(CIN, COUT, 5, w_initializer=bp.init.Uniform(0.0, 20.0), mode=mode)
        self.post = bp.dyn.Lif((LENGTH, COUT), keep_size=True, V_th=1.0, tau=1.0, mode=mode)

    def update(self, current):
        current_out = self.conv(self.pre(current))
        self.post(current_out)
        return current_out


@pytest.mark.parametrize('jit', [True, False])
def test_dsrunner_nonbatching_bool_spikes(jit):
    net = SpikingPipeline(bm.NonBatchingMode())
    runner = bp.DSRunner(net, monitors={'pre': net.pre.spike, 'post': net.post.spike},
                         jit=jit, progress_bar=False)
    steps = 100
    currents = np.random.default_rng(0).uniform(0.0, 4.0, (steps, LENGTH, CIN)).astype(np.float32)
    outputs = runner.run(inputs=currents)
    pre = runner.mon['pre']
    assert pre.dtype == np.bool_ and pre.shape == (steps, LENGTH, CIN)
    assert 0 < pre.mean() < 1
    assert runner.mon['post'].shape == (steps, LENGTH, COUT) and runner.mon['post'].any()
    expected = np.stack([np.asarray(conv1d(s, net.conv.w.value, net.conv.b.value)) for s in pre])
    np.testing.assert_allclose(np.asarray(outputs), expected, rtol=1e-5, atol=1e-5)


class SpikingClassifier(bp.DynSysGroup):
    def __init__(self, mode=bm.TrainingMode()):  # noqa: B008 (modes hold no state)
        super().__init__(mode=mode)
        self.conv = Conv1d(CIN, 4, 3, mode=mode)
        self.lif = bp.dyn.Lif((LENGTH, 4), keep_size=True, V_th=0.2, tau=1.0,
                              spk_fun=bm.surrogate.arctan, mode=mode)
        self.flat = bp.dnn.Flatten(mode=mode)
        self.readout = bp.dnn.Dense(LENGTH * 4, 2, mode=mode)

    def update(self, x):
        return self.readout(self.flat(self.lif(self.conv(x))))


def _two_classes(rng, n):
    """[n, 8 steps, LENGTH, CIN] currents: class 1 drives channel 0 harder, class 0 channel 1."""
    labels = rng.integers(0, 2, n)
    xs = rng.uniform(0, 1, (n, 8, LENGTH, CIN)).astype(np.float32)
    xs[labels == 1, :, :, 0] += 1.0
    xs[labels == 0, :, :, 1] += 1.0
    return xs, labels


def test_bptt_steps_lower_the_loss_and_change_conv_weights():
    xs, labels = _two_classes(np.random.default_rng(0), 16)
    net = SpikingClassifier()
    w0 = np.asarray(net.conv.w.value).copy()

    def loss(predictions, targets):
        return bp.losses.cross_entropy_loss(predictions.mean(axis=1), targets)

    trainer = bp.BPTT(net, loss_fun=loss, optimizer=bp.optim.Adam(lr=2e-2), progress_bar=False)
    trainer.fit([(xs, labels)], num_epoch=30)
    history = np.asarray(trainer.get_hist_metric('fit'))
    assert history[-1] < 0.5 * history[0]
    assert np.abs(np.asarray(net.conv.w.value) - w0).max() > 1e-3


@pytest.mark.parametrize('mode', [bm.NonBatchingMode(), bm.TrainingMode()],
                         ids=['nonbatching', 'training'])
def test_checkpoint_round_trip_into_fresh_instance(tmp_path, mode):
    def build():
        return SpikingClassifier(mode)

    net = build()
    net.conv.w.value = net.conv.w.value + 1.0   # a state no fresh initialisation reproduces
    saved_w = np.asarray(net.conv.w.value)
    saved_b = np.asarray(net.conv.b.value)
    path = str(tmp_path / 'net.bp')
    bp.checkpoints.save_pytree(path, net.state_dict(), verbose=False)
    del net
    bm.clear_name_cache()   # as in a new process: the same construction gives the same names

    fresh = build()
    assert not np.allclose(np.asarray(fresh.conv.w.value), saved_w)
    result = fresh.load_state_dict(bp.checkpoints.load_pytree(path))
    assert not result.missing_keys and not result.unexpected_keys
    np.testing.assert_array_equal(np.asarray(fresh.conv.w.value), saved_w)
    np.testing.assert_array_equal(np.asarray(fresh.conv.b.value), saved_b)


def test_a_parameters_only_checkpoint_round_trips_and_is_much_smaller(tmp_path):
    # docs/tutorial.md's two lines: in TrainingMode the parameters are the network's TrainVars;
    # state_dict() also holds the neurons' states for the batch the network last ran.
    def build():
        bm.clear_name_cache()   # as in a new process: the same construction gives the same names
        return SpikingClassifier(bm.TrainingMode(batch_size=64))

    net = build()
    net.conv.w.value = net.conv.w.value + 1.0   # a state no fresh initialisation reproduces
    xs, _ = _two_classes(np.random.default_rng(1), 64)

    def predict(model):
        trainer = bp.BPTT(model, loss_fun=bp.losses.cross_entropy_loss,
                          optimizer=bp.optim.Adam(lr=1e-3), progress_bar=False)
        return np.asarray(trainer.predict(jnp.asarray(xs), reset_state=True))

    before = predict(net)
    params_path, full_path = str(tmp_path / 'params.bp'), str(tmp_path / 'full.bp')
    bp.checkpoints.save_pytree(params_path, net.train_vars().unique().dict(), verbose=False)
    bp.checkpoints.save_pytree(full_path, net.state_dict(), verbose=False)
    assert os.path.getsize(params_path) < os.path.getsize(full_path) / 10

    fresh = build()
    assert not np.allclose(np.asarray(fresh.conv.w.value), np.asarray(net.conv.w.value))
    result = fresh.load_state_dict(bp.checkpoints.load_pytree(params_path), compatible='v1',
                                   warn=False)
    assert not result.unexpected_keys
    # What is left out is the neurons' state, which a run resets anyway.
    states = set(fresh.vars().unique().keys()) - set(fresh.train_vars().unique().keys())
    assert states and set(result.missing_keys) == states
    for key, var in fresh.train_vars().unique().items():
        np.testing.assert_array_equal(np.asarray(var.value),
                                      np.asarray(net.train_vars().unique()[key].value))
    np.testing.assert_allclose(predict(fresh), before, rtol=1e-6, atol=1e-6)


def test_layer_state_survives_save_and_load_state():
    conv = Conv1d(2, 3, 3, mode=bm.NonBatchingMode())
    state = conv.save_state()
    assert set(state) == {f'{conv.name}.w', f'{conv.name}.b'}
    original = np.asarray(conv.w.value)
    conv.w.value = jnp.zeros_like(conv.w.value)
    conv.load_state(state)
    np.testing.assert_array_equal(np.asarray(conv.w.value), original)


@pytest.mark.parametrize('mode', [bm.BatchingMode(), bm.TrainingMode()],
                         ids=['batching', 'training'])
@pytest.mark.parametrize('jit', [True, False])
def test_dsrunner_batched_data_first_axis_b_and_t_agree(mode, jit):
    rng = np.random.default_rng(1)
    currents = rng.uniform(0.0, 4.0, (3, 30, LENGTH, CIN)).astype(np.float32)   # [B, T, H, C]
    results = {}
    for axis, data in (('B', currents), ('T', np.swapaxes(currents, 0, 1))):
        bm.random.seed(0)
        net = SpikingPipeline(mode)
        net.reset(3)
        runner = bp.DSRunner(net, monitors={'post': net.post.spike, 'V': net.post.V},
                             data_first_axis=axis, jit=jit, progress_bar=False)
        outputs = np.asarray(runner.run(inputs=data))
        results[axis] = outputs, runner.mon['post'], runner.mon['V']
        bm.clear_name_cache()
    out_b, spikes_b, v_b = results['B']
    out_t, spikes_t, v_t = results['T']
    assert out_b.shape == (3, 30, LENGTH, COUT) and out_t.shape == (30, 3, LENGTH, COUT)
    assert spikes_b.shape == (3, 30, LENGTH, COUT) and spikes_b.any()
    np.testing.assert_allclose(out_b, np.swapaxes(out_t, 0, 1), rtol=1e-6)
    np.testing.assert_array_equal(spikes_b, np.swapaxes(spikes_t, 0, 1))
    np.testing.assert_allclose(v_b, np.swapaxes(v_t, 0, 1), rtol=1e-6)


def test_bptt_fit_over_data_loader_then_predict():
    rng = np.random.default_rng(0)
    xs, labels = _two_classes(rng, 48)

    def loader():
        order = rng.permutation(48)
        for start in range(0, 48, 16):
            batch = order[start:start + 16]
            yield xs[batch], labels[batch]

    net = SpikingClassifier()
    trainer = bp.BPTT(net, loss_fun=lambda p, t: bp.losses.cross_entropy_loss(p.mean(1), t),
                      optimizer=bp.optim.Adam(lr=2e-2), progress_bar=False)
    trainer.fit(loader, num_epoch=20)
    history = np.asarray(trainer.get_hist_metric('fit'))
    assert history.shape == (20,) and history[-1] < 0.5 * history[0]
    predictions = np.asarray(trainer.predict(xs, reset_state=True))
    assert predictions.shape == (48, 8, 2)
    assert (predictions.mean(axis=1).argmax(-1) == labels).mean() > 0.9


class _QuickstartNet(bp.DynSysGroup):
    """The network of docs/quickstart.md, with the input spikes returned as well."""

    def __init__(self, w_initializer):
        super().__init__()
        self.lif_in = bp.dyn.Lif((100, 2), keep_size=True)
        self.conv = Conv1d(2, 16, kernel_size=5, padding='CAUSAL', w_initializer=w_initializer)
        self.lif_out = bp.dyn.Lif((100, 16), keep_size=True)

    def update(self, current):
        spikes = self.lif_in(current)
        return spikes, self.lif_out(self.conv(spikes))


def test_the_quickstart_network_spikes_with_a_spike_drive_kernel_only():
    currents = jnp.stack([jnp.linspace(20., 60., 200).reshape(100, 2)] * 300)
    mean, std = spike_drive(5, 2, rate=0.01, current=20.)
    rates = {}
    for name, init in (('drive', bp.init.Normal(mean, std)), ('default', bp.init.XavierNormal())):
        spikes_in, spikes_out = bp.DSRunner(_QuickstartNet(init), progress_bar=False).run(
            inputs=currents)
        rates[name] = (float(spikes_in.mean()), float(spikes_out.mean()),
                       float(spikes_out.any(axis=0).mean()))
    rate_in, rate_out, fired = rates['drive']
    assert 0.005 < rate_in < 0.02                    # the rate the kernel was drawn for
    assert 0.5 < fired < 1 and 0.2 * rate_in < rate_out < 5 * rate_in
    assert rates['default'][1] == 0                  # the zero-mean kernel drives nothing
