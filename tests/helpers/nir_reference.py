"""A small NIR interpreter in NumPy (float64), written from NIR's definitions and independent
of the package: what a NIR graph means, step by step, for the tests to hold the package's
exported graphs and imported models to.

Each node advances by one step of ``dt`` on channels-first samples with a leading batch axis;
``LIF`` nodes start at their rest ``v_leak``, integrate their ODE exactly over the step
(``integrator='exact'``) or by forward Euler (``'euler'``), spike where ``v >= v_threshold``
and reset to ``v_reset``.
"""
import numpy as np


def _int(value) -> int:
    """A number that writers give as a scalar, a 1-tuple or a 1-element array."""
    (item,) = np.asarray(value).reshape(-1)
    return int(item)


def _conv1d(node, x):
    """``nir.Conv1d`` on ``x`` ``[B, C_in, L]``: cross-correlation, as PyTorch's."""
    w = np.asarray(node.weight, np.float64)
    c_out, c_group, k = w.shape
    stride, dilation, groups = _int(node.stride), _int(node.dilation), _int(node.groups)
    span = dilation * (k - 1)
    padding = node.padding.lower() if isinstance(node.padding, str) else _int(node.padding)
    if padding == 'valid':
        low = high = 0
    elif padding == 'same':
        low, high = span // 2, span - span // 2
    else:
        low = high = padding
    x = np.pad(x, ((0, 0), (0, 0), (low, high)))
    out_length = (x.shape[2] - span - 1) // stride + 1
    y = np.zeros((x.shape[0], c_out, out_length))
    per_group = c_out // groups
    for o in range(c_out):
        g = o // per_group
        for j in range(k):
            window = x[:, g * c_group:(g + 1) * c_group,
                       j * dilation:j * dilation + stride * (out_length - 1) + 1:stride]
            y[:, o] += np.einsum('bcl,c->bl', window, w[o, :, j])
    if node.bias is not None:
        y += np.asarray(node.bias, np.float64).reshape(1, -1, 1)
    return y


class Graph:
    """Runs a chain-shaped ``nir.NIRGraph``: ``run(xs)`` with ``xs`` ``[T, B, *input]``
    returns the Output node's values ``[T, B, *output]``."""

    def __init__(self, graph, dt: float, integrator: str = 'exact'):
        import nir
        self.nir, self.dt, self.integrator = nir, dt, integrator
        def node_of(end):           # a node's name, or 'node.port' of a subgraph's port
            while end not in graph.nodes:
                if '.' not in end:
                    raise KeyError(f"an edge names {end!r}, no node of the graph")
                end = end.rsplit('.', 1)[0]
            return end

        successors = {node_of(source): node_of(target) for source, target in graph.edges}
        name = next(n for n, node in graph.nodes.items() if isinstance(node, nir.Input))
        self.nodes = []
        while name in successors:
            name = successors[name]
            node = graph.nodes[name]
            if not isinstance(node, nir.Output):
                self.nodes.append(node)

    def _step(self, node, x, state):
        nir = self.nir
        if isinstance(node, nir.Conv1d):
            return _conv1d(node, x)
        if isinstance(node, nir.Flatten):
            return x.reshape(x.shape[0], -1)
        if isinstance(node, nir.Affine):
            return x @ np.asarray(node.weight, np.float64).T + np.asarray(node.bias)
        if isinstance(node, nir.Linear):
            return x @ np.asarray(node.weight, np.float64).T
        if isinstance(node, nir.Delay):
            steps = np.rint(np.asarray(node.delay) / self.dt).astype(int)
            history = state.setdefault(id(node), [])
            history.append(x)
            return np.stack([history[-1 - d][:, i] if d < len(history) else
                             np.zeros(x.shape[0]) for i, d in enumerate(steps)], axis=1)
        if isinstance(node, nir.LIF):
            tau, r, v_leak, v_th, v_reset = (np.asarray(getattr(node, f), np.float64) for f in
                                             ('tau', 'r', 'v_leak', 'v_threshold', 'v_reset'))
            v = state.get(id(node), np.broadcast_to(v_leak, x.shape))     # starts at rest
            if self.integrator == 'exact':
                decay = np.exp(-self.dt / tau)
                v = v_leak + (v - v_leak) * decay + (1 - decay) * r * x
            else:
                v = v + self.dt / tau * (v_leak - v + r * x)
            spikes = v >= v_th
            state[id(node)] = np.where(spikes, v_reset, v)
            return spikes.astype(np.float64)
        raise TypeError(f"no reference for nir.{type(node).__name__}")

    def run(self, xs):
        state, outputs = {}, []
        for x in np.asarray(xs, np.float64):
            for node in self.nodes:
                x = self._step(node, x, state)
            outputs.append(x)
        return np.stack(outputs)
