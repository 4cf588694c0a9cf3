"""The bad-input matrix: every row is one mistake, the exception it raises and the message.

``tests/test_bad_input.py`` runs every row; ``docs/bad_input.md`` is generated from this list
(``python tests/helpers/bad_inputs.py > docs/bad_input.md``) and a test keeps the two equal.
"""
import itertools

import brainpy.math as bm
import jax.numpy as jnp
import numpy as np

from bp_conv_ext import (
    Conv1d,
    DelayConv1d,
    NIRError,
    conv1d,
    event_kernels,
    output_length,
    spike_drive,
    use_event_kernels,
)

try:
    from brainunit import UnitMismatchError
except ImportError:    # the BrainPy 2.6 stack, which skips the state rows; same name in the table
    class UnitMismatchError(Exception):
        """Stands in for brainunit's error."""

_BASE = dict(in_channels=4, out_channels=6, kernel_size=3)


def _build(**changes):
    return lambda: Conv1d(**{**_BASE, **changes})


def _conv_lif(**options):
    from bp_conv_ext.ops.fused import LIF, conv_lif
    return conv_lif(jnp.ones((2, 3, 10, 4), bool), jnp.ones((3, 4, 6)), None,
                    jnp.zeros((3, 10, 6)), LIF.make(tau=2., dt=1.), **options)


def _call(x, mode=bm.NonBatchingMode(), sequence=False, **changes):  # noqa: B008 (modes hold no state)
    def run():
        conv = Conv1d(**{**_BASE, **changes}, mode=mode)
        return conv.multi_step(x) if sequence else conv(x)
    return run


def _set_backend(value):
    def run():
        Conv1d(**_BASE).backend = value
    return run


_STATE = dict(in_size=(10, 4), out_channels=6, kernel_size=3)


def _use_event_kernels(name):
    def run():
        with use_event_kernels(name):
            pass
    return run


def _state(call=None, **changes):
    """A row for ``bp_conv_ext.state.Conv1d`` (imported when the row runs: brainstate is on
    BrainPy 2.8 and 2.9 only)."""
    def run():
        from bp_conv_ext.state import Conv1d as StateConv1d
        conv = StateConv1d(**{**_STATE, **changes})
        return None if call is None else call(conv)
    return run


def _state_in_channels():
    from bp_conv_ext.state import Conv1d as StateConv1d
    return StateConv1d(in_channels=4, out_channels=6, kernel_size=3)


def _bias_in_another_unit():
    import brainunit as u

    from bp_conv_ext.state import Conv1d as StateConv1d
    conv = StateConv1d(**_STATE, w_init=np.ones((3, 4, 6)) * u.mA, b_init=np.zeros(6) * u.mV)
    return conv(jnp.ones((10, 4)))


def _to_nir(layers, input_shape=(10, 4), **options):
    """A row: export ``layers()`` (built when the row runs) to NIR."""
    def run():
        import brainpy as bp

        from bp_conv_ext import to_nir
        return to_nir(bp.Sequential(*layers()), input_shape, **options)
    return run


def _lif(**changes):
    import brainpy as bp
    return bp.dyn.Lif((10, 6), keep_size=True, **{'spk_reset': 'hard', **changes})


def _state_to_nir(layers, dt=0.1):
    """A row: export brainpy.state ``layers()`` to NIR within brainstate's ``dt`` (ms)."""
    def run():
        import brainstate
        import brainunit as u

        from bp_conv_ext.state import to_nir
        if dt is None:
            return to_nir(brainstate.nn.Sequential(*layers()), (10, 4))
        with brainstate.environ.context(dt=dt * u.ms):
            return to_nir(brainstate.nn.Sequential(*layers()), (10, 4))
    return run


def _with(neuron, method, *args):
    """``neuron`` after ``neuron.<method>(*args)`` (an input function or hook added)."""
    getattr(neuron, method)(*args)
    return neuron


def _state_lif(**changes):
    import brainpy.state
    return brainpy.state.LIF((10, 6), **{'spk_reset': 'hard', **changes})


def _from_nir(*nodes, input_type=(3,), **options):
    """A row: import the chain ``Input -> nodes() -> Output`` (built when the row runs)."""
    def run():
        import nir

        from bp_conv_ext import from_nir
        chain = [node() for node in nodes]
        names = ['input'] + [f'n{i}' for i in range(len(chain))] + ['output']
        graph = nir.NIRGraph(
            nodes=dict(zip(names, [nir.Input(np.array(input_type))] + list(chain)
                           + [nir.Output(np.array([3]))])),
            edges=list(itertools.pairwise(names)), type_check=False)
        return from_nir(graph, **options)
    return run


def _nir_node(kind, **fields):
    def make():
        import nir
        return getattr(nir, kind)(**fields)
    return make


def _branching_graph():
    import nir

    from bp_conv_ext import from_nir
    node = nir.Affine(weight=np.eye(3), bias=np.zeros(3))
    graph = nir.NIRGraph(nodes=dict(input=nir.Input(np.array([3])), a=node, b=node,
                                    output=nir.Output(np.array([3]))),
                         edges=[('input', 'a'), ('input', 'b'), ('a', 'output'),
                                ('b', 'output')], type_check=False)
    return from_nir(graph)


def _padded_conv(padding):
    """A ``nir.Conv1d`` whose ``padding`` is changed after ``nir``'s own check."""
    def make():
        import nir
        node = nir.Conv1d(input_shape=10, weight=np.ones((3, 4, 3)), stride=1, padding=0,
                          dilation=1, groups=1, bias=np.zeros(3))
        node.padding = padding
        return node
    return make


def _edge_to_no_node():
    import nir

    from bp_conv_ext import from_nir
    graph = nir.NIRGraph(nodes=dict(input=nir.Input(np.array([3])),
                                    a=nir.Affine(weight=np.eye(3), bias=np.zeros(3)),
                                    output=nir.Output(np.array([3]))),
                         edges=[('input', 'a'), ('a', 'b.c')], type_check=False)
    return from_nir(graph)


# (what is wrong, the call, exception type, regex the message matches); rows whose first
# word is `state.Conv1d` are for the brainpy.state layer.
ROWS = [
    ('`in_channels` zero', _build(in_channels=0), ValueError, r"`in_channels` \(=0\) must be a positive integer"),
    ('`in_channels` a float', _build(in_channels=2.5), TypeError, r"`in_channels` \(=2.5\) must be an int"),
    ('`in_channels` a bool', _build(in_channels=True), TypeError, r"`in_channels` \(=True\) must be an int"),
    ('`out_channels` negative', _build(out_channels=-1), ValueError, r"`out_channels` \(=-1\) must be a positive integer"),
    ('`out_channels` a string', _build(out_channels='6'), TypeError, r"`out_channels` \(='6'\) must be an int"),
    ('`kernel_size` zero', _build(kernel_size=0), ValueError, r"`kernel_size` \(=0\) must be a positive integer"),
    ('`kernel_size` with two entries', _build(kernel_size=(3, 3)), ValueError, r"`kernel_size` \(=\(3, 3\)\) must be an int or a sequence of one int"),
    ('`kernel_size` None', _build(kernel_size=None), TypeError, r"`kernel_size` \(=None\) must be an int"),
    ('`stride` zero', _build(stride=0), ValueError, r"`stride` \(=0\) must be a positive integer"),
    ('`strides` zero', _build(strides=0), ValueError, r"`strides` \(=0\) must be a positive integer"),
    ('`stride` and `strides` both given', _build(stride=2, strides=2), ValueError, r"`stride` \(=2\) and `strides` \(=2\) were both given"),
    ('`lhs_dilation` zero', _build(lhs_dilation=0), ValueError, r"`lhs_dilation` \(=0\) must be a positive integer"),
    ('`rhs_dilation` negative', _build(rhs_dilation=-1), ValueError, r"`rhs_dilation` \(=-1\) must be a positive integer"),
    ('`rhs_dilation` a float', _build(rhs_dilation=1.0), TypeError, r"`rhs_dilation` \(=1.0\) must be an int"),
    ('`groups` zero', _build(groups=0), ValueError, r"`groups` \(=0\) must be a positive integer"),
    ('`groups` not dividing `in_channels`', _build(groups=3, out_channels=6), ValueError, r"`in_channels` \(=4\) must be divisible by `groups` \(=3\)"),
    ('`groups` not dividing `out_channels`', _build(groups=4), ValueError, r"`out_channels` \(=6\) must be divisible by `groups` \(=4\)"),
    ('`padding` an unknown string', _build(padding='FULL'), ValueError, r"`padding` \(='FULL'\) must be one of SAME, VALID, CAUSAL"),
    ('`padding` negative', _build(padding=-1), ValueError, r"`padding` \(=-1\) must not be negative"),
    ('`padding` pair with a negative side', _build(padding=(2, -1)), ValueError, r"must not be negative; got low=2, high=-1"),
    ('`padding` with three entries', _build(padding=(1, 2, 3)), ValueError, r"`padding` \(=\(1, 2, 3\)\) must be an int, a \(low, high\) pair"),
    ('`padding` with two pairs', _build(padding=[(1, 2), (3, 4)]), ValueError, r"must be an int, a \(low, high\) pair of ints or a sequence"),
    ('`padding` holding a one-entry pair', _build(padding=[(1,)]), ValueError, r"must hold a \(low, high\) pair of ints, got \(1,\)"),
    ('`padding` empty', _build(padding=()), ValueError, r"`padding` \(=\(\)\) must be an int"),
    ('`padding` a float', _build(padding=1.5), TypeError, r"`padding` \(=1.5\) must be a str, an int or a sequence"),
    ('`padding` None', _build(padding=None), TypeError, r"`padding` \(=None\) must be a str"),
    ('`padding_mode` unknown', _build(padding_mode='mirror'), ValueError, r"`padding_mode` \(='mirror'\) must be one of 'zeros', 'reflect', 'replicate', 'circular'"),
    ('`padding_mode` in upper case', _build(padding_mode='Reflect'), ValueError, r"`padding_mode` \(='Reflect'\) must be one of"),
    ('`padding_mode` other than zeros with `lhs_dilation` > 1', _build(padding_mode='reflect', lhs_dilation=2), ValueError, r"`padding_mode` \(='reflect'\) needs lhs_dilation=1, got lhs_dilation=2"),
    ("reflect padding as wide as the input", _call(jnp.ones((3, 4)), padding=3, padding_mode='reflect'), ValueError, r"padding_mode='reflect' needs padding narrower than the input: the padding is \(3, 3\) but the input has 3 samples"),
    ("circular padding wider than the input", _call(jnp.ones((3, 4)), padding=(0, 4), padding_mode='circular'), ValueError, r"padding_mode='circular' needs padding no wider than the input: the padding is \(0, 4\) but the input has 3 samples"),
    ('`w_initializer` array of the wrong shape', _build(w_initializer=np.ones((3, 4, 5))), ValueError, r"`w_initializer`: the array has shape \(3, 4, 5\); expected \(3, 4, 6\)"),
    ('`w_initializer` returning the wrong shape', _build(w_initializer=lambda shape: jnp.ones((2, 2))), ValueError, r"`w_initializer`: the value returned by the initializer has shape \(2, 2\)"),
    ('`w_initializer` None', _build(w_initializer=None), ValueError, r"`w_initializer` \(=None\) must give the kernel"),
    ('`w_initializer` a string', _build(w_initializer='xavier'), TypeError, r"`w_initializer` \(='xavier'\) must be a brainpy Initializer"),
    ('`w_initializer` complex values', _build(w_initializer=np.ones((3, 4, 6), np.complex64)), TypeError, r"`w_initializer` .* must hold real numbers"),
    ('`w_initializer` a bool', _build(w_initializer=True), TypeError, r"`w_initializer` \(=True\) must be .* not a bool"),
    ('`b_initializer` array of the wrong shape', _build(b_initializer=np.ones((6, 1))), ValueError, r"`b_initializer`: the array has shape \(6, 1\); expected \(1, 6\) or \(6,\)"),
    ('`mask` not broadcasting to the kernel', _build(mask=np.ones((3, 5))), ValueError, r"`mask` has shape \(3, 5\), which does not broadcast to the kernel shape \(3, 4, 6\)"),
    ('`mask` complex values', _build(mask=np.ones((3, 4, 6), np.complex64)), TypeError, r"`mask` .* must hold bool or real numbers"),
    ('`mask` a string', _build(mask='abc'), TypeError, r"`mask` \(='abc'\) must be an array of bool or real numbers"),
    ('`b_initializer` a string', _build(b_initializer='zeros'), TypeError, r"`b_initializer` \(='zeros'\) must be a brainpy Initializer"),
    ('`lhs_dilation` a string', _build(lhs_dilation='2'), TypeError, r"`lhs_dilation` \(='2'\) must be an int"),
    ('`groups` a float', _build(groups=2.0), TypeError, r"`groups` \(=2.0\) must be an int"),
    ('`name` not a string', _build(name=5), TypeError, r"`name` \(=5\) must be None or a str that is a Python identifier"),
    ('`name` not an identifier', _build(name='my conv'), ValueError, r"`name` \(='my conv'\) must be None or a str that is a Python identifier"),
    ('`mode` a string', _build(mode='training'), TypeError, r"`mode` \(='training'\) must be a brainpy.math.Mode instance"),
    ('`mode` an unsupported Mode', _build(mode=bm.Mode()), ValueError, r"`mode` \(=Mode\) is not supported"),
    ('`backend` unknown', _set_backend('cuda'), ValueError, r"`backend` \(='cuda'\) must be one of 'auto', 'dense'"),
    ('multi_step: unknown `fold`', lambda: Conv1d(**_BASE, mode=bm.TrainingMode()).multi_step(jnp.ones((2, 3, 10, 4)), fold='steps'), ValueError, r"`fold` \(='steps'\) must be one of 'time', 'batch'"),
    ('`ops.fused.conv_lif`: unknown `fold`', lambda: _conv_lif(fold='steps'), ValueError, r"`fold` \(='steps'\) must be one of 'time', 'batch'"),
    ('`which_backend`: unknown `platform`', lambda: Conv1d(**_BASE).which_backend(jnp.ones((10, 4)), platform='metal'), ValueError, r"`platform` \(='metal'\) must be one of 'cpu', 'cuda', 'rocm', 'tpu', 'gpu' or None"),
    ('call: batched input in NonBatchingMode', _call(jnp.ones((2, 10, 4))), ValueError, r"is in NonBatchingMode, where a call accepts inputs of shape \[H, C\] \(rank 2\); got an input of shape \(2, 10, 4\)"),
    ('call: unbatched input in TrainingMode', _call(jnp.ones((10, 4)), mode=bm.TrainingMode()), ValueError, r"is in TrainingMode, where a call accepts inputs of shape \[B, H, C\] \(rank 3\); got an input of shape \(10, 4\)"),
    ('call: a scalar', _call(jnp.ones(())), ValueError, r"accepts inputs of shape \[H, C\] \(rank 2\); got an input of shape \(\)"),
    ('call: wrong channel count', _call(jnp.ones((10, 3))), ValueError, r"expects in_channels=4 in the last axis; got an input of shape \(10, 3\)"),
    ('call: channels-first input [C, H]', _call(jnp.ones((4, 10))), ValueError, r"got an input of shape \(4, 10\)\. The layer is channels-last \(\[\.\.\., H, C\], BrainPy's layout\) and this input has the 4 channels in its second-to-last axis, as in PyTorch's channels-first \[\.\.\., C, H\]: transpose it with x\.swapaxes\(-1, -2\)"),
    ('call: channels-first batch [B, C, H]', _call(jnp.ones((2, 4, 10)), mode=bm.BatchingMode()), ValueError, r"got an input of shape \(2, 4, 10\)\. The layer is channels-last .* transpose it with x\.swapaxes\(-1, -2\)"),
    ("`dilation` (PyTorch's name)", _build(dilation=2), TypeError, r"Conv1d\(\) got PyTorch's keyword `dilation` \(=2\); here it is `rhs_dilation` .*: write rhs_dilation=2"),
    ("`bias` (PyTorch's name)", _build(bias=False), TypeError, r"got PyTorch's keyword `bias` \(=False\); here it is `b_initializer`: b_initializer=None for no bias"),
    ("`device` (PyTorch's name)", _build(device='cpu'), TypeError, r"got PyTorch's keyword `device` \(='cpu'\); there is no device argument here"),
    ("`dtype` (PyTorch's name)", _build(dtype='float16'), TypeError, r"got PyTorch's keyword `dtype` \(='float16'\); there is no dtype argument here: the parameters take BrainPy's default float type"),
    ('call: complex input', _call(jnp.ones((10, 4), jnp.complex64)), TypeError, r"the input has dtype complex64; expected bool, integer or real floating"),
    ('call: strings', _call(np.full((10, 4), 'a')), TypeError, r"the input must hold bool, integer or real floating values; got ndarray with dtype <U1"),
    ('call: Python objects', _call([[object()] * 4] * 10), TypeError, r"the input must hold bool, integer or real floating values; got list with dtype object"),
    ('call: empty sequence (H = 0)', _call(jnp.ones((0, 4))), ValueError, r"the input has 0 samples along the length axis"),
    ('call: input shorter than the kernel (VALID)', _call(jnp.ones((2, 4)), padding='VALID'), ValueError, r"the input is too short for the kernel: 2 samples"),
    ('call: input shorter than the dilated kernel', _call(jnp.ones((4, 4)), padding='VALID', rhs_dilation=2), ValueError, r"the input is too short for the kernel: 4 samples .* the dilated kernel spans 5"),
    ('multi_step: one step instead of a sequence', _call(jnp.ones((3, 10, 4)), mode=bm.TrainingMode(), sequence=True), ValueError, r"where multi_step accepts inputs of shape \[T, B, H, C\] \(rank 4\); got an input of shape \(3, 10, 4\)"),
    ('state.Conv1d: `in_size` with one entry', _state(in_size=(10,)), ValueError, r"`in_size` \(=\(10,\)\) must be a pair \(length, channels\)"),
    ('state.Conv1d: `in_size` holding zero channels', _state(in_size=(10, 0)), ValueError, r"`in_size` \(=0\) must be a positive integer"),
    ('state.Conv1d: `in_size` too short for the kernel', _state(in_size=(2, 4), padding='VALID'), ValueError, r"the input is too short for the kernel: 2 samples"),
    ('state.Conv1d: `groups` not dividing the channels', _state(groups=3), ValueError, r"`in_channels` \(=4\) must be divisible by `groups` \(=3\)"),
    ('state.Conv1d: `padding` an unknown string', _state(padding='FULL'), ValueError, r"`padding` \(='FULL'\) must be one of SAME, VALID, CAUSAL"),
    ('state.Conv1d: `channel_first` not a bool', _state(channel_first='yes'), TypeError, r"`channel_first` \(='yes'\) must be a bool"),
    ('state.Conv1d: `param_type` not a State class', _state(param_type=dict), TypeError, r"`param_type` \(=<class 'dict'>\) must be a brainstate.State subclass"),
    ('state.Conv1d: `w_init` array of the wrong shape', _state(w_init=np.ones((3, 4, 5))), ValueError, r"`w_init`: the array has shape \(3, 4, 5\); expected \(3, 4, 6\)"),
    ('state.Conv1d: `w_init` None', _state(w_init=None), ValueError, r"`w_init` \(=None\) must give the kernel"),
    ('state.Conv1d: `w_mask` not broadcasting to the kernel', _state(w_mask=np.ones((3, 5))), ValueError, r"`w_mask` has shape \(3, 5\), which does not broadcast to the kernel shape \(3, 4, 6\)"),
    ('state.Conv1d: `backend` unknown', _state(lambda conv: setattr(conv, 'backend', 'gpu')), ValueError, r"`backend` \(='gpu'\) must be one of 'auto', 'dense'"),
    ('state.Conv1d call: input not of `in_size`', _state(lambda conv: conv(jnp.ones((2, 12, 4)))), ValueError, r"has in_size=\(10, 4\), so a call accepts inputs of shape \[10, 4\] or \[B, 10, 4\]; got an input of shape \(2, 12, 4\)"),
    ('state.Conv1d multi_step: one step instead of a sequence', _state(lambda conv: conv.multi_step(jnp.ones((10, 4)))), ValueError, r"so multi_step accepts inputs of shape \[T, 10, 4\] or \[T, B, 10, 4\]; got an input of shape \(10, 4\)"),
    ('state.Conv1d call: channels-first input [B, C, L]', _state(lambda conv: conv(jnp.ones((2, 4, 10)))), ValueError, r"got an input of shape \(2, 4, 10\)\. The layer is channels-last .* transpose it with x\.swapaxes\(-1, -2\)"),
    ('state.Conv1d call: channels-last input with `channel_first=True`', _state(lambda conv: conv(jnp.ones((10, 4))), in_size=(4, 10), channel_first=True), ValueError, r"The layer is channels-first \(channel_first=True: \[\.\.\., C, L\]\) and this input has the 4 channels in its last axis: transpose it with x\.swapaxes\(-1, -2\)"),
    ("state.Conv1d: `dilation` (PyTorch's name)", _state(dilation=2), TypeError, r"Conv1d\(\) got PyTorch's keyword `dilation` \(=2\); here it is `rhs_dilation` .*: write rhs_dilation=2"),
    ("state.Conv1d: `in_channels` (PyTorch's name)", _state_in_channels, TypeError, r"got PyTorch's keyword `in_channels` \(=4\); here it is `in_size`, the shape of one sample: in_size=\(length, 4\)"),
    ("state.Conv1d: `bias` (PyTorch's name)", _state(bias=True), TypeError, r"got PyTorch's keyword `bias` \(=True\); here it is `b_init`: b_init=brainstate\.nn\.init\.ZeroInit\(\) for a bias"),
    ('state.Conv1d call: complex input', _state(lambda conv: conv(jnp.ones((10, 4), jnp.complex64))), TypeError, r"the input has dtype complex64; expected bool, integer or real floating"),
    ('state.Conv1d call: a bias in another unit than the output', _bias_in_another_unit, UnitMismatchError, r"the bias has unit mV, but the output has unit mA \(the input's unit 1 times the kernel's mA\)"),
    ('to_nir: Conv1d with `lhs_dilation` > 1', _to_nir(lambda: [Conv1d(4, 6, 3, lhs_dilation=2)]), NIRError, r"lhs_dilation=2 \(input dilation\) has no nir\.Conv1d equivalent; use lhs_dilation=1"),
    ("to_nir: Conv1d with `padding='CAUSAL'`", _to_nir(lambda: [Conv1d(4, 6, 3, padding='CAUSAL')]), NIRError, r"padding=\(2, 0\) on an input of 10 samples: two different amounts \(as 'CAUSAL' gives\); nir\.Conv1d pads both sides equally"),
    ("to_nir: Conv1d with `padding='SAME'` and a stride, padding unequally", _to_nir(lambda: [Conv1d(4, 6, 3, stride=2)]), NIRError, r"padding='SAME' pads \(0, 1\) on an input of 10 samples: two different amounts"),
    ("to_nir: Conv1d with `padding_mode='reflect'`", _to_nir(lambda: [Conv1d(4, 6, 3, padding_mode='reflect')]), NIRError, r"padding_mode='reflect'; nir\.Conv1d pads with zeros only\. Use padding_mode='zeros'"),
    ('to_nir: Conv1d with a mask', _to_nir(lambda: [Conv1d(4, 6, 3, mask=np.ones((3, 4, 6)))]), NIRError, r"has a mask; nir\.Conv1d has none\. Fold it into the kernel"),
    ('to_nir: bp.dyn.Lif with soft reset (TrainingMode)', _to_nir(lambda: [Conv1d(4, 6, 3, mode=bm.TrainingMode()), _lif(spk_reset='soft', mode=bm.TrainingMode())]), NIRError, r"spk_reset='soft' in TrainingMode subtracts the threshold at a spike; NIR's LIF resets to v_reset\. Build the neuron with spk_reset='hard'"),
    ('to_nir: a neuron with a refractory period (bp.dyn.LifRef)', _to_nir(lambda: [Conv1d(4, 6, 3), __import__('brainpy').dyn.LifRef((10, 6), keep_size=True)]), NIRError, r"LifRef0 \(bp\.dyn\.LifRef\) is not bp\.dyn\.Lif \(refractory period, other dynamics or an overridden update\); NIR's LIF holds bp\.dyn\.Lif's own model only, and the graph would reload as a different network\. Export a plain bp\.dyn\.Lif"),
    ('to_nir: bp.dyn.Lif with an input function (add_inp_fun)', _to_nir(lambda: [Conv1d(4, 6, 3), _with(_lif(), 'add_inp_fun', 'drive', lambda *args: 0.5)]), NIRError, r"\(bp\.dyn\.Lif\) has current inputs \(add_inp_fun: drive\); NIR's LIF holds bp\.dyn\.Lif's own model only, and the graph would reload as a different network"),
    ("to_nir: bp.dyn.Lif stepped by `method='rk4'`", _to_nir(lambda: [Conv1d(4, 6, 3), _lif(method='rk4')]), NIRError, r"\(bp\.dyn\.Lif\) is stepped by method='rk4', not 'exp_auto' or 'euler'; NIR's LIF holds bp\.dyn\.Lif's own model only"),
    ("to_nir: bp.dyn.Lif stepped by `method='euler'` with tau <= dt", _to_nir(lambda: [Conv1d(4, 6, 3), _lif(method='euler', tau=0.05)]), NIRError, r"\(bp\.dyn\.Lif\): method='euler' with tau / dt = 0\.5 <= 1 steps past the rest value, which NIR's LIF \(an exponential decay\) never does\. Give it tau > dt, or method='exp_auto'"),
    ('to_nir: bp.dyn.Lif starting away from its rest `V_rest`', _to_nir(lambda: [Conv1d(4, 6, 3), _lif(V_rest=-0.25)]), NIRError, r"V_initializer=ZeroInit starts the membrane at 0 where its rest V_rest is -0\.25; a NIR neuron starts at its rest \(v_leak\), the graph holding no state\. Build it with V_initializer=bp\.init\.Constant\(V_rest\)"),
    ('to_nir: bp.dyn.Lif with a NaN threshold', _to_nir(lambda: [Conv1d(4, 6, 3), _lif(V_th=float('nan'))]), NIRError, r"\(bp\.dyn\.Lif\): v_threshold holds nan; NIR's LIF takes finite parameters\. Give every neuron a finite v_threshold"),
    ('to_nir: bp.dyn.Lif of another shape than its input', _to_nir(lambda: [Conv1d(4, 6, 3), __import__('brainpy').dyn.Lif(60)]), NIRError, r"has shape \(60,\); the layer before it gives \(10, 6\) per sample"),
    ('to_nir: DelayConv1d with Gaussian (unrounded) delays', _to_nir(lambda: [DelayConv1d(4, 6, 3)], input_shape=(4,)), NIRError, r"interpolation='gauss' spreads each weight over several taps; NIR's Delay holds whole delays\. Call round_delays\(\) first"),
    ('to_nir: a max pooling layer', _to_nir(lambda: [__import__('brainpy').dnn.MaxPool1d(2, 2, channel_axis=-1)]), NIRError, r"MaxPool1d\) has no NIR node that this package writes; to_nir takes Conv1d"),
    ('to_nir: average pooling over a padded window', _to_nir(lambda: [__import__('brainpy').dnn.AvgPool1d(2, 2, padding='SAME', channel_axis=-1)]), NIRError, r"padding='SAME'; the average over a padded window counts the padding"),
    ('to_nir: unknown `integrator`', _to_nir(lambda: [Conv1d(4, 6, 3), _lif()], integrator='rk4'), ValueError, r"`integrator` \(='rk4'\) must be one of \('exact', 'euler'\)"),
    ('state.to_nir: brainpy.state.LIF with soft reset', _state_to_nir(lambda: [_state_lif(spk_reset='soft')]), NIRError, r"spk_reset='soft' subtracts the threshold at a spike; NIR's LIF resets to v_reset\. Build the neuron with spk_reset='hard'"),
    ('state.to_nir: Conv1d with `channel_first=True`', _state_to_nir(lambda: [__import__('bp_conv_ext.state').state.Conv1d((4, 10), 6, 3, channel_first=True)]), NIRError, r"channel_first=True; the export takes channels-last networks"),
    ('state.to_nir: a kernel in a unit that is no current', _state_to_nir(lambda: [__import__('bp_conv_ext.state').state.Conv1d((10, 4), 6, 3, w_init=np.ones((3, 4, 6)) * __import__('brainunit').mV)]), NIRError, r"a value in mV, where the export writes a current \(in mA\) or a plain number; a NIR graph holds numbers without units"),
    ('state.to_nir: Conv1d with a mask', _state_to_nir(lambda: [__import__('bp_conv_ext.state').state.Conv1d((10, 4), 6, 3, w_mask=np.ones((3, 4, 6)))]), NIRError, r"has a mask; nir\.Conv1d has none\. Fold it into the kernel"),
    ('state.to_nir: brainstate.nn.Linear with a mask', _state_to_nir(lambda: [__import__('brainstate').nn.Flatten(in_size=(10, 4)), __import__('brainstate').nn.Linear(40, 3, w_mask=np.ones((40, 3)))]), NIRError, r"has a mask; nir\.Affine has none\. Fold it into the weight"),
    ('state.to_nir: DelayConv1d with Gaussian (unrounded) delays', _state_to_nir(lambda: [__import__('brainstate').nn.Flatten(in_size=(10, 4)), __import__('bp_conv_ext.state').state.DelayConv1d(40, 6, 3)]), NIRError, r"interpolation='gauss' spreads each weight over several taps; NIR's Delay holds whole delays\. Call round_delays\(\) first"),
    ('state.to_nir: brainpy.state.LIF starting away from its rest `V_rest`', _state_to_nir(lambda: [__import__('brainpy.state').state.LIF((10, 4), spk_reset='hard', V_rest=-0.25 * __import__('brainunit').mV)]), NIRError, r"V_initializer=Constant starts the membrane at 0 where its rest V_rest is -0\.25; a NIR neuron starts at its rest \(v_leak\).* Build it with V_initializer=braintools\.init\.Constant\(V_rest\)"),
    ('state.to_nir: brainpy.state.LIF with a current input (add_current_input)', _state_to_nir(lambda: [_with(__import__('brainpy.state').state.LIF((10, 4), spk_reset='hard'), 'add_current_input', 'drive', lambda *args: 0.5 * __import__('brainunit').mA)]), NIRError, r"\(brainpy\.state\.LIF\) has current inputs \(add_current_input: drive\); NIR's LIF holds brainpy\.state\.LIF's own model only"),
    ("state.to_nir: brainstate's `dt` not set", _state_to_nir(lambda: [_state_lif()], dt=None), NIRError, r"brainstate's time step is not set; NIR times are counted in it"),
    ('from_nir: a node that this package does not build', _from_nir(_nir_node('CubaLIF', tau_syn=np.ones(3), tau_mem=np.ones(3), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3))), NIRError, r"node 'n0' is a nir\.CubaLIF; from_nir builds Conv1d, LIF, Flatten, Affine, Linear and Delay nodes"),
    ('from_nir: delays that are not whole time steps', _from_nir(_nir_node('Delay', delay=np.array([1., 2.5, 3.])), dt=1.), NIRError, r"delays \[1\.\s+2\.5\s+3\.\s*\] are not whole multiples of dt=1\.0"),
    ('from_nir: a Delay too long to allocate', _from_nir(_nir_node('Delay', delay=np.array([1e9, 0., 0.])), dt=1.), NIRError, r"node 'n0' \(Delay\): a delay of 1e\+09 steps of dt=1\.0 into 3 x 3 synapses needs taps of .* \(float32\), over the .* that from_nir allocates for one delay layer\. Check that dt is in the graph's unit of time"),
    ('from_nir: an infinite delay', _from_nir(_nir_node('Delay', delay=np.array([np.inf, 0., 0.])), dt=1.), NIRError, r"node 'n0' \(Delay\): delays \[ 0\. inf\] are not whole multiples of dt=1\.0"),
    ('from_nir: a LIF node with a NaN threshold', _from_nir(_nir_node('LIF', tau=np.ones(3), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.array([1., np.nan, 1.]), v_reset=np.zeros(3))), NIRError, r"node 'n0' \(LIF\): v_threshold holds nan; NIR's LIF takes finite parameters\. Give every neuron a finite v_threshold"),
    ('from_nir: a LIF node with an infinite v_leak', _from_nir(_nir_node('LIF', tau=np.ones(3), r=np.ones(3), v_leak=np.full(3, -np.inf), v_threshold=np.ones(3), v_reset=np.zeros(3))), NIRError, r"node 'n0' \(LIF\): v_leak holds -inf; NIR's LIF takes finite parameters"),
    ('from_nir: Conv1d with a stride of two values', _from_nir(_nir_node('Conv1d', input_shape=10, weight=np.ones((3, 4, 3)), stride=np.array([1, 2]), padding=0, dilation=1, groups=1, bias=np.zeros(3)), input_type=(4, 10)), NIRError, r"node 'n0' \(Conv1d\): stride=array\(\[1, 2\]\); from_nir takes one integer >= 1 \(a number, a 1-tuple or a 1-element array\)"),
    ('from_nir: Conv1d with a fractional dilation', _from_nir(_nir_node('Conv1d', input_shape=None, weight=np.ones((3, 4, 3)), stride=1, padding=0, dilation=1.5, groups=1, bias=np.zeros(3)), input_type=(4, 10)), NIRError, r"node 'n0' \(Conv1d\): dilation=1\.5; from_nir takes one integer >= 1"),
    ('from_nir: Conv1d with zero groups', _from_nir(_nir_node('Conv1d', input_shape=10, weight=np.ones((3, 4, 3)), stride=1, padding=0, dilation=1, groups=(0,), bias=np.zeros(3)), input_type=(4, 10)), NIRError, r"node 'n0' \(Conv1d\): groups=\(0,\); from_nir takes one integer >= 1"),
    ("from_nir: Conv1d whose padding was set to 'full' after it was built", _from_nir(_padded_conv('full'), input_type=(4, 10)), NIRError, r"node 'n0' \(Conv1d\): padding='full'; from_nir takes 'same', 'valid' or one integer >= 0"),
    ('from_nir: Conv1d with a negative padding', _from_nir(_nir_node('Conv1d', input_shape=10, weight=np.ones((3, 4, 3)), stride=1, padding=np.array([-1]), dilation=1, groups=1, bias=np.zeros(3)), input_type=(4, 10)), NIRError, r"node 'n0' \(Conv1d\): padding=array\(\[-1\]\); from_nir takes one integer >= 0"),
    ('from_nir: an edge to no node', _edge_to_no_node, NIRError, r"the edge \('a', 'b\.c'\) names 'b\.c', which is no node of the graph \(its nodes: \['a', 'input', 'output'\]\)"),
    ("from_nir: an Euler graph whose tau is under one time step", _from_nir(_nir_node('LIF', tau=np.full(3, 0.05), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3), v_reset=np.zeros(3)), dt=0.1, integrator='euler'), NIRError, r"tau / dt = 0\.5 <= 1, which forward Euler steps past the rest value"),
    ("from_nir: Conv1d with padding 'same' and stride 2", _from_nir(_nir_node('Conv1d', input_shape=10, weight=np.ones((3, 4, 3)), stride=2, padding='same', dilation=1, groups=1, bias=np.zeros(3)), input_type=(4, 10)), NIRError, r"padding='same' with stride=2; NIR defines 'same' for stride 1 only"),
    ('from_nir: a graph that branches', _branching_graph, NIRError, r"node 'input' \(Input\) has 2 outgoing edges \['a', 'b'\]; from_nir builds feedforward chains"),
    ('from_nir: not a graph', lambda: __import__('bp_conv_ext').from_nir({'nodes': {}}), TypeError, r"`graph` must be a nir\.NIRGraph or the path of a NIR file, got dict"),
    ('conv1d: input of rank 4', lambda: conv1d(jnp.ones((1, 2, 10, 4)), jnp.ones((3, 4, 6))), ValueError, r"`x` must have shape \[H, C\] or \[B, H, C\]"),
    ('conv1d: kernel of rank 2', lambda: conv1d(jnp.ones((10, 4)), jnp.ones((3, 4))), ValueError, r"`w` must have shape \[K, C_in // groups, C_out\]"),
    ('conv1d: kernel for other input channels', lambda: conv1d(jnp.ones((10, 4)), jnp.ones((3, 2, 6))), ValueError, r"`w` \(shape \(3, 2, 6\)\) expects 2 input channels"),
    ('conv1d: bias of the wrong size', lambda: conv1d(jnp.ones((10, 4)), jnp.ones((3, 4, 6)), jnp.ones(5)), ValueError, r"`b` \(shape \(5,\)\) must hold one value per output channel"),
    ('conv1d: channels-first input [C, H]', lambda: conv1d(jnp.ones((4, 10)), jnp.ones((3, 4, 6))), ValueError, r"but `x` \(shape \(4, 10\)\) has 10\. The layer is channels-last \(\[\.\.\., H, C\], BrainPy's layout\) and this input has the 4 channels in its second-to-last axis, as in PyTorch's channels-first \[\.\.\., C, H\]: transpose it with x\.swapaxes\(-1, -2\)"),
    ("conv1d: `dilation` (PyTorch's name)", lambda: conv1d(jnp.ones((10, 4)), jnp.ones((3, 4, 6)), dilation=2), TypeError, r"conv1d\(\) got PyTorch's keyword `dilation` \(=2\); here it is `rhs_dilation` .*: write rhs_dilation=2"),
    ("conv1d: `bias` (PyTorch's name)", lambda: conv1d(jnp.ones((10, 4)), jnp.ones((3, 4, 6)), bias=jnp.zeros(6)), TypeError, r"conv1d\(\) got PyTorch's keyword `bias` \(=.*\); here it is `b` \(the bias array"),
    ('conv1d: input None', lambda: conv1d(None, jnp.ones((3, 4, 6))), TypeError, r"the input is None; expected an array"),
    ('conv1d: kernel of strings', lambda: conv1d(jnp.ones((10, 4)), np.full((3, 4, 6), 'a')), TypeError, r"`w` \(array of shape \(3, 4, 6\) and dtype <U1\) must hold real numbers"),
    ('conv1d: complex kernel', lambda: conv1d(jnp.ones((10, 4)), jnp.ones((3, 4, 6)) * 1j), TypeError, r"`w` \(array of shape \(3, 4, 6\) and dtype complex64\) must hold real numbers"),
    ('conv1d: complex bias', lambda: conv1d(jnp.ones((10, 4)), jnp.ones((3, 4, 6)), jnp.ones(6) * 1j), TypeError, r"`b` \(array of shape \(6,\) and dtype complex64\) must hold real numbers"),
    ('conv1d: complex mask', lambda: conv1d(jnp.ones((10, 4)), jnp.ones((3, 4, 6)), mask=jnp.ones(6) * 1j), TypeError, r"`mask` \(array of shape \(6,\) and dtype complex64\) must hold real numbers"),
    ('conv1d: kernel with zero taps', lambda: conv1d(jnp.ones((10, 4)), jnp.ones((0, 4, 6))), ValueError, r"`w` must have shape \[K, C_in // groups, C_out\] with at least one tap"),
    ('conv1d: mask of rank 4', lambda: conv1d(jnp.ones((10, 4)), jnp.ones((3, 4, 6)), mask=jnp.ones((1, 3, 4, 6))), ValueError, r"`mask` has shape \(1, 3, 4, 6\), which does not broadcast to the kernel shape \(3, 4, 6\)"),
    ('conv1d: mask that does not broadcast', lambda: conv1d(jnp.ones((10, 4)), jnp.ones((3, 4, 6)), mask=jnp.ones(5)), ValueError, r"`mask` has shape \(5,\), which does not broadcast"),
    ("output_length: padding 'FULL'", lambda: output_length(10, 3, 1, 'FULL'), ValueError, r"`padding` \(='FULL'\) must be one of SAME, VALID, CAUSAL"),
    ('output_length: stride -1', lambda: output_length(10, 3, -1, 'VALID'), ValueError, r"`stride` \(=-1\) must be a positive integer"),
    ('output_length: kernel_size 0', lambda: output_length(10, 0, 1, 'VALID'), ValueError, r"`kernel_size` \(=0\) must be a positive integer"),
    ('output_length: negative padding', lambda: output_length(10, 3, 1, (-5, 0)), ValueError, r"`padding` \(=\(-5, 0\)\) must not be negative"),
    ('spike_drive: rate 0', lambda: spike_drive(5, 2, rate=0., current=20.), ValueError, r"`rate` \(=0.0\) must be a spike probability in \(0, 1\]"),
    ('spike_drive: rate as a percentage', lambda: spike_drive(5, 2, rate=5, current=20.), ValueError, r"`rate` \(=5\) must be a spike probability in \(0, 1\]"),
    ('spike_drive: negative current', lambda: spike_drive(5, 2, rate=0.05, current=-20.), ValueError, r"`current` \(=-20.0\) must be a positive current"),
    ('spike_drive: infinite current', lambda: spike_drive(5, 2, rate=0.05, current=float('inf')), ValueError, r"`current` \(=inf\) must be finite: a positive current"),
    ('spike_drive: NaN drive', lambda: spike_drive(5, 2, rate=0.05, current=20., drive=float('nan')), ValueError, r"`drive` \(=nan\) must be finite: a number >= 0"),
    ('spike_drive: in_channels not divisible by groups', lambda: spike_drive(5, 3, rate=0.05, current=20., groups=2), ValueError, r"`in_channels` \(=3\) must be divisible by `groups` \(=2\)"),
    ('w_initializer returning None', _build(w_initializer=lambda shape: None), TypeError, r"`w_initializer` \(.*\) returned None for shape \(3, 4, 6\)"),
    ('DelayConv1d.multi_step with T=0', lambda: DelayConv1d(4, 6, 3).multi_step(np.zeros((0, 4), bool)), ValueError, r"takes, in multi_step, at least one time step; got an input of shape \(0, 4\)"),
    ('DelayConv1d.reset_state(-1)', lambda: DelayConv1d(4, 6, 3).reset_state(-1), ValueError, r"`batch_or_mode` \(=-1\) must be a positive integer"),
    ('use_event_kernels: an unknown kernel set', _use_event_kernels('cuda'), ValueError, r"`name` \(='cuda'\) must be one of 'c\+\+', 'numba', 'jax', 'triton'"),
    ("use_event_kernels: the package's name instead of the kernel set's", _use_event_kernels('brainevent'), ValueError, r"`name` \(='brainevent'\) must be one of 'c\+\+', 'numba', 'jax', 'triton'"),
    ("conv1d: a GPU's kernel name as the CPU's", lambda: conv1d(jnp.ones((10, 4), bool), jnp.ones((3, 4, 6)), kernels='pallas'), ValueError, r"`kernels` \(='pallas'\) must be one of 'c\+\+', 'numba', 'jax', 'triton'"),
    ('conv_lif: a kernel set the spiking step has not', lambda: _conv_lif(kernels='numba'), ValueError, r"`kernels` \(='numba'\) must be one of 'c\+\+', 'mosaic', 'triton', 'jax', or None"),
    ('event_kernels: unknown `platform`', lambda: event_kernels('metal'), ValueError, r"`platform` \(='metal'\) must be one of 'cpu', 'cuda', 'rocm', 'tpu', 'gpu' or None"),
]


def markdown() -> str:
    lines = ["# Bad input", "",
             "Every row is tested (`tests/test_bad_input.py`, from `tests/helpers/bad_inputs.py`, which",
             "generates this page). Messages name the argument, echo the value and say what was",
             "expected; the column shows the part the test matches.", "",
             "NaN and inf are not errors. In the input they pass through unchanged to the",
             "outputs whose window contains them, and nowhere else; in the kernel they reach",
             "every output of their output channel (IEEE: 0 * inf and 0 * nan are NaN), on every",
             "backend, the event-driven one included. The same in gradients: a NaN or inf in the",
             "cotangent from a later layer, or in a kernel tangent, gives on the event-driven path",
             "the dense path's answer, in which the input's zeros and the padding multiply it.", "",
             "| # | mistake | exception | message (matched part) |",
             "| ---: | --- | --- | --- |"]
    for i, (what, _, error, pattern) in enumerate(ROWS, 1):
        shown = pattern.replace('\\\\', '\\').replace('\\(', '(').replace('\\)', ')') \
            .replace('\\[', '[').replace('\\]', ']').replace('\\.', '.').replace('\\+', '+') \
            .replace('|', '\\|')
        lines.append(f"| {i} | {what} | `{error.__name__}` | {shown} |")
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    print(markdown(), end='')
