"""The brainpy.state Conv1d (layers/state/conv.py): parity with brainstate.nn.Conv1d, spikes,
units, whole sequences, spikes from brainpy.state neurons, brainstate's transforms, PyTorch."""
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

brainstate = pytest.importorskip('brainstate')   # the brainpy.state stack (BrainPy 2.8) only
import brainpy.math as bm  # noqa: E402
import brainpy.state  # noqa: E402
import brainunit as u  # noqa: E402
from helpers.cases import (  # noqa: E402
    EVENT_IDS,
    EVENT_RUNTIMES,
    event_runtime,
    pairwise,
    random_input,
    reference_conv1d,
)

import bp_conv_ext  # noqa: E402
from bp_conv_ext.core.args import BACKENDS  # noqa: E402
from bp_conv_ext.core.sequence import FOLDS  # noqa: E402
from bp_conv_ext.state import Conv1d  # noqa: E402

DT = 0.1 * u.ms


def _twins(in_size, out_channels, kernel_size, **options):
    """brainstate's layer and ours, with the same parameters."""
    ref = brainstate.nn.Conv1d(in_size, out_channels, kernel_size, **options)
    ours = Conv1d(in_size, out_channels, kernel_size, **options)
    ours.weight.value = dict(ref.weight.value)
    return ref, ours


# ---------------------------------------------------------------- the same layer as brainstate's

def test_constructor_is_brainstates_with_padding_mode_last():
    theirs = list(inspect.signature(brainstate.nn.Conv1d.__init__).parameters.values())
    ours = list(inspect.signature(Conv1d.__init__).parameters.values())
    assert [p.name for p in ours] == [p.name for p in theirs] + ['padding_mode']
    for mine, other in zip(ours, theirs):
        assert mine.default is other.default or mine.default == other.default, mine.name


def test_same_seed_same_initial_weights_as_brainstate():
    brainstate.random.seed(3)
    ref = brainstate.nn.Conv1d((30, 4), 6, 5, b_init=brainstate.nn.init.Normal())
    brainstate.random.seed(3)
    ours = Conv1d((30, 4), 6, 5, b_init=brainstate.nn.init.Normal())
    for key in ('weight', 'bias'):
        np.testing.assert_array_equal(ours.weight.value[key], ref.weight.value[key])
    assert isinstance(ours.weight, brainstate.ParamState)
    assert (ours.in_size, ours.out_size, ours.kernel_shape) == \
        (ref.in_size, ref.out_size, ref.kernel_shape)


_PADDINGS = ['SAME', 'VALID', 2, (1, 3), [(2, 0)]]
# A pairwise grid (the full product under `make test-full`), as test_parity's: each option
# enters the convolution at its own place, and the layout only transposes the input and output.
_GRID = [(dict(stride=s, padding=p, lhs_dilation=ld, rhs_dilation=rd, groups=g), first)
         for s, p, ld, rd, g, first in pairwise(
             (1, 2), _PADDINGS, (1, 2), (1, 2), (1, 2), (False, True),
             keep=lambda c: not (isinstance(c[1], str) and c[2] > 1))]   # brainstate's layer
                                                                      # fails on those


@pytest.mark.parametrize('options,channel_first', _GRID,
                         ids=['-'.join(f'{k}={v}' for k, v in o.items())
                              + ('-channel_first' if first else '-channels_last')
                              for o, first in _GRID])
def test_parity_with_brainstate_conv1d(options, channel_first):
    length, cin, cout, k = 23, 4, 6, 3
    in_size = (cin, length) if channel_first else (length, cin)
    mask = (np.random.default_rng(5).random((k, cin // options['groups'], cout)) < 0.7)
    ref, ours = _twins(in_size, cout, k, b_init=brainstate.nn.init.Normal(), w_mask=mask,
                       channel_first=channel_first, **options)
    assert ours.out_size == ref.out_size
    x = random_input((3,) + in_size)
    np.testing.assert_allclose(ours(x), ref(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours(x[0]), ref(x[0]), rtol=1e-5, atol=1e-5)   # unbatched


@pytest.mark.parametrize('channel_first', [False, True], ids=['channels_last', 'channel_first'])
def test_gradients_equal_brainstates(channel_first):
    in_size = (5, 40) if channel_first else (40, 5)
    ref, ours = _twins(in_size, 7, 4, stride=2, rhs_dilation=2,
                       b_init=brainstate.nn.init.Normal(), channel_first=channel_first)
    x = random_input((3,) + in_size)

    def grads(layer):
        loss = lambda x: jnp.sum(jnp.sin(layer(x)))
        return brainstate.transform.grad(loss, layer.states(brainstate.ParamState),
                                         argnums=0, return_value=False)(x)

    (g_ours, gx_ours), (g_ref, gx_ref) = grads(ours), grads(ref)
    np.testing.assert_allclose(gx_ours, gx_ref, rtol=1e-5, atol=1e-5)
    for key in g_ref:
        for name in ('weight', 'bias'):
            np.testing.assert_allclose(g_ours[key][name], g_ref[key][name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('padding,lhs_dilation,padding_mode',
                         [('CAUSAL', 1, 'zeros'), ('same', 3, 'zeros'), (2, 1, 'reflect'),
                          ('SAME', 1, 'circular')])
def test_what_brainstate_lacks_equals_the_classic_layer(padding, lhs_dilation, padding_mode):
    w = np.asarray(random_input((3, 4, 5), seed=1))
    ours = Conv1d((17, 4), 5, 3, padding=padding, lhs_dilation=lhs_dilation,
                  padding_mode=padding_mode, w_init=w)
    classic = bp_conv_ext.Conv1d(4, 5, 3, padding=padding, lhs_dilation=lhs_dilation,
                                 padding_mode=padding_mode, w_initializer=w,
                                 b_initializer=None, mode=bm.BatchingMode())
    x = random_input((2, 17, 4), seed=2)
    np.testing.assert_allclose(ours(x), classic(x), rtol=1e-6, atol=1e-6)
    assert ours(x).shape[1:] == ours.out_size
    if padding_mode == 'zeros':
        ref = reference_conv1d(np.asarray(x), w, padding=padding, lhs_dilation=lhs_dilation)
        np.testing.assert_allclose(ours(x), ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- spikes, backends, units

@pytest.mark.parametrize('backend,runtime',
                         [(b, None) for b in BACKENDS] + [('event', r) for r in EVENT_RUNTIMES[1:]],
                         ids=list(BACKENDS) + EVENT_IDS[1:])
def test_bool_spikes_on_every_backend_equal_brainstate_on_floats(backend, runtime):
    ref, ours = _twins((120, 8), 16, 5, stride=2, groups=2, b_init=brainstate.nn.init.Normal())
    ours.backend = backend
    spikes = random_input((4, 120, 8), density=0.02)
    with event_runtime(runtime):
        y = ours(spikes)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, ref(spikes.astype(jnp.float32)), rtol=1e-5, atol=1e-5)


def test_which_backend_is_the_pure_functions():
    ours = Conv1d((200, 16), 16, 3, channel_first=False)
    spikes = random_input((16, 200, 16), density=0.01)
    w = ours.weight.value['weight']
    for platform in ('cpu', 'cuda'):
        assert ours.which_backend(spikes, platform) == bp_conv_ext.which_backend(
            spikes, w, platform=platform)
    ours.backend = 'event'
    assert ours.which_backend(spikes, 'cuda') == 'event'


def test_units_multiply_and_the_bias_takes_the_output_unit():
    conv = Conv1d((10, 2), 3, 3, w_init=brainstate.nn.init.XavierNormal(unit=u.mS),
                  b_init=brainstate.nn.init.ZeroInit(unit=u.uA))
    x = random_input((2, 10, 2))
    y = conv(x * u.mV)
    assert u.get_unit(y) == u.uA
    plain = Conv1d((10, 2), 3, 3, w_init=u.get_mantissa(conv.weight.value['weight']))
    np.testing.assert_allclose(u.get_mantissa(y.to(u.uA)), plain(x), rtol=1e-5, atol=1e-6)
    xs = random_input((4, 2, 10, 2)) * u.mV
    for fold in FOLDS:       # whole sequences keep the unit too
        ys = conv.multi_step(xs, fold=fold)
        assert u.get_unit(ys) == u.uA
        np.testing.assert_allclose(u.get_mantissa(ys.to(u.uA)),
                                   np.stack([u.get_mantissa(conv(x).to(u.uA)) for x in xs]),
                                   rtol=1e-6, atol=1e-6)
    dimensionless = Conv1d((10, 2), 3, 3, w_init=0.5, b_init=0.1)
    assert not isinstance(dimensionless(x), u.Quantity)
    with pytest.raises(u.UnitMismatchError):
        Conv1d((10, 2), 3, 3, w_init=0.5 * u.mA, b_init=0.1 * u.mV)(x)


@pytest.mark.parametrize('unit', [None, u.mA], ids=['no_unit', 'mA'])
def test_a_lif_takes_the_output_of_a_kernel_in_a_current_unit(unit):
    # docs/state.md's recipe: brainpy.state neurons add R * I (ohm times the input) to a
    # membrane potential in mV, so the kernel needs a current unit; without one (the default
    # w_init, as brainstate.nn.Conv1d's) the neuron's update raises UnitMismatchError.
    conv = Conv1d((20, 2), 4, 3, w_init=brainstate.nn.init.XavierNormal(unit=unit))
    lif = brainpy.state.LIF((20, 4), tau=1.0 * u.ms)
    brainstate.nn.init_all_states(lif, 3)
    spikes = random_input((3, 20, 2), density=0.3)
    with brainstate.environ.context(dt=DT):
        if unit is None:
            assert not isinstance(conv(spikes), u.Quantity)
            with pytest.raises(u.UnitMismatchError):
                lif(conv(spikes))
        else:
            assert u.get_unit(conv(spikes)) == u.mA
            assert lif(conv(spikes)).shape == (3, 20, 4)


class _TenLinesNet(brainstate.nn.Module):
    """The network of docs/state.md ("Ten lines"), with the input spikes returned as well."""

    def __init__(self, w_init):
        super().__init__()
        self.lif_in = brainpy.state.LIF((100, 2), tau=1. * u.ms)
        self.conv = Conv1d((100, 2), 16, 5, padding='CAUSAL', w_init=w_init)
        self.lif_out = brainpy.state.LIF((100, 16), tau=1. * u.ms)

    def update(self, current):
        spikes = self.lif_in(current)
        return spikes, self.lif_out(self.conv(spikes))


def test_the_docs_network_spikes_with_a_spike_drive_kernel_only():
    mean, std = bp_conv_ext.spike_drive(5, 2, rate=0.1, current=1.)
    rates = {}
    for name, init in (('drive', brainstate.nn.init.Normal(mean, std, unit=u.mA)),
                       ('default', brainstate.nn.init.XavierNormal(unit=u.mA))):
        net = brainstate.nn.init_all_states(_TenLinesNet(init))
        with brainstate.environ.context(dt=DT):
            spikes_in, spikes_out = brainstate.transform.for_loop(
                net, jnp.full((50, 100, 2), 2.0) * u.mA)
        rates[name] = (float(spikes_in.mean()), float(spikes_out.mean()),
                       float(spikes_out.any(axis=0).mean()))
    rate_in, rate_out, fired = rates['drive']
    assert 0.05 < rate_in < 0.2                      # the rate the kernel was drawn for
    assert 0.5 < fired <= 1 and 0.2 * rate_in < rate_out < 5 * rate_in
    assert rates['default'][1] == 0                  # the zero-mean kernel drives nothing


# ---------------------------------------------------------------- whole sequences and neurons

@pytest.mark.parametrize('fold', FOLDS)
@pytest.mark.parametrize('channel_first', [False, True], ids=['channels_last', 'channel_first'])
def test_multi_step_equals_stacked_steps(channel_first, fold):
    in_size = (3, 30) if channel_first else (30, 3)
    conv = Conv1d(in_size, 4, 5, stride=2, channel_first=channel_first,
                  b_init=brainstate.nn.init.Normal())
    xs = random_input((6, 2) + in_size, density=0.1)
    stacked = jnp.stack([conv(x) for x in xs])
    np.testing.assert_allclose(conv.multi_step(xs, fold=fold), stacked, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(conv.multi_step(xs[:, 0]), stacked[:, 0], rtol=1e-6, atol=1e-6)


def test_spikes_from_brainpy_state_lif_reach_the_convolution():
    brainstate.random.seed(0)
    lif = brainpy.state.LIF((50, 2), tau=1.0 * u.ms, V_th=0.2 * u.mV)
    conv = Conv1d((50, 2), 4, 3)
    ref = brainstate.nn.Conv1d((50, 2), 4, 3)
    ref.weight.value = dict(conv.weight.value)
    brainstate.nn.init_all_states(lif, 3)
    currents = random_input((20, 3, 50, 2), seed=4) * u.mA

    def step(current):
        spikes = lif(current)
        return spikes, conv(spikes), ref(spikes)

    with brainstate.environ.context(dt=DT):
        spikes, ours, theirs = brainstate.transform.for_loop(step, currents)
    assert 0.01 < float(jnp.mean(spikes)) < 0.5             # the neurons fire
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- brainstate's transforms

def test_jit_vmap_and_grad():
    conv = Conv1d((30, 3), 4, 3, b_init=brainstate.nn.init.Normal())
    x = random_input((5, 30, 3))
    np.testing.assert_allclose(brainstate.transform.jit(conv)(x), conv(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(brainstate.transform.vmap(conv)(x), conv(x), rtol=1e-6, atol=1e-6)
    params = conv.states(brainstate.ParamState)

    def loss(scale):
        return jnp.sum(brainstate.transform.vmap(conv)(x * scale) ** 2)

    g_vmapped, _ = brainstate.transform.grad(loss, params, argnums=0)(1.0)
    g_plain, _ = brainstate.transform.grad(lambda s: jnp.sum(conv(x * s) ** 2), params,
                                           argnums=0)(1.0)
    for a, b in zip(jax.tree.leaves(g_vmapped), jax.tree.leaves(g_plain)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_event_path_gradient_inside_a_scan_equals_the_dense_one():
    conv = Conv1d((100, 8), 8, 5)
    xs = random_input((10, 4, 100, 8), density=0.02)
    params = conv.states(brainstate.ParamState)

    def grads(backend):
        conv.backend = backend

        def loss():
            def step(v, x):
                v = 0.9 * v + conv(x)
                return v, jnp.tanh(v)
            return jnp.sum(brainstate.transform.scan(step, jnp.zeros((4, 100, 8)), xs)[1] ** 2)
        return brainstate.transform.grad(loss, params)()

    dense, event = grads('dense'), grads('event')
    for a, b in zip(jax.tree.leaves(event), jax.tree.leaves(dense)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- PyTorch

@pytest.mark.parametrize('channel_first', [False, True], ids=['channels_last', 'channel_first'])
@pytest.mark.parametrize('options', [dict(), dict(stride=2, padding=1, dilation=2, groups=2),
                                     dict(padding='same', padding_mode='circular', bias=False)],
                         ids=['default', 'stride-dilation-groups', 'same-circular-nobias'])
def test_from_torch_and_back(options, channel_first):
    torch = pytest.importorskip('torch')
    torch.manual_seed(0)
    module = torch.nn.Conv1d(4, 6, 3, **options)
    layer = bp_conv_ext.state.from_torch(module, 19, channel_first=channel_first)
    x = random_input((2, 19, 4))
    with torch.no_grad():
        expected = module(torch.from_numpy(np.array(x)).permute(0, 2, 1)).permute(0, 2, 1)
    y = layer(jnp.swapaxes(x, 1, 2)) if channel_first else layer(x)
    np.testing.assert_allclose(jnp.swapaxes(y, 1, 2) if channel_first else y,
                               expected.numpy(), rtol=1e-5, atol=1e-5)
    back = layer.to_torch()
    assert repr(back) == repr(module)
    for key, value in module.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[key].numpy(), value.numpy())
    torch.manual_seed(1)       # other weights, then the first module's loaded
    fresh = bp_conv_ext.state.from_torch(torch.nn.Conv1d(4, 6, 3, **options), 19,
                                         channel_first=channel_first)
    inputs = jnp.swapaxes(x, 1, 2) if channel_first else x
    assert not np.array_equal(fresh(inputs), layer(inputs))
    fresh.load_torch_state_dict(module.state_dict())
    np.testing.assert_array_equal(fresh(inputs), layer(inputs))


def test_to_torch_refuses_what_torch_cannot_hold():
    pytest.importorskip('torch')
    with pytest.raises(ValueError, match=r"has parameters in units; torch.nn.Conv1d holds plain"):
        Conv1d((10, 2), 3, 3, w_init=brainstate.nn.init.XavierNormal(unit=u.mA)).to_torch()
    with pytest.raises(ValueError, match=r"has a mask; torch.nn.Conv1d has none"):
        Conv1d((10, 2), 3, 3, w_mask=np.ones((3, 2, 3))).torch_state_dict()
    with pytest.raises(ValueError, match=r"pads the two sides differently"):
        Conv1d((10, 2), 3, 3, padding='CAUSAL').to_torch()
