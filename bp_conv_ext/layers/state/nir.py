"""NIR graphs to and from ``brainpy.state`` networks (``brainstate.nn.Sequential`` /
``LayerByLayer`` of ``Conv1d``, ``DelayConv1d``, ``brainpy.state.LIF``,
``brainstate.nn.AvgPool1d``, ``brainstate.nn.Flatten`` and ``brainstate.nn.Linear``).

A NIR graph holds plain numbers. Parameters with units are written in one consistent set:
currents (weights and biases of the layers that feed the neurons) in mA, resistances in ohm,
voltages in mV, so that ``r * I`` is in mV as the voltages are; times are counted in time
steps of brainstate's ``dt`` and written as ``steps * dt`` of the graph.
"""
from collections.abc import Sequence

import brainpy.state
import brainstate
import braintools
import brainunit as u
import numpy as np

from ...interop import nir as _nir
from .conv import Conv1d
from .delay import DelayConv1d
from .neurons import lif_unsupported
from .sequential import LayerByLayer

#: The unit each kind of quantity is written in.
# (brainunit makes its units at import; mypy sees none of them.)
UNITS = dict(current=u.mA, resistance=u.ohm, voltage=u.mV)  # type: ignore[attr-defined]


def _number(value, kind: str, label: str) -> np.ndarray:
    """``value`` as plain numbers: in ``UNITS[kind]`` where it has that dimension."""
    if isinstance(value, u.Quantity):
        unit = UNITS[kind]
        if u.get_dim(value) == u.get_dim(unit):
            value = value.to_decimal(unit)
        elif u.get_dim(value).is_dimensionless:
            value = value.to_decimal()
        else:
            raise _nir.NIRError(f"{label}: a value in {u.get_unit(value)}, where the export "
                                f"writes a {kind} (in {unit}) or a plain number; a NIR graph "
                                f"holds numbers without units. Give it a unit of {kind}.")
    return np.asarray(value)


def _sim_dt() -> float:
    try:
        return brainstate.environ.get_dt()
    except KeyError as error:
        raise _nir.NIRError("brainstate's time step is not set; NIR times are counted in it. "
                            "Call within brainstate.environ.context(dt=...) or after "
                            "brainstate.environ.set(dt=...).") from error


def _milliseconds(dt) -> float:
    """brainstate's ``dt`` as the default time step of a graph: in ms, as BrainPy counts."""
    return float(dt.to_decimal(u.ms) if isinstance(dt, u.Quantity) else dt)  # type: ignore[attr-defined]


def _steps(tau, dt, label: str) -> np.ndarray:
    """``tau`` in time steps of ``dt``."""
    ratio = tau / dt
    if isinstance(ratio, u.Quantity):
        if not u.get_dim(ratio).is_dimensionless:
            raise _nir.NIRError(f"{label}: tau={tau} and dt={dt} do not divide into a "
                                f"number of steps; give both in units of time or both "
                                f"plain.")
        ratio = ratio.to_decimal()
    return np.asarray(ratio, np.float64)


def _lif_step(layer, shape, dt) -> _nir.LIF:
    label = f"{layer.name or 'LIF'} (brainpy.state.{type(layer).__name__})"
    reason = lif_unsupported(layer)
    if reason is not None:
        raise _nir.NIRError(f"{reason}; NIR's LIF holds brainpy.state.LIF's own model only, "
                            f"and the graph would reload as a different network. Export a "
                            f"plain brainpy.state.LIF: no subclass, hooks or added inputs.")
    if layer.spk_reset != 'hard':
        raise _nir.NIRError(f"{label}: spk_reset={layer.spk_reset!r} subtracts the threshold "
                            f"at a spike; NIR's LIF resets to v_reset. Build the neuron with "
                            f"spk_reset='hard'.")
    if tuple(layer.varshape) != tuple(shape):
        raise _nir.NIRError(f"{label} has shape {tuple(layer.varshape)}; the layer before it "
                            f"gives {tuple(shape)} per sample.")
    step = _nir.LIF(tau=_steps(layer.tau, dt, label),
                    r=_number(layer.R, 'resistance', label),
                    v_leak=_number(layer.V_rest, 'voltage', label),
                    v_threshold=_number(layer.V_th, 'voltage', label),
                    v_reset=_number(layer.V_reset, 'voltage', label), label=label)
    start = _number(braintools.init.param(layer.V_initializer, layer.varshape), 'voltage',
                    label)
    _nir.check_start(step, start, layer.V_initializer,
                     "Build it with V_initializer=braintools.init.Constant(V_rest).")
    return step


def _layers(net):
    if isinstance(net, brainstate.nn.Sequential):
        for layer in net.layers:
            yield from _layers(layer)
    else:
        yield net


def _conv_step(layer, shape) -> _nir.Conv:
    label = f"{layer._label} (Conv1d)"
    if layer.channel_first:
        raise _nir.NIRError(f"{label}: channel_first=True; the export takes channels-last "
                            f"networks ([L, C] samples, as the neurons after it are shaped).")
    if layer.w_mask is not None:
        raise _nir.NIRError(f"{label} has a mask; nir.Conv1d has none. Fold it into the "
                            f"kernel (weight * mask) and build the layer without it.")
    params = layer.weight.value
    bias = params.get('bias')
    return _nir.Conv(layer.config, _number(params['weight'], 'current', label),
                     None if bias is None else _number(bias, 'current', label).reshape(-1),
                     label)


def _dense_step(layer) -> _nir.Dense:
    label = f"{layer.name or 'Linear'} (brainstate.nn.Linear)"
    if getattr(layer, 'w_mask', None) is not None:
        raise _nir.NIRError(f"{label} has a mask; nir.Affine has none. Fold it into the "
                            f"weight and build the layer without it.")
    params = layer.weight.value
    bias = params.get('bias')
    return _nir.Dense(_number(params['weight'], 'current', label),
                      None if bias is None else _number(bias, 'current', label).reshape(-1),
                      label)


def _model_steps(net, input_shape, dt):
    shape = tuple(input_shape)
    for layer in _layers(net):
        label = f"{layer.name or type(layer).__name__} ({type(layer).__name__})"
        if isinstance(layer, Conv1d):
            step = _conv_step(layer, shape)
        elif isinstance(layer, DelayConv1d):
            _nir.check_rounded(layer, label)
            bias = layer.weight.value.get('bias')
            step = _nir.Delay(_number(layer.kernel(), 'current', label),
                              None if bias is None else
                              _number(bias, 'current', label).reshape(-1), label)
        elif isinstance(layer, brainpy.state.Neuron):
            step = _lif_step(layer, shape, dt)
        elif type(layer) is brainstate.nn.AvgPool1d:
            step = _nir.avg_pool(layer, shape, label)
        elif isinstance(layer, brainstate.nn.Flatten):
            _nir.check_whole_flatten(label, (layer.start_axis, layer.end_axis))
            step = _nir.Flatten(label)
        elif isinstance(layer, brainstate.nn.Linear):
            step = _dense_step(layer)
        else:
            raise _nir.NIRError(f"{label} has no NIR node that this package writes; to_nir "
                                f"takes Conv1d, DelayConv1d (rounded), brainpy.state.LIF, "
                                f"brainstate.nn.AvgPool1d, brainstate.nn.Flatten and "
                                f"brainstate.nn.Linear, in a brainstate.nn.Sequential or "
                                f"LayerByLayer.")
        shape = _nir.shape_after(step, shape)
        yield step


def to_nir(net, input_shape: Sequence[int], *, dt: float | None = None,
           integrator: str = 'exact', expand_groups: bool = False):
    """Export a feedforward spiking 1-D CNN of ``brainpy.state`` modules as a
    ``nir.NIRGraph``; as :func:`bp_conv_ext.to_nir`, within brainstate's ``dt``.

    Parameters
    ----------
    net : brainstate.nn.Sequential, LayerByLayer or one module
        Of :class:`Conv1d` (channels last), :class:`DelayConv1d` (after
        :meth:`~DelayConv1d.round_delays`), ``brainpy.state.LIF`` (``spk_reset='hard'``,
        starting at its rest ``V_rest``), ``brainstate.nn.AvgPool1d`` (unpadded),
        ``brainstate.nn.Flatten`` and ``brainstate.nn.Linear``. Values with units are written
        as numbers in mA (weights and biases), ohm and mV (see the module's docstring).
    input_shape : (int, int) or (int,)
        One sample without the batch axis, channels last.
    dt : float, optional
        The graph's time step, in its own unit: times are written as ``steps * dt``, where
        ``steps`` counts brainstate's ``dt``. Default: brainstate's ``dt`` in ms.
    integrator : {'exact', 'euler'}, expand_groups : bool
        As in :func:`bp_conv_ext.to_nir`.
    """
    sim_dt = _sim_dt()
    graph_dt = _milliseconds(sim_dt) if dt is None else float(dt)
    steps = [_nir.lif_to_graph(step, 1.0, graph_dt, integrator)
             if isinstance(step, _nir.LIF) else step
             for step in _model_steps(net, input_shape, sim_dt)]
    return _nir.to_graph(steps, tuple(input_shape), graph_dt, expand_groups)


def from_nir(graph, *, dt: float | None = None, integrator: str = 'exact'):
    """Build a :class:`LayerByLayer` of ``brainpy.state`` modules that computes what a NIR
    graph describes; as :func:`bp_conv_ext.from_nir`, within brainstate's ``dt`` (one step of
    the graph's ``dt`` becomes one step of it).

    The modules hold plain numbers (currents in mA, voltages in mV, ``R`` in ohm, as the
    export writes them) and time constants in brainstate's ``dt``'s unit: :class:`Conv1d`
    (channels last: feed ``[B, L, C]``), ``brainpy.state.LIF`` (``spk_reset='hard'``, starting
    at its rest: ``V_initializer=braintools.init.Constant(v_leak)``),
    ``brainstate.nn.Flatten``, ``brainstate.nn.Linear`` and :class:`DelayConv1d` (rounded).
    Initialise their states (``brainstate.nn.init_all_states(net, batch_size)``) before a
    run.
    """
    sim_dt = _sim_dt()
    graph_dt = _milliseconds(sim_dt) if dt is None else float(dt)
    input_shape, steps = _nir.from_graph(graph, graph_dt)
    layers: list[brainstate.nn.Module] = []
    shape = input_shape
    for step in steps:
        if isinstance(step, _nir.Conv):
            c = step.config
            layers.append(Conv1d(shape, c.out_channels, c.kernel_size, c.stride,
                                 padding=c.padding, rhs_dilation=c.rhs_dilation,
                                 groups=c.groups, w_init=step.kernel, b_init=step.bias))
            shape = (c.output_length(shape[0]), c.out_channels)
        elif isinstance(step, _nir.LIF):
            step = _nir.lif_from_graph(step, 1.0, graph_dt, integrator)
            layers.append(brainpy.state.LIF(
                shape, R=step.r, tau=step.tau * sim_dt, V_th=step.v_threshold,
                V_reset=step.v_reset, V_rest=step.v_leak,
                V_initializer=braintools.init.Constant(step.v_leak), spk_reset='hard'))
        elif isinstance(step, _nir.Flatten):
            layers.append(brainstate.nn.Flatten(in_size=shape))
            shape = (int(np.prod(shape)),)
        elif isinstance(step, _nir.Dense):
            n_in, n_out = step.weight.shape
            layers.append(brainstate.nn.Linear(n_in, n_out, w_init=step.weight,
                                               b_init=step.bias))
            shape = (n_out,)
        else:
            taps = step.taps
            layers.append(DelayConv1d(
                taps.shape[1], taps.shape[2], max_delay=taps.shape[0] - 1,
                kernel_count=taps.shape[0], w_init=taps,
                delay_init=np.broadcast_to(
                    np.arange(taps.shape[0], dtype=np.float32)[:, None, None], taps.shape),
                b_init=step.bias, interpolation='round'))
            shape = (taps.shape[2],)
    return LayerByLayer(*layers)
