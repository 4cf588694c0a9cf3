"""What the layers of both BrainPy APIs share: the ``backend`` attribute, and the behaviour
of a convolution layer and of a delay layer written once over a few hooks that each API fills
in (how an input is checked, where the parameters live, what unit the output has).

The hooks are declared here, each API's layer defines them; what other modules need of a layer
they get through the public methods (:meth:`ConvLayer.sequence_operands`), not the hooks."""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ..core.args import LayerConfig, check_backend
from ..core.sequence import check_fold, fold_time
from ..ops import conv as _conv
from ..ops import delays as _delays


class BackendChoice:
    """The ``backend`` attribute of the layers (both BrainPy APIs)."""

    _backend = 'auto'

    @property
    def backend(self) -> str:
        """How the convolution is computed; all choices give the same numbers.

        ``'auto'`` (default): event-driven for ``bool`` input (spikes) whose fraction of
        ``True`` entries is at most :func:`event_density_threshold` (checked at run time)
        on the platforms whose event kernels beat the dense path (the CPU), dense otherwise
        (on GPUs and TPUs).
        ``'event'``: always event-driven (on the CPU, work proportional to the nonzero
        inputs; any dtype). ``'dense'``: the dense algorithm chosen for the
        shape (on CUDA GPUs ``'im2col'`` for every shape); ``'xla'``, ``'xla2d'``,
        ``'im2col'``: that dense algorithm.
        ``which_backend`` says which one a call runs.
        """
        return self._backend

    @backend.setter
    def backend(self, value: str):
        self._backend = check_backend(value)


class ConvOperands(NamedTuple):
    """What a convolution layer computes a sequence with (:meth:`ConvLayer.sequence_operands`):
    mantissas, each with its unit (``None`` for plain arrays)."""

    #: The checked input, ``[T, ...]`` as the layer takes a sequence.
    xs: jax.Array
    x_unit: Any
    #: The kernel, ``[K, C_in // groups, C_out]``, its mask applied.
    kernel: jax.Array
    w_unit: Any
    #: The bias, ``[C_out]``, in the output's unit (the input's times the kernel's); ``None``
    #: for none.
    bias: jax.Array | None


class ConvLayer(BackendChoice):
    """A convolution layer: one step, a whole sequence folded into one call, and what a call
    computes with.

    Hooks, which each API's layer defines: ``config``; ``_checked(x, sequence)`` ->
    ``(array, unit)`` (``unit`` ``None`` for plain arrays); ``_kernel()`` -> ``(kernel,
    unit)``; ``_bias(x_unit, w_unit)``; ``_channels_last(x)``; ``_with_unit(y, x_unit)``.
    """

    config: LayerConfig
    # The configuration as brainpy.dnn.Conv1d and brainstate.nn.Conv1d expose it, which both
    # layers set (LayerConfig.attributes).
    in_channels: int
    out_channels: int
    groups: int
    padding_mode: str
    kernel_size: tuple[int]
    stride: tuple[int]
    lhs_dilation: tuple[int]
    rhs_dilation: tuple[int]
    padding: str | tuple[tuple[int, int]]

    def _checked(self, x, sequence: bool) -> tuple[jax.Array, Any]:
        raise NotImplementedError

    def _kernel(self) -> tuple[jax.Array, Any]:
        raise NotImplementedError

    def _bias(self, x_unit, w_unit) -> jax.Array | None:
        raise NotImplementedError

    def _channels_last(self, x: jax.Array) -> jax.Array:
        raise NotImplementedError

    def _with_unit(self, y: jax.Array, x_unit) -> Any:
        raise NotImplementedError

    def sequence_operands(self, xs) -> ConvOperands:
        """The checked sequence ``xs`` (``[T, ...]``, as :meth:`multi_step` takes it), the
        kernel and the bias, as mantissas with their units: what a fused spiking step computes
        this layer with."""
        xs, x_unit = self._checked(xs, sequence=True)
        kernel, w_unit = self._kernel()
        b = self._bias(x_unit, w_unit)
        return ConvOperands(xs, x_unit, kernel, w_unit,
                            None if b is None else jnp.reshape(b, (-1,)))

    def update(self, x):
        """Convolve one time step (its shape: see the class)."""
        x, unit = self._checked(x, sequence=False)
        return self._with_unit(self._convolve(x, unit), unit)

    def multi_step(self, xs, fold: str = 'time'):
        """Convolve a whole sequence in one folded call.

        Takes the steps stacked along a new first axis (``[T, ...]``) and returns the
        per-step outputs stacked the same way, equal to calling the layer on every step.
        ``fold``: how ``[T, B]`` becomes one batch: ``'time'`` (``T * B``, free; the default)
        or ``'batch'`` (``B * T``, for a batch split over devices: it stays split).
        """
        fold = check_fold(fold)
        xs, unit = self._checked(xs, sequence=True)
        if xs.ndim == 3:
            ys = self._convolve(xs, unit)
        else:
            ys = fold_time(lambda x: self._convolve(x, unit), xs, fold)
        return self._with_unit(ys, unit)

    def which_backend(self, x, platform=None) -> str:
        """What a call on ``x`` (concrete, one step as :meth:`update` takes it) computes with
        on ``platform`` (default: JAX's default backend): ``'event'`` or the dense
        algorithm's name, as :func:`bp_conv_ext.which_backend` says."""
        x, _ = self._checked(x, sequence=False)
        return _conv.which(self._channels_last(x), self._kernel()[0],
                           self.config.options(self.backend), platform)

    def _convolve(self, x, x_unit):
        """The output's mantissa for a batch ``x`` (a mantissa whose unit is ``x_unit``)."""
        w, w_unit = self._kernel()
        b = self._bias(x_unit, w_unit)
        y = _conv.apply(self._channels_last(x), w, b, self.config.options(self.backend))
        return self._channels_last(y)


class DelayLayer(BackendChoice):
    """Synapses with learnable delays: the kernel over time, its width and rounding, one step
    and a whole sequence through the ring buffer of past inputs.

    Hooks: ``config`` (a ``DelayConfig``); ``w``-like weights through ``_weights()`` (a
    mantissa); ``delay``, ``sigma``, ``rounded``, ``buffer``, ``index`` (states with
    ``.value``); ``_checked(x, sequence)`` -> ``(array, unit)``; ``_bias(x_unit)``;
    ``_with_unit(y, x_unit)``.
    """

    max_delay: int
    # States, each with a ``value``: the delays, the Gaussian's width, the rounding flag, the
    # ring buffer of past inputs and its index.
    delay: Any
    sigma: Any
    rounded: Any
    buffer: Any
    index: Any

    def _weights(self) -> jax.Array:
        raise NotImplementedError

    def _checked(self, x, sequence: bool) -> tuple[jax.Array, Any]:
        raise NotImplementedError

    def _bias(self, x_unit) -> jax.Array | None:
        raise NotImplementedError

    def _with_unit(self, y: jax.Array, x_unit) -> Any:
        raise NotImplementedError

    def kernel(self):
        """The kernel over time, ``[max_delay + 1, in_channels, out_channels]``: tap ``d``
        holds what the synapses pass on after ``d`` steps."""
        return _delays.layer_kernel(self._weights(), self.delay.value, self.max_delay,
                                    self.sigma.value, self.rounded.value)

    @property
    def interpolation(self) -> str:
        """``'gauss'`` or ``'round'`` (after :meth:`round_delays`); kept in the state
        (``rounded``)."""
        return _delays.interpolation_of(self.rounded.value)

    def set_sigma(self, sigma: float):
        """Set the Gaussian's width (in time steps, > 0), for example from
        :func:`bp_conv_ext.sigma_schedule` at the start of each epoch."""
        self.sigma.value = jnp.asarray(_delays.check_sigma(sigma), self.sigma.value.dtype)

    def round_delays(self):
        """Round every delay to its nearest whole step and switch to ``'round'``
        interpolation: each weight then sits on one tap, as a simulated synapse with an
        integer delay."""
        self.delay.value = jnp.round(jnp.clip(self.delay.value, 0, self.max_delay))
        self.rounded.value = _delays.rounded_flag('round')

    def update(self, x):
        """One time step: ``[C_in]`` or ``[B, C_in]`` in, ``[C_out]`` or ``[B, C_out]`` out."""
        x, unit = self._checked(x, sequence=False)
        y, self.buffer.value, self.index.value = _delays.step(
            self.buffer.value, self.index.value, x, self.kernel(), self._bias(unit),
            self.backend)
        return self._with_unit(y, unit)

    def multi_step(self, xs, fold: str = 'time'):
        """A whole sequence, ``[T, C_in]`` or ``[T, B, C_in]``, as one convolution over time;
        the outputs at every step, stacked along the first axis. Continues from the buffer
        and leaves in it the sequence's last ``max_delay`` inputs, as :meth:`update` would.
        (``fold`` is taken for the interface of ``LayerByLayer``, as the convolution layers
        take it: over time there is nothing to fold.)"""
        check_fold(fold)
        xs, unit = self._checked(xs, sequence=True)
        y, self.buffer.value, self.index.value = _delays.sequence(
            self.buffer.value, self.index.value, xs, self.kernel(), self._bias(unit),
            self.backend)
        return self._with_unit(y, unit)
