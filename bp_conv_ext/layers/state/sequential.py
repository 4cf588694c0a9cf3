"""The brainpy.state ``LayerByLayer``: a ``brainstate.nn.Sequential`` that can run a whole
sequence layer by layer."""

import itertools
from collections.abc import Sequence

import brainpy.state
import brainstate
import brainunit as u
import jax.numpy as jnp

from ...core import params as _params
from ...core import sequence as _sequence
from ...ops import fused as _fused
from . import neurons as _neurons
from . import units as _units
from .conv import Conv1d


def _is_stateful(layer) -> bool:
    return isinstance(layer, brainstate.nn.Dynamics) or \
        bool(layer.states(brainstate.ShortTermState))


def _scan_time(layer, xs):
    """Advance a stateful module over the leading time axis, with ``i`` and ``t`` set in
    brainstate's environment as a simulation loop sets them."""
    dt = brainstate.environ.get_dt()

    def step(i, x):
        with brainstate.environ.context(i=i, t=i * dt):
            return layer(x)

    return brainstate.transform.for_loop(step, jnp.arange(xs.shape[0]), xs)


def _conv_unfusable(conv) -> str | None:
    """Why the fused step does not compute ``conv`` (a :class:`Conv1d`), or None: it takes
    channels last, stride 1, one group, zero padding, no mask and the default backend."""
    name = conv.name or 'Conv1d'
    if conv.channel_first:
        return f"{name} (Conv1d) is channels first"
    return _fused.unfused_options(name, conv.config, masked=conv.w_mask is not None,
                                  backend=conv.backend)


def _fusion(conv, lif, x_unit):
    """The fused step's constants for ``conv -> lif`` on an input in ``x_unit``, or why the
    pair runs unfused: the one decision (:mod:`bp_conv_ext.layers.state.neurons` for the
    neurons)."""
    reason = _conv_unfusable(conv) or _neurons.lif_unsupported(lif)
    if reason is not None:
        return reason
    w_unit = _params.split_unit(conv.weight.value['weight'])[1]
    return _neurons.fused_constants(lif, _units.times(x_unit, w_unit),
                                    _params.split_unit(lif.V.value)[1])


def _candidate(conv, neurons) -> bool:
    """Whether ``conv -> neurons`` is a pair the fused step might run: a :class:`Conv1d` into
    a ``brainpy.state`` neuron module."""
    return isinstance(conv, Conv1d) and isinstance(neurons, brainpy.state.Neuron)


class _ConvLif:
    """A :class:`Conv1d` and the ``brainpy.state.LIF`` after it over a whole sequence, as one
    fused spiking step (see the classic API's); ``unfused(xs)`` where :func:`_fusion` does not
    fuse the pair for this input's unit, or the neurons' shape is not the convolution's
    output."""

    def __init__(self, conv, lif, unfused):
        self.conv, self.lif, self.unfused = conv, lif, unfused

    def multi_step(self, xs, fold: str = 'time'):
        conv, lif = self.conv, self.lif
        operands = conv.sequence_operands(xs)
        x = operands.xs
        v, v_unit = _params.split_unit(lif.V.value)
        neurons = _fusion(conv, lif, operands.x_unit)
        batched = x.ndim == 4
        sequence, v0 = (x, v) if batched else (x[:, None], v[None])
        c = conv.config
        if not isinstance(neurons, _fused.LIF) or \
                v0.shape[1:] != (c.output_length(sequence.shape[2]), c.out_channels):
            return self.unfused(xs)
        spikes, v = _fused.conv_lif(
            sequence, operands.kernel, operands.bias, v0, neurons,
            padding=c.padding, rhs_dilation=c.rhs_dilation, backend='auto', fold=fold,
            spike_fn=lif.spk_fun)
        if not batched:
            spikes, v = spikes[:, 0], v[0]
        lif.V.value = v if v_unit is None else u.Quantity(v, unit=v_unit)
        return spikes


class LayerByLayer(brainstate.nn.Sequential):
    """A :class:`brainstate.nn.Sequential` that can also run a whole sequence layer by layer.

    Called as usual (``update``), it advances every layer by one time step. Its
    :meth:`multi_step` runs a whole input sequence through one layer after the other:
    layers with a ``multi_step`` method (:class:`Conv1d`, :class:`DelayConv1d`) get the
    whole sequence; other stateless modules (``Linear``, ``Flatten``, pooling, ...) are
    folded over time and called once; modules with state (``brainpy.state`` neurons such as
    ``LIF``, any ``brainstate.nn.Dynamics``) are advanced step by step with
    ``brainstate.transform.for_loop``. Both ways give the same outputs and gradients.

    States are not reset: initialise them first, as for a step-by-step run
    (``brainstate.nn.init_all_states(net, batch_size)``).

    Examples
    --------
    >>> import brainstate, brainunit as u, jax.numpy as jnp
    >>> import brainpy.state
    >>> from bp_conv_ext.state import Conv1d, LayerByLayer
    >>> net = LayerByLayer(Conv1d((20, 1), 4, 3, w_init=brainstate.nn.init.XavierNormal(unit=u.mA)),
    ...                    brainpy.state.LIF((20, 4)), brainstate.nn.Flatten(in_size=(20, 4)),
    ...                    brainstate.nn.Linear(80, 2))
    >>> _ = brainstate.nn.init_all_states(net, 8)
    >>> with brainstate.environ.context(dt=0.1 * u.ms):
    ...     net.multi_step(jnp.ones((10, 8, 20, 1))).shape    # [T, B, L, C] -> [T, B, 2]
    (10, 8, 2)
    """

    def multi_step(self, xs, fold: str = 'time', fuse: bool = True):
        """Run the whole time-first sequence ``xs`` (``[T, B, ...]``, or ``[T, ...]`` for
        unbatched states) through every layer in turn; returns the per-step outputs of the
        last layer stacked along the first axis. ``fold`` as in :meth:`Conv1d.multi_step`;
        ``fuse``: each :class:`Conv1d` (channels last, stride 1, one group, zero padding, no
        mask, backend ``'auto'``) followed by a ``brainpy.state.LIF`` runs as one spiking
        step (:func:`bp_conv_ext.ops.fused.conv_lif`: one C++ kernel on the CPU, forward and
        backward, one kernel on CUDA GPUs), with the same spikes, states and gradients
        (either ``fold``; no forward-mode derivatives of the C++ kernel: ``fuse=False``)."""
        fold = _sequence.check_fold(fold)
        if not isinstance(fuse, bool):
            raise TypeError(f"`fuse` (={fuse!r}) must be a bool.")
        xs, unit = _params.split_unit(xs)
        xs = jnp.asarray(xs)
        xs = xs if unit is None else u.Quantity(xs, unit=unit)
        if xs.ndim < 2:
            raise ValueError(f"{self.name or type(self).__name__}.multi_step takes a time-first "
                             f"sequence [T, B, ...] or [T, ...]; got an input of shape "
                             f"{xs.shape}.")
        in_size = self.in_size
        rank = len(in_size) if isinstance(in_size, Sequence) else 1
        batched = in_size is None or xs.ndim == rank + 2
        layers = list(self.layers)
        if fuse:
            layers = _sequence.fuse_pairs(layers, lambda conv, lif: _ConvLif(
                conv, lif, lambda xs: _scan_time(lif, conv.multi_step(xs, fold=fold)))
                if _candidate(conv, lif) and _conv_unfusable(conv) is None and
                _neurons.lif_unsupported(lif) is None else None)
        return _sequence.layer_by_layer(
            layers, xs, fold, batched=batched,
            whole=lambda layer, xs: layer.multi_step(xs, fold=fold),
            stateful=lambda layer: isinstance(layer, brainstate.nn.Module) and
            _is_stateful(layer),
            scan=_scan_time, per_step=lambda layer, xs: layer(xs))   # time serves as the batch

    def fusion(self, x_unit=None) -> list[tuple[str, str, str | None]]:
        """Which :class:`Conv1d` -> neuron pairs :meth:`multi_step` runs as one fused spiking
        step (with ``fuse=True``) for an input in ``x_unit`` (``None``: plain
        numbers), and why the others are not. Call it once the states are initialised.

        Returns
        -------
        list of (str, str, str or None)
            For each :class:`Conv1d` followed by a ``brainpy.state`` neuron module, in order:
            the two modules' names (their class where they have none) and ``None`` where the
            pair is fused, else the reason it runs unfused (the neurons' hooks, inputs or
            class, the convolution's options, parameters that are not one number each in the
            state's units, ...). A pair whose
            neurons' shape is not the convolution's output also runs unfused.
        """
        layers = list(self.layers)
        return [(conv.name or 'Conv1d', lif.name or type(lif).__name__,
                 None if isinstance(decision, _fused.LIF) else decision)
                for conv, lif in itertools.pairwise(layers) if _candidate(conv, lif)
                for decision in [_fusion(conv, lif, x_unit)]]
