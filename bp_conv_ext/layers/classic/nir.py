"""NIR graphs to and from classic BrainPy networks (``bp.Sequential`` / ``LayerByLayer`` of
``Conv1d``, ``DelayConv1d``, ``bp.dyn.Lif``, ``bp.dnn.AvgPool1d``, ``bp.dnn.Flatten`` and
``bp.dnn.Dense``)."""
from collections.abc import Sequence

import brainpy as bp
import brainpy.math as bm
import numpy as np

from ...interop import nir as _nir
from .conv import Conv1d
from .delay import DelayConv1d
from .neurons import lif_unsupported
from .sequential import LayerByLayer


def _array(value) -> np.ndarray:
    return np.asarray(bm.as_numpy(value.value if isinstance(value, bm.Variable) else value))


#: The integration methods of a ``bp.dyn.Lif`` that a graph can hold exactly (each with the
#: time constant of its per-step decay: ``interop.nir.lif_to_graph``).
METHODS = {'exp_auto': 'exact', 'euler': 'euler'}


def _lif_step(layer, shape) -> _nir.LIF:
    label = f"{layer.name} (bp.dyn.{type(layer).__name__})"
    reason = lif_unsupported(layer, methods=tuple(METHODS))
    if reason is not None:
        raise _nir.NIRError(f"{reason}; NIR's LIF holds bp.dyn.Lif's own model only, and the "
                            f"graph would reload as a different network. Export a plain "
                            f"bp.dyn.Lif: no subclass, hooks, input functions, noise or "
                            f"scaling, method 'exp_auto' or 'euler'.")
    if isinstance(layer.mode, bm.TrainingMode) and layer.spk_reset != 'hard':
        raise _nir.NIRError(f"{label}: spk_reset={layer.spk_reset!r} in TrainingMode subtracts "
                            f"the threshold at a spike; NIR's LIF resets to v_reset. Build the "
                            f"neuron with spk_reset='hard'.")
    if tuple(layer.varshape) != tuple(shape):
        raise _nir.NIRError(f"{label} has shape {tuple(layer.varshape)}; the layer before it "
                            f"gives {tuple(shape)} per sample (build it with that shape and "
                            f"keep_size=True).")
    step = _nir.LIF(tau=_array(layer.tau), r=_array(layer.R), v_leak=_array(layer.V_rest),
                    v_threshold=_array(layer.V_th), v_reset=_array(layer.V_reset), label=label,
                    stepping=METHODS[layer.method])
    initializer = layer._V_initializer
    _nir.check_start(step, _array(bp.init.parameter(initializer, layer.varshape)), initializer,
                     "Build it with V_initializer=bp.init.Constant(V_rest).")
    return step


def _layers(net):
    if isinstance(net, bp.Sequential):
        for child in net.children.values():
            yield from _layers(child)
    else:
        yield net


def _steps(net, input_shape):
    shape = tuple(input_shape)
    for layer in _layers(net):
        label = f"{layer.name} ({type(layer).__name__})"
        if isinstance(layer, Conv1d):
            step = _nir.Conv(layer.config, _array(layer.w),
                             None if layer.b is None else _array(layer.b), label)
            if layer.mask is not None:
                raise _nir.NIRError(f"{label} has a mask; nir.Conv1d has none. Fold it into "
                                    f"the kernel (w * mask) and build the layer without it.")
        elif type(layer) is bp.dnn.AvgPool1d:
            step = _nir.avg_pool(layer, shape, label)
        elif isinstance(layer, DelayConv1d):
            _nir.check_rounded(layer, label)
            step = _nir.Delay(_array(layer.kernel()), None if layer.b is None else
                              _array(layer.b), label)
        elif isinstance(layer, bp.dyn.NeuDyn):
            step = _lif_step(layer, shape)
        elif isinstance(layer, bp.dnn.Flatten):
            _nir.check_whole_flatten(label, (layer.start_dim, layer.end_dim))
            step = _nir.Flatten(label)
        elif isinstance(layer, bp.dnn.Dense):
            step = _nir.Dense(_array(layer.W), None if layer.b is None else _array(layer.b),
                              label)
        else:
            raise _nir.NIRError(f"{label} has no NIR node that this package writes; to_nir "
                                f"takes Conv1d, DelayConv1d (rounded), bp.dyn.Lif, "
                                f"bp.dnn.AvgPool1d, bp.dnn.Flatten and bp.dnn.Dense, in a "
                                f"bp.Sequential or LayerByLayer.")
        shape = _nir.shape_after(step, shape)
        yield step


def to_nir(net, input_shape: Sequence[int], *, dt: float | None = None,
           integrator: str = 'exact', expand_groups: bool = False):
    """Export a feedforward spiking 1-D CNN as a ``nir.NIRGraph``.

    Parameters
    ----------
    net : bp.Sequential, LayerByLayer or one layer
        Of :class:`Conv1d`, :class:`DelayConv1d` (after :meth:`~DelayConv1d.round_delays`),
        ``bp.dyn.Lif`` (the plain model, stepped by ``method='exp_auto'`` or ``'euler'``; hard
        reset; starting at its rest ``V_rest``), ``bp.dnn.AvgPool1d`` (unpadded, written as
        a depthwise ``nir.Conv1d``), ``bp.dnn.Flatten`` and ``bp.dnn.Dense``.
    input_shape : (int, int) or (int,)
        One sample without the batch axis, channels last: ``(L, C)``, or ``(N,)``.
    dt : float, optional
        The graph's time step, in its own unit (SpikingJelly counts seconds): times are
        written as ``steps * dt``. Default: BrainPy's ``dt`` (times in milliseconds, as
        the model holds them).
    integrator : {'exact', 'euler'}
        How the reader will step the neurons: ``'exact'`` (NIR's ODE solved over each step,
        as BrainPy does) or ``'euler'`` (forward Euler, as SpikingJelly, snnTorch and Norse
        do). Each ``tau`` is written so that the reader's step decays as the neuron's own
        step does (its exact step, or its Euler step for ``method='euler'``).
    expand_groups : bool
        Write grouped convolutions (and average pooling, a depthwise convolution) as
        ``groups=1`` ones whose weight holds each group's block and zeros elsewhere: the same
        numbers, for readers that take no ``groups`` (SpikingJelly 2.0).

    Returns
    -------
    nir.NIRGraph
        Channels-first nodes ``Input -> ... -> Output``; ``nir.write`` saves it.

    Raises
    ------
    bp_conv_ext.NIRError
        For what NIR cannot hold (see the NIR page of the docs), naming the layer and what
        to change.

    Examples
    --------
    >>> import brainpy as bp
    >>> import bp_conv_ext
    >>> net = bp_conv_ext.LayerByLayer(bp_conv_ext.Conv1d(1, 4, 3),
    ...                                bp.dyn.Lif((20, 4), keep_size=True))
    >>> graph = bp_conv_ext.to_nir(net, (20, 1))
    >>> [type(node).__name__ for node in graph.nodes.values()]
    ['Input', 'Conv1d', 'LIF', 'Output']
    >>> graph.nodes['0_conv1d'].weight.shape         # channels first: (C_out, C_in, K)
    (4, 1, 3)
    >>> bp_conv_ext.from_nir(graph)[0].w.shape        # and back: (K, C_in, C_out)
    (3, 1, 4)
    """
    sim_dt = float(bm.get_dt())
    graph_dt = sim_dt if dt is None else float(dt)
    steps = [_nir.lif_to_graph(step, sim_dt, graph_dt, integrator)
             if isinstance(step, _nir.LIF) else step for step in _steps(net, input_shape)]
    return _nir.to_graph(steps, tuple(input_shape), graph_dt, expand_groups)


def from_nir(graph, *, dt: float | None = None, integrator: str = 'exact', mode=None):
    """Build a :class:`LayerByLayer` that computes what a NIR graph describes.

    Parameters
    ----------
    graph : nir.NIRGraph, str or path
        A feedforward chain of ``Conv1d``, ``LIF``, ``Flatten``, ``Affine``, ``Linear`` and
        ``Delay`` nodes (or a file that ``nir.read`` opens).
    dt : float, optional
        The graph's time step, in its unit (SpikingJelly writes seconds: ``dt=1e-4`` by
        default there). One step of the graph becomes one step of BrainPy's ``dt``: time
        constants and delays are rescaled. Default: the graph counts milliseconds, as
        BrainPy does.
    integrator : {'exact', 'euler'}
        How the graph's writer steps its neurons (see :func:`to_nir`); ``'euler'`` converts
        each ``tau`` so that BrainPy's exact step gives forward Euler's numbers.
    mode : brainpy.math.Mode, optional
        Mode of every layer (default ``bm.get_mode()``).

    Returns
    -------
    LayerByLayer
        ``Conv1d``, ``bp.dyn.Lif`` (hard reset, starting at its rest: ``V_initializer=
        bp.init.Constant(v_leak)``), ``bp.dnn.Flatten``, ``bp.dnn.Dense`` and
        ``DelayConv1d`` (rounded) layers, channels last: feed ``[B, L, C]`` where the graph
        takes ``[C, L]``.
    """
    mode = bm.get_mode() if mode is None else mode
    sim_dt = float(bm.get_dt())
    graph_dt = sim_dt if dt is None else float(dt)
    input_shape, steps = _nir.from_graph(graph, graph_dt)
    layers: list[bp.DynamicalSystem] = []
    shape = input_shape
    for step in steps:
        if isinstance(step, _nir.Conv):
            c = step.config
            layers.append(Conv1d(c.in_channels, c.out_channels, c.kernel_size, c.stride,
                                 padding=c.padding,
                                 rhs_dilation=c.rhs_dilation, groups=c.groups,
                                 w_initializer=step.kernel, b_initializer=step.bias, mode=mode))
            shape = (c.output_length(shape[0]), c.out_channels)
        elif isinstance(step, _nir.LIF):
            step = _nir.lif_from_graph(step, sim_dt, graph_dt, integrator)
            layers.append(bp.dyn.Lif(shape, keep_size=True, tau=step.tau, R=step.r,
                                     V_rest=step.v_leak, V_th=step.v_threshold,
                                     V_reset=step.v_reset,
                                     V_initializer=bp.init.Constant(step.v_leak),
                                     spk_reset='hard', mode=mode))
        elif isinstance(step, _nir.Flatten):
            layers.append(bp.dnn.Flatten(mode=mode))
            shape = (int(np.prod(shape)),)
        elif isinstance(step, _nir.Dense):
            n_in, n_out = step.weight.shape
            layers.append(bp.dnn.Dense(n_in, n_out, W_initializer=bm.asarray(step.weight),
                                       b_initializer=None if step.bias is None else
                                       bm.asarray(step.bias), mode=mode))
            shape = (n_out,)
        else:
            taps = step.taps
            layers.append(DelayConv1d(
                taps.shape[1], taps.shape[2], max_delay=taps.shape[0] - 1,
                kernel_count=taps.shape[0], w_initializer=taps,
                delay_initializer=np.broadcast_to(
                    np.arange(taps.shape[0], dtype=np.float32)[:, None, None], taps.shape),
                b_initializer=step.bias, interpolation='round', input_dtype=bm.float_,
                mode=mode))
            shape = (taps.shape[2],)
    return LayerByLayer(*layers, mode=mode)
