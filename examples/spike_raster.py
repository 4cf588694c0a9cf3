"""Simulate a spike train through Conv1d -> LIF -> Conv1d -> LIF with bp.DSRunner.

The input is a bool spike train over 64 positions and 2 channels: sparse Poisson
background plus a burst that sweeps along the positions. Both convolutions take the
bool spikes of the layer below directly (``NonBatchingMode``). The script prints the
firing rate of every layer and saves a figure with the spike rasters and the membrane
potentials of a few neurons.

    python examples/spike_raster.py [--quick] [--out DIR]
"""
import argparse
import os

import brainpy as bp
import brainpy.math as bm
import numpy as np

import bp_conv_ext

LENGTH, CHANNELS = 64, 2


class ConvLifStack(bp.DynSysGroup):
    def __init__(self):
        super().__init__()
        lif = dict(keep_size=True, tau=2.0, V_th=1.0, V_reset=0.0)      # BrainPy's units: ms, mV
        self.conv1 = bp_conv_ext.Conv1d(CHANNELS, 8, 5, w_initializer=bp.init.Uniform(0.0, 4.0))
        self.lif1 = bp.dyn.Lif((LENGTH, 8), **lif)
        self.conv2 = bp_conv_ext.Conv1d(8, 8, 3, stride=2,
                                        w_initializer=bp.init.Uniform(-1.0, 2.0))
        self.lif2 = bp.dyn.Lif((LENGTH // 2, 8), **lif)

    def update(self, spikes):
        return self.lif2(self.conv2(self.lif1(self.conv1(spikes))))


def input_spikes(steps, rng):
    """Poisson background (20 Hz) plus a burst sweeping across the positions."""
    dt = bm.get_dt()
    spikes = rng.random((steps, LENGTH, CHANNELS)) < 20.0 * dt / 1000.0
    sweep = (np.arange(steps) // 15) % LENGTH      # one position every 1.5 ms
    for t, position in enumerate(sweep):
        window = slice(max(position - 2, 0), position + 3)
        spikes[t, window, 0] |= rng.random(spikes[t, window, 0].shape) < 0.5
    return spikes


def plot(runner, spikes_in, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    time_ms = runner.mon['ts']
    layers = [('input spikes', spikes_in), ('LIF 1 spikes', runner.mon['lif1.spike']),
              ('LIF 2 spikes', runner.mon['lif2.spike'])]
    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    for ax, (title, spikes) in zip(axes, layers):
        flat = spikes.reshape(len(time_ms), -1)
        t_idx, n_idx = np.nonzero(flat)
        ax.scatter(time_ms[t_idx], n_idx, s=1, c='k', marker='|')
        ax.set(ylabel='neuron (position x channel)', title=title)
    for layer, color in (('lif1', 'tab:blue'), ('lif2', 'tab:orange')):
        v = runner.mon[f'{layer}.V'].reshape(len(time_ms), -1)
        counts = runner.mon[f'{layer}.spike'].reshape(len(time_ms), -1).sum(0)
        for rank, neuron in enumerate(np.argsort(counts)[::-1][:2]):   # the two busiest
            axes[3].plot(time_ms, v[:, neuron], color=color, alpha=1.0 - 0.4 * rank, lw=0.8,
                         label=f"{layer} neuron {neuron}")
    axes[3].set(xlabel='time (ms)', ylabel='membrane potential (mV)',
               title='membrane potentials')
    axes[3].legend(fontsize=7, loc='upper right')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='a short simulation')
    parser.add_argument('--out', default=os.path.join('out', 'spike_raster'),
                        help='folder for the figure')
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    print(f"outputs go to {os.path.abspath(args.out)}")

    bm.set_mode(bm.NonBatchingMode())
    bm.random.seed(0)
    steps = 200 if args.quick else 2000
    net = ConvLifStack()
    spikes_in = input_spikes(steps, np.random.default_rng(0))
    runner = bp.DSRunner(net, monitors={'lif1.spike': net.lif1.spike, 'lif1.V': net.lif1.V,
                                        'lif2.spike': net.lif2.spike, 'lif2.V': net.lif2.V})
    runner.run(inputs=spikes_in)

    duration_s = steps * bm.get_dt() / 1000.0
    spikes = {'input': spikes_in, 'LIF 1': runner.mon['lif1.spike'],
              'LIF 2': runner.mon['lif2.spike']}
    rates = {name: float(np.mean(s)) * steps / duration_s for name, s in spikes.items()}
    print(f"simulated {steps} steps ({duration_s * 1e3:.0f} ms), input spikes dtype "
          f"{spikes_in.dtype}")
    for name, rate in rates.items():
        print(f"  {name:>6} mean firing rate: {rate:8.2f} Hz")
    figure = os.path.join(args.out, 'raster.png')
    plot(runner, spikes_in, figure)
    print(f"  figure: {figure}")
    return {'rates_hz': rates, 'figure': figure}


if __name__ == '__main__':
    main()
