"""The brainpy.state ``LayerByLayer``: a ``brainstate.nn.Sequential`` that can run a whole
sequence layer by layer."""
import brainstate
import brainunit as u
import jax.numpy as jnp

from ...core import sequence as _sequence
from . import units as _units


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

    def multi_step(self, xs, fold: str = 'time'):
        """Run the whole time-first sequence ``xs`` (``[T, B, ...]``, or ``[T, ...]`` for
        unbatched states) through every layer in turn; returns the per-step outputs of the
        last layer stacked along the first axis. ``fold`` as in :meth:`Conv1d.multi_step`."""
        fold = _sequence.check_fold(fold)
        xs, unit = _units.split(xs)
        xs = jnp.asarray(xs)
        xs = xs if unit is None else u.Quantity(xs, unit=unit)
        if xs.ndim < 2:
            raise ValueError(f"{self.name or type(self).__name__}.multi_step takes a time-first "
                             f"sequence [T, B, ...] or [T, ...]; got an input of shape "
                             f"{xs.shape}.")
        batched = self.in_size is None or xs.ndim == len(self.in_size) + 2
        return _sequence.layer_by_layer(
            self.layers, xs, fold, batched=batched,
            whole=lambda layer, xs: layer.multi_step(xs, fold=fold),
            stateful=lambda layer: isinstance(layer, brainstate.nn.Module) and
            _is_stateful(layer),
            scan=_scan_time, per_step=lambda layer, xs: layer(xs))   # time serves as the batch
