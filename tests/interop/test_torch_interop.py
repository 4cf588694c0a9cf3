"""PyTorch interop: from_torch, to_torch, torch_state_dict and load_torch_state_dict."""

import brainpy as bp
import brainpy.math as bm
import numpy as np
import pytest
from helpers.cases import enable_x64, pairwise

from bp_conv_ext import Conv1d, from_torch

torch = pytest.importorskip('torch')

TOL = dict(rtol=1e-5, atol=1e-5)
# (stride, padding, dilation, groups, bias, padding_mode); 'same' needs stride 1 in torch.
# A pairwise grid (the full product under `make test-full`): each option is read from the
# module and written back by its own line of from_torch / to_torch, and the output check is
# test_parity's and test_padding_modes' (whose grids hold their pairs), so every pair suffices.
GRID = pairwise([1, 2, 3], [0, 2, 'same', 'valid'], [1, 2], [1, 2], [True, False],
                ['zeros', 'reflect', 'replicate', 'circular'],
                keep=lambda c: not (c[1] == 'same' and c[0] != 1))


def _torch_module(stride, padding, dilation, groups, bias, padding_mode, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Conv1d(4, 6, 3, stride=stride, padding=padding, dilation=dilation,
                           groups=groups, bias=bias, padding_mode=padding_mode)


def _torch_output(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x).permute(0, 2, 1)).permute(0, 2, 1).numpy()


@pytest.mark.parametrize('config', GRID, ids=lambda c: '-'.join(map(str, c)))
def test_from_torch_matches_and_round_trips_exactly(config):
    module = _torch_module(*config)
    x = np.random.default_rng(1).standard_normal((2, 13, 4)).astype(np.float32)
    layer = from_torch(module, mode=bm.BatchingMode())
    np.testing.assert_allclose(np.asarray(layer(x)), _torch_output(module, x), **TOL)
    back = layer.to_torch()
    assert repr(back) == repr(module)
    for key in ('stride', 'padding', 'dilation', 'groups', 'padding_mode', 'kernel_size'):
        assert getattr(back, key) == getattr(module, key), key
    assert back.state_dict().keys() == module.state_dict().keys()
    for key, value in module.state_dict().items():
        assert back.state_dict()[key].dtype == value.dtype
        assert torch.equal(back.state_dict()[key], value), key
    np.testing.assert_array_equal(_torch_output(back, x), _torch_output(module, x))


def test_non_batching_and_training_modes():
    module = _torch_module(1, 1, 1, 1, True, 'zeros')
    x = np.random.default_rng(2).standard_normal((9, 4)).astype(np.float32)
    single = from_torch(module, mode=bm.NonBatchingMode(), name='ported')
    assert single.name == 'ported' and isinstance(single.w, bm.Variable)
    np.testing.assert_allclose(np.asarray(single(x)), _torch_output(module, x[None])[0], **TOL)
    trained = from_torch(module, mode=bm.TrainingMode())
    assert isinstance(trained.w, bm.TrainVar) and isinstance(trained.b, bm.TrainVar)


def test_state_dicts_both_ways():
    layer = Conv1d(4, 6, 5, stride=2, padding=2, rhs_dilation=2, groups=2,
                   b_initializer=bp.init.Uniform(-1.0, 1.0), mode=bm.BatchingMode())
    state = layer.torch_state_dict()
    assert set(state) == {'weight', 'bias'}
    assert state['weight'].shape == (6, 2, 5) and state['bias'].shape == (6,)
    module = torch.nn.Conv1d(4, 6, 5, stride=2, padding=2, dilation=2, groups=2)
    module.load_state_dict({key: torch.from_numpy(value) for key, value in state.items()})
    x = np.random.default_rng(3).standard_normal((2, 16, 4)).astype(np.float32)
    np.testing.assert_allclose(_torch_output(module, x), np.asarray(layer(x)), **TOL)

    torch.manual_seed(5)
    fresh = torch.nn.Conv1d(4, 6, 5, stride=2, padding=2, dilation=2, groups=2)
    layer.load_torch_state_dict(fresh.state_dict())
    np.testing.assert_array_equal(layer.torch_state_dict()['weight'],
                                  fresh.weight.detach().numpy())
    np.testing.assert_allclose(np.asarray(layer(x)), _torch_output(fresh, x), **TOL)
    layer.load_torch_state_dict(state)              # NumPy arrays load as well
    np.testing.assert_array_equal(layer.torch_state_dict()['weight'], state['weight'])


def test_no_bias_both_ways():
    layer = Conv1d(4, 6, 3, b_initializer=None)
    assert set(layer.torch_state_dict()) == {'weight'}
    assert layer.to_torch().bias is None
    with pytest.raises(ValueError, match=r"has a 'bias' but .* was built without one"):
        layer.load_torch_state_dict({'weight': np.zeros((6, 4, 3)), 'bias': np.zeros(6)})


@pytest.mark.parametrize('options,message', [
    (dict(lhs_dilation=2), r"lhs_dilation=2 \(input dilation\) has no torch.nn.Conv1d equivalent"),
    (dict(padding='SAME', stride=2),
     r"padding='SAME' with stride=2 pads by an amount that depends"),
    (dict(padding='CAUSAL'), r"padding \(2, 0\) pads the two sides differently"),
    (dict(padding=(2, 1)), r"padding \(2, 1\) pads the two sides differently"),
    (dict(mask=np.ones((3, 4, 6))), r"has a mask; torch.nn.Conv1d has none"),
])
def test_what_torch_cannot_hold_is_a_value_error(options, message):
    with pytest.raises(ValueError, match=message):
        Conv1d(4, 6, 3, **options).to_torch()


@pytest.mark.parametrize('state,error,message', [
    ({'weight': np.zeros((6, 4, 2)), 'bias': np.zeros(6)}, ValueError,
     r"`state_dict\['weight'\]` has shape \(6, 4, 2\); .* needs \(6, 4, 3\) \(PyTorch layout\)"),
    ({'weight': np.zeros((6, 4, 3)), 'bias': np.zeros(5)}, ValueError,
     r"`state_dict\['bias'\]` has shape \(5,\); .* needs \(6,\)"),
    ({'weight': np.zeros((6, 4, 3))}, ValueError, r"`state_dict` lacks \['bias'\]"),
    ({'conv.weight': np.zeros((6, 4, 3))}, ValueError, r"unexpected keys \['conv.weight'\]"),
    ([np.zeros((6, 4, 3))], TypeError, r"`state_dict` must be a mapping"),
])
def test_bad_state_dicts(state, error, message):
    with pytest.raises(error, match=message):
        Conv1d(4, 6, 3).load_torch_state_dict(state)


def test_from_torch_takes_only_conv1d():
    with pytest.raises(TypeError, match=r"`module` must be a torch.nn.Conv1d, got Conv2d"):
        from_torch(torch.nn.Conv2d(1, 1, 3))


def test_float64_modules_keep_their_precision_under_x64():
    with enable_x64(True):
        module = _torch_module(1, 1, 1, 1, True, 'reflect').double()
        layer = from_torch(module, mode=bm.BatchingMode())
        assert layer.w.dtype == np.float64
        back = layer.to_torch()
        assert back.weight.dtype == torch.float64 and torch.equal(back.weight, module.weight)
