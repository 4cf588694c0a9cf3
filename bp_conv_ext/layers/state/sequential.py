"""The brainpy.state ``LayerByLayer``: a ``brainstate.nn.Sequential`` that can run a whole
sequence layer by layer."""
import brainpy.state
import brainstate
import brainunit as u
import jax.numpy as jnp
import numpy as np

from ...core import sequence as _sequence
from ...ops import fused as _fused
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


def _fusable(conv, lif) -> bool:
    """Whether ``conv -> lif`` is a convolution that :func:`bp_conv_ext.ops.fused.conv_lif`
    computes (channels last, stride 1, one group, zero padding, no mask, the default
    backend) into a ``brainpy.state.LIF`` without other inputs."""
    if not isinstance(conv, Conv1d) or type(lif) is not brainpy.state.LIF:
        return False
    c = conv.config
    return not (conv.channel_first or conv.w_mask is not None or conv.backend != 'auto' or
                c.padding_mode != 'zeros' or (c.stride, c.groups, c.lhs_dilation) != (1, 1, 1)
                or getattr(lif, '_current_inputs', None) or
                getattr(lif, '_delta_inputs', None) or lif.spk_reset not in ('soft', 'hard'))


def _scalar(value, unit):
    """``value`` as a float in ``unit`` (``None``: a plain number), or None where it is not
    one number in that unit."""
    if np.size(u.get_mantissa(value)) != 1:
        return None
    try:
        if unit is None:
            value = u.Quantity(value)
            return float(value.to_decimal()) if u.get_dim(value).is_dimensionless else None
        return float(u.Quantity(value).to_decimal(unit))
    except (u.UnitMismatchError, TypeError, ValueError):
        return None


class _ConvLif:
    """A :class:`Conv1d` and the ``brainpy.state.LIF`` after it over a whole sequence, as one
    fused spiking step (see the classic API's); ``unfused(xs)`` where the neurons' constants
    are not one number each in the units of their state, or their shape is not the
    convolution's output."""

    def __init__(self, conv, lif, unfused):
        self.conv, self.lif, self.unfused = conv, lif, unfused

    def _neurons(self, current_unit, v_unit):
        lif = self.lif
        ohm_current = u.Quantity(1.0) if current_unit is None else 1.0 * current_unit
        values = [_scalar(lif.tau / brainstate.environ.get_dt(), None),
                  _scalar(lif.R * ohm_current, v_unit)] + \
            [_scalar(value, v_unit) for value in (lif.V_rest, lif.V_th, lif.V_reset)]
        if None in values or values[0] <= 0 or values[3] <= values[4]:
            return None
        steps, r, v_rest, v_th, v_reset = values
        return _fused.LIF.make(tau=steps, dt=1.0, v_rest=v_rest, v_th=v_th, v_reset=v_reset,
                               r=r, soft=lif.spk_reset == 'soft', reset_first=True)

    def multi_step(self, xs, fold: str = 'time'):
        conv, lif = self.conv, self.lif
        x, x_unit = conv._checked(xs, sequence=True)
        kernel, w_unit = conv._kernel()
        v, v_unit = _units.split(lif.V.value)
        neurons = self._neurons(_units.times(x_unit, w_unit), v_unit)
        batched = x.ndim == 4
        sequence, v0 = (x, v) if batched else (x[:, None], v[None])
        c = conv.config
        if neurons is None or \
                v0.shape[1:] != (c.output_length(sequence.shape[2]), c.out_channels):
            return self.unfused(xs)
        b = conv._bias(x_unit, w_unit)
        spikes, v = _fused.conv_lif(
            sequence, kernel, None if b is None else jnp.reshape(b, (-1,)), v0, neurons,
            padding=c.padding, rhs_dilation=c.rhs_dilation, backend='auto', spike_fn=lif.spk_fun)
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
        step (:func:`bp_conv_ext.ops.fused.conv_lif`: one kernel on CUDA GPUs), with the
        same spikes, states and gradients (``fold='time'`` only)."""
        fold = _sequence.check_fold(fold)
        if not isinstance(fuse, bool):
            raise TypeError(f"`fuse` (={fuse!r}) must be a bool.")
        xs, unit = _units.split(xs)
        xs = jnp.asarray(xs)
        xs = xs if unit is None else u.Quantity(xs, unit=unit)
        if xs.ndim < 2:
            raise ValueError(f"{self.name or type(self).__name__}.multi_step takes a time-first "
                             f"sequence [T, B, ...] or [T, ...]; got an input of shape "
                             f"{xs.shape}.")
        batched = self.in_size is None or xs.ndim == len(self.in_size) + 2
        layers = list(self.layers)
        if fuse and fold == 'time':
            layers = _sequence.fuse_pairs(layers, lambda conv, lif: _ConvLif(
                conv, lif, lambda xs: _scan_time(lif, conv.multi_step(xs, fold=fold)))
                if _fusable(conv, lif) else None)
        return _sequence.layer_by_layer(
            layers, xs, fold, batched=batched,
            whole=lambda layer, xs: layer.multi_step(xs, fold=fold),
            stateful=lambda layer: isinstance(layer, brainstate.nn.Module) and
            _is_stateful(layer),
            scan=_scan_time, per_step=lambda layer, xs: layer(xs))   # time serves as the batch
