"""Train the GunPoint spiking CNN written with ``brainpy.state`` neurons and brainstate tools.

The same task, encoding and network shape as ``gunpoint.py``, in the newer API::

    Conv1d(1->32, K=7) -> LIF -> AvgPool(2) -> Conv1d(32->32, K=5) -> LIF -> AvgPool(2)
    -> Flatten -> Linear(->2)

with ``bp_conv_ext.state.Conv1d`` (kernels in mA, so the convolutions feed the neurons an
input current), ``brainpy.state.LIF`` neurons, ``brainstate.transform`` for the loop and the
gradient and ``braintools.optim.Adam``. The network is trained twice from the same initial
weights: per step (``brainstate.transform.for_loop`` over the whole network, surrogate
gradients through time) and layer by layer (``LayerByLayer.multi_step``), with the recipe
of ``gunpoint.py`` (``RECIPE``: warm-up and cosine decay of the learning rate, gradients
clipped to a global norm); the second is saved with ``braintools.file.msgpack_save``, loaded
into a freshly built network and evaluated again. The outcome goes to
``gunpoint_state.json`` beside the figure.

    python examples/gunpoint_state.py [--quick] [--epochs N] [--seed S] [--out DIR]
"""
import os
import sys

import brainpy.state
import brainstate
import braintools
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gunpoint import (
    LENGTH,
    RECIPE,
    arguments,
    encoded_data,
    learning_rate,
    plot_learning_curves,
    run_epochs,
    summary,
    training_options,
    write_json,
)

from bp_conv_ext.state import Conv1d, LayerByLayer

DT = 0.1 * u.ms


def build_network(length: int = LENGTH):
    """The network, for series of ``length`` samples (GunPoint's: 150)."""
    lif = dict(tau=0.5 * u.ms, V_th=0.3 * u.mV, spk_fun=braintools.surrogate.Arctan())
    current = brainstate.nn.init.XavierNormal(unit=u.mA)
    return LayerByLayer(
        Conv1d((length, 1), 32, 7, w_init=current, b_init=brainstate.nn.init.ZeroInit(u.mA)),
        brainpy.state.LIF((length, 32), **lif),
        brainstate.nn.AvgPool1d(2, 2, channel_axis=-1, in_size=(length, 32)),
        Conv1d((length // 2, 32), 32, 5, w_init=current,
               b_init=brainstate.nn.init.ZeroInit(u.mA)),
        brainpy.state.LIF((length // 2, 32), **lif),
        brainstate.nn.AvgPool1d(2, 2, channel_axis=-1, in_size=(length // 2, 32)),
        brainstate.nn.Flatten(in_size=(length // 4, 32)),
        brainstate.nn.Linear(length // 4 * 32, 2))


class WarmupCosine(braintools.optim.LRScheduler):
    """``gunpoint.learning_rate`` as a braintools scheduler; ``step()`` after every epoch."""

    def __init__(self, epochs: int, recipe=RECIPE):
        self.epochs, self.recipe = epochs, recipe
        super().__init__(base_lr=recipe['peak_lr'])

    def get_lr(self):
        return [learning_rate(self.last_epoch.value, self.epochs, self.recipe)]


class Trainer:
    """Training and prediction with brainstate's transforms and a braintools optimizer
    (``epochs=None``: prediction only)."""

    def __init__(self, net, method: str, epochs=None, recipe=RECIPE):
        self.net, self.per_step = net, method == 'per step'
        self.params = net.states(brainstate.ParamState)
        self.schedule = WarmupCosine(epochs or 1, recipe)
        self.optimizer = braintools.optim.Adam(lr=self.schedule,
                                               grad_clip_norm=recipe['clip_global_norm'])
        self.optimizer.register_trainable_weights(self.params)
        self._step = brainstate.transform.jit(self._train_step)
        self._predict = brainstate.transform.jit(self._outputs)

    def _outputs(self, xs):
        """[T, B, 150, 1] -> [T, B, 2], every sequence from fresh neuron states."""
        brainstate.nn.init_all_states(self.net, xs.shape[1])
        if self.per_step:
            return brainstate.transform.for_loop(self.net, xs)
        return self.net.multi_step(xs)

    def _loss(self, xs, ys):
        logits = self._outputs(xs).mean(axis=0)
        return braintools.metric.softmax_cross_entropy_with_integer_labels(logits, ys).mean()

    def _train_step(self, xs, ys):
        grads, loss = brainstate.transform.grad(self._loss, self.params, return_value=True)(
            xs, ys)
        self.optimizer.update(grads)
        return loss

    def fit_epoch(self, data) -> float:
        return float(np.mean([self._step(jnp.swapaxes(x, 0, 1), y) for x, y in data]))

    def accuracy(self, x, y) -> float:
        logits = np.asarray(self._predict(jnp.swapaxes(jnp.asarray(x), 0, 1))).mean(axis=0)
        return float((logits.argmax(-1) == y).mean())


def parameters(trainer) -> dict:
    """The trainable parameters, as NumPy arrays (units dropped) by name."""
    leaves = jax.tree_util.tree_leaves_with_path(
        {'.'.join(map(str, path)): state.value for path, state in trainer.params.items()},
        is_leaf=u.math.is_quantity)
    return {jax.tree_util.keystr(path): np.asarray(u.get_mantissa(leaf))
            for path, leaf in leaves}


def train(method, data, epochs, batch_size, seed, eval_every, recipe=RECIPE, on_epoch=None):
    """Train a freshly built network; returns its trainer, history and wall time.
    ``on_epoch(epoch, trainer)``, if given, is called after every epoch."""
    brainstate.random.seed(seed)
    trainer = Trainer(build_network(), method, epochs, recipe)
    (x_train, y_train), (x_test, y_test) = data['train'], data['test']

    def end_epoch(epoch):
        trainer.schedule.step()
        if on_epoch is not None:
            on_epoch(epoch, trainer)

    history, seconds = run_epochs(method, trainer.fit_epoch,
                                  lambda: trainer.accuracy(x_test, y_test),
                                  x_train, y_train, epochs, batch_size, seed, eval_every,
                                  end_epoch)
    return trainer, history, seconds


def main(argv=None):
    args, epochs = arguments(argv, __doc__.splitlines()[0], 'gunpoint_state')
    data = encoded_data(args)
    with brainstate.environ.context(dt=DT):
        results = {method: train(method, data, **training_options(args, epochs))
                   for method in ('per step', 'layer by layer')}
        figure = os.path.join(args.out, 'learning_curve_state.png')
        plot_learning_curves({method: r[1] for method, r in results.items()}, figure,
                             title='GunPoint, brainpy.state')

        trainer = results['layer by layer'][0]
        checkpoint = os.path.join(args.out, 'gunpoint_state.msgpack')
        braintools.file.msgpack_save(checkpoint, trainer.params)
        x_test, y_test = data['test']
        final_accuracy = trainer.accuracy(x_test, y_test)
        fresh = build_network()
        braintools.file.msgpack_load(checkpoint, target=fresh.states(brainstate.ParamState))
        reloaded_accuracy = Trainer(fresh, 'layer by layer').accuracy(x_test, y_test)
    results = {m: r[1:] for m, r in results.items()}
    report = os.path.join(args.out, 'gunpoint_state.json')
    write_json(report, results, epochs, args.seed, {'api': 'brainpy.state'})
    return summary(results, epochs, checkpoint, (final_accuracy, reloaded_accuracy), figure,
                   report)


if __name__ == '__main__':
    main()
