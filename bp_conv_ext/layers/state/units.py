"""Units (brainunit) on the brainpy.state layers: the output has the input's unit times the
kernel's; a bias must have that unit."""
import brainunit as u

from ...core import params as _params


def times(unit_a, unit_b):
    if unit_a is None:
        return unit_b
    return unit_a if unit_b is None else unit_a * unit_b


def bias_mantissa(label, b, x_unit, w_unit):
    """The bias (``None`` for none) in the output's unit, the input's times the kernel's."""
    unit = times(x_unit, w_unit)
    if b is not None and (unit is not None or isinstance(b, u.Quantity)):
        out_unit = u.UNITLESS if unit is None else unit
        if u.get_dim(b) != u.get_dim(out_unit):
            raise u.UnitMismatchError(
                f"{label}: the bias has unit {u.get_unit(b)}, but the output has unit "
                f"{out_unit} (the input's unit {x_unit or u.UNITLESS} times the kernel's "
                f"{w_unit or u.UNITLESS}); give b_init that unit.")
        b = u.Quantity(b).to_decimal(out_unit)
    return b


def with_unit(y, x_unit, kernel):
    """The output mantissa ``y`` with its unit: the input's times the kernel's."""
    unit = times(x_unit, _params.split_unit(kernel)[1])
    return y if unit is None else u.maybe_decimal(u.Quantity(y, unit=unit))
