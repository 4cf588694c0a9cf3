"""NIR against another framework: SpikingJelly 2.0 (PyTorch), which writes and reads NIR
graphs with Conv1d and LIF. A Conv1d-LIF-Conv1d-LIF-Dense network built and weighted in
SpikingJelly, written to NIR and imported here, gives the same spikes and outputs on the same
input; one built here, exported and imported there, likewise.

How the two step a LIF neuron, and why the comparison is exact for spikes:
SpikingJelly's ``LIFNode`` (``decay_input=True``, hard reset) takes a forward-Euler step of
NIR's ODE, ``v += (dt / tau) * (v_leak - v + r * I)``, spikes where ``v >= v_threshold`` and
resets to ``v_reset``. BrainPy's ``Lif`` solves the ODE exactly over the step. The graphs are
therefore exchanged with ``integrator='euler'``: the imported neuron's time constant is the
one whose exact step decays by the same factor, ``1 - dt / tau``, and with ``r = 1`` its input
weight is then ``dt / tau`` as in SpikingJelly's step. Both compute in float32, so the membrane
potentials agree to a few float32 roundings; both spike on ``>=``; a spike could differ only
where a membrane lies within those roundings of the threshold, which the fixed inputs here
do not bring about. The spikes of every LIF layer are compared exactly; the dense layer's
outputs (sums of equal spikes times float32 weights, in another order: a float32 rounding
apart) to 1e-6. Imported with ``integrator='exact'`` instead, a third of the spikes differ.
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


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((T, B, C, L)) * 2.0).astype(np.float32)     # channels first


def _peer_network():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        layer.Conv1d(C, 4, 3, padding=1), neuron.LIFNode(tau=2.0),
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
    lif = dict(keep_size=True, V_th=1.0, V_reset=0., V_rest=0., spk_reset='hard', mode=mode)
    return LayerByLayer(
        Conv1d(C, 4, 3, padding=1, w_initializer=bp.init.Normal(0.4, 0.8), mode=mode),
        bp.dyn.Lif((L, 4), tau=0.3, **lif),
        Conv1d(4, 6, 3, stride=2, rhs_dilation=2, padding='VALID',
               w_initializer=bp.init.Normal(0.4, 0.8), b_initializer=bp.init.Normal(0., 0.1),
               mode=mode),
        bp.dyn.Lif((8, 6), tau=0.2, **lif),
        bp.dnn.Flatten(mode=mode),
        bp.dnn.Dense(6 * 8, 5, W_initializer=bp.init.Normal(0., 1.0), mode=mode),
        mode=mode)


def test_a_network_exported_from_here_runs_in_spikingjelly_with_its_spikes():
    mode = bm.TrainingMode()
    net = _our_network(mode)
    xs = _inputs(1)
    graph = to_nir(net, (L, C), dt=DT, integrator='euler')
    peer = import_from_nir(graph, dt=DT)
    state, outputs = None, []
    with torch.no_grad():
        for x in xs:
            y, state = peer(torch.from_numpy(x), state)
            outputs.append(y.numpy())
    np.testing.assert_allclose(np.stack(outputs), _ours(net, xs), **DENSE_TOL)
    for upto in (2, 4):
        prefix = LayerByLayer(*list(net.children.values())[:upto], mode=mode)
        spikes = _ours(prefix, xs)
        assert 0.05 < spikes.mean() < 0.95
        peer = import_from_nir(to_nir(prefix, (L, C), dt=DT, integrator='euler'), dt=DT)
        state, outputs = None, []
        with torch.no_grad():
            for x in xs:
                y, state = peer(torch.from_numpy(x), state)
                outputs.append(y.numpy())
        np.testing.assert_array_equal(np.stack(outputs), spikes)
