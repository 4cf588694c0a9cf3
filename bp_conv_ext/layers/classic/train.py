"""Training a :class:`LayerByLayer` network on whole sequences."""
import functools
from collections.abc import Callable, Iterable

import brainpy as bp
import brainpy.math as bm
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ...core.sequence import FOLDS
from .sequential import LayerByLayer


class LayerByLayerTrainer:
    """Gradient descent through :meth:`LayerByLayer.multi_step` with ``bm.grad``.

    It mirrors the parts of ``bp.BPTT`` that a training loop needs, with the same data
    layout and loss signature, so that one loss function serves both.

    Parameters
    ----------
    model : LayerByLayer
        The network, in ``TrainingMode``.
    loss_fun : callable
        ``loss_fun(predictions, targets) -> scalar``; predictions are laid out as the
        inputs (``[B, T, ...]`` when ``data_first_axis='B'``).
    optimizer : brainpy.optim.Optimizer
        Updates ``model.train_vars()``.
    data_first_axis : {'B', 'T'}
        Whether inputs (and predictions) are batch-first, as in ``bp.BPTT``, or time-first.
    """

    def __init__(self, model: LayerByLayer, loss_fun: Callable, optimizer: bp.optim.Optimizer,
                 data_first_axis: str = 'B'):
        if not isinstance(model, LayerByLayer):
            raise TypeError(f"`model` must be a bp_conv_ext.LayerByLayer, "
                            f"got {type(model).__name__}.")
        if not isinstance(model.mode, bm.TrainingMode):
            raise ValueError(f"`model` must be in TrainingMode to be trained, got {model.mode}.")
        if not isinstance(optimizer, bp.optim.Optimizer):
            raise TypeError(f"`optimizer` must be a brainpy.optim.Optimizer, "
                            f"got {type(optimizer).__name__}.")
        if data_first_axis not in ('B', 'T'):
            raise ValueError(f"`data_first_axis` (={data_first_axis!r}) must be 'B' or 'T'.")
        self.model = model
        self.loss_fun = loss_fun
        self.optimizer = optimizer
        self.data_first_axis = data_first_axis
        self.train_vars = model.train_vars().unique()
        optimizer.register_train_vars(self.train_vars)
        # One program per fold of [T, B] (see LayerByLayer.multi_step): batch first for a batch
        # split over devices, so that every device keeps its rows; time first otherwise.
        self._grads: dict[str, Callable] = {}
        self._train_steps: dict[str, Callable] = {}
        self._predicts: dict[str, Callable] = {}
        for fold in FOLDS:
            self._grads[fold] = bm.grad(functools.partial(self._loss, fold=fold),
                                        grad_vars=self.train_vars, return_value=True)
            self._train_steps[fold] = bm.jit(functools.partial(self._train_step, fold=fold))
            self._predicts[fold] = bm.jit(functools.partial(self._forward, fold=fold))

    def _train_step(self, xs, ys, fold):
        grads, loss = self._grads[fold](xs, ys)
        self.optimizer.update(grads)
        return loss

    def _forward(self, xs, fold):
        if self.data_first_axis == 'B':
            return jnp.swapaxes(self.model.multi_step(jnp.swapaxes(xs, 0, 1), fold=fold), 0, 1)
        return self.model.multi_step(xs, fold=fold)

    def _loss(self, xs, ys, fold):
        return self.loss_fun(self._forward(xs, fold), ys)

    def _fold(self, xs) -> str:
        """``'batch'`` for input split over several devices, ``'time'`` otherwise."""
        sharding = getattr(xs, 'sharding', None)
        split = sharding is not None and len(sharding.device_set) > 1 and \
            not sharding.is_fully_replicated
        return 'batch' if split else 'time'

    def loss_and_grads(self, xs, ys):
        """The loss on one batch and its gradients with respect to ``self.train_vars``."""
        grads, loss = self._grads[self._fold(xs)](bm.as_jax(xs), bm.as_jax(ys))
        return loss, grads

    def step(self, xs, ys) -> float:
        """One optimizer step on one batch; returns the loss before the step."""
        return float(self._train_steps[self._fold(xs)](bm.as_jax(xs), bm.as_jax(ys)))

    def lower(self, xs, ys):
        """The lowered program of one training step on this batch (a ``jax.stages.Lowered``):
        ``.compile().as_text()`` is what runs, with its cross-device collectives, and
        ``.compile().cost_analysis()`` its work. Needs BrainPy 2.7+, whose ``bm.jit`` lowers
        without running; BrainPy 2.6's raises ``NotImplementedError``."""
        lower = getattr(self._train_steps[self._fold(xs)], 'lower', None)
        if lower is None:
            raise NotImplementedError("LayerByLayerTrainer.lower needs BrainPy 2.7+, whose "
                                      "bm.jit can lower a function without running it; this "
                                      f"BrainPy's ({bp.__version__}) cannot.")
        return lower(bm.as_jax(xs), bm.as_jax(ys))

    def predict(self, xs):
        """The model's per-step outputs for ``xs`` (same layout as ``xs``)."""
        return self._predicts[self._fold(xs)](bm.as_jax(xs))

    def fit(self, train_data: Iterable | Callable[[], Iterable], num_epoch: int,
            progress_bar: bool = True) -> list[float]:
        """Train for ``num_epoch`` passes over ``train_data``.

        ``train_data`` is an iterable of ``(inputs, targets)`` batches, or a callable that
        returns a fresh one for every epoch (as ``bp.BPTT.fit`` takes). After every epoch the
        optimizer's learning-rate scheduler advances by one epoch
        (``optimizer.lr.step_epoch()``), as in ``bp.BPTT.fit``, so an epoch-based schedule
        runs the same under both trainers. Returns the mean training loss of each epoch.
        """
        history = []
        epochs = tqdm(range(num_epoch), desc='layer-by-layer training', unit='epoch',
                      disable=not progress_bar)
        for _ in epochs:
            batches = train_data() if callable(train_data) else train_data
            losses = [self.step(xs, ys) for xs, ys in batches]
            if not losses:
                raise ValueError("`train_data` gave no batches.")
            history.append(float(np.mean(losses)))
            self.optimizer.lr.step_epoch()
            epochs.set_postfix(loss=f"{history[-1]:.4f}")
        return history
