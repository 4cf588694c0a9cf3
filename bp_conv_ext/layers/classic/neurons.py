"""What a ``bp.dyn.Lif`` computes, read off the object: the one place that decides whether a
neuron group is exactly the plain LIF model, for the fused spiking step and the NIR export."""
import math

import brainpy as bp
import brainpy.math as bm

from ...ops import fused as _fused

#: The integration methods each user of :func:`lif_unsupported` can compute exactly.
EXACT = ('exp_auto',)


def _label(lif) -> str:
    return f"{lif.name} (bp.dyn.{type(lif).__name__})"


def _extension(lif) -> str | None:
    """What runs in ``lif`` besides its own update, or None."""
    # Read with defaults: BrainPy 2.6's groups lack some of these (none of them run there).
    for attributes, what, how in (
            (('_before_updates',), 'functions run before its update', 'add_bef_update'),
            (('_after_updates',), 'functions run after its update', 'add_aft_update'),
            (('_current_inputs', 'cur_inputs'), 'current inputs', 'add_inp_fun'),
            (('_delta_inputs',), 'delta inputs', "add_inp_fun(..., category='delta')")):
        hooks = next((vars(lif)[a] for a in attributes if vars(lif).get(a)), None)
        if hooks:
            return f"has {what} ({how}: {', '.join(map(str, hooks))})"
    if 'update' in vars(lif):
        return "has its own `update` set on the object"
    if getattr(lif, 'noise', None) is not None:
        return "has noise"
    scaling = getattr(lif, 'scaling', None)
    if scaling is not None and (scaling.scale, scaling.bias) != (1.0, 0.0):
        return f"rescales its voltages (scaling={scaling.scale}, bias={scaling.bias})"
    return None


def lif_unsupported(lif, methods: tuple[str, ...] = EXACT) -> str | None:
    """None where ``lif`` is exactly ``bp.dyn.Lif``'s model, stepped by one of ``methods``;
    else a sentence naming the group and what it has besides.

    Exactly the model: a ``bp.dyn.Lif`` (not a subclass), nothing run before or after its
    update (``add_bef_update`` / ``add_aft_update``, as BrainPy's delays and projections
    register themselves), no input functions (``add_inp_fun``, current or delta), no update
    set on the object, no noise, voltages not rescaled, a known ``spk_reset`` in
    ``TrainingMode``.
    """
    label = _label(lif)
    if type(lif) is not bp.dyn.Lif:
        return (f"{label} is not bp.dyn.Lif (refractory period, other dynamics or an "
                f"overridden update)")
    extension = _extension(lif)
    if extension is not None:
        return f"{label} {extension}"
    method = getattr(lif, 'method', 'exp_auto')
    if method not in methods:
        return f"{label} is stepped by method={method!r}, not {' or '.join(map(repr, methods))}"
    if isinstance(lif.mode, bm.TrainingMode) and lif.spk_reset not in ('soft', 'hard'):
        return f"{label} has spk_reset={lif.spk_reset!r}, neither 'soft' nor 'hard'"
    return None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def fused_constants(lif) -> _fused.LIF | str:
    """The fused step's constants for ``lif`` (:class:`bp_conv_ext.ops.fused.LIF`), or why
    the fused step does not compute it: it computes :func:`lif_unsupported`'s plain model
    with one number per parameter and a positive finite ``tau`` (BrainPy's own group runs
    the others)."""
    reason = lif_unsupported(lif)
    if reason is not None:
        return reason
    values = dict(tau=lif.tau, R=lif.R, V_rest=lif.V_rest, V_th=lif.V_th, V_reset=lif.V_reset)
    for name, value in values.items():
        if not _number(value):
            return f"{_label(lif)} has {name} per neuron (one number each is fused)"
    if not (values['tau'] > 0 and math.isfinite(values['tau'])):
        return f"{_label(lif)} has tau={values['tau']} (a positive finite tau is fused)"
    training = isinstance(lif.mode, bm.TrainingMode)
    return _fused.LIF.make(tau=float(lif.tau), dt=float(bm.get_dt()), v_rest=lif.V_rest,
                           v_th=lif.V_th, v_reset=lif.V_reset, r=lif.R,
                           soft=training and lif.spk_reset == 'soft',
                           detach=training and lif.detach_spk)
