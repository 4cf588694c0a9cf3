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


@pytest.mark.parametrize('name', MODES)
def test_the_fused_step_gives_the_unfused_layers_numbers(name, fused_calls):
    mode = MODES[name]
    net = _network(mode, name)
    xs = _inputs(mode)
    lif = net[1]
    unfused = net.multi_step(xs, fuse=False)
    v_unfused, spikes_unfused = lif.V.value, lif.spike.value
    assert not fused_calls
    out = net.multi_step(xs, fold='batch' if name == 'training-soft' else 'time')
    assert len(fused_calls) == 1
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
def test_pairs_the_fused_step_does_not_compute_stay_unfused(conv, fused_calls):
    mode = bm.BatchingMode()
    layer = Conv1d(C, 32, 3, mode=mode, **conv)
    length = layer.config.output_length(L)
    net = LayerByLayer(layer, bp.dyn.Lif((length, 32), keep_size=True, mode=mode), mode=mode)
    net.multi_step(_inputs(mode))
    assert not fused_calls


def test_cuda_export_of_the_network_holds_one_fused_kernel():
    if jax.__version_info__ < (0, 5):
        pytest.skip("JAX 0.4 keeps every platform's branch in a one-platform export")
    export = pytest.importorskip('jax.export')
    triton = '__gpu$xla.gpu.triton'
    kernel = triton       # on every CUDA GPU, Hopper's too (the Mosaic GPU kernel: only if named)
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

    from bp_conv_ext.state import Conv1d as StateConv1d
    from bp_conv_ext.state import LayerByLayer as StateLayerByLayer
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
                                                                         fused_calls):
    brainstate = pytest.importorskip('brainstate')
    import brainunit as u
    net = _state_network(reset)
    lif = net.layers[1]
    xs = _inputs(bm.BatchingMode() if batched else bm.NonBatchingMode(), seed=2)
    params = net.states(brainstate.ParamState)

    def run(fuse):
        brainstate.nn.init_all_states(net, B if batched else None)
        lif.V.value = lif.V.value + 0.3 * u.mV        # a state that is not the reset value

        fold = 'batch' if fuse and batched else 'time'

        def loss():
            return jnp.sum(jnp.sin(u.get_mantissa(net.multi_step(xs, fuse=fuse, fold=fold))))

        out = u.get_mantissa(net.multi_step(xs, fuse=fuse, fold=fold))
        v = u.get_mantissa(lif.V.value)
        brainstate.nn.init_all_states(net, B if batched else None)
        lif.V.value = lif.V.value + 0.3 * u.mV
        return out, v, brainstate.transform.grad(loss, params)()

    with brainstate.environ.context(dt=0.1 * u.ms):
        out, v, grads = run(False)
        spikes = type(net)(*net.layers[:2]).multi_step(xs, fuse=False)
        assert 0.05 < float(jnp.mean(spikes)) < 0.95
        assert not fused_calls
        fused_out, fused_v, fused_grads = run(True)
    assert len(fused_calls) == 2                           # the run and the gradient's
    np.testing.assert_allclose(fused_out, out, **TOL)
    np.testing.assert_allclose(fused_v, v, **TOL)
    leaves, fused_leaves = jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(
        fused_grads)
    assert len(leaves) == 4 and all(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)
    for got, expected in zip(fused_leaves, leaves):
        np.testing.assert_allclose(u.get_mantissa(got), u.get_mantissa(expected), **TOL)


class _Subclass(bp.dyn.Lif):
    """A Lif subclass: its update may differ from the model the fused step computes."""


def _count(counter):
    def count(*unused):
        counter.value = counter.value + 1
    return count


#: Every way a ``bp.dyn.Lif`` can compute something besides the plain model (a tweak of the
#: group and its arguments), with what ``fusion`` says of it.
EXTENSIONS = {
    'after-update hook': (lambda lif, n: lif.add_aft_update('count', _count(n)), {},
                          r'functions run after its update \(add_aft_update: count\)'),
    'before-update hook': (lambda lif, n: lif.add_bef_update('count', _count(n)), {},
                           r'functions run before its update \(add_bef_update: count\)'),
    'current input': (lambda lif, n: lif.add_inp_fun('extra', lambda v: 0.3), {},
                      r'current inputs \(add_inp_fun: extra\)'),
    'delta input': (lambda lif, n: lif.add_inp_fun('kick', lambda: 0.1, category='delta'), {},
                    r'delta inputs'),
    'update on the object': (lambda lif, n: setattr(lif, 'update', lif.update), {},
                             r'its own `update` set on the object'),
    'subclass': (None, dict(cls=_Subclass), r'is not bp.dyn.Lif'),
    'refractory': (None, dict(cls=bp.dyn.LifRef), r'is not bp.dyn.Lif'),
    'noise': (None, dict(noise=0.1), r'has noise'),
    'euler': (None, dict(method='euler'), r"stepped by method='euler', not 'exp_auto'"),
    'scaling': (None, dict(scaling=bm.Scaling(2.0, 0.0)), r'rescales its voltages'),
    'tau per neuron': (None, dict(tau=np.full((L, 32), 2.0)), r'tau per neuron'),
    'negative tau': (None, dict(tau=-1.0), r'tau=-1.0 \(a positive finite tau is fused\)'),
    'infinite tau': (None, dict(tau=np.inf), r'tau=inf'),
    'unknown reset': (None, dict(spk_reset='partial'), r"spk_reset='partial'"),
}


def _extended(case, counter=None, mode=None):
    tweak, options, _ = EXTENSIONS[case]
    mode = mode or bm.TrainingMode()
    options = dict(dict(tau=1.0), **options)
    cls = options.pop('cls', bp.dyn.Lif)
    if 'scaling' in options and 'scaling' not in \
            __import__('inspect').signature(bp.dyn.Lif).parameters:
        pytest.skip("this BrainPy's Lif has no scaling")
    lif = cls((L, 32), keep_size=True, V_th=0.6, mode=mode,
              **options)
    if tweak is not None:
        tweak(lif, counter)
    conv = Conv1d(C, 32, 3, padding='SAME', w_initializer=bp.init.Normal(0.3, 1.0),
                  mode=mode)
    return LayerByLayer(conv, lif, mode=mode), conv, lif


@pytest.mark.parametrize('case', EXTENSIONS)
def test_fusion_says_why_neurons_with_more_than_the_model_stay_unfused(case):
    net, conv, lif = _extended(case, bm.Variable(jnp.zeros(())))
    [(conv_name, lif_name, reason)] = net.fusion()
    assert (conv_name, lif_name) == (conv.name, lif.name)
    assert re.search(EXTENSIONS[case][2], reason) and lif.name in reason


@pytest.mark.parametrize('case', ['after-update hook', 'before-update hook', 'delta input',
                                  'negative tau'])
def test_neurons_with_more_than_the_model_run_as_brainpy_runs_them(case, fused_calls):
    """Hooks run at every step, inputs are added and any tau runs (as BrainPy's own group
    runs it): the pair runs unfused, with the unfused layers' numbers."""
    results = []
    for fuse in (False, True):
        counter = bm.Variable(jnp.zeros(()))
        net, conv, _lif = _extended(case, counter, bm.BatchingMode())
        conv.w.value = jnp.asarray(np.random.default_rng(3).normal(0.5, 1.0, conv.w.shape),
                                   conv.w.dtype)
        results.append((np.asarray(net.multi_step(_inputs(bm.BatchingMode()), fuse=fuse)),
                        float(counter.value)))
    (unfused, unfused_count), (fused_out, fused_count) = results
    assert not fused_calls
    np.testing.assert_array_equal(fused_out, unfused)
    assert fused_count == unfused_count == (T if 'hook' in case else 0)
    assert 'tau' in case or unfused.any()


def test_fusion_reports_the_fused_pairs_and_the_convolutions_options():
    mode = bm.BatchingMode()
    net = LayerByLayer(Conv1d(C, 32, 3, mode=mode, name='fused_conv'),
                       bp.dyn.Lif((L, 32), keep_size=True, mode=mode, name='fused_lif'),
                       LayerByLayer(Conv1d(32, 32, 3, stride=2, mode=mode, name='strided'),
                                    bp.dyn.Lif((6, 32), keep_size=True, mode=mode,
                                               name='after_strided'), mode=mode),
                       mode=mode)
    assert net.fusion() == [('fused_conv', 'fused_lif', None),
                            ('strided', 'after_strided', 'strided (Conv1d) has stride 2')]
    # A pair split by a nested LayerByLayer is not one multi_step fuses.
    split = LayerByLayer(Conv1d(C, 32, 3, mode=mode),
                         LayerByLayer(bp.dyn.Lif((L, 32), keep_size=True, mode=mode), mode=mode),
                         mode=mode)
    assert split.fusion() == []


def test_an_empty_sequence_gives_empty_spikes_and_keeps_the_state():
    mode = bm.BatchingMode()
    net = _network(mode)
    lif = net[1]
    out = net.multi_step(jnp.zeros((0, B, L, C), bool))
    assert out.shape == (0, B, 3)
    np.testing.assert_array_equal(lif.V.value, np.zeros((B, L, 32)))
    assert lif.spike.value.shape == (B, L, 32)


def _state_extended(case, counter):
    """A ``brainpy.state`` Conv1d -> LIF pair, the LIF tweaked as ``case`` says."""
    import brainpy.state
    import brainstate
    import brainunit as u

    from bp_conv_ext.state import Conv1d as StateConv1d
    from bp_conv_ext.state import LayerByLayer as StateLayerByLayer

    class Subclass(brainpy.state.LIF):
        """A LIF subclass: its update may differ from the model the fused step computes."""

    options = dict(tau=1.0 * u.ms, V_th=0.6 * u.mV)
    cls = {'subclass': Subclass, 'refractory': brainpy.state.LIFRef}.get(case, brainpy.state.LIF)
    options.update({'negative tau': dict(tau=-1.0 * u.ms), 'infinite tau': dict(tau=np.inf * u.ms),
                    'threshold at reset': dict(V_reset=0.6 * u.mV)}.get(case, {}))
    lif = cls((L, 32), **options)
    kernel = np.random.default_rng(3).normal(0.5, 1.0, (3, C, 32)).astype(np.float32)
    conv = StateConv1d((L, C), 32, 3, w_init=kernel * u.mA)
    net = StateLayerByLayer(conv, lif)
    brainstate.nn.init_all_states(net, B)
    add = {'after-update hook': lambda: lif.add_after_update('count', _count(counter)),
           'before-update hook': lambda: lif.add_before_update('count', _count(counter)),
           'current input': lambda: lif.add_current_input('extra', lambda *a: 0.3 * u.mA),
           'delta input': lambda: lif.add_delta_input('kick', lambda *a: 0.1 * u.mV)}
    if case in add:
        add[case]()
    return net


STATE_EXTENSIONS = {
    'after-update hook': r'functions run after its update \(add_after_update: count\)',
    'before-update hook': r'functions run before its update \(add_before_update: count\)',
    'current input': r'current inputs \(add_current_input: extra\)',
    'delta input': r'delta inputs \(add_delta_input: kick\)',
    'subclass': r'is not brainpy.state.LIF', 'refractory': r'is not brainpy.state.LIF',
    'negative tau': r'tau=-1.* ms \(a positive finite tau is fused\)',
    'infinite tau': r'tau=inf',
    'threshold at reset': r'V_th=0.6 mV <= V_reset=0.6 mV'}


@pytest.mark.parametrize('case', STATE_EXTENSIONS)
def test_state_fusion_says_why_neurons_with_more_than_the_model_stay_unfused(case):
    brainstate = pytest.importorskip('brainstate')
    import brainunit as u
    net = _state_extended(case, brainstate.ShortTermState(jnp.zeros(())))
    with brainstate.environ.context(dt=0.1 * u.ms):
        [(_, _, reason)] = net.fusion()
    assert re.search(STATE_EXTENSIONS[case], reason), reason


@pytest.mark.parametrize('case', ['after-update hook', 'delta input', 'negative tau'])
def test_state_neurons_with_more_than_the_model_run_as_brainpy_runs_them(case, fused_calls):
    brainstate = pytest.importorskip('brainstate')
    import brainunit as u
    results = []
    for fuse in (False, True):
        counter = brainstate.ShortTermState(jnp.zeros(()))
        net = _state_extended(case, counter)
        with brainstate.environ.context(dt=0.1 * u.ms):
            out = np.asarray(u.get_mantissa(net.multi_step(_inputs(bm.BatchingMode()),
                                                           fuse=fuse)))
        results.append((out, float(counter.value)))
    (unfused, unfused_count), (fused_out, fused_count) = results
    assert not fused_calls
    np.testing.assert_array_equal(fused_out, unfused)
    assert fused_count == unfused_count == (T if 'hook' in case else 0)
    assert 'tau' in case or unfused.any()
