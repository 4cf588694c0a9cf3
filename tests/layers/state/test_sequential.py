"""The brainpy.state LayerByLayer (layers/state/sequential.py): a spiking network run layer by
layer equals the step-by-step run with its gradients, trains with braintools.optim and checkpoints
into a freshly built network."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

brainstate = pytest.importorskip('brainstate')   # the brainpy.state stack (BrainPy 2.8) only
import brainpy.state  # noqa: E402
import braintools  # noqa: E402
import brainunit as u  # noqa: E402
from helpers.cases import random_input  # noqa: E402

from bp_conv_ext.core.sequence import FOLDS  # noqa: E402
from bp_conv_ext.state import Conv1d, LayerByLayer  # noqa: E402

DT = 0.1 * u.ms

def _network(length=40, cin=2):
    lif = dict(tau=0.5 * u.ms, V_th=0.2 * u.mV, spk_fun=braintools.surrogate.Arctan())
    current = brainstate.nn.init.XavierNormal(scale=3.0, unit=u.mA)
    return LayerByLayer(
        Conv1d((length, cin), 8, 5, w_init=current),
        brainpy.state.LIF((length, 8), **lif),
        brainstate.nn.AvgPool1d(2, 2, channel_axis=-1, in_size=(length, 8)),
        Conv1d((length // 2, 8), 8, 3, w_init=current),
        brainpy.state.LIFRef((length // 2, 8), tau_ref=0.5 * u.ms, **lif),
        brainstate.nn.Flatten(in_size=(length // 2, 8)),
        brainstate.nn.Linear(length // 2 * 8, 3))


def _outputs(net, xs, whole):
    """The network's outputs over ``xs`` from fresh states, layer by layer (``whole``) or one
    step of the whole network at a time, as a brainstate simulation loop runs it."""
    brainstate.nn.init_all_states(net, xs.shape[1])

    def step(i, x):
        with brainstate.environ.context(i=i, t=i * DT):
            return net(x)

    with brainstate.environ.context(dt=DT):
        if whole:
            return net.multi_step(xs)
        return brainstate.transform.for_loop(step, jnp.arange(xs.shape[0]), xs)


@pytest.mark.parametrize('fold', FOLDS)
def test_layer_by_layer_equals_a_step_by_step_run_with_gradients(fold):
    brainstate.random.seed(1)
    net = _network()
    xs = random_input((12, 4, 40, 2), seed=6) * 2.0
    params = net.states(brainstate.ParamState)
    per_step = _outputs(net, xs, whole=False)
    assert float(jnp.abs(per_step).max()) > 0
    np.testing.assert_allclose(_outputs(net, xs, whole=True), per_step, rtol=1e-5, atol=1e-5)

    def grads(whole):
        loss = lambda: jnp.sum(_outputs(net, xs, whole) ** 2)
        return brainstate.transform.grad(loss, params)()

    g_step, g_whole = grads(False), grads(True)
    flat_step, flat_whole = jax.tree.leaves(g_step), jax.tree.leaves(g_whole)
    assert any(float(jnp.abs(u.get_mantissa(g)).max()) > 0 for g in flat_step)
    for a, b in zip(flat_whole, flat_step):
        np.testing.assert_allclose(u.get_mantissa(a), u.get_mantissa(b), rtol=2e-4, atol=1e-5)


@pytest.mark.parametrize('whole', [False, True], ids=['per_step', 'layer_by_layer'])
def test_training_with_braintools_optim_lowers_the_loss(whole):
    brainstate.random.seed(2)
    net = _network()
    xs = random_input((8, 6, 40, 2), seed=7) * 2.0
    ys = jnp.asarray([0, 1, 2, 0, 1, 2])
    params = net.states(brainstate.ParamState)
    optimizer = braintools.optim.Adam(lr=1e-2)
    optimizer.register_trainable_weights(params)

    def loss():
        logits = _outputs(net, xs, whole).mean(axis=0)
        return braintools.metric.softmax_cross_entropy_with_integer_labels(logits, ys).mean()

    @brainstate.transform.jit
    def step():
        grads, value = brainstate.transform.grad(loss, params, return_value=True)()
        optimizer.update(grads)
        return value

    losses = [float(step()) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]


# ---------------------------------------------------------------- checkpoints

def test_checkpoint_into_a_freshly_built_network(tmp_path):
    brainstate.random.seed(4)
    net = _network()
    xs = random_input((6, 2, 40, 2), seed=8) * 2.0
    before = _outputs(net, xs, whole=True)
    path = str(tmp_path / 'net.msgpack')
    braintools.file.msgpack_save(path, net.states(brainstate.ParamState))
    brainstate.random.seed(5)
    fresh = _network()
    assert float(jnp.abs(_outputs(fresh, xs, whole=True) - before).max()) > 0
    braintools.file.msgpack_load(path, target=fresh.states(brainstate.ParamState))
    np.testing.assert_array_equal(_outputs(fresh, xs, whole=True), before)
