"""Train a spiking 1-D CNN on the UCR GunPoint data set, per step and layer by layer.

The data set (50 training and 150 test series of 150 samples, two classes) ships inside
the ``aeon`` wheel, so nothing is downloaded. Each series is fed as a constant input
current for ``T`` time steps to::

    Conv1d(1->32, K=7) -> LIF -> AvgPool(2) -> Conv1d(32->32, K=5) -> LIF -> AvgPool(2)
    -> Flatten -> Dense(->2)

and the class is read from the time-averaged output. The same network, from the same
initial weights, is trained twice: per step with ``bp.BPTT`` and layer by layer with
``bp_conv_ext.LayerByLayerTrainer``. The layer-by-layer model is then saved as a
checkpoint, reloaded into a freshly built network and evaluated again.

Both trainers follow one recipe (``RECIPE``): Adam with a linear warm-up and a cosine decay
of the learning rate over the epochs, and the gradients clipped to a global norm. The two
loops compute the same function, but their float32 rounding differs, and spike thresholds
amplify the difference, so that their trajectories separate; a learning rate that decays
lets both settle instead of moving on to the end.

Writes the learning curves, the checkpoint and ``gunpoint.json`` (final accuracies and
losses of both trainers, their largest difference, the recipe, the machine) to ``--out``.

    python examples/gunpoint.py [--quick] [--epochs N] [--seed S] [--out DIR]
"""
import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import time

import brainpy as bp
import brainpy.math as bm
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

import bp_conv_ext

LENGTH = 150

# The training recipe of both examples. The learning rate rises linearly from
# `peak_lr / warmup_epochs` to `peak_lr` over the first `warmup_epochs` epochs, then falls
# along a cosine to `final_lr` at the last epoch; it is constant within an epoch.
RECIPE = dict(optimizer='Adam', peak_lr=5e-3, final_lr=5e-5, warmup_epochs=10,
              schedule='linear warm-up, then cosine decay, per epoch', clip_global_norm=1.0,
              batch_size=10, augmentation='shift by up to 10 samples, rescale by up to 10 %')


def load_gunpoint(quick: bool):
    from aeon.datasets import load_gunpoint as load
    splits = {}
    for split in ('train', 'test'):
        x, y = load(split=split)
        x = x[:, 0, :].astype(np.float32)                  # [N, 150], z-normalised by UCR
        labels = (y.astype(int) - 1).astype(np.int32)      # '1', '2' -> 0, 1
        if quick:
            x, labels = x[:40], labels[:40]
        splits[split] = (x, labels)
    return splits


def encode(series: np.ndarray, steps: int, gain: float = 2.0) -> np.ndarray:
    """A constant input current per series: [N, 150] -> [N, T, 150, 1]."""
    return np.repeat(gain * series[:, None, :, None], steps, axis=1)


def build_network(length: int = LENGTH, spk_reset: str = 'soft'):
    """The network, for series of ``length`` samples (GunPoint's: 150); ``spk_reset='hard'``
    sets a neuron that spikes to V_reset instead (as NIR's LIF does: nir_export.py)."""
    mode = bm.TrainingMode()
    # A spike lowers V by V_th - V_reset (soft reset): with V_reset at rest, by one threshold
    # (BrainPy's default V_reset=-5 would lower it by 5.3 and keep the neuron silent for most
    # of the T steps). The surrogate gradient is an arctan of V - V_th in units of that step,
    # as in brainpy.state's LIF: the network of gunpoint_state.py.
    v_th, v_reset = 0.3, 0.0
    lif = dict(keep_size=True, tau=0.5, V_th=v_th, V_reset=v_reset, spk_reset=spk_reset,
               spk_fun=bm.surrogate.Arctan(alpha=1 / (v_th - v_reset)), mode=mode)
    return bp_conv_ext.LayerByLayer(
        bp_conv_ext.Conv1d(1, 32, 7, mode=mode),
        bp.dyn.Lif((length, 32), **lif),
        bp.dnn.AvgPool1d(2, 2, channel_axis=-1, mode=mode),
        bp_conv_ext.Conv1d(32, 32, 5, mode=mode),
        bp.dyn.Lif((length // 2, 32), **lif),
        bp.dnn.AvgPool1d(2, 2, channel_axis=-1, mode=mode),
        bp.dnn.Flatten(mode=mode),
        bp.dnn.Dense(length // 4 * 32, 2, mode=mode),
        mode=mode)


def loss_fun(predictions, targets):
    """Cross-entropy of the time-averaged output; predictions are [B, T, 2]."""
    return bp.losses.cross_entropy_loss(predictions.mean(axis=1), targets)


def augment(x, rng, max_shift=10, max_scale=0.1):
    """Shift each encoded series in time (edges repeated) and rescale it slightly."""
    shifts = rng.integers(-max_shift, max_shift + 1, len(x))
    positions = np.clip(np.arange(LENGTH)[None, :] - shifts[:, None], 0, LENGTH - 1)
    shifted = np.take_along_axis(x, positions[:, None, :, None], axis=2)
    scales = rng.uniform(1 - max_scale, 1 + max_scale, (len(x), 1, 1, 1))
    return (shifted * scales).astype(np.float32)


def batches(x, y, batch_size, rng):
    """Shuffled, augmented training batches for one epoch."""
    order = rng.permutation(len(x))
    x = augment(x[order], rng)
    return [(jnp.asarray(x[i:i + batch_size]), jnp.asarray(y[order[i:i + batch_size]]))
            for i in range(0, len(x), batch_size)]


def accuracy(predict, x, y) -> float:
    return float((np.asarray(predict(jnp.asarray(x))).mean(axis=1).argmax(-1) == y).mean())


def learning_rate(epoch, epochs: int, recipe=RECIPE):
    """The recipe's learning rate in ``epoch`` (0, 1, ..., ``epochs - 1``; a traced integer
    or a Python one). The same function drives both examples' optimizers."""
    peak, final, warmup = recipe['peak_lr'], recipe['final_lr'], recipe['warmup_epochs']
    warmup = min(warmup, (epochs - 1) // 2)      # at most half of a short run
    rising = peak * (epoch + 1) / max(warmup, 1)
    progress = jnp.clip((epoch - warmup) / max(epochs - 1 - warmup, 1), 0.0, 1.0)
    falling = final + (peak - final) * (1 + jnp.cos(jnp.pi * progress)) / 2
    return jnp.where(epoch < warmup, rising, falling)


class WarmupCosine(bp.optim.Scheduler):
    """:func:`learning_rate` as a BrainPy scheduler (``bp.BPTT.fit`` and
    ``LayerByLayerTrainer.fit`` advance it after every epoch)."""

    def __init__(self, epochs: int, recipe=RECIPE):
        super().__init__(lr=recipe['peak_lr'])
        self.epochs, self.recipe = epochs, recipe

    def __call__(self, i=None):
        i = (self.last_epoch.value + 1) if i is None else i
        return learning_rate(i, self.epochs, self.recipe)


class ClippedAdam(bp.optim.Adam):
    """Adam on gradients scaled down to a global L2 norm of at most ``max_norm`` (as
    ``optax.clip_by_global_norm``, which ``braintools.optim``'s ``grad_clip_norm`` uses)."""

    def __init__(self, lr, max_norm: float, **kwargs):
        super().__init__(lr=lr, **kwargs)
        self.max_norm = max_norm

    def update(self, grads: dict):
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(bm.as_jax(g))) for g in grads.values()))
        scale = self.max_norm / jnp.maximum(norm, self.max_norm)
        super().update({key: g * scale for key, g in grads.items()})


def make_optimizer(epochs: int, recipe=RECIPE):
    return ClippedAdam(WarmupCosine(epochs, recipe), max_norm=recipe['clip_global_norm'])


def _quietly(fn, *args, **kwargs):
    """Call ``fn`` with its printing silenced: given an iterator (no length, so that it does
    not draw a bar of its own under ours), ``bp.BPTT.fit`` prints a line per epoch instead."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def parameters(net) -> dict:
    """The trainable parameters of a network, as NumPy arrays by name."""
    return {name: np.asarray(var.value) for name, var in net.train_vars().unique().items()}


def train(method, data, epochs, batch_size, seed, eval_every, recipe=RECIPE, on_epoch=None):
    """Train a freshly built network; returns it, its history and the wall time.

    Names are reset first, so every build gets the names a new process would give it
    (BrainPy's checkpoints are keyed by them). ``on_epoch(epoch, net)``, if given, is called
    after every epoch.
    """
    bm.clear_name_cache()
    bm.random.seed(seed)
    net = build_network()
    (x_train, y_train), (x_test, y_test) = data['train'], data['test']
    optimizer = make_optimizer(epochs, recipe)
    if method == 'per step':
        trainer = bp.BPTT(net, loss_fun=loss_fun, optimizer=optimizer, progress_bar=False)
        fit_epoch = lambda b: _quietly(trainer.fit, iter(b), num_epoch=1) or \
            float(trainer.get_hist_metric('fit')[-1])
        predict = lambda x: trainer.predict(x, reset_state=True)
    else:
        trainer = bp_conv_ext.LayerByLayerTrainer(net, loss_fun, optimizer)
        fit_epoch = lambda b: trainer.fit(b, num_epoch=1, progress_bar=False)[-1]
        predict = trainer.predict
    history, seconds = run_epochs(method, fit_epoch, lambda: accuracy(predict, x_test, y_test),
                                  x_train, y_train, epochs, batch_size, seed, eval_every,
                                  lambda epoch: on_epoch and on_epoch(epoch, net))
    return net, predict, history, seconds


def run_epochs(method, fit_epoch, evaluate, x_train, y_train, epochs, batch_size, seed,
               eval_every, end_epoch):
    """Train for ``epochs`` under one progress bar: ``fit_epoch(batches)`` returns the mean
    loss, ``end_epoch(epoch)`` is called after it, ``evaluate()`` gives the test accuracy
    (every ``eval_every`` epochs and at the end). Returns the history and the wall time."""
    rng = np.random.default_rng(seed)
    history = {'epoch': [], 'loss': [], 'eval_epoch': [], 'test_accuracy': []}
    start = time.perf_counter()
    bar = tqdm(range(1, epochs + 1), desc=f'{method:>14}', unit='epoch')
    for epoch in bar:
        history['epoch'].append(epoch)
        history['loss'].append(fit_epoch(batches(x_train, y_train, batch_size, rng)))
        end_epoch(epoch)
        if epoch % eval_every == 0 or epoch == epochs:
            history['eval_epoch'].append(epoch)
            history['test_accuracy'].append(evaluate())
            bar.set_postfix(loss=f"{history['loss'][-1]:.3f}",
                            test_acc=f"{history['test_accuracy'][-1]:.3f}")
    return history, time.perf_counter() - start


def plot_learning_curves(histories, path, title='GunPoint'):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for method, history in histories.items():
        ax_loss.plot(history['epoch'], history['loss'], label=method)
        ax_acc.plot(history['eval_epoch'], history['test_accuracy'], marker='o', ms=3,
                    label=method)
    ax_loss.set(xlabel='epoch', ylabel='training loss', yscale='log',
                title=f'{title}: training loss')
    ax_acc.set(xlabel='epoch', ylabel='test accuracy', ylim=(0.4, 1.02),
               title=f'{title}: test accuracy')
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def arguments(argv, description: str, out: str):
    """The command line both GunPoint examples take; returns it and the number of epochs."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--quick', action='store_true',
                        help='a few epochs on 40 series, to check that everything runs')
    parser.add_argument('--epochs', type=int, default=None, help='training epochs (default 400)')
    parser.add_argument('--steps', type=int, default=8, help='time steps per series')
    parser.add_argument('--seed', type=int, default=0, help='initialisation and shuffling seed')
    parser.add_argument('--out', default=os.path.join('out', out),
                        help='folder for the figure and the checkpoint')
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    print(f"outputs go to {os.path.abspath(args.out)}")
    return args, args.epochs or (2 if args.quick else 400)


def encoded_data(args):
    """GunPoint's splits encoded as ``args.steps`` steps of input current."""
    raw = load_gunpoint(args.quick)
    data = {split: (encode(x, args.steps), y) for split, (x, y) in raw.items()}
    print(f"GunPoint: {len(data['train'][1])} training and {len(data['test'][1])} test series, "
          f"encoded as {args.steps} steps of input current, shape {data['train'][0].shape[1:]}")
    return data


def training_options(args, epochs):
    return dict(epochs=epochs, batch_size=RECIPE['batch_size'], seed=args.seed,
                eval_every=1 if args.quick else 20)


def machine() -> dict:
    """The CPU this runs on (from /proc/cpuinfo where there is one) and what decides its
    float rounding: whether it has AVX-512, and the XLA flags that may cap the ISA."""
    fields = {}
    with contextlib.suppress(OSError):
        with open('/proc/cpuinfo') as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(':')
                fields.setdefault(key.strip(), value.strip())
    model = fields.get('model name') or platform.processor() or platform.machine()
    flags = set(fields.get('flags', '').split())
    return {'cpu': model, 'avx512f': 'avx512f' in flags, 'avx2': 'avx2' in flags,
            'cores': len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
            else os.cpu_count(), 'xla_flags': os.environ.get('XLA_FLAGS', ''),
            'jax': jax.__version__, 'brainpy': bp.__version__}


def write_json(path, results, epochs, seed, extra=None):
    """Write the outcome of both trainers to ``path`` (``results`` maps each method to its
    history and wall time) and return it."""
    methods = {'per step': 'per_step', 'layer by layer': 'layer_by_layer'}
    report = {'api': 'brainpy (classic)', 'epochs': epochs, 'seed': seed, 'recipe': RECIPE}
    for method, key in methods.items():
        history, seconds = results[method]
        report[key] = {'test_accuracy': history['test_accuracy'][-1],
                       'final_training_loss': history['loss'][-1], 'seconds': seconds,
                       'training_loss': history['loss'],
                       'test_accuracy_curve': dict(zip(history['eval_epoch'],
                                                       history['test_accuracy']))}
    a, b = (report[key] for key in methods.values())
    report['difference'] = {
        'test_accuracy': abs(a['test_accuracy'] - b['test_accuracy']),
        'final_training_loss': abs(a['final_training_loss'] - b['final_training_loss']),
        'largest_training_loss': float(np.max(np.abs(np.subtract(a['training_loss'],
                                                                 b['training_loss'])))),
    }
    report.update(extra or {})
    report['machine'] = machine()
    report['date'] = datetime.datetime.now().astimezone().isoformat(timespec='seconds')
    with open(path, 'w') as f:
        json.dump(report, f, indent=1)
    return report


def summary(results, epochs, checkpoint, accuracies, figure, report):
    """Print and return the outcome: ``results`` maps each method to its history and wall
    time; ``accuracies`` are the test accuracies before saving and after reloading;
    ``report`` is the path of the JSON file."""
    final_accuracy, reloaded_accuracy = accuracies
    print("\nsummary")
    for method, (history, seconds) in results.items():
        print(f"  {method:>14}: {epochs} epochs in {seconds:6.1f} s, final training loss "
              f"{history['loss'][-1]:.4f}, test accuracy {history['test_accuracy'][-1]:.3f}")
    per_step, layerwise = (results[m][1] for m in ('per step', 'layer by layer'))
    print(f"  layer-by-layer training was {per_step / layerwise:.1f}x faster than per-step")
    print(f"  checkpoint {checkpoint}: test accuracy {final_accuracy:.3f} before saving, "
          f"{reloaded_accuracy:.3f} after loading into a fresh network")
    a, b = (results[m][0] for m in ('per step', 'layer by layer'))
    print(f"  difference between the two trainers at the end: test accuracy "
          f"{abs(a['test_accuracy'][-1] - b['test_accuracy'][-1]):.3f}, training loss "
          f"{abs(a['loss'][-1] - b['loss'][-1]):.4f}")
    print(f"  learning curves: {figure}")
    print(f"  numbers: {report}")
    return {'test_accuracy': final_accuracy, 'reloaded_accuracy': reloaded_accuracy,
            'figure': figure, 'checkpoint': checkpoint, 'report': report,
            'seconds': {m: seconds for m, (_, seconds) in results.items()},
            'test_accuracy_by_method': {m: history['test_accuracy'][-1]
                                        for m, (history, _) in results.items()}}


def main(argv=None):
    args, epochs = arguments(argv, __doc__.splitlines()[0], 'gunpoint')
    data = encoded_data(args)
    results = {method: train(method, data, **training_options(args, epochs))
               for method in ('per step', 'layer by layer')}

    histories = {method: r[2] for method, r in results.items()}
    figure = os.path.join(args.out, 'learning_curve.png')
    plot_learning_curves(histories, figure)

    net, predict, _, _ = results['layer by layer']
    checkpoint = os.path.join(args.out, 'gunpoint_layer_by_layer.bp')
    bp.checkpoints.save_pytree(checkpoint, net.state_dict(), verbose=False)
    x_test, y_test = data['test']
    final_accuracy = accuracy(predict, x_test, y_test)
    results = {m: (r[2], r[3]) for m, r in results.items()}   # drop the trained networks
    del net, predict
    bm.clear_name_cache()          # build the fresh network as a new process would
    fresh = build_network()
    loaded = fresh.load_state_dict(bp.checkpoints.load_pytree(checkpoint), warn=False)
    if loaded.missing_keys or loaded.unexpected_keys:
        raise RuntimeError(f"checkpoint {checkpoint} does not fit the network: missing "
                           f"{loaded.missing_keys}, unexpected {loaded.unexpected_keys}")
    reloaded_accuracy = accuracy(
        bp_conv_ext.LayerByLayerTrainer(fresh, loss_fun, bp.optim.Adam(lr=0.0)).predict,
        x_test, y_test)

    report = os.path.join(args.out, 'gunpoint.json')
    write_json(report, results, epochs, args.seed)
    return summary(results, epochs, checkpoint, (final_accuracy, reloaded_accuracy), figure,
                   report)


if __name__ == '__main__':
    main()
