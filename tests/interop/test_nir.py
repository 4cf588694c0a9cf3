"""NIR interop: to_nir / from_nir in both BrainPy APIs. Round trips through a file, the graphs
held to an independent NumPy reading of NIR (helpers/nir_reference.py), both integrators, the
delay layer, and the exchange between the two APIs. (The refusals are rows of the bad-input
table; the exchange with another framework is test_nir_peers.py.)"""
import brainpy as bp
import brainpy.math as bm
import numpy as np
import pytest
from helpers.cases import pairwise
from helpers.nir_reference import Graph

import bp_conv_ext
from bp_conv_ext import Conv1d, DelayConv1d, LayerByLayer, from_nir, output_length, to_nir

nir = pytest.importorskip('nir')

T, B, L, C = 12, 3, 16, 2
TOL = dict(rtol=1e-6, atol=1e-6)
# (stride, rhs_dilation, groups, padding, bias): every Conv1d option that NIR holds, pairwise
# (the whole product under `make test-full`). 'SAME' with stride 2 pads these 16 samples
# unequally (a bad-input row), so the grid leaves it out.
GRID = pairwise([1, 2], [1, 2], [1, 2], ['SAME', 'VALID', 0, 2], [True, False],
                keep=lambda c: not (c[3] == 'SAME' and c[0] > 1))
LIF = dict(tau=0.5, V_th=0.5, V_reset=0., V_rest=0., spk_reset='hard')


def _inputs(kind, shape=(T, B, L, C), seed=0):
    rng = np.random.default_rng(seed)
    if kind == 'spikes':
        return rng.random(shape) < 0.5
    return (rng.random(shape) * 2.0).astype(np.float32)


def _classic_net(stride, dilation, groups, padding, bias, mode=None):
    mode = mode or bm.TrainingMode()
    length = output_length(L, 3, stride, padding, rhs_dilation=dilation)
    init = bp.init.Normal(0., 0.1) if bias else None
    return LayerByLayer(
        Conv1d(C, 4, 3, stride=stride, padding=padding, rhs_dilation=dilation, groups=groups,
               w_initializer=bp.init.Normal(0.5, 1.0), b_initializer=init, mode=mode),
        bp.dyn.Lif((length, 4), keep_size=True, mode=mode, **LIF),
        bp.dnn.AvgPool1d(2, 2, channel_axis=-1, mode=mode),
        bp.dnn.Flatten(mode=mode),
        bp.dnn.Dense(length // 2 * 4, 5, W_initializer=bp.init.Normal(0.3, 1.0), mode=mode),
        bp.dyn.Lif(5, mode=mode, **LIF),
        mode=mode)


def _run(net, xs):
    return np.asarray(net.multi_step(bm.asarray(xs)))


@pytest.mark.parametrize('config', GRID, ids=lambda c: '-'.join(map(str, c)))
def test_classic_round_trip_through_a_file_is_exact_and_means_what_nir_says(config, tmp_path):
    net = _classic_net(*config)
    graph = to_nir(net, (L, C))
    nir.write(tmp_path / 'net.nir', graph)
    back = from_nir(tmp_path / 'net.nir', mode=bm.TrainingMode())
    conv = graph.nodes['0_conv1d']
    np.testing.assert_array_equal(conv.weight, np.transpose(np.asarray(net[0].w), (2, 1, 0)))
    assert (conv.stride, conv.dilation, conv.groups) == config[:3]
    reference = Graph(nir.read(tmp_path / 'net.nir', type_check=False), dt=bm.get_dt())
    for kind in ('floats', 'spikes'):
        xs = _inputs(kind)
        ours = _run(net, xs)
        assert 0 < ours.mean() < 1, "the test's input must make the output neurons spike"
        np.testing.assert_allclose(_run(back, xs), ours, **TOL)
        np.testing.assert_array_equal(reference.run(np.swapaxes(xs, -1, -2)), ours)


@pytest.mark.parametrize('config', GRID, ids=lambda c: '-'.join(map(str, c)))
def test_state_round_trip_through_a_file_is_exact_and_means_what_nir_says(config, tmp_path):
    brainstate = pytest.importorskip('brainstate')
    import brainpy.state
    import brainunit as u

    import bp_conv_ext.state as S
    stride, dilation, groups, padding, bias = config
    length = output_length(L, 3, stride, padding, rhs_dilation=dilation)
    current = brainstate.nn.init.Normal(0.5, 1.0, unit=u.mA)
    lif = dict(tau=0.5 * u.ms, V_th=0.5 * u.mV, spk_reset='hard')
    xs = _inputs('spikes').astype(np.float32)
    with brainstate.environ.context(dt=0.1 * u.ms):
        net = S.LayerByLayer(
            S.Conv1d((L, C), 4, 3, stride=stride, padding=padding, rhs_dilation=dilation,
                     groups=groups, w_init=current,
                     b_init=brainstate.nn.init.Normal(0., 0.1, unit=u.mA) if bias else None),
            brainpy.state.LIF((length, 4), **lif),
            brainstate.nn.AvgPool1d(2, 2, channel_axis=-1, in_size=(length, 4)),
            brainstate.nn.Flatten(in_size=(length // 2, 4)),
            brainstate.nn.Linear(length // 2 * 4, 5,
                                 w_init=brainstate.nn.init.Normal(0.3, 1.0, unit=u.mA)),
            brainpy.state.LIF(5, **lif))
        nir.write(tmp_path / 'state.nir', S.to_nir(net, (L, C)))
        back = S.from_nir(tmp_path / 'state.nir')
        outputs = []
        for model in (net, back):
            brainstate.nn.init_all_states(model, B)
            outputs.append(np.asarray(u.get_mantissa(model.multi_step(xs))))
    assert 0 < outputs[0].mean() < 1
    np.testing.assert_allclose(outputs[1], outputs[0], **TOL)
    reference = Graph(nir.read(tmp_path / 'state.nir', type_check=False), dt=0.1)
    np.testing.assert_array_equal(reference.run(np.swapaxes(xs, -1, -2)), outputs[0])


def test_export_writes_channels_first_nodes():
    net = _classic_net(2, 1, 2, 'VALID', True)
    graph = to_nir(net, (L, C))
    assert list(graph.nodes) == ['input', '0_conv1d', '1_lif', '2_conv1d', '3_flatten',
                                 '4_affine', '5_lif', 'output']
    assert list(graph.nodes['input'].input_type['input']) == [C, L]
    lif = graph.nodes['1_lif']
    assert lif.tau.shape == (4, 7)
    np.testing.assert_allclose(lif.tau, 0.5)
    pool = graph.nodes['2_conv1d']           # AvgPool1d(2, 2): depthwise, weight 1/2
    assert pool.groups == 4 and pool.stride == 2
    np.testing.assert_array_equal(pool.weight, np.full((4, 1, 2), 0.5, np.float32))
    # The dense layer's columns follow NIR's flatten of [C, L]: column c * L' + l holds this
    # package's input l * C + c.
    weight = np.asarray(net[4].W)
    np.testing.assert_array_equal(graph.nodes['4_affine'].weight[:, 1 * 3 + 2],
                                  weight[2 * 4 + 1])


def test_state_round_trip_with_units_and_the_two_apis_agree(tmp_path):
    brainstate = pytest.importorskip('brainstate')
    import brainpy.state
    import brainunit as u

    import bp_conv_ext.state as S
    classic = _classic_net(1, 2, 2, 'SAME', True)
    xs = _inputs('floats')
    expected = _run(classic, xs)
    dt = bm.get_dt() * u.ms
    with brainstate.environ.context(dt=dt):
        # The classic network imported into the state API, then out and back in again.
        state_net = S.from_nir(to_nir(classic, (L, C)))
        nir.write(tmp_path / 'state.nir', S.to_nir(state_net, (L, C)))
        back = S.from_nir(tmp_path / 'state.nir')
        # A state network in units (mA, ohm, mV, ms) is written in plain numbers.
        current = brainstate.nn.init.Normal(0.2, 1.0, unit=u.mA)
        units_net = S.LayerByLayer(
            S.Conv1d((L, C), 4, 3, stride=2, padding='VALID', w_init=current,
                     b_init=brainstate.nn.init.Constant(0.1 * u.mA)),
            brainpy.state.LIF((7, 4), tau=0.05 * u.second / 100, V_th=500. * u.uvolt,
                              R=1e-3 * u.kohm, spk_reset='hard'),
            brainstate.nn.Flatten(in_size=(7, 4)),
            brainstate.nn.Linear(28, 5, w_init=current),
            brainpy.state.LIF(5, tau=0.5 * u.ms, V_th=0.5 * u.mV, spk_reset='hard'))
        graph = S.to_nir(units_net, (L, C))
        plain = S.from_nir(graph)
        outputs = []
        for net in (state_net, back, units_net, plain):
            brainstate.nn.init_all_states(net, B)
            outputs.append(np.asarray(u.get_mantissa(net.multi_step(xs))))
    np.testing.assert_allclose(outputs[0], expected, **TOL)
    np.testing.assert_allclose(outputs[1], expected, **TOL)
    assert 0 < outputs[2].mean() < 1
    np.testing.assert_array_equal(outputs[3], outputs[2])
    np.testing.assert_allclose(graph.nodes['1_lif'].v_threshold, 0.5, rtol=1e-6)
    np.testing.assert_allclose(graph.nodes['1_lif'].r, 1.0, rtol=1e-6)
    np.testing.assert_array_equal(Graph(graph, dt=bm.get_dt()).run(np.swapaxes(xs, -1, -2)),
                                  outputs[2])


def _delay_net(mode):
    net = LayerByLayer(
        bp.dnn.Flatten(mode=mode),
        bp.dnn.Dense(L * C, 6, W_initializer=bp.init.Normal(0., 0.5), mode=mode),
        bp.dyn.Lif(6, mode=mode, **LIF),
        DelayConv1d(6, 3, max_delay=4, kernel_count=2, interpolation='round',
                    w_initializer=bp.init.Normal(0.2, 1.0), b_initializer=bp.init.Constant(0.1),
                    input_dtype=bm.float_, mode=mode),
        bp.dyn.Lif(3, mode=mode, **LIF),
        mode=mode)
    return net


def test_delays_round_trip_as_nir_delay_nodes(tmp_path):
    net = _delay_net(bm.TrainingMode())
    graph = to_nir(net, (L, C))
    kinds = [type(node).__name__ for node in graph.nodes.values()]
    assert kinds[4:7] == ['Linear', 'Delay', 'Affine']
    taps = np.asarray(net[3].kernel())
    used = [d for d in range(len(taps)) if np.any(taps[d])]
    np.testing.assert_allclose(np.unique(graph.nodes['4_delay'].delay),
                               np.asarray(used) * bm.get_dt())
    nir.write(tmp_path / 'delays.nir', graph)
    back = from_nir(tmp_path / 'delays.nir', mode=bm.TrainingMode())
    xs = _inputs('floats')
    ours = _run(net, xs)
    assert 0 < ours.mean() < 1
    np.testing.assert_allclose(_run(back, xs), ours, **TOL)
    reference = Graph(nir.read(tmp_path / 'delays.nir', type_check=False), dt=bm.get_dt())
    np.testing.assert_array_equal(reference.run(np.swapaxes(xs, -1, -2)), ours)


def test_euler_graphs_hold_the_time_constant_of_the_same_decay(tmp_path):
    net = _classic_net(1, 1, 1, 'VALID', False)
    graph = to_nir(net, (L, C), dt=1e-4, integrator='euler')
    steps = 0.5 / bm.get_dt()
    np.testing.assert_allclose(graph.nodes['1_lif'].tau, 1e-4 / -np.expm1(-1 / steps),
                               rtol=1e-6)
    xs = _inputs('floats')
    ours = _run(net, xs)
    euler = Graph(graph, dt=1e-4, integrator='euler').run(np.swapaxes(xs, -1, -2))
    np.testing.assert_array_equal(euler, ours)
    back = from_nir(graph, dt=1e-4, integrator='euler', mode=bm.TrainingMode())
    np.testing.assert_allclose(_run(back, xs), ours, **TOL)
    np.testing.assert_allclose(np.asarray(back[1].tau), 0.5, rtol=1e-6)
    # Read as an exact graph it is another network: a slower decay, other spikes.
    exact = from_nir(graph, dt=1e-4, mode=bm.TrainingMode())
    assert not np.allclose(np.asarray(exact[1].tau), 0.5)


def test_expanded_groups_compute_the_same_with_groups_1():
    net = _classic_net(1, 1, 2, 'VALID', True)
    grouped = to_nir(net, (L, C))
    graph = to_nir(net, (L, C), expand_groups=True)
    assert (grouped.nodes['0_conv1d'].groups, grouped.nodes['2_conv1d'].groups) == (2, 4)
    assert graph.nodes['0_conv1d'].groups == graph.nodes['2_conv1d'].groups == 1
    weight = graph.nodes['0_conv1d'].weight                  # (4, 2, 3): blocks of (2, 1, 3)
    np.testing.assert_array_equal(weight[:2, 0], grouped.nodes['0_conv1d'].weight[:2, 0])
    np.testing.assert_array_equal(weight[2:, 1], grouped.nodes['0_conv1d'].weight[2:, 0])
    assert not weight[:2, 1].any() and not weight[2:, 0].any()
    xs = _inputs('floats')
    ours = _run(net, xs)
    np.testing.assert_array_equal(Graph(graph, dt=bm.get_dt()).run(np.swapaxes(xs, -1, -2)),
                                  ours)
    np.testing.assert_allclose(_run(from_nir(graph, mode=bm.TrainingMode()), xs), ours, **TOL)


def test_a_graph_that_is_not_a_chain_is_refused():
    net = _classic_net(1, 1, 1, 'VALID', False)
    graph = to_nir(net, (L, C))
    graph.edges.append(('0_conv1d', '3_flatten'))
    with pytest.raises(bp_conv_ext.NIRError, match=r"node '0_conv1d' \(Conv1d\) has 2 "
                                                   r"outgoing edges"):
        from_nir(graph)


def test_node_names_with_dots_are_names_not_ports(tmp_path):
    # nirtorch names the nodes of nested modules 'block.0', ...; NIR's edges name nodes.
    net = _classic_net(1, 1, 1, 'VALID', False)
    graph = to_nir(net, (L, C))
    name = {n: n if n in ('input', 'output') else f'block.{n}' for n in graph.nodes}
    dotted = nir.NIRGraph(nodes={name[n]: node for n, node in graph.nodes.items()},
                          edges=[(name[a], name[b]) for a, b in graph.edges], type_check=False)
    nir.write(tmp_path / 'dotted.nir', dotted)
    back = from_nir(tmp_path / 'dotted.nir', mode=bm.TrainingMode())
    xs = _inputs('floats')
    np.testing.assert_allclose(_run(back, xs), _run(net, xs), **TOL)


# How PyTorch-based writers hold a Conv1d's stride, dilation, groups and padding: 1-tuples in
# memory, which a file read back with nir.read gives as 1-element arrays.
FORMS = {'1-tuple': lambda v: (v,), '1-element array': lambda v: np.array([v]),
         '1-tuple through a file': lambda v: (v,)}


@pytest.mark.parametrize('form', list(FORMS))
def test_conv1d_fields_in_the_forms_that_writers_give(form, tmp_path):
    net = _classic_net(2, 2, 2, 2, True)
    graph = to_nir(net, (L, C))
    conv = graph.nodes['0_conv1d']
    for field in ('stride', 'dilation', 'groups', 'padding'):
        setattr(conv, field, FORMS[form](getattr(conv, field)))
    if 'file' in form:
        nir.write(tmp_path / 'tuples.nir', graph)
        graph = nir.read(tmp_path / 'tuples.nir', type_check=False)
        assert isinstance(graph.nodes['0_conv1d'].stride, np.ndarray)
    back = from_nir(graph, mode=bm.TrainingMode())
    config = back[0].config
    assert (config.stride, config.rhs_dilation, config.groups, config.padding) == \
        (2, 2, 2, (2, 2))
    xs = _inputs('floats')
    np.testing.assert_allclose(_run(back, xs), _run(net, xs), **TOL)


def _resting_net(api):
    """Conv1d -> LIF whose rest (and reset) is away from 0, per neuron, the membrane starting
    there: as SpikingJelly's neurons with v_reset != 0 do."""
    rng = np.random.default_rng(3)
    rest = rng.uniform(-0.6, -0.1, (L - 2, 4)).astype(np.float32)
    if api == 'classic':
        mode = bm.TrainingMode()
        return LayerByLayer(
            Conv1d(C, 4, 3, padding='VALID', w_initializer=bp.init.Normal(0.5, 1.0), mode=mode),
            bp.dyn.Lif((L - 2, 4), keep_size=True, tau=0.5, V_th=0.4, V_rest=rest,
                       V_reset=-0.2, V_initializer=bp.init.Constant(rest), spk_reset='hard',
                       mode=mode),
            mode=mode), rest
    import brainpy.state
    import braintools
    import brainunit as u

    import bp_conv_ext.state as S
    return S.LayerByLayer(
        S.Conv1d((L, C), 4, 3, padding='VALID',
                 w_init=braintools.init.Normal(0.5 * u.mA, 1.0 * u.mA)),
        brainpy.state.LIF((L - 2, 4), tau=0.5 * u.ms, V_th=0.4 * u.mV, V_rest=rest * u.mV,
                          V_reset=-0.2 * u.mV, V_initializer=braintools.init.Constant(
                              rest * u.mV), spk_reset='hard')), rest


@pytest.mark.parametrize('api', ['classic', 'state'])
def test_neurons_start_at_their_rest_both_ways(api, tmp_path):
    xs = _inputs('floats')
    if api == 'classic':
        net, rest = _resting_net(api)
        graph = to_nir(net, (L, C))
        nir.write(tmp_path / 'rest.nir', graph)
        back = from_nir(tmp_path / 'rest.nir', mode=bm.TrainingMode())
        np.testing.assert_array_equal(np.asarray(back[1].V)[0], rest)
        ours, again = _run(net, xs), _run(back, xs)
    else:
        brainstate = pytest.importorskip('brainstate')
        import brainunit as u

        import bp_conv_ext.state as S
        with brainstate.environ.context(dt=bm.get_dt() * u.ms):
            net, rest = _resting_net(api)
            graph = S.to_nir(net, (L, C))
            nir.write(tmp_path / 'rest.nir', graph)
            back = S.from_nir(tmp_path / 'rest.nir')
            outputs = []
            for model in (net, back):
                brainstate.nn.init_all_states(model, B)
                np.testing.assert_array_equal(u.get_mantissa(model[1].V.value)[0], rest)
                outputs.append(np.asarray(u.get_mantissa(model.multi_step(xs))))
        ours, again = outputs
    np.testing.assert_array_equal(graph.nodes['1_lif'].v_leak, rest.T)
    assert 0 < ours.mean() < 1
    np.testing.assert_allclose(again, ours, **TOL)
    # What the graph means (its neurons starting at v_leak) is what the network computed.
    reference = Graph(nir.read(tmp_path / 'rest.nir', type_check=False), dt=bm.get_dt())
    np.testing.assert_array_equal(reference.run(np.swapaxes(xs, -1, -2)),
                                  np.swapaxes(ours, -1, -2))


def test_an_euler_lif_is_written_with_the_time_constant_of_its_decay():
    # Forward Euler decays by 1 - dt / tau per step: for an exact reader the graph holds
    # tau' = -dt / log(1 - dt / tau), for an Euler reader tau itself.
    mode = bm.TrainingMode()
    net = LayerByLayer(
        Conv1d(C, 4, 3, padding='VALID', w_initializer=bp.init.Normal(0.5, 1.0), mode=mode),
        bp.dyn.Lif((L - 2, 4), keep_size=True, method='euler', mode=mode, **LIF), mode=mode)
    xs = _inputs('floats')
    ours = _run(net, xs)
    assert 0 < ours.mean() < 1
    steps = 0.5 / bm.get_dt()
    for integrator, tau in (('exact', -1 / np.log1p(-1 / steps)), ('euler', steps)):
        graph = to_nir(net, (L, C), integrator=integrator)
        np.testing.assert_allclose(graph.nodes['1_lif'].tau, tau * bm.get_dt(), rtol=1e-6)
        reference = Graph(graph, dt=bm.get_dt(), integrator=integrator)
        np.testing.assert_array_equal(reference.run(np.swapaxes(xs, -1, -2)),
                                      np.swapaxes(ours, -1, -2))
        back = from_nir(graph, integrator=integrator, mode=mode)
        np.testing.assert_array_equal(_run(back, xs), ours)


@pytest.mark.parametrize('api', ['classic', 'state'])
def test_a_neuron_with_an_input_function_is_not_written_as_nir_lif(api):
    if api == 'classic':
        net = _classic_net(1, 1, 1, 'VALID', False)
        net[1].add_inp_fun('drive', lambda *args: 0.3)
        with pytest.raises(bp_conv_ext.NIRError, match=r"\(bp\.dyn\.Lif\) has current inputs "
                                                       r"\(add_inp_fun: drive\); NIR's LIF"):
            to_nir(net, (L, C))
    else:
        brainstate = pytest.importorskip('brainstate')
        import brainpy.state
        import brainunit as u

        import bp_conv_ext.state as S
        with brainstate.environ.context(dt=0.1 * u.ms):
            lif = brainpy.state.LIF((L, C), spk_reset='hard')
            lif.add_current_input('drive', lambda *args: 0.3 * u.mA)
            with pytest.raises(bp_conv_ext.NIRError, match=r"has current inputs "
                                                           r"\(add_current_input: drive\)"):
                S.to_nir(lif, (L, C))


def test_a_delay_too_long_to_allocate_is_refused_with_its_size():
    nir = pytest.importorskip('nir')
    graph = nir.NIRGraph(
        nodes=dict(input=nir.Input(np.array([3])),
                   delay=nir.Delay(delay=np.array([1e9, 0., 0.])),
                   output=nir.Output(np.array([3]))),
        edges=[('input', 'delay'), ('delay', 'output')], type_check=False)
    with pytest.raises(bp_conv_ext.NIRError,
                       match=r"needs taps of 33\.53 GiB \(float32\), over the 1 GiB"):
        from_nir(graph, dt=1.)
