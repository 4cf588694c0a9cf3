"""Checks on several devices, run by ``tests/event/test_sharding.py`` in a fresh process with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (``pytest`` on this file), so that the
rest of the suite keeps one device.

Every check compares a computation on a batch split over four devices with the same
computation on one device, and the compiled programs' collectives with what data parallelism
needs: the all-reduce of the gradients, and nothing that gathers activations.
"""
import re

import brainpy as bp
import brainpy.math as bm
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bp_conv_ext import Conv1d, LayerByLayer, LayerByLayerTrainer, conv1d
from bp_conv_ext.core.args import BACKENDS
from helpers.cases import event_runtime

#: ``jax.shard_map`` and its type check (``check_vma``); JAX 0.4 has them under
#: ``jax.experimental.shard_map`` as ``check_rep``.
if hasattr(jax, 'shard_map'):
    shard_map, CHECK = jax.shard_map, 'check_vma'
else:
    from jax.experimental.shard_map import shard_map
    CHECK = 'check_rep'

TOL = dict(rtol=1e-5, atol=1e-5)
T, B, L, C = 6, 8, 40, 4
BACKENDS_SHARDED = ['dense', 'event']


@pytest.fixture(scope='module')
def mesh():
    if jax.device_count() < 4:
        pytest.fail("run with XLA_FLAGS=--xla_force_host_platform_device_count=4")
    return Mesh(np.array(jax.devices()[:4]), ('data',))


def split(mesh, *arrays, spec=P('data')):  # noqa: B008 (a PartitionSpec is immutable)
    return [jax.device_put(a, NamedSharding(mesh, spec)) for a in arrays]


def collectives(compiled_text):
    return re.findall(r'\b(all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)'
                      r'(?:-start)?\(', compiled_text)


def _data(seed=0, float_input=False):
    rng = np.random.default_rng(seed)
    x = rng.random((B, L, C)) < 0.1
    x = (jnp.asarray(x * rng.standard_normal(x.shape), jnp.float32) if float_input
         else jnp.asarray(x))
    w = jnp.asarray(rng.standard_normal((3, C, 8)), jnp.float32)
    cot = jnp.asarray(rng.standard_normal((B, L, 8)), jnp.float32)
    return x, w, cot


@pytest.mark.parametrize('backend', BACKENDS)
def test_conv1d_under_jit_with_a_split_batch_equals_one_device(mesh, backend):
    x, w, cot = _data(float_input=True)
    loss = lambda x, w, c: jnp.sum(conv1d(x, w, backend=backend) * c)
    f = jax.jit(lambda x: conv1d(x, w, backend=backend))
    g = jax.jit(jax.grad(loss, (0, 1)))
    xs, cs = split(mesh, x, cot)
    y = f(xs)
    np.testing.assert_allclose(np.asarray(y), np.asarray(f(x)), **TOL)
    assert y.sharding.spec[0] == 'data'          # the output stays split, not replicated
    for ours, one in zip(g(xs, w, cs), g(x, w, cot)):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(one), **TOL)


@pytest.mark.parametrize('backend', BACKENDS_SHARDED)
@pytest.mark.parametrize('spec', [P(None, 'data'), P(None, None, 'data')],
                         ids=['length', 'channels'])
def test_conv1d_with_other_dimensions_split_equals_one_device(mesh, backend, spec):
    x, w, cot = _data()
    g = jax.jit(jax.grad(lambda w, x, c: jnp.sum(conv1d(x, w, backend=backend) * c)))
    xs, cs = split(mesh, x, cot, spec=spec)
    np.testing.assert_allclose(np.asarray(g(w, xs, cs)), np.asarray(g(w, x, cot)), **TOL)


@pytest.mark.parametrize('check_vma', [True, False])
@pytest.mark.parametrize('backend', BACKENDS)
def test_kernel_gradient_under_shard_map_equals_one_device(mesh, backend, check_vma):
    x, w, cot = _data()

    def local_grad(w, x, c):
        g = jax.grad(lambda w: jnp.sum(conv1d(x, w, backend=backend) * c))(w)
        # With check_vma, JAX sums the gradient of the replicated kernel over the shards
        # itself; without it the sum is written out.
        return g if check_vma else jax.lax.psum(g, 'data')

    f = jax.jit(shard_map(local_grad, mesh=mesh, in_specs=(P(), P('data'), P('data')),
                          out_specs=P(), **{CHECK: check_vma}))
    if check_vma and CHECK == 'check_rep':
        # JAX 0.4's replication check has no rule for custom derivatives: it says so.
        with pytest.raises(NotImplementedError, match='check_rep=False'):
            f(w, x, cot)
        return
    one = jax.grad(lambda w: jnp.sum(conv1d(x, w, backend=backend) * cot))(w)
    np.testing.assert_allclose(np.asarray(f(w, x, cot)), np.asarray(one), **TOL)


@pytest.mark.parametrize('backend', BACKENDS)
def test_layer_and_multi_step_under_jit_equal_one_device(mesh, backend):
    conv = Conv1d(C, 8, 3, mode=bm.TrainingMode())
    conv.backend = backend
    xs = jnp.asarray(np.random.default_rng(1).random((T, B, L, C)) < 0.1)
    step = jax.jit(lambda x: conv(x))
    seq = {fold: jax.jit(lambda xs, fold=fold: conv.multi_step(xs, fold=fold))
           for fold in ('time', 'batch')}
    x_split, = split(mesh, xs[0])
    xs_split, = split(mesh, xs, spec=P(None, 'data'))
    np.testing.assert_allclose(np.asarray(step(x_split)), np.asarray(step(xs[0])), **TOL)
    one = np.asarray(seq['time'](xs))
    for fold in ('time', 'batch'):        # both right; batch first also stays split
        np.testing.assert_allclose(np.asarray(seq[fold](xs_split)), one, **TOL)
    assert seq['batch'](xs_split).sharding.spec[1] == 'data'


def _network(backend):
    bm.random.seed(0)
    mode = bm.TrainingMode()
    conv = Conv1d(C, 8, 3, mode=mode)
    conv.backend = backend
    return LayerByLayer(conv, bp.dyn.Lif((L, 8), keep_size=True, mode=mode,
                                         spk_fun=bm.surrogate.arctan),
                        bp.dnn.Flatten(mode=mode), bp.dnn.Dense(L * 8, 2, mode=mode), mode=mode)


def _batches():
    rng = np.random.default_rng(2)
    return jnp.asarray(rng.random((B, T, L, C)) < 0.1), jnp.asarray(rng.integers(0, 2, B))


def _loss(predictions, targets):
    return bp.losses.cross_entropy_loss(predictions.mean(1), targets)


def _trainer(kind, backend):
    model = _network(backend)
    if kind == 'layer_by_layer':
        return model, LayerByLayerTrainer(model, _loss, bp.optim.SGD(lr=0.5))
    return model, bp.BPTT(model, loss_fun=_loss, optimizer=bp.optim.SGD(lr=0.5),
                          progress_bar=False)


def _train(kind, trainer, xs, ys, epochs=3):
    if kind == 'layer_by_layer':
        return [trainer.step(xs, ys) for _ in range(epochs)]
    trainer.fit([(xs, ys)], num_epoch=epochs)
    return list(np.asarray(trainer.get_hist_metric('fit')))


def _weights(model):
    return [np.asarray(v.value) for v in model.train_vars().unique().values()]


@pytest.mark.parametrize('kind', ['layer_by_layer', 'bptt'])
@pytest.mark.parametrize('backend', BACKENDS_SHARDED)
def test_training_on_a_split_batch_equals_one_device(mesh, backend, kind):
    xs, ys = _batches()
    one_model, one = _trainer(kind, backend)
    losses = _train(kind, one, xs, ys)
    model, trainer = _trainer(kind, backend)
    split_losses = _train(kind, trainer, *split(mesh, xs, ys))
    np.testing.assert_allclose(split_losses, losses, rtol=1e-5)
    assert losses[-1] < losses[0]
    for ours, theirs in zip(_weights(model), _weights(one_model)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def _compiled_step(kind, trainer, xs, ys):
    """The compiled program of one training step (BrainPy 2.7+: its bm.jit can lower)."""
    if kind == 'layer_by_layer':
        try:
            return trainer.lower(xs, ys).compile().as_text()
        except NotImplementedError as err:
            pytest.skip(str(err))
    if not hasattr(trainer._jit_step_func_fit, 'lower'):
        pytest.skip(f"BrainPy {bp.__version__}'s bm.jit cannot lower without running")
    calls = []
    step = trainer._jit_step_func_fit
    trainer._jit_step_func_fit = lambda *args: calls.append(args) or step(*args)
    trainer.fit([(xs, ys)], num_epoch=1)
    trainer._jit_step_func_fit = step
    return step.lower(*calls[0]).compile().as_text()


@pytest.mark.parametrize('kind', ['layer_by_layer', 'bptt'])
@pytest.mark.parametrize('backend', BACKENDS_SHARDED)
def test_a_training_step_communicates_only_the_gradients(mesh, backend, kind):
    xs, ys = _batches()
    _, trainer = _trainer(kind, backend)
    found = collectives(_compiled_step(kind, trainer, *split(mesh, xs, ys)))
    assert found and set(found) == {'all-reduce'}, found
    _, trainer = _trainer(kind, backend)
    one = [jax.device_put(a, jax.devices()[0]) for a in (xs, ys)]
    assert collectives(_compiled_step(kind, trainer, *one)) == []


def test_the_fused_step_trains_on_a_split_batch_communicating_only_the_gradients(mesh,
                                                                               monkeypatch):
    """The layer-by-layer trainer runs Conv1d -> Lif (backend 'auto') as the fused step, with
    the batch first for a split batch: the same losses and weights as on one device, and a
    compiled step whose only collective is the gradients' all-reduce."""
    from bp_conv_ext.ops import fused
    folds, conv_lif = [], fused.conv_lif
    monkeypatch.setattr(fused, 'conv_lif',
                        lambda *args, **kw: folds.append(kw['fold']) or conv_lif(*args, **kw))
    xs, ys = _batches()
    one_model, one = _trainer('layer_by_layer', 'auto')
    losses = _train('layer_by_layer', one, xs, ys)
    model, trainer = _trainer('layer_by_layer', 'auto')
    split_data = split(mesh, xs, ys)
    np.testing.assert_allclose(_train('layer_by_layer', trainer, *split_data), losses, rtol=1e-5)
    for ours, theirs in zip(_weights(model), _weights(one_model)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    found = collectives(_compiled_step('layer_by_layer', trainer, *split_data))
    assert found and set(found) == {'all-reduce'}, found
    assert set(folds) == {'time', 'batch'}


# ------------------------------------------------ the brainpy.state layer (BrainPy 2.8 only)

def _brainstate():
    return pytest.importorskip('brainstate')


def _state_network(backend):
    brainstate = _brainstate()
    import brainpy.state
    import brainunit as u

    from bp_conv_ext.state import Conv1d as StateConv1d
    from bp_conv_ext.state import LayerByLayer as StateLayerByLayer
    brainstate.random.seed(0)
    conv = StateConv1d((L, C), 8, 3, w_init=brainstate.nn.init.XavierNormal(scale=3.0, unit=u.mA))
    conv.backend = backend
    return StateLayerByLayer(conv, brainpy.state.LIF((L, 8), tau=0.5 * u.ms, V_th=0.2 * u.mV),
                             brainstate.nn.Flatten(in_size=(L, 8)), brainstate.nn.Linear(L * 8, 2))


def _state_training(backend, whole, xs, ys, steps=3):
    """Losses and final weights of ``steps`` braintools Adam steps (brainstate's jit and grad);
    ``xs`` is [T, B, L, C] (batch split or not), run layer by layer or step by step."""
    brainstate = _brainstate()
    import braintools
    import brainunit as u
    net = _state_network(backend)
    params = net.states(brainstate.ParamState)
    optimizer = braintools.optim.Adam(lr=1e-2)
    optimizer.register_trainable_weights(params)

    def loss(xs, ys):
        brainstate.nn.init_all_states(net, xs.shape[1])
        with brainstate.environ.context(dt=0.1 * u.ms):
            out = net.multi_step(xs, fold='batch') if whole else \
                brainstate.transform.for_loop(net, xs)
        return braintools.metric.softmax_cross_entropy_with_integer_labels(out.mean(0), ys).mean()

    @brainstate.transform.jit
    def step(xs, ys):
        grads, value = brainstate.transform.grad(loss, params, return_value=True)(xs, ys)
        optimizer.update(grads)
        return value

    losses = [float(step(xs, ys)) for _ in range(steps)]
    return losses, [np.asarray(u.get_mantissa(v)) for v in jax.tree.leaves(params.to_dict_values())]


@pytest.mark.parametrize('backend', BACKENDS_SHARDED)
def test_state_layer_on_a_split_batch_equals_one_device(mesh, backend):
    brainstate = _brainstate()
    from bp_conv_ext.state import Conv1d as StateConv1d
    conv = StateConv1d((L, C), 8, 3, b_init=brainstate.nn.init.Normal())
    conv.backend = backend
    x, _, cot = _data()
    params = conv.states(brainstate.ParamState)
    grad = brainstate.transform.jit(
        lambda x, c: brainstate.transform.grad(lambda: jnp.sum(conv(x) * c), params)())
    xs, cs = split(mesh, x, cot)
    np.testing.assert_allclose(np.asarray(brainstate.transform.jit(conv)(xs)),
                               np.asarray(conv(x)), **TOL)
    for ours, one in zip(jax.tree.leaves(grad(xs, cs)), jax.tree.leaves(grad(x, cot))):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(one), **TOL)


@pytest.mark.parametrize('whole', [True, False], ids=['layer_by_layer', 'per_step'])
@pytest.mark.parametrize('backend', BACKENDS_SHARDED)
def test_state_training_on_a_split_batch_equals_one_device(mesh, backend, whole):
    xs, ys = _batches()
    xs = jnp.swapaxes(xs, 0, 1)                        # [T, B, L, C]
    losses, weights = _state_training(backend, whole, xs, ys)
    xs_split, = split(mesh, xs, spec=P(None, 'data'))
    ys_split, = split(mesh, ys)
    split_losses, split_weights = _state_training(backend, whole, xs_split, ys_split)
    np.testing.assert_allclose(split_losses, losses, rtol=1e-5)
    assert losses[-1] < losses[0]
    for ours, theirs in zip(split_weights, weights):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('runtime', ['jax', 'triton'])
def test_accelerator_kernels_on_a_split_batch_equal_one_device(mesh, runtime):
    # The GPUs' kernels (forced on the CPU, Pallas's interpreted) under jit with a split batch:
    # the pure-JAX ones split by XLA, the Pallas ones by the sharding rule of the event primitives.
    x, w, cot = _data(float_input=True)
    loss = lambda x, w, c: jnp.sum(conv1d(x, w, backend='event') * c)
    with event_runtime(runtime):
        f = jax.jit(lambda x: conv1d(x, w, backend='event'))
        g = jax.jit(jax.grad(loss, (0, 1)))
        xs, cs = split(mesh, x, cot)
        y = f(xs)
        np.testing.assert_allclose(np.asarray(y), np.asarray(f(x)), **TOL)
        assert y.sharding.spec[0] == 'data'
        for ours, one in zip(g(xs, w, cs), g(x, w, cot)):
            np.testing.assert_allclose(np.asarray(ours), np.asarray(one), **TOL)


# ------------------------------------------------ the fused Conv1d -> LIF step (ops.fused)

def _fused_case(batch):
    rng = np.random.default_rng(4)
    xs = jnp.asarray(rng.random((3, batch, 8, 2)) < 0.3)
    w = jnp.asarray(rng.standard_normal((3, 2, 16)), jnp.float32)
    b = jnp.asarray(rng.standard_normal(16) * 0.1, jnp.float32)
    v0 = jnp.asarray(rng.standard_normal((batch, 8, 16)) * 0.5, jnp.float32)
    return xs, w, b, v0


def _fused_neurons():
    from bp_conv_ext.ops.fused import LIF
    return LIF.make(tau=2., dt=1., v_th=1., v_reset=-0.2, v_rest=0.1, r=1.5)


@pytest.mark.parametrize('batch', [64, 32], ids=['kernel-on-each-part', 'part-too-small'])
def test_the_fused_kernel_on_a_split_batch_runs_on_each_device(mesh, batch):
    """The fused kernel (Triton's, interpreted) under jit with the batch split: each device runs
    it on its rows (with 8 rows, too few for its tiles, the 'jax' kernels on them),
    nothing is gathered, the outputs stay split, the numbers are one device's."""
    from bp_conv_ext.ops.fused import conv_lif
    xs, w, b, v0 = _fused_case(batch)
    neurons = _fused_neurons()
    f = jax.jit(lambda xs, w, v0: conv_lif(xs, w, b, v0, neurons, kernels='triton'))
    xs_split, = split(mesh, xs, spec=P(None, 'data'))
    v0_split, = split(mesh, v0)
    assert collectives(f.lower(xs_split, w, v0_split).compile().as_text()) == []
    (spikes, v), (one_spikes, one_v) = f(xs_split, w, v0_split), f(xs, w, v0)
    assert spikes.sharding.spec[1] == 'data' and v.sharding.spec[0] == 'data'
    assert 0.05 < float(jnp.mean(one_spikes)) < 0.95
    np.testing.assert_array_equal(np.asarray(spikes), np.asarray(one_spikes))
    np.testing.assert_allclose(np.asarray(v), np.asarray(one_v), **TOL)


@pytest.mark.parametrize('kernels', [None, 'triton'])
def test_a_training_step_of_the_fused_step_communicates_only_the_gradients(mesh, kernels):
    """A data-parallel training step through the fused step (surrogate spikes, the sequence
    folded batch first): the all-reduce of the kernel's gradient, no gathered activations,
    and one device's loss and gradients."""
    from bp_conv_ext.ops.fused import conv_lif
    xs, w, b, v0 = _fused_case(64)
    neurons = _fused_neurons()

    def loss(w, xs, v0):
        spikes, v = conv_lif(xs, w, b, v0, neurons, kernels=kernels,
                             spike_fn=bm.surrogate.arctan, fold='batch')
        return jnp.mean(spikes) + jnp.mean(jnp.sin(v))

    step = jax.jit(jax.value_and_grad(loss))
    xs_split, = split(mesh, xs, spec=P(None, 'data'))
    v0_split, = split(mesh, v0)
    found = collectives(step.lower(w, xs_split, v0_split).compile().as_text())
    assert found and set(found) == {'all-reduce'}, found
    (value, grad), (one_value, one_grad) = step(w, xs_split, v0_split), step(w, xs, v0)
    assert float(jnp.max(jnp.abs(one_grad))) > 0
    np.testing.assert_allclose(float(value), float(one_value), **TOL)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(one_grad), **TOL)


def test_the_fused_kernel_under_shard_map_equals_one_device(mesh):
    """The fused kernel (Triton's, interpreted) inside ``shard_map``: each device's spikes and
    state, and the kernel's gradient summed over the devices, are one device's."""
    from bp_conv_ext.ops.fused import conv_lif
    xs, w, b, v0 = _fused_case(64)
    neurons = _fused_neurons()
    check = CHECK == 'check_vma'         # JAX 0.4's check_rep has no rule for custom_jvp

    def run(w, xs, v0):
        return conv_lif(xs, w, b, v0, neurons, kernels='triton',
                        spike_fn=bm.surrogate.arctan)

    def loss(w, xs, v0):
        return jnp.mean(jnp.sin(run(w, xs, v0)[1]))

    def local(w, xs, v0):
        grad = jax.grad(loss)(w, xs, v0) / 4          # the mean over 4 parts of the batch
        return run(w, xs, v0), grad if check else jax.lax.psum(grad, 'data')

    f = jax.jit(shard_map(local, mesh=mesh, in_specs=(P(), P(None, 'data'), P('data')),
                          out_specs=((P(None, 'data'), P('data')), P()), **{CHECK: check}))
    (spikes, v), grad = f(w, xs, v0)
    (one_spikes, one_v), one_grad = run(w, xs, v0), jax.grad(loss)(w, xs, v0)
    np.testing.assert_array_equal(np.asarray(spikes), np.asarray(one_spikes))
    np.testing.assert_allclose(np.asarray(v), np.asarray(one_v), **TOL)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(one_grad), **TOL)
