"""Argument normalisation for 1-D convolutions (pure functions, no state).

Every function here either returns a canonical value or raises ``TypeError`` /
``ValueError`` with a message naming the argument, echoing its value and saying
what was expected.
"""
import dataclasses
import functools
import inspect
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, ParamSpec, TypeVar, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from . import params as _params
from .dense import ALGORITHMS

PaddingSpec = str | tuple[int, int]

#: The forms of ``padding`` that :func:`canonical_padding` accepts.
PaddingLike = str | int | Sequence[int] | Sequence[Sequence[int]]

_P = ParamSpec('_P')
_R = TypeVar('_R')

PADDING_STRINGS = ('SAME', 'VALID', 'CAUSAL')


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(name: str, value: object) -> int:
    """Return ``value`` as an ``int`` if it is an integer >= 1.

    A sequence holding exactly one integer is accepted too, because BrainPy's
    layers take per-dimension tuples such as ``kernel_size=(3,)``.
    """
    raw = value
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise ValueError(f"`{name}` (={raw!r}) must be an int or a sequence of one int "
                             f"for a 1-D convolution, got a sequence of length {len(value)}.")
        value = value[0]
    if not _is_int(value):
        raise TypeError(f"`{name}` (={raw!r}) must be an int, got {type(value).__name__}.")
    value = cast(numbers.Integral, value)      # as _is_int checked
    if value < 1:
        raise ValueError(f"`{name}` (={raw!r}) must be a positive integer (>= 1).")
    return int(value)


def resolve_stride(stride: object, strides: object) -> int:
    """Merge BrainPy's ``stride`` and its older spelling ``strides``."""
    if stride is not None and strides is not None:
        raise ValueError(f"`stride` (={stride!r}) and `strides` (={strides!r}) were both given; "
                         f"pass only one of them (`strides` is the older name of `stride`).")
    if stride is None:
        stride = 1 if strides is None else strides
        return positive_int('strides' if strides is not None else 'stride', stride)
    return positive_int('stride', stride)


def check_groups(in_channels: int, out_channels: int, groups: object) -> int:
    groups = positive_int('groups', groups)
    if in_channels % groups:
        raise ValueError(f"`in_channels` (={in_channels}) must be divisible by `groups` "
                         f"(={groups}).")
    if out_channels % groups:
        raise ValueError(f"`out_channels` (={out_channels}) must be divisible by `groups` "
                         f"(={groups}).")
    return groups


def _padding_pair(raw: object, pair: Sequence[Any]) -> tuple[int, int]:
    if len(pair) != 2 or not all(_is_int(p) for p in pair):
        raise ValueError(f"`padding` (={raw!r}) must hold a (low, high) pair of ints, "
                         f"got {pair!r}.")
    low, high = int(pair[0]), int(pair[1])
    if low < 0 or high < 0:
        raise ValueError(f"`padding` (={raw!r}) must not be negative; got low={low}, high={high}.")
    return low, high


def canonical_padding(padding: object) -> PaddingSpec:
    """Normalise ``padding`` to ``'SAME'``, ``'VALID'``, ``'CAUSAL'`` or a ``(low, high)`` pair.

    Accepted forms: one of those strings in any case; a non-negative int ``p``
    (meaning ``(p, p)``); a ``(low, high)`` pair; a sequence holding one pair.
    """
    if isinstance(padding, str):
        upper = padding.upper()
        if upper not in PADDING_STRINGS:
            raise ValueError(f"`padding` (={padding!r}) must be one of "
                             f"{', '.join(PADDING_STRINGS)} (any case), an int, a (low, high) "
                             f"pair or a sequence holding one pair.")
        return upper
    if _is_int(padding):
        return _padding_pair(padding, (padding, padding))
    if isinstance(padding, (tuple, list)):
        if len(padding) == 1 and isinstance(padding[0], (tuple, list)):
            return _padding_pair(padding, padding[0])
        if len(padding) == 2 and all(_is_int(p) for p in padding):
            return _padding_pair(padding, padding)
        raise ValueError(f"`padding` (={padding!r}) must be an int, a (low, high) pair of ints "
                         f"or a sequence holding one such pair (one spatial dimension).")
    raise TypeError(f"`padding` (={padding!r}) must be a str, an int or a sequence, "
                    f"got {type(padding).__name__}.")


def layout_hint(shape: Sequence[int], in_channels: int, length: int | None = None,
                channels_last: bool = True) -> str:
    """A sentence to add to a shape error when ``shape`` would fit with its last two axes
    swapped (a channels-first ``[..., C, H]`` input for a channels-last layer, or the other
    way round); ``''`` otherwise.

    ``length`` (optional) is the length the layer expects; ``channels_last`` says the
    layer's layout.
    """
    if len(shape) < 2:
        return ''
    channels, samples = (shape[-1], shape[-2]) if channels_last else (shape[-2], shape[-1])
    fits = channels == in_channels and (length is None or samples == length)
    swapped = samples == in_channels and (length is None or channels == length)
    if fits or not swapped:
        return ''
    if channels_last:
        return (f" The layer is channels-last ([..., H, C], BrainPy's layout) and this input "
                f"has the {in_channels} channels in its second-to-last axis, as in PyTorch's "
                f"channels-first [..., C, H]: transpose it with x.swapaxes(-1, -2).")
    return (f" The layer is channels-first (channel_first=True: [..., C, L]) and this input "
            f"has the {in_channels} channels in its last axis: transpose it with "
            f"x.swapaxes(-1, -2), or build the layer with channel_first=False.")


#: PyTorch's keyword arguments (``torch.nn.Conv1d``, ``torch.nn.functional.conv1d``) that
#: every entry point spells differently, and what to write instead (``{value!r}``: the value
#: given); each entry point adds its own (``bias``, ``dtype``, ...).
PYTORCH_NAMES = {
    'dilation': "here it is `rhs_dilation` (the kernel's dilation; `lhs_dilation` dilates "
                "the input): write rhs_dilation={value!r}",
    'device': "there is no device argument here: JAX computes on its default device, or "
              "where the arrays are (choose it with jax.default_device, move arrays with "
              "jax.device_put)",
}


def refuse_pytorch_names(names: Mapping[str, str]
                         ) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Decorate a layer's ``__init__`` or a function so that a keyword it does not take but
    its PyTorch equivalent does (``dilation=``, ``bias=``, ...) raises a ``TypeError`` that
    names both spellings, instead of Python's bare "unexpected keyword argument".

    ``names`` maps each PyTorch keyword to a clause saying what to write here (``{value!r}``
    is replaced by the value given); keywords that the decorated function takes are left to it.
    """
    def decorate(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        taken = inspect.signature(fn).parameters
        foreign = {key: text for key, text in names.items() if key not in taken}
        owner = fn.__qualname__.replace('.__init__', '')

        @functools.wraps(fn)
        def checked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            for key in foreign.keys() & kwargs.keys():
                value = kwargs[key]
                raise TypeError(f"{owner}() got PyTorch's keyword `{key}` (={value!r}); "
                                f"{foreign[key].format(value=value)}.")
            return fn(*args, **kwargs)
        return checked
    return decorate


def dilated_length(length: int, dilation: int) -> int:
    """Length of a sequence with ``dilation - 1`` zeros inserted between its elements."""
    return 0 if length == 0 else (length - 1) * dilation + 1


def resolve_padding(padding: PaddingSpec, length: int, kernel_size: int, stride: int,
                    lhs_dilation: int, rhs_dilation: int) -> tuple[int, int]:
    """Return the explicit ``(low, high)`` padding for an input of ``length`` samples.

    ``'SAME'`` pads the lhs-dilated input so that the output has
    ``ceil(((length - 1) * lhs_dilation + 1) / stride)`` samples (as
    ``lax.padtype_to_pads``, extra padding on the high side); ``'CAUSAL'`` pads
    ``rhs_dilation * (kernel_size - 1)`` samples on the low side only.
    """
    if not isinstance(padding, str):
        return padding
    span = dilated_length(kernel_size, rhs_dilation)
    if padding == 'VALID':
        return 0, 0
    if padding == 'CAUSAL':
        return span - 1, 0
    in_len = dilated_length(length, lhs_dilation)
    out_len = -(-in_len // stride)
    total = max((out_len - 1) * stride + span - in_len, 0)
    return total // 2, total - total // 2


def output_length(length: int, kernel_size: int, stride: int, padding: PaddingSpec,
                  lhs_dilation: int = 1, rhs_dilation: int = 1) -> int:
    """Number of output samples; raises ``ValueError`` when the input is too short.

    The arguments are checked as the layers and :func:`bp_conv_ext.conv1d` check them
    (``padding`` in any of their forms). With ``(low, high)`` the resolved padding,
    ``Hd = (length - 1) * lhs_dilation + 1`` and ``Kd = (kernel_size - 1) * rhs_dilation + 1``::

        out = floor((Hd + low + high - Kd) / stride) + 1

    Examples
    --------
    >>> from bp_conv_ext import output_length
    >>> output_length(10, 3, 1, 'valid'), output_length(10, 3, 2, 'SAME')
    (8, 5)
    """
    if not _is_int(length):
        raise TypeError(f"`length` (={length!r}) must be an int, got {type(length).__name__}.")
    kernel_size = positive_int('kernel_size', kernel_size)
    stride = positive_int('stride', stride)
    lhs_dilation = positive_int('lhs_dilation', lhs_dilation)
    rhs_dilation = positive_int('rhs_dilation', rhs_dilation)
    padding = canonical_padding(padding)
    if length < 1:
        raise ValueError(f"the input has {length} samples along the length axis; "
                         f"a convolution needs at least one.")
    low, high = resolve_padding(padding, length, kernel_size, stride, lhs_dilation, rhs_dilation)
    padded = dilated_length(length, lhs_dilation) + low + high
    span = dilated_length(kernel_size, rhs_dilation)
    if padded < span:
        raise ValueError(
            f"the input is too short for the kernel: {length} samples "
            f"(lhs_dilation={lhs_dilation}) padded by {(low, high)} give {padded} samples, "
            f"but the dilated kernel spans {span} (kernel_size={kernel_size}, "
            f"rhs_dilation={rhs_dilation}); use a longer input or padding='SAME'.")
    return (padded - span) // stride + 1


#: Values of ``padding_mode`` (PyTorch's names) and the ``jnp.pad`` mode of each.
PADDING_MODES = {'zeros': 'constant', 'reflect': 'reflect', 'replicate': 'edge',
                 'circular': 'wrap'}


def check_padding_mode(padding_mode: object, lhs_dilation: int) -> str:
    """Validate ``padding_mode``: one of :data:`PADDING_MODES`; modes other than ``'zeros'``
    need ``lhs_dilation == 1`` (padding a dilated input with its own samples has no
    meaning: the holes are zeros)."""
    if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
        raise ValueError(f"`padding_mode` (={padding_mode!r}) must be one of "
                         f"{', '.join(map(repr, PADDING_MODES))}.")
    if padding_mode != 'zeros' and lhs_dilation != 1:
        raise ValueError(f"`padding_mode` (={padding_mode!r}) needs lhs_dilation=1, got "
                         f"lhs_dilation={lhs_dilation}; only 'zeros' padding works on a "
                         f"dilated input.")
    return padding_mode


def check_padding_fits(padding_mode: str, pads: tuple[int, int], length: int) -> None:
    """Refuse padding that ``padding_mode`` cannot take from an input of ``length`` samples:
    ``'reflect'`` needs each side narrower than the input, ``'circular'`` no wider
    (PyTorch's limits)."""
    widest = max(pads)
    if padding_mode == 'reflect' and widest >= length:
        raise ValueError(f"padding_mode='reflect' needs padding narrower than the input: the "
                         f"padding is {tuple(pads)} but the input has {length} samples.")
    if padding_mode == 'circular' and widest > length:
        raise ValueError(f"padding_mode='circular' needs padding no wider than the input: the "
                         f"padding is {tuple(pads)} but the input has {length} samples.")


def as_input(x: object) -> jax.Array:
    """``x`` as a JAX array; a clear ``TypeError`` for ``None``, strings, objects and the
    like."""
    if x is None:
        raise TypeError("the input is None; expected an array of bool, integer or real "
                        "floating values.")
    try:
        return jnp.asarray(x)      # also takes brainpy arrays and variables
    except TypeError as err:
        dtype = x.dtype if hasattr(x, 'dtype') else np.asarray(x, dtype=object).dtype
        raise TypeError(f"the input must hold bool, integer or real floating values; got "
                        f"{type(x).__name__} with dtype {dtype}.") from err


class ConvOptions(NamedTuple):
    """The validated, canonical options of one convolution: what :func:`bp_conv_ext.conv1d`
    checks once and the core passes on whole. ``padding`` is ``'SAME'``, ``'VALID'``,
    ``'CAUSAL'`` or a ``(low, high)`` pair; ``backend`` one of :data:`BACKENDS`."""
    stride: int = 1
    padding: PaddingSpec = 'SAME'
    lhs_dilation: int = 1
    rhs_dilation: int = 1
    groups: int = 1
    padding_mode: str = 'zeros'
    backend: str = 'auto'


#: Values of ``backend``: ``'auto'``; ``'dense'`` (the dense algorithm picked by
#: :func:`core.dense.choose`); one dense algorithm by name; ``'event'``.
BACKENDS = ('auto', 'dense') + ALGORITHMS + ('event',)


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"`backend` (={backend!r}) must be one of "
                         f"{', '.join(map(repr, BACKENDS))}.")
    return backend


def conv_arguments(x: ArrayLike, w: ArrayLike, b: ArrayLike | None = None, *, stride: int,
                   padding: PaddingLike, lhs_dilation: int, rhs_dilation: int, groups: int,
                   mask: ArrayLike | None = None, backend: str, padding_mode: str
                   ) -> tuple[jax.Array, jax.Array, jax.Array | None, ConvOptions]:
    """Check the arguments of :func:`bp_conv_ext.conv1d`, once; returns ``x``, ``w`` (masked),
    ``b`` as arrays and their :class:`ConvOptions`."""
    x = as_input(x)
    w = _params.real_floats('w', w)
    if x.ndim not in (2, 3):
        raise ValueError(f"`x` must have shape [H, C] or [B, H, C], got shape {x.shape}.")
    if w.ndim != 3 or 0 in (w.shape[0], w.shape[2]):
        raise ValueError(f"`w` must have shape [K, C_in // groups, C_out] with at least one tap "
                         f"and one output channel, got shape {w.shape}.")
    groups = check_groups(x.shape[-1], w.shape[2], groups)
    if w.shape[1] * groups != x.shape[-1]:
        raise ValueError(f"`w` (shape {w.shape}) expects {w.shape[1] * groups} input channels "
                         f"with groups={groups}, but `x` (shape {x.shape}) has {x.shape[-1]}." +
                         layout_hint(x.shape, w.shape[1] * groups))
    stride = positive_int('stride', stride)
    lhs_dilation = positive_int('lhs_dilation', lhs_dilation)
    rhs_dilation = positive_int('rhs_dilation', rhs_dilation)
    padding = canonical_padding(padding)
    check_padding_mode(padding_mode, lhs_dilation)
    check_backend(backend)
    if mask is not None:
        _params.real_floats('mask', mask)
        w = w * cast(jax.Array, _params.make_mask(mask, w.shape, w.dtype))   # mask not None
    if b is not None:
        b = _params.real_floats('b', b)
        if b.size != w.shape[2]:
            raise ValueError(f"`b` (shape {b.shape}) must hold one value per output channel "
                             f"({w.shape[2]}).")
    return x, w, b, ConvOptions(stride, padding, lhs_dilation, rhs_dilation, groups,
                                padding_mode, backend)


@dataclasses.dataclass(frozen=True)
class LayerConfig:
    """The validated, canonical options of a convolution layer (of either BrainPy API).

    ``padding`` is ``'SAME'``, ``'VALID'`` or a ``(low, high)`` pair (``'CAUSAL'`` is
    resolved to its pair, which does not depend on the input length).
    """
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    padding: PaddingSpec
    lhs_dilation: int
    rhs_dilation: int
    groups: int
    padding_mode: str

    @property
    def kernel_shape(self) -> tuple[int, int, int]:
        """``(K, in_channels // groups, out_channels)``."""
        return self.kernel_size, self.in_channels // self.groups, self.out_channels

    def output_length(self, length: int) -> int:
        return output_length(length, self.kernel_size, self.stride, self.padding,
                             self.lhs_dilation, self.rhs_dilation)

    def attributes(self) -> dict[str, object]:
        """The configuration as ``brainpy.dnn.Conv1d`` and ``brainstate.nn.Conv1d`` expose it
        (both layers set these): per-dimension tuples, ``padding`` a string or a tuple of one
        ``(low, high)`` pair."""
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    groups=self.groups, kernel_size=(self.kernel_size,), stride=(self.stride,),
                    lhs_dilation=(self.lhs_dilation,), rhs_dilation=(self.rhs_dilation,),
                    padding=self.padding if isinstance(self.padding, str) else (self.padding,),
                    padding_mode=self.padding_mode)

    def options(self, backend: str) -> ConvOptions:
        """The options of this layer's convolutions, computed with ``backend``."""
        return ConvOptions(self.stride, self.padding, self.lhs_dilation, self.rhs_dilation,
                           self.groups, self.padding_mode, backend)


def layer_config(in_channels: object, out_channels: object, kernel_size: object, stride: object,
                 padding: object, lhs_dilation: object, rhs_dilation: object, groups: object,
                 padding_mode: object) -> LayerConfig:
    """Check a layer's constructor arguments once; ``stride`` may be a resolved int."""
    in_channels = positive_int('in_channels', in_channels)
    out_channels = positive_int('out_channels', out_channels)
    kernel_size = positive_int('kernel_size', kernel_size)
    stride = positive_int('stride', stride)
    lhs_dilation = positive_int('lhs_dilation', lhs_dilation)
    rhs_dilation = positive_int('rhs_dilation', rhs_dilation)
    groups = check_groups(in_channels, out_channels, groups)
    padding = canonical_padding(padding)
    if padding == 'CAUSAL':
        padding = resolve_padding(padding, 1, kernel_size, 1, 1, rhs_dilation)
    padding_mode = check_padding_mode(padding_mode, lhs_dilation)
    return LayerConfig(in_channels, out_channels, kernel_size, stride, padding, lhs_dilation,
                       rhs_dilation, groups, padding_mode)
