"""What a ``brainpy.state.LIF`` computes, read off the object: the one place that decides
whether a neuron module is exactly the plain LIF model, for the fused spiking step and the NIR
export."""
import math

import brainpy.state
import brainstate
import brainunit as u
import numpy as np

from ...ops import fused as _fused


def _label(lif) -> str:
    return f"{lif.name or 'LIF'} (brainpy.state.{type(lif).__name__})"


def lif_unsupported(lif) -> str | None:
    """None where ``lif`` is exactly ``brainpy.state.LIF``'s model; else a sentence naming the
    module and what it has besides.

    Exactly the model: a ``brainpy.state.LIF`` (not a subclass), nothing run before or after
    its update (``add_before_update`` / ``add_after_update``), no current or delta inputs
    (``add_current_input`` / ``add_delta_input``), no update set on the object, and
    ``spk_reset`` ``'soft'`` or ``'hard'``.
    """
    label = _label(lif)
    if type(lif) is not brainpy.state.LIF:
        return (f"{label} is not brainpy.state.LIF (refractory period, other dynamics or an "
                f"overridden update)")
    for attribute, what, how in (
            ('_before_updates', 'functions run before its update', 'add_before_update'),
            ('_after_updates', 'functions run after its update', 'add_after_update'),
            ('_current_inputs', 'current inputs', 'add_current_input'),
            ('_delta_inputs', 'delta inputs', 'add_delta_input')):
        hooks = vars(lif).get(attribute)
        if hooks:
            return f"{label} has {what} ({how}: {', '.join(map(str, hooks))})"
    if 'update' in vars(lif):
        return f"{label} has its own `update` set on the object"
    if lif.spk_reset not in ('soft', 'hard'):
        return f"{label} has spk_reset={lif.spk_reset!r}, neither 'soft' nor 'hard'"
    return None


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


def fused_constants(lif, current_unit, v_unit) -> _fused.LIF | str:
    """The fused step's constants for ``lif`` driven by a current in ``current_unit`` with its
    potential in ``v_unit`` (``None``: plain numbers), or why the fused step does not compute
    it: it computes :func:`lif_unsupported`'s plain model with each parameter one number in
    the units of the state, a positive finite ``tau`` and ``V_th > V_reset`` (the module
    itself runs the others)."""
    reason = lif_unsupported(lif)
    if reason is not None:
        return reason
    ohm_current = u.Quantity(1.0) if current_unit is None else 1.0 * current_unit
    values = dict(tau=_scalar(lif.tau / brainstate.environ.get_dt(), None),
                  R=_scalar(lif.R * ohm_current, v_unit),
                  V_rest=_scalar(lif.V_rest, v_unit), V_th=_scalar(lif.V_th, v_unit),
                  V_reset=_scalar(lif.V_reset, v_unit))
    for name, value in values.items():
        if value is None:
            return (f"{_label(lif)}: {name} is not one number in the units of its state "
                    f"and input (one number each is fused)")
    steps = values['tau']
    if not (steps > 0 and math.isfinite(steps)):
        return f"{_label(lif)} has tau={lif.tau} (a positive finite tau is fused)"
    if not values['V_th'] > values['V_reset']:
        return (f"{_label(lif)} has V_th={lif.V_th} <= V_reset={lif.V_reset} (its spike "
                f"function divides by V_th - V_reset)")
    return _fused.LIF.make(tau=steps, dt=1.0, v_rest=values['V_rest'], v_th=values['V_th'],
                           v_reset=values['V_reset'], r=values['R'],
                           soft=lif.spk_reset == 'soft', reset_first=True)
