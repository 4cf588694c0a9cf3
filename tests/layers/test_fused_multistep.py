"""``LayerByLayer.multi_step`` runs ``Conv1d -> bp.dyn.Lif`` as one fused spiking step
(``bp_conv_ext.ops.fused.conv_lif``): the same spikes, states, outputs and surrogate gradients
as the two layers unfused, in every mode and with both resets; pairs it cannot compute stay
unfused; exported for CUDA, the network holds one fused kernel."""
import re

import brainpy as bp
import brainpy.math as bm
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bp_conv_ext import Conv1d, LayerByLayer
from bp_conv_ext.ops import fused

T, B, L, C = 6, 16, 12, 2
TOL = dict(rtol=1e-5, atol=1e-5)
MODES = {'nonbatching': bm.NonBatchingMode(), 'batching': bm.BatchingMode(),
         'training-soft': bm.TrainingMode(), 'training-hard': bm.TrainingMode(),
         'training-detached': bm.TrainingMode()}


def _network(mode, name='batching', conv=None):
    lif = dict(keep_size=True, tau=1.0, V_th=0.6, V_reset=-0.1, V_rest=0.05, R=1.2,
               spk_fun=bm.surrogate.Arctan(), mode=mode,
               spk_reset='hard' if name == 'training-hard' else 'soft',
               detach_spk=name == 'training-detached')
    conv = conv or dict(padding='SAME', rhs_dilation=2)
    return LayerByLayer(
        Conv1d(C, 32, 3, w_initializer=bp.init.Normal(0.3, 1.0),
               b_initializer=bp.init.Normal(0., 0.1), mode=mode, **conv),
        bp.dyn.Lif((L, 32), **lif),
        bp.dnn.Flatten(mode=mode),
        bp.dnn.Dense(L * 32, 3, mode=mode), mode=mode)


def _inputs(mode, seed=0):
    shape = (T, B, L, C) if isinstance(mode, bm.BatchingMode) else (T, L, C)
    return jnp.asarray(np.random.default_rng(seed).random(shape) < 0.4)


@pytest.fixture
def calls(monkeypatch):
    """How many times the fused step ran."""
    count = []
    original = fused.conv_lif

    def spy(*args, **kwargs):
        count.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(fused, 'conv_lif', spy)
    return count


@pytest.mark.parametrize('name', MODES)
def test_the_fused_step_gives_the_unfused_layers_numbers(name, calls):
    mode = MODES[name]
    net = _network(mode, name)
    xs = _inputs(mode)
    lif = net[1]
    unfused = net.multi_step(xs, fuse=False)
    v_unfused, spikes_unfused = lif.V.value, lif.spike.value
    assert not calls
    out = net.multi_step(xs)
    assert len(calls) == 1
    np.testing.assert_allclose(out, unfused, **TOL)
    np.testing.assert_allclose(lif.V.value, v_unfused, **TOL)
    assert lif.spike.value.dtype == spikes_unfused.dtype
    np.testing.assert_array_equal(lif.spike.value, spikes_unfused)
    rate = float(jnp.mean(jnp.asarray(spikes_unfused, jnp.float32)))
    assert 0.05 < rate < 0.95


@pytest.mark.parametrize('name', ['training-soft', 'training-hard', 'training-detached'])
def test_surrogate_gradients_of_the_fused_step_are_the_unfused_layers(name):
    mode = MODES[name]
    net = _network(mode, name)
    xs = _inputs(mode, seed=1)
    variables = net.train_vars().unique()
    values = {key: var.value for key, var in variables.items()}

    def gradients(fuse):
        # jax.grad of the network as a function of its parameters' values (bm.grad caches
        # its transformed function by the Python function, which another test may reuse).
        def loss(params):
            for key, var in variables.items():
                var.value = params[key]
            return jnp.sum(jnp.sin(net.multi_step(xs, fuse=fuse)))
        grads = jax.grad(loss)(values)
        for key, var in variables.items():
            var.value = values[key]
        return grads

    fused_grads, unfused_grads = gradients(True), gradients(False)
    for key, expected in unfused_grads.items():
        np.testing.assert_allclose(fused_grads[key], expected, err_msg=key, **TOL)
    # Detached spikes (detach_spk=True) pass no gradient back to the convolution.
    conv_grads = [float(jnp.max(jnp.abs(g))) for k, g in unfused_grads.items() if 'Conv' in k]
    assert (max(conv_grads) == 0) == (name == 'training-detached')
    assert max(float(jnp.max(jnp.abs(g))) for g in unfused_grads.values()) > 0


@pytest.mark.parametrize('conv', [dict(stride=2), dict(groups=2, padding='SAME'),
                                  dict(padding_mode='reflect', padding=1)],
                         ids=['stride', 'groups', 'padding-mode'])
def test_pairs_the_fused_step_does_not_compute_stay_unfused(conv, calls):
    mode = bm.BatchingMode()
    layer = Conv1d(C, 32, 3, mode=mode, **conv)
    length = layer.config.output_length(L)
    net = LayerByLayer(layer, bp.dyn.Lif((length, 32), keep_size=True, mode=mode), mode=mode)
    net.multi_step(_inputs(mode))
    assert not calls


def test_cuda_export_of_the_network_holds_one_fused_kernel():
    if jax.__version_info__ < (0, 5):
        pytest.skip("JAX 0.4 keeps every platform's branch in a one-platform export")
    export = pytest.importorskip('jax.export')
    from bp_conv_ext.event.kernels import mosaic_gpu
    triton = '__gpu$xla.gpu.triton'
    kernel = 'mosaic_gpu_v2' if mosaic_gpu.available() else triton      # for an H100
    mode = bm.BatchingMode()
    net = _network(mode)
    xs = _inputs(mode)

    def run(xs):
        return net.multi_step(xs)

    exported = export.export(bm.jit(run), platforms=['cuda'], disabled_checks=[
        export.DisabledSafetyCheck.custom_call(triton)])(xs)
    text = exported.mlir_module()
    assert re.findall(r'custom_call @"?([\w.$]+)', text) == [kernel]
    assert 'convolution' not in text


def _state_network(reset):
    import brainpy.state
    import brainstate
    import braintools
    import brainunit as u
    from bp_conv_ext.state import Conv1d as StateConv1d, LayerByLayer as StateLayerByLayer
    return StateLayerByLayer(
        StateConv1d((L, C), 32, 3, rhs_dilation=2,
                    w_init=brainstate.nn.init.Normal(0.6, 1.0, unit=u.mA),
                    b_init=brainstate.nn.init.Constant(0.05 * u.mA)),
        brainpy.state.LIF((L, 32), tau=1.0 * u.ms, V_th=0.6 * u.mV, V_reset=-0.1 * u.mV,
                          V_rest=0.05 * u.mV, R=1.2 * u.ohm, spk_reset=reset,
                          spk_fun=braintools.surrogate.Arctan()),
        brainstate.nn.Flatten(in_size=(L, 32)),
        brainstate.nn.Linear(L * 32, 3))


@pytest.mark.parametrize('batched', [True, False], ids=['batched', 'unbatched'])
@pytest.mark.parametrize('reset', ['soft', 'hard'])
def test_state_fused_step_gives_the_unfused_layers_numbers_and_gradients(reset, batched,
                                                                         calls):
    brainstate = pytest.importorskip('brainstate')
    import brainunit as u
    net = _state_network(reset)
    lif = net.layers[1]
    xs = _inputs(bm.BatchingMode() if batched else bm.NonBatchingMode(), seed=2)
    params = net.states(brainstate.ParamState)

    def run(fuse):
        brainstate.nn.init_all_states(net, B if batched else None)
        lif.V.value = lif.V.value + 0.3 * u.mV        # a state that is not the reset value

        def loss():
            return jnp.sum(jnp.sin(u.get_mantissa(net.multi_step(xs, fuse=fuse))))

        out = u.get_mantissa(net.multi_step(xs, fuse=fuse))
        v = u.get_mantissa(lif.V.value)
        brainstate.nn.init_all_states(net, B if batched else None)
        lif.V.value = lif.V.value + 0.3 * u.mV
        return out, v, brainstate.transform.grad(loss, params)()

    with brainstate.environ.context(dt=0.1 * u.ms):
        out, v, grads = run(False)
        spikes = type(net)(*net.layers[:2]).multi_step(xs, fuse=False)
        assert 0.05 < float(jnp.mean(spikes)) < 0.95
        assert not calls
        fused_out, fused_v, fused_grads = run(True)
    assert len(calls) == 2                           # the run and the gradient's
    np.testing.assert_allclose(fused_out, out, **TOL)
    np.testing.assert_allclose(fused_v, v, **TOL)
    leaves, fused_leaves = jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(
        fused_grads)
    assert len(leaves) == 4 and all(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)
    for got, expected in zip(fused_leaves, leaves):
        np.testing.assert_allclose(u.get_mantissa(got), u.get_mantissa(expected), **TOL)
