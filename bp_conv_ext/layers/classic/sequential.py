"""The classic ``LayerByLayer``: a ``bp.Sequential`` that can run a whole sequence layer by
layer."""
import inspect

import brainpy as bp
import brainpy.math as bm
import jax
import jax.numpy as jnp

from ...core import sequence as _sequence
from ...ops import fused as _fused
from . import neurons as _neurons
from .conv import Conv1d


def _takes_fold(layer) -> bool:
    """Whether ``layer.multi_step`` takes ``fold`` (this package's layers all do)."""
    return 'fold' in inspect.signature(layer.multi_step).parameters


def _scan_time(group, xs):
    """Advance a stateful group over the leading time axis, as a runner would."""
    dt = bm.get_dt()

    def step(i, x):
        bp.share.save(i=i, t=i * dt, dt=dt)
        y = group(x)
        bp.clear_input(group)
        return y

    return bm.for_loop(step, (jnp.arange(xs.shape[0]), xs))


def _fusion(conv, lif):
    """The fused step's constants where ``conv -> lif`` is a convolution that
    :func:`bp_conv_ext.ops.fused.conv_lif` computes (stride 1, one group, zero padding, no
    mask, the default backend) into a ``bp.dyn.Lif`` that it advances exactly as BrainPy does
    (:func:`bp_conv_ext.layers.classic.neurons.fused_constants`); else why not, in words."""
    reason = _fused.unfused_options(conv.name, conv.config, masked=conv.mask is not None,
                                    backend=conv.backend)
    if reason is not None:
        return reason
    return _neurons.fused_constants(lif)


class _ConvLif:
    """A ``Conv1d`` and the ``bp.dyn.Lif`` after it over a whole sequence, as one fused
    spiking step (:func:`bp_conv_ext.ops.fused.conv_lif`: one kernel on the CPU and on
    CUDA GPUs, the convolution folded over time then the neurons in a scan elsewhere);
    ``unfused(xs)`` where the neurons' shape is not the convolution's output."""

    def __init__(self, conv, lif, neurons, unfused):
        self.conv, self.lif, self.neurons, self.unfused = conv, lif, neurons, unfused

    def multi_step(self, xs, fold: str = 'time'):
        conv, lif = self.conv, self.lif
        operands = conv.sequence_operands(xs)
        xs = operands.xs
        batched = xs.ndim == 4
        sequence = xs if batched else xs[:, None]
        v0 = lif.V.value if batched else lif.V.value[None]
        c = conv.config
        if v0.shape[1:] != (c.output_length(sequence.shape[2]), c.out_channels):
            return self.unfused(xs)
        spikes, v = _fused.conv_lif(
            sequence, operands.kernel, operands.bias, v0, self.neurons, padding=c.padding,
            rhs_dilation=c.rhs_dilation, backend='auto', fold=fold,
            spike_fn=lif.spk_fun if isinstance(lif.mode, bm.TrainingMode) else None,
            spike_dtype=lif.spike.value.dtype)
        if not batched:
            spikes, v = spikes[:, 0], v[0]
        lif.V.value = v
        if spikes.shape[0]:
            lif.spike.value = spikes[-1]
        return spikes


class LayerByLayer(bp.Sequential):
    """A feedforward network that can run one step at a time or a whole sequence at once.

    Called like :class:`brainpy.Sequential` (``update``), it advances every layer by one
    time step, so it works in ``bp.DSRunner`` and ``bp.BPTT`` unchanged.
    :meth:`multi_step` runs a whole input sequence layer by layer instead:

    - layers with a ``multi_step`` method (:class:`bp_conv_ext.Conv1d`,
      :class:`bp_conv_ext.DelayConv1d`, a nested ``LayerByLayer``) get the whole sequence,
      and ``fold`` where they take it;
    - other stateless layers (``brainpy.dnn.Layer``: ``Dense``, ``Flatten``, pooling, ...)
      are folded over time (``[T, B, ...] -> [T * B, ...]``) and called once
      (``jax.vmap`` over time in ``NonBatchingMode``);
    - everything else (neuron groups such as ``bp.dyn.Lif``) is advanced step by step
      with ``bm.for_loop``, with ``t``, ``i`` and ``dt`` set as ``bp.DSRunner`` sets them.

    Both ways give the same outputs and gradients; layer by layer, each convolution and
    dense layer is one large call instead of ``T`` small ones. A :class:`Conv1d` followed by
    a ``bp.dyn.Lif`` runs as one fused spiking step where the fused step computes them
    (``fuse``; see :meth:`multi_step`).

    Examples
    --------
    >>> import brainpy as bp, brainpy.math as bm, jax.numpy as jnp
    >>> from bp_conv_ext import Conv1d, LayerByLayer
    >>> mode = bm.TrainingMode()
    >>> net = LayerByLayer(Conv1d(1, 4, 3, mode=mode),
    ...                    bp.dyn.Lif((20, 4), keep_size=True, mode=mode),
    ...                    bp.dnn.Flatten(mode=mode), bp.dnn.Dense(80, 2, mode=mode), mode=mode)
    >>> net.multi_step(jnp.ones((10, 8, 20, 1))).shape    # [T, B, H, C] -> [T, B, 2]
    (10, 8, 2)
    """

    def multi_step(self, xs, reset_state: bool = True, fold: str = 'time', fuse: bool = True):
        """Run the whole sequence ``xs`` (time first) through every layer in turn.

        Parameters
        ----------
        xs : ArrayLike
            ``[T, B, ...]`` in batching modes, ``[T, ...]`` in ``NonBatchingMode``.
        reset_state : bool
            Reset every stateful layer first (to batch size ``B``), so that each call
            starts a new sequence.
        fold : {'time', 'batch'}
            How the folded layers turn ``[T, B, ...]`` into one batch: ``T * B`` (a free
            reshape; the default) or ``B * T`` (batch first, so that a batch split over
            devices stays split: what :class:`LayerByLayerTrainer` uses for such a batch).
        fuse : bool
            Run each :class:`Conv1d` (stride 1, one group, zero padding, no mask, backend
            ``'auto'``) followed by a ``bp.dyn.Lif`` that is exactly BrainPy's LIF model
            (not a subclass; no hooks, input functions or noise; the default integration
            method; one positive finite ``tau`` and one number per parameter) as one
            spiking step (:func:`bp_conv_ext.ops.fused.conv_lif`): on the CPU one C++
            kernel for the whole sequence, forward and backward (where the machine has a
            C++17 compiler), on CUDA GPUs one kernel that never stores the convolution's
            output, elsewhere the same computation as unfused. The same spikes, states and
            (surrogate) gradients either way, with either ``fold``; forward-mode derivatives
            (``jax.jvp``) of the C++ kernel are not defined (``fuse=False`` computes them).
            :meth:`fusion` says which pairs are fused and why the others are not.

        Returns
        -------
        jax.Array
            The per-step outputs of the last layer, stacked along the first axis.
        """
        fold = _sequence.check_fold(fold)
        xs = bm.as_jax(xs)
        batched = isinstance(self.mode, bm.BatchingMode)
        if xs.ndim < (3 if batched else 2):
            raise ValueError(f"{self.name}.multi_step takes a time-first sequence "
                             f"({'[T, B, ...]' if batched else '[T, ...]'} in "
                             f"{type(self.mode).__name__}); got an input of shape {xs.shape}.")
        if reset_state:
            self.reset(xs.shape[1] if batched else None)

        if not isinstance(fuse, bool):
            raise TypeError(f"`fuse` (={fuse!r}) must be a bool.")

        def whole(layer, xs):
            if isinstance(layer, LayerByLayer):
                return layer.multi_step(xs, reset_state=False, fold=fold, fuse=fuse)
            if _takes_fold(layer):
                return layer.multi_step(xs, fold=fold)
            return layer.multi_step(xs)

        layers = list(self.children.values())
        if fuse:
            def pair(conv, lif):
                neurons = _fusion(conv, lif) if _candidate(conv, lif) else None
                return None if not isinstance(neurons, _fused.LIF) else _ConvLif(
                    conv, lif, neurons, lambda xs: _scan_time(lif, whole(conv, xs)))
            layers = _sequence.fuse_pairs(layers, pair)
        return _sequence.layer_by_layer(
            layers, xs, fold, batched=batched, whole=whole,
            stateful=lambda layer: not isinstance(layer, bp.dnn.Layer), scan=_scan_time,
            per_step=lambda layer, xs: jax.vmap(layer)(xs))

    def fusion(self) -> list[tuple[str, str, str | None]]:
        """Which :class:`Conv1d` -> neuron group pairs :meth:`multi_step` runs as one fused
        spiking step (with ``fuse=True``), and why the others are not.

        Returns
        -------
        list of (str, str, str or None)
            For each :class:`Conv1d` followed by a neuron group, in order (nested
            ``LayerByLayer`` included): the two layers' names and ``None`` where the pair is
            fused, else the reason it runs unfused (the group's hooks or inputs, its
            integration method, the convolution's options, ...). A pair whose neurons'
            shape is not the convolution's output also runs unfused.

        Examples
        --------
        >>> import brainpy as bp
        >>> from bp_conv_ext import Conv1d, LayerByLayer
        >>> lif = bp.dyn.Lif((20, 4), keep_size=True, method='euler', name='lif')
        >>> LayerByLayer(Conv1d(1, 4, 3, name='conv'), lif).fusion()
        [('conv', 'lif', "lif (bp.dyn.Lif) is stepped by method='euler', not 'exp_auto'")]
        """
        # Pairs within one LayerByLayer, as multi_step fuses them (never across a nested one).
        layers, report = list(self.children.values()), []
        for conv, lif in zip(layers, layers[1:] + [None]):
            if isinstance(conv, LayerByLayer):
                report += conv.fusion()
            elif _candidate(conv, lif):
                decision = _fusion(conv, lif)
                report.append((conv.name, lif.name,
                               None if isinstance(decision, _fused.LIF) else decision))
        return report


def _candidate(conv, neurons) -> bool:
    """Whether ``conv -> neurons`` is a pair the fused step might run: a :class:`Conv1d` into
    a neuron group."""
    return isinstance(conv, Conv1d) and isinstance(neurons, bp.dyn.NeuDyn)
