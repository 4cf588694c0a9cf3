"""NIR interop: feedforward spiking 1-D CNNs as NIR graphs (``nir.NIRGraph``) and back.

NIR, the Neuromorphic Intermediate Representation (the ``nir`` package), is how spiking
networks move between simulators, training libraries and neuromorphic chips. This module
holds the conversion itself, in plain NumPy, between a NIR graph and a chain of *steps*:

- :class:`Conv`: a 1-D convolution (a ``LayerConfig``, the kernel ``(K, C_in // groups,
  C_out)`` and the bias ``(C_out,)`` or None) <-> ``nir.Conv1d``;
- :class:`LIF`: a leaky integrate-and-fire group with hard reset <-> ``nir.LIF``;
- :class:`Flatten` <-> ``nir.Flatten``;
- average pooling -> :class:`Conv` (:func:`avg_pool`: NIR has no 1-D pooling node, and the
  depthwise convolution with weights ``1 / kernel_size`` computes the same);
- :class:`Dense`: ``y = x @ weight + bias``, ``weight`` ``(N_in, N_out)`` <-> ``nir.Affine``
  (``nir.Linear`` without a bias);
- :class:`Delay`: synapses with whole-step delays, ``y[t] = sum_d x[t - d] @ taps[d] + bias``
  <-> ``nir.Linear`` (copying the input once per delay used) -> ``nir.Delay`` ->
  ``nir.Affine``; a ``nir.Delay`` read back becomes this step with the following
  ``nir.Affine``/``nir.Linear`` (or the identity) as its weights.

Steps are channels-last, as this package's layers are: a feature map is ``[L, C]`` and is
flattened ``l * C + c``; NIR is channels-first (``[C, L]``, flattened ``c * L + l``), so a
neuron's parameters and the input columns of a dense layer after a flatten are reordered on
the way. Times (``tau``, delays) are plain numbers in the unit of the time step; the
per-API modules (``layers/classic/nir.py``, ``layers/state/nir.py``) turn layers into steps
and steps into layers. ``nir`` is optional: it is imported inside these functions only.
"""
import itertools
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..core import args as _args
from .torch import swap_kernel_layout


class NIRError(ValueError):
    """A model that NIR cannot hold, or a NIR graph that this package cannot run."""


class Conv(NamedTuple):
    config: _args.LayerConfig
    kernel: np.ndarray              # (K, C_in // groups, C_out)
    bias: np.ndarray | None      # (C_out,)
    label: str


class LIF(NamedTuple):
    """``tau dv/dt = v_leak - v + r * I``; a spike where ``v`` reaches ``v_threshold``, then
    ``v = v_reset``; ``v`` starts at its rest, ``v_leak`` (:func:`check_start`). Each parameter
    broadcasts to the group's channels-last shape."""
    tau: np.ndarray
    r: np.ndarray
    v_leak: np.ndarray
    v_threshold: np.ndarray
    v_reset: np.ndarray
    label: str
    #: How the simulator steps it: ``'exact'`` (the ODE solved over the step, BrainPy's
    #: ``'exp_auto'``) or ``'euler'`` (forward Euler, ``method='euler'``).
    stepping: str = 'exact'


class Flatten(NamedTuple):
    label: str


class Dense(NamedTuple):
    weight: np.ndarray              # (N_in, N_out)
    bias: np.ndarray | None      # (N_out,)
    label: str


class Delay(NamedTuple):
    taps: np.ndarray                # (max_delay + 1, N_in, N_out): tap d, delay d steps
    bias: np.ndarray | None      # (N_out,)
    label: str


Step = Conv | LIF | Flatten | Dense | Delay
LIF_FIELDS = ('tau', 'r', 'v_leak', 'v_threshold', 'v_reset')


def avg_pool(layer, shape: tuple[int, ...], label: str) -> Conv:
    """An average pooling layer (``bp.dnn.AvgPool1d`` or ``brainstate.nn.AvgPool1d``, which
    name their arguments alike) on channels-last samples of ``shape`` as the depthwise
    convolution that NIR holds: each channel's window weighted ``1 / kernel_size``."""
    size, stride = (int(np.reshape(getattr(layer, name), -1)[0])
                    for name in ('kernel_size', 'stride'))
    padding = layer.padding
    if not (padding == 'VALID' or np.all(np.asarray(padding, dtype=object) == 0)):
        raise NIRError(f"{label}: padding={padding!r}; the average over a padded window "
                       f"counts the padding, which this export does not write. Use "
                       f"padding='VALID'.")
    if layer.channel_axis != -1 or len(shape) != 2:
        raise NIRError(f"{label}: channel_axis={layer.channel_axis} on samples of shape "
                       f"{list(shape)}; the export pools [L, C] feature maps over L "
                       f"(channel_axis=-1).")
    channels = shape[1]
    config = _args.layer_config(channels, channels, size, stride, 'VALID', 1, 1, channels,
                                'zeros')
    return Conv(config, np.full((size, 1, channels), 1.0 / size, np.float32), None, label)


def shape_after(step: Step, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The channels-last shape of one sample after ``step`` on samples of ``shape``."""
    if isinstance(step, Conv) and len(shape) == 2:
        return step.config.output_length(shape[0]), step.config.out_channels
    if isinstance(step, Flatten):
        return (int(np.prod(shape)),)
    if isinstance(step, (Dense, Delay)):
        return (np.shape(step.weight if isinstance(step, Dense) else step.taps)[-1],)
    return shape


def check_rounded(layer, label: str):
    """A delay layer must sit each weight on one tap (whole delays) to be written."""
    if layer.interpolation != 'round':
        raise NIRError(f"{label}: interpolation={layer.interpolation!r} spreads each weight "
                       f"over several taps; NIR's Delay holds whole delays. Call "
                       f"round_delays() first.")


def check_whole_flatten(label: str, axes: tuple[int, int]):
    if tuple(axes) != (0, -1):
        raise NIRError(f"{label}: flattens axes {tuple(axes)}; the export takes a flatten of "
                       f"the whole sample (0, -1).")


def import_nir():
    try:
        import nir
    except ImportError as error:
        raise ImportError("NIR interop needs the nir package "
                          "(pip install 'bp_conv_ext[nir]').") from error
    return nir


def _channels_first(values: np.ndarray, shape: tuple[int, ...], order) -> np.ndarray:
    """Values over a channels-last ``shape`` in NIR's layout: ``[C, L]`` for a feature map,
    the flattened order ``order`` for a vector after a flatten."""
    values = np.broadcast_to(np.asarray(values), shape)
    if len(shape) == 2:
        return np.ascontiguousarray(values.T)
    return np.ascontiguousarray(values[order])


def _channels_last(values: np.ndarray, shape: tuple[int, ...], order) -> np.ndarray:
    """The inverse of :func:`_channels_first`."""
    values = np.asarray(values)
    if len(shape) == 2:
        return np.ascontiguousarray(values.T)
    out = np.empty_like(values)
    out[order] = values
    return out


def _flatten_order(shape: tuple[int, ...]) -> np.ndarray:
    """Position ``j`` of NIR's flattened ``[C, L]`` holds entry ``order[j]`` of this package's
    flattened ``[L, C]``."""
    length, channels = shape
    return np.arange(length * channels).reshape(length, channels).T.reshape(-1)


def _nir_padding(conv: Conv, length: int):
    """``nir.Conv1d``'s ``padding`` for this convolution on ``length`` samples."""
    c = conv.config
    if c.padding == 'VALID':
        return 'valid'
    if c.padding == 'SAME' and c.stride == 1:
        return 'same'          # NIR's 'same' is PyTorch's: the odd sample on the high side
    low, high = _args.resolve_padding(c.padding, length, c.kernel_size, c.stride,
                                      c.lhs_dilation, c.rhs_dilation)
    if low != high:
        given = f"padding={c.padding!r} pads {(low, high)}" if isinstance(c.padding, str) \
            else f"padding={(low, high)}"
        raise NIRError(f"{conv.label}: {given} on an input of {length} samples: two "
                       f"different amounts (as 'CAUSAL' gives); nir.Conv1d pads both sides "
                       f"equally. Give the layer a symmetric padding.")
    return int(low)


def _ungrouped(weight: np.ndarray, groups: int) -> np.ndarray:
    """A grouped ``(C_out, C_in / groups, K)`` weight as the ``groups=1`` weight that computes
    the same: each group's block on the diagonal, zeros elsewhere."""
    c_out, c_group, k = weight.shape
    full = np.zeros((c_out, c_group * groups, k), weight.dtype)
    per_group = c_out // groups
    for g in range(groups):
        full[g * per_group:(g + 1) * per_group, g * c_group:(g + 1) * c_group] = \
            weight[g * per_group:(g + 1) * per_group]
    return full


def _conv_node(nir, conv: Conv, shape, expand_groups: bool):
    c = conv.config
    if len(shape) != 2 or shape[1] != c.in_channels:
        raise NIRError(f"{conv.label} takes [L, {c.in_channels}] per sample; the layer before "
                       f"it gives {list(shape)}.")
    if c.lhs_dilation != 1:
        raise NIRError(f"{conv.label}: lhs_dilation={c.lhs_dilation} (input dilation) has no "
                       f"nir.Conv1d equivalent; use lhs_dilation=1.")
    if c.padding_mode != 'zeros':
        raise NIRError(f"{conv.label}: padding_mode={c.padding_mode!r}; nir.Conv1d pads with "
                       f"zeros only. Use padding_mode='zeros'.")
    length = shape[0]
    out_length = c.output_length(length)
    bias = np.zeros(c.out_channels, np.asarray(conv.kernel).dtype) if conv.bias is None \
        else np.array(conv.bias).reshape(-1)           # a copy: readers may write to it
    weight, groups = swap_kernel_layout(np.asarray(conv.kernel)), c.groups
    if expand_groups and groups > 1:
        weight, groups = _ungrouped(weight, groups), 1
    node = nir.Conv1d(input_shape=length, weight=weight, stride=c.stride,
                      padding=_nir_padding(conv, length), dilation=c.rhs_dilation,
                      groups=groups, bias=bias)
    # nir 1.0.8 takes a Conv1d's input channels to be weight.shape[1], whatever the groups.
    node.input_type = {'input': np.array([c.in_channels, length])}
    return node, (out_length, c.out_channels)


def to_graph(steps: Sequence[Step], input_shape: tuple[int, ...], dt: float,
             expand_groups: bool = False):
    """A ``nir.NIRGraph`` of the chain ``steps`` on samples of channels-last shape
    ``input_shape`` (``(L, C)`` or ``(N,)``); delays are written as multiples of the time
    step ``dt``; with ``expand_groups``, grouped convolutions as ``groups=1`` ones with zero
    blocks (for readers that take no groups)."""
    if not isinstance(expand_groups, bool):
        raise TypeError(f"`expand_groups` (={expand_groups!r}) must be a bool.")
    nir = import_nir()
    shape = tuple(int(n) for n in input_shape)
    # The channels-last order of the values a vector holds (None: a [L, C] feature map).
    order: Any = np.arange(shape[0]) if len(shape) == 1 else None
    nodes = {'input': nir.Input(input_type=np.array(shape[::-1]))}
    names = ['input']

    def add(kind, node):
        name = f"{len(names) - 1}_{kind}"
        nodes[name] = node
        names.append(name)

    for step in steps:
        if isinstance(step, Conv):
            node, shape = _conv_node(nir, step, shape, expand_groups)
            add('conv1d', node)
        elif isinstance(step, LIF):
            check_lif(step)
            add('lif', nir.LIF(**{field: _channels_first(getattr(step, field), shape, order)
                                  .astype(np.float32) for field in LIF_FIELDS}))
        elif isinstance(step, Flatten):
            if len(shape) == 2:
                add('flatten', nir.Flatten(input_type={'input': np.array(shape[::-1])},
                                           start_dim=0, end_dim=-1))
                order, shape = _flatten_order(shape), (shape[0] * shape[1],)
        elif isinstance(step, (Dense, Delay)):
            weight = step.weight if isinstance(step, Dense) else step.taps
            if len(shape) != 1 or shape[0] != weight.shape[-2]:
                raise NIRError(f"{step.label} takes vectors of {weight.shape[-2]} entries; the "
                               f"layer before it gives {list(shape)} per sample"
                               f"{' (flatten it first)' if len(shape) == 2 else ''}.")
            weight = weight[..., order, :]
            if isinstance(step, Delay):
                weight = _delay_nodes(nir, weight, dt, add)
            if step.bias is None:
                add('linear', nir.Linear(weight=np.ascontiguousarray(weight.T)))
            else:
                add('affine', nir.Affine(weight=np.ascontiguousarray(weight.T),
                                         bias=np.array(step.bias).reshape(-1)))
            order, shape = np.arange(weight.shape[1]), (weight.shape[1],)
        else:
            raise TypeError(f"not a NIR step: {step!r}")
    nodes['output'] = nir.Output(output_type=np.array(shape[::-1]))
    names.append('output')
    return nir.NIRGraph(nodes=nodes, edges=list(itertools.pairwise(names)))


def _delay_nodes(nir, taps: np.ndarray, dt: float, add) -> np.ndarray:
    """Write the copies (``nir.Linear``) and the ``nir.Delay`` of whole-step delays; return the
    weights of the ``nir.Affine`` that sums them, ``(N_in * D, N_out)`` for ``D`` delays
    used."""
    used = [d for d in range(taps.shape[0]) if np.any(taps[d] != 0)] or [0]
    n_in = taps.shape[1]
    add('copies', nir.Linear(weight=np.tile(np.eye(n_in, dtype=taps.dtype), (len(used), 1))))
    add('delay', nir.Delay(delay=np.repeat(np.asarray(used, np.float64) * dt, n_in)))
    return np.concatenate([taps[d] for d in used], axis=0)


#: How a graph's neurons are stepped: ``'exact'``, NIR's ODE solved over each step with the
#: input held (exponential Euler, how BrainPy steps a LIF); ``'euler'``, forward Euler (how
#: SpikingJelly, snnTorch and Norse step it).
INTEGRATORS = ('exact', 'euler')


def check_integrator(integrator) -> str:
    if integrator not in INTEGRATORS:
        raise ValueError(f"`integrator` (={integrator!r}) must be one of {INTEGRATORS}.")
    return integrator


def _time_constants(step: LIF, ratio: float) -> np.ndarray:
    tau = np.asarray(step.tau, np.float64) / ratio
    if np.any(~np.isfinite(tau)) or np.any(tau <= 0):
        raise NIRError(f"{step.label}: tau must be positive and finite; got values in "
                       f"[{np.min(tau)}, {np.max(tau)}].")
    return tau


def lif_to_graph(step: LIF, sim_dt: float, graph_dt: float, integrator: str) -> LIF:
    """``step`` (``tau`` in the simulator's unit, stepped by ``sim_dt`` as ``step.stepping``
    says) as the graph holds it for a reader that steps by ``graph_dt`` with ``integrator``:
    the time constant whose step, the reader's way, decays by the same factor per step.

    That factor is ``exp(-sim_dt / tau)`` for an exact step and ``1 - sim_dt / tau`` for a
    forward-Euler one; with it, the input enters with weight ``1 - factor`` either way, so
    each neuron is written exactly. An Euler step with ``tau <= sim_dt`` decays by a factor
    <= 0 (it steps past the rest value), which no exponential decay does: refused.
    """
    steps = _time_constants(step, sim_dt)
    if step.stepping == 'euler':
        if np.any(steps <= 1):
            raise NIRError(f"{step.label}: method='euler' with tau / dt = "
                           f"{np.min(steps):.6g} <= 1 steps past the rest value, which NIR's "
                           f"LIF (an exponential decay) never does. Give it tau > dt, or "
                           f"method='exp_auto'.")
        if check_integrator(integrator) == 'exact':
            steps = -1.0 / np.log1p(-1.0 / steps)
    elif check_integrator(integrator) == 'euler':
        steps = 1.0 / -np.expm1(-1.0 / steps)
    return step._replace(tau=_uniform(steps * graph_dt, np.float64), stepping=integrator)


def lif_from_graph(step: LIF, sim_dt: float, graph_dt: float, integrator: str) -> LIF:
    """The inverse of :func:`lif_to_graph`: a ``'euler'`` graph's ``tau / dt`` must exceed 1
    (forward Euler overshoots the rest value otherwise)."""
    steps = _time_constants(step, graph_dt)
    if check_integrator(integrator) == 'euler':
        if np.any(steps <= 1):
            raise NIRError(f"{step.label}: tau / dt = {np.min(steps):.6g} <= 1, which forward "
                           f"Euler steps past the rest value; no exact-step neuron does that. "
                           f"Import with integrator='exact' or a smaller dt.")
        steps = -1.0 / np.log1p(-1.0 / steps)
    return step._replace(tau=_uniform(steps * sim_dt, np.float64))


# -- reading ------------------------------------------------------------------------------------

def read(graph):
    """``graph`` as a ``nir.NIRGraph``: a graph, or a path that ``nir.read`` opens."""
    nir = import_nir()
    if isinstance(graph, (str, os.PathLike)):
        # Unchecked: nir 1.0.8's check refuses grouped convolutions (it takes a Conv1d's
        # input channels to be weight.shape[1]); from_graph checks every shape itself.
        return nir.read(graph, type_check=False)
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"`graph` must be a nir.NIRGraph or the path of a NIR file, got "
                        f"{type(graph).__name__}.")
    return graph


def _endpoint(graph, name: str, edge) -> str:
    """The node an edge's end names: the node of that name (names may hold dots, as nirtorch
    writes for nested modules), else the longest dotted prefix that names one (a port of a
    subgraph, ``'node.port'``)."""
    prefix = str(name)
    while True:
        if prefix in graph.nodes:
            return prefix
        if '.' not in prefix:
            raise NIRError(f"the edge {tuple(edge)} names {name!r}, which is no node of the "
                           f"graph (its nodes: {sorted(graph.nodes)}).")
        prefix = prefix.rsplit('.', 1)[0]


def _chain(nir, graph) -> list[tuple[str, Any]]:
    """The nodes of ``graph`` from its one input to its one output, refusing anything but a
    chain."""
    inputs = [name for name, node in graph.nodes.items() if isinstance(node, nir.Input)]
    outputs = [name for name, node in graph.nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NIRError(f"the graph has {len(inputs)} Input and {len(outputs)} Output nodes; "
                       f"from_nir builds feedforward chains: one of each.")
    successors: dict[str, list[str]] = {}
    for edge in graph.edges:
        source, target = (_endpoint(graph, end, edge) for end in edge)
        successors.setdefault(source, []).append(target)
    chain, name, seen = [], inputs[0], set()
    while True:
        seen.add(name)
        chain.append((name, graph.nodes[name]))
        nexts = successors.get(name, [])
        if name == outputs[0]:
            break
        if len(nexts) != 1:
            raise NIRError(f"node {name!r} ({type(graph.nodes[name]).__name__}) has "
                           f"{len(nexts)} outgoing edges {nexts}; from_nir builds feedforward "
                           f"chains: one edge out of every node but the Output.")
        name = nexts[0]
        if name in seen:
            raise NIRError(f"the edge from {chain[-1][0]!r} into {name!r} closes a loop; "
                           f"from_nir builds feedforward chains.")
    if len(seen) != len(graph.nodes) or len(graph.edges) != len(chain) - 1:
        raise NIRError(f"the graph holds nodes or edges off the path from {inputs[0]!r} to "
                       f"{outputs[0]!r} ({sorted(set(graph.nodes) - seen)}); from_nir builds "
                       f"feedforward chains.")
    return chain


def _shape_of(types, key) -> tuple[int, ...] | None:
    shape = types.get(key) if types else None
    return None if shape is None else tuple(int(n) for n in np.asarray(shape).reshape(-1))


def _uniform(values: np.ndarray, dtype=np.float32):
    """A float for equal values, else the array."""
    values = np.asarray(values, dtype)
    flat = values.reshape(-1)
    return float(flat[0]) if flat.size and np.all(flat == flat[0]) else values


def _one_value(value):
    """``value`` as one item where it holds exactly one (a number, a 1-tuple, a 1-element
    array or tensor, as PyTorch-based writers and ``nir.read`` give), else None."""
    if isinstance(value, (str, bytes)) or value is None:
        return None
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        return None
    return array.reshape(-1)[0].item() if array.size == 1 and array.ndim <= 1 else None


def _conv_int(node, name, field: str, minimum: int) -> int:
    """A ``nir.Conv1d``'s ``stride``, ``dilation``, ``groups`` (or int ``padding``): an
    integer >= ``minimum`` in any of the forms :func:`_one_value` takes."""
    given = getattr(node, field)
    value = _one_value(given)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not float(value).is_integer() or value < minimum:
        raise NIRError(f"node {name!r} (Conv1d): {field}={given!r}; from_nir takes one "
                       f"integer >= {minimum} (a number, a 1-tuple or a 1-element array).")
    return int(value)


def _conv_padding(node, name):
    """A ``nir.Conv1d``'s ``padding``: ``'same'``, ``'valid'`` or one integer >= 0, as this
    package's ``'SAME'``, ``'VALID'`` or that int."""
    if isinstance(node.padding, str):
        if node.padding not in ('same', 'valid'):
            raise NIRError(f"node {name!r} (Conv1d): padding={node.padding!r}; from_nir takes "
                           f"'same', 'valid' or one integer >= 0.")
        return node.padding.upper()
    return _conv_int(node, name, 'padding', 0)


def _read_conv(node, name, shape) -> tuple[Conv, tuple[int, int]]:
    weight = np.asarray(node.weight)
    if weight.ndim != 3:
        raise NIRError(f"node {name!r}: nir.Conv1d weight of shape {weight.shape}; expected "
                       f"(C_out, C_in / groups, K).")
    if len(shape) != 2:
        raise NIRError(f"node {name!r} (Conv1d) receives {list(shape[::-1])} per sample; a "
                       f"1-D convolution takes [C, L].")
    length, channels = shape
    if node.input_shape is not None and int(np.asarray(node.input_shape).reshape(-1)[0]) \
            != length:
        raise NIRError(f"node {name!r} (Conv1d) declares input_shape={node.input_shape}, but "
                       f"receives {length} samples.")
    stride, dilation, groups = (_conv_int(node, name, field, 1)
                                for field in ('stride', 'dilation', 'groups'))
    padding = _conv_padding(node, name)
    if padding == 'SAME' and stride != 1:
        raise NIRError(f"node {name!r}: padding='same' with stride={stride}; NIR defines "
                       f"'same' for stride 1 only (as PyTorch does).")
    config = _args.layer_config(channels, weight.shape[0], weight.shape[2], stride, padding,
                                1, dilation, groups, 'zeros')
    if weight.shape[1] * groups != channels:
        raise NIRError(f"node {name!r}: a weight of shape {weight.shape} with groups={groups} "
                       f"takes {weight.shape[1] * groups} channels; it receives {channels}.")
    bias = None if node.bias is None or not np.any(np.asarray(node.bias)) else \
        np.asarray(node.bias, np.float32).reshape(-1)
    kernel = swap_kernel_layout(weight.astype(np.float32))
    return Conv(config, kernel, bias, name), (config.output_length(length), config.out_channels)


def _read_weight(node, name, shape, order) -> np.ndarray:
    weight = np.asarray(node.weight, np.float32)
    if weight.ndim != 2:
        raise NIRError(f"node {name!r} ({type(node).__name__}): weight of shape "
                       f"{weight.shape}; from_nir takes (N_out, N_in).")
    if len(shape) != 1 or shape[0] != weight.shape[1]:
        raise NIRError(f"node {name!r} ({type(node).__name__}) takes vectors of "
                       f"{weight.shape[1]} entries; it receives {list(shape[::-1])} per "
                       f"sample.")
    out = np.empty_like(weight.T)
    out[order] = weight.T
    return out


def _shown(values) -> str:
    """Some values for a message: the one value, or up to four of the distinct ones."""
    distinct = np.unique(np.asarray(values))
    if distinct.size == 1:
        return f"{distinct[0]:.6g}"
    return f"values such as {', '.join(f'{v:.6g}' for v in distinct[:4])}"


def check_start(step: LIF, start, initializer, fix: str):
    """A neuron whose membrane starts at ``start`` (its initial values, ``initializer`` the
    object that gives them) can be written only if that is its rest, ``v_leak``: what a NIR
    graph's LIF starts at (the graph holds no state; every writer known starts there), and
    what :func:`from_graph`'s readers build. ``fix`` says how to set it."""
    start = np.asarray(start, np.float32)
    rest = np.broadcast_to(np.asarray(step.v_leak, np.float32), start.shape)
    if not np.array_equal(start, rest):
        differ = start != rest
        raise NIRError(f"{step.label}: V_initializer={type(initializer).__name__} starts the "
                       f"membrane at {_shown(start[differ])} where its rest V_rest is "
                       f"{_shown(rest[differ])}; a NIR neuron starts at its rest (v_leak), "
                       f"the graph holding no state. {fix}")


#: The most memory, in bytes, that the taps of a layer built from one ``nir.Delay`` may take:
#: ``(longest delay + 1) * N_in * N_out`` float32 values. The layer holds its weights and
#: delays in arrays of that size and builds the taps from them at every step, so a graph over
#: this would need several GiB before its first step; such delays usually mean a graph in
#: seconds read with a ``dt`` in milliseconds (or the reverse).
MAX_DELAY_BYTES = 2 ** 30


def _check_delay_size(name, steps: float, dt: float, weight_shape):
    n_in, n_out = weight_shape
    size = (steps + 1) * n_in * n_out * 4
    if size > MAX_DELAY_BYTES:
        raise NIRError(f"node {name!r} (Delay): a delay of {steps:.6g} steps of dt={dt} into "
                       f"{n_in} x {n_out} synapses needs taps of {size / 2 ** 30:.4g} GiB "
                       f"(float32), over the {MAX_DELAY_BYTES / 2 ** 30:g} GiB that from_nir "
                       f"allocates for one delay layer. Check that dt is in the graph's unit "
                       f"of time.")


def check_lif(step: LIF) -> LIF:
    """Refuse a neuron with a parameter that is NaN or infinite: NIR's ODE has no meaning
    there (a NaN threshold, say, silently never fires)."""
    for field in LIF_FIELDS:
        values = np.asarray(getattr(step, field), np.float64)
        if not np.all(np.isfinite(values)):
            bad = _shown(values[~np.isfinite(values)])
            raise NIRError(f"{step.label}: {field} holds {bad}; NIR's LIF takes finite "
                           f"parameters. Give every neuron a finite {field}.")
    return step


def from_graph(graph, dt: float) -> tuple[tuple[int, ...], list[Step]]:
    """The channels-last input shape and the steps of a feedforward NIR graph; ``dt`` is the
    time step, in the unit of the graph's times (delays must be whole multiples of it)."""
    nir = import_nir()
    graph = read(graph)
    chain = _chain(nir, graph)
    shape = _shape_of(chain[0][1].input_type, 'input')
    if shape is None or len(shape) not in (1, 2):
        raise NIRError(f"the Input node's shape is {shape}; from_nir takes [C, L] (a 1-D "
                       f"feature map, channels first) or [N].")
    input_shape = shape = shape[::-1]
    # The channels-last order of the values a vector holds (None: a [L, C] feature map).
    order: Any = np.arange(shape[0]) if len(shape) == 1 else None
    steps: list[Step] = []
    step: Step
    nodes = chain[1:-1]
    i = 0
    while i < len(nodes):
        name, node = nodes[i]
        i += 1
        if isinstance(node, nir.Conv1d):
            step, shape = _read_conv(node, name, shape)
        elif isinstance(node, nir.LIF):
            values = {}
            for field in LIF_FIELDS:
                dtype = np.float64 if field == 'tau' else np.float32     # tau / dt, below
                value = np.asarray(getattr(node, field), dtype)
                if value.size != int(np.prod(shape)):
                    raise NIRError(f"node {name!r} (LIF): {field} has {value.size} entries; "
                                   f"the group receives {list(shape[::-1])}.")
                values[field] = _uniform(_channels_last(value.reshape(shape[::-1]), shape,
                                                        order), dtype)
            step = check_lif(LIF(**values, label=f"node {name!r} (LIF)"))
        elif isinstance(node, nir.Flatten):
            out = _shape_of(node.output_type, 'output')
            if out is not None and len(out) != 1 and len(shape) == 2:
                raise NIRError(f"node {name!r} (Flatten) gives {list(out)}; from_nir takes a "
                               f"flatten of the whole [C, L] sample into one vector.")
            step = Flatten(name)
            if len(shape) == 2:
                order, shape = _flatten_order(shape), (shape[0] * shape[1],)
        elif isinstance(node, (nir.Affine, nir.Linear)):
            weight = _read_weight(node, name, shape, order)
            bias = np.asarray(node.bias, np.float32).reshape(-1) \
                if isinstance(node, nir.Affine) else None
            step, shape, order = Dense(weight, bias, name), (weight.shape[1],), \
                np.arange(weight.shape[1])
        elif isinstance(node, nir.Delay):
            delays = np.asarray(node.delay, np.float64).reshape(-1)
            if len(shape) != 1 or delays.size != shape[0]:
                raise NIRError(f"node {name!r} (Delay) has {delays.size} delays; it receives "
                               f"{list(shape[::-1])} per sample (from_nir takes delays on "
                               f"vectors).")
            steps_ = delays / dt
            if not np.all(np.isfinite(steps_)) or np.any(steps_ < 0) or \
                    not np.allclose(steps_, np.round(steps_), rtol=0, atol=1e-6):
                raise NIRError(f"node {name!r} (Delay): delays {np.unique(delays)[:8]} are not "
                               f"whole multiples of dt={dt}; this package delays by whole "
                               f"time steps. Import with the graph's time step.")
            steps_ = np.round(steps_)
            if i < len(nodes) and isinstance(nodes[i][1], (nir.Affine, nir.Linear)):
                weight = _read_weight(nodes[i][1], nodes[i][0], shape, order)
                bias = np.asarray(nodes[i][1].bias, np.float32).reshape(-1) \
                    if isinstance(nodes[i][1], nir.Affine) else None
                i += 1
            else:
                weight, bias = np.eye(shape[0], dtype=np.float32)[:, order], None
            _check_delay_size(name, float(steps_.max()), dt, weight.shape)
            steps_ = steps_.astype(int)
            taps = np.zeros((steps_.max() + 1,) + weight.shape, np.float32)
            taps[steps_[np.argsort(order)], np.arange(shape[0])] = weight
            step = Delay(taps, bias, name) if len(taps) > 1 else Dense(taps[0], bias, name)
            shape, order = (weight.shape[1],), np.arange(weight.shape[1])
        else:
            raise NIRError(f"node {name!r} is a nir.{type(node).__name__}; from_nir builds "
                           f"Conv1d, LIF, Flatten, Affine, Linear and Delay nodes.")
        steps.append(step)
    return input_shape, steps
