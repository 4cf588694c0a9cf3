"""NIR against other frameworks that write it: SpikingJelly 2.0 and Sinabs 3.1 (PyTorch).

SpikingJelly writes and reads NIR graphs with Conv1d and LIF. A Conv1d-LIF-Conv1d-LIF-Dense
network built and weighted in SpikingJelly, written to NIR and imported here, gives the same
spikes and outputs on the same input; one built here, exported and imported there, likewise;
in both BrainPy APIs, with a neuron whose reset (and so, in SpikingJelly, its rest) is not 0.

How the two step a LIF neuron, and why the comparison is exact for spikes:
SpikingJelly's ``LIFNode`` (``decay_input=True``, hard reset) takes a forward-Euler step of
NIR's ODE, ``v += (dt / tau) * (v_leak - v + r * I)``, spikes where ``v >= v_threshold`` and
resets to ``v_reset``. It writes ``v_leak = v_reset`` (its neuron decays towards its reset)
and starts its membrane there, at the rest, as this package's imported neurons do. BrainPy's
``Lif`` solves the ODE exactly over the step. The graphs are therefore exchanged with
``integrator='euler'``: the imported neuron's time constant is the one whose exact step decays
by the same factor, ``1 - dt / tau``, and with ``r = 1`` its input weight is then ``dt / tau``
as in SpikingJelly's step. Both compute in float32, so the membrane potentials agree to a few
float32 roundings; both spike on ``>=``; a spike could differ only where a membrane lies
within those roundings of the threshold, which the fixed inputs here do not bring about. The
spikes of every LIF layer are compared exactly; the dense layer's outputs (sums of equal
spikes times float32 weights, in another order: a float32 rounding apart) to 1e-6. Imported
with ``integrator='exact'`` instead, a third of the spikes differ.

Sinabs (installed without its dependencies: it pins an older ``nir`` and wants a hardware
library) writes Conv1d nodes with 1-tuples for ``stride``, ``dilation`` and ``padding``, and
LIF nodes with per-neuron ``tau`` and ``v_threshold``, ``v_leak = 0``, ``r = 1``, no
``v_reset`` (NIR's default, 0), with times counted in time steps. Its ``LIF`` with
``norm_input=True`` takes the exact step of that ODE with the input held over the step,
``v = a * v + (1 - a) * I`` with ``a = exp(-1 / tau)``, from ``v = 0``, as BrainPy's ``Lif``
does, so the graph is imported with ``dt=1`` (one step) and ``integrator='exact'``. Its
graphs do not say how its neurons spike and reset: the network here uses ``SingleSpike`` (one
spike where ``v >= threshold``) and ``MembraneReset()`` (to 0), which are NIR's LIF; Sinabs's
defaults (several spikes per step, the threshold subtracted) would be written the same way
and mean something else. A reset other than 0 cannot be tried: the exporter writes none, and
``MembraneReset(reset_value)`` adds the value to every neuron, not only to those that spiked.
The same float32 argument as above makes the spikes comparable exactly.
"""
import brainpy as bp
import brainpy.math as bm
import numpy as np
import pytest

from bp_conv_ext import Conv1d, LayerByLayer, from_nir, to_nir

nir = pytest.importorskip('nir')
torch = pytest.importorskip('torch')
pytest.importorskip('spikingjelly')
pytest.importorskip('nirtorch')
from spikingjelly.activation_based import functional, layer, neuron  # noqa: E402
from spikingjelly.activation_based.nir_exchange import export_to_nir, import_from_nir  # noqa: E402

DT = 1e-4            # SpikingJelly's NIR time step (seconds)
T, B, L, C = 16, 4, 20, 2
DENSE_TOL = dict(rtol=1e-6, atol=1e-6)
V_RESET = -0.3       # the first LIF layer's reset, and in SpikingJelly its rest and start


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((T, B, C, L)) * 2.0).astype(np.float32)     # channels first


def _peer_network():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        layer.Conv1d(C, 4, 3, padding=1), neuron.LIFNode(tau=2.0, v_reset=V_RESET),
        layer.Conv1d(4, 6, 3, stride=2, dilation=2), neuron.LIFNode(tau=3.0),
        layer.Flatten(), layer.Linear(6 * 8, 5))
    with torch.no_grad():
        for module in net:
            if isinstance(module, (torch.nn.Conv1d, torch.nn.Linear)):
                module.weight.add_(0.3)
    return net


def _peer_run(net, xs, upto=None):
    """SpikingJelly's outputs of ``net`` (or of its first ``upto`` modules), step by step."""
    modules = net if upto is None else net[:upto]
    functional.reset_net(net)
    with torch.no_grad():
        return np.stack([modules(torch.from_numpy(x)).numpy() for x in xs])


def _imported_run(peer, xs):
    """The outputs of a network SpikingJelly imported from NIR (a module stepped with its
    state), step by step."""
    state, outputs = None, []
    with torch.no_grad():
        for x in xs:
            y, state = peer(torch.from_numpy(x), state)
            outputs.append(y.numpy())
    return np.stack(outputs)


def _ours(net, xs):
    """Our model's outputs on channels-first inputs, channels first."""
    out = np.asarray(net.multi_step(bm.asarray(np.swapaxes(xs, -1, -2))))
    return np.swapaxes(out, -1, -2) if out.ndim == 4 else out


def test_a_spikingjelly_network_imported_here_gives_its_spikes():
    peer = _peer_network()
    xs = _inputs()
    expected = _peer_run(peer, xs)
    for upto in (2, 4):
        spikes = _peer_run(peer, xs, upto)
        graph = export_to_nir(peer[:upto], torch.zeros(1, C, L), save_path=None, dt=DT)
        ours = _ours(from_nir(graph, dt=DT, integrator='euler', mode=bm.TrainingMode()), xs)
        assert 0.05 < spikes.mean() < 0.95
        np.testing.assert_array_equal(ours, spikes)
    graph = export_to_nir(peer, torch.zeros(1, C, L), save_path=None, dt=DT)
    net = from_nir(graph, dt=DT, integrator='euler', mode=bm.TrainingMode())
    assert [type(m).__name__ for m in net.children.values()] == [
        'Conv1d', 'Lif', 'Conv1d', 'Lif', 'Flatten', 'Dense']
    np.testing.assert_allclose(_ours(net, xs), expected, **DENSE_TOL)


def _our_network(mode):
    lif = dict(keep_size=True, V_th=1.0, spk_reset='hard', mode=mode)
    rest = dict(V_rest=V_RESET, V_reset=V_RESET, V_initializer=bp.init.Constant(V_RESET))
    return LayerByLayer(
        Conv1d(C, 4, 3, padding=1, w_initializer=bp.init.Normal(0.4, 0.8), mode=mode),
        bp.dyn.Lif((L, 4), tau=0.3, **rest, **lif),
        Conv1d(4, 6, 3, stride=2, rhs_dilation=2, padding='VALID',
               w_initializer=bp.init.Normal(0.4, 0.8), b_initializer=bp.init.Normal(0., 0.1),
               mode=mode),
        bp.dyn.Lif((8, 6), tau=0.2, V_rest=0., V_reset=0., **lif),
        bp.dnn.Flatten(mode=mode),
        bp.dnn.Dense(6 * 8, 5, W_initializer=bp.init.Normal(0., 1.0), mode=mode),
        mode=mode)


def test_a_network_exported_from_here_runs_in_spikingjelly_with_its_spikes():
    mode = bm.TrainingMode()
    net = _our_network(mode)
    xs = _inputs(1)
    graph = to_nir(net, (L, C), dt=DT, integrator='euler')
    peer = import_from_nir(graph, dt=DT)
    np.testing.assert_allclose(_imported_run(peer, xs), _ours(net, xs), **DENSE_TOL)
    for upto in (2, 4):
        prefix = LayerByLayer(*list(net.children.values())[:upto], mode=mode)
        spikes = _ours(prefix, xs)
        assert 0.05 < spikes.mean() < 0.95
        peer = import_from_nir(to_nir(prefix, (L, C), dt=DT, integrator='euler'), dt=DT)
        np.testing.assert_array_equal(_imported_run(peer, xs), spikes)


def test_the_state_api_exchanges_neurons_resting_away_from_0_with_spikingjelly():
    brainstate = pytest.importorskip('brainstate')
    import brainpy.state
    import braintools
    import brainunit as u

    import bp_conv_ext.state as S
    peer = _peer_network()[:2]
    xs = _inputs(2)
    spikes = _peer_run(peer, xs)
    assert 0.05 < spikes.mean() < 0.95
    with brainstate.environ.context(dt=bm.get_dt() * u.ms):
        # SpikingJelly's graph, run here ...
        net = S.from_nir(export_to_nir(peer, torch.zeros(1, C, L), save_path=None, dt=DT),
                         dt=DT, integrator='euler')
        brainstate.nn.init_all_states(net, B)
        ours = np.asarray(u.get_mantissa(net.multi_step(np.swapaxes(xs, -1, -2))))
        np.testing.assert_array_equal(np.swapaxes(ours, -1, -2), spikes)
        # ... and a network of this API, run there.
        rest = V_RESET * u.mV
        net = S.LayerByLayer(
            S.Conv1d((L, C), 4, 3, padding=1,
                     w_init=braintools.init.Normal(0.4 * u.mA, 0.8 * u.mA)),
            brainpy.state.LIF((L, 4), tau=0.3 * u.ms, V_th=1. * u.mV, V_rest=rest,
                              V_reset=rest, V_initializer=braintools.init.Constant(rest),
                              spk_reset='hard'))
        brainstate.nn.init_all_states(net, B)
        ours = np.swapaxes(np.asarray(u.get_mantissa(
            net.multi_step(np.swapaxes(xs, -1, -2)))), -1, -2)
        peer = import_from_nir(S.to_nir(net, (L, C), dt=DT, integrator='euler'), dt=DT)
    assert 0.05 < ours.mean() < 0.95
    np.testing.assert_array_equal(_imported_run(peer, xs), ours)


def test_a_sinabs_network_imported_here_gives_its_spikes():
    sinabs = pytest.importorskip('sinabs')
    import sinabs.layers as sl
    from sinabs.activation import MembraneReset, SingleSpike
    rng = np.random.default_rng(4)

    def lif(shape):            # per-neuron time constants (in steps) and thresholds
        return sl.LIFSqueeze(
            tau_mem=torch.from_numpy(rng.uniform(2., 6., shape).astype(np.float32)),
            spike_threshold=torch.from_numpy(rng.uniform(0.3, 0.8, shape).astype(np.float32)),
            batch_size=B, spike_fn=SingleSpike, reset_fn=MembraneReset())

    torch.manual_seed(0)
    peer = torch.nn.Sequential(torch.nn.Conv1d(C, 4, 3, padding=1, dilation=2), lif((4, 18)),
                               torch.nn.Conv1d(4, 6, 3, stride=2, groups=2), lif((6, 8)))
    with torch.no_grad():
        for module in peer[::2]:
            module.weight.add_(0.3)
    xs = _inputs(3)
    for upto in (2, 4):
        graph = sinabs.to_nir(peer[:upto], torch.zeros(B, C, L))
        assert graph.nodes['0'].stride == (1,) and graph.nodes['0'].dilation == (2,)
        sinabs.reset_states(peer)
        with torch.no_grad():       # Sinabs folds time into the batch: [B * T, C, L]
            spikes = peer[:upto](torch.from_numpy(
                np.swapaxes(xs, 0, 1).reshape(B * T, C, L))).numpy()
        spikes = np.swapaxes(spikes.reshape(B, T, *spikes.shape[1:]), 0, 1)
        assert 0.05 < spikes.mean() < 0.95
        ours = _ours(from_nir(graph, dt=1.0, mode=bm.TrainingMode()), xs)
        np.testing.assert_array_equal(ours, spikes)
