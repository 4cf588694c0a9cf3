"""The classic ``LayerByLayer``: a ``bp.Sequential`` that can run a whole sequence layer by
layer."""
import inspect

import brainpy as bp
import brainpy.math as bm
import jax
import jax.numpy as jnp

from ...core import sequence as _sequence


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
    dense layer is one large call instead of ``T`` small ones.

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

    def multi_step(self, xs, reset_state: bool = True, fold: str = 'time'):
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

        def whole(layer, xs):
            if isinstance(layer, LayerByLayer):
                return layer.multi_step(xs, reset_state=False, fold=fold)
            if _takes_fold(layer):
                return layer.multi_step(xs, fold=fold)
            return layer.multi_step(xs)

        return _sequence.layer_by_layer(
            self.children.values(), xs, fold, batched=batched, whole=whole,
            stateful=lambda layer: not isinstance(layer, bp.dnn.Layer), scan=_scan_time,
            per_step=lambda layer, xs: jax.vmap(layer)(xs))
