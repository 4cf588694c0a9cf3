"""Learnable synaptic delays on two tasks where spike timing carries the class.

1. A synthetic task: each of 8 input channels fires once per sample, in a pattern of relative
   times (a permutation of 0, 3, ..., 21 steps) that names the class (4 classes), at a random
   start, among random background spikes. Every class has the same spike counts, and no two
   pattern spikes fall within two steps of each other, so neurons without delays and with a
   short membrane time constant see the same isolated spikes in every class.
2. BasicMotions (aeon's bundled copy of the UEA set: 6 accelerometer and gyroscope channels,
   100 samples, 4 activities), turned into spikes by delta modulation.

The same network, input -> DelayConv1d -> LIF -> DelayConv1d -> time-summed readout, is
trained twice on each: with delays learned (Gaussian interpolation, sigma annealed by
``bp_conv_ext.sigma_schedule`` down to 0.2 step, then the delays rounded to whole steps and
the weights alone trained for the last tenth of the epochs) and with every delay held at zero
(the same layers, delays not trained). It prints the test accuracies and wall times,
and draws the synthetic task's learned delays and the accuracies.

    python examples/delays.py [--quick] [--figure PATH] [--out DIR]

The figure goes to ``PATH`` (default docs/figures/learned_delays.png); with ``--out``, the
accuracies, training times, settings, machine, versions, date and command go to
``DIR/delays.json``, and their table to ``DIR/delays.md``.
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time

import brainpy as bp
import brainpy.math as bm
import jax.numpy as jnp
import numpy as np

import bp_conv_ext

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gunpoint import machine

bm.set_dt(1.0)          # one step per time bin: tau below is in steps

# The recipe's end. Sigma falls to 0.2 step (not sigma_schedule's default 0.5): a Gaussian
# that narrow puts all but ~1e-5 of a weight on its nearest tap, so the kernel the training
# ends with is already the rounded one (at 0.5 a fifth of each weight still sits on the taps
# beside its delay, and rounding it away costs accuracy). Then the delays are rounded and the
# last tenth of the epochs trains the weights alone, on the whole-step delays the network keeps
# (what remains, such as delays near a half step, is learned around). The number of epochs,
# and so the run time, is unchanged.
MAX_DELAY = 25
SIGMA_END = 0.2
FINE_TUNE_SHARE = 0.1


def synthetic(samples, rng, channels=8, classes=4, steps=60, noise=0.01):
    """Spike trains [samples, steps, channels] (bool) and labels; the class patterns."""
    patterns = np.stack([np.random.default_rng(100 + c).permutation(channels) * 3
                         for c in range(classes)])                     # [classes, channels]
    labels = rng.integers(0, classes, samples)
    x = rng.random((samples, steps, channels)) < noise
    starts = rng.integers(0, steps - patterns.max() - 1, samples)
    for i, (label, start) in enumerate(zip(labels, starts)):
        x[i, start + patterns[label], np.arange(channels)] = True
    return x, labels, patterns


def basic_motions():
    """BasicMotions as spikes: per channel, an 'up' and a 'down' spike train marking where the
    (standardised) signal has moved by 0.3 since the last spike (delta modulation)."""
    from aeon.datasets import load_basic_motions
    out = []
    for split in ('train', 'test'):
        x, y = load_basic_motions(split=split)                          # [N, 6, 100]
        x = (x - x.mean(axis=2, keepdims=True)) / (x.std(axis=2, keepdims=True) + 1e-6)
        spikes = np.zeros(x.shape[:2] + (2, x.shape[2]), bool)
        level = x[..., 0].copy()
        for t in range(x.shape[2]):
            up, down = x[..., t] - level >= 0.3, level - x[..., t] >= 0.3
            spikes[:, :, 0, t], spikes[:, :, 1, t] = up, down
            level = np.where(up | down, x[..., t], level)
        out.append(spikes.reshape(len(x), -1, x.shape[2]).transpose(0, 2, 1))
        out.append(np.unique(y, return_inverse=True)[1])
    return out


class Network(bp.DynamicalSystem):
    """input -> delays -> LIF -> delays -> output currents (summed over time by the loss)."""

    def __init__(self, n_in, n_hidden, n_out, max_delay, learn_delays):
        super().__init__(mode=bm.TrainingMode())
        mode = bm.TrainingMode()
        delays = None if learn_delays else 0.0
        self.first = bp_conv_ext.DelayConv1d(n_in, n_hidden, max_delay, mode=mode,
                                             delay_initializer=delays, b_initializer=None,
                                             w_initializer=bp.init.KaimingUniform(scale=6.0))
        self.lif = bp.dyn.Lif(n_hidden, tau=0.5, V_th=1.0, mode=mode,
                              spk_fun=bm.surrogate.arctan)
        self.second = bp_conv_ext.DelayConv1d(n_hidden, n_out, max_delay, mode=mode,
                                              delay_initializer=delays)
        self.net = bp_conv_ext.LayerByLayer(self.first, self.lif, self.second, mode=mode)

    def layers(self):
        return self.first, self.second

    def logits(self, x):
        """x: [B, T, C] -> [B, n_out], from one folded pass over the whole sequence."""
        return self.net.multi_step(jnp.swapaxes(x, 0, 1)).mean(axis=0)


def train(x_train, y_train, x_test, y_test, learn_delays, epochs, max_delay=MAX_DELAY,
          hidden=32, batch=64, seed=0, fine_tune=None, sigma_end=SIGMA_END):
    """Train for ``epochs`` epochs. With ``learn_delays``, the first ``epochs - fine_tune``
    move weights and delays while sigma falls from ``max_delay / 2`` to ``sigma_end``; then
    the delays are rounded and the last ``fine_tune`` epochs train the weights alone, on the
    whole-step delays the network will keep (``None``: ``FINE_TUNE_SHARE`` of the epochs, at
    least one). Without, all epochs train the weights."""
    if fine_tune is None:
        fine_tune = max(1, round(FINE_TUNE_SHARE * epochs))
    bm.random.seed(seed)
    rng = np.random.default_rng(seed)
    net = Network(x_train.shape[-1], hidden, int(y_train.max()) + 1, max_delay, learn_delays)
    if not learn_delays:
        for layer in net.layers():
            layer.round_delays()                   # every delay exactly 0, on one tap
    weights = bm.VarDict({f'{layer.name}.w': layer.w for layer in net.layers()})
    delays = bm.VarDict({f'{layer.name}.delay': layer.delay for layer in net.layers()})
    opt_w = bp.optim.Adam(lr=1e-2, train_vars=weights)
    opt_d = bp.optim.Adam(lr=0.1, train_vars=delays)   # positions move faster than weights

    def loss(x, y):
        return bp.losses.cross_entropy_loss(net.logits(x), y)

    def make_step(with_delays):
        # Weights alone after rounding: Adam's momentum would otherwise keep moving the
        # rounded delays (their gradient is zero), off the whole steps.
        names = list(weights) + (list(delays) if with_delays else [])

        def step_loss(x, y):
            # A target of its own for each gradient: BrainPy 2.6 caches a gradient's
            # variables by its target function and fails on a second gradient of one target.
            return loss(x, y)

        grad = bm.grad(step_loss, grad_vars=[{**weights, **delays}[k] for k in names],
                       return_value=True)

        @bm.jit
        def step(x, y):
            grads, value = grad(x, y)
            grads = dict(zip(names, grads))
            opt_w.update({k: grads[k] for k in weights})
            if with_delays:
                opt_d.update({k: grads[k] for k in delays})
            return value
        return step

    @bm.jit
    def predict(x):
        return jnp.argmax(net.logits(x), axis=-1)

    def accuracy(x, y):
        correct = 0
        for i in range(0, len(x), batch):
            net.reset(len(x[i:i + batch]))
            correct += int(jnp.sum(predict(x[i:i + batch]) == y[i:i + batch]))
        return correct / len(x)

    def run_epoch(step):
        order = rng.permutation(len(x_train))
        total = 0.
        for i in range(0, len(order) - batch + 1, batch):
            take = order[i:i + batch]
            net.reset(batch)
            total += float(step(x_train[take].astype(np.float32), y_train[take]))
        losses.append(total / (len(order) // batch))

    result, losses = {}, []
    gauss_epochs = epochs - fine_tune if learn_delays else epochs
    start = time.perf_counter()
    step = make_step(learn_delays)
    for epoch in range(gauss_epochs):
        if learn_delays:
            sigma = bp_conv_ext.sigma_schedule(epoch, gauss_epochs, start=max_delay / 2,
                                               end=sigma_end)
            for layer in net.layers():
                layer.set_sigma(sigma)
        run_epoch(step)
    wall = time.perf_counter() - start
    if learn_delays:
        result['test_gauss'] = accuracy(x_test.astype(np.float32), y_test)
        for layer in net.layers():
            layer.round_delays()
        result['test_rounded'] = accuracy(x_test.astype(np.float32), y_test)
        start = time.perf_counter()           # the evaluations above are not training time
        step = make_step(False)
        for _ in range(fine_tune):
            run_epoch(step)
        wall += time.perf_counter() - start
    result.update(loss=losses[-1], wall=wall)
    result['test'] = accuracy(x_test.astype(np.float32), y_test)
    result['train'] = accuracy(x_train.astype(np.float32), y_train)
    return net, result


def report(name, results):
    for label, r in results.items():
        extra = (f", before rounding {r['test_gauss']:.3f}, rounded before fine-tuning "
                 f"{r['test_rounded']:.3f}" if 'test_gauss' in r else '')
        print(f"  {name:13s} {label:13s} train {r['train']:.3f}  test {r['test']:.3f}{extra}  "
              f"({r['wall']:.1f} s training, final loss {r['loss']:.3f})")


def draw(path, net, accuracies):
    """Left: the learned (rounded) delays of the synthetic task's first layer, channel by
    hidden neuron. Right: test accuracy with and without delays on both tasks."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    delays = np.asarray(net.first.delay.value[0])              # [channels, hidden]
    plt.rcParams.update({'font.size': 11})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw=dict(width_ratios=[2, 1]))
    image = axes[0].imshow(delays, aspect='auto', cmap='viridis', interpolation='nearest')
    fig.colorbar(image, ax=axes[0], label='delay (steps)')
    axes[0].set(xlabel='hidden neuron', ylabel='input channel',
                title='learned delays, synthetic task (first layer, rounded)')
    tasks = list(accuracies)
    for i, label in enumerate(('with delays', 'no delays')):
        values = [accuracies[task][label] for task in tasks]
        axes[1].bar(np.arange(len(tasks)) + (i - 0.5) * 0.38, values, 0.38, label=label)
    axes[1].axhline(0.25, color='k', lw=0.8, ls=':', label='chance (4 classes)')
    axes[1].set(xticks=range(len(tasks)), xticklabels=tasks, ylim=(0, 1.05),
                ylabel='test accuracy', title='delays learned or zero')
    # Below the panel, clear of the bars whatever their heights.
    handles, labels = axes[1].get_legend_handles_labels()
    order = [labels.index(label) for label in ('with delays', 'no delays', 'chance (4 classes)')]
    axes[1].legend([handles[i] for i in order], [labels[i] for i in order], loc='upper center',
                   bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"figure: {path}")


TASKS = {'synthetic': 'synthetic', 'basic_motions': 'BasicMotions'}


def markdown(report) -> str:
    """The table of ``report`` (what :func:`main` returns and writes), with a caption naming
    the run: settings, machine, versions, date and command."""
    header = ['task', 'with learned delays (rounded)', 'before rounding',
              'just rounded (before fine-tuning)', 'delays held at 0',
              'training time (delays / none)']
    lines = ['| ' + ' | '.join(header) + ' |', '| --- |' + ' ---: |' * (len(header) - 1)]
    for key, name in TASKS.items():
        delays, none = report[key]['with delays'], report[key]['no delays']
        cells = [name] + [f"{v:.3f}" for v in (delays['test'], delays['test_gauss'],
                                                 delays['test_rounded'], none['test'])]
        cells.append(f"{delays['wall']:.1f} s / {none['wall']:.1f} s")
        lines.append('| ' + ' | '.join(cells) + ' |')
    m, s = report['machine'], report['settings']
    epochs = '; '.join(f"{TASKS[key]}: {v['train_samples']} training and {v['test_samples']} "
                       f"test samples, {v['epochs']} epochs, the last {v['fine_tune']} on the "
                       f"rounded delays" for key, v in s['tasks'].items())
    lines.append('')
    lines.append(f"Test accuracies of one run of `examples/delays.py` ({epochs}; sigma from "
                 f"{s['sigma_start']:g} to {s['sigma_end']:g} steps). Training time includes "
                 f"compilation. {m['cpu']} ({m['cores']} core{'s' * (m['cores'] != 1)}), "
                 f"JAX {m['jax']}, BrainPy {m['brainpy']}, Python {report['python']}, "
                 f"{report['date'][:10]}; `{report['command']}`.")
    return '\n'.join(lines) + '\n'


def write(folder, report):
    """``folder/delays.json`` (the report) and ``folder/delays.md`` (its table)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'delays.json'), 'w') as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(folder, 'delays.md'), 'w') as f:
        f.write(markdown(report))
    print(f"wrote {os.path.join(folder, 'delays')}.json and .md")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='few samples and epochs (a check)')
    parser.add_argument('--figure', default='docs/figures/learned_delays.png')
    parser.add_argument('--out', help='folder for delays.json and delays.md (the table)')
    args = parser.parse_args(argv)
    epochs = {'synthetic': 3, 'basic_motions': 3} if args.quick else \
        {'synthetic': 120, 'basic_motions': 60}
    rng = np.random.default_rng(0)
    n_train, n_test = (128, 64) if args.quick else (1024, 512)
    x, y, patterns = synthetic(n_train + n_test, rng)
    x_train, y_train, x_test, y_test = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    print(f"synthetic task: {n_train} training and {n_test} test samples, "
          f"{x.shape[1]} steps, {x.shape[2]} channels, {patterns.shape[0]} classes")
    sizes = {'synthetic': (n_train, n_test)}
    results, nets = {}, {}
    for label, learn in [('with delays', True), ('no delays', False)]:
        nets[label], results[label] = train(x_train, y_train, x_test, y_test, learn,
                                            epochs['synthetic'])
    report('synthetic', results)
    synthetic_results = results

    x_train, y_train, x_test, y_test = basic_motions()
    if args.quick:
        x_train, y_train = x_train[:16], y_train[:16]
    sizes['basic_motions'] = (len(x_train), len(x_test))
    print(f"BasicMotions: {len(x_train)} training and {len(x_test)} test samples, "
          f"{x_train.shape[1]} steps, {x_train.shape[2]} spike channels")
    results = {label: train(x_train, y_train, x_test, y_test, learn, epochs['basic_motions'],
                            batch=8)[1]
               for label, learn in [('with delays', True), ('no delays', False)]}
    report('BasicMotions', results)
    draw(args.figure, nets['with delays'],
         {name: {label: r['test'] for label, r in runs.items()}
          for name, runs in (('synthetic', synthetic_results), ('BasicMotions', results))})
    outcome = {
        'synthetic': synthetic_results, 'basic_motions': results, 'figure': args.figure,
        'settings': {'sigma_start': MAX_DELAY / 2, 'sigma_end': SIGMA_END,
                     'tasks': {key: {'train_samples': sizes[key][0],
                                     'test_samples': sizes[key][1], 'epochs': epochs[key],
                                     'fine_tune': max(1, round(FINE_TUNE_SHARE * epochs[key]))}
                               for key in TASKS}},
        'machine': machine(), 'python': platform.python_version(),
        'date': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
        'command': ' '.join(['python', 'examples/delays.py']
                            + [shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)]),
    }
    if args.out:
        write(args.out, outcome)
    return outcome


if __name__ == '__main__':
    main()
