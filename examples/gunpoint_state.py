"""Train the GunPoint spiking CNN written with ``brainpy.state`` neurons and brainstate tools.

The same task, encoding and network shape as ``gunpoint.py``, in the newer API::

    Conv1d(1->32, K=7) -> LIF -> AvgPool(2) -> Conv1d(32->32, K=5) -> LIF -> AvgPool(2)
    -> Flatten -> Linear(->2)

with ``bp_conv_ext.state.Conv1d`` (kernels in mA, so the convolutions feed the neurons an
input current), ``brainpy.state.LIF`` neurons, ``brainstate.transform`` for the loop and the
gradient and ``braintools.optim.Adam``. The network is trained twice from the same initial
weights: per step (``brainstate.transform.for_loop`` over the whole network, surrogate
gradients through time) and layer by layer (``LayerByLayer.multi_step``); the second is
saved with ``braintools.file.msgpack_save``, loaded into a freshly built network and
evaluated again.

    python examples/gunpoint_state.py [--quick] [--epochs N] [--out DIR]
"""
import argparse
import os
import sys
import time

import brainpy.state
import brainstate
import braintools
import brainunit as u
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gunpoint import LENGTH, batches, encode, load_gunpoint, plot_learning_curves  # noqa: E402

from bp_conv_ext.state import Conv1d, LayerByLayer  # noqa: E402

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


class Trainer:
    """Training and prediction with brainstate's transforms and a braintools optimizer."""

    def __init__(self, net, method: str, lr: float):
        self.net, self.per_step = net, method == 'per step'
        self.params = net.states(brainstate.ParamState)
        self.optimizer = braintools.optim.Adam(lr=lr)
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


def train(method, data, epochs, lr, batch_size, seed, eval_every):
    """Train a freshly built network; returns its trainer, history and wall time."""
    brainstate.random.seed(seed)
    trainer = Trainer(build_network(), method, lr)
    (x_train, y_train), (x_test, y_test) = data['train'], data['test']
    rng = np.random.default_rng(seed)
    history = {'epoch': [], 'loss': [], 'eval_epoch': [], 'test_accuracy': []}
    start = time.perf_counter()
    bar = tqdm(range(1, epochs + 1), desc=f'{method:>14}', unit='epoch')
    for epoch in bar:
        history['epoch'].append(epoch)
        history['loss'].append(trainer.fit_epoch(batches(x_train, y_train, batch_size, rng)))
        if epoch % eval_every == 0 or epoch == epochs:
            history['eval_epoch'].append(epoch)
            history['test_accuracy'].append(trainer.accuracy(x_test, y_test))
            bar.set_postfix(loss=f"{history['loss'][-1]:.3f}",
                            test_acc=f"{history['test_accuracy'][-1]:.3f}")
    return trainer, history, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true',
                        help='a few epochs on 40 series, to check that everything runs')
    parser.add_argument('--epochs', type=int, default=None, help='training epochs (default 400)')
    parser.add_argument('--steps', type=int, default=8, help='time steps per series')
    parser.add_argument('--seed', type=int, default=0, help='initialisation and shuffling seed')
    parser.add_argument('--out', default=os.path.join('out', 'gunpoint_state'),
                        help='folder for the figure and the checkpoint')
    args = parser.parse_args(argv)
    epochs = args.epochs or (2 if args.quick else 400)
    os.makedirs(args.out, exist_ok=True)
    print(f"outputs go to {os.path.abspath(args.out)}")

    raw = load_gunpoint(args.quick)
    data = {split: (encode(x, args.steps), y) for split, (x, y) in raw.items()}
    print(f"GunPoint: {len(data['train'][1])} training and {len(data['test'][1])} test series, "
          f"encoded as {args.steps} steps of input current, shape {data['train'][0].shape[1:]}")

    options = dict(epochs=epochs, lr=5e-3, batch_size=10, seed=args.seed,
                   eval_every=1 if args.quick else 20)
    with brainstate.environ.context(dt=DT):
        results = {method: train(method, data, **options)
                   for method in ('per step', 'layer by layer')}
        histories = {method: r[1] for method, r in results.items()}
        figure = os.path.join(args.out, 'learning_curve_state.png')
        plot_learning_curves(histories, figure, title='GunPoint, brainpy.state')

        trainer = results['layer by layer'][0]
        checkpoint = os.path.join(args.out, 'gunpoint_state.msgpack')
        braintools.file.msgpack_save(checkpoint, trainer.params)
        x_test, y_test = data['test']
        final_accuracy = trainer.accuracy(x_test, y_test)
        fresh = build_network()
        braintools.file.msgpack_load(checkpoint, target=fresh.states(brainstate.ParamState))
        reloaded_accuracy = Trainer(fresh, 'layer by layer', lr=0.0).accuracy(x_test, y_test)

    print("\nsummary")
    for method, (_, history, seconds) in results.items():
        print(f"  {method:>14}: {epochs} epochs in {seconds:6.1f} s, final training loss "
              f"{history['loss'][-1]:.4f}, test accuracy {history['test_accuracy'][-1]:.3f}")
    per_step, layerwise = (results[m][2] for m in ('per step', 'layer by layer'))
    print(f"  layer-by-layer training was {per_step / layerwise:.1f}x faster than per-step")
    print(f"  checkpoint {checkpoint}: test accuracy {final_accuracy:.3f} before saving, "
          f"{reloaded_accuracy:.3f} after loading into a fresh network")
    print(f"  learning curves: {figure}")
    return {'test_accuracy': final_accuracy, 'reloaded_accuracy': reloaded_accuracy,
            'figure': figure, 'checkpoint': checkpoint,
            'seconds': {m: r[2] for m, r in results.items()},
            'test_accuracy_by_method': {m: r[1]['test_accuracy'][-1]
                                        for m, r in results.items()}}


if __name__ == '__main__':
    main()
